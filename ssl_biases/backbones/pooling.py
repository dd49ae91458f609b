"""Pooling: normalised tokens ``[B, P+N, D]`` -> embedding ``[B, D]``.

``cls``: the class token (ViT). ``gap``: mean of the patch tokens (prefix excluded).
``map``: multi-head attention pooling with one learned query, followed by a residual MLP,
as in Zhai et al., "Scaling Vision Transformers" (arXiv 2106.04560); timm's
``AttentionPoolLatent``.
"""

from __future__ import annotations

from typing import Literal

import torch
from timm.layers import AttentionPoolLatent
from torch import nn

PoolName = Literal["cls", "gap", "map"]


class ClsPool(nn.Module):
    """Take the first (class) token."""

    def forward(self, x: torch.Tensor, num_prefix_tokens: int) -> torch.Tensor:
        return x[:, 0]  # [B, D]


class AvgPool(nn.Module):
    """Mean over the patch tokens."""

    def forward(self, x: torch.Tensor, num_prefix_tokens: int) -> torch.Tensor:
        return x[:, num_prefix_tokens:].mean(dim=1)  # [B, D]


class MapPool(nn.Module):
    """Multi-head attention pooling over the patch tokens (arXiv 2106.04560)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(
                f"pool='map' splits the output width {dim} into num_heads={num_heads} heads; "
                "choose num_heads dividing it"
            )
        self.attn_pool = AttentionPoolLatent(
            dim, num_heads=num_heads, mlp_ratio=mlp_ratio, norm_layer=nn.LayerNorm
        )

    def forward(self, x: torch.Tensor, num_prefix_tokens: int) -> torch.Tensor:
        return self.attn_pool(x[:, num_prefix_tokens:])  # [B, D]


def create_pool(name: PoolName, dim: int, num_heads: int, mlp_ratio: float) -> nn.Module:
    """Build the pooling called ``name``."""
    if name == "cls":
        return ClsPool()
    if name == "gap":
        return AvgPool()
    if name == "map":
        return MapPool(dim, num_heads, mlp_ratio)
    raise ValueError(f"unknown pool {name!r}; choose one of ['cls', 'gap', 'map']")
