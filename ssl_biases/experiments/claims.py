"""A grid's claims: the estimator stated before it runs, gains as differences of means, Holm.

The grid file states its primary metric and estimator in its ``report`` section, before any
cell runs::

    report:
      baseline: configs/experiment/conv_vs_attention_cifar10_random.yaml
      contrasts: [{axis: token_mixer, levels: [conv, attention]}]
      primary:
        metric: gain/val/knn_top1   # the claims are read on it (a gain needs a baseline)
        estimator: welch            # welch | paired
        claim: greater              # optional: the claimed side of 0 (greater | less)
        contrasts: [0]              # optional: which of report.contrasts are claims (all)

**Claims.** One per line of every such ``report.contrasts`` table on the primary metric: a
contrast ``a - b`` (or a trend's slope) for one value of the other non-seed axes. Holm's
step-down adjustment runs across all of them (:func:`~.confidence.holm_intervals`): the
write-up's verdicts, *agree* / *disagree* where Holm rejects 0 on the claimed / other side,
*inconclusive* otherwise, are read at a family-wise 5 % in both directions.

**Estimators** of a gain ``gain/X`` (``X`` minus the untrained floor) and of a contrast of
gains:

- ``paired``: each trained seed minus the floor of the same seed (the run starts from those
  weights), then the one-sample t interval of those differences (and of their contrasts).
  Tight where a seed's trained result and its floor are positively correlated.
- ``welch``: the mean of the trained seeds minus the mean of the floor's seeds, Welch's
  interval (:func:`~.confidence.welch_estimate`); for a contrast, the trained cells'
  seed-paired differences ``a - b`` (or slopes) against the floor's, the same way. Only floor
  seeds that no trained cell has enter (a trained seed starts from its floor seed's weights,
  so the two are not independent samples). The floor may have many more seeds than the
  trained cells (floor cells cost seconds), and its noise then shrinks as its own count grows
  instead of entering every trained seed's difference.
  Where trained results and floors are uncorrelated (as in the committed grids), this is the
  tighter form. A contrast on an axis the floor does not vary (the method) needs no floor.

A metric that is not a gain has no floor: its claims are the seed-paired contrasts. The tables
print both estimators' 95 % intervals; the verdict uses the primary one only (chosen after
seeing both, the tighter one would bias every interval towards excluding 0).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from ssl_biases.experiments.confidence import (
    ESTIMATORS,
    Estimate,
    format_estimate,
    holm_intervals,
    mean_estimate,
    welch_estimate,
)
from ssl_biases.experiments.grid import SEED_AXIS, Experiment

TRENDS = {"linear": lambda x: x, "log2": math.log2}
"""A trend's x: the axis label itself, or its base-2 logarithm (a slope per doubling)."""


_ACCURACY = re.compile(r"top\d|shot")


def metric_scale(metric: str) -> tuple[float, int, str]:
    """``(scale, digits, unit)`` to print ``metric`` (or its gain or contrast) with.

    Accuracies are fractions and read in % with one decimal; anything else (a loss, a
    reconstruction error) is printed as logged, with three decimals and no unit.
    """
    return (100.0, 1, "%") if _ACCURACY.search(metric) else (1.0, 3, "")


def contrast_differences(
    rows: list[dict[str, Any]], axes: list[str], contrast: dict[str, Any], metric: str
) -> dict[tuple[str, ...], list[float]]:
    """Paired differences ``a - b`` of ``metric`` for ``contrast = {axis, levels: [a, b]}``.

    A pair is the two cells that carry ``a`` and ``b`` on the contrast's axis and the same
    label on every other axis, seed included. Returns ``{(label per other non-seed axis):
    [difference per seed]}``, in grid order; a cell without its partner is left out.
    """
    axis, (a, b) = contrast["axis"], [str(level) for level in contrast["levels"]]
    others = [x for x in axes if x != axis]
    cells: dict[tuple[tuple[str, ...], str], float] = {}
    for row in rows:
        if metric in row and str(row[axis]) in (a, b):
            cells[(tuple(str(row[x]) for x in others), str(row[axis]))] = float(row[metric])
    differences: dict[tuple[str, ...], list[float]] = defaultdict(list)
    for (key, level), value in cells.items():
        if level == a and (key, b) in cells:
            group = tuple(label for x, label in zip(others, key) if x != SEED_AXIS)
            differences[group].append(value - cells[(key, b)])
    return dict(differences)


def trend_slopes(
    rows: list[dict[str, Any]], axes: list[str], contrast: dict[str, Any], metric: str
) -> dict[tuple[str, ...], list[float]]:
    """Least-squares slopes of ``metric`` along ``contrast = {axis, trend}``, one per seed.

    A series is the cells with the same label on every other axis, seed included; its slope is
    ``sum((x - x̄)(y - ȳ)) / sum((x - x̄)²)`` with ``x = TRENDS[trend](label)``. A series that
    lacks a level some finished cell has (an unfinished cell) is left out. Returns ``{(label
    per other non-seed axis): [slope per seed]}``, in grid order.
    """
    axis, x_of = contrast["axis"], TRENDS[contrast["trend"]]
    others = [x for x in axes if x != axis]
    series: dict[tuple[str, ...], dict[float, float]] = defaultdict(dict)
    for row in rows:
        if metric in row:
            key = tuple(str(row[x]) for x in others)
            series[key][x_of(float(row[axis]))] = float(row[metric])
    levels = {x for points in series.values() for x in points}
    if len(levels) < 2:  # one level: no slope
        return {}
    slopes: dict[tuple[str, ...], list[float]] = defaultdict(list)
    for key, points in series.items():
        if set(points) != levels:
            continue
        mx, my = sum(points) / len(points), sum(points.values()) / len(points)
        sxy = sum((x - mx) * (y - my) for x, y in points.items())
        sxx = sum((x - mx) ** 2 for x in points)
        group = tuple(label for x, label in zip(others, key) if x != SEED_AXIS)
        slopes[group].append(sxy / sxx)
    return dict(slopes)


def contrast_values(
    rows: list[dict[str, Any]], axes: list[str], contrast: dict[str, Any], metric: str
) -> dict[tuple[str, ...], list[float]]:
    """:func:`trend_slopes` for a trend, else :func:`contrast_differences`."""
    values_of = trend_slopes if "trend" in contrast else contrast_differences
    return values_of(rows, axes, contrast, metric)


CLAIM_SIDES = ("greater", "less")
GAIN = "gain/"


def check_primary(experiment: Experiment) -> None:
    """Raises ``ValueError`` unless ``report.primary`` is ``{metric, estimator[, claim]}`` with
    a known estimator, a gain only where a baseline exists, and contrasts to make claims of."""
    primary = experiment.report.get("primary")
    if primary is None:
        return
    where = f"experiment {experiment.name!r}: report.primary"
    if not isinstance(primary, dict) or not {"metric", "estimator"} <= set(primary):
        raise ValueError(
            f"{where} must be {{metric: ..., estimator: welch | paired[, claim: greater | "
            f"less]}}, got {primary!r}"
        )
    unknown = sorted(set(primary) - {"metric", "estimator", "claim", "contrasts"})
    if unknown:
        raise ValueError(
            f"{where} has unknown keys {unknown}; known: metric, estimator, claim, contrasts"
        )
    if primary["estimator"] not in ESTIMATORS:
        raise ValueError(f"{where}.estimator is {primary['estimator']!r}; one of {ESTIMATORS}")
    if primary.get("claim", "greater") not in CLAIM_SIDES:
        raise ValueError(f"{where}.claim is {primary['claim']!r}; one of {CLAIM_SIDES}")
    metric = str(primary["metric"])
    if metric.startswith(GAIN) and not experiment.report.get("baseline"):
        raise ValueError(f"{where}.metric {metric!r} is a gain: give report.baseline (the floor)")
    contrasts = experiment.report.get("contrasts") or []
    if not contrasts:
        raise ValueError(
            f"{where}: the claims are the lines of report.contrasts; add one, e.g. "
            "{axis: token_mixer, levels: [conv, attention]}"
        )
    chosen = primary.get("contrasts", list(range(len(contrasts))))
    if not isinstance(chosen, list) or not all(
        isinstance(i, int) and 0 <= i < len(contrasts) for i in chosen
    ):
        raise ValueError(
            f"{where}.contrasts must list indices of report.contrasts (0 to "
            f"{len(contrasts) - 1}), got {chosen!r}"
        )


def _values(rows: list[dict[str, Any]], axes: list[str], metric: str) -> dict[tuple, list]:
    """``{(label per non-seed axis): [metric per seed]}``."""
    keys = [a for a in axes if a != SEED_AXIS]
    groups: dict[tuple[str, ...], list[float]] = {}
    for row in rows:
        if metric in row:
            groups.setdefault(tuple(str(row[a]) for a in keys), []).append(float(row[metric]))
    return groups


def _project(labels: dict[str, str], axes: list[str], leave_out: str | None = None) -> tuple:
    """The labels of ``axes`` (but the seed and ``leave_out``) from a ``{axis: label}`` map."""
    return tuple(labels[a] for a in axes if a not in (SEED_AXIS, leave_out))


def independent_floor(
    rows: list[dict[str, Any]], floor_rows: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The floor cells whose seed no trained cell has: a trained seed starts from its floor
    seed's weights, so only the other floor seeds are a sample independent of the trained
    cells, as Welch's interval assumes. A grid for Welch gives its floor extra seeds."""
    trained = {str(r.get(SEED_AXIS)) for r in rows}
    return [r for r in floor_rows if str(r.get(SEED_AXIS)) not in trained]


def welch_gains(
    rows: list[dict[str, Any]],
    axes: list[str],
    floor_rows: list[dict[str, Any]],
    floor_axes: list[str],
    metric: str,
) -> dict[tuple[str, ...], Estimate]:
    """Per group of seeds: mean trained ``metric`` minus the mean of its floor's seeds (Welch).

    Only the floor seeds that no trained cell has enter (:func:`independent_floor`); a group
    with fewer than 2 of them (or fewer than 2 trained seeds) is left out.
    """
    keys = [a for a in axes if a != SEED_AXIS]
    floors = _values(independent_floor(rows, floor_rows), floor_axes, metric)
    gains = {}
    for group, values in _values(rows, axes, metric).items():
        floor = floors.get(_project(dict(zip(keys, group)), floor_axes), [])
        if len(values) >= 2 and len(floor) >= 2:
            gains[group] = welch_estimate(values, floor)
    return gains


def contrast_estimates(
    rows: list[dict[str, Any]],
    axes: list[str],
    contrast: dict[str, Any],
    metric: str,
    estimator: str,
    floor_rows: list[dict[str, Any]] | None = None,
    floor_axes: Sequence[str] = (),
) -> dict[tuple[str, ...], Estimate]:
    """One estimate per line of a contrast's table (see the module docstring); ``welch`` of
    a metric that is not a gain gives none.

    Args:
        rows: the trained cells, with ``gain/*`` columns when ``metric`` is a gain.
        contrast: ``{axis, levels: [a, b]}`` or ``{axis, trend}``.
        metric: a metric or ``gain/<metric>``.
        estimator: ``paired`` or ``welch``.
        floor_rows, floor_axes: the baseline's cells and axes (``welch`` gains only).
    """
    axis = contrast["axis"]
    keys = [x for x in axes if x not in (axis, SEED_AXIS)]
    if estimator == "welch" and not metric.startswith(GAIN):
        return {}  # no floor: the seed-paired contrast is the only form
    if estimator == "paired":
        return {
            group: mean_estimate(values, "paired")
            for group, values in contrast_values(rows, axes, contrast, metric).items()
        }
    base = metric[len(GAIN) :]
    trained = contrast_values(rows, axes, contrast, base)
    if axis not in floor_axes:  # the floor does not vary along the contrast: it cancels
        return {g: mean_estimate(v, "paired") for g, v in trained.items()}
    floor = independent_floor(rows, floor_rows or [])
    floors = contrast_values(floor, list(floor_axes), contrast, base)
    estimates = {}
    for group, values in trained.items():
        floor = floors.get(_project(dict(zip(keys, group)), list(floor_axes), axis), [])
        if len(values) >= 2 and len(floor) >= 2:
            estimates[group] = welch_estimate(values, floor)
    return estimates


def contrast_label(contrast: dict[str, Any]) -> str:
    """``token_mixer conv − attention`` or ``slope along log2(last_dim)``."""
    if "trend" in contrast:
        x = contrast["axis"] if contrast["trend"] == "linear" else f"log2({contrast['axis']})"
        return f"slope along {x}"
    a, b = contrast["levels"]
    return f"{contrast['axis']} {a} − {b}"


def grid_claims(
    experiment: Experiment,
    rows: list[dict[str, Any]],
    floor_rows: list[dict[str, Any]] | None = None,
    floor_axes: Sequence[str] = (),
    metrics: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """The claims of a grid with a ``report.primary``: one dict per contrast line, with
    ``grid``, ``claim`` (its label), ``paired`` and ``welch`` estimates (or ``None``),
    ``primary`` (the primary estimator's) and ``metric``, ``estimator``, ``side``.

    ``metrics`` (default: the primary metric) widens the family to more metrics read by the
    same estimator, as a write-up that reads two probes makes claims on both.
    """
    primary = experiment.report.get("primary")
    if not primary or not rows:
        return []
    estimator = str(primary["estimator"])
    axes = experiment.axis_names
    claims = []
    for metric, contrast in (
        (m, c) for m in (metrics or [str(primary["metric"])]) for c in primary_contrasts(experiment)
    ):
        keys = [x for x in axes if x not in (contrast["axis"], SEED_AXIS)]
        by = {
            name: contrast_estimates(rows, axes, contrast, metric, name, floor_rows, floor_axes)
            for name in ("paired", "welch")
        }
        for group in dict.fromkeys([*by["paired"], *by["welch"]]):
            where = ", ".join(f"{k}={v}" for k, v in zip(keys, group))
            claims.append(
                {
                    "grid": experiment.name,
                    "claim": contrast_label(contrast) + (f" ({where})" if where else ""),
                    "metric": metric,
                    "estimator": estimator,
                    "side": primary.get("claim", "greater"),
                    "paired": by["paired"].get(group),
                    "welch": by["welch"].get(group),
                    "primary": by[estimator if metric.startswith(GAIN) else "paired"].get(group),
                }
            )
    return claims


def primary_contrasts(experiment: Experiment) -> list[dict[str, Any]]:
    """The contrasts whose lines are the grid's claims (``report.primary.contrasts``)."""
    contrasts = experiment.report.get("contrasts") or []
    chosen = (experiment.report.get("primary") or {}).get("contrasts")
    return contrasts if chosen is None else [contrasts[i] for i in chosen]


def verdict(estimate: Estimate, rejects: bool, side: str) -> str:
    """*agree* / *disagree* where Holm rejects 0 on the claimed / other side, else
    *inconclusive*."""
    if not rejects:
        return "inconclusive"
    return "agree" if (estimate.mean > 0) == (side == "greater") else "disagree"


def claims_table(claims: list[dict[str, Any]], show_grid: bool = False) -> str:
    """Markdown: each claim's paired and Welch 95 % intervals, the primary estimator's
    Holm-adjusted interval and p-value across all ``claims``, and its verdict."""
    usable = [c for c in claims if c["primary"] is not None]
    holm = holm_intervals([c["primary"] for c in usable])
    header = [*(["grid"] if show_grid else []), "claim", "metric", "n", "paired (95 %)"]
    header += ["Welch (95 %)", "primary", "Holm-adjusted interval", "p (Holm)", "verdict"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for claim, adjusted in zip(usable, holm):
        scale, digits, _ = metric_scale(claim["metric"])
        digits += "slope" in claim["claim"]  # a slope per doubling: one more digit
        est = claim["primary"]

        def show(e: Estimate | None, digits: int = digits, scale: float = scale) -> str:
            return format_estimate(e, scale, digits, mark_nonzero=True)

        cells = [
            *([claim["grid"]] if show_grid else []),
            claim["claim"],
            claim["metric"],
            "+".join(str(n) for n in est.n),
            show(claim["paired"]),
            show(claim["welch"]),
            claim["estimator"],
            format_estimate(est, scale, digits, mark_nonzero=True, half=adjusted["half"]),
            f"{adjusted['p_holm']:.3f}",
            verdict(est, adjusted["rejects"], claim["side"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def claims_title(claims: list[dict[str, Any]]) -> str:
    """The heading of a claims table: the family's size and the correction."""
    return (
        f"## Claims: {len([c for c in claims if c['primary'] is not None])} claims, Holm "
        "across them (family-wise 5 %, both directions). n: trained pairs/seeds (+ floor "
        "seeds for Welch); the Holm-adjusted interval is at its step's level "
        "(5 %/(m - i + 1)); bold: excludes 0"
    )
