"""Progress bars that show the training loss without a host sync a step.

Lightning turns every metric logged with ``prog_bar=True`` into a Python number at every
batch end (a ``.item()``: on a GPU the host waits for the step to finish). The methods log
``train/loss`` without ``prog_bar``; these bars show its last *logged* value instead
(``trainer.logged_metrics``, refreshed every ``log_every_n_steps``), read once when a new one
arrives, at a step where logging has already waited for the device.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar
from torch import Tensor

from ssl_biases.metric_names import TRAIN_LOSS


class LoggedLossInBar:
    """Mixin for a Lightning progress bar: adds the last logged ``train/loss`` to its items."""

    _shown: tuple[Any, float] | None = None  # (the logged value, as a float)

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)  # type: ignore[misc]
        logged = trainer.logged_metrics.get(TRAIN_LOSS)
        if logged is None:
            return items
        if self._shown is None or self._shown[0] is not logged:  # a new value: read it once
            self._shown = (logged, float(logged) if isinstance(logged, Tensor) else logged)
        return {**items, TRAIN_LOSS: self._shown[1]}


class LoggedLossTQDMProgressBar(LoggedLossInBar, TQDMProgressBar):
    """tqdm's bar (a log file) with the last logged training loss."""


class LoggedLossRichProgressBar(LoggedLossInBar, RichProgressBar):
    """rich's bar (a terminal) with the last logged training loss."""
