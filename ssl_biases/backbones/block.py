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
        self.init_residual_proj()

    @torch.no_grad()
    def init_residual_proj(self) -> None:
        """Starts ``R`` so the skip path keeps each channel's scale (no-op for the identity).

        ``W = max(1, sqrt(out/in)) * Q`` with ``Q`` (semi-)orthogonal (``nn.init.orthogonal_``)
        and zero bias. Narrowing (``out < in``): orthonormal rows, so every output channel is
        a unit-norm mix of the input channels and has the input's per-channel variance.
        Widening (``out > in``): orthogonal columns scaled by ``sqrt(out/in)``, which also
        keeps the per-channel variance (``||Wx||^2 = (out/in) ||x||^2``). Every entry has mean
        square ``1/in`` either way. A partial identity (widening) would keep the norm but
        leave ``out - in`` channels with no skip at all; per-channel scale is what matters
        here, since the MLP branch's per-channel scale does not depend on ``out`` and the
        final LayerNorm sees the two mixed per channel. Call this again after any
        ``model.apply(init)`` pass (``IsotropicNet`` does).
        """
        proj = self.residual_proj
        if not isinstance(proj, nn.Linear):
            return
        out_dim, in_dim = proj.weight.shape
        nn.init.orthogonal_(proj.weight, gain=max(1.0, (out_dim / in_dim) ** 0.5))
        nn.init.zeros_(proj.bias)

    def forward(self, x: torch.Tensor, grid_size: tuple[int, int]) -> torch.Tensor:
        x = x + self.drop_path(self.mixer(self.norm1(x), grid_size))  # [B, T, D]
        return self.residual_proj(x) + self.drop_path(self.mlp(self.norm2(x)))  # [B, T, D_out]
