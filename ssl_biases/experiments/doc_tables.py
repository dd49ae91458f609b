"""Regenerate every table of the docs from committed files, by one command.

A generated table in a markdown file is a marked block::

    <!-- table:conv_vs_attention_cifar10:contrast0 -->
    (generated; do not edit by hand)
    <!-- /table -->

The name is ``GRID:SECTION``: ``GRID`` the experiment ``configs/experiment/GRID.yaml``, whose
rows are the committed ``docs/results/GRID.csv`` and whose baseline's rows are
``docs/results/<baseline name>.csv``; ``SECTION`` one of the report's sections
(:func:`ssl_biases.experiments.results.report_sections`: ``pivot``, ``summary``,
``gain_pivot``, ``gain_summary``, ``welch_gains``, ``contrast<i>``, ``claims``, ``wall``).
``curves:GRID`` tabulates the learning curves of ``docs/results/GRID_curves.csv`` (step 0: the
floor), per step: each ``hue`` label's mean and the seed-paired difference of the grid's first
two-level contrast on that axis. ``attention:GRID`` is the attention distance and offset-local
heads of every cell of ``GRID`` (:mod:`ssl_biases.experiments.attention_grid`, rows
``docs/results/GRID_attention.csv``).
``wall_time:NAME`` is the methods-at-equal-wall-time table of ``docs/results/NAME.json``
(:mod:`ssl_biases.experiments.wall_time`); ``equal_budget:NAME`` the framework against bare
loops at equal steps (:mod:`ssl_biases.experiments.equal_budget`). ``claims:GRID+GRID`` is
one Holm family across the claims of several grids (one write-up), each grid's
``report.primary`` estimator and metric; ``claims:GRID+GRID@METRIC,METRIC`` reads every grid's
contrasts on each of those metrics instead (a write-up that reads two probes).
Gains are recomputed from the two CSVs, never read from a CSV's old ``gain/*`` columns.

The learning-curve figures are redrawn too: for each committed ``docs/results/GRID_curves.csv``
(the copy of ``runs/GRID/curves.csv``), ``docs/results/GRID_curves_<metric>.png`` for every
metric of the grid's ``report.curves`` (``--check`` compares tables only).

From the repository root::

    python -m ssl_biases.experiments.doc_tables            # rewrite the blocks in place
    python -m ssl_biases.experiments.doc_tables --check    # exit 1 naming stale blocks
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path
from typing import Any

from ssl_biases.experiments.attention_grid import attention_table
from ssl_biases.experiments.claims import claims_table, claims_title, grid_claims
from ssl_biases.experiments.confidence import format_mean_ci
from ssl_biases.experiments.equal_budget import format_table as format_equal_budget
from ssl_biases.experiments.grid import Experiment, load_experiment
from ssl_biases.experiments.results import UNPAIRED, metric_scale, plot_curves, report_sections
from ssl_biases.experiments.wall_time import format_table as format_wall_time

EXPERIMENTS = Path("configs/experiment")
RESULTS = Path("docs/results")
DOCS = (Path("docs/results.md"), Path("docs/papers.md"), Path("docs/scaling.md"))
"""The files whose blocks the command rewrites by default (paths from the repository root)."""

JSON_TABLES = {
    "wall_time": format_wall_time,  # benchmarks/wall_time_budget.py
    "equal_budget": format_equal_budget,  # benchmarks/equal_budget.py
}
"""The blocks ``KIND:NAME`` whose rows are a benchmark's ``docs/results/NAME.json``."""

BLOCK = re.compile(r"(<!-- table:(?P<name>[^ ]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)


def read_rows(path: Path, experiment: Experiment) -> list[dict[str, Any]]:
    """A committed results CSV as report rows: axis labels as text, numbers as floats; the old
    ``gain/*`` and ``gain_unpaired`` columns are dropped (the report recomputes them)."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: it is the committed copy of runs/{experiment.name}/results.csv "
            f"(run `ssl-biases sweep configs/experiment/{experiment.name}.yaml`, then copy it)"
        )
    axes = set(experiment.axis_names) | {"cell_id"}
    rows = []
    with open(path, newline="") as handle:
        for record in csv.DictReader(handle):
            row: dict[str, Any] = {}
            for key, value in record.items():
                if key.startswith("gain/") or key == UNPAIRED or value in ("", None):
                    continue
                row[key] = value if key in axes else float(value)
            rows.append(row)
    return rows


def grid_rows(name: str) -> tuple[Experiment, list[dict], Experiment | None, list[dict] | None]:
    """A grid's experiment and committed rows, and its baseline's (``None`` without one)."""
    experiment = load_experiment(EXPERIMENTS / f"{name}.yaml")
    rows = read_rows(RESULTS / f"{name}.csv", experiment)
    baseline_path = experiment.report.get("baseline")
    if not baseline_path:
        return experiment, rows, None, None
    baseline = load_experiment(baseline_path)
    return experiment, rows, baseline, read_rows(RESULTS / f"{baseline.name}.csv", baseline)


def render(name: str) -> str:
    """The markdown of the block ``name`` (see the module docstring)."""
    kind, _, rest = name.partition(":")
    if kind in JSON_TABLES:  # a benchmark's rows, docs/results/NAME.json
        return JSON_TABLES[kind](json.loads((RESULTS / f"{rest}.json").read_text())) + "\n"
    if kind == "curves":
        return curve_tables(rest)
    if kind == "attention":  # docs/results/GRID_attention.csv
        with open(RESULTS / f"{rest}_attention.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        return attention_table(rows, load_experiment(EXPERIMENTS / f"{rest}.yaml"))
    if kind == "claims":
        grids, _, metrics = rest.partition("@")
        claims = []
        for grid in grids.split("+"):
            experiment, rows, baseline, floor_rows = grid_rows(grid)
            report_sections(experiment, rows, floor_rows)  # adds the gain columns
            floor_axes = baseline.axis_names if baseline else []
            wanted = metrics.split(",") if metrics else None
            claims += grid_claims(experiment, rows, floor_rows, floor_axes, wanted)
        if not claims:
            raise ValueError(f"table {name!r}: no grid of {rest!r} has report.primary")
        return _as_block(claims_title(claims) + "\n\n" + claims_table(claims, show_grid=True))
    experiment, rows, _, floor_rows = grid_rows(kind)
    sections = report_sections(experiment, rows, floor_rows)
    if rest not in sections:
        raise ValueError(
            f"table {name!r}: grid {kind} has no section {rest!r}; it has {list(sections)}"
        )
    return _as_block(sections[rest])


def _as_block(section: str) -> str:
    """A report section in a doc: its ``## title`` becomes a bold caption line."""
    title, _, body = section.partition("\n\n")
    if title.startswith("## "):
        return f"*{title[3:]}*\n\n{body}\n"
    return section + "\n"


def regenerate(text: str) -> tuple[str, list[str]]:
    """``text`` with every table block regenerated, and the names of the blocks that changed."""
    changed: list[str] = []

    def replace(match: re.Match[str]) -> str:
        body = render(match["name"])
        if body != match["body"]:
            changed.append(match["name"])
        return match.group(1) + body + match.group(4)

    return BLOCK.sub(replace, text), changed


CURVES_SUFFIX = "_curves.csv"


def floor_points(curves: list[dict[str, Any]], baseline: Experiment, floor_rows: list[dict]):
    """Step-0 points of ``curves``: each trained cell's untrained floor cell (same labels on
    the floor's axes, seed included), whose weights the cell's training starts from."""
    floors = {tuple(str(r[a]) for a in baseline.axis_names): r for r in floor_rows}
    points, seen = [], set()
    for c in curves:
        key = (tuple(str(c[a]) for a in baseline.axis_names), c["metric"])
        floor = floors.get(key[0])
        if key in seen or floor is None or floor.get(c["metric"]) is None:
            continue
        seen.add(key)
        labels = {a: c[a] for a in c if a not in ("step", "metric", "value")}
        points.append({**labels, "step": 0, "metric": c["metric"], "value": floor[c["metric"]]})
    return points


def grid_curves(name: str, results: Path = RESULTS) -> tuple[Experiment, list[dict[str, Any]]]:
    """A grid and its committed curves (``GRID_curves.csv``) with the floor's step-0 points."""
    experiment = load_experiment(EXPERIMENTS / f"{name}.yaml")
    with open(results / f"{name}{CURVES_SUFFIX}", newline="") as handle:
        curves: list[dict[str, Any]] = list(csv.DictReader(handle))
    if experiment.report.get("baseline"):
        baseline = load_experiment(experiment.report["baseline"])
        floor_csv = results / f"{baseline.name}.csv"
        if floor_csv.is_file():
            curves += floor_points(curves, baseline, read_rows(floor_csv, baseline))
    return experiment, curves


def curve_metrics(experiment: Experiment, curves: list[dict[str, Any]]) -> list[str]:
    """The grid's ``report.curves`` metrics validated at two steps or more (a curve)."""
    steps: dict[str, set] = {}
    for c in curves:
        steps.setdefault(c["metric"], set()).add(int(float(c["step"])))
    return [m for m in experiment.report.get("curves") or [] if len(steps.get(m, ())) >= 2]


def curve_tables(name: str) -> str:
    """Markdown: per curve metric validated at two steps or more, one line per step with each
    ``hue`` label's mean ± 95 % interval over seeds and the seed-paired difference of the
    grid's first two-level contrast on the ``hue`` axis (bold: excludes 0)."""
    experiment, curves = grid_curves(name)
    report = experiment.report
    hue = report.get("hue")
    if hue is None:
        raise ValueError(f"table curves:{name}: the grid's report has no hue axis")
    levels = [v.label for a, values in experiment.axes if a == hue for v in values]
    contrast = next(
        (
            c["levels"]
            for c in report.get("contrasts") or []
            if c.get("axis") == hue and "levels" in c
        ),
        None,
    )
    blocks = []
    for metric in curve_metrics(experiment, curves):
        points = [c for c in curves if c["metric"] == metric]
        steps = sorted({int(float(c["step"])) for c in points})
        scale = metric_scale(metric)[0]
        header = ["step", *levels] + ([f"{contrast[0]} − {contrast[1]}"] if contrast else [])
        lines = [
            f"*Learning curve of {metric} (step 0: the untrained floor; mean ± 95 % CI over "
            "seeds; the difference paired by seed, bold: excludes 0)*",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
        ]
        for step in steps:
            at = {(str(c[hue]), str(c.get("seed"))): float(c["value"])
                  for c in points if int(float(c["step"])) == step}  # fmt: skip
            cells = [str(step)]
            for level in levels:
                cells.append(format_mean_ci([v for (h, _), v in at.items() if h == level], scale))
            if contrast:
                a, b = contrast
                diffs = [
                    v - at[(b, seed)] for (h, seed), v in at.items() if h == a and (b, seed) in at
                ]
                cells.append(format_mean_ci(diffs, scale, mark_nonzero=True))
            lines.append("| " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def redraw_curves(results: Path = RESULTS) -> list[Path]:
    """Every ``GRID_curves_<metric>.png`` from its committed ``GRID_curves.csv`` (step 0: the
    floor cells of the grid's baseline, when committed); only metrics validated at two steps
    or more make a curve. Returns the paths written."""
    written = []
    for path in sorted(results.glob(f"*{CURVES_SUFFIX}")):
        experiment, curves = grid_curves(path.name[: -len(CURVES_SUFFIX)], results)
        report = experiment.report
        for metric in curve_metrics(experiment, curves):
            png = results / f"{experiment.name}_curves_{metric.replace('/', '_')}.png"
            if plot_curves(curves, experiment, metric, report.get("hue"), report.get("panel"), png):
                written.append(png)
    return written


def main(argv: list[str] | None = None) -> int:
    """Rewrite (or with ``--check`` only compare) the table blocks of the docs; redraw the
    learning curves."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path, default=list(DOCS))
    parser.add_argument("--check", action="store_true", help="exit 1 if a block is stale")
    args = parser.parse_args(argv)
    stale = []
    for path in args.files:
        text, changed = regenerate(path.read_text())
        stale += [f"{path}: {name}" for name in changed]
        if changed and not args.check:
            path.write_text(text)
    for line in stale:
        print(("stale " if args.check else "rewrote ") + line)
    if not args.check:
        for png in redraw_curves():
            print(f"drew {png}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
