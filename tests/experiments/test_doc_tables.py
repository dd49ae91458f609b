"""Every table of the docs is regenerated from committed files, and matches them."""

import csv
import itertools
import re
from pathlib import Path

import pytest

from ssl_biases.experiments import doc_tables
from ssl_biases.experiments.confidence import format_mean_ci
from ssl_biases.experiments.doc_tables import (
    BLOCK,
    DOCS,
    grid_rows,
    main,
    read_rows,
    redraw_curves,
    regenerate,
    render,
)
from ssl_biases.experiments.grid import load_experiment
from ssl_biases.experiments.results import report_sections


def test_every_committed_table_block_regenerates_to_its_committed_text(capsys):
    names = [m["name"] for path in DOCS for m in BLOCK.finditer(path.read_text())]
    assert len(names) >= 10  # results.md's tables are generated, not typed
    assert main(["--check"]) == 0, capsys.readouterr().out  # names the stale blocks


def test_read_rows_drops_the_old_gain_columns_and_parses_numbers():
    experiment = load_experiment("configs/experiment/families_cifar10_quick.yaml")
    rows = read_rows(Path("docs/results/families_cifar10_quick.csv"), experiment)
    assert len(rows) == 42
    assert not any(k.startswith("gain/") for row in rows for k in row)
    assert isinstance(rows[0]["val/knn_top1"], float) and rows[0]["seed"] == "0"


def test_gains_are_recomputed_from_the_committed_floor():
    # families_cifar10_quick.csv's gain columns were made against a floor that is not the
    # committed one (issue 29): the docs' gains are recomputed from the two committed CSVs
    experiment, rows, _, floor_rows = grid_rows("families_cifar10_quick")
    report_sections(experiment, rows, floor_rows)
    floor = {(r["token_mixer"], r["pos_embed"], r["seed"]): r for r in floor_rows}
    metric = "val/offline_linear_top1"
    for row in rows:
        base = floor[(row["token_mixer"], row["pos_embed"], row["seed"])]
        assert row[f"gain/{metric}"] == pytest.approx(row[metric] - base[metric], abs=1e-12)
    with open("docs/results/families_cifar10_quick.csv", newline="") as handle:
        old = {r["cell_id"]: float(r[f"gain/{metric}"]) for r in csv.DictReader(handle)}
    moved = [abs(r[f"gain/{metric}"] - old[r["cell_id"]]) for r in rows]
    assert max(moved) > 4e-4  # the old column's floor differed by 0.05-0.1 points somewhere


def test_regenerate_rewrites_only_the_marked_block(tmp_path):
    text = "intro\n<!-- table:last_dim_cifar10:wall -->\nold numbers\n<!-- /table -->\nend\n"
    new, changed = regenerate(text)
    assert changed == ["last_dim_cifar10:wall"]
    assert new.startswith("intro\n<!-- table:last_dim_cifar10:wall -->\n*Wall time")
    assert "| all | 24 | 101 | 138 | 255 | 3531 (59 min) |" in new  # issue 29: max 255 s
    assert new.endswith("<!-- /table -->\nend\n")
    assert regenerate(new) == (new, [])


def test_unknown_sections_and_missing_csvs_say_what_to_do(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="has no section 'nope'"):
        render("last_dim_cifar10:nope")
    with monkeypatch.context() as patch:  # no committed CSVs: the grid has not run
        patch.setattr(doc_tables, "RESULTS", tmp_path)
        with pytest.raises(FileNotFoundError, match="sweep configs/experiment/shuffle_cifar10"):
            render("shuffle_cifar10:wall")
    assert re.search(r"claims", render("claims:last_dim_cifar10"))


def test_every_sweep_filter_in_the_docs_selects_cells_of_its_grid():
    """A ``--only AXIS=LABEL`` in the docs' commands names an axis and labels the grid has (the
    Walmer pilot's line said ``steps=`` for the axis ``max_steps``, which stops the sweep)."""
    from ssl_biases.experiments.grid import select_cells

    docs = [*Path("docs").glob("*.md"), Path("README.md")]
    sweep = re.compile(r"ssl-biases sweep ([^\s`]+\.yaml)((?: --only [^\s`]+)+)")
    checked = 0
    for path in docs:
        for grid, filters in sweep.findall(path.read_text()):
            experiment = load_experiment(grid)
            only = filters.split(" --only ")[1:]
            assert select_cells(experiment.cells(), only), f"{path}: {grid} {only}"
            checked += 1
    assert checked >= 1  # at least the Walmer pilot


def test_a_filter_naming_an_unknown_axis_is_an_error():
    from ssl_biases.experiments.grid import select_cells

    experiment = load_experiment("configs/experiment/walmer_cifar10.yaml")
    with pytest.raises(ValueError, match="unknown axes \\['steps'\\]"):
        select_cells(experiment.cells(), ["steps=20,80"])


def test_learning_curves_are_redrawn_from_a_committed_curves_csv(tmp_path):
    grid = "conv_vs_attention_decisive_cifar10"  # report.curves: kNN and offline linear
    with open(tmp_path / f"{grid}_curves.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["token_mixer", "seed", "step", "metric", "value"])
        writer.writeheader()
        for mixer, seed, step in itertools.product(["attention", "conv"], "01", [156, 312]):
            value = 0.3 + 0.1 * (mixer == "conv") + step / 1e4 + int(seed) / 100
            writer.writerow(dict(token_mixer=mixer, seed=seed, step=step, metric="val/knn_top1",
                                 value=value))  # fmt: skip
    drawn = redraw_curves(tmp_path)
    # one figure: the CSV has no offline-linear rows, so that metric's figure is not drawn
    assert drawn == [tmp_path / f"{grid}_curves_val_knn_top1.png"]
    assert drawn[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and drawn[0].stat().st_size > 5000
    (tmp_path / "no_such_grid_curves.csv").write_text("step,metric,value\n")
    with pytest.raises(FileNotFoundError, match="no_such_grid"):
        redraw_curves(tmp_path)


def test_the_curve_table_starts_at_the_paired_floor_and_ends_at_the_contrast_table():
    grid = "conv_vs_attention_decisive_cifar10"
    knn, linear = render(f"curves:{grid}").split("\n\n*Learning curve of ")  # two tables
    assert knn.startswith("*Learning curve of val/knn_top1") and linear.startswith("val/offline")
    lines = {line.split(" | ")[0]: line for line in knn.splitlines() if line[:2] == "| "}
    # step 0: seeds 0-9 of the floor (the trained cells' own initial weights), not all 30
    floor = load_experiment(f"configs/experiment/{grid}_random.yaml")
    rows = read_rows(Path(f"docs/results/{grid}_random.csv"), floor)
    paired = {(r["token_mixer"], r["seed"]): r["val/knn_top1"] for r in rows if int(r["seed"]) < 10}
    diffs = [paired["conv", s] - paired["attention", s] for s in map(str, range(10))]
    assert lines["| 0"].endswith(f"| {format_mean_ci(diffs, mark_nonzero=True)} |")
    # the last validation is the cells' final metric: the report's contrast table agrees
    experiment, trained, _, floor_rows = grid_rows(grid)
    contrast = report_sections(experiment, trained, floor_rows)["contrast0"]
    final = contrast.splitlines()[-1].split(" | ")[1]  # val/knn_top1 of conv - attention
    assert lines["| 623"].endswith(f"| {final} |")
