"""Exact resume for every bound, kill point and process count (issue 32, item 1).

Each cell trains SimCLR on the smallest backbone (width 32, depth 1, 16 px, 6 steps an epoch,
validation with the kNN probe at every epoch end, a checkpoint every 4 steps and at every epoch
end), takes the run directory as a kill at each kill point leaves it (:class:`Snapshots`),
resumes each with ``--ckpt_path last`` and compares every step's loss and label, every
validation's step label and the final step counters with the uninterrupted run:

* bounds: ``max_steps 15`` (ends mid-epoch), ``max_epochs 3`` and ``max_time`` alone (30
  minutes on a fake clock that advances 100 s a training batch, so :class:`TimeBudget` sizes the
  schedules to about 17 steps, the same in every process);
* kill points in epoch 1: mid-epoch (the last checkpoint is the step-8 one), right after an
  epoch end (step 7: the last checkpoint is the epoch-end one of step 6, written after the
  epoch's validation) and during the validation at the end of epoch 1 (the last checkpoint is
  the step-12 one, written at the end of the epoch's last batch, before the validation);
* 1 process (all 9 cells) and 2 CPU DDP processes (gloo; the 3 ``max_steps`` cells, where
  Lightning's restart differed: a 7th batch in the epoch and the sampler one epoch ahead; the
  other bounds take the same restart path as with 1 process).

An interrupted validation is not repeated on resume (nothing of it was kept), so that kill
point's resumed run has no row for it. Run alone on 2 cores: ``pytest
tests/run/test_resume_matrix.py --durations=0``.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ssl_biases.cli import cli_main
from ssl_biases.run.status import rank_zero_log_dir

from helpers import fit_args, read_metrics, train_losses

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
MODULE = "test_resume_matrix"  # this file, imported by name for the callbacks' class paths
BOUNDS = {
    "max_steps": ["--trainer.max_epochs=null", "--trainer.max_steps=15"],
    "max_epochs": ["--trainer.max_epochs=3"],
    "max_time": [
        "--trainer.max_epochs=null",
        "--trainer.max_time=00:00:30:00",
        f"--trainer.callbacks+={MODULE}.FakeClock",
    ],
}
KILLS = {  # (step, in validation): where the run is killed
    "mid-epoch": (9, False),
    "after epoch end": (7, False),
    "during validation": (12, True),
}
EXPECTED_RESUME_STEP = {"mid-epoch": 8, "after epoch end": 6, "during validation": 12}
DDP_BOUNDS = ("max_steps",)
WORLD = 2


class FakeClock(pl.Callback):
    """A clock for :class:`TimeBudget` that advances ``seconds`` per training batch."""

    def __init__(self, seconds: float = 100.0) -> None:
        self.seconds = seconds
        self.now = 0.0

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for callback in trainer.callbacks:
            if type(callback).__name__ == "TimeBudget":
                callback.clock = lambda: self.now

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.now += self.seconds


class Snapshots(pl.Callback):
    """Copies the run directory, as a SIGKILL would leave it, at each of :data:`KILLS`.

    The uninterrupted run is deterministic, so what is on disk when it reaches a kill point is
    exactly what a run killed there leaves behind (checkpoints, ``metrics.csv``, a ``running``
    status): resuming a copy is resuming a killed run, without training its first part again.
    """

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def _copy(self, trainer: pl.Trainer, in_validation: bool) -> None:
        for kill, (step, validating) in KILLS.items():
            target = self.folder / kill.replace(" ", "_")
            log_dir = rank_zero_log_dir(trainer)  # None on the other ranks
            at_kill = (step, validating) == (trainer.global_step, in_validation)
            if at_kill and log_dir is not None and not target.exists():  # (one validation batch)
                shutil.copytree(Path(log_dir), target)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._copy(trainer, in_validation=False)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dl_idx=0) -> None:
        if not trainer.sanity_checking:
            self._copy(trainer, in_validation=True)


def cell_args(folder: Path, bound: str, *extra: str) -> list[str]:
    return fit_args(
        "simclr",
        folder,
        "--trainer.limit_val_batches=null",  # the kNN probe at every epoch end
        "--checkpoint.every_n_train_steps=4",
        *BOUNDS[bound],
        *extra,
    )


def barrier() -> None:
    """Waits for every DDP rank (nothing with one process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def run_cell(folder: Path, bound: str, ddp: bool) -> dict[str, dict[str, Any]]:
    """The uninterrupted run in ``folder``, then the resume of each kill point's copy of it.

    Each resume runs in ``folder`` too (the copy put in the run directory's place), so every
    path is the one the killed run had.

    Returns:
        :func:`summary` of the uninterrupted run (``"reference"``) and of each resumed run,
        with ``"resumed_from"``: the step of the checkpoint each resume started from.
    """
    folder.mkdir(parents=True, exist_ok=True)
    cwd = os.getcwd()
    os.chdir(folder)
    strategy = ["--trainer.strategy=ddp", f"--trainer.devices={WORLD}"] if ddp else []
    strategy += [f"--data.batch_size={8 // WORLD}"] if ddp else []  # the same 6 steps an epoch
    chief = int(os.environ.get("RANK", "0")) == 0  # (DDP: the group exists after the first fit)
    runs = folder / "runs"
    snapshots = folder.parent / f"{folder.name}-snapshots"
    try:
        copier = [
            f"--trainer.callbacks+={MODULE}.Snapshots",
            f"--trainer.callbacks.folder={snapshots}",
        ]
        cli_main(cell_args(folder, bound, *strategy, *copier))
        results = {"reference": summary(runs / "ssl" / "version_0")} if chief else {}
        for kill in KILLS:
            barrier()  # (DDP: rank 0 has read the previous run; every rank is done with it)
            if chief:
                runs.rename(folder / f"runs-before-{kill.replace(' ', '_')}")  # set aside
                shutil.copytree(snapshots / kill.replace(" ", "_"), runs / "ssl" / "version_0")
                last = runs / "ssl" / "version_0" / "checkpoints" / "last.ckpt"
                step = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
            barrier()
            cli_main([*cell_args(folder, bound, *strategy), "--ckpt_path=last"])
            barrier()
            if chief:
                assert not (runs / "ssl" / "version_1").exists()
                results[kill] = {**summary(runs / "ssl" / "version_0"), "resumed_from": step}
        return results
    finally:
        os.chdir(cwd)


def summary(run: Path) -> dict[str, Any]:
    """What the comparison reads from a run directory."""
    final = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return {
        "losses": train_losses(run),
        "validations": [int(r["step"]) for r in read_metrics(run) if r.get("val/knn_top1")],
        "global_step": final["global_step"],
        "batches_that_stepped": final["loops"]["fit_loop"]["epoch_loop.state_dict"][
            "_batches_that_stepped"
        ],
        "epoch": final["epoch"],
    }


def assert_same_as_reference(resumed: dict[str, Any], reference: dict[str, Any]) -> None:
    """Every step's loss and label, every validation's label and the final counters."""
    resumed_from = resumed["resumed_from"]
    losses = resumed["losses"]
    retrained = sorted(step for step in losses if step >= resumed_from)
    assert retrained == sorted(s for s in reference["losses"] if s >= resumed_from)
    for step in retrained:  # (rows the killed process wrote are kept: a step twice)
        assert losses[step] == reference["losses"][step] * len(losses[step]), f"step {step}"
    # a validation at an epoch end is labelled with the epoch's last step (global step - 1)
    expected = [s for s in reference["validations"] if s >= resumed_from]
    assert [s for s in resumed["validations"] if s >= resumed_from] == expected
    for key in ("global_step", "batches_that_stepped", "epoch"):
        assert resumed[key] == reference[key], key
    assert resumed["batches_that_stepped"] == resumed["global_step"]


@pytest.fixture
def one_thread(monkeypatch):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.syspath_prepend(str(HERE))  # Snapshots and FakeClock by class path
    yield
    torch.set_num_threads(threads)


def assert_every_resume_exact(results: dict[str, dict[str, Any]]) -> None:
    for kill in KILLS:
        assert results[kill]["resumed_from"] == EXPECTED_RESUME_STEP[kill], kill
        assert_same_as_reference(results[kill], results["reference"])


@pytest.mark.parametrize("bound", list(BOUNDS))
def test_resume_is_exact_for_every_bound_and_kill_point(bound, tmp_path, one_thread):
    assert_every_resume_exact(run_cell(tmp_path / "cell", bound, ddp=False))


def ddp_worker(rank: int, port: int, root: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD), NODE_RANK="0",
    )  # fmt: skip
    torch.set_num_threads(1)
    sys.path.insert(0, str(HERE))
    for bound in DDP_BOUNDS:
        results = run_cell(Path(root) / bound, bound, ddp=True)
        if rank == 0:
            torch.save(results, Path(root) / f"{bound}.pt")
    if dist.is_initialized():
        dist.destroy_process_group()


def test_resume_is_exact_with_two_ddp_processes(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(ddp_worker, args=(port, str(tmp_path)), nprocs=WORLD, join=True)
    for bound in DDP_BOUNDS:
        assert_every_resume_exact(torch.load(tmp_path / f"{bound}.pt", weights_only=False))
