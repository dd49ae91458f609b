"""The `ssl-biases` command: one LightningCLI parser for fit/validate/test/predict and the tool
commands analyze/export/sweep/backbones (``ssl_biases.cli.tools``).

``ssl-biases fit --config configs/method/simclr.yaml --config configs/backbone/vit_tiny.yaml
--config configs/data/cifar10.yaml --data.root PATH`` stacks configs; any knob can be
overridden on the command line. Every run directory (``runs/<name>/version_<n>/``) holds the
resolved ``config.yaml``, ``checkpoints/`` (``last.ckpt`` and the best by ``val/knn_top1``),
TensorBoard events, ``metrics.csv`` and ``status.json`` (the run's life: ``ssl_biases.run``).
The logger's ``save_dir`` defaults to ``--trainer.default_root_dir``, else ``runs``.
A user error exits 2 with its message (``ssl_biases.cli.errors``).
"""

from __future__ import annotations

import sys
from typing import Any

import lightning.pytorch as pl
from jsonargparse import lazy_instance
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger

from ssl_biases.analysis.tensorboard import TensorBoardSummaries
from ssl_biases.cli.errors import DEBUG_ENV, exit_on_user_error
from ssl_biases.cli.parser import SSLBiasesArgumentParser
from ssl_biases.cli.tools import TOOL_COMMANDS, add_tool_commands, run_tool_command
from ssl_biases.data.datamodule import SSLDataModule
from ssl_biases.methods.base import SSLMethod
from ssl_biases.methods.budget import TimeBudget, time_budget_trainer_args
from ssl_biases.methods.metric_names import VAL_KNN_TOP1
from ssl_biases.probes.embeddings import EmbeddingWriter
from ssl_biases.probes.fewshot import FewShotProbe
from ssl_biases.probes.knn import KNNProbe
from ssl_biases.probes.layerwise import LayerwiseKNNProbe
from ssl_biases.probes.linear import LinearProbe
from ssl_biases.run.callbacks import (
    equip_trainer,
    finish_fit,
    release_process_group,
    remember_backbone_config,
    run_callbacks,
    trainer_arguments,
)
from ssl_biases.run.faults import LastCheckpoint, NaNGuard
from ssl_biases.run.resume import check_ckpt_path, check_resume_checkpoint, resume_into_run_dir
from ssl_biases.run.run_dir import set_default_save_dir

__all__ = ["DEBUG_ENV", "SSLBiasesCLI", "cli_main", "main"]


class _ToolCommandRan(Exception):  # noqa: N818 (a signal, not an error)
    """Ends LightningCLI's __init__ once a tool command ran (from the public parse_arguments
    hook: LightningCLI would seed, build a model and trainer and run a Trainer method)."""


class SSLBiasesCLI(LightningCLI):
    """LightningCLI with the project's defaults: probes, checkpoints, TensorBoard + CSV, and
    the run's life (``ssl_biases.run``: status, resume, faults) on every trainer."""

    def __init__(self, args: list[str] | None = None, run: bool = True) -> None:
        try:
            super().__init__(
                SSLMethod,
                SSLDataModule,
                subclass_mode_model=True,
                seed_everything_default=0,
                parser_class=SSLBiasesArgumentParser,
                trainer_defaults={
                    # save_dir "" (unset): --trainer.default_root_dir, else runs
                    "logger": lazy_instance(
                        TensorBoardLogger, save_dir="", name="ssl", default_hp_metric=False
                    ),
                    "callbacks": [  # added to every trainer, after the probes
                        TimeBudget(),  # schedules sized to max_time (methods/budget.py)
                        *run_callbacks(),
                        lazy_instance(LearningRateMonitor, logging_interval="step"),
                    ],
                    "max_epochs": None,  # 100 unless max_time alone bounds it (methods/budget.py)
                },
                args=args,
                run=run,
            )
        except _ToolCommandRan:  # LightningCLI has nothing left to run
            pass

    def setup_parser(
        self, add_subcommands: bool, main_kwargs: dict[str, Any], subparser_kwargs: dict[str, Any]
    ) -> None:
        """Lightning's parser, plus the tool commands as subcommands beside fit/.../predict."""
        super().setup_parser(add_subcommands, main_kwargs, subparser_kwargs)
        self.tool_parsers = add_tool_commands(self.parser.subcommands_action)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(KNNProbe, "knn")
        parser.add_lightning_class_args(LinearProbe, "linear_probe")
        parser.add_lightning_class_args(FewShotProbe, "fewshot")  # every 10 epochs
        parser.add_lightning_class_args(LayerwiseKNNProbe, "layerwise")  # opt-in
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_lightning_class_args(LastCheckpoint, "last_checkpoint")  # every epoch, 10 min
        parser.add_lightning_class_args(TensorBoardSummaries, "tensorboard")
        parser.add_lightning_class_args(EmbeddingWriter, "embeddings")  # predict
        parser.add_lightning_class_args(NaNGuard, "nan_guard")
        parser.set_defaults(
            {
                "checkpoint.monitor": VAL_KNN_TOP1,
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

    def _subcommand_config(self) -> Any:
        return self.config[self.subcommand] if self.subcommand else self.config

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Runs a tool command here (no seed, model or trainer: LightningCLI stops); else parses
        and fails clearly on a ``--ckpt_path`` that is missing or no checkpoint (before
        LightningCLI reads the file's hyperparameters with a bare ``torch.load``)."""
        argv = list(sys.argv[1:] if args is None else args) if isinstance(args, list | None) else []
        if argv and argv[0] in TOOL_COMMANDS:
            self.subcommand = argv[0]
            self.config = run_tool_command(parser, self.tool_parsers, argv)
            raise _ToolCommandRan
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        check_ckpt_path(self.config[subcommand].get("ckpt_path") if subcommand else None)

    def before_instantiate_classes(self) -> None:
        """Sets the loggers' unset ``save_dir`` and, for ``fit --ckpt_path last``, the run
        directory to continue (``ssl_biases.run.resume``)."""
        config = self._subcommand_config()
        set_default_save_dir(config)
        if self.subcommand == "fit" and config.get("ckpt_path") == "last":
            filename = resume_into_run_dir(getattr(config.get("trainer.logger"), "init_args", None))
            if filename is not None:  # the first run's config.yaml is kept
                self.save_config_kwargs = {**self.save_config_kwargs, "config_filename": filename}

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        """The trainer with a progress bar, atomic checkpoint files, the time-budget epoch
        bound, ``metrics.csv`` and a noted run directory (``ssl_biases.run.callbacks``)."""
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        trainer_config = config.get("trainer")
        bounds = {key: trainer_config.get(key) for key in ("max_epochs", "max_steps", "max_time")}
        bounds, _ = time_budget_trainer_args(bounds, [])  # its TimeBudget: in trainer_defaults
        trainer = super().instantiate_trainer(
            **{**trainer_arguments(trainer_config), **bounds, **kwargs}
        )
        equip_trainer(trainer, metrics_csv=self.subcommand in ("fit", "validate", "test"))
        return trainer

    def after_instantiate_classes(self) -> None:
        """Remembers the backbone's config (for checkpoints); refuses a ``--ckpt_path`` of
        another architecture, naming the shapes that differ."""
        config = self._subcommand_config()
        remember_backbone_config(self.model, config.get("model.init_args.backbone"))
        if self.subcommand is not None:
            check_resume_checkpoint(self.model, config.get("ckpt_path"), self.trainer)

    def after_fit(self) -> None:
        finish_fit(self.trainer, self.model, self.datamodule)


def cli_main(args: list[str] | None = None) -> SSLBiasesCLI:
    """Runs a subcommand (``fit``, ..., ``predict``, or a tool command such as ``analyze``)."""
    return SSLBiasesCLI(args=args)


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``ssl-biases`` console script (user errors: ``cli.errors``)."""
    with exit_on_user_error():
        cli_main(args)  # None: LightningCLI reads sys.argv itself
        release_process_group()


if __name__ == "__main__":
    main()
