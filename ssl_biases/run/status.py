"""The completion marker of runs and sweep cells: ``status.json``.

Every ``runs/<name>/version_<n>/`` holds ``status.json``. Its ``status`` is ``running`` from
the first training step, ``failed`` (with the error) or ``interrupted`` (a signal; a
checkpoint was saved) when the run stops early, and ``completed`` only after the final
checkpoint and validation. A folder without ``"status": "completed"`` is never a finished run:
a killed process (SIGKILL, power loss) leaves ``running``. A sweep cell's folder
(``<output_dir>/<cell id>/``) gets the same file, ``completed`` once its fit exited cleanly;
a cell finished before ``status.json`` became the one marker has ``done.json`` instead, and
counts as completed too (:data:`LEGACY_DONE_FILE`).

An error before the first batch (training, validation, test or predict) leaves no run
directory at all: :class:`RunStatus` removes the one this run created
(:meth:`RunStatus.note_run_dir` before the trainer runs, then its ``on_exception``).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.utilities.exceptions import SIGTERMException

STATUS_FILE = "status.json"
COMPLETED = "completed"
LEGACY_DONE_FILE = "done.json"
"""A sweep cell's completion marker before ``status.json`` (read, never written)."""


def write_run_status(run_dir: str | Path, status: str, **fields: Any) -> None:
    """Writes ``run_dir/status.json`` atomically (temporary file + ``os.replace``)."""
    folder = Path(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    record = {"status": status, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **fields}
    partial = folder / f".{STATUS_FILE}.partial-{os.getpid()}"
    partial.write_text(json.dumps(record, indent=1, default=str) + "\n")
    os.replace(partial, folder / STATUS_FILE)


def read_run_status(run_dir: str | Path) -> dict[str, Any] | None:
    """The status record of a run or sweep cell, or ``None`` if it has none.

    A legacy sweep cell with only ``done.json`` reads as ``{"status": "completed", ...}``
    with the fields of that file (``wall_s``, ``resumed_from``, ...).
    """
    path = Path(run_dir) / STATUS_FILE
    if path.is_file():
        return json.loads(path.read_text())
    legacy = Path(run_dir) / LEGACY_DONE_FILE
    if legacy.is_file():
        return {**json.loads(legacy.read_text() or "{}"), "status": COMPLETED}
    return None


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (one of another user counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running_pid(run_dir: str | Path) -> int | None:
    """The live process that holds a run or sweep cell, from its ``status.json``; else ``None``.

    A ``running`` status names the training process (``pid``). When that process is gone (a
    SIGKILL, a crash of the machine) the lock is stale and ``None`` is returned, so the next run
    takes it over; this process's own pid never locks it out.
    """
    record = read_run_status(run_dir)
    if record is None or record.get("status") != "running":
        return None
    pid = record.get("pid")
    if not isinstance(pid, int) or pid == os.getpid() or not pid_alive(pid):
        return None
    return pid


def is_completed(run_dir: str | Path) -> bool:
    """True only for a finished run (training, last checkpoint, validation) or sweep cell."""
    record = read_run_status(run_dir)
    return record is not None and record.get("status") == COMPLETED


def rank_zero_log_dir(trainer: pl.Trainer) -> str | None:
    """The run directory on rank zero, ``None`` on the other ranks.

    ``trainer.log_dir`` broadcasts from rank zero, so reading it on one rank alone hangs a
    DDP run; this reads rank zero's logger directly instead.
    """
    if not trainer.is_global_zero:
        return None
    return trainer.loggers[0].log_dir if trainer.loggers else trainer.default_root_dir


class RunStatus(pl.Callback):
    """Keeps ``status.json`` of the run directory: running, failed, interrupted.

    ``completed`` is written after the final checkpoint and validation (:func:`mark_completed`).
    It also remembers whether this run created its directory and whether the first batch
    started, so that a run which fails before its first batch leaves no directory behind:
    :meth:`note_run_dir` before the trainer runs (the CLI calls it), then ``on_exception``.
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
        if not self.started and self.created:
            for logger in trainer.loggers:  # close the event files before their folder goes
                logger.finalize("failed")  # (Lightning finalizes again after us: a no-op)
            self.remove_unstarted_run_dir()
        elif isinstance(exception, (SIGTERMException, KeyboardInterrupt)):
            reason = {"signal": type(exception).__name__}
            _try_write_status(log_dir, "interrupted", global_step=trainer.global_step, **reason)
        else:
            error = f"{type(exception).__name__}: {exception}"
            _try_write_status(log_dir, "failed", global_step=trainer.global_step, error=error)


def _try_write_status(run_dir: str | Path, status: str, **fields: Any) -> None:
    """:func:`write_run_status` after a failure: a run directory that cannot be written (the
    failure itself, often) must not hide the first error behind a second one."""
    try:
        write_run_status(run_dir, status, **fields)
    except OSError:
        pass


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
