import pytest
import torch

from ssl_biases.probes.knn import KNNProbe, knn_scores, topk_accuracy


def naive_knn_scores(query, bank, labels, num_classes, k, t):
    scores = torch.zeros(len(query), num_classes)
    bank = bank / bank.norm(dim=1, keepdim=True)
    for i, q in enumerate(query):
        q = q / q.norm()
        sims = [(float(q @ b), int(y)) for b, y in zip(bank, labels)]
        for sim, y in sorted(sims, reverse=True)[:k]:
            scores[i, y] += torch.exp(torch.tensor(sim / t))
    return scores


def test_knn_matches_naive_reference_and_chunking_changes_nothing():
    g = torch.Generator().manual_seed(0)
    bank, query = torch.randn(50, 8, generator=g), torch.randn(13, 8, generator=g)
    labels = torch.randint(0, 3, (50,), generator=g)
    expected = naive_knn_scores(query, bank, labels, 3, k=5, t=0.1)
    for chunk in (1, 4, 1000):
        got = knn_scores(query, bank, labels, 3, k=5, temperature=0.1, chunk_size=chunk)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_knn_on_separated_clusters_is_perfect_and_top5_bounds_top1():
    centres = torch.eye(4) * 10
    bank = centres.repeat_interleave(5, 0) + torch.randn(20, 4) * 0.1
    labels = torch.arange(4).repeat_interleave(5)
    probe = KNNProbe(k=3)
    metrics = probe.evaluate(bank, labels, centres + 0.05, torch.arange(4))
    assert metrics == {"knn_top1": 1.0, "knn_top5": 1.0}
    scores = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]])
    assert topk_accuracy(scores, torch.tensor([0, 0]), 1) == 0.5
    assert topk_accuracy(scores, torch.tensor([0, 0]), 2) == 1.0


# --- issue 7 (performance): the bank is scanned in blocks -----------------------------------
def test_knn_bank_blocks_change_nothing_and_bad_chunks_fail():
    g = torch.Generator().manual_seed(1)
    bank, query = torch.randn(300, 16, generator=g), torch.randn(40, 16, generator=g)
    labels = torch.randint(0, 4, (300,), generator=g)
    expected = naive_knn_scores(query, bank, labels, 4, k=7, t=0.1)
    for chunk, bank_chunk in ((1, 1), (7, 3), (16, 64), (1000, 10_000)):
        got = knn_scores(query, bank, labels, 4, 7, 0.1, chunk, bank_chunk)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="chunk sizes"):
        knn_scores(query, bank, labels, 4, bank_chunk_size=0)


# --- end issue 7 -------------------------------------------------------------------------------
