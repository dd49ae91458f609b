import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ssl_biases.probes.fewshot import FewShotProbe

from helpers import FrozenModule


class Separable(nn.Module):
    """Embeds an image as 5 * one-hot(label) + noise: linearly separable features."""

    num_features = 6

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        label = x[:, 0].round().long()
        return 5 * nn.functional.one_hot(label, 3).float().repeat(1, 2) + 0.1 * x[:, 1:7]


def split(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    x = torch.randn(n, 8, generator=g)
    x[:, 0] = labels.float()
    return TensorDataset(x, labels)


def run(stage: str, probe: FewShotProbe, bank_size: int = 90) -> dict[str, float]:
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[probe],
    )
    loaders = [DataLoader(split(bank_size, 0), 32), DataLoader(split(60, 1), 32)]
    getattr(trainer, stage)(FrozenModule(Separable()), dataloaders=loaders, verbose=False)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


def test_probe_logs_the_promised_names_in_test_and_val():
    metrics = run("test", FewShotProbe(seeds=[0, 1]))
    for k in (1, 5, 10, 25):
        assert metrics[f"test/fewshot_{k}shot"] == 1.0  # separable features: 100%
        assert metrics[f"test/fewshot_{k}shot_std"] == 0.0
    metrics = run("validate", FewShotProbe(shots=[2], seeds=[0]))
    assert set(metrics) == {"val/fewshot_2shot", "val/fewshot_2shot_std"}


def test_shots_beyond_the_rarest_class_are_skipped_with_a_warning():
    with pytest.warns(UserWarning, match=r"shots \[25\] are skipped"):
        metrics = run("test", FewShotProbe(shots=[1, 25], seeds=[0]), bank_size=30)  # 10 a class
    assert "test/fewshot_1shot" in metrics and "test/fewshot_25shot" not in metrics


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="shots"):
        FewShotProbe(shots=[0])
    with pytest.raises(ValueError, match="l2_reg"):
        FewShotProbe(l2_reg=0.0)
