"""``status.json``: the one completion marker of runs and sweep cells (legacy ``done.json`` too),
and no run directory left by a run that failed before its first batch."""

from __future__ import annotations

import json

import pytest
import yaml

from ssl_biases.cli import SSLBiasesCLI
from ssl_biases.experiments.grid import load_experiment
from ssl_biases.experiments.results import collect_results
from ssl_biases.experiments.sweep import run_cell
from ssl_biases.run.status import is_completed, read_run_status, write_run_status

from helpers import fit_args

EXPERIMENT = {
    "name": "toy",
    "configs": [],
    "args": {},
    "axes": [{"name": "token_mixer", "key": "model.x", "values": ["conv", "attention"]}],
    "report": {"metric": "val/knn_top1", "rows": "token_mixer", "x": "token_mixer"},
}


@pytest.fixture
def experiment(tmp_path):
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(EXPERIMENT))
    return load_experiment(path, output_dir=tmp_path / "out")


def test_only_completed_counts_for_runs_and_cells(tmp_path):
    assert not is_completed(tmp_path) and read_run_status(tmp_path) is None
    for status in ("running", "failed", "interrupted"):
        write_run_status(tmp_path, status)
        assert not is_completed(tmp_path)
    write_run_status(tmp_path, "completed", wall_s=3.0)
    assert is_completed(tmp_path) and read_run_status(tmp_path)["wall_s"] == 3.0


def test_a_sweep_cell_finished_before_status_json_still_counts(experiment):
    legacy, fresh = experiment.cells()  # conv: an old sweep's done.json; attention: new marker
    legacy_dir, fresh_dir = (experiment.output_dir / c.cell_id for c in (legacy, fresh))
    for folder in (legacy_dir, fresh_dir):
        (folder / "version_0").mkdir(parents=True)
        (folder / "version_0/metrics.csv").write_text("step,val/knn_top1\n1,0.5\n")
    (legacy_dir / "done.json").write_text(json.dumps({"cell_id": legacy.cell_id, "wall_s": 12.0}))
    write_run_status(fresh_dir, "completed", wall_s=5.0)
    assert is_completed(legacy_dir) and read_run_status(legacy_dir)["wall_s"] == 12.0
    # skipped without a command: no cell.yaml, no fit.log written
    assert run_cell(legacy, legacy_dir)["status"] == "done"
    assert run_cell(fresh, fresh_dir)["status"] == "done"
    assert not (legacy_dir / "fit.log").exists() and not (legacy_dir / "cell.yaml").exists()
    rows = {row["cell_id"]: row for row in collect_results(experiment)}
    assert rows[legacy.cell_id]["wall_s"] == 12.0 and rows[fresh.cell_id]["wall_s"] == 5.0
    assert rows[legacy.cell_id]["val/knn_top1"] == 0.5


def test_a_started_but_unfinished_cell_is_not_collected(experiment):
    cell = experiment.cells()[0]
    folder = experiment.output_dir / cell.cell_id
    write_run_status(folder, "running")
    assert collect_results(experiment) == []


def test_a_trainer_of_the_cli_leaves_no_run_directory_after_an_early_failure(tmp_path, monkeypatch):
    # the run status is the trainer's own (a callback), not only the `ssl-biases` command's
    monkeypatch.chdir(tmp_path)
    cli = SSLBiasesCLI(args=fit_args("simclr", tmp_path, "--data.batch_size=64")[1:], run=False)
    with pytest.raises(ValueError, match="batch_size 64 is larger than the training set"):
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert not (tmp_path / "runs").exists()
