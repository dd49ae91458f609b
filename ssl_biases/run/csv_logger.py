"""``metrics.csv`` in the run directory, continued (not replaced) when a run resumes."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment


class AppendingCSVWriter(ExperimentWriter):
    """Lightning's CSV writer, except that it continues an existing ``metrics.csv``.

    Lightning's writer deletes the file it finds (with a warning); this one reads its header
    so that new rows are appended under it (and the file is rewritten only when a new
    metric adds a column, keeping every earlier row).
    """

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as handle:
                self.metrics_keys = sorted(next(csv.reader(handle), []))


class RunDirCSVLogger(CSVLogger):
    """A ``CSVLogger`` writing ``metrics.csv`` straight into ``log_dir`` and appending to it.

    A run resumed into its directory (``--ckpt_path last``) so keeps the rows logged before
    the stop; steps trained again after the last checkpoint appear twice.

    Args:
        log_dir: The run directory (the TensorBoard logger's ``log_dir``).
    """

    def __init__(self, log_dir: str | Path) -> None:
        super().__init__(save_dir=str(log_dir), name="", version="")

    @property
    @rank_zero_experiment
    def experiment(self) -> AppendingCSVWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingCSVWriter(log_dir=self.log_dir)
        return self._experiment


def add_csv_logger(trainer: pl.Trainer) -> None:
    """Adds a :class:`RunDirCSVLogger` beside the first logger, in its run directory.

    Nothing when the trainer already has a ``CSVLogger``, or no logger with a directory
    (``--trainer.logger false``; ``fast_dev_run``'s ``DummyLogger``, which writes nothing).
    """
    loggers = list(trainer.loggers)
    has_dir = bool(loggers) and loggers[0].log_dir is not None
    if has_dir and not any(isinstance(logger, CSVLogger) for logger in loggers):
        trainer.loggers = [*loggers, RunDirCSVLogger(loggers[0].log_dir)]
