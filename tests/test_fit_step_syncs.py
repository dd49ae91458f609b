"""Host syncs of one full training step of ``ssl-biases fit`` (issue 28, item 3), on CPU.

A real ``fit`` through the CLI, with every callback the CLI adds (the run's life, probes,
LR monitor, progress bar, NaN guard), runs a few steps of a tiny model; an
:class:`~ssl_biases.run.op_counter.OpCounter` is entered at the start of a step and left at
the start of the next, so it sees one whole loop iteration: forward, loss, backward,
optimiser, the callbacks' batch hooks and the next batch's fetch and transfer. The steps
counted log nothing (``log_every_n_steps`` is larger than the run), so what is left is what
every step pays. On a GPU each of these syncs stalls the host until the device catches up.

The bound is no device sync per step (issue 28 allows one, named): a sync that has to come
back is named here and, with why it stays, in docs/performance.md ("Fit's own step: host
syncs"), and the bound raised to one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest

from ssl_biases.cli import SSLBiasesCLI
from ssl_biases.run.op_counter import OpCounter, Sync

from helpers import fit_args

COUNTED_STEPS = (2, 3)  # batch indices whose whole iteration is counted (after a warm-up)
MAX_SYNCS_PER_STEP = 0  # the issue asks for at most 1; none is left, so none may come back
PBAR = "true"  # the CLI's default: a progress bar


@dataclass(frozen=True)
class KnownSync:
    """A sync the test accepts: its op, where it is called from, and why it stays."""

    op: str
    caller: str
    why: str

    def matches(self, sync: Sync) -> bool:
        return sync.op == self.op and self.caller in sync.caller


KNOWN_SYNCS: dict[str, KnownSync] = {}
"""Every sync a step may make, by name, with why it stays (docs/performance.md, "Fit's own
step: host syncs"). None is left: lightly's NT-Xent boolean mask (4 a step) gave way to
``SyncFreeNTXentLoss`` (methods/simclr.py) and the progress bar's ``train/loss`` (2 a step) to
a bar that reads it once per log interval (run/progress.py)."""


def known(sync: Sync) -> str | None:
    """The name of the known sync ``sync`` is, if any."""
    return next((name for name, k in KNOWN_SYNCS.items() if k.matches(sync)), None)


class StepSyncCounter(pl.Callback):
    """Counts ops and syncs from the start of each counted step to the start of the next.

    Put first in ``trainer.callbacks`` so every other callback's batch hooks fall inside.
    """

    def __init__(self, steps: tuple[int, ...]) -> None:
        self.steps = steps
        self.counters: dict[int, OpCounter] = {}
        self._open: tuple[int, OpCounter] | None = None

    def _close(self) -> None:
        if self._open is not None:
            self._open[1].__exit__(None, None, None)
            self._open = None

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._close()  # the previous counted step ends where this one starts
        if batch_idx in self.steps:
            counter = OpCounter()
            counter.__enter__()
            self._open = (batch_idx, counter)
            self.counters[batch_idx] = counter

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close()


class CountingCLI(SSLBiasesCLI):
    """The CLI with :class:`StepSyncCounter` as the trainer's first callback."""

    counter: StepSyncCounter

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        type(self).counter = StepSyncCounter(COUNTED_STEPS)
        trainer.callbacks.insert(0, type(self).counter)
        return trainer


def step_syncs(method: str, folder: Path) -> list[list[Sync]]:
    """The device syncs of each counted step of a tiny ``fit`` of ``method``."""
    args = fit_args(
        method,
        folder,
        "--trainer.max_epochs=1",  # 6 steps
        "--data.augment=workers",  # the device views have their own counts (test_device_views)
        "--data.num_workers=1",  # views in a worker process, as on a GPU machine
        "--trainer.log_every_n_steps=50",  # no counted step logs
        "--trainer.enable_progress_bar=" + PBAR,  # the CLI's default (a tqdm bar off a terminal)
        "--checkpoint.every_n_train_steps=50",
        f"--trainer.default_root_dir={folder / 'runs'}",
    )
    CountingCLI(args=args)
    counters = CountingCLI.counter.counters
    assert sorted(counters) == list(COUNTED_STEPS)
    assert all(c.ops > 100 for c in counters.values())  # a whole step was inside
    return [counters[step].device_syncs() for step in COUNTED_STEPS]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["simclr", "byol", "dino", "mae"])
def test_one_fit_step_makes_no_host_sync(method: str, tmp_path: Path) -> None:
    for syncs in step_syncs(method, tmp_path):
        names = [known(s) for s in syncs]
        unnamed = [f"{s.op} at {s.caller}" for s, name in zip(syncs, names) if name is None]
        assert not unnamed, f"{method}: syncs not named in docs/performance.md: {unnamed}"
        assert len(syncs) <= MAX_SYNCS_PER_STEP, f"{method}: {len(syncs)} syncs a step: {names}"
