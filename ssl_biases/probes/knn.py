"""Weighted k-nearest-neighbour probe (Wu et al. arXiv 1805.01978; DINO arXiv 2104.14294).

Cosine similarity between L2-normalised features; the k nearest bank items vote for their
label with weight ``exp(sim / T)``. Defaults k=20, T=0.07 as in DINO and Walmer et al.; lightly's
CIFAR-10 benchmarks use k=200, T=0.1 (a second probe with ``name="knn200"`` logs them beside).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from ssl_biases.metric_names import KNN, knn_top1_name, knn_top5_name
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
    bank_chunk_size: int = 8192,
) -> Tensor:
    """Class scores of a weighted kNN vote, computed in blocks of bank items and queries.

    The bank is scanned in blocks of ``bank_chunk_size`` items (each normalised once); every
    chunk of ``chunk_size`` queries takes its top ``k`` in the block, merged into a running
    top ``k`` per query. No ``[Q, N]`` or ``[chunk, N]`` similarity matrix is ever built: peak
    extra memory is ``O(chunk_size * bank_chunk_size + Q * (D + k))``, whatever the bank size ``N``
    (benchmarks/knn_probe.py measures it). Blocks much narrower than a few thousand items make
    ``topk`` slow on CPU, hence the separate bank block size.

    Args:
        query: ``[Q, D]`` query features (normalised here).
        bank: ``[N, D]`` bank features (normalised here, one block at a time).
        bank_labels: ``[N]`` integer labels in ``[0, num_classes)``.
        num_classes: Number of classes.
        k: Neighbours per query (clipped to the bank size).
        temperature: Softmax temperature of the vote weights.
        chunk_size: Queries per chunk.
        bank_chunk_size: Bank items per block.

    Returns:
        ``[Q, num_classes]`` summed vote weights.
    """
    if bank.shape[0] == 0:
        raise ValueError("the kNN bank is empty: the probe train split has no images")
    if chunk_size < 1 or bank_chunk_size < 1:
        raise ValueError(f"chunk sizes must be >= 1, got {chunk_size} and {bank_chunk_size}")
    num_bank, num_query = bank.shape[0], query.shape[0]
    k = min(k, num_bank)
    query = F.normalize(query.float(), dim=1)  # [Q, D], once (the size of the input)
    best_sim = query.new_empty(num_query, 0)  # [Q, <=k]
    best_idx = torch.empty(num_query, 0, dtype=torch.long, device=query.device)  # [Q, <=k]
    # one reused similarity buffer: fresh [c, b] allocations cost page faults on CPU
    buffer = query.new_empty(
        min(chunk_size, num_query) * min(bank_chunk_size, num_bank), dtype=torch.float32
    )
    for bank_start in range(0, num_bank, bank_chunk_size):
        block = bank[bank_start : bank_start + bank_chunk_size].float()  # [b, D]
        block = F.normalize(block, dim=1).T.contiguous()  # [D, b], normalised once per block
        block_sim, block_idx = [], []
        for start in range(0, num_query, chunk_size):
            q = query[start : start + chunk_size]  # [c, D]
            sim = buffer[: q.shape[0] * block.shape[1]].view(q.shape[0], block.shape[1])
            torch.mm(q, block, out=sim)  # [c, b]
            sim, pos = sim.topk(min(k, block.shape[1]), dim=1, sorted=False)  # [c, <=k]
            block_sim.append(sim)
            block_idx.append(pos + bank_start)
        # merge with the best so far: [Q, <=2k] values, never a [Q, N] or [c, N] matrix
        sim = torch.cat([best_sim, torch.cat(block_sim)], dim=1)  # [Q, <=2k]
        idx = torch.cat([best_idx, torch.cat(block_idx)], dim=1)  # [Q, <=2k]
        best_sim, pos = sim.topk(min(k, sim.shape[1]), dim=1, sorted=False)  # [Q, <=k]
        best_idx = idx.gather(1, pos)  # [Q, <=k]
    weights = (best_sim / temperature).exp()  # [Q, k]
    scores = torch.zeros(num_query, num_classes, device=query.device)  # [Q, C]
    return scores.scatter_add_(1, bank_labels.to(best_idx.device)[best_idx], weights)


def topk_accuracy(scores: Tensor, labels: Tensor, k: int) -> float:
    """Fraction of rows whose label is among the ``k`` highest scores."""
    k = min(k, scores.shape[1])
    hits = (scores.topk(k, dim=1).indices == labels[:, None]).any(dim=1)
    return hits.float().mean().item()


class KNNProbe(FrozenFeatureProbe):
    """Logs ``<stage>/<name>_top1`` and ``<stage>/<name>_top5`` of a weighted kNN on frozen
    features (``val/knn_top1`` by default).

    Args:
        k: Neighbours per query.
        temperature: Vote temperature.
        chunk_size: Queries per chunk (bounds memory with ``bank_chunk_size``).
        every_n_epochs: Evaluate at every n-th validation epoch.
        bank_chunk_size: Bank items per similarity block.
        name: Prefix of the logged metrics, so that a second probe with other ``k`` and
            ``temperature`` (e.g. ``knn200``: k=200, T=0.1, lightly's benchmarks) logs beside
            the first. Any ``trainer.callbacks`` entry can add one.
    """

    def __init__(
        self,
        k: int = 20,
        temperature: float = 0.07,
        chunk_size: int = 1024,
        every_n_epochs: int = 1,
        bank_chunk_size: int = 8192,
        name: str = KNN,
    ) -> None:
        super().__init__(every_n_epochs)
        if not name or "/" in name:
            raise ValueError(f"name must be a non-empty metric prefix without '/', got {name!r}")
        self.name = name
        self.k = k
        self.temperature = temperature
        self.chunk_size = chunk_size
        self.bank_chunk_size = bank_chunk_size

    @property
    def state_key(self) -> str:
        """``KNNProbe`` for the default name (the key of earlier checkpoints), else one per
        name, so that Lightning saves two probes' validation counts apart."""
        if self.name == KNN:
            return super().state_key
        return self._generate_state_key(name=self.name)

    def evaluate(
        self, bank: Tensor, bank_labels: Tensor, query: Tensor, query_labels: Tensor
    ) -> dict[str, float]:
        num_classes = int(max(bank_labels.max(), query_labels.max())) + 1
        scores = knn_scores(
            query,
            bank,
            bank_labels,
            num_classes,
            self.k,
            self.temperature,
            self.chunk_size,
            self.bank_chunk_size,
        )
        return {
            knn_top1_name(self.name): topk_accuracy(scores, query_labels, 1),
            knn_top5_name(self.name): topk_accuracy(scores, query_labels, 5),
        }
