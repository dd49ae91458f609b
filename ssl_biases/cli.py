"""The `ssl-biases` command: a LightningCLI for fit/validate/test/predict plus tool commands.

``ssl-biases fit --config configs/method/simclr.yaml --config configs/backbone/vit_tiny.yaml
--config configs/data/cifar10.yaml --data.root PATH`` stacks configs; any knob can be
overridden on the command line. Every run directory (``runs/<name>/version_<n>/``) holds the
resolved ``config.yaml``, ``checkpoints/`` (``last.ckpt`` and the best by ``val/knn_top1``),
TensorBoard events, ``metrics.csv`` and ``status.json`` (the run's life: ``ssl_biases.run``).
The logger's ``save_dir`` defaults to ``--trainer.default_root_dir``, else ``runs``.

A user error (``ValueError``/``FileNotFoundError``) ends the command with its message alone on
stderr and exit status 2; ``SSL_BIASES_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from typing import Any, NoReturn

import lightning.pytorch as pl
from jsonargparse import lazy_instance
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from ssl_biases.analysis.tensorboard import TensorBoardSummaries
from ssl_biases.data.datamodule import SSLDataModule
from ssl_biases.methods.base import SSLMethod
from ssl_biases.methods.budget import TimeBudget, time_budget_trainer_args
from ssl_biases.probes.embeddings import EmbeddingWriter
from ssl_biases.probes.fewshot import FewShotProbe
from ssl_biases.probes.knn import KNNProbe
from ssl_biases.probes.layerwise import LayerwiseKNNProbe
from ssl_biases.probes.linear import LinearProbe
from ssl_biases.run.callbacks import (
    equip_trainer,
    finish_fit,
    remember_backbone_config,
    run_callbacks,
    trainer_arguments,
)
from ssl_biases.run.faults import LastCheckpoint, NaNGuard
from ssl_biases.run.resume import check_ckpt_path, check_resume_checkpoint, resume_into_run_dir
from ssl_biases.run.run_dir import set_default_save_dir

# Commands beside Lightning's fit/validate/test/predict: name -> "module:function(argv)".
TOOL_COMMANDS: dict[str, str] = {
    "backbones": "ssl_biases.backbones.summary:main",
    "export": "ssl_biases.run.export:main",
    "analyze": "ssl_biases.analysis.report:main",
    "sweep": "ssl_biases.experiments.sweep:main",
}
DEBUG_ENV = "SSL_BIASES_DEBUG"  # set to 1: a user error shows its traceback


def known_names_hint(message: str) -> str:
    """The known backbone classes or methods, for a parser error about an unknown class."""
    unknown = ("has no attribute", "Expected a dot import path", "No module named")
    if not any(key in message for key in unknown):
        return ""
    if "backbone" in message:
        import ssl_biases.backbones as package

        kind, extra = "backbones", " (registry presets: `ssl-biases backbones`)"
    elif "model" in message or "ssl_biases.methods" in message:
        import ssl_biases.methods as package

        kind, extra = "methods", ""
    else:
        return ""
    names = [
        f"{package.__name__}.{name}"
        for name in package.__all__
        if isinstance(getattr(package, name), type) and name != "SSLMethod"
    ]
    return f"\nKnown {kind}: {', '.join(names)}{extra}."


class SSLBiasesArgumentParser(LightningArgumentParser):
    """The CLI's parser: an unknown method or backbone class gets the list of known ones, and
    a config file that is no valid YAML is named."""

    config_file: str | None = None  # the --config file being parsed

    def parse_path(self, path: Any, *args: Any, **kwargs: Any) -> Any:
        previous, self.config_file = self.config_file, os.path.abspath(os.fspath(path))
        try:
            return super().parse_path(path, *args, **kwargs)
        finally:
            self.config_file = previous

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if self.config_file and message.startswith("Problems parsing config"):
            message = f"config file {self.config_file} is not valid YAML: {message}"
        super().error(message + known_names_hint(message), ex)


class SSLBiasesCLI(LightningCLI):
    """LightningCLI with the project's defaults: probes, checkpoints, TensorBoard + CSV, and
    the run's life (``ssl_biases.run``: status, resume, faults) on every trainer."""

    def __init__(self, args: list[str] | None = None, run: bool = True) -> None:
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
                "max_epochs": None,  # 100 unless max_time alone bounds the run (methods/budget.py)
            },
            args=args,
            run=run,
        )

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

    def _subcommand_config(self) -> Any:
        return self.config[self.subcommand] if self.subcommand else self.config

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parses, then fails clearly on a ``--ckpt_path`` that is missing or no checkpoint
        (before LightningCLI reads the file's hyperparameters with a bare ``torch.load``)."""
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


def user_error_message(error: BaseException) -> str:
    """The message of a user error, without jsonargparse's wrapper around a class's own error.

    A ``ValueError`` raised while jsonargparse builds a class (a width ``num_heads`` does not
    divide) reaches us inside "Does not validate against any of the Union subtypes ...", which
    repeats the whole config; the class's own message is the one that says what to do.
    """
    while isinstance(error.__cause__, (ValueError, FileNotFoundError)):
        frame = error.__traceback__
        while frame is not None and frame.tb_next is not None:
            frame = frame.tb_next
        if frame is None or "jsonargparse" not in frame.tb_frame.f_code.co_filename:
            break
        error = error.__cause__
    return str(error)


def cli_main(args: list[str] | None = None) -> SSLBiasesCLI:
    """Runs the Lightning subcommands (``fit``, ``validate``, ``test``, ``predict``)."""
    return SSLBiasesCLI(args=args)


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``ssl-biases`` console script.

    A ``ValueError``/``FileNotFoundError`` (a user error: bad config, data or checkpoint)
    prints its message alone and exits with status 2; with ``SSL_BIASES_DEBUG=1`` it is
    raised with its traceback.
    """
    argv = list(sys.argv[1:] if args is None else args)
    try:
        if argv and argv[0] in TOOL_COMMANDS:
            module_name, function_name = TOOL_COMMANDS[argv[0]].split(":")
            getattr(importlib.import_module(module_name), function_name)(argv[1:])
            return
        cli_main(args)  # None: LightningCLI reads sys.argv itself
    except SIGTERMException as stop:  # pre-empted after saving; exit 128 + signal
        code = stop.code if isinstance(stop.code, int) and stop.code else 128 + signal.SIGTERM
        sys.exit(code)
    except (ValueError, FileNotFoundError) as error:
        if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            raise
        print(
            f"ssl-biases: error: {user_error_message(error)}\n"
            f"(for the traceback, rerun with {DEBUG_ENV}=1)",
            file=sys.stderr,
        )
        sys.exit(2)


if __name__ == "__main__":
    main()
