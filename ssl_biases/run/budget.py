"""A run's time budget: its schedules (LR, teacher momentum and temperature) sized to ``max_time``.

With ``--trainer.max_time`` and neither ``max_steps`` nor ``max_epochs``, the number of steps a
run will make is unknown in advance. :class:`TimeBudget` measures the step time, estimates the
total (``steps done + usable time left / step time``) and re-estimates as the run goes; the
schedules of :class:`~ssl_biases.methods.base.SSLMethod` then follow the schedule's *progress*
(:class:`~ssl_biases.methods.schedules.ScheduleProgress`, 0 at the first step, 1 at the last)
instead of ``step / total``, so they warm up, decay to their end values and end inside the
budget. Budgeted training (Li et
al., arXiv 1905.04753): a schedule that decays to its end within the budget beats one that the
budget truncates.

The rule for which bound sizes the schedules (:func:`time_budget_trainer_args`): ``max_steps``
or ``max_epochs`` whenever either is given, exactly as without a budget; with ``max_time`` set,
``max_epochs`` counts as a bound only if it is given explicitly (the CLI's default of 100 epochs
applies only to runs without ``max_time``).
"""

from __future__ import annotations

import math
import statistics
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback, Timer
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from ssl_biases.methods.schedules import ScheduleClock, ScheduleProgress
from ssl_biases.metric_names import TRAIN_ESTIMATED_TOTAL_STEPS

DEFAULT_MAX_EPOCHS = 100  # the CLI's epoch bound when neither max_steps nor max_time is given
SCHEDULES = "Schedules (LR, teacher momentum and temperature)"


def time_budget_trainer_args(
    config: dict[str, Any], callbacks: list[Callback]
) -> tuple[dict[str, Any], list[Callback]]:
    """The CLI's trainer arguments with the time-budget rule applied.

    ``max_epochs`` (``None`` when not given) becomes ``DEFAULT_MAX_EPOCHS`` unless ``max_time``
    is set and ``max_steps`` is not: then it stays unset, Lightning makes it ``-1`` and the
    budget alone bounds the run. :class:`TimeBudget` is added to the callbacks.
    """
    max_epochs = config.get("max_epochs")
    time_alone = config.get("max_time") is not None and config.get("max_steps", -1) == -1
    if max_epochs is None and not time_alone:
        max_epochs = DEFAULT_MAX_EPOCHS
    return {**config, "max_epochs": max_epochs}, [*callbacks, TimeBudget()]


# ----------------------------------------------------------------------------- the callback
def _schedule_bound(trainer: pl.Trainer) -> str:
    """Which bound sizes the schedules of a run without an active budget, in words."""
    total = trainer.estimated_stepping_batches
    if math.isinf(total):
        return "nothing (no max_steps, max_epochs or max_time): warm-up, then a constant LR"
    if trainer.max_steps != -1 and total == trainer.max_steps:
        bound = f"max_steps={trainer.max_steps}"
    else:
        bound = f"max_epochs={trainer.max_epochs}"
    note = " (max_time may stop the run before they end)" if _timer(trainer) else ""
    return f"{bound}: {int(total)} steps{note}"


def _timer(trainer: pl.Trainer) -> Timer | None:
    """The trainer's ``Timer`` with a duration (``max_time``), if any."""
    for callback in trainer.callbacks:
        if isinstance(callback, Timer) and callback.time_remaining() is not None:
            return callback
    return None


class TimeBudget(Callback, ScheduleClock):
    """Sizes the schedules to ``max_time`` when it alone bounds the run (arXiv 1905.04753).

    Active in a fit with a ``Timer`` (``max_time``), ``max_steps == -1`` and ``max_epochs ==
    -1``; otherwise it only reports the bound, and the schedules are exactly those sized by
    ``trainer.estimated_stepping_batches``. When active it measures each optimisation step's
    wall time (from the end of one step's last batch to the next one's, less any validation in
    between; the first step of a (re)started process is start-up and is not measured) and
    estimates the total number of steps as ``steps done + (budget left - margin) / cost of a
    step``. A step costs its time (the median so far during the calibration window, then the
    mean of the last ``window`` steps) plus the validation time per step measured so far; the
    margin (``margin`` of the budget, at least one measured validation) is left for the final
    validation and checkpoint. It re-estimates after every step of the calibration window and
    of the last ``2 * update_every`` estimated steps and every ``update_every`` steps in
    between, re-anchoring :attr:`progress`, and stops the run after the last estimated step.
    The estimate is rank 0's on every rank (broadcast) and is saved in checkpoints, so a
    resumed run continues the same schedule.

    Args:
        calibration_steps: Measured steps re-estimated after each one (the estimate is rough
            until then; the warm-up runs meanwhile on the estimates so far).
        update_every: Steps between re-estimates after the calibration window.
        window: Number of recent step times averaged after the calibration window.
        margin: Fraction of the budget kept free at the end.
        clock: Monotonic seconds (``time.monotonic``; tests pass a fake clock).
    """

    def __init__(
        self,
        calibration_steps: int = 10,
        update_every: int = 10,
        window: int = 100,
        margin: float = 0.02,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if calibration_steps < 1 or update_every < 1 or window < 1:
            raise ValueError("calibration_steps, update_every and window must be >= 1")
        if not 0.0 <= margin < 1.0:
            raise ValueError(f"margin must be a fraction of the budget in [0, 1), got {margin}")
        self.calibration_steps = calibration_steps
        self.update_every = update_every
        self.margin = margin
        self.clock = clock
        self.active = False
        self.progress = ScheduleProgress()
        self.duration = 0.0  # seconds of the budget
        self.used = 0.0  # seconds of the budget used before this process's fit began
        self.step_times: deque[float] = deque(maxlen=window)
        self.measured = 0  # steps measured over the whole run
        self.validation_seconds = 0.0  # validations during the fit (no sanity check)
        self.validations = 0
        self.last_validation_step = 0
        self._start = 0.0
        self._last: float | None = None  # clock at the end of the last optimiser step
        self._last_step = 0
        self._validation_start = 0.0
        self._validation_in_step = 0.0

    # ------------------------------------------------------------------------ the bound
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self.active = (
                _timer(trainer) is not None and trainer.max_steps == -1 and trainer.max_epochs == -1
            )

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start, self._last, self._validation_in_step = self.clock(), None, 0.0
        self._last_step = trainer.global_step
        if not self.active:
            rank_zero_info(f"{SCHEDULES} sized by {_schedule_bound(trainer)}.")
            return
        timer = _timer(trainer)
        assert timer is not None
        self.duration = float(timer.time_elapsed() + timer.time_remaining())  # max_time
        rank_zero_info(
            f"{SCHEDULES} sized by max_time={self.duration:.0f} s alone (no max_steps or "
            "max_epochs): total steps estimated from the measured step time, logged as "
            f"{TRAIN_ESTIMATED_TOTAL_STEPS}."
        )

    def elapsed(self) -> float:
        """Seconds of the budget used so far (this process's fit and any before a resume)."""
        return self.used + self.clock() - self._start

    # --------------------------------------------------------------------- measurements
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._validation_start = self.clock()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        seconds = self.clock() - self._validation_start
        self._validation_in_step += seconds
        self.validation_seconds += seconds
        self.validations += 1
        self.last_validation_step = trainer.global_step

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
        batch_idx: int,
    ) -> None:  # fmt: skip
        if not self.active:
            total = trainer.estimated_stepping_batches
            if not math.isinf(total):
                pl_module.log(TRAIN_ESTIMATED_TOTAL_STEPS, float(total))
            return
        now, done = self.clock(), trainer.global_step
        if done == self._last_step:  # no optimiser step in this batch (gradient accumulation)
            return
        self._last_step = done
        if self._last is not None:
            self.step_times.append(now - self._last - self._validation_in_step)
            self.measured += 1
        self._last, self._validation_in_step = now, 0.0
        calibrating = self.measured <= self.calibration_steps
        ending = self.progress.total_steps - done <= 2 * self.update_every  # every step now
        if self.measured and (calibrating or ending or done % self.update_every == 0):
            total = trainer.strategy.broadcast(self.estimate(done, calibrating), src=0)
            self.progress.reestimate(done, total)
            if self.measured == self.calibration_steps:
                rank_zero_info(
                    f"Time budget: {statistics.median(self.step_times):.3g} s a step after "
                    f"{self.measured} steps: about {int(self.progress.total_steps)} steps."
                )
        if not math.isinf(self.progress.total_steps):
            pl_module.log(TRAIN_ESTIMATED_TOTAL_STEPS, self.progress.total_steps)
            if done >= self.progress.total_steps:
                trainer.should_stop = True  # the schedules have ended: the margin is left

    def estimate(self, done: int, calibrating: bool) -> float:
        """Total steps of the run: ``done + (budget left - margin) / cost of a step``."""
        times = list(self.step_times)
        step = statistics.median(times) if calibrating else statistics.fmean(times)
        if self.validations:
            step += self.validation_seconds / max(self.last_validation_step, 1)
        reserve = self.margin * self.duration
        if self.validations:
            reserve = max(reserve, self.validation_seconds / self.validations)
        left = max(self.duration - self.elapsed() - reserve, 0.0)
        return float(done + math.floor(left / max(step, 1e-9)))

    # --------------------------------------------------------------------------- resume
    def state_dict(self) -> dict[str, Any]:
        if not self.active:
            return {}
        return {
            "anchor_step": self.progress.anchor_step,
            "anchor_progress": self.progress.anchor_progress,
            "total_steps": self.progress.total_steps,
            "used": self.elapsed(),
            "step_times": [float(t) for t in self.step_times],
            "measured": self.measured,
            "validation_seconds": self.validation_seconds,
            "validations": self.validations,
            "last_validation_step": self.last_validation_step,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        self.progress.anchor_step = int(state_dict["anchor_step"])
        self.progress.anchor_progress = float(state_dict["anchor_progress"])
        self.progress.total_steps = float(state_dict["total_steps"])
        self.used = float(state_dict["used"])
        self.step_times.clear()
        self.step_times.extend(state_dict["step_times"])
        self.measured = int(state_dict["measured"])
        self.validation_seconds = float(state_dict["validation_seconds"])
        self.validations = int(state_dict["validations"])
        self.last_validation_step = int(state_dict["last_validation_step"])
