"""The methods-at-equal-wall-time table (``benchmarks/wall_time_budget.py``), from its JSON rows.

One row a run: ``method``, ``max_time`` (``DD:HH:MM:SS``), ``batch_size``, ``seed``, ``steps``
made in the budget, ``fit_s`` and ``knn_top1`` (a fraction); the floor's method is
:data:`FLOOR` (the same backbone, untrained). The docs' block ``<!-- table:wall_time:NAME -->``
is this table of ``docs/results/NAME.json`` (:mod:`ssl_biases.experiments.doc_tables`).
"""

from __future__ import annotations

from typing import Any

from ssl_biases.experiments.confidence import format_mean_ci

FLOOR = "random_init"


def format_table(rows: list[dict[str, Any]]) -> str:
    """Per method: steps in the budget, kNN top-1 and the gain over the floor of the same seed
    and budget, per seed; then the mean gain over seeds (± 95 % CI) for methods with several."""
    floors = {(r["max_time"], r["seed"]): r["knn_top1"] for r in rows if r["method"] == FLOOR}
    lines = [
        "| method | budget | seed | steps | kNN top-1 (%) | gain over random init (points) |",
        "|---|---|---|---|---|---|",
    ]
    gains: dict[str, list[float]] = {}
    for r in sorted(rows, key=lambda r: (r["max_time"], -r["knn_top1"])):
        floor = floors.get((r["max_time"], r["seed"]))
        gain = (
            "–"
            if floor is None or r["method"] == FLOOR
            else f"{100 * (r['knn_top1'] - floor):+.2f}"
        )
        if gain != "–":
            gains.setdefault(r["method"], []).append(r["knn_top1"] - floor)  # x100 below
        lines.append(
            f"| {r['method']} | {r['max_time']} | {r['seed']} | {r['steps']:,} | "
            f"{100 * r['knn_top1']:.2f} | {gain} |"
        )
    several = {m: g for m, g in gains.items() if len(g) > 1}
    if several:
        lines += ["", "| method | seeds | gain (points, mean ± 95 % CI) |", "|---|---|---|"]
        for method, values in sorted(several.items(), key=lambda kv: -sum(kv[1]) / len(kv[1])):
            lines.append(
                f"| {method} | {len(values)} | {format_mean_ci(values, mark_nonzero=True)} |"
            )
    return "\n".join(lines)
