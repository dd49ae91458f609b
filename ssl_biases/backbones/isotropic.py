"""``IsotropicNet``: one isotropic network whose inductive biases are constructor arguments.

stem -> position embedding -> [class token] -> depth x block -> LayerNorm -> pooling, where
every block is ``x + mixer(LN(x))`` then ``x + MLP(LN(x))`` (see :mod:`.block`). Switching
``token_mixer`` (a :class:`~ssl_biases.backbones.mixers.TokenMixer`, or its name) gives a ViT
(``attention``, arXiv 2010.11929), a local-window ViT (``local_attention``), an MLP-Mixer
(``mlp``, arXiv 2105.01601), a ConvMixer-like net (``conv``, arXiv 2201.09792), a
PoolFormer-like net (``pool``, arXiv 2111.11418) or a net without token mixing
(``identity``, the control), with everything else held equal (Cazenavette & Lucey, arXiv
2105.14077).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from timm.layers import trunc_normal_
from torch import nn

from ssl_biases.backbones.block import IsotropicBlock
from ssl_biases.backbones.legacy import mixer_from_legacy
from ssl_biases.backbones.mixers import TokenMixer, TokenMixerName
from ssl_biases.backbones.pooling import PoolName, create_pool
from ssl_biases.backbones.pos_embed import PosEmbedName, create_pos_embed
from ssl_biases.backbones.stems import StemName, create_stem


class IsotropicNet(nn.Module):
    """Isotropic vision backbone with pluggable stem, position embedding, mixer and pooling.

    Every block has the same width and token count. ``last_dim`` (Bordes et al., arXiv
    2304.05369) changes the width of the *last block's output only*: that block's channel
    MLP maps ``width -> mlp_ratio * width -> last_dim`` and its residual branch goes through a
    linear projection ``width -> last_dim`` (identity when ``last_dim == width``; otherwise a
    scaled semi-orthogonal start that keeps the skip path's per-channel scale, see
    :meth:`.IsotropicBlock.init_residual_proj`); the final LayerNorm and pooling then work
    at ``last_dim``, and ``num_features == last_dim``. With ``last_dim`` set (any value, the
    width included) the last block ends in ``last_block_act``, a ReLU after its sum by
    default, as the paper's ResNet block (:class:`.IsotropicBlock`): without it the pooled
    features have rank at most ``width + mlp_ratio * width`` whatever ``last_dim`` is.

    A class token exists only with ``pool='cls'``, which needs an attention mixer: the
    ``mlp``, ``conv``, ``pool`` and ``identity`` mixers have no way to move information from
    the patches into a class token, so that combination is a ``ValueError`` (use ``gap`` or
    ``map``).

    Args:
        image_size: configured square input size in pixels; must be divisible by
            ``patch_size``. Other sizes work at run time (position embeddings are
            interpolated) except with ``token_mixer='mlp'``.
        patch_size: side of a patch in pixels; the token grid is ``image_size / patch_size``.
        in_chans: input channels.
        width: token width D of every block.
        depth: number of blocks.
        num_heads: attention heads (attention mixers and ``pool='map'``); a net-wide knob,
            like ``width``, since the mixer and the pooling share it.
        mlp_ratio: hidden width of the channel MLP as a multiple of ``width``.
        stem: ``patch`` | ``conv`` | ``overlap`` (see :mod:`.stems`).
        pos_embed: ``none`` | ``learned`` | ``sincos2d`` (see :mod:`.pos_embed`).
        token_mixer: the mixer with its own knobs, e.g. ``ConvMixer(kernel_size=7)`` (in a
            config: ``{class_path: ssl_biases.backbones.mixers.ConvMixer, init_args:
            {kernel_size: 7}}``), or a name meaning that mixer with its defaults:
            ``attention`` | ``local_attention`` | ``mlp`` | ``conv`` | ``pool`` |
            ``identity`` (see :mod:`.mixers`). A stored ``{class_path, init_args}`` mapping
            (``backbone.json``, a checkpoint's ``backbone_config``) is accepted too.
        pool: ``cls`` | ``gap`` | ``map`` (see :mod:`.pooling`).
        drop_path: stochastic depth rate, increasing linearly from 0 to this over the blocks.
        last_dim: output width of the last block (``None``: ``width``, the plain net).
        last_block_act: with ``last_dim`` set, the last block's activation after its sum:
            ``relu`` (new configs) or ``none`` (the block before issue 29, which old runs
            with ``last_dim`` were trained with; their configs are migrated to it). Ignored
            when ``last_dim`` is ``None``.
        window_radius: deprecated flat knob of configs from before typed mixers; ``None``
            (unset) in new configs. Set, it is ``LocalAttentionMixer.window_radius``.
        kernel_size: deprecated, as above: ``ConvMixer`` / ``PoolMixer.kernel_size``.
        token_mlp_ratio: deprecated, as above: ``TokenMlpMixer.token_mlp_ratio``.
        qkv_bias: deprecated, as above: ``AttentionMixer`` / ``LocalAttentionMixer.qkv_bias``.
            A flat knob the mixer does not have is ignored (old configs list all four); see
            :mod:`.legacy` and docs/migration_issue16.md.
    """

    def __init__(
        self,
        image_size: int = 32,
        patch_size: int = 4,
        in_chans: int = 3,
        width: int = 192,
        depth: int = 6,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        stem: StemName = "patch",
        pos_embed: PosEmbedName = "learned",
        token_mixer: TokenMixerName | TokenMixer = "attention",
        pool: PoolName = "cls",
        drop_path: float = 0.0,
        last_dim: int | None = None,
        last_block_act: Literal["relu", "none"] = "relu",
        window_radius: int | None = None,
        kernel_size: int | None = None,
        token_mlp_ratio: float | None = None,
        qkv_bias: bool | None = None,
    ) -> None:
        super().__init__()
        if patch_size < 1 or image_size % patch_size != 0:
            lo = max(patch_size, image_size // patch_size * patch_size)
            raise ValueError(
                f"image_size {image_size} is not divisible by patch_size {patch_size}; "
                f"use a multiple of {patch_size} (e.g. {lo} or {lo + patch_size})"
            )
        legacy = dict(
            window_radius=window_radius,
            kernel_size=kernel_size,
            token_mlp_ratio=token_mlp_ratio,
            qkv_bias=qkv_bias,
        )
        mixer = mixer_from_legacy(_as_mixer_arg(token_mixer), legacy)
        if pool == "cls" and not mixer.has_attention:
            raise ValueError(
                f"pool='cls' needs an attention token mixer to gather the patches into the "
                f"class token; token_mixer={mixer.name!r} cannot, use pool='gap' or 'map'"
            )
        if width < 1 or depth < 1:
            raise ValueError(f"width and depth must be >= 1, got {width} and {depth}")
        if last_dim is not None and last_dim < 1:
            raise ValueError(f"last_dim must be a positive int or None, got {last_dim}")
        if not 0.0 <= drop_path < 1.0:
            raise ValueError(f"drop_path must be in [0, 1), got {drop_path}")

        self.image_size = image_size
        self.patch_size = patch_size
        self.grid_size = (image_size // patch_size, image_size // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.num_prefix_tokens = 1 if pool == "cls" else 0
        self.width = width
        self.num_features = width if last_dim is None else last_dim
        self.mixer_factory = mixer  # the TokenMixer with its knobs; blocks hold its layers
        self.token_mixer = mixer.name  # its name: methods test e.g. == "attention"
        self.has_attention = mixer.has_attention
        self.supports_token_dropping = mixer.supports_token_dropping

        self.stem = create_stem(stem, in_chans, width, patch_size)
        self.pos_embed = create_pos_embed(pos_embed, width, self.grid_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width)) if pool == "cls" else None
        rates = torch.linspace(0, drop_path, depth).tolist()
        self.blocks = nn.ModuleList(
            IsotropicBlock(
                width,
                mixer.build(width, self.grid_size, self.num_prefix_tokens, num_heads),
                mlp_ratio,
                drop_path=rates[i],
                out_dim=self.num_features if i == depth - 1 else None,
                out_act=last_block_act if i == depth - 1 and last_dim is not None else "none",
            )
            for i in range(depth)
        )
        self.norm = nn.LayerNorm(self.num_features)
        self.pool = create_pool(pool, self.num_features, num_heads, mlp_ratio)
        self.apply(self._init_weights)
        self.blocks[-1].init_residual_proj()  # after the generic init, which would shrink it
        if self.cls_token is not None:
            trunc_normal_(self.cls_token, std=0.02)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    # ----------------------------------------------------------------- masked-modelling API
    def embed_patches(self, x: torch.Tensor) -> torch.Tensor:
        """Stem only: images ``[B, C, H, W]`` -> patch tokens ``[B, N, D]`` (row-major).

        No position embedding and no prefix tokens are added.
        """
        h, w = x.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(
                f"input {h}x{w} is not divisible by patch_size {self.patch_size}; "
                f"use sides that are multiples of {self.patch_size}"
            )
        return self.stem(x).flatten(2).transpose(1, 2)  # [B, N, D]

    def _infer_grid(self, num_tokens: int) -> tuple[int, int]:
        if num_tokens == self.num_patches:
            return self.grid_size
        side = round(num_tokens**0.5)
        if side * side != num_tokens:
            raise ValueError(
                f"cannot infer the patch grid of {num_tokens} tokens; pass grid_size=(h, w)"
            )
        return side, side

    def _prepare(
        self,
        tokens: torch.Tensor,
        keep: torch.Tensor | None,
        grid_size: tuple[int, int] | None,
    ) -> tuple[torch.Tensor, tuple[int, int]]:
        grid = self._infer_grid(tokens.shape[1]) if grid_size is None else tuple(grid_size)
        x = self.pos_embed(tokens, grid)  # [B, N, D]
        if keep is not None:
            if not self.supports_token_dropping:
                raise ValueError(
                    f"token_mixer={self.token_mixer!r} needs the full token grid, so it cannot "
                    "drop tokens (keep=...); only token_mixer='attention' or 'identity' "
                    "supports it. Replace "
                    "masked patches with a mask token instead."
                )
            idx = keep[..., None].expand(-1, -1, x.shape[-1])  # [B, K, D]
            x = torch.gather(x, 1, idx)  # [B, K, D]
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # [B, 1+N, D]
        return x, grid

    def forward_tokens(
        self,
        tokens: torch.Tensor,
        keep: torch.Tensor | None = None,
        grid_size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """Patch tokens ``[B, N, D]`` -> normalised output tokens ``[B, P+K or P+N, D']``.

        Adds the position embedding, keeps only the ``keep`` indices ``[B, K]`` if given
        (only when ``supports_token_dropping``), prepends the prefix tokens, runs the blocks
        and the final norm. ``grid_size`` defaults to the configured grid when N matches it,
        else to a square grid.
        """
        x, grid = self._prepare(tokens, keep, grid_size)
        for blk in self.blocks:
            x = blk(x, grid)  # [B, T, D]
        return self.norm(x)  # [B, T, D']

    def pool_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Normalised output tokens ``[B, T, D']`` -> embedding ``[B, num_features]``."""
        return self.pool(tokens, self.num_prefix_tokens)

    # ---------------------------------------------------------------------- backbone API
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``[B, C, H, W]`` -> normalised tokens ``[B, P+N, num_features]``."""
        return self.forward_tokens(self.embed_patches(x), grid_size=self._grid_of(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``[B, C, H, W]`` -> embedding ``[B, num_features]``."""
        return self.pool_tokens(self.forward_features(x))

    def forward_intermediates(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Output tokens ``[B, P+N, D]`` of every block (before the final norm)."""
        x, grid = self._prepare(self.embed_patches(x), None, self._grid_of(x))
        outs = []
        for blk in self.blocks:
            x = blk(x, grid)  # [B, T, D]
            outs.append(x)
        return outs

    def attention_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Post-softmax attention ``[B, heads, T, T]`` of every block, computed explicitly."""
        if not self.has_attention:
            raise ValueError(
                f"this backbone has no attention (token_mixer={self.token_mixer!r}); "
                "attention maps exist only for token_mixer='attention' or 'local_attention'"
            )
        x, grid = self._prepare(self.embed_patches(x), None, self._grid_of(x))
        maps = []
        for blk in self.blocks:
            maps.append(blk.mixer.attention(blk.norm1(x), grid))  # [B, H, T, T]
            x = blk(x, grid)  # [B, T, D]
        return maps

    def _grid_of(self, x: torch.Tensor) -> tuple[int, int]:
        return x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size


def _as_mixer_arg(
    token_mixer: TokenMixerName | TokenMixer | Mapping[str, Any],
) -> TokenMixerName | TokenMixer | Mapping[str, Any]:
    """``token_mixer`` as given; a jsonargparse ``Namespace`` (class_path/init_args) as a dict."""
    as_dict = getattr(token_mixer, "as_dict", None)
    return as_dict() if callable(as_dict) else token_mixer
