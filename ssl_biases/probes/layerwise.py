"""Layer-wise weighted kNN: how well the output of every block separates the classes.

Walmer et al., "Teaching Matters" (arXiv 2212.03862, Sec. 5) probe each block of a frozen
ViT with a weighted kNN on its pooled output and read off the curve over depth and the best
block. Here a block's output is pooled into one vector per image (``pool_block_output``):

- tokens ``[B, T, D]`` of a backbone with prefix tokens (``num_prefix_tokens > 0``): the
  class token (token 0), as in the paper;
- tokens without prefix tokens: the mean over tokens;
- feature maps ``[B, C, h, w]`` (ResNets): the spatial mean.

The kNN is the project's weighted kNN (``knn_scores``: cosine similarity, k = 20,
T = 0.07, as in the paper), bank = probe bank, queries = probe queries. Blocks are numbered
from 0, in the order of ``backbone.forward_intermediates``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from ssl_biases.metric_names import LAYERWISE_BEST_BLOCK, layerwise_knn_top1_name
from ssl_biases.probes.features import FrozenFeatureProbe
from ssl_biases.probes.knn import knn_scores, topk_accuracy


def pool_block_output(output: Tensor, num_prefix_tokens: int) -> Tensor:
    """One vector per image from a block's output.

    Args:
        output: tokens ``[B, T, D]`` or feature maps ``[B, C, h, w]``.
        num_prefix_tokens: class/register tokens in front of the patch tokens.

    Returns:
        ``[B, D]``: the class token (token 0) if ``num_prefix_tokens > 0``, else the mean over
        tokens; the spatial mean for maps.
    """
    if output.ndim == 4:
        return output.mean(dim=(2, 3))  # [B, C]
    if output.ndim != 3:
        raise ValueError(
            "a block output must be tokens [B, T, D] or maps [B, C, h, w], "
            f"got {tuple(output.shape)}"
        )
    if num_prefix_tokens > 0:
        return output[:, 0]  # [B, D]
    return output.mean(dim=1)  # [B, D]


@torch.no_grad()
def block_features(backbone: nn.Module, images: Tensor) -> list[Tensor]:
    """Pooled output ``[B, D_l]`` of every block of ``backbone`` (``forward_intermediates``)."""
    prefix = int(getattr(backbone, "num_prefix_tokens", 0))
    return [pool_block_output(out, prefix) for out in backbone.forward_intermediates(images)]


def layerwise_knn_top1(
    bank: Sequence[Tensor],
    bank_labels: Tensor,
    query: Sequence[Tensor],
    query_labels: Tensor,
    k: int = 20,
    temperature: float = 0.07,
    chunk_size: int = 1024,
) -> Tensor:
    """Weighted-kNN top-1 accuracy of every block (arXiv 2212.03862).

    Args:
        bank: per block, ``[N, D_l]`` pooled bank features.
        bank_labels: ``[N]`` bank labels.
        query: per block, ``[Q, D_l]`` pooled query features (same blocks as ``bank``).
        query_labels: ``[Q]`` query labels.
        k: Neighbours per query.
        temperature: Vote temperature.
        chunk_size: Chunk size of ``knn_scores``.

    Returns:
        ``[L]`` float64 top-1 accuracies; ``argmax`` is the best block.
    """
    if len(bank) != len(query) or len(bank) == 0:
        raise ValueError(
            f"need the same, non-zero number of blocks, got {len(bank)} and {len(query)}"
        )
    num_classes = int(max(bank_labels.max(), query_labels.max())) + 1
    accuracies = [
        topk_accuracy(
            knn_scores(q, b, bank_labels, num_classes, k, temperature, chunk_size), query_labels, 1
        )
        for b, q in zip(bank, query)
    ]
    return torch.tensor(accuracies, dtype=torch.float64)  # [L]


class LayerwiseKNNProbe(FrozenFeatureProbe):
    """Logs ``<stage>/layerwise_knn_top1_block<i>`` and ``<stage>/layerwise_best_block``.

    For every probe batch (bank and queries) it runs ``backbone.forward_intermediates`` on
    the batch's images itself (one more forward pass per probe batch), pools every block's
    output (``pool_block_output``) and keeps the concatenation of all blocks; at the end of
    the epoch it gathers across processes and runs the weighted kNN block by block. Off by
    default because of that extra pass: the CLI turns it on with
    ``--layerwise.every_n_epochs N``.

    Args:
        every_n_epochs: Evaluate at every n-th validation epoch during fit (and at the end,
            and always in ``validate``/``test``); ``None`` turns the probe off.
        k: Neighbours per query.
        temperature: Vote temperature.
        chunk_size: Chunk size of the kNN.
    """

    def __init__(
        self,
        every_n_epochs: int | None = None,
        k: int = 20,
        temperature: float = 0.07,
        chunk_size: int = 1024,
    ) -> None:
        super().__init__(every_n_epochs if every_n_epochs is not None else 1)
        self.enabled = every_n_epochs is not None
        self.k = k
        self.temperature = temperature
        self.chunk_size = chunk_size
        self._widths: list[int] = []

    def _active(self, trainer: pl.Trainer) -> bool:
        return self.enabled and super()._active(trainer)

    def _collect_batch(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, dataloader_idx: int
    ) -> None:
        if not self._active(trainer):
            return
        images, labels = batch[0], batch[1]
        pooled = block_features(pl_module.backbone, images)  # L x [B, D_l]
        self._widths = [p.shape[1] for p in pooled]
        features = torch.cat(pooled, dim=1)  # [B, sum D_l]
        self._collect(trainer, {"features": features, "labels": labels}, dataloader_idx)

    def evaluate(
        self, bank: Tensor, bank_labels: Tensor, query: Tensor, query_labels: Tensor
    ) -> dict[str, float]:
        bank_blocks = bank.split(self._widths, dim=1)  # L x [N, D_l]
        query_blocks = query.split(self._widths, dim=1)  # L x [Q, D_l]
        top1 = layerwise_knn_top1(
            bank_blocks,
            bank_labels,
            query_blocks,
            query_labels,
            self.k,
            self.temperature,
            self.chunk_size,
        )
        metrics = {layerwise_knn_top1_name(i): float(v) for i, v in enumerate(top1)}
        metrics[LAYERWISE_BEST_BLOCK] = float(top1.argmax())
        return metrics

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._collect_batch(trainer, pl_module, batch, dataloader_idx)

    on_test_batch_end = on_validation_batch_end
