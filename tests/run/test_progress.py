"""The progress bars show the last logged training loss, read once per logged value."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from ssl_biases.metric_names import TRAIN_LOSS
from ssl_biases.run.op_counter import OpCounter
from ssl_biases.run.progress import LoggedLossRichProgressBar, LoggedLossTQDMProgressBar


@pytest.mark.parametrize("bar_type", [LoggedLossTQDMProgressBar, LoggedLossRichProgressBar])
def test_bar_shows_the_last_logged_loss_and_reads_each_value_once(bar_type) -> None:
    bar = bar_type()
    trainer = SimpleNamespace(loggers=[], progress_bar_metrics={"val/knn_top1": 0.5})
    trainer.logged_metrics = {}
    assert bar.get_metrics(trainer, None) == {"val/knn_top1": 0.5}  # nothing logged yet
    trainer.logged_metrics = {TRAIN_LOSS: torch.tensor(3.25)}
    with OpCounter() as counter:
        for _ in range(5):  # five batch ends between two log steps
            items = bar.get_metrics(trainer, None)
    assert items == {"val/knn_top1": 0.5, TRAIN_LOSS: 3.25}
    assert len(counter.syncs) == 1  # one .item() for the new value, none for the repeats
    trainer.logged_metrics = {TRAIN_LOSS: torch.tensor(2.5)}  # the next log step
    assert bar.get_metrics(trainer, None)[TRAIN_LOSS] == 2.5
