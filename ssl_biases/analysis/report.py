"""The report of ``ssl-biases analyze``: every probe and analysis of trained backbones.

:func:`build_report` loads each checkpoint's backbone (the one loader,
:func:`ssl_biases.run.checkpoint.read_checkpoint`: the config stored in the checkpoint, else
the run's ``config.yaml``) and, on a data module's
probe loaders (bank: a fixed subset of the train split; queries: the test split or its
``max_val_samples`` subset), computes:

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

The report (``report.json``: keys ``block<i>`` and ``head<j>``, blocks from 0) is a JSON-ready
dict; the aligned attention maps come beside it as arrays for the figures
(:mod:`ssl_biases.analysis.figures`). The command that writes both is
:mod:`ssl_biases.analysis.command`.
"""

from __future__ import annotations

import datetime
import inspect
import itertools
import json
from pathlib import Path
from typing import Any

import torch
import yaml
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
from ssl_biases.metric_names import LAYERWISE_BEST_BLOCK, knn_top1_name
from ssl_biases.probes.fewshot import FewShotProbe
from ssl_biases.probes.knn import KNNProbe
from ssl_biases.probes.layerwise import layerwise_knn_top1, pool_block_output
from ssl_biases.probes.linear import LinearProbe
from ssl_biases.run.checkpoint import read_checkpoint

REPORT_FILE = "report.json"
OFFSET_LOCAL_RULE = {
    name: param.default
    for name, param in inspect.signature(offset_local_heads).parameters.items()
    if param.default is not inspect.Parameter.empty and name != "grid_size"
}  # the documented thresholds of `offset_local_heads`, recorded in the report


# ------------------------------------------------------------------------------ loading
def load_checkpoint_backbone(ckpt: str | Path) -> tuple[nn.Module, dict[str, Any], int]:
    """The backbone of a training checkpoint, in eval mode, with its config and global step.

    Read by :func:`ssl_biases.run.checkpoint.read_checkpoint`, the loader of validate and export.

    Raises:
        FileNotFoundError: when ``ckpt`` does not exist.
        ValueError: when it is no training checkpoint or its weights do not fit its config.
    """
    checkpoint = read_checkpoint(ckpt)
    return checkpoint.backbone(), checkpoint.backbone_config(), checkpoint.global_step


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
            LAYERWISE_BEST_BLOCK: int(layerwise.argmax()),
        }
        patch_size = int(getattr(bb, "patch_size", 4))  # 4 px for backbones without patches
        entry["shuffle"] = layout_reliance(
            bb, bank_loader, query_loader, patch_size, shuffle_seed, knn, entry[knn_top1_name()]
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


def build_report(
    ckpts: list[str],
    data: SSLDataModule,
    labels: list[str] | None = None,
    shots: tuple[int, ...] = (1, 5, 10, 25),
    seeds: tuple[int, ...] = (0, 1, 2),
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The report of checkpoints on ``data``'s probe loaders (see the module docstring).

    Args:
        ckpts: checkpoints written by ``ssl-biases fit``.
        data: the data module; its init arguments (``hparams``) are recorded in the report as
            ``data.init_args``, so pass one that has not been set up yet.
        labels: one name per checkpoint (default: the method's class name, else the file
            stem; made unique).
        shots: few-shot K values.
        seeds: few-shot seeds.

    Returns:
        ``(report, arrays)`` as :func:`analyze_backbones` returns them, each model's entry
        led by its ``checkpoint``, ``backbone`` config and ``global_step``, plus ``data``,
        ``protocol`` and ``created``.

    Raises:
        ValueError: ``labels`` do not match ``ckpts``, or a checkpoint was trained on another
            image size than ``data``'s.
    """
    data_args = dict(data.hparams)
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
    return report, arrays
