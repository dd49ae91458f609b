"""End-to-end checks of the `ssl-biases` CLI on tiny generated data."""

import math
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import LearningRateMonitor

from ssl_biases.cli import SSLBiasesCLI, cli_main
from ssl_biases.run.progress import LoggedLossRichProgressBar, LoggedLossTQDMProgressBar
from ssl_biases.run.status import is_completed, write_run_status

from helpers import CONFIGS, column, fit_args, read_metrics, tiny_args


def test_fit_writes_a_complete_run_directory_and_learns(
    tmp_path, monkeypatch, tiny_backbone_config, recwarn
):
    monkeypatch.chdir(tmp_path)
    cli = cli_main(
        [
            "fit",
            *tiny_args(
                tiny_backbone_config,
                "--trainer.max_epochs",
                "6",
                "--model.training.optimizer.lr",
                "0.02",
                # the 0.95 bar below was set on the worker path's draws; with `auto`'s device
                # views the 4-step averages fell to 0.95-0.98 of the first (3 seeds; issue 30)
                "--data.augment",
                "workers",
            ),
        ]
    )
    run = Path(cli.trainer.log_dir)
    assert run.parent.parent == Path("runs")
    assert (run / "config.yaml").is_file()
    assert list(run.glob("events.out.tfevents.*"))
    assert (run / "checkpoints/last.ckpt").is_file()
    assert list((run / "checkpoints").glob("best-*.ckpt"))
    rows = read_metrics(run)
    losses = column(rows, "train/loss")
    assert len(losses) == 24
    # deterministic on CPU (seeded views and order): the last epoch is clearly below the first
    assert sum(losses[-4:]) / 4 < 0.95 * sum(losses[:4]) / 4
    for key in ("val/knn_top1", "val/knn_top5", "val/linear_top1", "val/offline_linear_top1"):
        assert 0.0 <= column(rows, key)[-1] <= 1.0
    assert len(column(rows, "val/rankme")) == 6 and 1.0 < column(rows, "val/rankme")[-1] <= 32
    checkpoint = torch.load(run / "checkpoints/last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 24
    state = cli.model.state_dict()
    assert all(torch.equal(state[k], checkpoint["state_dict"][k]) for k in state)
    # metrics.csv shares the TensorBoard run dir without a spurious "will be deleted" warning
    assert not [w for w in recwarn if "exists and is not empty" in str(w.message)]


def test_max_steps_mid_epoch_still_checkpoints_and_validates(
    tmp_path, monkeypatch, tiny_backbone_config
):
    monkeypatch.chdir(tmp_path)
    cli = cli_main(["fit", *tiny_args(tiny_backbone_config, "--trainer.max_steps", "3")])
    run = Path(cli.trainer.log_dir)
    assert torch.load(run / "checkpoints/last.ckpt", weights_only=False)["global_step"] == 3
    rows = read_metrics(run)
    final = [r for r in rows if r.get("val/knn_top1")]
    assert final and int(final[-1]["step"]) == 3
    # re-evaluating the checkpoint gives the same probe numbers
    again = cli_main(
        [
            "validate",
            *tiny_args(tiny_backbone_config),
            "--ckpt_path",
            str(run / "checkpoints/last.ckpt"),
        ]
    )
    assert again.trainer.callback_metrics["val/knn_top1"].item() == pytest.approx(
        float(final[-1]["val/knn_top1"])
    )


def test_validate_without_checkpoint_probes_a_random_backbone(
    tmp_path, monkeypatch, tiny_backbone_config
):
    monkeypatch.chdir(tmp_path)
    cli = cli_main(["validate", *tiny_args(tiny_backbone_config)])
    metrics = cli.trainer.callback_metrics
    assert 0.0 <= metrics["val/knn_top1"].item() <= 1.0
    assert 0.0 <= metrics["val/offline_linear_top1"].item() <= 1.0
    assert (Path(cli.trainer.log_dir) / "metrics.csv").is_file()


def test_image_size_is_stated_once(tmp_path, monkeypatch, tiny_backbone_config):
    monkeypatch.chdir(tmp_path)
    cli = SSLBiasesCLI(args=tiny_args(tiny_backbone_config, "--data.image_size", "24"), run=False)
    assert cli.model.backbone.image_size == 24
    assert cli.model.backbone(torch.zeros(1, 3, 24, 24)).shape == (1, 32)
    assert cli.model.online_probe.out_features == 4  # linked from the data


def test_image_size_the_patch_does_not_divide_is_a_clear_error(
    tmp_path, monkeypatch, tiny_backbone_config
):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="patch"):
        SSLBiasesCLI(args=tiny_args(tiny_backbone_config, "--data.image_size", "30"), run=False)


def _config_sets() -> list[list[str]]:
    method = str(CONFIGS / "method/simclr.yaml")
    backbone = str(CONFIGS / "backbone/vit_tiny.yaml")
    data = str(CONFIGS / "data/shapes.yaml")
    sets = []
    for path in sorted(CONFIGS.glob("*/*.yaml")):
        if path.parent.name == "experiment":
            continue
        base = {"method": method, "backbone": backbone, "data": data}
        base[path.parent.name] = str(path)
        sets.append([x for value in base.values() for x in ("--config", value)])
    return sets


@pytest.mark.parametrize(
    "args", _config_sets(), ids=lambda a: "+".join(Path(x).stem for x in a[1::2])
)
def test_every_config_parses(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", *args, "--print_config"])
    assert exit_info.value.code in (0, None)
    assert "class_path" in capsys.readouterr().out


def test_lr_is_scaled_by_the_global_batch(tmp_path, monkeypatch, tiny_backbone_config):
    monkeypatch.chdir(tmp_path)
    cli = cli_main(["fit", *tiny_args(tiny_backbone_config, "--trainer.max_steps", "1")])
    groups = {g["name"]: g for g in cli.trainer.optimizers[0].param_groups}
    assert groups["decay"]["initial_lr"] == pytest.approx(1e-3 * 32 / 256)
    assert groups["no_decay"]["weight_decay"] == 0.0
    assert not math.isclose(groups["decay"]["weight_decay"], 0.0)


@pytest.mark.parametrize(
    ("tty", "bar"), [(True, LoggedLossRichProgressBar), (False, LoggedLossTQDMProgressBar)]
)
def test_progress_bar_is_rich_on_a_terminal_and_line_based_in_a_log(
    tty, bar, tmp_path, monkeypatch, tiny_backbone_config
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: tty)
    args = tiny_args(tiny_backbone_config, "--trainer.enable_progress_bar", "true")
    cli = SSLBiasesCLI(args=args, run=False)
    assert type(cli.trainer.progress_bar_callback) is bar


# ---------------------------------------------------------------- Lightning's own trainer flags
def test_fast_dev_run_runs_its_batches_and_writes_no_run_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = cli_main(fit_args("simclr", tmp_path, "--trainer.fast_dev_run=3"))
    assert cli.trainer.global_step == 3
    assert not (tmp_path / "runs").exists()


def test_logger_false_trains_without_the_lr_monitor(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = cli_main(fit_args("simclr", tmp_path, "--trainer.logger=false", "--trainer.max_steps=2"))
    assert cli.trainer.global_step == 2
    assert not any(isinstance(cb, LearningRateMonitor) for cb in cli.trainer.callbacks)
    # Lightning's layout without a logger: everything under default_root_dir (here the cwd)
    checkpoint = torch.load(tmp_path / "checkpoints/last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 2
    assert is_completed(tmp_path)


def test_default_root_dir_holds_the_runs_and_ckpt_path_last_resumes_there(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "elsewhere"
    first = cli_main(
        fit_args("simclr", tmp_path, f"--trainer.default_root_dir={root}", "--trainer.max_steps=2")
    )
    run = root / "ssl" / "version_0"
    assert Path(first.trainer.log_dir) == run
    assert (run / "checkpoints/last.ckpt").is_file() and is_completed(run)
    assert not (tmp_path / "runs").exists()
    write_run_status(run, "running")  # as a killed run leaves it: resumable
    again = cli_main(
        fit_args(
            "simclr",
            tmp_path,
            f"--trainer.default_root_dir={root}",
            "--trainer.max_steps=4",
            "--ckpt_path=last",
        )
    )
    assert Path(again.trainer.log_dir) == run
    assert again.trainer.global_step == 4
    assert torch.load(run / "checkpoints/last.ckpt", weights_only=False)["global_step"] == 4
    assert not (root / "ssl" / "version_1").exists()  # continued in place, not a fresh run


def test_an_explicit_logger_save_dir_wins_over_default_root_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["--trainer.default_root_dir", "a", "--trainer.logger.save_dir", "b"]
    cli = SSLBiasesCLI(args=tiny_args(str(CONFIGS / "backbone/vit_tiny.yaml"), *args), run=False)
    assert Path(cli.trainer.log_dir) == Path("b/ssl/version_0")
    plain = SSLBiasesCLI(args=tiny_args(str(CONFIGS / "backbone/vit_tiny.yaml")), run=False)
    assert Path(plain.trainer.log_dir) == Path("runs/ssl/version_0")
