"""Argument lists and readers shared by the end-to-end tests (importable as ``helpers``)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"

TINY_BACKBONE_YAML = """
model:
  init_args:
    backbone:
      class_path: ssl_biases.backbones.IsotropicNet
      init_args: {width: 32, depth: 2, num_heads: 2, patch_size: 4, mlp_ratio: 2.0}
"""


def write_tiny_backbone(folder: Path) -> str:
    """Writes a YAML that sets a tiny attention ``IsotropicNet`` backbone; returns its path."""
    path = folder / "tiny_backbone.yaml"
    path.write_text(TINY_BACKBONE_YAML)
    return str(path)


def tiny_args(backbone_config: str, *extra: str) -> list[str]:
    """SimCLR on 128 generated shapes with the given backbone YAML; ``extra`` overrides."""
    return [
        "--config", str(CONFIGS / "method/simclr.yaml"),
        "--config", backbone_config,
        "--config", str(CONFIGS / "data/shapes.yaml"),
        "--data.shapes_size", "128",
        "--data.batch_size", "32",
        "--data.num_workers", "0",
        "--data.max_probe_train_samples", "64",
        "--trainer.accelerator", "cpu",
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
        "--trainer.log_every_n_steps", "1",
        *extra,
    ]  # fmt: skip


TOTAL_STEPS = 12  # fit_args: 2 epochs of shapes_size 48 / batch_size 8

HEADS = {  # tiny heads so a step costs milliseconds
    "simclr": ["--model.init_args.projection_hidden_dim=64", "--model.init_args.projection_dim=32"],
    "byol": [
        "--model.init_args.projection_hidden_dim=64",
        "--model.init_args.projection_dim=32",
        "--model.init_args.prediction_hidden_dim=64",
    ],
    "dino": [
        "--model.init_args.hidden_dim=64",
        "--model.init_args.bottleneck_dim=32",
        "--model.init_args.output_dim=64",
        "--model.init_args.n_local_views=2",
    ],
    "mocov3": [
        "--model.init_args.projection_hidden_dim=64",
        "--model.init_args.projection_dim=32",
    ],
    "mae": [
        "--model.init_args.decoder_dim=32",
        "--model.init_args.decoder_depth=1",
        "--model.init_args.decoder_num_heads=2",
    ],
    "ijepa": [
        "--model.init_args.predictor_dim=32",
        "--model.init_args.predictor_depth=1",
        "--model.init_args.predictor_num_heads=2",
    ],
    "ibot": [
        "--model.init_args.hidden_dim=64",
        "--model.init_args.bottleneck_dim=32",
        "--model.init_args.output_dim=64",
    ],
    "lejepa": [
        "--model.init_args.projection_hidden_dim=64",
        "--model.init_args.projection_dim=32",
        "--model.init_args.sigreg_num_vectors=64",
    ],
    "swav": [  # a queue of 2 batches, used from the 3rd step on (a resume at step 2 needs it)
        "--model.init_args.projection_hidden_dim=64",
        "--model.init_args.projection_dim=32",
        "--model.init_args.n_prototypes=16",
        "--model.init_args.queue_length=16",
        "--model.init_args.queue_start_fraction=0.0",
    ],
    "emp_ssl": [
        "--model.init_args.projection_hidden_dim=64",
        "--model.init_args.projection_dim=32",
        "--model.init_args.n_patches=4",
    ],
}


def fit_args(method: str, folder: Path, *extra: str) -> list[str]:
    """A ``fit`` of ``TOTAL_STEPS`` steps at 16 px, checkpointing every 2 steps, no validation."""
    backbone = folder / "backbone.yaml"
    backbone.write_text(
        "model: {init_args: {backbone: {class_path: ssl_biases.backbones.IsotropicNet, "
        "init_args: {width: 32, depth: 1, num_heads: 2, patch_size: 4}}}}\n"
    )
    return [
        "fit",
        f"--config={CONFIGS / 'method' / f'{method}.yaml'}",
        f"--config={backbone}",
        f"--config={CONFIGS / 'data' / 'shapes.yaml'}",
        *HEADS[method],
        "--data.shapes_size=48",
        "--data.image_size=16",
        "--data.batch_size=8",
        "--data.num_workers=0",
        "--data.max_probe_train_samples=16",
        "--trainer.max_epochs=2",
        "--trainer.limit_val_batches=0",
        "--trainer.num_sanity_val_steps=0",
        "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--checkpoint.monitor=null",
        "--checkpoint.every_n_train_steps=2",
        *extra,
    ]


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    """The rows of a run's ``metrics.csv``."""
    with open(run_dir / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def column(rows: list[dict[str, str]], key: str) -> list[float]:
    """The logged values of one metric, in order."""
    return [float(r[key]) for r in rows if r.get(key)]


def train_losses(run_dir: Path) -> dict[int, list[float]]:
    """``step -> [train/loss, ...]`` from ``metrics.csv`` (a step twice if it was rerun)."""
    losses: dict[int, list[float]] = {}
    for row in read_metrics(run_dir):
        if row.get("train/loss"):
            losses.setdefault(int(row["step"]), []).append(float(row["train/loss"]))
    return losses


class FrozenModule(pl.LightningModule):
    """Validation/test steps that return ``{"features", "labels"}`` of a fixed backbone."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def _step(self, batch: Any) -> dict[str, Any]:
        images, labels = batch
        return {"features": self.backbone(images), "labels": labels}

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict:
        return self._step(batch)

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict:
        return self._step(batch)
