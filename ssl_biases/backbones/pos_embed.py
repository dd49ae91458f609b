"""Absolute position embeddings added to the patch tokens (never to prefix tokens).

``learned``: a trainable ``[1, N, D]`` table (ViT, arXiv 2010.11929), resampled bicubically
with timm's ``resample_abs_pos_embed`` when the grid differs from the configured one.
``sincos2d``: fixed 2-D sine-cosine features (MoCo-v3 / MAE, arXiv 2104.02057), recomputed for
any grid. ``none``: nothing is added, which makes attention and MLP-free mixers blind to
patch order.
"""

from __future__ import annotations

from typing import Literal

import torch
from timm.layers import resample_abs_pos_embed, trunc_normal_
from timm.layers.pos_embed_sincos import build_sincos2d_pos_embed
from torch import nn

PosEmbedName = Literal["none", "learned", "sincos2d"]


class NoPosEmbed(nn.Module):
    """Adds nothing."""

    def forward(self, x: torch.Tensor, grid_size: tuple[int, int]) -> torch.Tensor:
        return x


class LearnedPosEmbed(nn.Module):
    """Learned table for ``grid_size``; interpolated for other grids."""

    def __init__(self, dim: int, grid_size: tuple[int, int]) -> None:
        super().__init__()
        self.grid_size = grid_size
        self.weight = nn.Parameter(torch.zeros(1, grid_size[0] * grid_size[1], dim))  # [1, N, D]
        trunc_normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor, grid_size: tuple[int, int]) -> torch.Tensor:
        pe = resample_abs_pos_embed(
            self.weight, list(grid_size), old_size=list(self.grid_size), num_prefix_tokens=0
        )  # [1, h*w, D]
        return x + pe.to(x.dtype)


class SinCos2dPosEmbed(nn.Module):
    """Fixed 2-D sin-cos embedding; ``dim`` must be divisible by 4."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim % 4 != 0:
            raise ValueError(f"pos_embed='sincos2d' needs a width divisible by 4, got {dim}")
        self.dim = dim

    def forward(self, x: torch.Tensor, grid_size: tuple[int, int]) -> torch.Tensor:
        pe = build_sincos2d_pos_embed(list(grid_size), self.dim, device=x.device)  # [N, D]
        return x + pe.to(x.dtype)[None]


def create_pos_embed(name: PosEmbedName, dim: int, grid_size: tuple[int, int]) -> nn.Module:
    """Build the position embedding called ``name``."""
    if name == "none":
        return NoPosEmbed()
    if name == "learned":
        return LearnedPosEmbed(dim, grid_size)
    if name == "sincos2d":
        return SinCos2dPosEmbed(dim)
    raise ValueError(f"unknown pos_embed {name!r}; choose one of ['learned', 'none', 'sincos2d']")
