"""The one reader of training checkpoints: the CLI's ``--ckpt_path`` check, export, analyze.

``read_checkpoint(path)`` loads a checkpoint written by ``ssl-biases fit`` memory-mapped
(tensors are read lazily) with ``weights_only=True``, as ``fit --ckpt_path`` reads it, and
returns a :class:`TrainingCheckpoint`: the whole model's ``state_dict`` (the CLI's
``--ckpt_path`` check and the architecture check), and the backbone alone, its weights, how
to build it and the global step (``ssl-biases export``, ``ssl-biases analyze``)::

    checkpoint = read_checkpoint("runs/ssl/version_0/checkpoints/last.ckpt")
    backbone = checkpoint.backbone()  # built from its config, weights loaded, eval mode

The backbone's config (``{"class_path", "init_args"}``) comes from the checkpoint (the CLI
stores it under :data:`BACKBONE_CONFIG_KEY`), else from the run's ``config.yaml`` beside
``checkpoints/`` (older checkpoints). Every failure is a ``FileNotFoundError`` or
``ValueError`` naming the file and what to do. This module imports neither Lightning nor the
methods, so ``ssl_biases.load_backbone`` stays cheap.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ssl_biases.backbones.legacy import migrate_backbone_config

BACKBONE_CONFIG_KEY = "backbone_config"
"""Where the CLI stores the backbone's ``{"class_path", "init_args"}`` in every checkpoint."""

BACKBONE_PREFIX = "backbone."  # the backbone's keys in the method's state_dict


def import_backbone_class(class_path: str) -> type[nn.Module]:
    """The ``nn.Module`` class named by a dotted ``class_path``.

    Raises:
        ValueError: when it cannot be imported or is no ``nn.Module`` class.
    """
    module_name, _, class_name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(
            f"cannot import backbone class {class_path!r} ({err}); install the package that "
            "defines it or fix `class_path` in the backbone's config"
        ) from err
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(f"{class_path!r} is not an nn.Module class")
    return cls


def build_backbone(config: dict[str, Any]) -> nn.Module:
    """``class_path(**init_args)`` of a backbone config (random weights)."""
    return import_backbone_class(config["class_path"])(**config.get("init_args", {}))


def load_weights(module: nn.Module, state: dict[str, Tensor], config: dict[str, Any]) -> None:
    """``module.load_state_dict(state, strict=True)``; a ``ValueError`` when they do not fit."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(
            f"the weights do not fit {config['class_path']}({config.get('init_args', {})}): {err}"
        ) from err


def config_from_run_dir(path: str | Path) -> dict[str, Any] | None:
    """The backbone section of ``RUN/config.yaml`` for ``RUN/checkpoints/<name>.ckpt``."""
    import yaml

    config_file = Path(path).resolve().parent.parent / "config.yaml"
    if not config_file.is_file():
        return None
    config = yaml.safe_load(config_file.read_text()) or {}
    backbone = (config.get("model") or {}).get("init_args", {}).get("backbone")
    if not (isinstance(backbone, dict) and "class_path" in backbone):
        return None
    init_args = dict(backbone.get("init_args") or {})
    # The CLI links data.image_size -> the backbone's image_size; config.yaml omits link targets.
    image_size = (config.get("data") or {}).get("image_size")
    parameters = inspect.signature(import_backbone_class(backbone["class_path"])).parameters
    if image_size is not None and "image_size" in parameters and "image_size" not in init_args:
        init_args["image_size"] = image_size
    return {"class_path": backbone["class_path"], "init_args": init_args}


@dataclass(frozen=True)
class TrainingCheckpoint:
    """A checkpoint written by ``ssl-biases fit``, read by :func:`read_checkpoint`.

    Attributes:
        path: The file it was read from.
        contents: The whole checkpoint dict (``state_dict``, ``global_step``, loop and
            callback states, :data:`BACKBONE_CONFIG_KEY`, ...); tensors memory-mapped.
    """

    path: Path
    contents: dict[str, Any]

    @property
    def state_dict(self) -> dict[str, Tensor]:
        """The whole method's weights (backbone, heads, teacher, probe)."""
        return self.contents["state_dict"]

    @property
    def global_step(self) -> int:
        """The optimiser steps done when it was saved (-1 if not recorded)."""
        return int(self.contents.get("global_step", -1))

    def backbone_weights(self) -> dict[str, Tensor]:
        """The backbone's ``state_dict`` (the method's ``backbone.*`` keys, prefix removed).

        Raises:
            ValueError: when the checkpoint holds no backbone weights.
        """
        state = {
            key[len(BACKBONE_PREFIX) :]: value
            for key, value in self.state_dict.items()
            if key.startswith(BACKBONE_PREFIX)
        }
        if not state:
            raise ValueError(
                f"{self.path} holds no `backbone.*` weights: is it an ssl-biases checkpoint?"
            )
        return state

    def backbone_config(self) -> dict[str, Any]:
        """``{"class_path", "init_args"}`` that rebuilds the backbone, in the current shape.

        A config stored before typed token mixers (flat mixer knobs) comes back migrated by
        :func:`ssl_biases.backbones.legacy.migrate_backbone_config`: it builds the same net,
        export writes it in the new shape and ``registry_name`` finds its preset.

        Raises:
            ValueError: when neither the checkpoint nor the run's ``config.yaml`` says it.
        """
        config = self.contents.get(BACKBONE_CONFIG_KEY) or config_from_run_dir(self.path)
        if config is None:
            raise ValueError(
                f"{self.path} does not say how its backbone was built (no "
                f"{BACKBONE_CONFIG_KEY!r} entry and no config.yaml beside checkpoints/); train "
                "with `ssl-biases fit`, or call `export_backbone(backbone, output, config)` "
                "with the backbone's class_path/init_args"
            )
        # runs from before typed token mixers stored flat mixer knobs: the current shape
        return migrate_backbone_config(config)

    def backbone(self) -> nn.Module:
        """The backbone, built from :meth:`backbone_config`, weights loaded, in eval mode.

        Raises:
            ValueError: as :meth:`backbone_weights` and :meth:`backbone_config`, and when the
                weights do not fit the config's architecture.
        """
        config = self.backbone_config()
        module = build_backbone(config)
        load_weights(module, self.backbone_weights(), config)
        return module.eval()


def read_checkpoint(path: str | Path) -> TrainingCheckpoint:
    """Reads a training checkpoint (memory-mapped, ``weights_only=True``).

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ValueError: naming the file, when it is no readable checkpoint (garbage, truncated)
            or holds no ``state_dict`` (no Lightning checkpoint).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} not found; runs keep theirs in "
            "runs/<name>/version_<n>/checkpoints/ (last.ckpt, best-*.ckpt)"
        )
    try:  # weights_only: tensors and plain containers only, as `fit --ckpt_path` reads it
        contents = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as error:  # garbage or a truncated file: pickle, zip or unpickler errors
        message = str(error).splitlines()[0][:200] if str(error) else ""
        raise ValueError(
            f"cannot read checkpoint {path} ({type(error).__name__}: {message}); pass a "
            "checkpoint written by `ssl-biases fit` (runs/<name>/version_<n>/checkpoints/*.ckpt)"
        ) from error
    if not isinstance(contents, dict) or "state_dict" not in contents:
        kind = type(contents).__name__ if not isinstance(contents, dict) else "dict"
        raise ValueError(
            f"{path} holds a {kind} without `state_dict`: it is not a Lightning checkpoint; "
            "pass one written by `ssl-biases fit` (runs/<name>/version_<n>/checkpoints/*.ckpt)"
        )
    return TrainingCheckpoint(path=path, contents=contents)
