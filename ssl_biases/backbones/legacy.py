"""Backbone configs written before typed token mixers: flat mixer knobs -> the mixer's knobs.

Until issue 16, ``IsotropicNet`` took the mixer's knobs flat, next to a mixer name::

    token_mixer: conv
    kernel_size: 5          # conv and pool
    window_radius: 1        # local_attention
    token_mlp_ratio: 2.0    # mlp
    qkv_bias: true          # attention and local_attention

Every stored config of such a run (a checkpoint's ``backbone_config``, ``RUN/config.yaml``,
``backbone.json`` of an export) lists all four. Now they live on the mixer::

    token_mixer:
      class_path: ssl_biases.backbones.mixers.ConvMixer
      init_args: {kernel_size: 5}

:func:`mixer_from_legacy` folds the flat knobs into the mixer (``IsotropicNet`` calls it, so
an old config still builds the same net), and :func:`migrate_backbone_config` rewrites a
stored backbone config dict into the new shape.

Every old shape the code still reads, this one included, is listed with the change that
retired it in ``ssl_biases.run.legacy.MIGRATIONS`` (the one place; ``backbones/`` stands below
``run/`` in the house, so the mechanics for the backbones stay here).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from ssl_biases.backbones.mixers import TokenMixer, TokenMixerName, resolve_token_mixer

LEGACY_MIXER_KNOBS = ("window_radius", "kernel_size", "token_mlp_ratio", "qkv_bias")
ISOTROPIC_CLASS_PATHS = (
    "ssl_biases.backbones.IsotropicNet",
    "ssl_biases.backbones.isotropic.IsotropicNet",
)


def mixer_from_legacy(
    token_mixer: TokenMixerName | TokenMixer | Mapping[str, Any],
    legacy: Mapping[str, Any],
) -> TokenMixer:
    """The mixer ``token_mixer`` with the flat legacy knobs ``legacy`` applied.

    A knob the mixer does not have is ignored, as the old net ignored it (old configs list
    all four whatever the mixer). ``None`` means unset.

    Raises:
        ValueError: when a knob is also set, to another value, on a mixer given as a class
            (``class_path``/``init_args`` or a ``TokenMixer``): state it once, on the mixer.
    """
    mixer = resolve_token_mixer(token_mixer)
    knobs = {k: v for k, v in legacy.items() if v is not None}
    unknown = sorted(set(knobs) - set(LEGACY_MIXER_KNOBS))
    if unknown:
        raise ValueError(f"no legacy mixer knob(s) {unknown}; known: {list(LEGACY_MIXER_KNOBS)}")
    own = {k: v for k, v in knobs.items() if k in inspect.signature(type(mixer)).parameters}
    if not own:
        return mixer
    if not isinstance(token_mixer, str):
        clash = {k: (v, mixer.init_args[k]) for k, v in own.items() if mixer.init_args[k] != v}
        if clash:
            raise ValueError(
                f"{clash} set both flat on the net and on {mixer!r}: set "
                f"{sorted(clash)} only in token_mixer.init_args (flat mixer knobs are the "
                "pre-issue-16 config shape; docs/migration_issue16.md)"
            )
        return mixer
    return type(mixer)(**{**mixer.init_args, **own})


def mixer_config(mixer: TokenMixer) -> dict[str, Any]:
    """``{"class_path", "init_args"}`` of a mixer, every knob explicit."""
    cls = type(mixer)
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": mixer.init_args}


def migrate_backbone_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A stored backbone config (``{"class_path", "init_args"}``) in the current shape.

    For an ``IsotropicNet``: the flat legacy knobs are removed from ``init_args`` and folded
    into ``token_mixer``, which becomes ``{"class_path", "init_args"}`` with every knob
    explicit (a string name becomes its class with defaults). Any other backbone, and an
    already migrated config, come back equal. The result builds the same net, with the same
    state-dict keys, as the old config did. A stored config with ``last_dim`` and no
    ``last_block_act`` predates the last block's ReLU and gets ``last_block_act: none`` (a
    stored config lists every argument, so a current one always has the key).
    """
    config = {**config, "init_args": dict(config.get("init_args") or {})}
    if config.get("class_path") not in ISOTROPIC_CLASS_PATHS:
        return config
    init_args = config["init_args"]
    if init_args.get("last_dim") is not None and "last_block_act" not in init_args:
        # stored before the last block's ReLU (issue 29): keep that run's block as it was
        init_args["last_block_act"] = "none"
    legacy = {k: init_args.pop(k) for k in LEGACY_MIXER_KNOBS if k in init_args}
    mixer = mixer_from_legacy(init_args.get("token_mixer", "attention"), legacy)
    init_args["token_mixer"] = mixer_config(mixer)
    return config
