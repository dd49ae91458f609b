"""A sweep cell's lock: the pid of its training process in ``status.json`` (issue 32, item 5)."""

from __future__ import annotations

import subprocess
import sys

from ssl_biases.experiments import sweep as sweep_module
from ssl_biases.experiments.grid import Cell
from ssl_biases.run.status import read_run_status, running_pid, write_run_status


def sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_running_pid_names_a_live_process_and_drops_a_dead_ones(tmp_path):
    process = sleeper()
    try:
        write_run_status(tmp_path, "running", pid=process.pid)
        assert running_pid(tmp_path) == process.pid
    finally:
        process.kill()
        process.wait()
    assert running_pid(tmp_path) is None  # a dead process's lock is stale
    write_run_status(tmp_path, "completed", pid=12345)
    assert running_pid(tmp_path) is None


def test_a_rerun_refuses_a_cell_still_training_and_takes_over_a_stale_lock(tmp_path, monkeypatch):
    cell = Cell(cell_id="width-32", values={"width": "32"}, configs=(), args=())
    run_dir = tmp_path / cell.cell_id
    commands: list[list[str]] = []

    def fake_fit_command(cell, run_dir, extra_args, ckpt_path=None, subcommand="fit"):
        commands.append([str(ckpt_path)])
        return [sys.executable, "-c", "pass"]  # the training, done at once

    monkeypatch.setattr(sweep_module, "fit_command", fake_fit_command)
    process = sleeper()  # the cell of a SIGKILLed sweep, still training
    try:
        write_run_status(run_dir, "running", pid=process.pid)
        outcome = sweep_module.run_cell(cell, run_dir)
        assert outcome["status"] == "failed" and commands == []
        assert f"process {process.pid} is still training this cell" in outcome["error"]
        assert f"kill {process.pid}" in outcome["error"]
    finally:
        process.kill()
        process.wait()
    # the process is gone: its lock is stale, the rerun takes the cell over and finishes it
    (run_dir / "version_0" / "checkpoints").mkdir(parents=True)
    (run_dir / "version_0" / "checkpoints" / "last.ckpt").write_bytes(b"")
    outcome = sweep_module.run_cell(cell, run_dir)
    assert outcome["status"] == "finished" and commands == [["last"]]
    record = read_run_status(run_dir)
    assert record["status"] == "completed"
    assert record["resumed_from"] == str(run_dir / "version_0" / "checkpoints" / "last.ckpt")
    logger = (run_dir / sweep_module.LOGGER_FILE).read_text()
    assert "version: 0" in logger  # the resume continues version_0, not a new version_1
