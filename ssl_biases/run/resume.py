"""Resuming a run: into its own directory, from a checkpoint that fits, exactly.

A logger whose ``save_dir`` is unset (``""``) writes under ``--trainer.default_root_dir``, as
Lightning's own default logger does, else under ``runs`` (:func:`place_run_dir`).
``fit --ckpt_path last`` continues the newest unfinished ``version_<n>`` of the logger's
``save_dir/name`` that has a ``checkpoints/last.ckpt`` (:func:`resumable_version`); the
resumed run's config is saved beside the first one as ``config.resume<k>.yaml``
(:func:`resume_into_run_dir`). A checkpoint of another architecture fails before training,
naming the tensors that differ (:func:`check_checkpoint_fits`). Two callbacks make the resume
exact or deliberately different: :class:`RandomState` (the global random generators),
:class:`EpochEndResume` (a checkpoint written at an epoch's end resumes at the next epoch's
start, also under ``max_steps``) and :class:`LearningRateOnResume` (a learning rate given on
the resume replaces the checkpoint's).
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_info
from torch import nn

from ssl_biases.run.checkpoint import read_checkpoint
from ssl_biases.run.faults import check_writable_folder
from ssl_biases.run.status import is_completed


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


DEFAULT_SAVE_DIR = "runs"  # the loggers' save_dir without --trainer.default_root_dir


def set_default_save_dir(config: Any) -> None:
    """Sets an unset ``save_dir`` of the parsed ``trainer.logger`` (one or a list) in place."""
    loggers = config.get("trainer.logger")
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        init_args = getattr(logger, "init_args", None)
        class_name = str(getattr(logger, "class_path", "")).rpartition(".")[2]
        if class_name in ("TensorBoardLogger", "CSVLogger") and init_args is not None:
            if not init_args.get("save_dir"):
                root_dir = config.get("trainer.default_root_dir")
                init_args.save_dir = str(root_dir) if root_dir else DEFAULT_SAVE_DIR


def place_run_dir(config: Any, subcommand: str | None) -> str | None:
    """Where the run writes, set in its parsed config before anything is built.

    The loggers' unset ``save_dir`` (:func:`set_default_save_dir`) and, for ``fit --ckpt_path
    last``, the run directory to continue (:func:`resume_into_run_dir`).

    Returns:
        The name to save the resolved config under when it is not ``config.yaml`` (a resumed
        run keeps its first config), else ``None``.
    """
    set_default_save_dir(config)
    if subcommand != "fit":
        return None
    check_run_folders_writable(config)
    if config.get("ckpt_path") != "last":
        return None
    return resume_into_run_dir(getattr(config.get("trainer.logger"), "init_args", None))


def check_run_folders_writable(config: Any) -> None:
    """For ``fit``: the folders the run will write (loggers' ``save_dir``, else
    ``--trainer.default_root_dir``) can be written, before anything is built or written."""
    loggers = config.get("trainer.logger")
    folders = []
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        save_dir = getattr(getattr(logger, "init_args", None), "get", lambda key: None)("save_dir")
        if save_dir:
            folders.append(str(save_dir))
    root_dir = config.get("trainer.default_root_dir")
    if root_dir and (not folders or str(root_dir) in folders):
        flag = "--trainer.default_root_dir"
    else:
        flag = "the logger's save_dir"
    for folder in folders or [str(root_dir or ".")]:
        check_writable_folder(folder, f"{flag} {folder}")


def resume_into_run_dir(logger_init_args: Any) -> str | None:
    """For ``fit --ckpt_path last``: points the logger at the run to resume; its config name.

    With the logger's ``version`` unset, sets it to :func:`resumable_version` (none found: a
    fresh run, left as it is). Name the version (``--trainer.logger.init_args.version``) when
    several runs share the name at once.

    Args:
        logger_init_args: The TensorBoard/CSV logger's parsed ``init_args`` (changed in place).

    Returns:
        ``config.resume<k>.yaml`` when the run directory already holds a ``config.yaml``
        (``k`` counts the configs there), else ``None`` (the usual ``config.yaml``).
    """
    if logger_init_args is None or logger_init_args.get("save_dir") is None:
        return None
    name = logger_init_args.get("name") or ""
    if logger_init_args.get("version") is None:
        found = resumable_version(logger_init_args.save_dir, name)
        if found is None:
            return None
        logger_init_args.version = found
    version = logger_init_args.version
    run_dir = Path(logger_init_args.save_dir) / name
    run_dir = run_dir / (version if isinstance(version, str) else f"version_{version}")
    if run_dir.is_dir():  # it goes on writing there: checkpoints, metrics, status
        check_writable_folder(run_dir, f"--ckpt_path last continues {run_dir}, but")
        check_writable_folder(run_dir / "checkpoints", f"--ckpt_path last continues {run_dir}, but")
    if not (run_dir / "config.yaml").is_file():
        return None
    return f"config.resume{len(list(run_dir.glob('config*.yaml')))}.yaml"


def newest_readable_checkpoint(folder: str | Path, exclude: Path) -> tuple[Path, int] | None:
    """The readable ``*.ckpt`` of ``folder`` (other than ``exclude``) with the highest step."""
    found = []
    for path in Path(folder).glob("*.ckpt"):
        if path.resolve() == exclude.resolve():
            continue
        try:
            found.append((int(read_checkpoint(path).contents.get("global_step", -1)), path))
        except (ValueError, FileNotFoundError):
            continue
    if not found:
        return None
    step, path = max(found, key=lambda item: (item[0], item[1].stat().st_mtime))
    return path, step


def read_resume_checkpoint(path: str | Path) -> Any:
    """:func:`read_checkpoint`, whose error for an unreadable file offers the newest readable
    checkpoint of the same run (``--ckpt_path`` to it), or says that there is none."""
    try:
        return read_checkpoint(path)
    except ValueError as error:
        other = newest_readable_checkpoint(Path(path).parent, Path(path))
        if other is None:
            hint = "No other checkpoint of this run is readable: start the run again."
        else:
            hint = (
                f"The newest readable checkpoint of this run is {other[0]} (step {other[1]}): "
                f"resume from it with --ckpt_path {other[0]}."
            )
        raise ValueError(f"{error}\n{hint}") from error


def check_checkpoint_fits(model: nn.Module, path: str | Path) -> None:
    """Raises a ``ValueError`` listing the tensors whose shapes or names differ."""
    saved = read_resume_checkpoint(path).state_dict
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


class LearningRateOnResume(pl.Callback):
    """On a resume, a changed learning rate replaces the checkpoint's (with a logged note).

    Lightning restores the optimiser and scheduler states from the checkpoint, and with them
    the learning rates of the run that wrote it. This callback notes the base learning rate
    of every parameter group as the current config makes it (``initial_lr``, the scheduler's
    base, else ``lr``) before the restore; where it differs from the restored one after it,
    the group's base rate and its scheduler's ``base_lrs`` become the configured one and the
    current rate is rescaled by the same ratio, so the schedule goes on from where it was
    (exact for multiplicative schedules such as the default cosine with warm-up). An
    unchanged config leaves the restored state untouched (an exact resume).
    """

    def __init__(self) -> None:
        self._configured: list[list[float]] = []

    @staticmethod
    def _base(group: dict[str, Any]) -> float:
        return float(group.get("initial_lr", group["lr"]))

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._configured = [
            [self._base(group) for group in optimizer.param_groups]
            for optimizer in trainer.optimizers
        ]

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        configured, self._configured = self._configured, []
        if trainer.ckpt_path is None or not configured:
            return
        changes = []
        for index, (optimizer, bases) in enumerate(
            zip(trainer.optimizers, configured, strict=True)
        ):
            for number, (group, base) in enumerate(zip(optimizer.param_groups, bases, strict=True)):
                restored = self._base(group)
                if base == restored:
                    continue
                ratio = base / restored if restored else 1.0
                group["lr"] = group["lr"] * ratio if restored else base
                if "initial_lr" in group:
                    group["initial_lr"] = base
                for config in trainer.lr_scheduler_configs:
                    scheduler = config.scheduler
                    if getattr(scheduler, "optimizer", None) is optimizer:
                        scheduler.base_lrs[number] = base
                        if hasattr(scheduler, "_last_lr"):
                            scheduler._last_lr[number] = group["lr"]
                name = group.get("name", number)
                changes.append(f"optimizer {index} group {name}: {restored:.3g} -> {base:.3g}")
        if changes:
            rank_zero_info(
                "LearningRateOnResume: the configured learning rate replaces the checkpoint's "
                "(base rates; the schedule continues from the checkpoint's step): "
                + "; ".join(changes)
            )


# ---------------------------------------------------------------------- exact-resume state
def _zero_current(progress: dict[str, Any]) -> None:
    """Zeroes every ``current`` counter of a saved loop progress (Lightning's ``reset_on_run``)."""
    for key, value in progress.items():
        if key == "current" and isinstance(value, dict):
            progress[key] = dict.fromkeys(value, 0)
        elif isinstance(value, dict):
            _zero_current(value)
    if "is_last_batch" in progress:
        progress["is_last_batch"] = False


def complete_saved_epoch(checkpoint: dict[str, Any]) -> bool:
    """Rewrites the loop state of a checkpoint written at an epoch's end as the next one's start.

    A checkpoint saved in ``on_train_epoch_end`` (``LastCheckpoint``, ``ModelCheckpoint``'s
    default) holds the epoch ``processed`` but not yet ``completed``. Here the epoch is marked
    completed and the per-epoch counters (batches, optimiser and scheduler steps, validation
    batches) are zeroed: the state Lightning reaches itself when it resumes such a checkpoint
    without ``max_steps`` (see :class:`EpochEndResume` for what goes wrong with it).

    Returns:
        Whether the checkpoint was rewritten (an epoch-end checkpoint of a whole epoch: not one
        that ``max_steps`` cut short, whose epoch a resume continues).
    """
    loop = checkpoint.get("loops", {}).get("fit_loop")
    if not isinstance(loop, dict) or "epoch_progress" not in loop:
        return False
    epochs = loop["epoch_progress"]["total"]
    batches = loop.get("epoch_loop.batch_progress", {})
    at_epoch_end = (
        epochs["ready"] == epochs["started"] == epochs["processed"] == epochs["completed"] + 1
        and batches.get("is_last_batch", False)  # the whole epoch ran (not cut by max_steps)
    )
    if not at_epoch_end:
        return False
    for progress in (loop["epoch_progress"]["total"], loop["epoch_progress"]["current"]):
        progress["completed"] = progress["processed"]
    for key, value in loop.items():
        if key.startswith("epoch_loop.") and isinstance(value, dict):
            _zero_current(value)
    validation = loop.get("epoch_loop.val_loop.batch_progress")
    if isinstance(validation, dict):
        validation["total"] = dict.fromkeys(validation["total"], 0)
    return True


class EpochEndResume(pl.Callback):
    """Resumes a checkpoint written at an epoch's end at the next epoch's first batch, exactly.

    The cause it corrects (Lightning 2.6): a checkpoint saved in ``on_train_epoch_end`` holds
    the epoch ``processed`` but not ``completed``. Without ``max_steps`` Lightning sees the
    epoch finished and starts the next one afresh. With ``max_steps`` its fit loop always
    restarts (``_FitLoop.restarting`` is forced by ``_iteration_based_training``), takes the
    epoch for unfinished and trains one more batch in it, runs the epoch's end hooks (checkpoint,
    validation) a second time, and from then on hands the sampler (``set_epoch``) the epoch
    ``processed``, one ahead of ``current_epoch``: every loss after the first resumed step
    differs from the uninterrupted run, and after a validation the step labels are one too high
    (``_batches_that_stepped`` one ahead of ``global_step``). With validation on, a restarting
    epoch loop also counts a step it never trains ("validation already done at the last
    batch").

    So :func:`complete_saved_epoch` rewrites the checkpoint's loop state (in memory, before
    Lightning restores its loops) to the next epoch's start, and when that epoch starts its
    loops are told they are not restarting, as without ``max_steps``. ``max_time`` and
    ``max_epochs`` runs take the same path they took before.
    """

    def __init__(self) -> None:
        self._completed = False

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._completed = complete_saved_epoch(checkpoint)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._completed:  # a fresh epoch: nothing of it to restore or skip
            self._completed = False
            trainer.fit_loop._restarting = False  # its setter forces True under max_steps
            trainer.fit_loop.epoch_loop.restarting = False  # and its validation loop


class RandomState(pl.Callback):
    """Saves the global torch/numpy/python generators in checkpoints; restores on resume.

    They are restored at ``on_train_start`` (after the sanity check), so the steps after a
    resume draw the same random numbers (MAE masks, drop-path) as the uninterrupted run.
    The data order and augmentations do not use them (see ``ssl_biases.data.sampler``).
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        kind, keys, position, has_gauss, gauss = np.random.get_state()
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": [kind, keys.tolist(), position, has_gauss, gauss],
            "python": random.getstate(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        state, self._pending = self._pending, None
        if not state:
            return
        torch.set_rng_state(state["torch"])
        kind, keys, position, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, gauss))
        random.setstate(state["python"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


# --ckpt_path values that are no file: Lightning resolves them itself ("registry:<name>" too)
CKPT_PATH_KEYWORDS = ("last", "best", "hpc", "registry")


def check_ckpt_path(ckpt_path: Any) -> None:
    """Fails clearly on a ``--ckpt_path`` that is missing or no checkpoint (before any run).

    Raises:
        FileNotFoundError: naming the flag, when the file does not exist.
        ValueError: when it is no readable checkpoint (:func:`read_checkpoint`).
    """
    if not isinstance(ckpt_path, str) or ckpt_path.split(":")[0] in CKPT_PATH_KEYWORDS:
        return
    if "://" in ckpt_path:  # a remote (fsspec) path is Lightning's to read
        return
    try:
        read_resume_checkpoint(ckpt_path)
    except FileNotFoundError as error:
        raise FileNotFoundError(
            f"--ckpt_path {ckpt_path}: no such file; pass a checkpoint "
            "(runs/<name>/version_<n>/checkpoints/last.ckpt) or `last` to resume the "
            "newest unfinished run of the logger's save_dir/name."
        ) from error


def check_resume_checkpoint(model: nn.Module, ckpt_path: str | None, trainer: pl.Trainer) -> None:
    """:func:`check_checkpoint_fits` for the checkpoint ``--ckpt_path`` names, if it is a file.

    ``last`` is the run directory's ``checkpoints/last.ckpt``; ``best``/``hpc`` and a ``last``
    without a file (a fresh run) are left to Lightning.
    """
    if ckpt_path == "last":
        log_dir = trainer.log_dir  # a broadcast: every rank reads it
        ckpt_path = str(Path(log_dir) / "checkpoints" / "last.ckpt") if log_dir else None
    if ckpt_path is not None and ckpt_path not in ("best", "hpc") and Path(ckpt_path).is_file():
        check_checkpoint_fits(model, ckpt_path)
