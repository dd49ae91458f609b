"""Runs written by earlier versions, read in the current shape: every migration, in one place.

A run directory keeps what the code of its day wrote: ``RUN/config.yaml`` (the resolved
config), checkpoints with the method's hyperparameters and the backbone's config, and exports'
``backbone.json``. When the shape of a config changes, the old files must still fit, resume
(``--ckpt_path``), validate and export. :data:`MIGRATIONS` lists every shape this code still
reads, with the change that retired it; :func:`migrate_config` rewrites a config (a parsed
YAML file, or the CLI's ``{subcommand: {"model": hparams}}`` of a checkpoint) into the current
shape, and the CLI's parser calls it on every config it reads. A config in the current shape
comes back equal.
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


def migrate_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A whole CLI config (top level, or under a subcommand key) in the current shape.

    Handles a ``model`` section given nested (``model: {init_args: {...}}``) and dotted keys
    (``model.init_args.warmup_fraction: 0.0``, as an experiment's ``args`` write them).
    """
    config = dict(config)
    for subcommand in SUBCOMMANDS:
        if isinstance(config.get(subcommand), Mapping):
            config[subcommand] = migrate_config(config[subcommand])
    if isinstance(config.get("model"), Mapping):
        config["model"] = migrate_model_config(config["model"])
    for key in list(config):
        parts = key.split(".")
        if len(parts) >= 3 and parts[:2] == ["model", "init_args"] and parts[2] in TRAINING_FIELDS:
            new_key = ".".join(["model", "init_args", "training", *parts[2:]])
            if new_key in config and config[new_key] != config[key]:
                raise ValueError(f"{key} and {new_key} both set: keep only {new_key}")
            config[new_key] = config.pop(key)
    return config
