"""Patch stems: image ``[B, C, H, W]`` -> patch grid ``[B, D, H/p, W/p]``.

Three stems that produce the same grid and differ only in how pixels become tokens:
``patch`` (non-overlapping linear patchify), ``overlap`` (a strided conv whose kernel reaches
half a patch into each neighbour) and ``conv`` (a small convolutional stem).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

StemName = Literal["patch", "conv", "overlap"]


class PatchStem(nn.Module):
    """Linear patchify: conv with kernel = stride = patch size (ViT, arXiv 2010.11929)."""

    def __init__(self, in_chans: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)  # [B, D, H/p, W/p]


class OverlapStem(nn.Module):
    """Overlapping patchify: stride p, kernel ``p + 2 * (p // 2)``, padding ``p // 2``.

    Each token sees its own patch plus ``p // 2`` pixels of every neighbouring patch, centred
    on the patch (as the overlapping patch embeddings of PVTv2, arXiv 2106.13797). The output
    grid equals :class:`PatchStem`'s.
    """

    def __init__(self, in_chans: int, dim: int, patch_size: int) -> None:
        super().__init__()
        pad = patch_size // 2
        self.proj = nn.Conv2d(in_chans, dim, patch_size + 2 * pad, stride=patch_size, padding=pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)  # [B, D, H/p, W/p]


class ConvStem(nn.Module):
    """Convolutional stem of Xiao et al., "Early Convolutions Help Transformers See Better"
    (arXiv 2106.14881).

    ``log2(p)`` blocks of 3x3 stride-2 conv + BatchNorm + ReLU, channels doubling up to ``dim``
    (``dim / 2^(n-1), ..., dim / 2, dim``; at least 8), then a 1x1 conv to ``dim``. For p=16 and
    D=384 this is the paper's 48-96-192-384 stem. Needs a power-of-two patch size >= 2.
    """

    def __init__(self, in_chans: int, dim: int, patch_size: int) -> None:
        super().__init__()
        n = patch_size.bit_length() - 1
        if patch_size < 2 or 2**n != patch_size:
            raise ValueError(
                f"stem='conv' downsamples by stride-2 convs, so patch_size must be a power of "
                f"two >= 2; got {patch_size}. Use stem='patch' or 'overlap' for other sizes."
            )
        layers: list[nn.Module] = []
        c_in = in_chans
        for i in range(n):
            c_out = max(8, dim // 2 ** (n - 1 - i))
            layers += [
                nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
            c_in = c_out
        layers.append(nn.Conv2d(c_in, dim, 1))
        self.proj = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)  # [B, D, H/p, W/p]


def create_stem(name: StemName, in_chans: int, dim: int, patch_size: int) -> nn.Module:
    """Build the stem called ``name``."""
    stems: dict[str, type[nn.Module]] = {
        "patch": PatchStem,
        "conv": ConvStem,
        "overlap": OverlapStem,
    }
    if name not in stems:
        raise ValueError(f"unknown stem {name!r}; choose one of {sorted(stems)}")
    return stems[name](in_chans, dim, patch_size)
