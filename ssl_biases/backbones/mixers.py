"""Token mixers: the one part that differs between ViT, MLP-Mixer, ConvMixer and PoolFormer.

Every mixer maps tokens ``[B, T, D] -> [B, T, D]`` and is told the patch grid ``(h, w)`` the
tokens come from (row-major, after ``num_prefix_tokens`` prefix tokens). Attention mixers also
expose :meth:`AttentionMixer.attention`, which computes the post-softmax weights explicitly,
so analysis works while the forward pass uses fused kernels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch import nn


class AttentionMixer(nn.Module):
    """Global multi-head self-attention (Dosovitskiy et al., arXiv 2010.11929).

    Args:
        dim: token width D.
        num_heads: number of heads; must divide ``dim``.
        num_prefix_tokens: tokens before the patch tokens (class token).
        qkv_bias: use a bias in the query/key/value projection.
    """

    supports_token_dropping: bool = True

    def __init__(
        self, dim: int, num_heads: int, num_prefix_tokens: int = 0, qkv_bias: bool = True
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"width {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.num_prefix_tokens = num_prefix_tokens
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, t, d = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.num_heads, self.head_dim)  # [B, T, 3, H, hd]
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x [B, H, T, hd]
        return q, k, v

    def attention_mask(
        self, num_tokens: int, grid_size: tuple[int, int], device: torch.device
    ) -> torch.Tensor | None:
        """Boolean ``[T, T]`` mask (True = may attend), or None for global attention."""
        return None

    def forward(self, x: torch.Tensor, grid_size: tuple[int, int]) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self._qkv(x)
        mask = self.attention_mask(t, grid_size, x.device)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, H, T, hd]
        return self.proj(out.transpose(1, 2).reshape(b, t, d))  # [B, T, D]

    def attention(self, x: torch.Tensor, grid_size: tuple[int, int]) -> torch.Tensor:
        """Post-softmax attention ``[B, heads, T, T]``, computed explicitly (no fused kernel)."""
        q, k, _ = self._qkv(x)
        logits = (q * self.scale) @ k.transpose(-2, -1)  # [B, H, T, T]
        mask = self.attention_mask(x.shape[1], grid_size, x.device)
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        return logits.softmax(dim=-1)


class LocalAttentionMixer(AttentionMixer):
    """Self-attention restricted to a square window on the patch grid.

    Patch ``i`` may attend to patch ``j`` iff their Chebyshev distance on the grid is at most
    ``window_radius`` (a ``(2r+1) x (2r+1)`` window, cut at the borders); weights outside the
    window are exactly 0. Prefix (class) tokens attend to, and are attended by, every token.
    This is the locality bias of e.g. Swin / local ViTs, without their shifted windows.

    Args:
        dim: token width D.
        num_heads: number of heads.
        window_radius: radius r of the window, in patches (r >= 0).
        num_prefix_tokens: tokens before the patch tokens.
        qkv_bias: use a bias in the query/key/value projection.
    """

    supports_token_dropping: bool = False

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_radius: int,
        num_prefix_tokens: int = 0,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__(dim, num_heads, num_prefix_tokens, qkv_bias)
        if window_radius < 0:
            raise ValueError(f"window_radius must be >= 0, got {window_radius}")
        self.window_radius = window_radius

    def attention_mask(
        self, num_tokens: int, grid_size: tuple[int, int], device: torch.device
    ) -> torch.Tensor:
        h, w = grid_size
        p = self.num_prefix_tokens
        if num_tokens != p + h * w:
            raise ValueError(
                f"local attention needs the full {h}x{w} token grid (+{p} prefix tokens), "
                f"got {num_tokens} tokens; token dropping is not supported"
            )
        rows = torch.arange(h, device=device).repeat_interleave(w)  # [N]
        cols = torch.arange(w, device=device).repeat(h)  # [N]
        dist = torch.maximum(
            (rows[:, None] - rows[None, :]).abs(), (cols[:, None] - cols[None, :]).abs()
        )  # [N, N] Chebyshev distance
        mask = torch.ones(num_tokens, num_tokens, dtype=torch.bool, device=device)  # [T, T]
        mask[p:, p:] = dist <= self.window_radius
        return mask


class TokenMlpMixer(nn.Module):
    """MLP-Mixer token mixing: an MLP over the patch axis, shared across channels.

    ``U = X + W2 GELU(W1 LN(X)^T)^T`` (Tolstikhin et al., arXiv 2105.01601); this module is the
    ``W2 GELU(W1 .)`` part (norm and residual live in the block). Its weights are sized for a
    fixed number of patches, so it works only at the configured image size.

    Args:
        num_patches: number of patch tokens N the weights are built for.
        hidden: hidden width D_S of the token MLP.
    """

    supports_token_dropping: bool = False

    def __init__(self, num_patches: int, hidden: int) -> None:
        super().__init__()
        self.num_patches = num_patches
        self.mlp = Mlp(num_patches, hidden_features=hidden)

    def forward(self, x: torch.Tensor, grid_size: tuple[int, int]) -> torch.Tensor:
        if x.shape[1] != self.num_patches:
            raise ValueError(
                f"the MLP token mixer has weights for exactly {self.num_patches} patches and "
                f"got {x.shape[1]} ({grid_size[0]}x{grid_size[1]} grid); it needs the "
                "configured image size (no smaller crops, no token dropping)"
            )
        return self.mlp(x.transpose(1, 2)).transpose(1, 2)  # [B, N, D]


class ConvMixer(nn.Module):
    """Depthwise ``k x k`` convolution over the token grid, then GELU (ConvMixer, arXiv 2201.09792).

    ConvMixer follows the conv with BatchNorm and a residual; here the block's pre-norm
    (LayerNorm) and residual stand in, so the block matches the other mixers'.

    Args:
        dim: token width D (channels of the depthwise conv).
        kernel_size: odd kernel size k; zero padding keeps the grid size.
    """

    supports_token_dropping: bool = False

    def __init__(self, dim: int, kernel_size: int) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
        self.conv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor, grid_size: tuple[int, int]) -> torch.Tensor:
        b, n, d = x.shape
        h, w = grid_size
        grid = x.transpose(1, 2).reshape(b, d, h, w)  # [B, D, h, w]
        return self.act(self.conv(grid)).flatten(2).transpose(1, 2)  # [B, N, D]


class PoolMixer(nn.Module):
    """PoolFormer token mixing: ``AvgPool(x) - x`` (Yu et al., arXiv 2111.11418).

    Args:
        kernel_size: odd pooling window; borders average over valid tokens only.
    """

    supports_token_dropping: bool = False

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
        self.pool = nn.AvgPool2d(kernel_size, 1, kernel_size // 2, count_include_pad=False)

    def forward(self, x: torch.Tensor, grid_size: tuple[int, int]) -> torch.Tensor:
        b, n, d = x.shape
        h, w = grid_size
        grid = x.transpose(1, 2).reshape(b, d, h, w)  # [B, D, h, w]
        return (self.pool(grid) - grid).flatten(2).transpose(1, 2)  # [B, N, D]
