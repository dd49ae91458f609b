"""Faults survived: pre-emption signals, half-written checkpoints, NaN/Inf losses, determinism."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ssl_biases.cli import SSLBiasesCLI, cli_main, main
from ssl_biases.run import faults
from ssl_biases.run.csv_logger import add_csv_logger
from ssl_biases.run.faults import AtomicCheckpointIO, NaNGuard, NonFiniteLossError
from ssl_biases.run.status import is_completed, read_run_status

from helpers import TOTAL_STEPS, read_metrics, train_losses
from helpers import fit_args as method_fit_args


def fit_args(folder: Path, *extra: str) -> list[str]:
    return method_fit_args("simclr", folder, *extra)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run directory of the uninterrupted run (seed 0)."""
    folder = tmp_path_factory.mktemp("reference")
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        cli_main(fit_args(folder))
    finally:
        os.chdir(cwd)
    run = folder / "runs" / "ssl" / "version_0"
    assert is_completed(run)
    return run


@pytest.fixture(scope="module")
def reference(reference_run: Path) -> dict[int, list[float]]:
    """Per-step losses of the uninterrupted run (seed 0)."""
    return train_losses(reference_run)


# ------------------------------------------------------------------------------ determinism
def test_same_seed_gives_the_same_metrics(reference, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli_main(fit_args(tmp_path))
    assert train_losses(tmp_path / "runs" / "ssl" / "version_0") == reference
    cli_main(fit_args(tmp_path, "--seed_everything=1"))
    other = train_losses(tmp_path / "runs" / "ssl" / "version_1")
    assert other[0] != reference[0]  # the seed matters: initialisation, order, views


# ------------------------------------------------------------------------------ pre-emption
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_saves_a_checkpoint_and_the_resume_is_exact(
    signum, reference, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "runs" / "ssl" / "version_0"
    first = run / "checkpoints" / "last.ckpt"

    def send_signal_after_first_checkpoint() -> None:
        deadline = time.monotonic() + 120
        while not first.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(os.getpid(), signum)

    threading.Thread(target=send_signal_after_first_checkpoint, daemon=True).start()
    with pytest.raises(SystemExit) as stop:
        main(fit_args(tmp_path))
    assert stop.value.code == 128 + signum
    status = read_run_status(run)
    assert status["status"] == "interrupted"
    saved = torch.load(first, map_location="cpu", weights_only=False)["global_step"]
    assert saved == status["global_step"] and 0 < saved < TOTAL_STEPS

    cli_main([*fit_args(tmp_path), "--ckpt_path=last"])
    assert is_completed(run)
    resumed = train_losses(run)
    # metrics.csv keeps the rows of the first process: every step once, from the start
    assert sorted(resumed) == list(range(TOTAL_STEPS))
    for step, values in resumed.items():
        assert values == [reference[step][0]], f"step {step}"
    # TensorBoard: one event file per process, together every step once
    event_files = sorted(run.glob("events.out.tfevents.*"))
    assert len(event_files) == 2
    steps = sorted(
        event.step for event in EventAccumulator(str(run)).Reload().Scalars("train/loss")
    )
    assert steps == list(range(TOTAL_STEPS))


class CrashAtStep(pl.Callback):
    """Raises at the start of a given step: a crash with only the checkpoints left on disk."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("simulated crash")


def test_resume_from_an_epoch_end_checkpoint_is_exact(reference, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # One loader worker (the reference had none): the views depend on (seed, epoch, index) only.
    worker = "--data.num_workers=1"
    cli = SSLBiasesCLI(args=fit_args(tmp_path, worker)[1:], run=False)
    cli.trainer.callbacks.append(CrashAtStep(7))  # last.ckpt: step 6, the end of epoch 0
    with pytest.raises(RuntimeError, match="simulated crash"):
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    run = tmp_path / "runs" / "ssl" / "version_0"
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 6
    cli_main([*fit_args(tmp_path, worker), "--ckpt_path=last"])
    resumed = train_losses(run)
    assert sorted(resumed) == list(range(6, TOTAL_STEPS))
    assert all(resumed[step] == reference[step] for step in resumed)


# ------------------------------------------------------------------------ atomic checkpoints
def test_a_kill_while_saving_leaves_the_previous_checkpoint_loadable(tmp_path, monkeypatch):
    checkpoint_io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    checkpoint_io.save_checkpoint({"global_step": 4, "w": torch.arange(1000.0)}, path)

    def write_half_then_die(handle, data) -> None:
        handle.write(data[: len(data) // 2])
        handle.flush()
        raise KeyboardInterrupt  # the process is killed half-way through the write

    monkeypatch.setattr(faults, "_write_file", write_half_then_die)
    with pytest.raises(KeyboardInterrupt):
        checkpoint_io.save_checkpoint({"global_step": 6, "w": torch.zeros(1000)}, path)
    loaded = torch.load(path, weights_only=False)
    assert loaded["global_step"] == 4 and torch.equal(loaded["w"], torch.arange(1000.0))
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]
    assert checkpoint_io.last_saved == (str(path), 4)


def test_the_cli_writes_checkpoints_atomically(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = SSLBiasesCLI(args=fit_args(tmp_path)[1:], run=False)
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)


# --------------------------------------------------------------------------- NaN / Inf loss
class NaNAtSteps(pl.Callback):
    """Makes the backbone output NaN at the given global steps; records the weights."""

    def __init__(self, steps: set[int]) -> None:
        self.steps = steps
        self.before: dict[int, torch.Tensor] = {}
        self.after: dict[int, torch.Tensor] = {}

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        def poison(module, inputs, output):
            return output * float("nan") if trainer.global_step in self.steps else output

        pl_module.backbone.register_forward_hook(poison)

    def _weights(self, pl_module: pl.LightningModule) -> torch.Tensor:
        return torch.cat([p.detach().flatten() for p in pl_module.parameters()]).clone()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.before[trainer.global_step] = self._weights(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.after[trainer.global_step - 1] = self._weights(pl_module)


def fit_with_nan(folder: Path, steps: set[int], *extra: str) -> tuple[SSLBiasesCLI, NaNAtSteps]:
    cli = SSLBiasesCLI(args=fit_args(folder, *extra)[1:], run=False)
    poison = NaNAtSteps(steps)
    cli.trainer.callbacks.append(poison)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return cli, poison


def test_nan_loss_stops_naming_the_step_and_the_last_good_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NonFiniteLossError) as error:
        fit_with_nan(tmp_path, {5})
    message = str(error.value)
    assert "loss is nan at step 5;" in message  # found by the check of the step-6 checkpoint
    last = tmp_path / "runs" / "ssl" / "version_0" / "checkpoints" / "last.ckpt"
    assert f"{Path('runs/ssl/version_0/checkpoints/last.ckpt')} (step 4)" in message
    assert torch.load(last, weights_only=False)["global_step"] == 4
    assert read_run_status(last.parent.parent)["status"] == "failed"


def test_nan_loss_before_any_checkpoint_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NonFiniteLossError) as error:
        fit_with_nan(tmp_path, {1})  # the first checkpoint is at step 2
    message = str(error.value)
    assert "No checkpoint was saved yet: run again from the start" in message
    assert "Last good checkpoint" not in message and "--ckpt_path" not in message
    assert not (tmp_path / "runs" / "ssl" / "version_0" / "checkpoints").exists()


def test_a_learning_rate_given_on_a_resume_replaces_the_checkpoints(
    reference_run, tmp_path, monkeypatch, caplog
):
    # the NaN guard's advice: resume with --ckpt_path last and a lower learning rate
    monkeypatch.chdir(tmp_path)
    cli = SSLBiasesCLI(args=fit_args(tmp_path)[1:], run=False)
    add_csv_logger(cli.trainer)  # metrics.csv, as `ssl-biases fit` has
    cli.trainer.callbacks.append(CrashAtStep(5))  # last.ckpt: step 4
    with pytest.raises(RuntimeError, match="simulated crash"):
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    lower = "--model.init_args.training.optimizer.init_args.lr=1e-4"  # simclr.yaml: 1e-3
    with caplog.at_level(logging.INFO, logger="lightning.pytorch"):
        resumed = cli_main([*fit_args(tmp_path, lower), "--ckpt_path=last"])
    groups = {g["name"]: g for g in resumed.trainer.optimizers[0].param_groups}
    assert groups["decay"]["initial_lr"] == pytest.approx(1e-4 * 8 / 256)  # batch-scaled
    assert groups["online_probe"]["initial_lr"] == pytest.approx(1e-3)  # unchanged
    rows = read_metrics(tmp_path / "runs" / "ssl" / "version_0")
    reference_rows = read_metrics(reference_run)
    lr = "lr-AdamW/decay"
    expected = {int(r["step"]): float(r[lr]) for r in reference_rows if r.get(lr)}
    logged = {int(r["step"]): float(r[lr]) for r in rows if r.get(lr)}  # the resumed run's last
    assert sorted(logged) == list(range(TOTAL_STEPS))
    for step, value in logged.items():  # the same schedule, from step 4 at a tenth of the rate
        assert value == pytest.approx(expected[step] / (10 if step >= 4 else 1)), f"step {step}"
    assert "the configured learning rate replaces the checkpoint's" in caplog.text


def test_nan_guard_skip_drops_the_update_and_counts_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli, poison = fit_with_nan(tmp_path, {3, 7}, "--nan_guard.skip=true")
    guard = next(cb for cb in cli.trainer.callbacks if isinstance(cb, NaNGuard))
    assert guard.skipped == 2 and cli.trainer.global_step == TOTAL_STEPS
    assert cli.trainer.callback_metrics["train/skipped_batches"] == 2
    for step in (3, 7):  # the poisoned steps left every weight as it was
        assert torch.equal(poison.before[step], poison.after[step])
    assert not torch.equal(poison.before[4], poison.after[4])  # the others trained
    assert all(torch.isfinite(p).all() for p in cli.model.parameters())


def test_nan_guard_skip_gives_up_on_a_diverged_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NonFiniteLossError, match="after 2 skipped batches in a row"):
        fit_with_nan(
            tmp_path,
            set(range(3, 12)),
            "--nan_guard.skip=true",
            "--nan_guard.max_consecutive_skips=2",
        )
