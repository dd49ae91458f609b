"""RankMe (arXiv 2210.02885): known answers, a naive numpy reference, and the probe in a fit."""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ssl_biases.probes.rankme import (
    COLLAPSED_RANK,
    RankMeProbe,
    collapse_bar,
    evenly_spaced,
    rankme,
)


def with_singular_values(n: int, d: int, sigma: list[float], seed: int = 0) -> torch.Tensor:
    """``U diag(sigma) V^T`` ``[n, d]`` with random orthonormal ``U``, ``V``."""
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(n, len(sigma), generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(d, len(sigma), generator=g, dtype=torch.float64))
    return (u * torch.tensor(sigma, dtype=torch.float64)) @ v.T  # [n, d]


def naive_rankme(z: np.ndarray, eps: float = 1e-7) -> float:
    """The paper's Eq. 1 written out in numpy (float64)."""
    s = np.linalg.svd(z.astype(np.float64), compute_uv=False)
    p = s / s.sum() + eps
    return float(np.exp(-(p * np.log(p)).sum()))


@pytest.mark.parametrize("k", [1, 3, 10, 32])
def test_a_rank_k_embedding_with_equal_singular_values_gives_k(k: int) -> None:
    z = with_singular_values(500, 32, [2.5] * k, seed=k)
    assert rankme(z) == pytest.approx(k, rel=1e-4)
    if k > 1:  # unequal singular values: fewer effective dimensions than the rank
        assert rankme(with_singular_values(500, 32, [10.0] + [1.0] * (k - 1))) < k - 0.5


def test_an_isotropic_gaussian_is_close_to_full_rank() -> None:
    z = torch.randn(8192, 64, generator=torch.Generator().manual_seed(0))
    assert 0.97 * 64 < rankme(z) <= 64  # Marchenko-Pastur spread at N / D = 128: ~1 %
    assert rankme(z.T) == pytest.approx(rankme(z), rel=1e-5)  # min(N, D) bounds it either way


def test_rankme_matches_a_naive_numpy_reference() -> None:
    g = torch.Generator().manual_seed(1)
    z = torch.randn(300, 48, generator=g) @ torch.randn(48, 48, generator=g).tril()  # skewed
    z = z + 20.0  # a shared mean: RankMe does not centre, so it is one more direction
    assert rankme(z) == pytest.approx(naive_rankme(z.numpy()), rel=1e-4)
    assert rankme(z) < rankme(z - z.mean(0)) - 5.0  # centring would change the number
    assert rankme(torch.full((10, 8), 0.7)) == pytest.approx(1.0, abs=1e-4)  # constant: 1
    assert rankme(torch.zeros(5, 4)) == 1.0
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        rankme(torch.zeros(5))


def test_evenly_spaced_rows_and_the_collapse_bar() -> None:
    rows = torch.arange(10)[:, None]
    assert evenly_spaced(rows, 4).flatten().tolist() == [0, 3, 6, 9]
    assert evenly_spaced(rows, 100).shape[0] == 10
    assert collapse_bar(192, 0.03) == pytest.approx(5.76) and collapse_bar(32) == COLLAPSED_RANK
    assert collapse_bar(192, 0.0) == 0.0
    with pytest.raises(ValueError, match="warn_fraction"):
        RankMeProbe(warn_fraction=2.0)
    with pytest.raises(ValueError, match="max_samples"):
        RankMeProbe(max_samples=0)


# ------------------------------------------------------------------------------ in a fit
BANK = torch.randn(40, 8, generator=torch.Generator().manual_seed(2))


class Validated(pl.LightningModule):
    """Validation returns the bank's rows as features (``collapsed``: all equal: rank 1)."""

    def __init__(self, collapsed: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))
        self.collapsed = collapsed

    def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
        return (self.weight * batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx, dataloader_idx=0):  # noqa: ANN001, ANN201
        x, labels = batch
        features = torch.ones_like(x) if self.collapsed else x * self.weight.detach()
        return {"features": features, "labels": labels}

    def configure_optimizers(self):  # noqa: ANN201
        return torch.optim.SGD(self.parameters(), lr=0.0)


def fit(tmp_path: Path, collapsed: bool, epochs: int = 3) -> tuple[list[float], list[str]]:
    """Fits ``epochs`` epochs; returns the logged val/rankme values and the warnings."""
    data = TensorDataset(BANK, torch.arange(40) % 2)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        logger=CSVLogger(tmp_path, name="", version=""),
        callbacks=[RankMeProbe(max_samples=20)],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(Validated(collapsed), DataLoader(TensorDataset(BANK), 8), [
            DataLoader(data, 16), DataLoader(data, 16)
        ])  # fmt: skip
    with open(tmp_path / "metrics.csv", newline="") as handle:
        logged = [float(r["val/rankme"]) for r in csv.DictReader(handle) if r.get("val/rankme")]
    return logged, [str(w.message) for w in caught if "rankme" in str(w.message)]


def test_validation_logs_rankme_of_the_bank_every_time(tmp_path: Path) -> None:
    logged, warned = fit(tmp_path, collapsed=False)
    expected = naive_rankme(BANK[::2].numpy())  # 20 of the 40 bank rows, evenly spaced
    assert logged == pytest.approx([expected] * 3, rel=1e-4) and not warned
    assert 7.0 < expected <= 8.0


def test_a_collapsed_model_warns_once_with_what_to_try(tmp_path: Path) -> None:
    logged, warned = fit(tmp_path, collapsed=True)
    assert logged == pytest.approx([1.0] * 3, abs=1e-3)
    assert len(warned) == 1 and "val/rankme = 1.00 of at most 8" in warned[0]
    assert "lower learning rate" in warned[0] and "projector" in warned[0]
    assert math.isclose(collapse_bar(8), COLLAPSED_RANK)
