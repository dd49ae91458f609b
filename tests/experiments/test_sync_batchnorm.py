"""The deprecated ``ssl_biases.experiments.sync_batchnorm``: earlier runs' configs still build."""

from __future__ import annotations

import importlib
import sys

import pytest

from ssl_biases.cli import SSLBiasesCLI
from ssl_biases.run.sync_batchnorm import AnyDeviceSyncBatchNorm

from helpers import tiny_args

OLD = "ssl_biases.experiments.sync_batchnorm"


def test_the_old_module_warns_and_is_the_new_class():
    sys.modules.pop(OLD, None)
    with pytest.warns(DeprecationWarning, match="ssl_biases.run.sync_batchnorm"):
        old = importlib.import_module(OLD)
    assert old.AnyDeviceSyncBatchNorm is AnyDeviceSyncBatchNorm


def test_a_saved_config_naming_the_old_class_path_still_builds(
    tmp_path, monkeypatch, tiny_backbone_config
):
    # the trainer section of a config.yaml written by a DDP run before the move
    saved = tmp_path / "config.yaml"
    saved.write_text(
        f"trainer:\n  accelerator: cpu\n  devices: 2\n  strategy: ddp\n"
        f"  plugins:\n    - class_path: {OLD}.AnyDeviceSyncBatchNorm\n"
    )
    monkeypatch.chdir(tmp_path)
    cli = SSLBiasesCLI(tiny_args(tiny_backbone_config, "--config", str(saved)), run=False)
    assert isinstance(cli.trainer.strategy._layer_sync, AnyDeviceSyncBatchNorm)
