"""The seven figures of ``ssl-biases analyze``, drawn from a report dict (``report.json``).

Every function takes the report (or one model's entry) as :func:`ssl_biases.analysis.report.
build_report` writes it, so a figure can be redrawn from a saved ``report.json`` alone (the
offset-head maps also need the aligned attention maps, kept out of the JSON as arrays).
Figures are ``matplotlib.figure.Figure`` objects without pyplot: no global state.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor

from ssl_biases.analysis.report import block_matrix
from ssl_biases.metric_names import (
    LAYERWISE_BEST_BLOCK,
    fewshot_name,
    fewshot_std_name,
    knn_top1_name,
)

FIGURES = (
    "attention_distance.png",
    "offset_heads_<label>.png",
    "cka_<label>.png",
    "cka_<label_a>_vs_<label_b>.png",
    "layerwise_knn.png",
    "fewshot.png",
    "shuffle.png",
)


def _fig(width: float = 5.0, height: float = 3.6) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width, height), layout="constrained")  # no pyplot: no global state
    return fig, fig.subplots()


def figure_attention_distance(report: dict[str, Any]) -> Figure | None:
    """Mean attention distance of every head against its block, one colour per model."""
    models = {a: m for a, m in report["models"].items() if m["attention"] is not None}
    if not models:
        return None
    fig, ax = _fig()
    top, depth = 0.8, 1
    for n, (a, m) in enumerate(models.items()):
        dist = block_matrix(m["attention"]["mean_distance"])  # [L, H]
        blocks = torch.arange(dist.shape[0], dtype=torch.float64)[:, None].expand_as(dist)
        shift = (n - (len(models) - 1) / 2) * 0.15
        ax.scatter((blocks + shift).flatten(), dist.flatten(), s=18, label=a, alpha=0.8)
        top, depth = max(top, 1.1 * float(dist.nan_to_num(0.0).max())), max(depth, dist.shape[0])
    ax.set_xticks(range(depth))
    ax.set_ylim(0.0, top)  # 0: attention on the query itself; ~0.52-0.59: uniform
    ax.set(xlabel="block", ylabel="mean attention distance (image side)")
    ax.set_title("Attention distance per block and head")
    ax.legend()
    return fig


def figure_offset_heads(label: str, model: dict[str, Any], maps: Tensor) -> Figure | None:
    """Aligned maps of the offset local heads (else of the 4 most offset heads)."""
    if model["attention"] is None:
        return None
    found = [(h["block"], h["head"]) for h in model["attention"]["offset_local_heads"]]
    title = f"{label}: offset local heads"
    if not found:
        offset = block_matrix(model["attention"]["offset"]).nan_to_num(-1.0)  # [L, H]
        top = offset.flatten().argsort(descending=True)[:4].tolist()
        found = [divmod(i, offset.shape[1]) for i in top]
        title = f"{label}: no offset local head; the 4 largest offsets"
    found = found[:12]
    cols = min(4, len(found))
    rows = (len(found) + cols - 1) // cols
    fig = Figure(figsize=(2.2 * cols, 2.3 * rows + 0.4), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flatten():
        ax.axis("off")
    for ax, (i, j) in zip(axes.flatten(), found):
        ax.imshow(maps[i, j].numpy(), cmap="viridis")
        offset = model["attention"]["offset"][f"block{i}"][f"head{j}"]
        ax.set_title(f"block {i} head {j}\noffset {offset:.2f}", fontsize=8)
    fig.suptitle(title, fontsize=9)
    return fig


def figure_cka(matrix: Tensor, title: str, xlabel: str, ylabel: str) -> Figure:
    """Heatmap of a CKA matrix ``[L_a, L_b]`` (rows: model A's blocks)."""
    fig, ax = _fig(4.6, 4.0)
    image = ax.imshow(matrix.numpy(), vmin=0.0, vmax=1.0, cmap="magma", origin="lower")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    fig.colorbar(image, ax=ax, label="linear CKA")
    return fig


def figure_layerwise(report: dict[str, Any]) -> Figure:
    """Layer-wise kNN top-1 against block, one curve per model, best block marked."""
    fig, ax = _fig()
    for a, m in report["models"].items():
        curve = list(m["layerwise_knn_top1"].values())
        (line,) = ax.plot(range(len(curve)), curve, marker="o", label=a)
        best = m[LAYERWISE_BEST_BLOCK]
        ax.scatter([best], [curve[best]], s=120, facecolors="none", edgecolors=line.get_color())
    depth = max(len(m["layerwise_knn_top1"]) for m in report["models"].values())
    ax.set_xticks(range(depth))
    ax.set(xlabel="block", ylabel="kNN top-1 (k=20, T=0.07)", title="Layer-wise kNN")
    ax.legend()
    return fig


def _shots(fewshot: dict[str, float]) -> list[int]:
    """The shot counts K of a report's few-shot entry (its ``fewshot_name(K)`` keys), sorted."""
    counts = (int(digits) for digits in re.findall(r"\d+", " ".join(fewshot)))
    return sorted({k for k in counts if fewshot_name(k) in fewshot})


def figure_fewshot(report: dict[str, Any]) -> Figure:
    """Few-shot top-1 against shots (mean and std over seeds), one curve per model."""
    fig, ax = _fig()
    for a, m in report["models"].items():
        shots = _shots(m["fewshot"])
        means = [m["fewshot"][fewshot_name(k)] for k in shots]
        stds = [m["fewshot"][fewshot_std_name(k)] for k in shots]
        ax.errorbar(shots, means, yerr=stds, marker="o", capsize=3, label=a)
    ax.set_xscale("log")
    ax.set(xlabel="shots per class", ylabel="top-1", title="Few-shot least squares")
    ax.legend()
    return fig


def figure_shuffle(report: dict[str, Any]) -> Figure:
    """kNN top-1 unshuffled, patch-shuffled and pixel-shuffled, grouped by model."""
    fig, ax = _fig()
    models = list(report["models"].items())
    width = 0.8 / len(models)
    for n, (a, m) in enumerate(models):
        shuffled = m["shuffle"]
        top1 = knn_top1_name()
        values = [m[top1], shuffled["patch"][top1], shuffled["pixel"][top1]]
        ax.bar([x + n * width for x in range(3)], values, width, label=a)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(3)], ["none", "patches", "pixels"])
    ax.set(ylabel="kNN top-1", title="Shuffle sensitivity (bank and queries shuffled)")
    ax.legend()
    return fig


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label)


def make_figures(report: dict[str, Any], arrays: dict[str, Tensor]) -> dict[str, Figure]:
    """File name -> figure, for every figure the report supports."""
    figures: dict[str, Figure | None] = {
        "attention_distance.png": figure_attention_distance(report),
        "layerwise_knn.png": figure_layerwise(report),
        "fewshot.png": figure_fewshot(report),
        "shuffle.png": figure_shuffle(report),
    }
    for a, m in report["models"].items():
        if f"{a}/aligned_maps" in arrays:
            figures[f"offset_heads_{_slug(a)}.png"] = figure_offset_heads(
                a, m, arrays[f"{a}/aligned_maps"]
            )
        figures[f"cka_{_slug(a)}.png"] = figure_cka(
            block_matrix(m["cka"]), f"CKA between blocks: {a}", "block", "block"
        )
    for pair, cka in report["cka_between"].items():
        a, b = pair.split(" vs ")
        figures[f"cka_{_slug(a)}_vs_{_slug(b)}.png"] = figure_cka(
            block_matrix(cka), f"CKA: {pair}", f"{b} block", f"{a} block"
        )
    return {name: fig for name, fig in figures.items() if fig is not None}
