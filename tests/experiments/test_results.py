"""Collecting finished cells into results.csv, markdown tables and plots."""

import csv
import json
import math
from pathlib import Path

import pytest

from ssl_biases.experiments.confidence import (
    excludes_zero,
    format_mean_ci,
    mean_ci,
    t_quantile_975,
)
from ssl_biases.experiments.grid import load_experiment
from ssl_biases.experiments.results import (
    check_report,
    collect_results,
    contrast_differences,
    final_metrics,
    trend_slopes,
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
    # simclr/attention: 55 ± t(1) * sd / sqrt(2) = 12.706 * 7.07 / 1.414 = 63.5; byol one seed
    assert "| attention | 55.0 ± 63.5 | 40.0 (n=1, no CI) |" in text
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


def test_report_gain_over_a_baseline_is_paired_by_seed_with_a_marked_fallback(tmp_path):
    floor_path = tmp_path / "floor.yaml"
    floor_path.write_text(FLOOR.format(out=tmp_path / "floor"))
    floor = load_experiment(floor_path)
    finish_cells(floor, {None: {"attention": [0.2, 0.3], "mlp": [0.1]}})  # mlp: no seed 1
    path = tmp_path / "toy.yaml"
    report = f"x: token_mixer, baseline: {floor_path}, metrics: [val/knn_top1, train/loss]}}"
    path.write_text(EXPERIMENT.replace("x: token_mixer}", report))
    experiment = load_experiment(path, output_dir=tmp_path / "out")
    finish_cells(experiment, KNN)

    paths = write_report(experiment, collect_results(experiment))
    with open(paths[0]) as handle:
        table = {r["cell_id"]: r for r in csv.DictReader(handle)}
    gain = {k: float(r["gain/val/knn_top1"]) for k, r in table.items()}
    # same seed: 0.5 - 0.2 and 0.6 - 0.3 (the floor's mean would give 0.25 and 0.35)
    assert gain["method-simclr_token_mixer-attention_seed-0"] == pytest.approx(0.3)
    assert gain["method-simclr_token_mixer-attention_seed-1"] == pytest.approx(0.3)
    assert gain["method-byol_token_mixer-attention_seed-0"] == pytest.approx(0.2)
    # the floor lacks mlp seed 1: that gain is over the floor's mean (0.1), and marked
    assert gain["method-simclr_token_mixer-mlp_seed-1"] == pytest.approx(0.2)
    assert table["method-simclr_token_mixer-mlp_seed-1"]["gain_unpaired"] == "val/knn_top1"
    assert table["method-simclr_token_mixer-mlp_seed-0"]["gain_unpaired"] == ""
    assert "gain/train/loss" not in table["method-simclr_token_mixer-attention_seed-1"]
    text = paths[1].read_text()
    assert "## Gain over floor" in text
    # paired gains of 0.3 and 0.3: no spread, an interval [30, 30] that excludes 0: bold
    assert "| attention | **+30.0 ± 0.0** | +20.0 (n=1, no CI) |" in text
    assert "| mlp | **+20.0 ± 0.0** † | – |" in text
    assert "†: the baseline lacks a seed of this cell" in text
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
        ("{contrasts: {axis: token_mixer}}", "contrasts must be a list"),
        ("{contrasts: [{axis: token_mixer}]}", r"contrasts\[0\] must be \{axis"),
        ("{contrasts: [{axis: mixer, levels: [mlp, attention]}]}", "axis is 'mixer'"),
        ("{contrasts: [{axis: seed, levels: [0, 1]}]}", "axis is 'seed'"),
        ("{contrasts: [{axis: token_mixer, levels: [mlp]}]}", "two different labels"),
        ("{contrasts: [{axis: token_mixer, levels: [mlp, conv]}]}", r"\['conv'\] are no labels"),
        ("{contrasts: [{axis: token_mixer, trend: cubic}]}", r"'cubic'; choose one of \['linear'"),
        ("{contrasts: [{axis: token_mixer, trend: linear}]}", "a trend needs numeric labels"),
        ("{contrasts: [{axis: token_mixer, trend: log2, levels: [mlp]}]}", r"\[0\] must be"),
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
    assert "| attention | 55.0 ± 63.5 | 40.0 (n=1, no CI) |" in text and "No gains" in text
    assert [p.name for p in paths[2:]] == ["val_knn_top1.png"]


SEEDS3 = EXPERIMENT.replace("values: [0, 1]", "values: [0, 1, 2]").replace(
    "x: token_mixer}", "x: token_mixer, contrasts: [{axis: token_mixer, levels: [mlp, attention]}]}"
)


def test_contrast_is_the_seed_paired_difference_with_its_ci_bold_where_it_excludes_zero(
    tmp_path,
):
    path = tmp_path / "toy.yaml"
    path.write_text(SEEDS3)
    experiment = load_experiment(path, output_dir=tmp_path / "out")
    knn = {
        "simclr": {"attention": [0.5, 0.6, 0.55], "mlp": [0.3, 0.35, 0.3]},
        "byol": {"attention": [0.4, 0.5, 0.45], "mlp": [0.45, 0.4]},  # seed 2 unfinished
    }
    finish_cells(experiment, knn)
    rows = collect_results(experiment)
    contrast = experiment.report["contrasts"][0]
    differences = contrast_differences(rows, experiment.axis_names, contrast, "val/knn_top1")
    assert differences[("simclr",)] == pytest.approx([-0.2, -0.25, -0.25])
    assert differences[("byol",)] == pytest.approx([0.05, -0.1])  # byol seed 2 has no pair

    text = write_report(experiment, rows)[1].read_text()
    assert "## Contrast token_mixer: mlp − attention" in text
    # simclr: mean -23.3, sd 2.887, half-width t(2) * sd / sqrt(3) = 4.303 * 2.887 / 1.732 = 7.2
    assert "| simclr | 3 | **-23.3 ± 7.2** |" in text
    # byol: mean -2.5, sd 10.607, half-width t(1) * sd / sqrt(2) = 12.706 * 7.5 = 95.3: not bold
    assert "| byol | 2 | -2.5 ± 95.3 |" in text


def test_confidence_interval_uses_student_t_with_n_minus_1_dof():
    # t_{0.975} (NIST/SEMATECH e-Handbook 1.3.6.7.2): 12.706, 4.303, 3.182; 2.042 at 30 dof
    quantiles = [t_quantile_975(d) for d in (1, 2, 3, 30, 31)]  # exact now, not 1.96 past 30
    assert quantiles == pytest.approx([12.706, 4.303, 3.182, 2.042, 2.040], abs=5e-4)
    table = pytest.approx  # the table's three decimals against the exact quantile
    assert mean_ci([1.0, 3.0]) == table((2.0, 12.706 * math.sqrt(2) / math.sqrt(2)), rel=2e-4)
    assert mean_ci([1.0, 2.0, 3.0]) == table((2.0, 4.303 * 1.0 / math.sqrt(3)), rel=2e-4)
    assert mean_ci([1.0, 2.0, 3.0, 4.0]) == table((2.5, 3.182 * math.sqrt(5 / 3) / 2), rel=2e-4)
    assert mean_ci([0.4]) == (0.4, None)
    assert format_mean_ci([0.4]) == "40.0 (n=1, no CI)"
    assert format_mean_ci([0.01, 0.03, 0.02]) == "2.0 ± 2.5"
    assert format_mean_ci([0.01, 0.03, 0.02], mark_nonzero=True) == "+2.0 ± 2.5"
    assert format_mean_ci([0.01, 0.011, 0.012], mark_nonzero=True) == "**+1.1 ± 0.2**"
    assert not excludes_zero([0.3]) and excludes_zero([-0.3, -0.31])
    with pytest.raises(ValueError, match="at least 1 degree"):
        t_quantile_975(0)


def test_a_reconstruction_error_is_printed_as_logged_and_accuracies_in_percent(tmp_path):
    """val/masked_mse is no fraction: 0.824 must not read as 82.4 %, nor its gain as points."""
    mse_floor = FLOOR.replace("metrics: [val/knn_top1]", "metrics: [val/knn_top1, val/masked_mse]")
    floor_path = tmp_path / "floor.yaml"
    floor_path.write_text(mse_floor.format(out=tmp_path / "floor"))
    path = tmp_path / "toy.yaml"
    report = (
        f"x: token_mixer, baseline: {floor_path}, metrics: [val/knn_top1, val/masked_mse], "
        "contrasts: [{axis: token_mixer, levels: [mlp, attention]}]}"
    )
    path.write_text(EXPERIMENT.replace("x: token_mixer}", report))
    experiment = load_experiment(path, output_dir=tmp_path / "out")
    values = {  # (knn, mse) per mixer and seed; the floor's are knn 0.2, mse 1.5
        "attention": [(0.30, 0.82), (0.32, 0.84)],
        "mlp": [(0.25, 0.64), (0.27, 0.66)],
    }
    for experiment_, method in ((load_experiment(floor_path), None), (experiment, "simclr")):
        for cell in experiment_.cells():
            if cell.values.get("method", method) != method:
                continue
            seed = int(cell.values["seed"])
            knn, mse = (0.2, 1.5) if method is None else values[cell.values["token_mixer"]][seed]
            run_dir = experiment_.output_dir / cell.cell_id
            metrics = run_dir / "version_0/metrics.csv"
            metrics.parent.mkdir(parents=True)
            metrics.write_text(f"epoch,step,val/knn_top1,val/masked_mse\n0,1,{knn},{mse}\n")
            (run_dir / "done.json").write_text("{}")

    paths = write_report(experiment, collect_results(experiment))
    text = paths[1].read_text()
    # simclr x attention: knn 31.0 ± 12.706 * 1.414 / 1.414 = 12.7 (%), mse 0.830 ± 0.127
    assert "| simclr | attention | 2 | 31.0 ± 12.7 | 0.830 ± 0.127 |" in text
    # gains: knn +11.0 points, mse 0.83 - 1.5 = -0.670 (as logged; its interval excludes 0)
    assert "| simclr | attention | 2 | +11.0 ± 12.7 | **-0.670 ± 0.127** |" in text
    # contrast mlp - attention per seed: knn -5 and -5 points, mse -0.18 and -0.18: bold
    assert "| simclr | 2 | **-5.0 ± 0.0** | **-0.180 ± 0.000** |" in text
    assert "## val/knn_top1 (%)" in text and "82.0" not in text


WIDTHS = """
name: widths
axes:
  - {name: token_mixer, key: mixer, values: [attention, conv]}
  - {name: last_dim, key: last_dim, values: [16, 64, 256]}
  - {name: seed, key: seed_everything, values: [0, 1, 2]}
report:
  metric: val/knn_top1
  contrasts: [{axis: last_dim, trend: log2}, {axis: last_dim, levels: [256, 16]}]
"""


def test_trend_is_the_least_squares_slope_per_doubling_per_seed_with_its_ci(tmp_path):
    path = tmp_path / "widths.yaml"
    path.write_text(WIDTHS)
    experiment = load_experiment(path, output_dir=tmp_path / "out")
    knn = {  # [mixer][last_dim] -> per seed; log2 x = 4, 6, 8
        "attention": {
            "16": [0.30, 0.31, 0.29],
            "64": [0.32, 0.33, 0.31],
            "256": [0.34, 0.36, 0.34],
        },
        "conv": {"16": [0.40, 0.41], "64": [0.39, 0.40], "256": [0.38, 0.40, 0.37]},  # seed 2: 2
    }
    for cell in experiment.cells():
        v = cell.values
        values = knn[v["token_mixer"]][str(v["last_dim"])]
        if int(v["seed"]) >= len(values):
            continue
        run_dir = experiment.output_dir / cell.cell_id
        write_metrics(run_dir / "version_0/metrics.csv", [
            {"epoch": 0, "step": 1, "train/loss": 1.0, "val/knn_top1": values[int(v["seed"])]},
        ])  # fmt: skip
        (run_dir / "done.json").write_text("{}")
    rows = collect_results(experiment)
    slopes = trend_slopes(rows, experiment.axis_names, {"axis": "last_dim", "trend": "log2"},
                          "val/knn_top1")  # fmt: skip
    # attention seed 0: y 0.30, 0.32, 0.34 at x 4, 6, 8 -> 0.01 per doubling; seed 1: (0.36 -
    # 0.31) / 4 = 0.0125; seed 2: 0.0125. conv seeds 0, 1: -0.005, -0.0025; seed 2 lacks 64
    assert slopes[("attention",)] == pytest.approx([0.01, 0.0125, 0.0125])
    assert slopes[("conv",)] == pytest.approx([-0.005, -0.0025])
    linear = trend_slopes(rows, experiment.axis_names, {"axis": "last_dim", "trend": "linear"},
                          "val/knn_top1")  # fmt: skip
    # per unit of D: x - mean = -96, -48, 144; sxy = 1.92 + 0 + 2.88, sxx = 9216 + 2304 + 20736
    assert linear[("attention",)][0] == pytest.approx(4.8 / 32256)

    text = write_report(experiment, rows)[1].read_text()
    assert "## Trend along last_dim: slope per doubling of last_dim" in text
    # attention: mean 1.167 points, sd 0.1443, half 4.303 * 0.1443 / sqrt(3) = 0.36: bold
    assert "| attention | 3 | **+1.17 ± 0.36** |" in text  # slopes: a digit more
    # conv: mean -0.375 (-0.37499.. in floating point), sd 0.1768, half 12.706 * 0.1768 /
    # sqrt(2) = 1.59: not bold
    assert "| conv | 2 | -0.37 ± 1.59 |" in text
    assert "## Contrast last_dim: 256 − 16" in text  # the pairwise form still works beside it


def test_check_report_refuses_log2_of_a_label_that_is_not_positive(tmp_path):
    path = tmp_path / "widths.yaml"
    text = WIDTHS.replace("[16, 64, 256]", "[0, 64, 256]").split("  contrasts:")[0]
    path.write_text(text + "  contrasts: [{axis: last_dim, trend: log2}]\n")
    with pytest.raises(ValueError, match="log2 needs positive labels"):
        check_report(load_experiment(path))


def test_wall_time_table_gives_min_median_max_and_sum_from_wall_s():
    from ssl_biases.experiments.results import wall_time_table

    rows = [
        {"method": "simclr", "wall_s": 287.0},
        {"method": "simclr", "wall_s": 3492.0},
        {"method": "simclr", "wall_s": 400.0},
        {"method": "byol", "wall_s": 300.0},
        {"method": "byol", "wall_s": 100.0},
    ]
    lines = wall_time_table(rows, "method").splitlines()
    assert lines[2] == "| simclr | 3 | 287 | 400 | 3492 | 4179 (70 min) |"
    assert lines[3] == "| byol | 2 | 100 | 200 | 300 | 400 (7 min) |"
    assert lines[4] == "| all | 5 | 100 | 300 | 3492 | 4579 (76 min) |"


def test_learning_curves_are_collected_per_validation_and_plotted_with_a_band(tmp_path):
    from ssl_biases.experiments.results import CURVES_FILE

    path = tmp_path / "toy.yaml"
    path.write_text(
        EXPERIMENT.replace("x: token_mixer}", "x: token_mixer, curves: [val/knn_top1]}")
    )
    experiment = load_experiment(path, output_dir=tmp_path / "out")
    for cell in experiment.cells():
        run_dir = experiment.output_dir / cell.cell_id
        base = 0.3 if cell.values["token_mixer"] == "attention" else 0.2
        seed = int(cell.values["seed"])
        knn = [base + e / 10 + seed / 100 for e in range(3)]  # validated every 10 steps
        write_metrics(run_dir / "version_0/metrics.csv", [
            {"epoch": e, "step": 10 * e + 9, "train/loss": "", "val/knn_top1": v}
            for e, v in enumerate(knn)
        ])  # fmt: skip
        (run_dir / "done.json").write_text(json.dumps({"wall_s": 12.0}))
    paths = write_report(experiment, collect_results(experiment))
    assert experiment.output_dir / "curves_val_knn_top1.png" in paths
    with open(experiment.output_dir / CURVES_FILE, newline="") as handle:
        curves = list(csv.DictReader(handle))
    assert len(curves) == 8 * 3  # every validation of every cell
    first = [c for c in curves if c["token_mixer"] == "mlp" and c["step"] == "29"]
    assert sorted(float(c["value"]) for c in first) == pytest.approx([0.4, 0.4, 0.41, 0.41])


def test_report_curves_must_name_logged_metrics(tmp_path):
    path = tmp_path / "toy.yaml"
    path.write_text(EXPERIMENT.replace("x: token_mixer}", "x: token_mixer, curves: [knn]}"))
    with pytest.raises(ValueError, match="check_val_every_n_epoch"):
        check_report(load_experiment(path))


def test_rankme_is_a_column_of_the_summary_wherever_it_was_logged(tmp_path):
    """val/rankme (probes/rankme.py) joins the report's metrics without being named there."""
    path = tmp_path / "toy.yaml"
    path.write_text(EXPERIMENT)
    experiment = load_experiment(path, output_dir=tmp_path / "out")
    for cell in experiment.cells():
        run_dir = experiment.output_dir / cell.cell_id
        metrics = run_dir / "version_0/metrics.csv"
        metrics.parent.mkdir(parents=True)
        rankme = 20 + 2 * int(cell.values["seed"])
        metrics.write_text(f"epoch,step,val/knn_top1,val/rankme\n0,1,0.3,{rankme}\n")
        (run_dir / "done.json").write_text("{}")
    text = write_report(experiment, collect_results(experiment))[1].read_text()
    assert "| method | token_mixer | seeds | val/knn_top1 | val/rankme |" in text
    assert "| simclr | attention | 2 | 30.0 ± 0.0 | 21.000 ± 12.706 |" in text  # as logged
