"""`TrainingHook`: the fixed points at which one object may change how a method trains.

:class:`~ssl_biases.methods.base.SSLMethod` calls its hook at three points: around the SSL
step (:meth:`TrainingHook.ssl_losses`, which may edit the views and add a loss), when the
optimizers are configured (:meth:`TrainingHook.configure_optimizer`, an optimizer of its own)
and when frozen features are extracted for the probes (:meth:`TrainingHook.eval_features`).
The default hook changes nothing; the adversarial lens of arXiv 2002.08822
(:class:`~ssl_biases.methods.lens.Lens`) is one. This module imports no method, so a hook
never imports the base that calls it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import lightning.pytorch as pl
from torch import Tensor, nn

SSLStep = Callable[[list[Tensor]], tuple[Tensor, Tensor]]
"""A method's ``ssl_step``: views -> ``(loss, features [B, D])``."""


class SSLLosses(NamedTuple):
    """What one training step's SSL part gives the base.

    Attributes:
        ssl: The method's SSL loss (logged as ``train/loss``).
        features: ``[B, D]`` backbone features of the first view (the online probe's input).
        extra: The hook's own loss term, added to the total (0 for no hook).
        metrics: The hook's logged values, ``{name: scalar}``.
    """

    ssl: Tensor
    features: Tensor
    extra: Tensor | float
    metrics: dict[str, Tensor]


class TrainingHook:
    """The no-op hook; subclasses override the points they change."""

    #: An optimizer of the hook's own means Lightning's manual optimisation (two optimizers).
    has_optimizer: bool = False

    def ssl_losses(self, views: list[Tensor], ssl_step: SSLStep) -> SSLLosses:
        """Runs the method's ``ssl_step`` on ``views`` (a hook may edit them first)."""
        loss, features = ssl_step(views)
        return SSLLosses(loss, features, 0.0, {})

    def configure_optimizer(self, main_scheduler: Any) -> tuple[Any, dict[str, Any]] | None:
        """``(optimizer, lr_scheduler config)`` of the hook's own parameters, or ``None``.

        Args:
            main_scheduler: The scheduler of the backbone and heads (a hook may follow it).
        """
        return None

    def eval_features(
        self,
        module: pl.LightningModule,
        backbone: nn.Module,
        images: Tensor,
        features: Tensor,
        batch_idx: int,
        dataloader_idx: int,
    ) -> dict[str, Tensor]:
        """Extra ``{name: [B, D']}`` features for the frozen-feature probes (none here).

        Args:
            module: The method (for its trainer and loggers).
            backbone: The method's backbone.
            images: ``[B, C, H, W]`` probe images.
            features: ``[B, D]`` their backbone features.
            batch_idx: The batch's index in its loader.
            dataloader_idx: 0 for the probe's train split, 1 for its queries.
        """
        return {}


NO_HOOK = TrainingHook()
