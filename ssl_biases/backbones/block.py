"""The isotropic pre-norm block shared by every token mixer."""

from __future__ import annotations

from typing import Literal

import torch
from timm.layers import DropPath, Mlp
from torch import nn


class IsotropicBlock(nn.Module):
    """``x = x + DropPath(mixer(LN(x)))``; ``y = act(R(x) + DropPath(MLP(LN(x))))``.

    ``R`` is the identity, except when ``out_dim != dim`` (the widened or narrowed last
    block, Bordes et al. arXiv 2304.05369): then the channel MLP maps ``dim -> hidden ->
    out_dim`` and ``R`` is a linear projection ``dim -> out_dim``. The hidden width stays
    ``mlp_ratio * dim``, so only the block's output width changes. ``act`` is the identity
    but in the last block of a net with ``last_dim`` set: there a ReLU after the sum, as the
    last bottleneck block of the paper's ResNet has (arXiv 2304.05369, 1512.03385). Without
    it ``y`` is linear in ``[x, hidden]``, so its pooled features have rank at most ``dim +
    hidden`` whatever ``out_dim`` is (320 at width 64, MLP ratio 4: D = 1024 gave a linear
    probe the capacity of D = 320).

    Args:
        dim: input token width D.
        mixer: token mixer, called as ``mixer(tokens, grid_size)``.
        mlp_ratio: hidden width of the channel MLP, as a multiple of ``dim``.
        drop_path: stochastic depth rate of this block.
        out_dim: output width; ``None`` means ``dim``.
        out_act: ``relu`` (a ReLU after the sum) or ``none``.
    """

    def __init__(
        self,
        dim: int,
        mixer: nn.Module,
        mlp_ratio: float,
        drop_path: float = 0.0,
        out_dim: int | None = None,
        out_act: Literal["relu", "none"] = "none",
    ) -> None:
        super().__init__()
        out_dim = dim if out_dim is None else out_dim
        self.norm1 = nn.LayerNorm(dim)
        self.mixer = mixer
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden_features=int(dim * mlp_ratio), out_features=out_dim)
        self.residual_proj = nn.Linear(dim, out_dim) if out_dim != dim else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        if out_act not in ("relu", "none"):
            raise ValueError(f"out_act must be 'relu' or 'none', got {out_act!r}")
        self.out_act = nn.ReLU() if out_act == "relu" else nn.Identity()
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
        y = self.residual_proj(x) + self.drop_path(self.mlp(self.norm2(x)))  # [B, T, D_out]
        return self.out_act(y)
