"""When the frozen-feature probes run during fit: every n-th validation, the final one, resume."""

import csv
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ssl_biases.probes.fewshot import FewShotProbe
from ssl_biases.probes.knn import KNNProbe
from ssl_biases.probes.linear import LinearProbe

STEPS_PER_EPOCH = 4


class Trainable(pl.LightningModule):
    """One weight to train; validation returns fixed separable features of 3 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))

    def training_step(self, batch, batch_idx):
        return (self.weight * batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        labels = batch[1]
        features = nn.functional.one_hot(labels, 3).float() + 0.1 * batch[0][:, :3]
        return {"features": features, "labels": labels}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def loaders() -> tuple[DataLoader, list[DataLoader]]:
    g = torch.Generator().manual_seed(0)
    train = TensorDataset(torch.randn(4 * STEPS_PER_EPOCH, 4, generator=g))
    bank = TensorDataset(torch.randn(30, 4, generator=g), torch.arange(30) % 3)
    queries = TensorDataset(torch.randn(15, 4, generator=g), torch.arange(15) % 3)
    return DataLoader(train, 4), [DataLoader(bank, 16), DataLoader(queries, 16)]


def fit_steps(tmp_path: Path, probes: list[pl.Callback], ckpt_path=None, **trainer) -> dict:
    """Fits, then returns metric name -> the indices (1-based) of the fit's validations that
    logged it, read from metrics.csv (the kNN probe runs at every validation)."""
    logger = CSVLogger(tmp_path, name="", version="")
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=logger,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=probes,
        **{"enable_checkpointing": False, **trainer},
    )
    train, val = loaders()
    trainer.fit(Trainable(), train, val, ckpt_path=ckpt_path)
    steps: dict[str, list[int]] = {}
    with open(tmp_path / "metrics.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            for key, value in row.items():
                if key.startswith("val/") and value:
                    steps.setdefault(key, []).append(int(row["step"]))
    validations = steps.pop("val/knn_top1")
    return {"validations": len(validations)} | {
        key: [validations.index(step) + 1 for step in logged] for key, logged in steps.items()
    }


def probes(every: int) -> list[pl.Callback]:
    return [
        KNNProbe(k=3),
        LinearProbe(every_n_validations=every),
        FewShotProbe(shots=[1], seeds=[0], every_n_validations=every),
    ]


def test_linear_and_fewshot_run_every_nth_validation_and_at_the_final_one(tmp_path):
    steps = fit_steps(tmp_path, probes(every=4), max_epochs=6)  # sanity check not counted
    assert steps["validations"] == 6
    assert steps["val/offline_linear_top1"] == [4, 6]  # the 4th, and the final
    assert steps["val/fewshot_1shot"] == [4, 6]
    assert steps["val/fewshot_1shot_std"] == [4, 6]  # names unchanged


def test_validations_within_an_epoch_are_counted_and_max_steps_ends_the_fit(tmp_path):
    steps = fit_steps(tmp_path / "a", probes(every=3), max_epochs=2, val_check_interval=1)
    assert steps["validations"] == 2 * STEPS_PER_EPOCH
    assert steps["val/offline_linear_top1"] == [3, 6, 8]  # 3rd, 6th, and the end of epoch 2
    steps = fit_steps(tmp_path / "b", probes(every=5), max_steps=6, val_check_interval=2)
    assert steps["validations"] == 3
    assert steps["val/fewshot_1shot"] == [3]  # only the final validation, at max_steps


def test_every_n_epochs_still_takes_precedence(tmp_path):
    probe = FewShotProbe(shots=[1], seeds=[0], every_n_epochs=2, every_n_validations=5)
    steps = fit_steps(tmp_path, [KNNProbe(k=3), probe], max_epochs=5)
    assert steps["val/fewshot_1shot"] == [2, 4, 5]  # epochs 2, 4 and the last
    with pytest.raises(ValueError, match="every_n_validations must be >= 1"):
        LinearProbe(every_n_validations=0)
    with pytest.raises(ValueError, match="both are null"):
        KNNProbe(every_n_epochs=None)


def test_a_resumed_fit_keeps_counting_validations(tmp_path):
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    fit_steps(tmp_path / "first", [*probes(every=4), checkpoint], max_epochs=3,
              enable_checkpointing=True)  # fmt: skip
    last = tmp_path / "ckpt" / "last.ckpt"
    assert torch.load(last, weights_only=False)["callbacks"]["LinearProbe"] == {"validations": 3}
    steps = fit_steps(tmp_path / "resumed", probes(every=4), ckpt_path=last, max_epochs=6)
    assert steps["validations"] == 3  # epochs 4-6
    assert steps["val/offline_linear_top1"] == [1, 3]  # the fit's 4th validation, the final
