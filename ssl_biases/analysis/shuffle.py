"""Layout reliance: how much a *frozen* representation needs the spatial layout of its input.

The network was trained on ordinary images; here its probe bank and queries are both
rearranged by one fixed permutation (:mod:`ssl_biases.data.shuffle`) and the weighted kNN
top-1 on the frozen embeddings is compared with the unshuffled one. A large drop says the
learned features depend on where things are (patch order, pixel order inside patches, or the
whole layout); no drop says they do not, e.g. under ``patch`` for a backbone without position
embeddings and with mean pooling, whose embedding is exactly invariant.

This is **not** the MLP-Mixer protocol (arXiv 2105.01601, Sec. 3.4): the paper trains *and*
tests each model on shuffled images, measuring what a model can learn from shuffled data. That
is ``--data.shuffle`` (``SSLDataModule(shuffle=...)``) at pretraining time. The two answer
different questions: an unshuffled-trained network can lose accuracy under a permutation it
would be fully able to learn.

``PatchShuffle`` and ``PixelShuffle`` live in :mod:`ssl_biases.data.shuffle`; they are
re-exported here under their old names.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ssl_biases.data.shuffle import PatchShuffle, PixelShuffle, fixed_input_shuffle
from ssl_biases.probes.knn import KNNProbe

__all__ = ["LAYOUT_SHUFFLES", "PatchShuffle", "PixelShuffle", "layout_reliance", "layout_shuffles"]

# the permutations `layout_reliance` applies, in report order
LAYOUT_SHUFFLES = ("patch", "within_patch", "pixel")


def layout_shuffles(patch_size: int, seed: int = 0) -> dict[str, nn.Module]:
    """``{kind: fixed permutation}`` for :data:`LAYOUT_SHUFFLES` (patch order, pixels inside
    each ``patch_size`` patch, pixels over the whole image), all drawn from ``seed``."""
    return {kind: fixed_input_shuffle(kind, patch_size, seed) for kind in LAYOUT_SHUFFLES}


@torch.no_grad()
def _embed(backbone: nn.Module, loader: DataLoader, shuffle: nn.Module | None) -> Tensor:
    """Embeddings ``[N, D]`` of a loader's images, shuffled first when ``shuffle`` is set."""
    out = [backbone(images if shuffle is None else shuffle(images)) for images, _ in loader]
    return torch.cat(out).float()


@torch.no_grad()
def layout_reliance(
    backbone: nn.Module,
    bank_loader: DataLoader,
    query_loader: DataLoader,
    patch_size: int,
    seed: int = 0,
    knn: KNNProbe | None = None,
    unshuffled_top1: float | None = None,
) -> dict[str, Any]:
    """kNN top-1 of a frozen backbone when bank and queries are shuffled by one permutation.

    Args:
        backbone: the frozen backbone, in eval mode.
        bank_loader: ``(images, labels)`` of the probe bank.
        query_loader: ``(images, labels)`` of the queries.
        patch_size: patch side of ``patch`` and ``within_patch`` (the backbone's).
        seed: seed of the fixed permutations.
        knn: the kNN probe (default :class:`~ssl_biases.probes.knn.KNNProbe`).
        unshuffled_top1: the unshuffled kNN top-1, if already known (else computed).

    Returns:
        ``{"patch_size", "seed", kind: {"knn_top1", "relative", "drop"}}`` for each kind of
        :data:`LAYOUT_SHUFFLES`; ``relative`` = shuffled / unshuffled top-1, ``drop`` =
        unshuffled - shuffled.
    """
    knn = knn if knn is not None else KNNProbe()
    bank_y = torch.cat([y for _, y in bank_loader])
    query_y = torch.cat([y for _, y in query_loader])

    def top1(shuffle: nn.Module | None) -> float:
        bank_x, query_x = (
            _embed(backbone, bank_loader, shuffle),
            _embed(backbone, query_loader, shuffle),
        )
        return float(knn.evaluate(bank_x, bank_y, query_x, query_y)[f"{knn.name}_top1"])

    base = top1(None) if unshuffled_top1 is None else unshuffled_top1
    result: dict[str, Any] = {"patch_size": patch_size, "seed": seed}
    for kind, shuffle in layout_shuffles(patch_size, seed).items():
        shuffled = top1(shuffle)
        result[kind] = {
            "knn_top1": shuffled,
            "relative": shuffled / max(base, 1e-12),
            "drop": base - shuffled,
        }
    return result
