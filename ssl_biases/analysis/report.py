"""``ssl-biases analyze``: every probe and analysis of one or two trained backbones, with plots.

``ssl-biases analyze --ckpt RUN/checkpoints/last.ckpt [--ckpt OTHER.ckpt] --config
configs/data/cifar10.yaml [--data.root PATH ...] --output DIR [--tensorboard RUN]`` loads each
checkpoint's backbone (``ssl_biases.export.read_checkpoint``: the config stored in the
checkpoint, else the run's ``config.yaml``), builds the data module from the data config
(without ``--config``, from the first run's ``config.yaml``), and on its probe loaders (bank:
a fixed subset of the train split; queries: the test split or its ``max_val_samples`` subset)
computes:

- per block and head, on the queries (attention backbones only; Walmer et al., arXiv
  2212.03862): mean attention distance, aligned aggregated attention map, its offset, and the
  offset local heads found by ``offset_local_heads`` (its documented default thresholds);
- minibatch linear CKA (arXiv 2010.15327) between all blocks of each model and between the
  blocks of every pair of models, on the flattened block outputs of the queries (batches of
  fewer than 4 images, which the unbiased estimator cannot use, are skipped);
- layer-wise weighted kNN top-1 (``ssl_biases.probes.layerwise``) and the best block;
- weighted kNN top-1/top-5, the offline linear probe and the all-classes few-shot probe
  (``FewShotProbe`` protocol) on the final embedding;
- layout reliance (``ssl_biases.analysis.shuffle.layout_reliance``): kNN top-1 of the frozen
  backbone when bank *and* queries are shuffled by one fixed permutation (patch order at the
  backbone's patch size, pixels inside patches, pixels over the whole image; the permutations
  of MLP-Mixer, arXiv 2105.01601, which trains on shuffled images instead: ``--data.shuffle``);
  ``relative`` = shuffled / unshuffled top-1, ``drop`` = unshuffled - shuffled.

It writes ``DIR/report.json`` (keys ``block<i>`` and ``head<j>``, blocks from 0) and PNG
figures (``FIGURES``); with ``--tensorboard RUN`` the same figures also go to TensorBoard
events in ``RUN`` (e.g. the run directory), at the checkpoint's global step.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import inspect
import itertools
import json
import re
from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import ActionConfigFile, ArgumentParser
from matplotlib.figure import Figure
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ssl_biases.analysis.attention import (
    AlignedAttentionMap,
    MeanAttentionDistance,
    attention_center,
    attention_offset,
    offset_local_heads,
)
from ssl_biases.analysis.cka import MinibatchCKA
from ssl_biases.analysis.shuffle import layout_reliance
from ssl_biases.data.datamodule import SSLDataModule
from ssl_biases.export import read_checkpoint
from ssl_biases.probes.fewshot import FewShotProbe
from ssl_biases.probes.knn import KNNProbe
from ssl_biases.probes.layerwise import layerwise_knn_top1, pool_block_output
from ssl_biases.probes.linear import LinearProbe

REPORT_FILE = "report.json"
OFFSET_LOCAL_RULE = {
    name: param.default
    for name, param in inspect.signature(offset_local_heads).parameters.items()
    if param.default is not inspect.Parameter.empty and name != "grid_size"
}  # the documented thresholds of `offset_local_heads`, recorded in the report
FIGURES = (
    "attention_distance.png",
    "offset_heads_<label>.png",
    "cka_<label>.png",
    "cka_<label_a>_vs_<label_b>.png",
    "layerwise_knn.png",
    "fewshot.png",
    "shuffle.png",
)


# ------------------------------------------------------------------------------ loading
def load_checkpoint_backbone(ckpt: str | Path) -> tuple[nn.Module, dict[str, Any], int]:
    """The backbone of a training checkpoint, in eval mode, with its config and global step."""
    state, config, step = read_checkpoint(ckpt)
    module_name, _, class_name = config["class_path"].rpartition(".")
    backbone = getattr(importlib.import_module(module_name), class_name)(**config["init_args"])
    backbone.load_state_dict(state, strict=True)
    return backbone.eval(), config, step


def method_name(ckpt: str | Path) -> str | None:
    """The method's class name from the run's ``config.yaml`` beside ``checkpoints/``, if any."""
    path = Path(ckpt).resolve().parent.parent / "config.yaml"
    if not path.is_file():
        return None
    model = (yaml.safe_load(path.read_text()) or {}).get("model") or {}
    class_path = model.get("class_path") if isinstance(model, dict) else None
    return class_path.rpartition(".")[2].lower() if class_path else None


def load_report(path: str | Path) -> dict[str, Any]:
    """``report.json`` from a file or from the output folder that holds it."""
    path = Path(path)
    path = path / REPORT_FILE if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; write it with `ssl-biases analyze`")
    return json.loads(path.read_text())


def block_matrix(report_part: dict[str, dict[str, Any]]) -> Tensor:
    """``{"block<i>": {"head<j>" or "block<j>": v}}`` -> ``[L, H]`` float64 (NaN for null)."""
    rows = [
        [float("nan") if v is None else float(v) for v in row.values()]
        for row in report_part.values()
    ]
    return torch.tensor(rows, dtype=torch.float64)


# ------------------------------------------------------------------------------ compute
def _keyed(matrix: Tensor, row: str, col: str) -> dict[str, dict[str, float | None]]:
    """``[L, H]`` -> ``{"block0": {"head0": v}}`` (NaN -> None, valid JSON)."""
    return {
        f"{row}{i}": {f"{col}{j}": (None if v != v else float(v)) for j, v in enumerate(r)}
        for i, r in enumerate(matrix.tolist())
    }


@torch.no_grad()
def _embed(backbone: nn.Module, loader: DataLoader, shuffle: nn.Module | None = None) -> Tensor:
    """Final embeddings ``[N, D]`` of a loader's images (optionally shuffled first)."""
    out = [backbone(images if shuffle is None else shuffle(images)) for images, _ in loader]
    return torch.cat(out).float()


@torch.no_grad()
def _pooled_blocks(backbone: nn.Module, images: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    """Raw per-block outputs and their pooled vectors (``pool_block_output``)."""
    outs = backbone.forward_intermediates(images)
    prefix = int(getattr(backbone, "num_prefix_tokens", 0))
    return outs, [pool_block_output(o, prefix).float() for o in outs]


@torch.no_grad()
def analyze_backbones(
    backbones: dict[str, nn.Module],
    bank_loader: DataLoader,
    query_loader: DataLoader,
    shots: tuple[int, ...] = (1, 5, 10, 25),
    seeds: tuple[int, ...] = (0, 1, 2),
    shuffle_seed: int = 0,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Compute every number of the report (see the module docstring).

    Args:
        backbones: label -> backbone in eval mode (all fed the same images).
        bank_loader: ``(images, labels)`` of the probe bank.
        query_loader: ``(images, labels)`` of the queries (the test split).
        shots: few-shot K values (skipped beyond the rarest bank class).
        seeds: few-shot support draws.
        shuffle_seed: seed of the fixed patch and pixel permutations.

    Returns:
        ``(report, arrays)``: the JSON-ready report and, per label, the aligned attention
        maps ``[L, H, 2K-1, 2K-1]`` (key ``"<label>/aligned_maps"``) for plotting.
    """
    labels = list(backbones)
    knn, linear = KNNProbe(), LinearProbe()
    fewshot = FewShotProbe(shots=shots, seeds=seeds)
    self_cka = {a: MinibatchCKA() for a in labels}
    cross_cka = {(a, b): MinibatchCKA() for a, b in itertools.combinations(labels, 2)}
    attn = {
        a: None
        for a, bb in backbones.items()
        if getattr(bb, "has_attention", False) and hasattr(bb, "grid_size")
    }
    query_blocks: dict[str, list[list[Tensor]]] = {a: [] for a in labels}
    query_labels = []
    for images, y in query_loader:  # one pass over the queries for all models together
        query_labels.append(y)
        outs = {}
        for a, bb in backbones.items():
            outs[a], pooled = _pooled_blocks(bb, images)
            query_blocks[a].append(pooled)
            if a in attn:
                maps = bb.attention_maps(images)  # L x [B, H, T, T]
                if attn[a] is None:
                    grid, prefix = tuple(bb.grid_size), int(bb.num_prefix_tokens)
                    attn[a] = [
                        (MeanAttentionDistance(grid, prefix), AlignedAttentionMap(grid, prefix))
                        for _ in maps
                    ]
                for (distance, aligned), m in zip(attn[a], maps):
                    distance.update(m)
                    aligned.update(m)
        if images.shape[0] >= 4:
            for a in labels:
                self_cka[a].update(outs[a], outs[a])
            for (a, b), metric in cross_cka.items():
                metric.update(outs[a], outs[b])
    query_y = torch.cat(query_labels)
    bank_y = torch.cat([y for _, y in bank_loader])

    report: dict[str, Any] = {"models": {}, "cka_between": {}}
    arrays: dict[str, Tensor] = {}
    for a, bb in backbones.items():
        bank_blocks = [
            _pooled_blocks(bb, images)[1] for images, _ in bank_loader
        ]  # batches x L x [b, D]
        bank_l = [torch.cat(per_block) for per_block in zip(*bank_blocks)]  # L x [N, D_l]
        query_l = [torch.cat(per_block) for per_block in zip(*query_blocks[a])]  # L x [Q, D_l]
        layerwise = layerwise_knn_top1(bank_l, bank_y, query_l, query_y)  # [L]
        bank_x, query_x = _embed(bb, bank_loader), _embed(bb, query_loader)
        entry: dict[str, Any] = {
            "num_blocks": len(bank_l),
            **knn.evaluate(bank_x, bank_y, query_x, query_y),
            **linear.evaluate(bank_x, bank_y, query_x, query_y),
            "fewshot": fewshot.evaluate(bank_x, bank_y, query_x, query_y),
            "layerwise_knn_top1": {f"block{i}": float(v) for i, v in enumerate(layerwise)},
            "layerwise_best_block": int(layerwise.argmax()),
        }
        patch_size = int(getattr(bb, "patch_size", 4))  # 4 px for backbones without patches
        entry["shuffle"] = layout_reliance(
            bb, bank_loader, query_loader, patch_size, shuffle_seed, knn, entry["knn_top1"]
        )
        entry["cka"] = _keyed(self_cka[a].compute(), "block", "block")
        entry["attention"] = None
        if attn.get(a) is not None:
            distance = torch.stack([d.compute() for d, _ in attn[a]])  # [L, H]
            maps = torch.stack([m.compute() for _, m in attn[a]])  # [L, H, Ch, Cw]
            offset = attention_offset(maps)  # [L, H]
            center = attention_center(maps)  # [L, H, 2]
            heads = offset_local_heads(distance, offset, grid_size=tuple(bb.grid_size))
            arrays[f"{a}/aligned_maps"] = maps
            entry["attention"] = {
                "grid_size": list(bb.grid_size),
                "num_prefix_tokens": int(bb.num_prefix_tokens),
                "mean_distance": _keyed(distance, "block", "head"),
                "offset": _keyed(offset, "block", "head"),
                "center": {
                    f"block{i}": {f"head{j}": c for j, c in enumerate(row)}
                    for i, row in enumerate(center.tolist())
                },
                "offset_local_rule": OFFSET_LOCAL_RULE,
                "offset_local_heads": [
                    {
                        "block": i,
                        "head": j,
                        "distance": float(distance[i, j]),
                        "offset": float(offset[i, j]),
                        "aligned_map": maps[i, j].tolist(),
                    }
                    for i, j in heads
                ],
            }
        report["models"][a] = entry
    for (a, b), metric in cross_cka.items():
        report["cka_between"][f"{a} vs {b}"] = _keyed(metric.compute(), "block", "block")
    return report, arrays


# ------------------------------------------------------------------------------ figures
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
        best = m["layerwise_best_block"]
        ax.scatter([best], [curve[best]], s=120, facecolors="none", edgecolors=line.get_color())
    depth = max(len(m["layerwise_knn_top1"]) for m in report["models"].values())
    ax.set_xticks(range(depth))
    ax.set(xlabel="block", ylabel="kNN top-1 (k=20, T=0.07)", title="Layer-wise kNN")
    ax.legend()
    return fig


def figure_fewshot(report: dict[str, Any]) -> Figure:
    """Few-shot top-1 against shots (mean and std over seeds), one curve per model."""
    fig, ax = _fig()
    for a, m in report["models"].items():
        shots = sorted(int(k[8:-4]) for k in m["fewshot"] if k.endswith("shot"))
        means = [m["fewshot"][f"fewshot_{k}shot"] for k in shots]
        stds = [m["fewshot"][f"fewshot_{k}shot_std"] for k in shots]
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
        values = [m["knn_top1"], shuffled["patch"]["knn_top1"], shuffled["pixel"]["knn_top1"]]
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


# ------------------------------------------------------------------------------ command
def _data_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="ssl-biases analyze (data)", exit_on_error=False)
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_class_arguments(SSLDataModule, "data")
    return parser


def run_analysis(
    ckpts: list[str],
    data: dict[str, Any],
    output: str | Path,
    labels: list[str] | None = None,
    tensorboard: str | Path | None = None,
    shots: tuple[int, ...] = (1, 5, 10, 25),
    seeds: tuple[int, ...] = (0, 1, 2),
) -> dict[str, Any]:
    """Analyse checkpoints on ``data``'s probe loaders; write the report and figures.

    Args:
        ckpts: checkpoints written by ``ssl-biases fit``.
        data: ``SSLDataModule`` arguments (recorded in the report as ``data.init_args``).
        output: folder for ``report.json`` and the PNG figures.
        labels: one name per checkpoint (default: the method's class name, else the file stem).
        tensorboard: folder for TensorBoard events of the figures (none when ``None``).
        shots: few-shot K values.
        seeds: few-shot seeds.

    Returns:
        The report (also written to ``output/report.json``).
    """
    data_args = dict(data)
    data = SSLDataModule(**data_args)
    if labels and len(labels) != len(ckpts):
        raise ValueError(f"give one --label per --ckpt, got {len(labels)} for {len(ckpts)}")
    backbones, meta = {}, {}
    for n, ckpt in enumerate(ckpts):
        backbone, config, step = load_checkpoint_backbone(ckpt)
        size = config["init_args"].get("image_size")
        if size is not None and size != data.image_size:
            raise ValueError(
                f"{ckpt} was trained on {size} px images but the data config says "
                f"{data.image_size}: set --data.image_size {size}"
            )
        label = labels[n] if labels else method_name(ckpt) or Path(ckpt).stem
        label = label if label not in backbones else f"{label}-{n}"
        backbones[label] = backbone
        meta[label] = {"checkpoint": str(ckpt), "backbone": config, "global_step": step}
    bank_loader, query_loader = data.probe_dataloaders()
    report, arrays = analyze_backbones(backbones, bank_loader, query_loader, shots, seeds)
    for label, entry in report["models"].items():
        report["models"][label] = {**meta[label], **entry}
    report["data"] = {
        "dataset": data.dataset_name,
        "root": data.root,
        "image_size": data.image_size,
        "bank_size": len(bank_loader.dataset),
        "query_size": len(query_loader.dataset),
        "init_args": data_args,
    }
    report["protocol"] = {
        "knn": "weighted kNN, cosine, k=20, T=0.07; bank = probe bank, queries = test split",
        "fewshot": f"big_vision fewshot_lsr, all classes, shots {list(shots)}, seeds "
        f"{list(seeds)}, supports drawn from the bank, l2_reg 1024",
        "offline_linear": "L-BFGS logistic regression on standardised bank features",
        "layerwise": "class token (prefix tokens) or token mean / spatial mean per block",
        "shuffle": "frozen backbone; one fixed permutation applied to bank and queries; kNN top-1",
        "cka": "minibatch linear CKA, unbiased HSIC, flattened block outputs of the queries",
    }
    report["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    (output / REPORT_FILE).write_text(json.dumps(report, indent=1) + "\n")
    figures = make_figures(report, arrays)
    writer = None
    if tensorboard is not None:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(tensorboard))
    step = max(m["global_step"] for m in meta.values())
    for name, fig in figures.items():
        fig.savefig(output / name, dpi=110)
        if writer is not None:
            writer.add_figure(f"analysis/{name.removesuffix('.png')}", fig, step, close=False)
    if writer is not None:
        writer.close()
    return report


def main(argv: list[str] | None = None) -> None:
    """``ssl-biases analyze --ckpt A.ckpt [--ckpt B.ckpt] --config DATA.yaml --output DIR``."""
    parser = argparse.ArgumentParser(
        prog="ssl-biases analyze",
        description="Probes and analyses of trained backbones: report.json + PNG figures. "
        "Data options (--config DATA.yaml, --data.KEY VALUE) are those of `ssl-biases fit`; "
        "without --config the first run's config.yaml gives the data.",
        allow_abbrev=False,
    )
    parser.add_argument("--ckpt", action="append", required=True, help="checkpoint (repeat)")
    parser.add_argument("--output", required=True, help="folder for report.json and PNGs")
    parser.add_argument("--label", action="append", help="name of each --ckpt in the report")
    parser.add_argument("--tensorboard", help="also write the figures as TensorBoard events here")
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 5, 10, 25])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args, data_argv = parser.parse_known_args(argv)
    if not any(a == "--config" or a.startswith("--config=") for a in data_argv):
        run_config = Path(args.ckpt[0]).resolve().parent.parent / "config.yaml"
        if not run_config.is_file():
            raise FileNotFoundError(
                f"no --config given and no {run_config}: pass the data config, e.g. "
                "--config configs/data/cifar10.yaml --data.root PATH"
            )
        section = (yaml.safe_load(run_config.read_text()) or {}).get("data") or {}
        data_argv = [f"--data={json.dumps(section)}", *data_argv]
    data_parser = _data_parser()
    config = data_parser.parse_args(data_argv)
    report = run_analysis(
        args.ckpt,
        config.data.as_dict(),
        args.output,
        args.label,
        args.tensorboard,
        tuple(args.shots),
        tuple(args.seeds),
    )
    for label, m in report["models"].items():
        shuffle = m["shuffle"]
        print(
            f"{label}: knn_top1 {m['knn_top1']:.4f}  offline_linear "
            f"{m['offline_linear_top1']:.4f}  best block {m['layerwise_best_block']}  "
            f"patch-shuffle drop {shuffle['patch']['drop']:.4f}  "
            f"pixel-shuffle drop {shuffle['pixel']['drop']:.4f}"
        )
    print(f"Report: {Path(args.output) / REPORT_FILE}")
