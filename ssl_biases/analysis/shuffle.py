"""Fixed patch and pixel permutations of MLP-Mixer's invariance study (arXiv 2105.01601).

Tolstikhin et al. (Sec. 3.4) train and evaluate models on images whose patches (and the
pixels inside each patch), or whose pixels over the whole image, are shuffled by one fixed
permutation shared by all images. A model without position-dependent parameters in its
token mixer (MLP-Mixer's token MLP, a ViT without position embeddings) is unaffected by
the patch permutation, while networks with locality biases (ConvNets) suffer.

Both transforms draw their permutation from ``torch.randperm`` with a generator seeded by
``seed`` (on CPU), once per image size, so the same seed gives the same permutation in
every process and run. They act on ``[B, C, H, W]`` batches and on single ``[C, H, W]``
images (so they also work as a per-image dataset transform).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _fixed_permutation(size: int, seed: int) -> Tensor:
    """Deterministic permutation of ``range(size)`` for ``seed``: ``[size]`` int64 on CPU."""
    return torch.randperm(size, generator=torch.Generator().manual_seed(seed))


def _as_batch(x: Tensor) -> Tensor:
    if x.ndim not in (3, 4):
        raise ValueError(
            f"expected an image [C, H, W] or a batch [B, C, H, W], got {tuple(x.shape)}"
        )
    return x if x.ndim == 4 else x[None]  # [B, C, H, W]


class PatchShuffle(nn.Module):
    """Shuffle the grid of ``patch_size x patch_size`` patches by one fixed permutation.

    Every image of a given size gets the same permutation of patch positions; the pixels
    inside each patch stay as they were unless ``shuffle_within_patch`` is set, which also
    applies one fixed permutation of the ``p * p`` pixel positions to every patch (Mixer's
    "patch + pixel shuffling", arXiv 2105.01601, Sec. 3.4).

    Args:
        patch_size: side of a patch in pixels; must divide the image height and width.
        seed: seed of the permutation(s).
        shuffle_within_patch: also permute pixel positions inside patches.
    """

    def __init__(self, patch_size: int, seed: int = 0, shuffle_within_patch: bool = False) -> None:
        super().__init__()
        if patch_size < 1:
            raise ValueError(f"patch_size must be positive, got {patch_size}")
        self.patch_size = patch_size
        self.seed = seed
        self.shuffle_within_patch = shuffle_within_patch

    def permutation(self, height: int, width: int) -> Tensor:
        """Source patch index for each output patch, row-major: ``[(H/p) * (W/p)]``."""
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(
                f"image size {height}x{width} is not divisible by patch_size={p}; "
                "resize or crop the images to a multiple of the patch size"
            )
        return _fixed_permutation((height // p) * (width // p), self.seed)

    def pixel_permutation(self) -> Tensor:
        """Source pixel index inside a patch for each output pixel: ``[p * p]``."""
        return _fixed_permutation(self.patch_size**2, self.seed + 1)

    def forward(self, x: Tensor) -> Tensor:
        """Shuffle ``[B, C, H, W]`` or ``[C, H, W]``; returns the same shape."""
        batch = _as_batch(x)  # [B, C, H, W]
        b, c, h, w = batch.shape
        p = self.patch_size
        perm = self.permutation(h, w).to(x.device)  # [G]
        gh, gw = h // p, w // p
        patches = batch.reshape(b, c, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5)  # [B,gh,gw,C,p,p]
        patches = patches.reshape(b, gh * gw, c, p * p)[:, perm]  # [B, G, C, p*p]
        if self.shuffle_within_patch:
            patches = patches[..., self.pixel_permutation().to(x.device)]  # [B, G, C, p*p]
        patches = patches.reshape(b, gh, gw, c, p, p).permute(0, 3, 1, 4, 2, 5)  # [B,C,gh,p,gw,p]
        return patches.reshape(x.shape)

    def extra_repr(self) -> str:
        return (
            f"patch_size={self.patch_size}, seed={self.seed}, "
            f"shuffle_within_patch={self.shuffle_within_patch}"
        )


class PixelShuffle(nn.Module):
    """Shuffle pixel positions over the whole image by one fixed permutation.

    Mixer's "global shuffling" (arXiv 2105.01601, Sec. 3.4): all channels of a pixel move
    together, and every image of a given size gets the same permutation. Not to be confused
    with ``torch.nn.PixelShuffle`` (sub-pixel upsampling).

    Args:
        seed: seed of the permutation.
    """

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.seed = seed

    def permutation(self, height: int, width: int) -> Tensor:
        """Source pixel index for each output pixel, row-major: ``[H * W]``."""
        return _fixed_permutation(height * width, self.seed)

    def forward(self, x: Tensor) -> Tensor:
        """Shuffle ``[B, C, H, W]`` or ``[C, H, W]``; returns the same shape."""
        batch = _as_batch(x)  # [B, C, H, W]
        b, c, h, w = batch.shape
        perm = self.permutation(h, w).to(x.device)  # [H*W]
        return batch.reshape(b, c, h * w)[..., perm].reshape(x.shape)

    def extra_repr(self) -> str:
        return f"seed={self.seed}"
