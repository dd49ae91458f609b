"""Weighted k-nearest-neighbour probe (Wu et al. arXiv 1805.01978; DINO arXiv 2104.14294).

Cosine similarity between L2-normalised features; the k nearest bank items vote for their
label with weight ``exp(sim / T)``. Defaults k=20, T=0.07 as in DINO and Walmer et al.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from ssl_biases.probes.features import FrozenFeatureProbe


@torch.no_grad()
def knn_scores(
    query: Tensor,
    bank: Tensor,
    bank_labels: Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk_size: int = 1024,
) -> Tensor:
    """Class scores of a weighted kNN vote, computed in blocks of queries and bank items.

    For each chunk of queries the bank is scanned in chunks too, keeping a running top-k
    (merge of the current best ``k`` with the new block), so no ``[chunk, N]`` similarity
    matrix is ever built: peak extra memory is ``O(chunk_size * (chunk_size + k))``, whatever
    the bank size ``N`` (benchmarks/knn_probe.py measures it).

    Args:
        query: ``[Q, D]`` query features (normalised here).
        bank: ``[N, D]`` bank features (normalised here, one chunk at a time).
        bank_labels: ``[N]`` integer labels in ``[0, num_classes)``.
        num_classes: Number of classes.
        k: Neighbours per query (clipped to the bank size).
        temperature: Softmax temperature of the vote weights.
        chunk_size: Queries per chunk and bank items per block.

    Returns:
        ``[Q, num_classes]`` summed vote weights.
    """
    if bank.shape[0] == 0:
        raise ValueError("the kNN bank is empty: the probe train split has no images")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    num_bank = bank.shape[0]
    k = min(k, num_bank)
    bank_labels = bank_labels.to(bank.device)
    scores = query.new_zeros(query.shape[0], num_classes, dtype=torch.float32)  # [Q, C]
    for start in range(0, query.shape[0], chunk_size):
        q = F.normalize(query[start : start + chunk_size].float(), dim=1)  # [c, D]
        best_sim = q.new_empty(q.shape[0], 0)  # [c, <=k]
        best_idx = torch.empty(q.shape[0], 0, dtype=torch.long, device=q.device)  # [c, <=k]
        for bank_start in range(0, num_bank, chunk_size):
            block = F.normalize(bank[bank_start : bank_start + chunk_size].float(), dim=1)  # [b, D]
            sim = torch.cat([best_sim, q @ block.T], dim=1)  # [c, <=k + b]
            ids = torch.arange(bank_start, bank_start + block.shape[0], device=q.device)  # [b]
            idx = torch.cat([best_idx, ids.expand(q.shape[0], -1)], dim=1)  # [c, <=k + b]
            best_sim, pos = sim.topk(min(k, sim.shape[1]), dim=1, sorted=False)  # [c, k]
            best_idx = idx.gather(1, pos)  # [c, k]
        weights = (best_sim / temperature).exp()  # [c, k]
        scores[start : start + q.shape[0]].scatter_add_(1, bank_labels[best_idx], weights)
    return scores


def topk_accuracy(scores: Tensor, labels: Tensor, k: int) -> float:
    """Fraction of rows whose label is among the ``k`` highest scores."""
    k = min(k, scores.shape[1])
    hits = (scores.topk(k, dim=1).indices == labels[:, None]).any(dim=1)
    return hits.float().mean().item()


class KNNProbe(FrozenFeatureProbe):
    """Logs ``<stage>/knn_top1`` and ``<stage>/knn_top5`` of a weighted kNN on frozen features.

    Args:
        k: Neighbours per query.
        temperature: Vote temperature.
        chunk_size: Queries per chunk and bank items per block (bounds memory).
        every_n_epochs: Evaluate at every n-th validation epoch.
    """

    def __init__(
        self,
        k: int = 20,
        temperature: float = 0.07,
        chunk_size: int = 1024,
        every_n_epochs: int = 1,
    ) -> None:
        super().__init__(every_n_epochs)
        self.k = k
        self.temperature = temperature
        self.chunk_size = chunk_size

    def evaluate(
        self, bank: Tensor, bank_labels: Tensor, query: Tensor, query_labels: Tensor
    ) -> dict[str, float]:
        num_classes = int(max(bank_labels.max(), query_labels.max())) + 1
        scores = knn_scores(
            query, bank, bank_labels, num_classes, self.k, self.temperature, self.chunk_size
        )
        return {
            "knn_top1": topk_accuracy(scores, query_labels, 1),
            "knn_top5": topk_accuracy(scores, query_labels, 5),
        }
