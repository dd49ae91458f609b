"""The registered backbone presets (see docs/backbones.md for the table).

The ``*_tiny`` presets are matched to ``vit_tiny`` (32 px, patch 4, width 192, depth 6,
MLP ratio 4, learned position embedding): only the token mixer changes, plus what the mixer
forces -- mixers without attention cannot feed a class token, so they pool with ``gap``
(``vit_tiny_gap`` is their exact attention twin). ``localvit_tiny`` (radius 2) and
``convmixer_tiny`` (kernel 5) see the same 5x5-patch neighbourhood per block.
``identity_tiny`` mixes no tokens at all: the control of every mixer study.
"""

from __future__ import annotations

from ssl_biases.backbones.isotropic import IsotropicNet
from ssl_biases.backbones.mixers import (
    ConvMixer,
    IdentityMixer,
    LocalAttentionMixer,
    PoolMixer,
    TokenMlpMixer,
)
from ssl_biases.backbones.registry import register_backbone
from ssl_biases.backbones.resnet import ResNet

_TINY = dict(
    image_size=32,
    patch_size=4,
    width=192,
    depth=6,
    num_heads=3,
    mlp_ratio=4.0,
    pos_embed="learned",
    stem="patch",
)
_MIXERS = {
    "vit_tiny": dict(token_mixer="attention", pool="cls"),
    "vit_tiny_gap": dict(token_mixer="attention", pool="gap"),
    "localvit_tiny": dict(token_mixer=LocalAttentionMixer(window_radius=2), pool="cls"),
    "mixer_tiny": dict(token_mixer=TokenMlpMixer(token_mlp_ratio=2.0), pool="gap"),
    "convmixer_tiny": dict(token_mixer=ConvMixer(kernel_size=5), pool="gap"),
    "poolformer_tiny": dict(token_mixer=PoolMixer(kernel_size=3), pool="gap"),
    "identity_tiny": dict(token_mixer=IdentityMixer(), pool="gap"),
}

for _name, _mixer in _MIXERS.items():
    register_backbone(_name, IsotropicNet, **_TINY, **_mixer)
    # 64 px: patch 8 keeps the same 8x8 token grid.
    register_backbone(
        f"{_name}_64", IsotropicNet, **{**_TINY, "image_size": 64, "patch_size": 8}, **_mixer
    )

# Width-only step up from vit_tiny (depth kept at 6 so width is the one change).
register_backbone("vit_small", IsotropicNet, **{**_TINY, "width": 384, "num_heads": 6})

# Paper-sized 224 px models (Zhai et al. arXiv 2106.04560; Tolstikhin et al. arXiv 2105.01601).
_PAPER = dict(image_size=224, patch_size=16, mlp_ratio=4.0, stem="patch")
register_backbone(
    "vit_ti16", IsotropicNet, **_PAPER, width=192, depth=12, num_heads=3, pos_embed="learned",
    token_mixer="attention", pool="cls",
)  # fmt: skip
register_backbone(
    "vit_s16", IsotropicNet, **_PAPER, width=384, depth=12, num_heads=6, pos_embed="learned",
    token_mixer="attention", pool="cls",
)  # fmt: skip
register_backbone(
    "mixer_s16",
    IsotropicNet,
    **_PAPER,
    width=512,
    depth=8,
    num_heads=8,
    pos_embed="none",
    token_mixer=TokenMlpMixer(token_mlp_ratio=256 / 196),
    pool="gap",
)  # fmt: skip  D_S = 256 hidden units for N = 196 patches

register_backbone("resnet18_cifar", ResNet, arch="resnet18", image_size=32, cifar_stem=True)
register_backbone("resnet18", ResNet, arch="resnet18", image_size=224)
register_backbone("resnet50", ResNet, arch="resnet50", image_size=224)
