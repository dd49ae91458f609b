"""Shared test settings: deterministic, single-threaded per worker, no display."""

from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

from helpers import write_tiny_backbone  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def tiny_backbone_config(tmp_path):
    """Path of a YAML that sets a tiny attention IsotropicNet as the backbone."""
    return write_tiny_backbone(tmp_path)
