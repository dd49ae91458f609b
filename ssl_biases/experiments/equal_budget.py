"""The framework-against-bare-loops table (``benchmarks/equal_budget.py``), from its JSON rows.

One row a pair of runs at equal steps: ``method``, ``steps``, ``batch_size``, ``seed``, the kNN
top-1 of the bare loop (``bare``) and of the framework's ``fit`` (``framework``), both fractions,
their ``difference`` (framework - bare) and each run's seconds (``bare_s``, ``framework_s``). A
row may hold one side only while the other has not run. The docs' block
``<!-- table:equal_budget:NAME -->`` is this table of ``docs/results/NAME.json``
(:mod:`ssl_biases.experiments.doc_tables`).
"""

from __future__ import annotations

from typing import Any

from ssl_biases.experiments.confidence import format_mean_ci


def format_table(rows: list[dict[str, Any]]) -> str:
    """The kNN top-1 of both runs and their difference, per method, setting and seed; then the
    mean difference over seeds (± 95 % CI, Student t) for a method and setting with several."""

    def cell(row: dict[str, Any], key: str, spec: str, scale: float = 100.0) -> str:
        return format(scale * row[key], spec) if key in row else "–"  # not run yet

    lines = [
        "| method | steps | batch | seed | bare kNN top-1 (%) | framework kNN top-1 (%) | "
        "framework - bare (points) | bare s | framework s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['steps']} | {r.get('batch_size', '?')} | {r.get('seed', '?')} "
            f"| {cell(r, 'bare', '.2f')} | {cell(r, 'framework', '.2f')} "
            f"| {cell(r, 'difference', '+.2f')} "
            f"| {cell(r, 'bare_s', '.0f', 1)} | {cell(r, 'framework_s', '.0f', 1)} |"
        )
    by_setting: dict[tuple, list[float]] = {}
    for r in rows:
        if "difference" in r:
            setting = (r["method"], r["steps"], r.get("batch_size"))
            by_setting.setdefault(setting, []).append(r["difference"])
    several = {s: d for s, d in by_setting.items() if len(d) > 1}
    if several:
        lines += [
            "",
            "| method | steps | batch | seeds | framework - bare (points, mean ± 95 % CI) |",
            "|---|---|---|---|---|",
        ]
        for (method, steps, batch), differences in several.items():
            text = format_mean_ci(differences, mark_nonzero=True)
            lines.append(f"| {method} | {steps} | {batch} | {len(differences)} | {text} |")
    return "\n".join(lines)
