"""The `ssl-biases` command: a LightningCLI for fit/validate/test/predict plus tool commands.

``ssl-biases fit --config configs/method/simclr.yaml --config configs/backbone/vit_tiny.yaml
--config configs/data/cifar10.yaml --data.root PATH`` stacks configs; any knob can be
overridden on the command line. Every run directory (``runs/<name>/version_<n>/``) holds the
resolved ``config.yaml``, ``checkpoints/`` (``last.ckpt`` and the best by ``val/knn_top1``),
TensorBoard events and ``metrics.csv``.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from jsonargparse import lazy_instance
from lightning.pytorch.callbacks import (
    Callback,
    LearningRateMonitor,
    ModelCheckpoint,
    RichProgressBar,
)
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from ssl_biases.analysis.tensorboard import TensorBoardSummaries
from ssl_biases.data.datamodule import SSLDataModule
from ssl_biases.export import CHECKPOINT_KEY as BACKBONE_CONFIG_KEY
from ssl_biases.methods.base import SSLMethod
from ssl_biases.probes.embeddings import EmbeddingWriter
from ssl_biases.probes.fewshot import FewShotProbe  # issue 5
from ssl_biases.probes.knn import KNNProbe
from ssl_biases.probes.layerwise import LayerwiseKNNProbe  # issue 5
from ssl_biases.probes.linear import LinearProbe

# Commands beside Lightning's fit/validate/test/predict: name -> "module:function(argv)".
TOOL_COMMANDS: dict[str, str] = {
    "backbones": "ssl_biases.backbones.summary:main",
    "export": "ssl_biases.export:main",
    "analyze": "ssl_biases.analysis.report:main",  # issue 5
}


class ValidationTracker(pl.Callback):
    """Remembers the global step of the last validation of a fit."""

    def __init__(self) -> None:
        self.step = -1

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.step = trainer.global_step


# --- issue 10 (export): the checkpoint says how its backbone was built --------------------
class BackboneConfigInCheckpoint(pl.Callback):
    """Stores ``backbone.config`` (``{"class_path", "init_args"}``) in every checkpoint, so
    ``ssl-biases export`` works on a checkpoint copied away from its run directory."""

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        config = getattr(getattr(pl_module, "backbone", None), "config", None)
        if config:
            checkpoint[BACKBONE_CONFIG_KEY] = config


# --- end issue 10 -------------------------------------------------------------------------


class SSLBiasesCLI(LightningCLI):
    """LightningCLI with the project's defaults: probes, checkpoints, TensorBoard + CSV."""

    def __init__(self, args: list[str] | None = None, run: bool = True) -> None:
        super().__init__(
            SSLMethod,
            SSLDataModule,
            subclass_mode_model=True,
            seed_everything_default=0,
            trainer_defaults={
                "logger": lazy_instance(
                    TensorBoardLogger, save_dir="runs", name="ssl", default_hp_metric=False
                ),
                "callbacks": [lazy_instance(LearningRateMonitor, logging_interval="step")],
                "max_epochs": 100,
            },
            args=args,
            run=run,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(KNNProbe, "knn")
        parser.add_lightning_class_args(LinearProbe, "linear_probe")
        parser.add_lightning_class_args(FewShotProbe, "fewshot")  # issue 5: every 10 epochs
        parser.add_lightning_class_args(LayerwiseKNNProbe, "layerwise")  # issue 5: opt-in
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_lightning_class_args(TensorBoardSummaries, "tensorboard")  # issue 10
        parser.add_lightning_class_args(EmbeddingWriter, "embeddings")  # issue 10: predict
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/knn_top1",
                "checkpoint.mode": "max",
                "checkpoint.save_last": True,
                "checkpoint.filename": "best-epoch{epoch}-step{step}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        # The image size is stated once, in the data config.
        parser.link_arguments("data.image_size", "model.init_args.backbone.init_args.image_size")
        parser.link_arguments(
            "data.num_classes", "model.init_args.num_classes", apply_on="instantiate"
        )

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> pl.Trainer:
        if config.get("enable_progress_bar") is not False:
            callbacks = [*callbacks, RichProgressBar()]
        callbacks = [*callbacks, BackboneConfigInCheckpoint()]  # issue 10
        return super()._instantiate_trainer(config, callbacks)

    # --- issue 10 (export): remember the backbone's class_path/init_args -----------------
    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        config = self.config[self.subcommand] if self.subcommand else self.config
        backbone_config = config.get("model.init_args.backbone")
        backbone = getattr(self.model, "backbone", None)
        if backbone is not None and backbone_config is not None and not hasattr(backbone, "config"):
            as_dict = backbone_config.as_dict() if hasattr(backbone_config, "as_dict") else None
            if isinstance(as_dict, dict) and "class_path" in as_dict:
                backbone.config = {
                    "class_path": as_dict["class_path"],
                    "init_args": as_dict.get("init_args", {}),
                }

    # --- end issue 10 ---------------------------------------------------------------------

    def _add_csv_logger(self) -> None:
        """Writes ``metrics.csv`` into the same run directory as the TensorBoard events."""
        trainer = self.trainer
        loggers = list(trainer.loggers)
        if loggers and not any(isinstance(lg, CSVLogger) for lg in loggers):
            loggers.append(CSVLogger(save_dir=loggers[0].log_dir, name="", version=""))
            trainer.loggers = loggers
        trainer.callbacks.append(ValidationTracker())

    def before_fit(self) -> None:
        self._add_csv_logger()

    def before_validate(self) -> None:
        self._add_csv_logger()

    def before_test(self) -> None:
        self._add_csv_logger()

    def after_fit(self) -> None:
        """Save ``last.ckpt`` and validate at the final step, even after a mid-epoch stop."""
        trainer = self.trainer
        if trainer.interrupted:
            return
        checkpoint = trainer.checkpoint_callback
        if checkpoint is not None and checkpoint.dirpath is not None:
            trainer.save_checkpoint(str(Path(checkpoint.dirpath) / "last.ckpt"))
        tracker = next(cb for cb in trainer.callbacks if isinstance(cb, ValidationTracker))
        if tracker.step != trainer.global_step:
            trainer.validate(self.model, datamodule=self.datamodule, verbose=False)
        if trainer.is_global_zero:
            print(f"Run directory: {trainer.log_dir}")


def cli_main(args: list[str] | None = None) -> SSLBiasesCLI:
    """Runs the Lightning subcommands (``fit``, ``validate``, ``test``, ``predict``)."""
    return SSLBiasesCLI(args=args)


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``ssl-biases`` console script."""
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] in TOOL_COMMANDS:
        module_name, function_name = TOOL_COMMANDS[argv[0]].split(":")
        getattr(importlib.import_module(module_name), function_name)(argv[1:])
        return
    cli_main(args)  # None: LightningCLI reads sys.argv itself


if __name__ == "__main__":
    main()
