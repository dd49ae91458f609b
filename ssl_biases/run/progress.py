"""Progress bars that show the training loss without a host sync a step.

Lightning turns every metric logged with ``prog_bar=True`` into a Python number at every
batch end (a ``.item()``: on a GPU the host waits for the step to finish). The methods log
``train/loss`` without ``prog_bar``; these bars read it themselves, once every
``log_every_n_steps`` optimisation steps (and at the first step), and show that value until
the next read.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar

from ssl_biases.metric_names import TRAIN_LOSS


class LoggedLossInBar:
    """Mixin for a Lightning progress bar: adds ``train/loss``, read every log interval."""

    _loss: float | None = None
    _read_at: int | None = None  # the global step of the last read

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)  # type: ignore[misc]
        step = trainer.global_step
        due = self._loss is None or step % max(1, trainer.log_every_n_steps) == 0
        if due and step != self._read_at:
            logged = trainer.logged_metrics.get(TRAIN_LOSS)
            if logged is not None:
                self._loss, self._read_at = float(logged), step  # one sync per interval
        return items if self._loss is None else {**items, TRAIN_LOSS: self._loss}


class LoggedLossTQDMProgressBar(LoggedLossInBar, TQDMProgressBar):
    """tqdm's bar (a log file) with the training loss of the last log interval."""


class LoggedLossRichProgressBar(LoggedLossInBar, RichProgressBar):
    """rich's bar (a terminal) with the training loss of the last log interval."""
