"""`FrozenFeatureProbe`: the shared machinery of probes that read frozen backbone features.

During validation/test the method returns ``{"features", "labels"}`` for every batch of its two
probe loaders (index 0: the bank of train images, index 1: the queries). A probe callback
collects them, gathers them across processes (so DDP gives the single-process number) and
evaluates once per epoch. Probes never change the backbone.

When a probe runs during ``fit`` is set per probe: ``every_n_epochs`` (at every n-th
epoch's validations) or ``every_n_validations`` (at every n-th validation of the fit, however
validations are triggered: ``check_val_every_n_epoch``, ``val_check_interval``). Either way a
probe runs at the final validation of a fit (the end of the last epoch, ``max_steps`` reached,
a stop) and in every ``validate``/``test``, and skips the sanity check; a skipped validation
collects nothing. The count of validations is checkpointed, so a resumed run keeps its schedule.

Extra feature sets a method returns as ``features_<name>`` (e.g. ``features_lensed`` and
``features_concat`` with an adversarial lens, arXiv 2002.08822) are probed the same way and
logged with the suffix ``_<name>`` (``val/knn_top1_lensed``; names:
:mod:`ssl_biases.metric_names`); the default names are unchanged.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from ssl_biases.metric_names import TEST, VAL, staged


def _dataset_length(trainer: pl.Trainer, index: int) -> int | None:
    """Items in the dataset of the current validation/test loader ``index``."""
    loaders = trainer.test_dataloaders if trainer.testing else trainer.val_dataloaders
    loader = loaders[index] if isinstance(loaders, (list, tuple)) else loaders
    try:
        return len(loader.dataset)
    except (AttributeError, TypeError):
        return None


def _end_of_last_epoch(trainer: pl.Trainer) -> bool:
    """Whether this fit validation is the one after the last batch of the last epoch."""
    if (
        not trainer.max_epochs
        or trainer.max_epochs < 0
        or trainer.current_epoch + 1 < trainer.max_epochs
    ):
        return False
    done = trainer.fit_loop.epoch_loop.batch_progress.current.ready
    return trainer.is_last_batch or done >= trainer.num_training_batches


class FrozenFeatureProbe(pl.Callback):
    """Collects bank and query features during validation and test; subclasses evaluate.

    Args:
        every_n_epochs: Evaluate at the validations of every n-th epoch (always in
            ``validate``/``test`` and at the end of training). When set, it takes precedence
            over ``every_n_validations``.
        every_n_validations: Evaluate at every n-th validation of a fit (and at the end), used
            when ``every_n_epochs`` is ``None``.
    """

    def __init__(
        self, every_n_epochs: int | None = 1, every_n_validations: int | None = None
    ) -> None:
        for name, value in (
            ("every_n_epochs", every_n_epochs),
            ("every_n_validations", every_n_validations),
        ):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 (or null), got {value}")
        if every_n_epochs is None and every_n_validations is None:
            raise ValueError("set every_n_epochs or every_n_validations (both are null)")
        self.every_n_epochs = every_n_epochs
        self.every_n_validations = every_n_validations
        self.validations = 0  # validations of the current fit so far, sanity check excluded
        self._buffers: dict[int, tuple[list[Tensor], list[Tensor]]] = {}
        self._extra: dict[str, dict[int, tuple[list[Tensor], list[Tensor]]]] = {}  # by set

    def evaluate(
        self, bank: Tensor, bank_labels: Tensor, query: Tensor, query_labels: Tensor
    ) -> dict[str, float]:
        """Metric name (without stage prefix) -> value, from gathered features."""
        raise NotImplementedError

    def _active(self, trainer: pl.Trainer) -> bool:
        if trainer.sanity_checking:
            return False
        if trainer.state.fn != "fit":  # validate / test: always
            return True
        epoch = trainer.current_epoch + 1
        max_steps = trainer.max_steps is not None and 0 < trainer.max_steps <= trainer.global_step
        if trainer.should_stop or max_steps:
            return True
        if self.every_n_epochs is not None:
            last_epoch = trainer.max_epochs is not None and 0 < trainer.max_epochs <= epoch
            return epoch % self.every_n_epochs == 0 or last_epoch
        assert self.every_n_validations is not None
        return self.validations % self.every_n_validations == 0 or _end_of_last_epoch(trainer)

    def _start(self, trainer: pl.Trainer) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self.validations += 1
        self._buffers = {0: ([], []), 1: ([], [])}
        self._extra = {}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":  # before a checkpoint's count is restored
            self.validations = 0

    def state_dict(self) -> dict[str, Any]:
        return {"validations": self.validations}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.validations = int(state_dict.get("validations", 0))

    def _collect(self, trainer: pl.Trainer, outputs: Any, dataloader_idx: int) -> None:
        if not self._active(trainer) or not isinstance(outputs, dict) or "features" not in outputs:
            return
        features, labels = self._buffers.setdefault(dataloader_idx, ([], []))
        features.append(outputs["features"].detach().float())
        labels.append(outputs["labels"].detach())
        for key, value in outputs.items():  # extra feature sets: `features_<name>`
            if key.startswith("features_"):
                feature_set = key[len("features_") :]
                extra = self._extra.setdefault(feature_set, {}).setdefault(dataloader_idx, ([], []))
                extra[0].append(value.detach().float())
                extra[1].append(outputs["labels"].detach())

    def _gathered(
        self,
        pl_module: pl.LightningModule,
        index: int,
        buffers: dict[int, tuple[list[Tensor], list[Tensor]]] | None = None,
    ) -> tuple[Tensor, Tensor]:
        features, labels = (self._buffers if buffers is None else buffers).get(index, ([], []))
        x, y = torch.cat(features), torch.cat(labels)
        if pl_module.trainer.world_size > 1:
            # DDP: DistributedSampler(shuffle=False) gives rank r the items r, r + W,
            # ... of the dataset padded by repeating its head; interleave the ranks back into
            # dataset order and drop the padding, so order-dependent probes (few-shot support
            # draws) and duplicates give the single-process numbers.
            x = pl_module.all_gather(x).transpose(0, 1).flatten(0, 1)  # [n * world, D]
            y = pl_module.all_gather(y).transpose(0, 1).flatten(0, 1)  # [n * world]
            total = _dataset_length(pl_module.trainer, index)
            if total is not None:
                x, y = x[:total], y[:total]
        return x, y

    def _finish(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not self._active(trainer) or not self._buffers.get(1, ([], []))[0]:
            return
        feature_sets = {"": self._buffers, **self._extra}
        self._buffers, self._extra = {}, {}
        for feature_set, buffers in feature_sets.items():
            bank, bank_labels = self._gathered(pl_module, 0, buffers)
            query, query_labels = self._gathered(pl_module, 1, buffers)
            for name, value in self.evaluate(bank, bank_labels, query, query_labels).items():
                pl_module.log(
                    staged(stage, name, feature_set),
                    value,
                    add_dataloader_idx=False,
                    sync_dist=False,
                )

    # Lightning hooks ---------------------------------------------------------------------
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start(trainer)

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._collect(trainer, outputs, dataloader_idx)

    # test runs collect like validation (a subclass that overrides a hook re-aliases it)
    on_test_epoch_start = on_validation_epoch_start
    on_test_batch_end = on_validation_batch_end

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._finish(trainer, pl_module, VAL)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._finish(trainer, pl_module, TEST)
