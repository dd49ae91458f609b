"""The isotropic pre-norm block shared by every token mixer."""

from __future__ import annotations

import torch
from timm.layers import DropPath, Mlp
from torch import nn


class IsotropicBlock(nn.Module):
    """``x = x + DropPath(mixer(LN(x)))``; ``y = R(x) + DropPath(MLP(LN(x)))``.

    ``R`` is the identity, except when ``out_dim != dim`` (the widened or narrowed last
    block, Bordes et al. arXiv 2304.05369): then the channel MLP maps ``dim -> hidden ->
    out_dim`` and ``R`` is a linear projection ``dim -> out_dim``. The hidden width stays
    ``mlp_ratio * dim``, so only the block's output width changes.

    Args:
        dim: input token width D.
        mixer: token mixer, called as ``mixer(tokens, grid_size)``.
        mlp_ratio: hidden width of the channel MLP, as a multiple of ``dim``.
        drop_path: stochastic depth rate of this block.
        out_dim: output width; ``None`` means ``dim``.
    """

    def __init__(
        self,
        dim: int,
        mixer: nn.Module,
        mlp_ratio: float,
        drop_path: float = 0.0,
        out_dim: int | None = None,
    ) -> None:
        super().__init__()
        out_dim = dim if out_dim is None else out_dim
        self.norm1 = nn.LayerNorm(dim)
        self.mixer = mixer
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden_features=int(dim * mlp_ratio), out_features=out_dim)
        self.residual_proj = nn.Linear(dim, out_dim) if out_dim != dim else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, grid_size: tuple[int, int]) -> torch.Tensor:
        x = x + self.drop_path(self.mixer(self.norm1(x), grid_size))  # [B, T, D]
        return self.residual_proj(x) + self.drop_path(self.mlp(self.norm2(x)))  # [B, T, D_out]
