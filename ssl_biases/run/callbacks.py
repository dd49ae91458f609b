"""What every run of the CLI gets: its life's callbacks, its trainer's extras, its end.

:func:`trainer_defaults` is the CLI's ``trainer_defaults`` (logger, callbacks, epoch bound);
:data:`CALLBACK_SECTIONS` are the run's callbacks a user configures (``--checkpoint.*``,
``--last_checkpoint.*``, ``--nan_guard.*``), :data:`SECTION_DEFAULTS` their defaults.
:func:`run_callbacks` lists the callbacks (the CLI passes them as ``trainer_defaults``
callbacks): pre-emption checkpoint, exact-resume random state, learning rate on resume,
``status.json``, skipped-image count, the backbone's config in every checkpoint, and the step
of the last validation. :func:`trainer_arguments` adds a progress bar and atomic checkpoint
files to the parsed trainer arguments; :func:`equip_trainer` gives the built trainer
``metrics.csv`` and notes its run directory. :func:`finish_fit` saves ``last.ckpt`` and
validates at the final step, then marks the run completed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from jsonargparse import lazy_instance
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.io import CheckpointIO
from torch import nn

from ssl_biases.metric_names import VAL_KNN_TOP1
from ssl_biases.run.budget import TimeBudget, time_budget_trainer_args
from ssl_biases.run.checkpoint import BACKBONE_CONFIG_KEY
from ssl_biases.run.csv_logger import add_csv_logger
from ssl_biases.run.faults import (
    AtomicCheckpointIO,
    LastCheckpoint,
    NaNGuard,
    PreemptionCheckpoint,
    SkippedImageCounter,
)
from ssl_biases.run.progress import LoggedLossRichProgressBar, LoggedLossTQDMProgressBar
from ssl_biases.run.resume import EpochEndResume, LearningRateOnResume, RandomState
from ssl_biases.run.status import RunStatus, mark_completed

CALLBACK_SECTIONS: dict[str, type[pl.Callback]] = {
    "checkpoint": ModelCheckpoint,  # the best by val/knn_top1, and last.ckpt
    "last_checkpoint": LastCheckpoint,  # every epoch and every 10 minutes
    "nan_guard": NaNGuard,
}
"""The run's callbacks a user configures, by their CLI section."""

SECTION_DEFAULTS: dict[str, Any] = {
    "checkpoint.monitor": VAL_KNN_TOP1,
    "checkpoint.mode": "max",
    "checkpoint.save_last": True,
    "checkpoint.filename": "best-epoch{epoch}-step{step}",
    "checkpoint.auto_insert_metric_name": False,
}


def trainer_defaults() -> dict[str, Any]:
    """The CLI's ``trainer_defaults``: TensorBoard, the run's callbacks, no epoch bound yet.

    The logger's ``save_dir`` stays unset (``""``): :func:`ssl_biases.run.resume.place_run_dir`
    makes it ``--trainer.default_root_dir``, else ``runs``. ``max_epochs`` becomes 100 unless
    ``max_time`` alone bounds the run (:func:`trainer_arguments`).
    """
    return {
        "logger": lazy_instance(
            TensorBoardLogger, save_dir="", name="ssl", default_hp_metric=False
        ),
        "callbacks": [  # added to every trainer, after the configured ones
            TimeBudget(),  # schedules sized to max_time (run/budget.py)
            *run_callbacks(),
            lazy_instance(LearningRateMonitor, logging_interval="step"),
        ],
        "max_epochs": None,
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


def remember_backbone_config(model: nn.Module, backbone_config: Any) -> None:
    """Sets ``model.backbone.config`` from the parsed ``model.init_args.backbone`` section.

    :class:`BackboneConfigInCheckpoint` then writes it into every checkpoint. A backbone that
    already has a ``config`` keeps it.
    """
    backbone = getattr(model, "backbone", None)
    if backbone is None or backbone_config is None or hasattr(backbone, "config"):
        return
    as_dict = backbone_config.as_dict() if hasattr(backbone_config, "as_dict") else None
    if isinstance(as_dict, dict) and "class_path" in as_dict:
        backbone.config = {
            "class_path": as_dict["class_path"],
            "init_args": as_dict.get("init_args", {}),
        }


def run_callbacks() -> list[pl.Callback]:
    """Fresh instances of the callbacks every run has (order kept from earlier versions)."""
    return [
        BackboneConfigInCheckpoint(),
        PreemptionCheckpoint(),
        RandomState(),
        EpochEndResume(),
        LearningRateOnResume(),
        RunStatus(),
        SkippedImageCounter(),
        ValidationTracker(),
    ]


def _as_list(value: Any) -> list[Any]:
    if not value:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def check_bounds(bounds: dict[str, Any]) -> None:
    """``--trainer.max_steps``/``max_epochs`` (and ``min_*``) are counts, ``-1`` for no bound.

    Raises:
        ValueError: naming the flag and the value, before Lightning's own
            ``MisconfigurationException`` (a traceback) at the trainer's construction.
    """
    for key, value in bounds.items():
        if key in ("max_steps", "max_epochs") and value is not None and value < -1:
            raise ValueError(
                f"--trainer.{key} {value}: give a number of {key.split('_')[1]} >= 0, or -1 "
                "for no such bound."
            )


def trainer_arguments(trainer_config: Any) -> dict[str, Any]:
    """``callbacks``, ``plugins`` and bounds for the trainer, from the parsed (instantiated) ones.

    The epoch bound of the time-budget rule (:func:`time_budget_trainer_args`). A progress bar
    unless ``enable_progress_bar`` is false: rich on a terminal, tqdm's lines
    in a log file (rich draws nothing there); :class:`AtomicCheckpointIO` unless a
    ``CheckpointIO`` plugin is given.
    """
    callbacks = _as_list(trainer_config.get("callbacks"))
    if trainer_config.get("enable_progress_bar") is not False:
        bar = LoggedLossRichProgressBar if sys.stdout.isatty() else LoggedLossTQDMProgressBar
        callbacks.append(bar())  # the last logged train/loss, no sync a step (run/progress.py)
    plugins = _as_list(trainer_config.get("plugins"))
    if not any(isinstance(plugin, CheckpointIO) for plugin in plugins):
        plugins.append(AtomicCheckpointIO())
    bounds = {key: trainer_config.get(key) for key in ("max_epochs", "max_steps", "max_time")}
    check_bounds(bounds)
    bounds, _ = time_budget_trainer_args(bounds, [])  # its TimeBudget: in trainer_defaults
    return {"callbacks": callbacks, "plugins": plugins, **bounds}


def equip_trainer(trainer: pl.Trainer, metrics_csv: bool = True) -> None:
    """Readies a built trainer for its run, before the loggers make the run directory.

    Adds ``metrics.csv`` (:func:`add_csv_logger`; the CLI's fit/validate/test), drops the LR monitor
    when there is no logger for it (``--trainer.logger false``), and lets :class:`RunStatus`
    note which folders of the run directory do not exist yet.
    """
    if not trainer.loggers:
        trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, LearningRateMonitor)]
    if metrics_csv:
        add_csv_logger(trainer)
    for callback in trainer.callbacks:
        if isinstance(callback, RunStatus):
            callback.note_run_dir(trainer)


def finish_fit(
    trainer: pl.Trainer, model: pl.LightningModule, datamodule: pl.LightningDataModule | None
) -> None:
    """Saves ``last.ckpt`` and validates at the final step, even after a mid-epoch stop.

    Then, only then, the run directory's status becomes ``completed``. Nothing for an
    interrupted fit or ``fast_dev_run`` (a smoke test that writes no files).
    """
    if trainer.interrupted or trainer.fast_dev_run:
        return
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and checkpoint.dirpath is not None:
        trainer.save_checkpoint(str(Path(checkpoint.dirpath) / "last.ckpt"))
    tracker = next(cb for cb in trainer.callbacks if isinstance(cb, ValidationTracker))
    if tracker.step != trainer.global_step:
        trainer.validate(model, datamodule=datamodule, verbose=False)
    mark_completed(trainer)
    log_dir = trainer.log_dir  # a broadcast: every rank reads it
    if trainer.is_global_zero:
        print(f"Run directory: {log_dir}")


def release_process_group() -> None:
    """Destroys the ``torch.distributed`` process group a DDP run leaves behind.

    Called once the command is done, before the interpreter exits: otherwise gloo's threads
    can race the interpreter's shutdown and abort a finished run ("terminate called without
    an active exception", exit status -6).
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
