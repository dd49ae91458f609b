"""Collect a sweep's finished cells into ``results.csv``, a markdown table and plots.

A finished cell has a completed ``status.json`` (``ssl_biases.run.status``; or the
``done.json`` of an older sweep); its metrics are the last logged value of every ``val/*``,
``test/*`` and ``train/loss`` column over the ``metrics.csv`` files of its ``version_<n>/``
run directories (a resumed cell has several). Groups of cells that differ only in the
``seed`` axis are summarised as mean ± the half-width of a 95 % Student-t confidence interval
over their ``n`` seeds (:mod:`ssl_biases.experiments.confidence`; one seed: "n=1, no CI").

The experiment's ``report`` section chooses the headline table and plot::

    report:
      metric: val/knn_top1   # the headline number
      rows: token_mixer      # pivot rows
      columns: [method, pos_embed]
      panel: method          # plot: one panel per method,
      x: token_mixer         #   token mixers along x,
      hue: pos_embed         #   one bar per position embedding
      baseline: configs/experiment/bias_cifar10_small_random.yaml  # optional
      contrasts:                                   # optional
        - {axis: token_mixer, levels: [conv, attention]}
        - {axis: last_dim, trend: log2}             # a numeric axis' slope

With a ``baseline`` experiment (e.g. the same backbones untrained, ``command: validate``),
every row also gets ``gain/<metric>``: its metric minus the baseline cell with the same labels
on the baseline's axes *and the same seed* (the trained run starts from exactly that cell's
weights), in a pivot table and a plot of its own. Where the baseline lacks the row's seed the
gain subtracts the baseline's seed mean instead, and the tables mark it ``†``. The gain over a
backbone's own random initialisation separates what a method learned from what the
architecture gives before any training.

A contrast ``{axis: A, levels: [a, b]}`` is the paired difference ``a - b`` of every metric
and gain: the cell with label ``a`` minus the cell with label ``b`` and the same label on
every other axis, seed included; one table line per value of the other (non-seed) axes, the
mean difference ± its 95 % interval over the pairs, bold where the interval excludes 0.
A trend ``{axis: A, trend: log2}`` (or ``linear``) asks whether a metric rises along a numeric
axis: for each seed (and label of every other axis) the least-squares slope of the metric
against ``log2`` of the axis' labels (points per doubling; ``linear``: per unit) over all of
its levels, then the mean slope ± its 95 % interval over the seeds. A seed missing a level is
left out rather than fitted on fewer.

Accuracies (``*top1``, ``*top5``, ``*shot``) and their gains and contrasts are printed in %
(points); any other metric (``train/loss``, ``val/masked_mse``) as it is logged.
"""

from __future__ import annotations

import csv
import math
import warnings
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ssl_biases.experiments.claims import (  # the contrasts live with the claims
    TRENDS,
    check_primary,
    contrast_differences,  # noqa: F401 (re-exported)
    contrast_values,
    metric_scale,
    trend_slopes,  # noqa: F401 (re-exported)
)
from ssl_biases.experiments.confidence import format_mean_ci, mean_ci
from ssl_biases.experiments.grid import SEED_AXIS, Experiment, load_experiment
from ssl_biases.metric_names import TEST, TRAIN_LOSS, VAL, VAL_KNN_TOP1, VAL_RANKME
from ssl_biases.run.status import COMPLETED, read_run_status

METRIC_PREFIXES = (f"{VAL}/", f"{TEST}/")
EXTRA_METRICS = (TRAIN_LOSS,)


REPORT_KEYS = (
    "metric", "metrics", "rows", "columns", "panel", "x", "hue", "baseline", "contrasts",
    "primary", "curves",
)  # fmt: skip

UNPAIRED = "gain_unpaired"
"""Row key: ``;``-joined metrics whose gain subtracts the baseline's seed mean (no same seed)."""

UNPAIRED_MARK = "†"
UNPAIRED_NOTE = (
    f"{UNPAIRED_MARK}: the baseline lacks a seed of this cell, whose gain subtracts the "
    "baseline's seed mean instead of the same seed's value."
)


def check_report(experiment: Experiment) -> None:
    """Raises ``ValueError`` on a ``report`` section that could only fail after the cells ran.

    Checks the keys, that ``rows``, ``columns``, ``panel``, ``x`` and ``hue`` name axes, that
    the metrics are collected names (``val/*``, ``test/*``, ``train/loss``) and that a
    ``baseline`` file's axes (but its seeds) are axes of the experiment. A missing baseline
    file only warns, as in :func:`write_report`.
    """
    report, axes = experiment.report, experiment.axis_names
    where = f"experiment {experiment.name!r}: report"
    unknown = sorted(set(report) - set(REPORT_KEYS))
    if unknown:
        raise ValueError(f"{where} has unknown keys {unknown}; known: {list(REPORT_KEYS)}")
    columns = report.get("columns") or []
    if not isinstance(columns, list):
        raise ValueError(f"{where}.columns must be a list of axis names, got {columns!r}")
    named = [("rows", report.get("rows"))] + [(f"columns[{i}]", c) for i, c in enumerate(columns)]
    named += [(key, report.get(key)) for key in ("panel", "x", "hue")]
    for key, axis in named:
        if axis is not None and axis not in axes:
            raise ValueError(f"{where}.{key} is {axis!r}, which is no axis; the axes are {axes}")
    if not isinstance(report.get("metrics") or [], list):
        raise ValueError(f"{where}.metrics must be a list of metric names, got {report['metrics']}")
    metrics = [report.get("metric", VAL_KNN_TOP1), *(report.get("metrics") or [])]
    for metric in metrics:
        if not (isinstance(metric, str) and metric.startswith(METRIC_PREFIXES + EXTRA_METRICS)):
            raise ValueError(
                f"{where}: metric {metric!r} is never collected; name a logged metric that "
                f"starts with one of {list(METRIC_PREFIXES + EXTRA_METRICS)}, e.g. {VAL_KNN_TOP1}"
            )
    curves = report.get("curves") or []
    if not isinstance(curves, list) or not all(
        isinstance(m, str) and m.startswith(METRIC_PREFIXES + EXTRA_METRICS) for m in curves
    ):
        raise ValueError(
            f"{where}.curves must be a list of logged metric names (e.g. [{VAL_KNN_TOP1}]), "
            f"got {curves!r}; validate every epoch (trainer.check_val_every_n_epoch: 1) to "
            "have points to draw"
        )
    check_contrasts(experiment)
    check_primary(experiment)
    if report.get("baseline"):
        try:
            baseline = load_experiment(report["baseline"])
        except FileNotFoundError as error:
            warnings.warn(f"report.baseline: {error}; no gains will be reported", stacklevel=2)
            return
        varied = [a for a in baseline.axis_names if a != SEED_AXIS and a not in axes]
        if varied:
            raise ValueError(_baseline_axes_message(baseline.name, varied))


def check_contrasts(experiment: Experiment) -> None:
    """Raises ``ValueError`` unless each of ``report.contrasts`` names a non-seed axis and two
    of its labels, ``{axis: token_mixer, levels: [conv, attention]}``, or a trend along an
    axis whose labels are numbers (positive for ``log2``), ``{axis: last_dim, trend: log2}``."""
    contrasts = experiment.report.get("contrasts") or []
    where = f"experiment {experiment.name!r}: report.contrasts"
    forms = "{axis: ..., levels: [a, b]} or {axis: ..., trend: log2 | linear}"
    if not isinstance(contrasts, list):
        raise ValueError(f"{where} must be a list of {forms}, got {contrasts!r}")
    labels = {name: [v.label for v in values] for name, values in experiment.axes}
    for i, contrast in enumerate(contrasts):
        if not isinstance(contrast, dict) or set(contrast) not in (
            {"axis", "levels"},
            {"axis", "trend"},
        ):
            raise ValueError(f"{where}[{i}] must be {forms}, got {contrast!r}")
        axis = contrast["axis"]
        if axis not in labels or axis == SEED_AXIS:
            choices = [a for a in labels if a != SEED_AXIS]
            raise ValueError(f"{where}[{i}].axis is {axis!r}; contrast one of the axes {choices}")
        if "trend" in contrast:
            check_trend(contrast, labels[axis], f"{where}[{i}]")
            continue
        levels = contrast["levels"]
        if not isinstance(levels, list) or len(levels) != 2 or levels[0] == levels[1]:
            raise ValueError(f"{where}[{i}].levels must be two different labels, got {levels!r}")
        unknown = [str(level) for level in levels if str(level) not in labels[axis]]
        if unknown:
            raise ValueError(
                f"{where}[{i}]: {unknown} are no labels of axis {axis!r}; its labels are "
                f"{labels[axis]}"
            )


def check_trend(contrast: dict[str, Any], labels: list[str], where: str) -> None:
    """Raises ``ValueError`` unless the trend is known and its axis has >= 2 numeric labels
    that its ``x`` accepts (``log2``: positive)."""
    trend, axis = contrast["trend"], contrast["axis"]
    if trend not in TRENDS:
        raise ValueError(f"{where}.trend is {trend!r}; choose one of {list(TRENDS)}")
    try:
        values = [float(label) for label in labels]
    except ValueError:
        raise ValueError(
            f"{where}: a trend needs numeric labels, but axis {axis!r} has {labels}; contrast "
            "two of its levels instead: {axis: ..., levels: [a, b]}"
        ) from None
    if len(set(values)) < 2:
        raise ValueError(f"{where}: axis {axis!r} has one level {labels}; a trend needs two")
    if trend == "log2" and min(values) <= 0:
        raise ValueError(f"{where}: log2 needs positive labels, axis {axis!r} has {labels}")


def _baseline_axes_message(name: str, varied: list[str]) -> str:
    return (
        f"report.baseline {name!r} varies {varied}, which this experiment does not: a "
        "baseline's axes (but its seeds) must be axes of the experiment too"
    )


def final_metrics(run_dir: Path) -> dict[str, float]:
    """Last logged value of each metric over the cell's ``version_<n>/metrics.csv`` files."""
    metrics: dict[str, float] = {}
    versions = sorted(run_dir.glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name[8:]))
    for path in versions:
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                for key, value in row.items():
                    keep = key.startswith(METRIC_PREFIXES) or key in EXTRA_METRICS
                    if keep and value not in ("", None):
                        metrics[key] = float(value)
    return metrics


def collect_results(experiment: Experiment) -> list[dict[str, Any]]:
    """One row per finished cell: ``cell_id``, the axis labels, ``wall_s`` and final metrics."""
    rows = []
    for cell in experiment.cells():
        run_dir = experiment.output_dir / cell.cell_id
        record = read_run_status(run_dir)  # a legacy done.json reads as completed
        if record is None or record.get("status") != COMPLETED:
            continue
        rows.append(
            {"cell_id": cell.cell_id, **cell.values, "wall_s": round(record.get("wall_s", 0.0), 1)}
            | final_metrics(run_dir)
        )
    return rows


def add_baseline_gains(
    rows: list[dict[str, Any]],
    baseline: Experiment,
    metrics: Sequence[str],
    baseline_rows: list[dict[str, Any]] | None = None,
) -> list[str]:
    """Adds ``gain/<metric>`` to each row: metric minus the matching baseline cell's, by seed.

    Rows are matched to the baseline's finished cells on the baseline's non-seed axes, which
    the rows must share, and on the seed: the floor of a seed-``s`` cell is the untrained
    seed-``s`` cell, whose weights are the trained run's initial weights. Where the baseline
    lacks the seed, the gain subtracts the baseline's seed mean and the row's ``gain_unpaired``
    names the metric. A row without any finished baseline match gets no gain. Where the
    baseline's report lists ``metrics``, only those are compared (an untrained baseline's
    online-probe accuracy, say, is no floor).

    Args:
        baseline_rows: the baseline's cells (default: its finished cells on disk,
            :func:`collect_results`; the docs pass its committed CSV's rows).

    Returns:
        The gain keys added (those of ``metrics`` the baseline has).
    """
    keys = [a for a in baseline.axis_names if a != SEED_AXIS]
    missing = [k for k in keys if rows and k not in rows[0]]
    if missing:
        raise ValueError(_baseline_axes_message(baseline.name, missing))
    if baseline_rows is None:
        baseline_rows = collect_results(baseline)
    compared = baseline.report.get("metrics")
    added = []
    for metric in metrics if compared is None else [m for m in metrics if m in compared]:
        floor = group_over_seeds(baseline_rows, baseline.axis_names, metric)
        if not floor:
            continue
        same_seed = {
            (tuple(str(r[k]) for k in keys), str(r.get(SEED_AXIS))): float(r[metric])
            for r in baseline_rows
            if metric in r
        }
        for row in rows:
            labels = tuple(str(row[k]) for k in keys)
            if metric not in row or labels not in floor:
                continue
            paired = same_seed.get((labels, str(row.get(SEED_AXIS))))
            if paired is None:
                paired = sum(floor[labels]) / len(floor[labels])
                row[UNPAIRED] = ";".join(filter(None, [row.get(UNPAIRED, ""), metric]))
            row[f"gain/{metric}"] = float(row[metric]) - paired
        added.append(f"gain/{metric}")
    return added


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """Rows to CSV; the columns are the union of the rows' keys, in first-seen order."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def group_over_seeds(
    rows: list[dict[str, Any]], axes: list[str], metric: str
) -> dict[tuple[str, ...], list[float]]:
    """``{(label per non-seed axis): [metric per seed]}``, skipping rows without the metric."""
    keys = [a for a in axes if a != SEED_AXIS]
    groups: dict[tuple[str, ...], list[float]] = defaultdict(list)
    for row in rows:
        if metric in row:
            groups[tuple(str(row[a]) for a in keys)].append(float(row[metric]))
    return dict(groups)


def is_unpaired(row: dict[str, Any], metric: str) -> bool:
    """Whether ``row``'s ``metric`` is a gain over the baseline's seed mean (see above)."""
    return metric.startswith("gain/") and metric[5:] in str(row.get(UNPAIRED, "")).split(";")


def format_cell(group: list[dict[str, Any]], metric: str) -> str:
    """One table cell: ``metric`` over the rows of a group, mean ± 95 % CI (``metric_scale``).

    A gain or a contrast is signed and bold where its interval excludes 0; a gain over the
    baseline's seed mean is marked ``†``.
    """
    values = [float(r[metric]) for r in group if metric in r]
    scale, digits, _ = metric_scale(metric)
    mark = metric.startswith(("gain/", "contrast/"))
    text = format_mean_ci(values, scale=scale, digits=digits, mark_nonzero=mark)
    if any(is_unpaired(r, metric) for r in group if metric in r):
        text += f" {UNPAIRED_MARK}"
    return text


def group_rows(rows: list[dict[str, Any]], keys: list[str]) -> dict[tuple[str, ...], list]:
    """``{(label per key): [rows]}`` in first-seen (grid) order."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[tuple(str(row[k]) for k in keys)].append(row)
    return dict(groups)


def with_rankme(metrics: list[str], rows: list[dict[str, Any]]) -> list[str]:
    """``metrics`` and ``val/rankme`` (the collapse monitor, probes/rankme.py) where logged."""
    logged = VAL_RANKME not in metrics and any(VAL_RANKME in r for r in rows)
    return [*metrics, VAL_RANKME] if logged else metrics


def summary_table(rows: list[dict[str, Any]], axes: list[str], metrics: list[str]) -> str:
    """Markdown table: one line per group of seeds, ``mean ± 95 % CI`` per metric."""
    keys = [a for a in axes if a != SEED_AXIS]
    header = [*keys, "seeds", *metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for group, members in group_rows(rows, keys).items():
        members = [r for r in members if any(m in r for m in metrics)]
        if not members:
            continue
        seeds = max(sum(m in r for r in members) for m in metrics)
        cells = [format_cell(members, m) for m in metrics]
        lines.append("| " + " | ".join([*group, str(seeds), *cells]) + " |")
    return "\n".join(lines)


def pivot_table(
    rows: list[dict[str, Any]],
    experiment: Experiment,
    metric: str,
    row_axis: str,
    column_axes: list[str],
) -> str:
    """Markdown pivot of ``metric`` (mean ± 95 % CI over seeds), rows x column axes."""
    labels = {name: [v.label for v in values] for name, values in experiment.axes}
    groups = group_rows([r for r in rows if metric in r], [row_axis, *column_axes])
    columns = [()]
    for axis in column_axes:
        columns = [(*c, label) for c in columns for label in labels[axis]]
    header = [row_axis, *(" / ".join(c) for c in columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label in labels[row_axis]:
        cells = [format_cell(groups.get((label, *c), []), metric) for c in columns]
        lines.append("| " + " | ".join([label, *cells]) + " |")
    return "\n".join(lines)


def contrast_table(
    rows: list[dict[str, Any]], axes: list[str], contrast: dict[str, Any], metrics: list[str]
) -> str:
    """Markdown table of a contrast: one line per value of the other non-seed axes, the mean
    paired difference (or trend slope) ± its 95 % CI (points) per metric, bold where the CI
    excludes 0."""
    keys = [x for x in axes if x not in (contrast["axis"], SEED_AXIS)]
    trend = "trend" in contrast
    differences = {m: contrast_values(rows, axes, contrast, m) for m in metrics}
    groups = list(dict.fromkeys(g for m in metrics for g in differences[m]))
    header = [*keys, "seeds" if trend else "pairs", *metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for group in groups:
        pairs = max(len(differences[m].get(group, [])) for m in metrics)
        cells = []
        for m in metrics:
            scale, digits, _ = metric_scale(m)
            values = differences[m].get(group, [])
            if trend:  # a slope per doubling is a tenth of a difference: one more digit
                digits += 1
            cells.append(format_mean_ci(values, scale, digits, mark_nonzero=True))
        lines.append("| " + " | ".join([*group, str(pairs), *cells]) + " |")
    return "\n".join(lines)


def contrast_title(contrast: dict[str, Any]) -> str:
    """The markdown heading of a contrast's (or trend's) table."""
    axis = contrast["axis"]
    if "trend" in contrast:
        per = "doubling" if contrast["trend"] == "log2" else "unit"
        return (
            f"## Trend along {axis}: slope per {per} of {axis} (accuracies in points; least "
            "squares over its levels per seed and every other axis; mean ± 95 % CI over "
            "seeds, bold: excludes 0)"
        )
    a, b = contrast["levels"]
    return (
        f"## Contrast {axis}: {a} − {b} (accuracies in points; paired by seed and every other "
        "axis; mean ± 95 % CI, bold: excludes 0)"
    )


def plot_metric(
    rows: list[dict[str, Any]],
    experiment: Experiment,
    metric: str,
    x: str,
    hue: str | None,
    panel: str | None,
    path: Path,
) -> None:
    """Grouped bars of ``metric`` (mean, 95 % CI error bars over seeds): x axis, hue, panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {name: [v.label for v in values] for name, values in experiment.axes}
    scale, _, unit = metric_scale(metric)
    panels = labels[panel] if panel else [None]
    hues = labels[hue] if hue else [None]
    fig, axs = plt.subplots(
        1, len(panels), figsize=(3.2 * len(panels), 3.0), sharey=True, squeeze=False
    )
    width = 0.8 / len(hues)
    for ax, panel_label in zip(axs[0], panels):
        for h, hue_label in enumerate(hues):
            means, stds = [], []
            for x_label in labels[x]:
                values = [
                    float(r[metric])
                    for r in rows
                    if metric in r
                    and str(r[x]) == x_label
                    and (panel is None or str(r[panel]) == panel_label)
                    and (hue is None or str(r[hue]) == hue_label)
                ]
                mean, half = mean_ci(values) if values else (math.nan, None)
                means.append(scale * mean)
                stds.append(scale * (half or 0.0))
            positions = [i + (h - (len(hues) - 1) / 2) * width for i in range(len(labels[x]))]
            errors = stds if any(s > 0 for s in stds) else None  # one seed: no bars
            ax.bar(positions, means, width, yerr=errors, label=hue_label, capsize=2)
        ax.set_xticks(range(len(labels[x])), labels[x], rotation=30, ha="right", fontsize=8)
        ax.set_xlim(-0.5, len(labels[x]) - 0.5)  # unfinished cells leave gaps, not a shift
        if panel_label is not None:
            ax.set_title(f"{panel}={panel_label}", fontsize=9)
    if metric.startswith("gain/"):
        for ax in axs[0]:
            ax.axhline(0.0, color="black", linewidth=0.6)
    if unit:
        unit = "points" if metric.startswith("gain/") else unit
    axs[0][0].set_ylabel(f"{metric} ({unit})" if unit else metric)
    if hue is not None:
        axs[0][-1].legend(title=hue, fontsize=7, title_fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


CURVES_FILE = "curves.csv"
"""Long table of every validation of every cell: axis labels, ``step``, ``metric``, ``value``."""


def metric_history(run_dir: Path, metric: str) -> list[tuple[int, float]]:
    """``(step, value)`` of every logged ``metric`` over a cell's ``version_<n>/metrics.csv``
    files (a resumed cell's later version wins a repeated step), sorted by step."""
    history: dict[int, float] = {}
    versions = sorted(run_dir.glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name[8:]))
    for path in versions:
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                if row.get(metric) not in ("", None) and row.get("step") not in ("", None):
                    history[int(float(row["step"]))] = float(row[metric])
    return sorted(history.items())


def collect_curves(experiment: Experiment, metrics: list[str]) -> list[dict[str, Any]]:
    """One row per validation of every finished cell: labels, ``step``, ``metric``, ``value``."""
    rows = []
    for cell in experiment.cells():
        run_dir = experiment.output_dir / cell.cell_id
        record = read_run_status(run_dir)
        if record is None or record.get("status") != COMPLETED:
            continue
        for metric in metrics:
            for step, value in metric_history(run_dir, metric):
                rows.append({**cell.values, "step": step, "metric": metric, "value": value})
    return rows


def plot_curves(
    curves: list[dict[str, Any]],
    experiment: Experiment,
    metric: str,
    hue: str | None,
    panel: str | None,
    path: Path,
) -> bool:
    """Learning curves: ``metric`` against step, one line per ``hue`` label (one panel per
    ``panel`` label), the mean over seeds with a band of its 95 % t interval. Returns whether
    there was anything to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [c for c in curves if c["metric"] == metric]
    if not points:
        return False
    labels = {name: [v.label for v in values] for name, values in experiment.axes}
    scale, _, unit = metric_scale(metric)
    panels = labels[panel] if panel else [None]
    fig, axs = plt.subplots(
        1, len(panels), figsize=(3.6 * len(panels), 3.0), sharey=True, squeeze=False
    )
    for ax, panel_label in zip(axs[0], panels):
        for hue_label in labels[hue] if hue else [None]:
            by_step: dict[int, list[float]] = defaultdict(list)
            for c in points:
                if (panel is None or str(c[panel]) == panel_label) and (
                    hue is None or str(c[hue]) == hue_label
                ):
                    by_step[int(c["step"])].append(float(c["value"]))
            if not by_step:
                continue
            steps = sorted(by_step)
            stats = [mean_ci(by_step[s]) for s in steps]
            means = [scale * m for m, _ in stats]
            halves = [scale * (h or 0.0) for _, h in stats]
            (line,) = ax.plot(steps, means, marker="o", markersize=2, label=hue_label)
            low = [m - h for m, h in zip(means, halves)]
            high = [m + h for m, h in zip(means, halves)]
            ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_xlabel("step")
        if panel_label is not None:
            ax.set_title(f"{panel}={panel_label}", fontsize=9)
    axs[0][0].set_ylabel(f"{metric} ({unit})" if unit else metric)
    if hue is not None:
        axs[0][-1].legend(title=hue, fontsize=7, title_fontsize=7)
    fig.suptitle("mean over seeds, band: 95 % CI", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def wall_time_table(rows: list[dict[str, Any]], axis: str | None = None) -> str:
    """Markdown: cells, min / median / max and the sum of ``wall_s`` per label of ``axis``
    (one line for all cells without it), and the total. The only source of a grid's wall time
    in the docs: the seconds each cell's fit took, as its ``status.json`` recorded them."""

    def line(label: str, walls: list[float]) -> str:
        walls = sorted(walls)
        n, mid = len(walls), len(walls) // 2
        median = walls[mid] if n % 2 else (walls[mid - 1] + walls[mid]) / 2
        total = sum(walls)
        cells = [label, str(n), f"{walls[0]:.0f}", f"{median:.0f}", f"{walls[-1]:.0f}"]
        cells.append(f"{total:.0f} ({total / 60:.0f} min)")
        return "| " + " | ".join(cells) + " |"

    header = [axis or "cells", "n", "min s", "median s", "max s", "sum s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    timed = [r for r in rows if r.get("wall_s") not in (None, "")]
    if axis is not None:
        for label, group in group_rows(timed, [axis]).items():
            lines.append(line(label[0], [float(r["wall_s"]) for r in group]))
    if timed:
        lines.append(line("all" if axis else "all cells", [float(r["wall_s"]) for r in timed]))
    return "\n".join(lines)


def welch_gain_table(gains: dict[str, dict[tuple[str, ...], Any]], keys: list[str]) -> str:
    """Markdown: per group, each metric's Welch gain (trained mean - floor mean) ± 95 %."""
    from ssl_biases.experiments.confidence import format_estimate

    metrics = list(gains)
    groups = list(dict.fromkeys(g for m in metrics for g in gains[m]))
    header = [*keys, "seeds + floor seeds", *metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for group in groups:
        found = [gains[m][group] for m in metrics if group in gains[m]]
        n = "+".join(str(k) for k in found[0].n)
        cells = []
        for m in metrics:
            scale, digits, _ = metric_scale(m)
            cells.append(format_estimate(gains[m].get(group), scale, digits, mark_nonzero=True))
        lines.append("| " + " | ".join([*group, n, *cells]) + " |")
    return "\n".join(lines)


def report_sections(
    experiment: Experiment,
    rows: list[dict[str, Any]],
    baseline_rows: list[dict[str, Any]] | None = None,
) -> dict[str, str]:
    """The report's markdown, as named sections (title and table), in order.

    Names: ``pivot``, ``summary``, ``gain_pivot``, ``gain_summary``, ``welch_gains``,
    ``contrast<i>`` (``report.contrasts[i]``), ``claims`` and ``wall``. With ``report.baseline``
    the rows gain ``gain/<metric>`` columns (in place). ``baseline_rows`` are the baseline's
    cells (default: its finished cells on disk); ``docs/results.md`` is regenerated from the
    committed CSVs this way (:mod:`ssl_biases.experiments.doc_tables`).
    """
    from ssl_biases.experiments.claims import claims_table, claims_title, grid_claims, welch_gains

    report = experiment.report
    metric = report.get("metric", VAL_KNN_TOP1)
    metrics = [m for m in report.get("metrics", [metric]) if any(m in r for r in rows)] or [metric]
    axes = experiment.axis_names
    columns = list(report.get("columns") or [])
    unit = " (%)" if metric_scale(metric)[2] else ""
    sections = {
        "head": f"# {experiment.name}: {len(rows)} of {len(experiment.cells())} cells finished"
    }
    if rows and report.get("rows"):
        sections["pivot"] = "\n\n".join(
            [f"## {metric}{unit}", pivot_table(rows, experiment, metric, report["rows"], columns)]
        )
    sections["summary"] = "\n\n".join(
        [
            "## All metrics (accuracies in %; mean ± 95 % CI over seeds, Student t)",
            summary_table(rows, axes, with_rankme(metrics, rows)),
        ]
    )
    floor_axes: list[str] = []
    if rows and report.get("baseline"):
        try:
            baseline = load_experiment(report["baseline"])
        except FileNotFoundError as error:  # the tables above are still worth writing
            warnings.warn(f"report.baseline: {error}; no gains reported", stacklevel=2)
            sections["gain_summary"] = (
                f"No gains: report.baseline {report['baseline']} was not found."
            )
        else:
            if baseline_rows is None:
                baseline_rows = collect_results(baseline)
            floor_axes = baseline.axis_names
            gains = add_baseline_gains(rows, baseline, metrics, baseline_rows)
            if gains:
                gain = f"gain/{metric}" if f"gain/{metric}" in gains else gains[0]
                title = (
                    f"## Gain over {baseline.name} (metric minus the same seed's there, "
                    "accuracies in points; bold: the 95 % CI excludes 0)"
                )
                if report.get("rows"):
                    pivot = pivot_table(rows, experiment, gain, report["rows"], columns)
                    sections["gain_pivot"] = "\n\n".join([title, pivot])
                    title = f"## Gain over {baseline.name}, every metric (paired by seed)"
                parts = [title, summary_table(rows, axes, gains)]
                if any(is_unpaired(r, g) for r in rows for g in gains):
                    parts.append(UNPAIRED_NOTE)
                sections["gain_summary"] = "\n\n".join(parts)
                welch = {
                    g: welch_gains(rows, axes, baseline_rows, floor_axes, g[5:]) for g in gains
                }
                if any(welch.values()):
                    sections["welch_gains"] = "\n\n".join(
                        [
                            f"## Gain over {baseline.name} as a difference of means (Welch: "
                            "trained seeds' mean minus the floor seeds' mean; points; bold: "
                            "the 95 % CI excludes 0)",
                            welch_gain_table(welch, [a for a in axes if a != SEED_AXIS]),
                        ]
                    )
                metrics = [*metrics, *gains]
    for i, contrast in enumerate((report.get("contrasts") or []) if rows else []):
        sections[f"contrast{i}"] = "\n\n".join(
            [contrast_title(contrast), contrast_table(rows, axes, contrast, metrics)]
        )
    claims = grid_claims(experiment, rows, baseline_rows, floor_axes)
    if claims:
        sections["claims"] = "\n\n".join([claims_title(claims), claims_table(claims)])
    if rows:
        wall_axis = next((a for a in axes if a != SEED_AXIS), None)
        sections["wall"] = "\n\n".join(
            [
                "## Wall time (the fit of each cell, from its status.json's wall_s)",
                wall_time_table(rows, wall_axis),
            ]
        )
    return sections


def write_report(experiment: Experiment, rows: list[dict[str, Any]]) -> list[Path]:
    """Writes ``results.csv``, ``results.md`` and ``<metric>.png`` into the output directory.

    With ``report.baseline`` the rows gain ``gain/<metric>`` columns, ``results.md`` gain
    tables and ``gain_<metric>.png`` a plot; with ``report.curves`` the validation curves go
    to ``curves.csv`` and ``curves_<metric>.png`` (see the module docstring).
    """
    out = experiment.output_dir
    out.mkdir(parents=True, exist_ok=True)
    report = experiment.report
    metric = report.get("metric", VAL_KNN_TOP1)
    sections = report_sections(experiment, rows)
    paths = [out / "results.csv", out / "results.md"]
    write_csv(rows, paths[0])
    paths[1].write_text("\n\n".join(sections.values()) + "\n")
    plotted = [metric] + ([f"gain/{metric}"] if any(f"gain/{metric}" in r for r in rows) else [])
    if rows and report.get("x"):
        for name in plotted:
            png = out / f"{name.replace('/', '_')}.png"
            plot_metric(
                rows, experiment, name, report["x"], report.get("hue"), report.get("panel"), png
            )
            paths.append(png)
    if rows and report.get("curves"):
        curves = collect_curves(experiment, list(report["curves"]))
        write_csv(curves, out / CURVES_FILE)
        paths.append(out / CURVES_FILE)
        for name in report["curves"]:
            png = out / f"curves_{name.replace('/', '_')}.png"
            if plot_curves(curves, experiment, name, report.get("hue"), report.get("panel"), png):
                paths.append(png)
    return paths
