"""Exact resume: a run killed with SIGKILL mid-epoch and restarted with ``--ckpt_path last``
continues the uninterrupted run step for step (weights, teacher, DINO centre, optimiser,
schedules, data order), on CPU with deterministic settings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from ssl_biases.cli import cli_main
from ssl_biases.run_dir import read_run_status, resumable_version, write_run_status

from helpers import ROOT, TOTAL_STEPS, fit_args, train_losses


@pytest.fixture
def one_thread():
    """One intra-op thread, as in the killed subprocess, so float sums are bitwise equal."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("method", ["simclr", "byol", "dino", "mae", "mocov3"])
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
    resumed = train_losses(run)
    assert min(resumed) == resumed_from and max(resumed) == TOTAL_STEPS - 1
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
