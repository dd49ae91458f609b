"""NaNGuard without a per-step host sync (issue 28) and diverged weights (issue 32, item 2)."""

from __future__ import annotations

import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ssl_biases.cli import cli_main
from ssl_biases.run.faults import AtomicCheckpointIO, LastCheckpoint, NaNGuard, NonFiniteLossError
from ssl_biases.run.op_counter import OpCounter
from ssl_biases.run.status import read_run_status

from helpers import TOTAL_STEPS, fit_args, train_losses

SYNC_OPS = ("aten._local_scalar_dense", "aten.nonzero", "aten.is_nonzero")


def lr_flag(value: float) -> str:
    return f"--model.init_args.training.optimizer.init_args.lr={value:g}"


class Regression(pl.LightningModule):
    """A linear least-squares fit whose loss is NaN at the steps in ``nan_steps``."""

    def __init__(self, lr: float = 0.01, nan_steps: tuple[int, ...] = ()) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layer = nn.Linear(4, 1)
        self.lr = lr
        self.nan_steps = nan_steps

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = ((self.layer(x) - y) ** 2).mean()
        if self.global_step in self.nan_steps:
            loss = loss * float("nan")
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class CountingGuard(NaNGuard):
    """A :class:`NaNGuard` whose per-step hooks record the host syncs they make, by step."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.syncs: dict[int, int] = {}

    def _count(self, trainer: pl.Trainer, hook, *args) -> None:
        with OpCounter() as counter:
            try:
                hook(trainer, *args)
            finally:
                step = trainer.global_step
                found = [s for s in counter.syncs if s.op.startswith(SYNC_OPS)]
                self.syncs[step] = self.syncs.get(step, 0) + len(found)

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        self._count(trainer, super().on_before_backward, pl_module, loss)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self._count(trainer, super().on_before_optimizer_step, pl_module, optimizer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._count(trainer, super().on_train_batch_end, pl_module, outputs, batch, batch_idx)


def fit(folder: Path, module: Regression, guard: NaNGuard, *callbacks: pl.Callback) -> pl.Trainer:
    data = TensorDataset(torch.randn(64, 4), torch.randn(64, 1))
    trainer = pl.Trainer(
        default_root_dir=folder, max_steps=30, accelerator="cpu", logger=False,
        enable_progress_bar=False, enable_model_summary=False, plugins=[AtomicCheckpointIO()],
        callbacks=[guard, *callbacks],
    )  # fmt: skip
    with pytest.raises(NonFiniteLossError) as error:
        trainer.fit(module, DataLoader(data, batch_size=4))
    trainer.error = str(error.value)  # type: ignore[attr-defined]
    return trainer


def test_a_nan_stops_the_run_within_n_steps_reading_the_flag_only_on_check_steps(tmp_path):
    guard = CountingGuard(check_every_n_steps=4)  # checks before the updates of steps 3, 7, ...
    every_5 = pl.callbacks.ModelCheckpoint(tmp_path, every_n_train_steps=5, save_top_k=-1)
    trainer = fit(tmp_path, Regression(nan_steps=(6,)), guard, every_5)
    assert "the training loss is nan at step 6;" in trainer.error  # the first bad step
    assert trainer.global_step == 7  # stopped at the check of step 7 (6 + 4 at the latest)
    good = tmp_path / "epoch=0-step=5.ckpt"  # the step-10 one was never written
    assert f"Last good checkpoint: {good} (step 5)" in trainer.error
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == [good.name]
    saved = torch.load(good, weights_only=False)["state_dict"]
    assert all(torch.isfinite(value).all() for value in saved.values())
    # host syncs of the per-step hooks: only on check steps (3 and 7), none on the others
    assert {step for step, count in guard.syncs.items() if count} == {3, 7}
    assert set(guard.syncs) == set(range(8))
    assert guard.checks == 3  # steps 3 and 7, and the step-5 checkpoint


def test_every_step_is_checked_with_n_1(tmp_path):
    guard = CountingGuard(check_every_n_steps=1)
    trainer = fit(tmp_path, Regression(nan_steps=(2,)), guard)
    assert trainer.global_step == 2  # stopped before the NaN step's update
    assert "No checkpoint was saved yet: run again from the start" in trainer.error
    assert all(guard.syncs[step] for step in range(3))


def test_diverged_weights_are_no_good_checkpoint(tmp_path):
    # lr 1e6: the first update leaves a finite loss and weights near 1e6 (NaN follows later)
    every_batch = LastCheckpoint(every_n_minutes=0)  # tries to save after every batch
    trainer = fit(tmp_path, Regression(lr=1e6), NaNGuard(), every_batch)
    assert "the weights diverged at step 1" in trainer.error
    assert "No checkpoint was saved yet: run again from the start" in trainer.error
    assert not list(tmp_path.rglob("*.ckpt"))  # the diverged weights were never saved


def test_the_advice_for_a_diverged_run_names_a_checkpoint_that_works(tmp_path, monkeypatch):
    # issue 32's case through the CLI: with lr 1e4 the loss stays finite while the weights
    # pass 1e4 at step 3; the step-2 checkpoint is named, and resuming from it with a lower
    # learning rate (the advice) trains to the end with finite losses
    monkeypatch.chdir(tmp_path)
    every_batch = "--last_checkpoint.every_n_minutes=0"
    with pytest.raises(NonFiniteLossError) as error:
        cli_main(fit_args("simclr", tmp_path, lr_flag(1e4), every_batch))
    run = tmp_path / "runs" / "ssl" / "version_0"
    last = run / "checkpoints" / "last.ckpt"
    assert "the weights diverged at step 3" in str(error.value)
    assert (
        f"Last good checkpoint: {Path('runs/ssl/version_0/checkpoints/last.ckpt')} (step 2)"
        in str(error.value)
    )
    saved = torch.load(last, weights_only=False)
    assert saved["global_step"] == 2
    resumed = cli_main([*fit_args("simclr", tmp_path, lr_flag(1e-4)), "--ckpt_path=last"])
    assert read_run_status(run)["status"] == "completed"
    weights = [saved["state_dict"][name] for name, _ in resumed.model.named_parameters()]
    assert max(float(w.abs().max()) for w in weights) <= 1e4  # (buffers are no weights)
    losses = [value for values in train_losses(run).values() for value in values]
    assert len(losses) >= TOTAL_STEPS and all(math.isfinite(v) for v in losses)


def test_nan_guard_arguments_are_checked():
    with pytest.raises(ValueError, match="check_every_n_steps must be >= 1"):
        NaNGuard(check_every_n_steps=0)
    with pytest.raises(ValueError, match="max_abs_weight must be >= 0"):
        NaNGuard(max_abs_weight=-1.0)
