"""Attention distance and offset-local heads of every finished cell of a grid.

Walmer et al. (arXiv 2212.03862) read what SSL training does to attention through two
per-head statistics: the mean attention distance and the offset of the aligned attention map,
whose combination picks out *offset-local* heads. ``ssl-biases analyze`` computes them for a
few checkpoints beside every other analysis; this module computes only them, for every
completed cell of a grid (the cell's ``last.ckpt``, on its own probe queries), and writes a
long CSV that the docs' tables read:

    python -m ssl_biases.experiments.attention_grid configs/experiment/walmer_cifar10.yaml \\
        --out docs/results/walmer_cifar10_attention.csv

Columns: the grid's axis labels, ``global_step``, ``block``, ``head``, ``distance`` and
``offset`` (units of the image side), ``offset_local`` (1 when the head passes
:func:`ssl_biases.analysis.attention.offset_local_heads` with its documented thresholds).
:func:`attention_table` is the docs' summary (``<!-- table:attention:GRID -->``).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from ssl_biases.analysis.attention import (
    AlignedAttentionMap,
    MeanAttentionDistance,
    attention_offset,
    offset_local_heads,
)
from ssl_biases.analysis.command import run_data
from ssl_biases.analysis.report import load_checkpoint_backbone
from ssl_biases.experiments.confidence import format_mean_ci
from ssl_biases.experiments.grid import Experiment, load_experiment
from ssl_biases.experiments.sweep import last_checkpoint
from ssl_biases.run.status import COMPLETED, read_run_status

COLUMNS = ("global_step", "block", "head", "distance", "offset", "offset_local")


@torch.no_grad()
def head_statistics(backbone: torch.nn.Module, loader) -> dict[str, torch.Tensor]:
    """``distance`` and ``offset`` ``[L, H]`` of an attention backbone over ``loader``'s
    images, and ``offset_local`` ``[L, H]`` (bool) by the documented rule.

    Raises:
        ValueError: the backbone has no attention maps to read.
    """
    if not getattr(backbone, "has_attention", False) or not hasattr(backbone, "grid_size"):
        raise ValueError(
            f"{type(backbone).__name__} has no attention maps: attention statistics need an "
            "attention token mixer (token_mixer: attention or local_attention)"
        )
    grid, prefix = tuple(backbone.grid_size), int(backbone.num_prefix_tokens)
    meters = None
    for images, _ in loader:
        maps = backbone.attention_maps(images)  # L x [B, H, T, T]
        if meters is None:
            meters = [(MeanAttentionDistance(grid, prefix), AlignedAttentionMap(grid, prefix))
                      for _ in maps]  # fmt: skip
        for (distance, aligned), m in zip(meters, maps):
            distance.update(m)
            aligned.update(m)
    if meters is None:
        raise ValueError("the query loader is empty: give the data module a test split")
    distance = torch.stack([d.compute() for d, _ in meters])
    offset = attention_offset(torch.stack([a.compute() for _, a in meters]))
    local = torch.zeros_like(distance, dtype=torch.bool)
    for block, head in offset_local_heads(distance, offset, grid_size=grid):
        local[block, head] = True
    return {"distance": distance, "offset": offset, "offset_local": local}


def collect_attention(experiment: Experiment) -> list[dict[str, Any]]:
    """One row per block and head of every completed cell with a checkpoint (see the module
    docstring); the queries are each cell's own probe queries (its run's data section).

    Raises:
        FileNotFoundError: no completed cell of the grid has a checkpoint.
    """
    rows: list[dict[str, Any]] = []
    queries: dict[str, Any] = {}  # one query loader per data section (usually one)
    for cell in experiment.cells():
        run_dir = experiment.output_dir / cell.cell_id
        record = read_run_status(run_dir)
        ckpt = last_checkpoint(run_dir)
        if record is None or record.get("status") != COMPLETED or ckpt is None:
            continue
        data = run_data(ckpt)
        key = repr(sorted(data.hparams.items()))
        if key not in queries:
            queries[key] = data.probe_dataloaders()[1]
        backbone, _, step = load_checkpoint_backbone(ckpt)
        stats = head_statistics(backbone, queries[key])
        blocks, heads = stats["distance"].shape
        for block, head in itertools.product(range(blocks), range(heads)):
            row = {**cell.values, "global_step": step, "block": block, "head": head}
            row.update({name: float(stats[name][block, head]) for name in COLUMNS[3:]})
            rows.append(row)
    if not rows:
        raise FileNotFoundError(
            f"no completed cell with a checkpoint under {experiment.output_dir}: run "
            f"`ssl-biases sweep` on {experiment.name} first (or pass its --output-dir)"
        )
    return rows


def attention_table(rows: list[dict[str, Any]], experiment: Experiment) -> str:
    """Markdown: per cell setting (every axis but the seed) and block, the mean attention
    distance (mean over heads, then mean ± 95 % t interval over seeds) and the offset-local
    heads (total over seeds / heads read). With a ``report.x`` axis, a second table: each
    block's change from the same setting at the first ``x`` level (``max_steps`` 1: about
    the initialisation), paired by seed (bold: the interval excludes 0)."""
    group_axes = [a for a in experiment.axis_names if a != "seed"]
    blocks = sorted({int(float(r["block"])) for r in rows})
    per_seed: dict[tuple, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    local: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
    for r in rows:
        key = tuple(str(r[a]) for a in group_axes) + (str(r.get("seed", "")),)
        per_seed[key][int(float(r["block"]))].append(float(r["distance"]))
        group = key[:-1]
        local[group][0] += int(float(r["offset_local"]))
        local[group][1] += 1
    head_mean = {key: {b: sum(v) / len(v) for b, v in by_block.items()}
                 for key, by_block in per_seed.items()}  # fmt: skip
    groups: dict[tuple, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for key, by_block in head_mean.items():
        for block, value in by_block.items():
            groups[key[:-1]][block].append(value)
    order = {a: [v.label for v in values] for a, values in experiment.axes}

    def rank(group: tuple) -> tuple:
        return tuple(order[a].index(label) for a, label in zip(group_axes, group))

    def table(caption: str, last: str, line) -> list[str]:
        header = [*group_axes, "seeds", *(f"block {b}" for b in blocks)] + [last] * bool(last)
        out = [caption, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return out + [text for text in map(line, sorted(groups, key=rank)) if text]

    def level_line(group: tuple) -> str:
        cells = [*group, str(len(next(iter(groups[group].values()))))]
        cells += [format_mean_ci(groups[group][b], scale=1.0, digits=3) for b in blocks]
        found, read = local[group]
        return "| " + " | ".join([*cells, f"{found} / {read}"]) + " |"

    lines = table(
        "*Mean attention distance per block (fraction of the image side; mean over heads, "
        "then mean ± 95 % CI over seeds) and offset-local heads (found / read)*",
        "offset-local heads",
        level_line,
    )
    x = experiment.report.get("x")
    if x in group_axes:
        at = group_axes.index(x)

        def change_line(group: tuple) -> str:
            start = (*group[:at], order[x][0], *group[at + 1 :])
            if group == start or start not in groups:
                return ""
            seeds = [k[-1] for k in head_mean if k[:-1] == group and (*start, k[-1]) in head_mean]
            cells = [*group, str(len(seeds))]
            for b in blocks:
                diffs = [head_mean[(*group, s)][b] - head_mean[(*start, s)][b] for s in seeds]
                cells.append(format_mean_ci(diffs, scale=1.0, digits=3, mark_nonzero=True))
            return "| " + " | ".join(cells) + " |"

        lines += [""] + table(
            f"*Change of the mean attention distance from {x} = {order[x][0]} (the same seed; "
            "mean ± 95 % CI over seeds, bold: excludes 0)*",
            "",
            change_line,
        )
    return "\n".join(lines) + "\n"


def write_rows(rows: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", type=Path, help="the grid file (configs/experiment/*.yaml)")
    parser.add_argument("--output-dir", type=Path, help="the sweep's output (default: runs/NAME)")
    parser.add_argument("--out", type=Path, required=True, help="the CSV to write")
    args = parser.parse_args(argv)
    experiment = load_experiment(args.experiment, output_dir=args.output_dir)
    rows = collect_attention(experiment)
    write_rows(rows, args.out)
    print(attention_table(rows, experiment))
    print(f"{len(rows)} rows -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
