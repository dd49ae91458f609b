"""What a method's schedules read: the progress of the run, and the curves of that progress.

A method's schedules (LR warm-up and decay, teacher momentum and temperature) are functions of
the step and the run's total steps. When ``--trainer.max_time`` alone bounds the run, the total
is unknown in advance: the run's :class:`~ssl_biases.run.budget.TimeBudget` estimates it as the
run goes and offers the schedules its :class:`ScheduleProgress` (0 at the first step, 1 at the
last) instead of ``step / total``, so they warm up, decay to their end values and end inside the
budget (budgeted training, Li et al., arXiv 1905.04753). The method finds it on the trainer as
a :class:`ScheduleClock`; measuring time is the run's business (``ssl_biases.run.budget``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def cosine_between(fraction: float, start: float, end: float) -> float:
    """Half a cosine from ``start`` (fraction 0) to ``end`` (fraction 1), as lightly's
    ``cosine_schedule(step, max_steps, start, end)`` at ``fraction = step / (max_steps - 1)``."""
    fraction = min(max(fraction, 0.0), 1.0)
    return end - (end - start) * (math.cos(math.pi * fraction) + 1.0) / 2.0


def warmup_cosine(
    progress: float, next_progress: float, warmup_fraction: float, end_value: float = 0.0
) -> float:
    """LR factor of lightly's ``CosineWarmupScheduler`` as a function of the progress.

    Linear warm-up over ``progress < warmup_fraction`` that reaches 1 at its end (the factor
    of a step is the progress after it, ``next_progress``, as lightly's ``(step + 1) /
    warmup``), then half a cosine from 1 to ``end_value`` at progress 1.
    """
    if progress < warmup_fraction:
        return min(1.0, next_progress / warmup_fraction)
    if warmup_fraction >= 1.0:
        return 1.0
    return cosine_between((progress - warmup_fraction) / (1.0 - warmup_fraction), 1.0, end_value)


@dataclass
class ScheduleProgress:
    """The fraction of the schedule done at each step: 0 at the first, 1 at the last.

    Piecewise linear in the step: from ``(anchor_step, anchor_progress)`` to 1 at step
    ``total_steps - 1``. A new estimate of the total re-anchors the line at the step it is
    made for, keeping that step's progress, so the progress never jumps and never decreases (a
    schedule never goes back into its warm-up) and the rest of it is spread over the new
    number of steps left. With a constant total it is ``step / (total_steps - 1)``; before any
    estimate (``total_steps = inf``) it stays at ``anchor_progress``.
    """

    anchor_step: int = 0
    anchor_progress: float = 0.0
    total_steps: float = math.inf

    def __call__(self, step: int) -> float:
        """Progress at ``step`` (0-based; meant for steps from ``anchor_step`` on)."""
        if math.isinf(self.total_steps):
            return self.anchor_progress
        last = self.total_steps - 1
        if step >= last:
            return 1.0
        span = last - self.anchor_step
        done = (step - self.anchor_step) / span
        return min(max(self.anchor_progress + (1.0 - self.anchor_progress) * done, 0.0), 1.0)

    def reestimate(self, step: int, total_steps: float) -> None:
        """Aims the rest of the schedule at ``total_steps``, from ``step`` (its progress kept).

        A schedule that ends at ``step`` (progress 1) is kept as it is.
        """
        progress = self(step)
        if progress >= 1.0:
            return
        self.anchor_step, self.anchor_progress = step, progress
        self.total_steps = max(float(total_steps), step + 2.0)  # at least one step to reach 1


class ScheduleClock:
    """What sizes a run's schedules other than its steps: a progress per step, when active.

    The method's side of a time budget. :class:`~ssl_biases.run.budget.TimeBudget` (a trainer
    callback) is one; :meth:`~ssl_biases.methods.base.SSLMethod.time_budget` returns the
    trainer's active one, and the schedules then follow :attr:`progress` instead of
    ``step / trainer.estimated_stepping_batches``.

    Attributes:
        active: Whether it sizes the schedules of this run (``max_time`` alone bounds it).
        progress: The fraction of the schedule done at each step.
    """

    active: bool = False
    progress: ScheduleProgress
