"""Tiny checkpoints as ``ssl-biases fit`` writes them, for the analysis command's tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from ssl_biases.backbones import IsotropicNet
from ssl_biases.run.checkpoint import BACKBONE_CONFIG_KEY as CHECKPOINT_KEY


def _write_checkpoint(path: Path, seed: int, **init_args) -> Path:
    """A checkpoint as `ssl-biases fit` writes it: backbone.* weights + the backbone config."""
    init_args = {"image_size": 32, "patch_size": 8, "width": 32, "depth": 2, "num_heads": 2,
                 **init_args}  # fmt: skip
    torch.manual_seed(seed)
    backbone = IsotropicNet(**init_args)
    state = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    config = {"class_path": "ssl_biases.backbones.IsotropicNet", "init_args": init_args}
    torch.save({"state_dict": state, CHECKPOINT_KEY: config, "global_step": 7}, path)
    return path


@pytest.fixture
def write_checkpoint() -> Callable[..., Path]:
    """``write_checkpoint(path, seed, **IsotropicNet_args) -> path`` (32 px, width 32, depth 2)."""
    return _write_checkpoint
