"""Old config shapes come back in the current one (``ssl_biases.run.legacy``)."""

from __future__ import annotations

from dataclasses import fields

import pytest

from ssl_biases.cli import SSLBiasesCLI, cli_parser
from ssl_biases.experiments.grid import load_experiment
from ssl_biases.methods.training import Training
from ssl_biases.run import sync_batchnorm
from ssl_biases.run.legacy import CLASS_PATH_ALIASES, MIGRATIONS, TRAINING_FIELDS, migrate_config

from helpers import CONFIGS, tiny_args

OPTIMIZER = {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.1}}


def test_flat_shared_knobs_move_into_training_and_own_knobs_stay() -> None:
    old = {"model": {"class_path": "ssl_biases.methods.SimCLR", "init_args": {
        "temperature": 0.3, "optimizer": OPTIMIZER, "warmup_fraction": 0.0, "compile": False,
    }}}  # fmt: skip
    new = migrate_config(old)
    assert new["model"]["init_args"] == {
        "temperature": 0.3,
        "training": {"optimizer": OPTIMIZER, "warmup_fraction": 0.0, "compile": False},
    }
    assert old["model"]["init_args"]["warmup_fraction"] == 0.0  # the input is left alone


def test_checkpoint_hyperparameters_under_a_subcommand_are_migrated() -> None:
    # what LightningCLI parses on --ckpt_path: {subcommand: {"model": hparams}}
    hparams = {
        "class_path": "ssl_biases.methods.BYOL",
        "dict_kwargs": {"momentum_start": 0.99, "num_classes": 4, "scale_lr": False},
    }
    new = migrate_config({"fit": {"model": hparams}})
    assert new["fit"]["model"]["dict_kwargs"] == {
        "momentum_start": 0.99, "training": {"num_classes": 4, "scale_lr": False},
    }  # fmt: skip


def test_dotted_keys_of_an_experiment_are_migrated() -> None:
    new = migrate_config({"model.init_args.warmup_fraction": 0.0, "data.batch_size": 8,
                          "model.init_args.optimizer.init_args.lr": 0.1})  # fmt: skip
    assert new == {"model.init_args.training.warmup_fraction": 0.0, "data.batch_size": 8,
                   "model.init_args.training.optimizer.init_args.lr": 0.1}  # fmt: skip


def test_the_current_shape_comes_back_equal() -> None:
    current = {"model": {"init_args": {"temperature": 0.3, "training": {"scale_lr": False}}}}
    assert migrate_config(current) == current
    assert migrate_config({"trainer": {"max_steps": 3}}) == {"trainer": {"max_steps": 3}}


def test_a_knob_both_flat_and_in_training_with_other_values_is_a_value_error() -> None:
    both = {"model": {"init_args": {"scale_lr": True, "training": {"scale_lr": False}}}}
    with pytest.raises(ValueError, match=r"\['scale_lr'\].*model.init_args.training"):
        migrate_config(both)


def test_every_training_field_is_migrated_and_the_table_says_from_which_version() -> None:
    assert set(TRAINING_FIELDS) == {field.name for field in fields(Training)}
    assert any("issue 33" in m.until and "warmup_fraction" in m.shape for m in MIGRATIONS)


def test_an_old_shape_config_file_parses_into_the_training_object(tmp_path) -> None:
    old = tmp_path / "old_simclr.yaml"
    old.write_text(
        "model:\n  class_path: ssl_biases.methods.SimCLR\n  init_args:\n"
        "    temperature: 0.3\n    warmup_fraction: 0.0\n    scale_lr: false\n"
        "    optimizer: {class_path: torch.optim.SGD, init_args: {lr: 1e-3}}\n"
    )
    config = cli_parser().parse_args([
        "fit", f"--config={old}", f"--config={CONFIGS / 'backbone/vit_tiny.yaml'}",
        f"--config={CONFIGS / 'data/shapes.yaml'}",
    ])  # fmt: skip
    method = config.fit.model.init_args
    assert method.temperature == 0.3
    assert (method.training.warmup_fraction, method.training.scale_lr) == (0.0, False)
    assert method.training.optimizer.class_path == "torch.optim.SGD"
    assert method.training.optimizer.init_args.lr == pytest.approx(1e-3)


def test_the_old_sync_batchnorm_class_path_is_renamed_at_any_depth() -> None:
    old = {"trainer": {"plugins": [
        {"class_path": "ssl_biases.experiments.sync_batchnorm.AnyDeviceSyncBatchNorm"},
        {"class_path": "some.other.Plugin"},
    ]}}  # fmt: skip
    plugins = migrate_config({"fit": old})["fit"]["trainer"]["plugins"]
    assert plugins == [
        {"class_path": "ssl_biases.run.sync_batchnorm.AnyDeviceSyncBatchNorm"},
        {"class_path": "some.other.Plugin"},
    ]
    for current in CLASS_PATH_ALIASES.values():  # each names a class that exists
        module, _, name = current.rpartition(".")
        assert module == sync_batchnorm.__name__ and isinstance(getattr(sync_batchnorm, name), type)


def test_a_saved_config_naming_the_old_sync_batchnorm_still_builds(
    tmp_path, monkeypatch, tiny_backbone_config
) -> None:
    # the trainer section of a config.yaml written by a DDP run before the run room (issue 16)
    saved = tmp_path / "config.yaml"
    saved.write_text(
        "trainer:\n  accelerator: cpu\n  devices: 2\n  strategy: ddp\n  plugins:\n"
        "    - class_path: ssl_biases.experiments.sync_batchnorm.AnyDeviceSyncBatchNorm\n"
    )
    monkeypatch.chdir(tmp_path)
    cli = SSLBiasesCLI(tiny_args(tiny_backbone_config, "--config", str(saved)), run=False)
    assert isinstance(cli.trainer.strategy._layer_sync, sync_batchnorm.AnyDeviceSyncBatchNorm)


def test_every_migration_says_what_retired_it_and_where_it_is_read() -> None:
    assert len(MIGRATIONS) == 4
    for migration in MIGRATIONS:
        assert "issue" in migration.until and "ssl_biases." in migration.where


def test_an_old_experiment_file_gives_cells_in_the_new_shape(tmp_path) -> None:
    spec = tmp_path / "old_experiment.yaml"
    spec.write_text(
        "name: old\nconfigs: [configs/method/simclr.yaml]\n"
        "args: {model.init_args.warmup_fraction: 0.0, data.batch_size: 8}\n"
        "axes:\n  - name: lr\n    key: model.init_args.optimizer.init_args.lr\n"
        "    values: [0.1, 0.2]\n"
    )
    cells = load_experiment(spec).cells()
    assert [dict(cell.args) for cell in cells] == [
        {"model.init_args.training.warmup_fraction": 0.0, "data.batch_size": 8,
         "model.init_args.training.optimizer.init_args.lr": lr}
        for lr in (0.1, 0.2)
    ]  # fmt: skip
