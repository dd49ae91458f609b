"""The progress bars show the training loss, read once per log interval."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from ssl_biases.metric_names import TRAIN_LOSS
from ssl_biases.run.op_counter import OpCounter
from ssl_biases.run.progress import LoggedLossRichProgressBar, LoggedLossTQDMProgressBar


@pytest.mark.parametrize("bar_type", [LoggedLossTQDMProgressBar, LoggedLossRichProgressBar])
def test_bar_reads_the_loss_at_the_first_step_and_then_once_per_log_interval(bar_type) -> None:
    bar = bar_type()
    trainer = SimpleNamespace(
        loggers=[], progress_bar_metrics={"val/knn_top1": 0.5}, log_every_n_steps=4
    )
    trainer.global_step, trainer.logged_metrics = 1, {}
    assert bar.get_metrics(trainer, None) == {"val/knn_top1": 0.5}  # nothing logged yet
    shown, syncs = [], 0
    for step in range(1, 10):  # the bar refreshes at every batch end
        trainer.global_step = step
        trainer.logged_metrics = {TRAIN_LOSS: torch.tensor(float(step))}
        with OpCounter() as counter:
            items = bar.get_metrics(trainer, None)
        shown.append(items[TRAIN_LOSS])
        syncs += len(counter.syncs)
        assert items["val/knn_top1"] == 0.5
    assert shown == [1.0, 1.0, 1.0, 4.0, 4.0, 4.0, 4.0, 8.0, 8.0]
    assert syncs == 3  # steps 1 (the first), 4 and 8
