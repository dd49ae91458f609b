"""Surviving faults: atomic checkpoints, ``last.ckpt``, pre-emption, non-finite losses.

The CLI adds all of these to every run (``docs/reliability.md`` lists each case, what happens
and the test that checks it; the exact-resume state is in :mod:`ssl_biases.run.resume`):

* :class:`AtomicCheckpointIO` writes a checkpoint next to its target and renames it into
  place, so a kill while saving leaves the previous ``last.ckpt`` intact.
* :class:`LastCheckpoint` refreshes ``checkpoints/last.ckpt`` at every training epoch end and
  at least every ``every_n_minutes`` of training, whatever the probes say.
* :class:`PreemptionCheckpoint` turns SIGTERM (Lightning's handler) and SIGINT into: finish
  the current batch, save ``checkpoints/last.ckpt``, exit with status ``128 + signal``.
* :class:`NaNGuard` stops on a NaN/Inf loss or diverged weights (read from a device flag every
  N steps and before every checkpoint), naming the first bad step and the last good checkpoint,
  or (``skip=True``) drops a bad batch's update and counts it.
* :class:`SkippedImageCounter` logs ``data/skipped_images`` (``data.skip_corrupt``).
"""

from __future__ import annotations

import io
import os
import re
import signal
import time
from pathlib import Path
from types import FrameType
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn
from torch import Tensor

from ssl_biases.metric_names import TRAIN_SKIPPED_BATCHES
from ssl_biases.run.status import pid_alive


# ------------------------------------------------------------------------- atomic checkpoints
def _write_file(handle: io.BufferedWriter, data: memoryview) -> None:
    """Writes ``data`` to ``handle`` (a seam for tests that simulate a crash mid-write)."""
    handle.write(data)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file in the target's folder, then renamed over it.

    Lightning's ``TorchCheckpointIO`` stages the file in the system temp folder and moves it;
    when that is another filesystem (a node-local ``/tmp`` and a network run folder) the move
    is a copy that a kill can cut short. Here the temporary file sits next to the target, is
    flushed to disk (``fsync``) and replaces it with ``os.replace`` (atomic on POSIX), so the
    target is always either the previous complete checkpoint or the new one.

    Attributes:
        last_saved: ``(path, global_step)`` of the last checkpoint this process completed.
    """

    def __init__(self) -> None:
        super().__init__()
        self.last_saved: tuple[str, int] | None = None

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        if not _is_local_file_protocol(path):  # remote storage: fsspec's own transaction
            super().save_checkpoint(checkpoint, path, storage_options)
        else:
            if storage_options is not None:
                raise TypeError(f"{type(self).__name__} does not take storage_options")
            target = Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            buffer = io.BytesIO()
            torch.save(checkpoint, buffer)
            partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
            try:
                with open(partial, "wb") as handle:
                    _write_file(handle, buffer.getbuffer())
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(partial, target)
            finally:
                partial.unlink(missing_ok=True)
            _fsync_folder(target.parent)
        self.last_saved = (str(path), int(checkpoint.get("global_step", -1)))


PARTIAL_FILE = re.compile(r"\..+\.partial-(\d+)")
"""A temporary file of :class:`AtomicCheckpointIO` or ``write_run_status`` (``<pid>``: writer)."""


def remove_stale_partials(folder: str | Path) -> list[Path]:
    """Removes the temporary files that killed processes left in ``folder`` (a kill while a
    checkpoint was written leaves its ``.last.ckpt.partial-<pid>``, as large as a checkpoint).

    A file whose process still runs (another run writing into the folder) is kept.

    Returns:
        The files removed.
    """
    removed = []
    for path in Path(folder).glob(".*.partial-*"):
        match = PARTIAL_FILE.fullmatch(path.name)
        if match and int(match.group(1)) != os.getpid() and not pid_alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _writable(folder: Path) -> bool:
    """Whether this process may create files in ``folder`` (a seam for tests, which run as root)."""
    return os.access(folder, os.W_OK | os.X_OK)


def check_writable_folder(folder: str | Path, flag: str) -> None:
    """Fails before anything is written when ``folder`` cannot be made or written to.

    Args:
        folder: The folder a command will create or write into.
        flag: How the user gave it, for the message (``--output DIR``).

    Raises:
        ValueError: one line naming the path, what is wrong and what to do, when the folder
            is a file, sits under a file, or its nearest existing folder is read-only.
    """
    path = Path(folder)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file" if existing == path else f"is under the file {existing}"
        raise ValueError(
            f"{flag}: {path} {where}, not a folder: name a new or existing folder "
            "(the file is left as it is)."
        )
    if not _writable(existing):
        raise ValueError(
            f"{flag}: cannot write into {existing} (read-only or no permission): name a "
            "folder you can write to, or make it writable; nothing was written."
        )


def _fsync_folder(folder: Path) -> None:
    """Makes a rename in ``folder`` durable (best effort; not every OS allows it)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def last_good_checkpoint(trainer: pl.Trainer) -> str | None:
    """The newest checkpoint this run wrote or resumed from, as ``"path (step N)"``; ``None``
    before the first one.

    With :class:`AtomicCheckpointIO` only a completed write counts (a ``ModelCheckpoint``
    names its file before writing it), else the resumed checkpoint.
    """
    checkpoint_io = trainer.strategy.checkpoint_io
    if isinstance(checkpoint_io, AtomicCheckpointIO):
        if checkpoint_io.last_saved is not None:
            path, step = checkpoint_io.last_saved
            return f"{path} (step {step})"
        return trainer.ckpt_path or None
    callback = trainer.checkpoint_callback
    path = getattr(callback, "last_model_path", "") or getattr(callback, "best_model_path", "")
    return path or trainer.ckpt_path or None


def last_checkpoint_path(trainer: pl.Trainer, filename: str = "last.ckpt") -> Path:
    """``filename`` in the run's checkpoint folder (the ``ModelCheckpoint``'s ``dirpath``)."""
    folder = getattr(trainer.checkpoint_callback, "dirpath", None)
    if folder is None:
        folder = Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints"
    return Path(folder) / filename


# ---------------------------------------------------------------------------- last.ckpt
class LastCheckpoint(pl.Callback):
    """Refreshes ``checkpoints/last.ckpt`` at every training epoch end and every N minutes.

    Lightning's ``ModelCheckpoint(save_last=True)`` writes ``last.ckpt`` only when it also
    writes a top-k file, so with a monitored probe metric it waits for a validation (and for
    an improvement of it); this callback writes it regardless of validation. Saving goes
    through the trainer (so the atomic :class:`AtomicCheckpointIO` and every rank take part),
    and the loggers are flushed with it, so ``metrics.csv`` holds every step up to it.

    Args:
        every_n_minutes: Also save after the first training batch that ends at least this
            many minutes after the previous save (or the start of training); ``0`` saves after
            every batch.
        filename: Checkpoint name in the run's ``checkpoints/`` folder.
    """

    def __init__(self, every_n_minutes: float = 10.0, filename: str = "last.ckpt") -> None:
        if every_n_minutes < 0:
            raise ValueError(f"every_n_minutes must be >= 0, got {every_n_minutes}")
        self.every_n_minutes = every_n_minutes
        self.filename = filename
        self._last_time = time.monotonic()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_time = time.monotonic()
        folder = last_checkpoint_path(trainer, self.filename).parent
        if trainer.is_global_zero and folder.is_dir():  # what a killed run left half-written
            for path in remove_stale_partials(folder) + remove_stale_partials(folder.parent):
                rank_zero_info(f"Removed {path}, left half-written by a process that was killed.")

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        due = time.monotonic() - self._last_time >= 60.0 * self.every_n_minutes
        if trainer.strategy.broadcast(due):  # rank 0's clock decides for all ranks
            self.save(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.save(trainer)

    def save(self, trainer: pl.Trainer) -> None:
        """Writes ``last.ckpt`` now, unless this step's is written already."""
        if trainer.fast_dev_run or trainer.sanity_checking:
            return
        path = last_checkpoint_path(trainer, self.filename)
        saved = getattr(trainer.strategy.checkpoint_io, "last_saved", None)  # set on rank 0
        written = saved is not None and Path(saved[0]) == path and saved[1] == trainer.global_step
        if trainer.strategy.broadcast(written):  # e.g. by ModelCheckpoint at this step
            return
        for callback in trainer.checkpoint_callbacks:
            folder = getattr(callback, "dirpath", None)
            if getattr(callback, "save_last", False) and folder and Path(folder) == path.parent:
                # ModelCheckpoint(save_last) then keeps writing last.ckpt, not last-v1.ckpt
                callback.last_model_path = os.path.join(folder, self.filename)
        trainer.save_checkpoint(str(path))
        if trainer.is_global_zero:  # the metrics logged so far are on disk with it
            for logger in trainer.loggers:
                logger.save()
        self._last_time = time.monotonic()


# ------------------------------------------------------------------------------ pre-emption
class PreemptionCheckpoint(pl.Callback):
    """On SIGTERM or SIGINT: finish the batch, save ``last.ckpt``, exit with ``128 + signal``.

    SIGTERM is Lightning's own signal handling (it raises ``SIGTERMException`` after the batch,
    its logged metrics included, on every rank); SIGINT (Ctrl-C) is caught here and handed to
    that same stop instead of interrupting the step half-way (the exception's exit code then
    says SIGINT). A second Ctrl-C interrupts at once, without a checkpoint.

    Args:
        filename: Checkpoint name in the run's ``checkpoints/`` folder (``--ckpt_path last``
            resumes from ``last.ckpt``).
    """

    def __init__(self, filename: str = "last.ckpt") -> None:
        self.filename = filename
        self.requested: int | None = None
        self._previous_sigint: Any = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or self._previous_sigint is not None:
            return
        self.requested = None
        try:
            self._previous_sigint = signal.signal(signal.SIGINT, self._on_sigint)
        except ValueError:  # not the main thread: leave Ctrl-C alone
            self._previous_sigint = None

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        self.requested = signum
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C: at once

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._restore_sigint()

    def _restore_sigint(self) -> None:
        if self._previous_sigint is not None:
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        requested = self.requested is not None
        if trainer.world_size > 1:  # every rank stops at the same batch
            requested = trainer.strategy.reduce_boolean_decision(requested, all=False)
        if requested:
            self.requested = self.requested or signal.SIGINT
            # Lightning's SIGTERM flag: it stops after this batch's metrics reach the loggers
            # and its loop state is complete (raising here would lose the step's metrics)
            trainer._signal_connector.received_sigterm = True

    def checkpoint_path(self, trainer: pl.Trainer) -> Path:
        return last_checkpoint_path(trainer, self.filename)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._restore_sigint()  # Lightning skips callbacks' teardown after an exception
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != "fit":
            return
        if self.requested is not None:  # SIGINT: exit with 130, not SIGTERM's 143
            exception.code = 128 + self.requested
        path = self.checkpoint_path(trainer)
        trainer.save_checkpoint(str(path))
        if trainer.is_global_zero:
            print(
                f"Stopped by a signal at step {trainer.global_step}; saved {path}. Resume with "
                "the same command plus --ckpt_path last (see docs/reliability.md)."
            )


# ------------------------------------------------------------------------- non-finite loss
class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or Inf."""


class NaNGuard(pl.Callback):
    """Stops a run whose loss became NaN/Inf or whose weights diverged; never saves such weights.

    Without a host sync on most steps: each step's loss only updates a flag on the device (and
    the first non-finite step and loss); the host reads it (one sync, and one all-reduce under
    DDP) every ``check_every_n_steps`` steps, before that step's optimiser step, at each epoch
    end, at the end of the fit and before every checkpoint is written. A check also looks at the
    weights: all finite and none larger than ``max_abs_weight`` in magnitude (a learning rate
    far too high leaves a finite loss but weights near 1e19, and NaN the step after). When a
    check fails the run stops with :class:`NonFiniteLossError`, naming the first bad step, and
    the checkpoint it was about to write is not written, so the last good checkpoint (every one
    the run wrote passed a check) is from before the first bad step; without one the message
    says to start again. A NaN at step ``k`` stops the run by step ``k + check_every_n_steps -
    1``; the updates in between are lost with the run, not saved.

    With ``skip=True`` every step is checked before its optimiser step (a host sync a step): a
    non-finite batch's gradients are dropped (the optimiser leaves every weight and its state
    untouched; the LR schedule still advances), the batch is counted in
    ``train/skipped_batches`` and training goes on, unless ``max_consecutive_skips`` batches in
    a row were bad (a diverged model), which stops it.

    Args:
        skip: Skip non-finite batches instead of stopping.
        max_consecutive_skips: Stop anyway after this many non-finite batches in a row.
        check_every_n_steps: Steps between reads of the flag (1: every step, before its update).
        max_abs_weight: Largest weight magnitude a check accepts (``0`` checks finiteness only).
    """

    def __init__(
        self,
        skip: bool = False,
        max_consecutive_skips: int = 10,
        check_every_n_steps: int = 16,
        max_abs_weight: float = 1e4,
    ) -> None:
        if max_consecutive_skips < 1:
            raise ValueError(f"max_consecutive_skips must be >= 1, got {max_consecutive_skips}")
        if check_every_n_steps < 1:
            raise ValueError(f"check_every_n_steps must be >= 1, got {check_every_n_steps}")
        if max_abs_weight < 0:
            raise ValueError(
                f"max_abs_weight must be >= 0 (0: finiteness only), got {max_abs_weight}"
            )
        self.skip = skip
        self.max_consecutive_skips = max_consecutive_skips
        self.check_every_n_steps = check_every_n_steps
        self.max_abs_weight = max_abs_weight
        self.skipped = 0
        self.checks = 0  # host reads of the flag so far
        self._consecutive = 0
        self._bad_loss: float | None = None  # skip mode: this batch's non-finite loss
        self._flag: Tensor | None = None  # device: [non-finite loss seen, its first step, loss]
        self._batch_idx = 0
        self._stepped = False
        self._skipping = False
        self._checked_step = -1

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch_idx = batch_idx

    def on_before_backward(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor
    ) -> None:
        loss = loss.detach().float()
        if self.skip:  # decided before this step's update: read now
            if not bool(torch.isfinite(loss).all()):
                self._bad_loss = float(loss.sum())
            return
        bad = ~torch.isfinite(loss).all()  # [] bool, stays on the device
        if self._flag is None:
            self._flag = loss.new_tensor([0.0, -1.0, 0.0])  # once: [seen, first step, loss]
        first = ~self._flag[0].bool() & bad  # the first non-finite loss since the start
        seen = loss.new_full((), float(trainer.global_step))  # a fill: no host-to-device copy
        update = torch.stack([loss.new_ones(()), seen, loss.sum()])  # [3]
        self._flag = torch.where(first, update, self._flag)  # [3]

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any
    ) -> None:
        self._stepped = True
        if not self.skip:
            if (trainer.global_step + 1) % self.check_every_n_steps == 0:
                self.check(trainer, pl_module)  # before this step's update
            return
        bad = trainer.strategy.reduce_boolean_decision(self._bad_loss is not None, all=False)
        if not bad:
            return
        if not self._skipping:  # the batch's first optimiser step decides (manual optimisation
            self._decide(trainer)  # may step several optimisers on one backward pass)
        for group in optimizer.param_groups:
            for param in group["params"]:
                param.grad = None  # the optimiser skips parameters without a gradient

    # ------------------------------------------------------------------------------ checks
    def _largest_weight(self, pl_module: pl.LightningModule) -> Tensor:
        """``max |w|`` over the trainable weights (NaN if any is NaN), on their device."""
        weights = [p.detach() for p in pl_module.parameters() if p.requires_grad]
        if not weights:
            return torch.zeros(())
        maxima = torch.stack([w.abs().amax().float() for w in weights])  # [n_weights]
        return torch.where(
            torch.isnan(maxima).any(), maxima.new_tensor(float("nan")), maxima.amax()
        )

    def check(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Reads the flag and the weights (one host sync; agreed across DDP ranks); raises
        :class:`NonFiniteLossError` when the loss was non-finite or the weights diverged."""
        if trainer.global_step == self._checked_step and self.checks:
            return  # (several optimisers, or a save right after a check: nothing new)
        self._checked_step = trainer.global_step
        self.checks += 1
        weight = self._largest_weight(pl_module)
        flag = self._flag if self._flag is not None else weight.new_tensor([0.0, -1.0, 0.0])
        # [loss bad, -first step, weights bad, max |w|]: one MAX all-reduce agrees for all ranks
        limit = self.max_abs_weight if self.max_abs_weight > 0 else float("inf")
        weights_bad = ~(weight <= limit)  # NaN compares False: bad
        first_step = torch.where(flag[0] > 0, flag[1], flag.new_tensor(float("inf")))
        state = torch.stack(
            [flag[0], -first_step, weights_bad.float(), torch.nan_to_num(weight, nan=float("inf"))]
        ).to(flag.device)  # [4]
        if trainer.world_size > 1 and torch.distributed.is_initialized():
            torch.distributed.all_reduce(state, op=torch.distributed.ReduceOp.MAX)
        values = state.cpu()  # the one device-to-host sync (a CPU copy: reading it is free)
        loss_bad, minus_first, diverged, largest = (float(value) for value in values)
        if loss_bad > 0:
            local = float(flag[2]) if flag[0] > 0 else "non-finite on another rank"
            self._stop(trainer, f"the training loss is {local} at step {int(-minus_first)}")
        if diverged > 0:
            self._stop(
                trainer,
                f"the weights diverged at step {trainer.global_step}: the largest is "
                f"{largest:.3g} (over --nan_guard.max_abs_weight {self.max_abs_weight:g} or "
                "not finite), although the loss is still finite",
            )

    def _stop(self, trainer: pl.Trainer, where: str) -> None:
        checkpoint = last_good_checkpoint(trainer)
        if checkpoint is None:
            advice = "No checkpoint was saved yet: run again from the start with"
        else:
            advice = (
                f"Last good checkpoint: {checkpoint}. Resume from it (the same command plus "
                "--ckpt_path last, which continues the newest unfinished run) with"
            )
        raise NonFiniteLossError(
            f"{where}; training stopped, and no checkpoint was written after it. {advice} a "
            "lower learning rate (--model.init_args.training.optimizer.init_args.lr, which "
            "replaces the checkpoint's), gradient clipping (--trainer.gradient_clip_val), or "
            "skip such batches with --nan_guard.skip true."
        )

    def _decide(self, trainer: pl.Trainer) -> None:
        value = self._bad_loss if self._bad_loss is not None else "non-finite on another rank"
        where = (
            f"the training loss is {value} at step {trainer.global_step} (epoch "
            f"{trainer.current_epoch}, batch {self._batch_idx})"
        )
        self._consecutive += 1
        if self._consecutive > self.max_consecutive_skips:
            self._stop(trainer, f"{where} after {self._consecutive - 1} skipped batches in a row")
        self._skipping = True
        self.skipped += 1
        rank_zero_warn(f"NaNGuard: {where}; skipped this batch ({self.skipped} so far).")

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self._stepped:  # an optimiser step closed the batch (not a gradient accumulation)
            self._consecutive = self._consecutive if self._skipping else 0
            self._bad_loss, self._stepped, self._skipping = None, False, False
        if self.skip:
            pl_module.log(TRAIN_SKIPPED_BATCHES, float(self.skipped))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.check(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.check(trainer, pl_module)

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Every rank dumps the checkpoint before rank 0 writes it: raising here writes none."""
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self.check(trainer, pl_module)

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = int(state_dict.get("skipped", 0))


class SkippedImageCounter(pl.Callback):
    """Logs ``data/skipped_images`` once unreadable images were skipped (``skip_corrupt``)."""

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        count = getattr(trainer.datamodule, "skipped_images", 0)
        if count:
            pl_module.log("data/skipped_images", float(count))
