from pathlib import Path

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


# --- issue 14 (real scale): a named second probe, lightly's k=200, T=0.1 -----------------------
def _validate_with(probes: list, bank, bank_labels, query, query_labels) -> dict[str, float]:
    import lightning.pytorch as pl
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from helpers import FrozenModule

    loaders = [
        DataLoader(TensorDataset(bank, bank_labels), batch_size=64),
        DataLoader(TensorDataset(query, query_labels), batch_size=16),
    ]
    trainer = pl.Trainer(
        accelerator="cpu",
        callbacks=probes,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.validate(FrozenModule(nn.Identity()), loaders, verbose=False)
    return {key: float(value) for key, value in trainer.callback_metrics.items()}


def test_named_knn_probe_logs_beside_the_default_with_its_own_k_and_temperature():
    # noisy clusters of unequal sizes: 200 neighbours favour the big classes more than 20 do
    g = torch.Generator().manual_seed(3)
    sizes = torch.tensor([150, 90, 40, 20])
    bank_labels = torch.arange(4).repeat_interleave(sizes)  # [300]
    query_labels = torch.arange(4).repeat(10)  # [40]
    centres = torch.randn(4, 8, generator=g)
    bank = centres[bank_labels] + torch.randn(300, 8, generator=g)  # [300, 8]
    query = centres[query_labels] + torch.randn(40, 8, generator=g)  # [40, 8]
    metrics = _validate_with(
        [KNNProbe(), KNNProbe(k=200, temperature=0.1, name="knn200")],
        bank,
        bank_labels,
        query,
        query_labels,
    )
    for name, k, t in (("knn", 20, 0.07), ("knn200", 200, 0.1)):
        scores = naive_knn_scores(query, bank, bank_labels, 4, k=k, t=t)
        expected = (scores.argmax(dim=1) == query_labels).float().mean().item()
        assert metrics[f"val/{name}_top1"] == pytest.approx(expected, abs=1e-6)
    assert metrics["val/knn200_top5"] == 1.0  # 4 classes: always in the top 5
    assert metrics["val/knn_top1"] != metrics["val/knn200_top1"]  # two probes, two answers
    with pytest.raises(ValueError, match="metric prefix"):
        KNNProbe(name="val/knn")


# --- end issue 14 ------------------------------------------------------------------------------


def test_a_second_knn_probe_from_trainer_callbacks_runs_beside_the_clis_own(tmp_path):
    import json

    from lightning.pytorch.callbacks import LearningRateMonitor

    from ssl_biases.cli import cli_main

    from helpers import read_metrics, tiny_args, write_tiny_backbone

    callbacks = [
        {"class_path": "lightning.pytorch.callbacks.LearningRateMonitor"},
        {
            "class_path": "ssl_biases.probes.knn.KNNProbe",
            "init_args": {"k": 200, "temperature": 0.1, "name": "knn200"},
        },
    ]
    cli = cli_main(
        [
            "validate",
            *tiny_args(write_tiny_backbone(tmp_path)),
            f"--trainer.default_root_dir={tmp_path}",
            f"--trainer.callbacks={json.dumps(callbacks)}",
        ]
    )
    probes = [cb for cb in cli.trainer.callbacks if isinstance(cb, KNNProbe)]
    assert sorted((p.name, p.k) for p in probes) == [("knn", 20), ("knn200", 200)]
    assert any(isinstance(cb, LearningRateMonitor) for cb in cli.trainer.callbacks)
    (row,) = [r for r in read_metrics(Path(cli.trainer.log_dir)) if r.get("val/knn200_top1")]
    assert 0.0 <= float(row["val/knn200_top1"]) <= 1.0 and row["val/knn_top1"]
