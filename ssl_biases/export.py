"""Deprecated: the old home of ``ssl-biases export``, now :mod:`ssl_biases.run.export`.

Temporary, for ``ssl_biases.analysis.report`` (``read_checkpoint``, returning ``(backbone
weights, backbone config, global step)``) until it reads checkpoints with
:func:`ssl_biases.run.checkpoint.read_checkpoint`; delete this module then.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from torch import Tensor

from ssl_biases.run.checkpoint import BACKBONE_CONFIG_KEY as CHECKPOINT_KEY
from ssl_biases.run.checkpoint import read_checkpoint as _read_checkpoint
from ssl_biases.run.export import export_backbone, export_checkpoint, load_backbone

__all__ = ["CHECKPOINT_KEY", "export_backbone", "export_checkpoint", "load_backbone"]

warnings.warn(
    "ssl_biases.export moved to ssl_biases.run.export (checkpoint reading: "
    "ssl_biases.run.checkpoint.read_checkpoint)",
    DeprecationWarning,
    stacklevel=2,
)


def read_checkpoint(ckpt: str | Path) -> tuple[dict[str, Tensor], dict[str, Any], int]:
    """``(backbone weights, backbone config, global step)`` of a training checkpoint."""
    checkpoint = _read_checkpoint(ckpt)
    return checkpoint.backbone_weights(), checkpoint.backbone_config(), checkpoint.global_step
