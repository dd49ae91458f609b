"""Token mixers: the one part that differs between ViT, MLP-Mixer, ConvMixer and PoolFormer.

Two kinds of class live here. A **mixer** (:class:`TokenMixer` subclasses: ``AttentionMixer``,
``LocalAttentionMixer``, ``TokenMlpMixer``, ``ConvMixer``, ``PoolMixer``, ``IdentityMixer``)
is what a config names: the mixer's own knobs, with a string shorthand (``conv``). The net
calls its ``build(dim, grid_size, num_prefix_tokens, num_heads)`` once per block to get a
**layer** (``nn.Module``): it maps tokens ``[B, T, D] -> [B, T, D]`` and is told the patch grid
``(h, w)`` the tokens come from (row-major, after ``num_prefix_tokens`` prefix tokens).
Attention layers also expose :meth:`SelfAttention.attention`, which computes the post-softmax
weights explicitly, so analysis works while the forward pass uses fused kernels.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch import nn


class SelfAttention(nn.Module):
    """Global multi-head self-attention (Dosovitskiy et al., arXiv 2010.11929).

    Args:
        dim: token width D.
        num_heads: number of heads; must divide ``dim``.
        num_prefix_tokens: tokens before the patch tokens (class token).
        qkv_bias: use a bias in the query/key/value projection.
    """

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


class LocalSelfAttention(SelfAttention):
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


class TokenMlp(nn.Module):
    """MLP-Mixer token mixing: an MLP over the patch axis, shared across channels.

    ``U = X + W2 GELU(W1 LN(X)^T)^T`` (Tolstikhin et al., arXiv 2105.01601); this module is the
    ``W2 GELU(W1 .)`` part (norm and residual live in the block). Its weights are sized for a
    fixed number of patches, so it works only at the configured image size.

    Args:
        num_patches: number of patch tokens N the weights are built for.
        hidden: hidden width D_S of the token MLP.
    """

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


class DepthwiseConv(nn.Module):
    """Depthwise ``k x k`` convolution over the token grid, then GELU (ConvMixer, arXiv 2201.09792).

    ConvMixer follows the conv with BatchNorm and a residual; here the block's pre-norm
    (LayerNorm) and residual stand in, so the block matches the other mixers'.

    Args:
        dim: token width D (channels of the depthwise conv).
        kernel_size: odd kernel size k; zero padding keeps the grid size.
    """

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


class AvgPoolMinusInput(nn.Module):
    """PoolFormer token mixing: ``AvgPool(x) - x`` (Yu et al., arXiv 2111.11418).

    Args:
        kernel_size: odd pooling window; borders average over valid tokens only.
    """

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


class NoTokenMixing(nn.Module):
    """The identity layer ``x -> x``; tokens ``[B, T, D]`` pass through unmixed."""

    def forward(self, x: torch.Tensor, grid_size: tuple[int, int]) -> torch.Tensor:
        return x  # [B, T, D]


# --------------------------------------------------------------------------- mixer factories
TokenMixerName = Literal["attention", "local_attention", "mlp", "conv", "pool", "identity"]


class TokenMixer:
    """A token mixer as a config value: the mixer's own knobs, built later by the net.

    A mixer layer cannot be built before the net knows its width, token grid and prefix
    tokens, so configs hold this factory; ``IsotropicNet`` calls :meth:`build` once per
    block. A subclass states its knobs as typed ``__init__`` arguments (jsonargparse
    validates them: ``token_mixer: {class_path: ssl_biases.backbones.mixers.ConvMixer,
    init_args: {kernel_size: 7}}``) and its shorthand ``name`` (``token_mixer: conv`` means
    that class with its defaults). Adding a mixer is one subclass here, plus its name in
    ``TokenMixerName``.

    Class attributes:
        name: the string shorthand; also ``IsotropicNet.token_mixer``.
        has_attention: whether its layer has ``attention(x, grid_size)`` (post-softmax maps)
            and can gather patches into a class token (``pool='cls'``).
        supports_token_dropping: whether its layer works on any subset of the patch tokens.
        position_blind: why its layer cannot tell patch positions apart without a position
            embedding (equal input tokens give equal outputs wherever they sit); empty when
            it sees position (a window, a kernel, position-specific weights).
    """

    name: ClassVar[str] = ""
    has_attention: ClassVar[bool] = False
    supports_token_dropping: ClassVar[bool] = False
    position_blind: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            if cls.name in TOKEN_MIXERS:
                raise ValueError(f"token mixer name {cls.name!r} is already taken")
            TOKEN_MIXERS[cls.name] = cls

    def build(
        self, dim: int, grid_size: tuple[int, int], num_prefix_tokens: int, num_heads: int
    ) -> nn.Module:
        """The mixer layer for tokens of width ``dim`` on a ``grid_size`` patch grid.

        Args:
            dim: token width D.
            grid_size: the configured patch grid ``(h, w)``.
            num_prefix_tokens: tokens before the patch tokens (class token).
            num_heads: the net's head count (used by attention mixers).
        """
        raise NotImplementedError

    @property
    def init_args(self) -> dict[str, Any]:
        """The knobs, as ``init_args`` of a config (every ``__init__`` argument)."""
        return {key: getattr(self, key) for key in inspect.signature(type(self)).parameters}

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.init_args == other.init_args  # type: ignore[union-attr]

    def __hash__(self) -> int:
        return hash((type(self), tuple(sorted(self.init_args.items()))))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.init_args.items())
        return f"{type(self).__name__}({args})"


TOKEN_MIXERS: dict[str, type[TokenMixer]] = {}  # name -> class, filled by __init_subclass__


def _check_odd_kernel(kernel_size: int) -> None:
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")


class AttentionMixer(TokenMixer):
    """Global multi-head self-attention (ViT, arXiv 2010.11929); heads: the net's ``num_heads``.

    Args:
        qkv_bias: use a bias in the query/key/value projection.
    """

    name = "attention"
    has_attention = True
    supports_token_dropping = True
    position_blind = "global attention without a position embedding is permutation-equivariant"

    def __init__(self, qkv_bias: bool = True) -> None:
        self.qkv_bias = qkv_bias

    def build(
        self, dim: int, grid_size: tuple[int, int], num_prefix_tokens: int, num_heads: int
    ) -> nn.Module:
        return SelfAttention(dim, num_heads, num_prefix_tokens, self.qkv_bias)


class LocalAttentionMixer(TokenMixer):
    """Self-attention inside a ``(2r+1) x (2r+1)`` patch window (:class:`LocalSelfAttention`).

    Args:
        window_radius: radius r of the window, in patches (Chebyshev distance, r >= 0).
        qkv_bias: use a bias in the query/key/value projection.
    """

    name = "local_attention"
    has_attention = True

    def __init__(self, window_radius: int = 1, qkv_bias: bool = True) -> None:
        if window_radius < 0:
            raise ValueError(f"window_radius must be >= 0, got {window_radius}")
        self.window_radius = window_radius
        self.qkv_bias = qkv_bias

    def build(
        self, dim: int, grid_size: tuple[int, int], num_prefix_tokens: int, num_heads: int
    ) -> nn.Module:
        return LocalSelfAttention(
            dim, num_heads, self.window_radius, num_prefix_tokens, self.qkv_bias
        )


class TokenMlpMixer(TokenMixer):
    """MLP-Mixer token mixing (arXiv 2105.01601): an MLP over the patch axis.

    Its weights are sized for the configured patch count N, so the net then works only at
    its configured image size.

    Args:
        token_mlp_ratio: hidden width D_S of the token MLP as a multiple of N (rounded).
    """

    name = "mlp"

    def __init__(self, token_mlp_ratio: float = 2.0) -> None:
        if token_mlp_ratio <= 0:
            raise ValueError(f"token_mlp_ratio must be positive, got {token_mlp_ratio}")
        self.token_mlp_ratio = token_mlp_ratio

    def build(
        self, dim: int, grid_size: tuple[int, int], num_prefix_tokens: int, num_heads: int
    ) -> nn.Module:
        num_patches = grid_size[0] * grid_size[1]
        return TokenMlp(num_patches, max(1, round(self.token_mlp_ratio * num_patches)))


class ConvMixer(TokenMixer):
    """Depthwise convolution over the token grid, then GELU (ConvMixer, arXiv 2201.09792).

    Args:
        kernel_size: odd kernel size k.
    """

    name = "conv"

    def __init__(self, kernel_size: int = 3) -> None:
        _check_odd_kernel(kernel_size)
        self.kernel_size = kernel_size

    def build(
        self, dim: int, grid_size: tuple[int, int], num_prefix_tokens: int, num_heads: int
    ) -> nn.Module:
        return DepthwiseConv(dim, self.kernel_size)


class PoolMixer(TokenMixer):
    """PoolFormer token mixing ``AvgPool(x) - x`` (arXiv 2111.11418).

    Args:
        kernel_size: odd pooling window.
    """

    name = "pool"

    def __init__(self, kernel_size: int = 3) -> None:
        _check_odd_kernel(kernel_size)
        self.kernel_size = kernel_size

    def build(
        self, dim: int, grid_size: tuple[int, int], num_prefix_tokens: int, num_heads: int
    ) -> nn.Module:
        return AvgPoolMinusInput(self.kernel_size)


class IdentityMixer(TokenMixer):
    """No token mixing: the mixer branch returns its input (MetaFormer's identity mapping).

    ``x + LN(x)`` then the channel MLP, so every output token depends on its own input token
    only: the control of a mixer study (Yu et al., arXiv 2111.11418, Table 5). It has no
    weights and works on any subset of tokens.
    """

    name = "identity"
    supports_token_dropping = True
    position_blind = "without token mixing each output token depends on its own input token only"

    def build(
        self, dim: int, grid_size: tuple[int, int], num_prefix_tokens: int, num_heads: int
    ) -> nn.Module:
        return NoTokenMixing()


def resolve_token_mixer(token_mixer: TokenMixerName | TokenMixer | Mapping[str, Any]) -> TokenMixer:
    """A ``TokenMixer`` from its name (defaults), itself, or a stored ``{class_path, init_args}``.

    Raises:
        ValueError: for an unknown name or class, or knobs the class does not take.
    """
    if isinstance(token_mixer, TokenMixer):
        return token_mixer
    if isinstance(token_mixer, str):
        if token_mixer not in TOKEN_MIXERS:
            raise ValueError(
                f"unknown token_mixer {token_mixer!r}; choose one of {sorted(TOKEN_MIXERS)} or "
                "give {class_path: ssl_biases.backbones.mixers.<Mixer>, init_args: {...}}"
            )
        return TOKEN_MIXERS[token_mixer]()
    if isinstance(token_mixer, Mapping) and "class_path" in token_mixer:
        class_path = str(token_mixer["class_path"])
        module_name, _, class_name = class_path.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_name or __name__), class_name)
        except (ImportError, AttributeError, ValueError) as err:
            raise ValueError(f"cannot import token mixer {class_path!r} ({err})") from err
        if not (isinstance(cls, type) and issubclass(cls, TokenMixer)):
            raise ValueError(f"{class_path!r} is not a ssl_biases.backbones.mixers.TokenMixer")
        init_args = dict(token_mixer.get("init_args") or {})
        valid = inspect.signature(cls).parameters
        unknown = sorted(set(init_args) - set(valid))
        if unknown:
            raise ValueError(
                f"token mixer {cls.__name__} takes no argument(s) {unknown}; valid: {sorted(valid)}"
            )
        return cls(**init_args)
    raise ValueError(
        f"token_mixer must be a name ({sorted(TOKEN_MIXERS)}), a TokenMixer or a "
        f"{{class_path, init_args}} mapping, got {token_mixer!r}"
    )
