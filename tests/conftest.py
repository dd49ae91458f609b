"""Shared test settings: deterministic, single-threaded per worker, no display."""

from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


TINY_BACKBONE_YAML = """
model:
  init_args:
    backbone:
      class_path: ssl_biases.backbones.IsotropicNet
      init_args: {width: 32, depth: 2, num_heads: 2, patch_size: 4, mlp_ratio: 2.0}
"""


@pytest.fixture
def tiny_backbone_config(tmp_path):
    """Path of a YAML that sets a tiny attention IsotropicNet as the backbone."""
    path = tmp_path / "tiny_backbone.yaml"
    path.write_text(TINY_BACKBONE_YAML)
    return str(path)
