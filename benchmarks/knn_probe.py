"""Target 3: weighted kNN speed against the bare matrix multiply, and its peak memory.

Times ``knn_scores`` (k=20, T=0.07) on a ``[N, D]`` bank and ``[Q, D]`` queries (default
50,000 x 10,000 at width 192) against the bare ``query @ bank.T`` it needs, interleaved in the
same process and repeated, and prints the median ratio (target: at most 2). Then measures the
extra peak resident memory (``VmHWM`` of a fresh subprocess, after the inputs exist) of
``knn_scores``, of the previous row-chunked algorithm (a ``[chunk, N]`` similarity block) and
of the bare product, for several bank sizes: the first must stay flat as ``N`` grows.

Usage::

    .venv/bin/python benchmarks/knn_probe.py [--bank 50000 --queries 10000 --dim 192]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch
from torch import Tensor
from torch.nn import functional as F

from ssl_biases.probes.knn import knn_scores


@torch.no_grad()
def row_chunked_knn_scores(
    query: Tensor, bank: Tensor, bank_labels: Tensor, num_classes: int, k: int, chunk_size: int
) -> Tensor:
    """The previous algorithm: chunks of queries against the whole bank (``[c, N]`` blocks)."""
    bank = F.normalize(bank.float(), dim=1)  # [N, D]
    scores = []
    for start in range(0, query.shape[0], chunk_size):
        q = F.normalize(query[start : start + chunk_size].float(), dim=1)  # [c, D]
        sim, idx = (q @ bank.T).topk(k, dim=1)  # [c, k]
        votes = torch.zeros(q.shape[0], num_classes)
        votes.scatter_add_(1, bank_labels[idx], (sim / 0.07).exp())  # [c, C]
        scores.append(votes)
    return torch.cat(scores)


def make_inputs(num_bank: int, num_query: int, dim: int) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    bank = torch.randn(num_bank, dim, generator=g)  # [N, D]
    query = torch.randn(num_query, dim, generator=g)  # [Q, D]
    labels = torch.randint(0, 10, (num_bank,), generator=g)  # [N]
    return bank, query, labels


def high_water_mib() -> float:
    """Peak RSS of this process (``VmHWM``; unlike ``ru_maxrss`` it is not inherited on exec)."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def peak_mib(variant: str, num_bank: int, num_query: int, dim: int, chunk: int) -> float:
    """Extra peak RSS (MiB) of one call, measured in this (fresh) process."""
    bank, query, labels = make_inputs(num_bank, num_query, dim)
    before = high_water_mib()
    if variant == "knn_scores":
        knn_scores(query, bank, labels, 10, chunk_size=chunk)
    elif variant == "row_chunked":
        row_chunked_knn_scores(query, bank, labels, 10, 20, chunk)
    else:
        _ = query @ bank.T  # [Q, N]
    return high_water_mib() - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bank", type=int, default=50000)
    parser.add_argument("--queries", type=int, default=10000)
    parser.add_argument("--dim", type=int, default=192)
    parser.add_argument("--chunk-size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-queries", type=int, default=2048)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--peak", nargs=2, metavar=("VARIANT", "BANK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peak:
        variant, num_bank = args.peak[0], int(args.peak[1])
        print(peak_mib(variant, num_bank, args.memory_queries, args.dim, args.chunk_size))
        return

    bank, query, labels = make_inputs(args.bank, args.queries, args.dim)
    print(
        f"threads={torch.get_num_threads()} bank={args.bank} queries={args.queries} dim={args.dim}"
    )
    matmul, knn = [], []
    for _ in range(args.repeats):  # interleaved, so load changes hit both alike
        start = time.perf_counter()
        sim = query @ bank.T  # [Q, N]
        matmul.append(time.perf_counter() - start)
        del sim
        start = time.perf_counter()
        knn_scores(query, bank, labels, 10, chunk_size=args.chunk_size)
        knn.append(time.perf_counter() - start)
    ratios = [b / a for a, b in zip(matmul, knn)]
    print(
        f"bare matmul  s: {[round(t, 2) for t in matmul]}  median {statistics.median(matmul):.2f}"
    )
    print(f"knn_scores   s: {[round(t, 2) for t in knn]}  median {statistics.median(knn):.2f}")
    print(
        f"RATIO knn / matmul (median of paired runs): {statistics.median(ratios):.2f} (target <= 2)"
    )
    if args.skip_memory:
        return

    results: dict[str, dict[int, float]] = {}
    for variant in ("knn_scores", "row_chunked", "matmul"):
        for num_bank in (args.bank // 4, args.bank // 2, args.bank):
            command = [sys.executable, __file__, "--peak", variant, str(num_bank)]
            command += ["--memory-queries", str(args.memory_queries), "--dim", str(args.dim)]
            command += ["--chunk-size", str(args.chunk_size)]
            out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            results.setdefault(variant, {})[num_bank] = round(float(out.split()[-1]), 1)
    print(f"extra peak RSS in MiB, {args.memory_queries} queries, chunk {args.chunk_size}:")
    print(json.dumps(results, indent=1))
    small, large = results["knn_scores"][args.bank // 4], results["knn_scores"][args.bank]
    print(
        f"RATIO peak(N={args.bank}) / peak(N={args.bank // 4}) for knn_scores: "
        f"{large / max(small, 1.0):.2f} (flat = bounded by the chunk, not the bank)"
    )


if __name__ == "__main__":
    main()
