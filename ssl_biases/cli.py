"""The `ssl-biases` command: a LightningCLI for fit/validate/test/predict plus tool commands.

``ssl-biases fit --config configs/method/simclr.yaml --config configs/backbone/vit_tiny.yaml
--config configs/data/cifar10.yaml --data.root PATH`` stacks configs; any knob can be
overridden on the command line. Every run directory (``runs/<name>/version_<n>/``) holds the
resolved ``config.yaml``, ``checkpoints/`` (``last.ckpt`` and the best by ``val/knn_top1``),
TensorBoard events and ``metrics.csv``. The logger's ``save_dir`` defaults to
``--trainer.default_root_dir``, else ``runs``.

A user error (``ValueError``/``FileNotFoundError``) ends the command with its message alone on
stderr and exit status 2; ``SSL_BIASES_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

import lightning.pytorch as pl
from jsonargparse import lazy_instance
from lightning.pytorch.callbacks import (
    Callback,
    LearningRateMonitor,
    ModelCheckpoint,
    RichProgressBar,
    TQDMProgressBar,
)
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from ssl_biases.analysis.tensorboard import TensorBoardSummaries
from ssl_biases.data.datamodule import SSLDataModule
from ssl_biases.export import CHECKPOINT_KEY as BACKBONE_CONFIG_KEY
from ssl_biases.faults import (
    AtomicCheckpointIO,
    LastCheckpoint,
    LearningRateOnResume,
    NaNGuard,
    PreemptionCheckpoint,
    RandomState,
    SkippedImageCounter,
)
from ssl_biases.methods.base import SSLMethod
from ssl_biases.methods.budget import time_budget_trainer_args
from ssl_biases.probes.embeddings import EmbeddingWriter
from ssl_biases.probes.fewshot import FewShotProbe
from ssl_biases.probes.knn import KNNProbe
from ssl_biases.probes.layerwise import LayerwiseKNNProbe
from ssl_biases.probes.linear import LinearProbe
from ssl_biases.run_dir import (
    RunDirCSVLogger,
    RunStatus,
    check_checkpoint_fits,
    mark_completed,
    read_checkpoint,
    resumable_version,
)

# Commands beside Lightning's fit/validate/test/predict: name -> "module:function(argv)".
TOOL_COMMANDS: dict[str, str] = {
    "backbones": "ssl_biases.backbones.summary:main",
    "export": "ssl_biases.export:main",
    "analyze": "ssl_biases.analysis.report:main",
    "sweep": "ssl_biases.experiments.sweep:main",
}


class ValidationTracker(pl.Callback):
    """Remembers the global step of the last validation of a fit."""

    def __init__(self) -> None:
        self.step = -1

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.step = trainer.global_step


class BackboneConfigInCheckpoint(pl.Callback):
    """Stores ``backbone.config`` (``{"class_path", "init_args"}``) in every checkpoint, so
    ``ssl-biases export`` works on a checkpoint copied away from its run directory."""

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        config = getattr(getattr(pl_module, "backbone", None), "config", None)
        if config:
            checkpoint[BACKBONE_CONFIG_KEY] = config


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


DEFAULT_SAVE_DIR = "runs"  # the loggers' save_dir without --trainer.default_root_dir
DEBUG_ENV = "SSL_BIASES_DEBUG"  # set to 1: a user error shows its traceback
# --ckpt_path values that are no file: Lightning resolves them itself ("registry:<name>" too)
CKPT_PATH_KEYWORDS = ("last", "best", "hpc", "registry")


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
    """LightningCLI with the project's defaults: probes, checkpoints, TensorBoard + CSV."""

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
                "callbacks": [lazy_instance(LearningRateMonitor, logging_interval="step")],
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

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> pl.Trainer:
        if config.get("enable_progress_bar") is not False:
            # rich draws nothing into a log file; tqdm writes lines there
            bar = RichProgressBar() if sys.stdout.isatty() else TQDMProgressBar()
            callbacks = [*callbacks, bar]
        callbacks = [*callbacks, BackboneConfigInCheckpoint()]
        config, callbacks = time_budget_trainer_args(config, callbacks)  # schedules fit max_time
        # pre-emption checkpoint, exact resume, run status, atomic checkpoint files
        callbacks = [
            *callbacks,
            PreemptionCheckpoint(),
            RandomState(),
            LearningRateOnResume(),
            RunStatus(),
            SkippedImageCounter(),
        ]
        plugins = config.get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
        if not any(isinstance(plugin, CheckpointIO) for plugin in plugins):
            config = {**config, "plugins": [*plugins, AtomicCheckpointIO()]}
        trainer = super()._instantiate_trainer(config, callbacks)
        if not trainer.loggers:  # --trainer.logger false: the LR monitor has nowhere to log
            trainer.callbacks = [
                cb for cb in trainer.callbacks if not isinstance(cb, LearningRateMonitor)
            ]
        return trainer

    # resume into the same run directory
    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parses, then fails clearly on a ``--ckpt_path`` that is missing or no checkpoint."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not isinstance(ckpt_path, str) or ckpt_path.split(":")[0] in CKPT_PATH_KEYWORDS:
            return
        if Path(ckpt_path).is_file():
            read_checkpoint(ckpt_path)
        elif "://" not in ckpt_path:  # a remote (fsspec) path is Lightning's to read
            raise FileNotFoundError(
                f"--ckpt_path {ckpt_path}: no such file; pass a checkpoint "
                "(runs/<name>/version_<n>/checkpoints/last.ckpt) or `last` to resume the "
                "newest unfinished run of the logger's save_dir/name."
            )

    def before_instantiate_classes(self) -> None:
        """``fit --ckpt_path last`` continues the run directory that holds ``last.ckpt``.

        With the logger's version unset, that is the newest ``version_<n>`` of the logger's
        ``save_dir/name`` with a ``checkpoints/last.ckpt`` (none: a fresh run). Name the version
        (``--trainer.logger.init_args.version``) when several runs share the name at once.
        The resumed run's config is saved beside the first one as ``config.resume<k>.yaml``.
        A logger's unset ``save_dir`` (``""``) becomes ``--trainer.default_root_dir``, else
        ``runs``.
        """
        self._default_save_dir()
        if self.subcommand != "fit" or self.config["fit"].get("ckpt_path") != "last":
            return
        init_args = getattr(self.config["fit"].get("trainer.logger"), "init_args", None)
        if init_args is None or init_args.get("save_dir") is None:
            return
        name = init_args.get("name") or ""
        if init_args.get("version") is None:
            found = resumable_version(init_args.save_dir, name)
            if found is None:
                return
            init_args.version = found
        version = init_args.version
        run_dir = Path(init_args.save_dir) / name
        run_dir = run_dir / (version if isinstance(version, str) else f"version_{version}")
        if (run_dir / "config.yaml").is_file():
            count = len(list(run_dir.glob("config*.yaml")))
            self.save_config_kwargs = {
                **self.save_config_kwargs,
                "config_filename": f"config.resume{count}.yaml",
            }

    def _default_save_dir(self) -> None:
        """Sets an unset (``""``) TensorBoard/CSV ``save_dir`` to ``default_root_dir`` or ``runs``.

        Lightning's own default logger writes under ``default_root_dir``; so does ours.
        """
        config = self.config[self.subcommand] if self.subcommand else self.config
        loggers = config.get("trainer.logger")
        for logger in loggers if isinstance(loggers, list) else [loggers]:
            init_args = getattr(logger, "init_args", None)
            class_name = str(getattr(logger, "class_path", "")).rpartition(".")[2]
            if class_name in ("TensorBoardLogger", "CSVLogger") and init_args is not None:
                if not init_args.get("save_dir"):
                    root_dir = config.get("trainer.default_root_dir")
                    init_args.save_dir = str(root_dir) if root_dir else DEFAULT_SAVE_DIR

    def _check_checkpoint(self) -> None:
        """A checkpoint of another architecture fails here, naming the shapes that differ."""
        ckpt_path = self.config[self.subcommand].get("ckpt_path")
        if ckpt_path is None or ckpt_path in ("best", "hpc"):
            return
        if ckpt_path == "last":
            log_dir = self.trainer.log_dir
            path = Path(log_dir) / "checkpoints" / "last.ckpt" if log_dir else None
        else:
            path = Path(ckpt_path)
        if path is not None and path.is_file():
            check_checkpoint_fits(self.model, path)

    # remember the backbone's class_path/init_args
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

    def _add_csv_logger(self) -> None:
        """Writes ``metrics.csv`` into the same run directory as the TensorBoard events."""
        trainer = self.trainer
        loggers = list(trainer.loggers)
        # fast_dev_run's DummyLogger has no log_dir (it writes nothing)
        has_dir = bool(loggers) and loggers[0].log_dir is not None
        if has_dir and not any(isinstance(lg, CSVLogger) for lg in loggers):
            # appends to the metrics.csv of a resumed run (Lightning's writer deletes it)
            loggers.append(RunDirCSVLogger(loggers[0].log_dir))
            trainer.loggers = loggers
        trainer.callbacks.append(ValidationTracker())

    def before_fit(self) -> None:
        self._check_checkpoint()
        self._add_csv_logger()

    def before_validate(self) -> None:
        self._check_checkpoint()
        self._add_csv_logger()

    def before_test(self) -> None:
        self._check_checkpoint()
        self._add_csv_logger()

    def before_predict(self) -> None:
        self._check_checkpoint()

    def _run_subcommand(self, subcommand: str) -> None:
        """Runs it; a run that fails before its first batch leaves no run directory."""
        status = [cb for cb in self.trainer.callbacks if isinstance(cb, RunStatus)]
        for callback in status:
            callback.note_run_dir(self.trainer)
        try:
            super()._run_subcommand(subcommand)
        except Exception:
            for callback in status:
                callback.remove_unstarted_run_dir()
            raise

    def after_fit(self) -> None:
        """Save ``last.ckpt`` and validate at the final step, even after a mid-epoch stop."""
        trainer = self.trainer
        if trainer.interrupted or trainer.fast_dev_run:  # fast_dev_run: a smoke test, no files
            return
        checkpoint = trainer.checkpoint_callback
        if checkpoint is not None and checkpoint.dirpath is not None:
            trainer.save_checkpoint(str(Path(checkpoint.dirpath) / "last.ckpt"))
        tracker = next(cb for cb in trainer.callbacks if isinstance(cb, ValidationTracker))
        if tracker.step != trainer.global_step:
            trainer.validate(self.model, datamodule=self.datamodule, verbose=False)
        mark_completed(trainer)  # only now is the run directory a finished run
        log_dir = trainer.log_dir  # a broadcast: every rank reads it
        if trainer.is_global_zero:
            print(f"Run directory: {log_dir}")


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
