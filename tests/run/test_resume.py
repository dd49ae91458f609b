"""Exact resume: a run killed with SIGKILL mid-epoch and restarted with ``--ckpt_path last``
continues the uninterrupted run step for step (weights, teacher, DINO centre, optimiser,
schedules, data order), on CPU with deterministic settings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from ssl_biases.cli import SSLBiasesCLI, cli_main
from ssl_biases.run.resume import RandomState, resumable_version
from ssl_biases.run.status import read_run_status, write_run_status

from helpers import ROOT, TOTAL_STEPS, fit_args, train_losses

STEPS_PER_EPOCH = 6  # fit_args: shapes_size 48 / batch_size 8


class KillAtStep(pl.Callback):
    """SIGKILLs its own process when training reaches ``step`` (nothing runs after that)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def run_until_killed(folder, *extra: str) -> subprocess.Popen:
    """``ssl-biases fit`` in a subprocess (one thread), waited for; returns the process."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        # the root, helpers.py and this file (`test_resume.KillAtStep` on the command line)
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests"), str(Path(__file__).parent)]),
    }
    process = subprocess.run(
        [sys.executable, "-m", "ssl_biases", *fit_args("simclr", folder, *extra)],
        cwd=folder,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=300,
    )
    return process


@pytest.fixture
def one_thread():
    """One intra-op thread, as in the killed subprocess, so float sums are bitwise equal."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# One method per family of resumed state (each case is a killed subprocess plus two fits):
# simclr (weights, optimiser, schedules, data order), byol (a momentum teacher), dino (its
# centre and multi-crop views) and mae (masking, drawn from the restored random state).
# Dropped, as they add no kind of state: mocov3 (a momentum teacher, as byol), ijepa (masking
# plus a momentum teacher: mae + byol), ibot (a centre plus masking: dino + mae).
# swav adds a queue of past projections (a buffer written every step) and prototype freezing.
@pytest.mark.parametrize("method", ["simclr", "byol", "dino", "mae", "swav"])
def test_sigkill_then_resume_matches_uninterrupted_run(method, tmp_path, monkeypatch, one_thread):
    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    reference_dir.mkdir()
    killed_dir.mkdir()

    # The killed run: a real process, SIGKILLed as soon as its first checkpoint is on disk.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "ssl_biases", *fit_args(method, killed_dir)],
        cwd=killed_dir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    last = killed_dir / "runs" / "ssl" / "version_0" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    resumed_from = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
    assert 0 < resumed_from < TOTAL_STEPS

    # The uninterrupted run, in this process.
    monkeypatch.chdir(reference_dir)
    cli_main(fit_args(method, reference_dir))
    reference_run = reference_dir / "runs" / "ssl" / "version_0"
    reference = train_losses(reference_run)
    assert sorted(reference) == list(range(TOTAL_STEPS))

    # The restart: the same command plus --ckpt_path last continues version_0 in place.
    monkeypatch.chdir(killed_dir)
    cli_main([*fit_args(method, killed_dir), "--ckpt_path=last"])
    run = killed_dir / "runs" / "ssl" / "version_0"
    assert not (killed_dir / "runs" / "ssl" / "version_1").exists()
    assert read_run_status(run)["status"] == "completed"
    assert (run / "config.resume1.yaml").is_file()  # the first run's config.yaml is kept
    resumed = train_losses(run)  # rows the killed process wrote are kept (issue 17)
    retrained = sorted(step for step in resumed if step >= resumed_from)
    assert retrained == list(range(resumed_from, TOTAL_STEPS))
    for step, values in resumed.items():
        assert values == [reference[step][0]] * len(values), f"step {step}: {values}"

    # Same end state: weights (teachers and DINO centre included) and optimiser moments.
    final = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    expected = torch.load(
        reference_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False
    )
    assert final["global_step"] == expected["global_step"] == TOTAL_STEPS
    for key, value in expected["state_dict"].items():
        assert torch.equal(final["state_dict"][key], value), key
    moments = [s["exp_avg"] for s in expected["optimizer_states"][0]["state"].values()]
    resumed_moments = [s["exp_avg"] for s in final["optimizer_states"][0]["state"].values()]
    assert all(torch.equal(a, b) for a, b in zip(moments, resumed_moments, strict=True))
    assert final["lr_schedulers"] == expected["lr_schedulers"]


class CrashAtStep(pl.Callback):
    """Raises at the start of a given step: a crash with only the checkpoints left on disk."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("simulated crash")


VALIDATE_EVERY_EPOCH = (
    "--trainer.limit_val_batches=null",
    "--checkpoint.monitor=val/knn_top1",
    "--checkpoint.save_top_k=-1",  # keep best-epoch0-step6.ckpt
)


@pytest.mark.parametrize(
    ("extra", "checkpoint"),
    [
        ((), "last.ckpt"),  # LastCheckpoint at the end of epoch 0, crash in epoch 1
        (VALIDATE_EVERY_EPOCH, "best-epoch0-step6.ckpt"),  # saved at train epoch end
        (
            (*VALIDATE_EVERY_EPOCH, "--checkpoint.save_on_train_epoch_end=false"),
            "best-epoch0-step6.ckpt",  # saved at the end of the validation
        ),
    ],
    ids=["last.ckpt at epoch end", "best at epoch end", "best at validation end"],
)
def test_resume_from_an_end_of_epoch_checkpoint_is_exact(
    extra, checkpoint, tmp_path, monkeypatch, one_thread
):
    args = [
        *fit_args("simclr", tmp_path, "--checkpoint.every_n_train_steps=null", *extra)[1:],
        "--trainer.max_epochs=3",
    ]
    monkeypatch.chdir(tmp_path)
    cli_main(["fit", *args])  # the uninterrupted run: version_0
    reference = train_losses(tmp_path / "runs" / "ssl" / "version_0")
    assert sorted(reference) == list(range(3 * STEPS_PER_EPOCH))
    if checkpoint == "last.ckpt":  # version_1 crashes in epoch 1 and resumes in place
        cli = SSLBiasesCLI(args=args, run=False)
        cli.trainer.callbacks.append(CrashAtStep(STEPS_PER_EPOCH + 2))
        with pytest.raises(RuntimeError, match="simulated crash"):
            cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        path = tmp_path / "runs" / "ssl" / "version_1" / "checkpoints" / checkpoint
        ckpt_path, run = "last", path.parent.parent
    else:  # a new run (version_1) continues the uninterrupted run's best checkpoint
        path = tmp_path / "runs" / "ssl" / "version_0" / "checkpoints" / checkpoint
        ckpt_path, run = str(path), tmp_path / "runs" / "ssl" / "version_1"
    saved = torch.load(path, map_location="cpu", weights_only=False)
    assert saved["global_step"] == STEPS_PER_EPOCH
    assert saved["SSLDataModule"]["epoch"] == 1 and saved["SSLDataModule"]["batches_done"] == 0
    cli_main(["fit", *args, f"--ckpt_path={ckpt_path}"])
    resumed = train_losses(run)  # every step label once, each loss the uninterrupted run's
    assert sorted(resumed) == list(range(STEPS_PER_EPOCH, 3 * STEPS_PER_EPOCH))
    for step, values in resumed.items():
        assert values == reference[step], f"step {step}: {values}"


def test_ckpt_path_last_picks_the_newest_unfinished_run_with_a_last_checkpoint(tmp_path):
    for version, has_last in ((0, True), (2, True), (3, False), (4, True), (10, False)):
        folder = tmp_path / "ssl" / f"version_{version}" / "checkpoints"
        folder.mkdir(parents=True)
        if has_last:
            (folder / "last.ckpt").write_bytes(b"")
    write_run_status(tmp_path / "ssl" / "version_4", "completed")  # finished: not resumed
    write_run_status(tmp_path / "ssl" / "version_2", "failed")
    (tmp_path / "ssl" / "notes").mkdir()
    assert resumable_version(tmp_path, "ssl") == 2
    assert resumable_version(tmp_path, "other") is None


@pytest.mark.parametrize(
    ("timer", "expected_step"),
    [([], 4 * STEPS_PER_EPOCH), (["--last_checkpoint.every_n_minutes=0"], 4 * STEPS_PER_EPOCH + 3)],
    ids=["epoch end (10 minutes)", "every batch (0 minutes)"],
)
def test_last_checkpoint_is_refreshed_without_any_validation(timer, expected_step, tmp_path):
    # A probe-monitored ModelCheckpoint that never sees a validation writes no last.ckpt;
    # LastCheckpoint writes it at every epoch end and, at 0 minutes, after every batch (the
    # batch before the kill: the step it was killed at).
    kill_at = 4 * STEPS_PER_EPOCH + 3  # in the 5th epoch
    process = run_until_killed(
        tmp_path,
        "--trainer.max_epochs=50",
        "--trainer.limit_val_batches=null",
        "--trainer.check_val_every_n_epoch=1000",
        "--checkpoint.monitor=val/knn_top1",
        "--checkpoint.every_n_train_steps=null",
        *timer,
        "--trainer.callbacks+=test_resume.KillAtStep",
        f"--trainer.callbacks.step={kill_at}",
    )
    assert process.returncode == -signal.SIGKILL
    last = tmp_path / "runs" / "ssl" / "version_0" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == expected_step
    assert checkpoint["epoch"] >= 3
    assert [p.name for p in last.parent.iterdir()] == ["last.ckpt"]  # no validation, no best


# ------------------------------------------------------------------------- random state
def test_random_state_is_restored_when_training_resumes():
    import random

    import numpy as np

    callback = RandomState()
    saved = callback.state_dict()
    expected = (torch.rand(3), np.random.rand(), random.random())
    torch.manual_seed(123), np.random.seed(123), random.seed(123)  # the resumed process
    restored = RandomState()
    restored.load_state_dict(saved)
    restored.on_train_start(None, None)  # type: ignore[arg-type]
    assert torch.equal(torch.rand(3), expected[0])
    assert (np.random.rand(), random.random()) == expected[1:]
