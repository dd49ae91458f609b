"""Exact resume: a run killed with SIGKILL mid-epoch and restarted with ``--ckpt_path last``
continues the uninterrupted run step for step (weights, teacher, DINO centre, optimiser,
schedules, data order), on CPU with deterministic settings."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ssl_biases.cli import cli_main
from ssl_biases.run_dir import read_run_status, resumable_version, write_run_status

ROOT = Path(__file__).resolve().parents[1]
STEPS_PER_EPOCH = 6  # shapes_size 48 / batch_size 8
TOTAL_STEPS = 2 * STEPS_PER_EPOCH

HEADS = {  # tiny heads so a step costs milliseconds
    "simclr": ["--model.init_args.projection_hidden_dim=64", "--model.init_args.projection_dim=32"],
    "byol": [
        "--model.init_args.projection_hidden_dim=64",
        "--model.init_args.projection_dim=32",
        "--model.init_args.prediction_hidden_dim=64",
    ],
    "dino": [
        "--model.init_args.hidden_dim=64",
        "--model.init_args.bottleneck_dim=32",
        "--model.init_args.output_dim=64",
        "--model.init_args.n_local_views=2",
    ],
    "mae": [  # random masks: the global generators are restored from the checkpoint
        "--model.init_args.decoder_dim=32",
        "--model.init_args.decoder_depth=1",
        "--model.init_args.decoder_num_heads=2",
    ],
}


def fit_args(method: str, folder: Path) -> list[str]:
    backbone = folder / "backbone.yaml"
    backbone.write_text(
        "model: {init_args: {backbone: {class_path: ssl_biases.backbones.IsotropicNet, "
        "init_args: {width: 32, depth: 1, num_heads: 2, patch_size: 4}}}}\n"
    )
    return [
        "fit",
        f"--config={ROOT / 'configs' / 'method' / f'{method}.yaml'}",
        f"--config={backbone}",
        f"--config={ROOT / 'configs' / 'data' / 'shapes.yaml'}",
        *HEADS[method],
        "--data.shapes_size=48",
        "--data.image_size=16",
        "--data.batch_size=8",
        "--data.num_workers=0",
        "--data.max_probe_train_samples=16",
        "--trainer.max_epochs=2",
        "--trainer.limit_val_batches=0",
        "--trainer.num_sanity_val_steps=0",
        "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--checkpoint.monitor=null",
        "--checkpoint.every_n_train_steps=2",
    ]


def train_losses(run_dir: Path) -> dict[int, list[float]]:
    """``step -> [train/loss, ...]`` from ``metrics.csv`` (a step twice if it was rerun)."""
    losses: dict[int, list[float]] = {}
    with open(run_dir / "metrics.csv") as handle:
        for row in csv.DictReader(handle):
            if row.get("train/loss"):
                losses.setdefault(int(row["step"]), []).append(float(row["train/loss"]))
    return losses


@pytest.fixture
def one_thread():
    """One intra-op thread, as in the killed subprocess, so float sums are bitwise equal."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("method", ["simclr", "byol", "dino", "mae"])
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
