"""Run directories: a status file, resuming into the same directory, checkpoint checks.

Every ``runs/<name>/version_<n>/`` holds ``status.json``. Its ``status`` is ``running`` from
the first training step, ``failed`` (with the error) or ``interrupted`` (a signal; a
checkpoint was saved) when the run stops early, and ``completed`` only after the final
checkpoint and validation. A folder without ``"status": "completed"`` is never a finished run:
a killed process (SIGKILL, power loss) leaves ``running``. An error before the first batch
(training, validation, test or predict) leaves no run directory at all: the CLI removes the
one this run created (:meth:`RunStatus.remove_unstarted_run_dir`). A resumed run appends to
the directory's ``metrics.csv`` (:class:`RunDirCSVLogger`).
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import nn

STATUS_FILE = "status.json"
COMPLETED = "completed"


def write_run_status(run_dir: str | Path, status: str, **fields: Any) -> None:
    """Writes ``run_dir/status.json`` atomically (temporary file + ``os.replace``)."""
    folder = Path(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    record = {"status": status, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **fields}
    partial = folder / f".{STATUS_FILE}.partial-{os.getpid()}"
    partial.write_text(json.dumps(record, indent=1, default=str) + "\n")
    os.replace(partial, folder / STATUS_FILE)


def read_run_status(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's status record, or ``None`` if it has none (it never started training)."""
    path = Path(run_dir) / STATUS_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def is_completed(run_dir: str | Path) -> bool:
    """True only for a run that finished training, its last checkpoint and validation."""
    record = read_run_status(run_dir)
    return record is not None and record.get("status") == COMPLETED


class RunStatus(pl.Callback):
    """Keeps ``status.json`` of the run directory: running, failed, interrupted.

    ``completed`` is written by the CLI after the final checkpoint and validation
    (:func:`mark_completed`). It also remembers whether this run created its directory and
    whether the first batch started, so that a run which fails before its first batch leaves
    no directory behind (:meth:`note_run_dir`, then :meth:`remove_unstarted_run_dir`).
    """

    def __init__(self) -> None:
        self.created: list[Path] = []  # the run directory, then the parents it will create
        self.started = False

    def note_run_dir(self, trainer: pl.Trainer) -> None:
        """Remembers which folders of the run directory do not exist yet.

        Call it before ``trainer.fit``/``validate``/...: the loggers create the directory as
        the trainer sets up, before any callback hook.
        """
        log_dir = rank_zero_log_dir(trainer)
        self.started = False
        self.created = []
        if log_dir is not None:
            folder = Path(log_dir).absolute()
            while not folder.exists():
                self.created.append(folder)
                folder = folder.parent

    def _start(self, *_: Any) -> None:
        self.started = True

    on_sanity_check_start = on_validation_start = on_test_start = on_predict_start = _start

    def remove_unstarted_run_dir(self) -> None:
        """Removes the run directory this run created if it failed before its first batch.

        A directory that existed before (a resumed run, ``--trainer.logger false``'s
        ``default_root_dir``) is kept; so is a parent that another run wrote into meanwhile.
        """
        if self.started or not self.created:
            return
        shutil.rmtree(self.created[0], ignore_errors=True)
        for parent in self.created[1:]:
            try:
                parent.rmdir()
            except OSError:  # not empty: a concurrent run's directory is in there
                return

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.started = True
        log_dir = rank_zero_log_dir(trainer)
        if log_dir is not None:
            write_run_status(
                log_dir,
                "running",
                global_step=trainer.global_step,
                resumed_from=trainer.ckpt_path,
                pid=os.getpid(),
            )

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        log_dir = rank_zero_log_dir(trainer)
        if log_dir is None or not Path(log_dir).is_dir():
            return  # never create a run directory only to say that it failed
        if isinstance(exception, (SIGTERMException, KeyboardInterrupt)):
            reason = {"signal": type(exception).__name__}
            write_run_status(log_dir, "interrupted", global_step=trainer.global_step, **reason)
        else:
            error = f"{type(exception).__name__}: {exception}"
            write_run_status(log_dir, "failed", global_step=trainer.global_step, error=error)


def rank_zero_log_dir(trainer: pl.Trainer) -> str | None:
    """The run directory on rank zero, ``None`` on the other ranks.

    ``trainer.log_dir`` broadcasts from rank zero, so reading it on one rank alone hangs a
    DDP run; this reads rank zero's logger directly instead.
    """
    if not trainer.is_global_zero:
        return None
    return trainer.loggers[0].log_dir if trainer.loggers else trainer.default_root_dir


def mark_completed(trainer: pl.Trainer) -> None:
    """Writes ``"status": "completed"`` into the run directory (rank zero)."""
    log_dir = rank_zero_log_dir(trainer)
    if log_dir is not None:
        callback = trainer.checkpoint_callback
        write_run_status(
            log_dir,
            COMPLETED,
            global_step=trainer.global_step,
            best_checkpoint=getattr(callback, "best_model_path", None) or None,
        )


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


def resumable_version(save_dir: str | Path, name: str) -> int | None:
    """The newest unfinished ``version_<n>`` under ``save_dir/name`` with a ``last.ckpt``.

    Completed runs are left out, so a run that failed before its first checkpoint starts
    afresh instead of continuing an older, finished one (name a finished run's version to
    train it further).
    """
    folder = Path(save_dir) / name
    versions = []
    for child in folder.glob("version_*"):
        match = re.fullmatch(r"version_(\d+)", child.name)
        resumable = (child / "checkpoints" / "last.ckpt").is_file() and not is_completed(child)
        if match and resumable:
            versions.append(int(match.group(1)))
    return max(versions) if versions else None


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Loads a checkpoint memory-mapped (tensors are read lazily) as Lightning will.

    Raises:
        ValueError: naming the file, if it is not a readable checkpoint.
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as error:
        message = str(error).splitlines()[0][:200]
        raise ValueError(
            f"cannot read checkpoint '{path}' ({type(error).__name__}: {message}); pass a "
            "checkpoint written by ssl-biases (runs/<name>/version_<n>/checkpoints/*.ckpt)."
        ) from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"'{path}' holds no `state_dict`: it is not a Lightning checkpoint")
    return checkpoint


def check_checkpoint_fits(model: nn.Module, path: str | Path) -> None:
    """Raises a ``ValueError`` listing the tensors whose shapes or names differ."""
    saved: dict[str, Any] = read_checkpoint(path)["state_dict"]
    current = model.state_dict()
    differ = [
        f"{key}: checkpoint {tuple(saved[key].shape)} vs model {tuple(current[key].shape)}"
        for key in sorted(saved.keys() & current.keys())
        if tuple(saved[key].shape) != tuple(current[key].shape)
    ]
    missing = sorted(current.keys() - saved.keys())
    unexpected = sorted(saved.keys() - current.keys())
    if not (differ or missing or unexpected):
        return
    lines = [f"checkpoint '{path}' was written by another architecture than this config's:"]
    if differ:
        lines.append(f"  shapes differ ({len(differ)}): " + "; ".join(differ[:8]))
    if missing:
        lines.append(f"  not in the checkpoint ({len(missing)}): " + ", ".join(missing[:8]))
    if unexpected:
        lines.append(f"  only in the checkpoint ({len(unexpected)}): " + ", ".join(unexpected[:8]))
    config = Path(path).parent.parent / "config.yaml"
    hint = f"--config {config}" if config.is_file() else "the config it was trained with"
    lines.append(f"Use {hint} (the method, backbone and image size must match).")
    raise ValueError("\n".join(lines))
