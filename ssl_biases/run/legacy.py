"""Runs written by earlier versions, read in the current shape: every migration, in one place.

A run directory keeps what the code of its day wrote: ``RUN/config.yaml`` (the resolved
config), checkpoints with the method's hyperparameters and the backbone's config, and exports'
``backbone.json``. When the shape of a config changes, the old files must still fit, resume
(``--ckpt_path``), validate and export. :data:`MIGRATIONS` lists every shape this code still
reads, with the change that retired it; :func:`migrate_config` rewrites a config (a parsed
YAML file, or the CLI's ``{subcommand: {"model": hparams}}`` of a checkpoint) into the current
shape, and the CLI's parser calls it on every config it reads. A config in the current shape
comes back equal.

One old shape is read where it is built instead: the flat mixer knobs of ``IsotropicNet``
(issue 16) are still constructor arguments, folded into the mixer by
:mod:`ssl_biases.backbones.legacy` (a config may set them in one file and the mixer in another,
so they are resolved once the net has all its arguments); checkpoint reading
(:mod:`ssl_biases.run.checkpoint`) rewrites a stored backbone config with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from ssl_biases.methods.training import Training

TRAINING_FIELDS = tuple(field.name for field in fields(Training))
"""The knobs a method took flat (``model.init_args.<knob>``) until issue 33 and now takes in
``model.init_args.training``."""

MODEL_SECTIONS = ("init_args", "dict_kwargs")
"""Where a model config holds the method's arguments: ``init_args`` in a config file,
``dict_kwargs`` in the object Lightning parses from a checkpoint's hyperparameters."""

SUBCOMMANDS = ("fit", "validate", "test", "predict")

CLASS_PATH_ALIASES = {
    f"ssl_biases.experiments.sync_batchnorm.{name}": f"ssl_biases.run.sync_batchnorm.{name}"
    for name in ("AnyDeviceSyncBatchNorm", "CPUSyncBatchNorm")
}
"""Old ``class_path`` -> current, wherever a config names a class (``trainer.plugins`` of the
DDP runs before issue 16 named the SyncBatchNorm plugin in ``experiments/``)."""


@dataclass(frozen=True)
class Migration:
    """One retired config shape that is still read.

    Attributes:
        shape: What the old files hold.
        until: The change that retired it (the issue, and the first version without it).
        current: What it becomes.
        where: The code that migrates it.
    """

    shape: str
    until: str
    current: str
    where: str


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        shape="IsotropicNet's mixer knobs flat beside a mixer name: token_mixer: conv, "
        "kernel_size, window_radius, token_mlp_ratio, qkv_bias (config.yaml, a checkpoint's "
        "backbone_config, an export's backbone.json)",
        until="issue 16, typed token mixers (commit 651c8ae)",
        current="token_mixer: {class_path: ssl_biases.backbones.mixers.<Mixer>, init_args}",
        where="ssl_biases.backbones.legacy (mixer_from_legacy in IsotropicNet; "
        "migrate_backbone_config in run.checkpoint for stored configs and exports)",
    ),
    Migration(
        shape="IsotropicNet with last_dim and no last_block_act in a stored backbone config "
        "(a checkpoint's backbone_config, a run's config.yaml read by the checkpoint loader, "
        "an export's backbone.json): the last block had no activation after its sum",
        until="issue 29, the last block's ReLU (IsotropicNet last_block_act)",
        current="last_block_act: none (relu is the default for new configs)",
        where="ssl_biases.backbones.legacy.migrate_backbone_config; a run's config.yaml given "
        "to the CLI as --config needs --model.init_args.backbone.init_args.last_block_act none",
    ),
    Migration(
        shape="class_path: ssl_biases.experiments.sync_batchnorm.AnyDeviceSyncBatchNorm "
        "(or CPUSyncBatchNorm) in trainer.plugins",
        until="issue 16, step 1: the run room (commit 498f82c)",
        current="ssl_biases.run.sync_batchnorm.<the same class>",
        where="ssl_biases.run.legacy.CLASS_PATH_ALIASES, on every config the CLI parses",
    ),
    Migration(
        shape="a method's shared knobs flat: model.init_args.{optimizer, scheduler, "
        "warmup_fraction, scale_lr, reference_batch_size, online_probe_lr, compile, "
        "num_classes} (checkpoint hyper_parameters: the same names at the top level)",
        until="issue 33 (ssl-biases 0.1.0, December 2026)",
        current="model.init_args.training.<knob> (ssl_biases.methods.training.Training)",
        where="ssl_biases.run.legacy.migrate_model_config, on every config the CLI parses "
        "and on the hyperparameters of a --ckpt_path",
    ),
)


def migrate_model_config(model: Mapping[str, Any]) -> dict[str, Any]:
    """A model config (``{"class_path", "init_args"}``, possibly with ``dict_kwargs``) with
    the shared knobs a method took flat before issue 33 moved into ``training``.

    Raises:
        ValueError: when a knob is given both flat and in ``training``, with other values.
    """
    model = dict(model)
    for section in MODEL_SECTIONS:
        arguments = model.get(section)
        if not isinstance(arguments, Mapping):
            continue
        flat = {name: arguments[name] for name in TRAINING_FIELDS if name in arguments}
        if not flat:
            continue
        arguments = {k: v for k, v in arguments.items() if k not in flat}
        training = dict(arguments.get("training") or {})
        clash = {k: (v, training[k]) for k, v in flat.items() if k in training and training[k] != v}
        if clash:
            raise ValueError(
                f"{sorted(clash)} set both on the method and in its training object "
                f"(values {clash}): set them only under model.init_args.training "
                "(docs/migration.md)"
            )
        arguments["training"] = {**flat, **training}
        model[section] = arguments
    return model


def renamed_class_paths(value: Any) -> Any:
    """``value`` with every ``class_path`` of :data:`CLASS_PATH_ALIASES` renamed, at any depth
    (a copy where something changes)."""
    if isinstance(value, Mapping):
        renamed = {k: renamed_class_paths(v) for k, v in value.items()}
        if renamed.get("class_path") in CLASS_PATH_ALIASES:
            renamed["class_path"] = CLASS_PATH_ALIASES[renamed["class_path"]]
        return renamed
    if isinstance(value, list):
        return [renamed_class_paths(item) for item in value]
    return value


def migrate_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A whole CLI config (top level, or under a subcommand key) in the current shape.

    Handles a ``model`` section given nested (``model: {init_args: {...}}``) and dotted keys
    (``model.init_args.warmup_fraction: 0.0``, as an experiment's ``args`` write them), and
    renames old class paths anywhere (:data:`CLASS_PATH_ALIASES`).
    """
    config = renamed_class_paths(config)
    for subcommand in SUBCOMMANDS:
        if isinstance(config.get(subcommand), Mapping):
            config[subcommand] = migrate_config(config[subcommand])
    if isinstance(config.get("model"), Mapping):
        config["model"] = migrate_model_config(config["model"])
    for key in list(config):
        new_key = migrate_key(key)
        if new_key != key:
            if new_key in config and config[new_key] != config[key]:
                raise ValueError(f"{key} and {new_key} both set: keep only {new_key}")
            config[new_key] = config.pop(key)
    return config


def migrate_key(key: str) -> str:
    """A dotted config key (an experiment's ``args``, a grid axis' ``key``) in the current
    shape: ``model.init_args.warmup_fraction`` -> ``model.init_args.training.warmup_fraction``;
    any other key comes back as it is."""
    parts = key.split(".")
    if len(parts) >= 3 and parts[:2] == ["model", "init_args"] and parts[2] in TRAINING_FIELDS:
        return ".".join(["model", "init_args", "training", *parts[2:]])
    return key
