"""Collecting finished cells into results.csv, markdown tables and plots."""

import csv
import json
import math
from pathlib import Path

import pytest

from ssl_biases.experiments.grid import load_experiment
from ssl_biases.experiments.results import (
    check_report,
    collect_results,
    final_metrics,
    format_mean_std,
    mean_std,
    write_report,
)

EXPERIMENT = """
name: toy
axes:
  - {name: method, key: model.class_path, values: [simclr, byol]}
  - {name: token_mixer, key: mixer, values: [attention, mlp]}
  - {name: seed, key: seed_everything, values: [0, 1]}
report:
  {metric: val/knn_top1, rows: token_mixer, columns: [method], panel: method, x: token_mixer}
"""


def write_metrics(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["epoch", "step", "train/loss", "val/knn_top1"])
        writer.writeheader()
        writer.writerows(rows)


def test_final_metrics_take_the_last_value_over_resumed_versions(tmp_path):
    write_metrics(tmp_path / "version_0/metrics.csv", [
        {"epoch": 0, "step": 9, "train/loss": 3.0, "val/knn_top1": ""},
        {"epoch": 0, "step": 9, "train/loss": "", "val/knn_top1": 0.2},
    ])  # fmt: skip
    write_metrics(tmp_path / "version_1/metrics.csv", [
        {"epoch": 1, "step": 19, "train/loss": 2.5, "val/knn_top1": ""},
    ])  # fmt: skip
    assert final_metrics(tmp_path) == {"train/loss": 2.5, "val/knn_top1": 0.2}


def test_mean_std_is_the_sample_std():
    assert mean_std([0.2, 0.4]) == pytest.approx((0.3, math.sqrt(0.02)))
    assert format_mean_std([0.2, 0.4]) == "30.0 ± 14.1"
    assert format_mean_std([0.25]) == "25.0"
    assert format_mean_std([]) == "–"


KNN = {"simclr": {"attention": [0.5, 0.6], "mlp": [0.3, 0.3]}, "byol": {"attention": [0.4]}}


def finish_cells(experiment, knn):
    """Fake finished cells: ``knn[method][token_mixer][seed]`` (missing: not finished)."""
    for cell in experiment.cells():
        v = cell.values
        values = knn.get(v.get("method"), {}).get(v["token_mixer"], [])
        if int(v["seed"]) >= len(values):
            continue  # unfinished cell: no done.json
        run_dir = experiment.output_dir / cell.cell_id
        write_metrics(run_dir / "version_0/metrics.csv", [
            {"epoch": 0, "step": 1, "train/loss": 1.0, "val/knn_top1": values[int(v["seed"])]},
        ])  # fmt: skip
        (run_dir / "done.json").write_text(json.dumps({"wall_s": 12.0}))


def test_report_averages_over_seeds_and_marks_missing_cells(tmp_path):
    path = tmp_path / "toy.yaml"
    path.write_text(EXPERIMENT)
    experiment = load_experiment(path, output_dir=tmp_path / "out")
    finish_cells(experiment, KNN)
    (experiment.output_dir / "method-byol_token_mixer-mlp_seed-0").mkdir()  # started, not done

    rows = collect_results(experiment)
    assert len(rows) == 5
    paths = write_report(experiment, rows)
    with open(paths[0]) as handle:
        table = list(csv.DictReader(handle))
    assert [r["cell_id"] for r in table][0] == "method-simclr_token_mixer-attention_seed-0"
    assert float(table[0]["val/knn_top1"]) == 0.5
    text = paths[1].read_text()
    assert "5 of 8 cells finished" in text
    assert "| attention | 55.0 ± 7.1 | 40.0 |" in text
    assert "| mlp | 30.0 ± 0.0 | – |" in text
    assert paths[2].name == "val_knn_top1.png" and paths[2].stat().st_size > 1000


FLOOR = """
name: floor
command: validate
output_dir: {out}
axes:
  - {{name: token_mixer, key: mixer, values: [attention, mlp]}}
  - {{name: seed, key: seed_everything, values: [0, 1]}}
report: {{metrics: [val/knn_top1]}}
"""


def test_report_gain_over_a_baseline_is_the_metric_minus_the_matching_baseline_mean(tmp_path):
    floor_path = tmp_path / "floor.yaml"
    floor_path.write_text(FLOOR.format(out=tmp_path / "floor"))
    floor = load_experiment(floor_path)
    finish_cells(floor, {None: {"attention": [0.2, 0.3], "mlp": [0.1]}})
    path = tmp_path / "toy.yaml"
    report = f"x: token_mixer, baseline: {floor_path}, metrics: [val/knn_top1, train/loss]}}"
    path.write_text(EXPERIMENT.replace("x: token_mixer}", report))
    experiment = load_experiment(path, output_dir=tmp_path / "out")
    finish_cells(experiment, KNN)

    paths = write_report(experiment, collect_results(experiment))
    with open(paths[0]) as handle:
        table = {r["cell_id"]: r for r in csv.DictReader(handle)}
    # simclr/attention seed 1: 0.6 - mean(0.2, 0.3)
    gain = float(table["method-simclr_token_mixer-attention_seed-1"]["gain/val/knn_top1"])
    assert gain == pytest.approx(0.35)
    assert "gain/train/loss" not in table["method-simclr_token_mixer-attention_seed-1"]
    text = paths[1].read_text()
    assert "## Gain over floor" in text
    assert "| attention | 30.0 ± 7.1 | 15.0 |" in text  # simclr 0.55 - 0.25, byol 0.4 - 0.25
    assert "| mlp | 20.0 ± 0.0 | – |" in text
    assert [p.name for p in paths[2:]] == ["val_knn_top1.png", "gain_val_knn_top1.png"]


def test_a_baseline_that_varies_an_axis_the_experiment_does_not_is_refused(tmp_path):
    floor_path = tmp_path / "floor.yaml"
    floor_path.write_text(
        FLOOR.format(out=tmp_path / "floor").replace("token_mixer, key: mixer", "width, key: w")
    )
    path = tmp_path / "toy.yaml"
    path.write_text(
        EXPERIMENT.replace("x: token_mixer}", f"x: token_mixer, baseline: {floor_path}}}")
    )
    experiment = load_experiment(path, output_dir=tmp_path / "out")
    with pytest.raises(ValueError, match=r"varies \['width'\]"):
        check_report(experiment)  # before any cell ran
    finish_cells(experiment, KNN)
    with pytest.raises(ValueError, match=r"varies \['width'\]"):
        write_report(experiment, collect_results(experiment))


@pytest.mark.parametrize(
    ("report", "message"),
    [
        ("{metric: val/knn_top1, row: token_mixer}", r"unknown keys \['row'\]"),
        ("{rows: mixer}", r"report.rows is 'mixer', which is no axis; the axes are \['method'"),
        ("{columns: method}", "columns must be a list"),
        ("{columns: [method, sed]}", r"report.columns\[1\] is 'sed'"),
        ("{panel: methods}", "report.panel is 'methods'"),
        ("{x: token_mixer, hue: seeds}", "report.hue is 'seeds'"),
        ("{metric: knn_top1}", "metric 'knn_top1' is never collected"),
        ("{metrics: val/knn_top1}", "metrics must be a list"),
    ],
)
def test_check_report_refuses_what_would_fail_after_the_cells_ran(tmp_path, report, message):
    path = tmp_path / "toy.yaml"
    path.write_text(EXPERIMENT.split("report:")[0] + f"report: {report}\n")
    with pytest.raises(ValueError, match=message):
        check_report(load_experiment(path))


def test_shipped_experiments_pass_check_report(monkeypatch):
    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(root)  # baselines are named relative to the repository root
    for path in sorted((root / "configs/experiment").glob("*.yaml")):
        check_report(load_experiment(path))


def test_a_missing_baseline_file_still_writes_the_tables(tmp_path):
    path = tmp_path / "toy.yaml"
    report = f"x: token_mixer, baseline: {tmp_path / 'absent.yaml'}}}"
    path.write_text(EXPERIMENT.replace("x: token_mixer}", report))
    experiment = load_experiment(path, output_dir=tmp_path / "out")
    finish_cells(experiment, KNN)
    with pytest.warns(UserWarning, match="absent.yaml"):
        paths = write_report(experiment, collect_results(experiment))
    text = paths[1].read_text()
    assert "| attention | 55.0 ± 7.1 | 40.0 |" in text and "No gains" in text
    assert [p.name for p in paths[2:]] == ["val_knn_top1.png"]
