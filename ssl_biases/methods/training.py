"""`Training`: what every method shares, stated once (``training:`` in a method's config).

The optimizer and scheduler factories, the warm-up, LR scaling, the online probe and
``torch.compile`` are the same knobs for every method, so they live in one typed object that
:class:`~ssl_biases.methods.base.SSLMethod` takes; a method's own signature holds only its own
knobs, the backbone and the lens. In YAML::

    model:
      class_path: ssl_biases.methods.SimCLR
      init_args:
        temperature: 0.2
        training:
          optimizer:
            class_path: torch.optim.AdamW
            init_args: {lr: 1.0e-3, weight_decay: 0.05}
          warmup_fraction: 0.05

jsonargparse reads a dataclass as a nested group: each field is checked against its type and a
misspelt one is an error (``--model.init_args.training.warmup_fraction 0.1`` on the command
line). Runs written before this object (the knobs flat on the method) are read in this shape
by :mod:`ssl_biases.run.legacy`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

FACTORIES = ("optimizer", "scheduler")
"""The fields that are factories (callables): kept out of the saved hyperparameters, as the
backbone is; ``RUN/config.yaml`` holds them."""


@dataclass(frozen=True)
class Training:
    """The knobs every method shares: optimisation, schedule, online probe, compile.

    Args:
        num_classes: Classes of the online linear probe (the CLI links it to the data's).
        optimizer: Optimizer factory, called with parameter groups; its ``lr`` is the base LR
            for a global batch of ``reference_batch_size``.
        scheduler: LR scheduler factory; ``None`` gives linear warm-up then cosine decay to 0,
            stepped every optimisation step, over the run's steps (or, when ``max_time`` alone
            bounds the run, over the steps estimated to fit the budget).
        warmup_fraction: Fraction of the total steps spent in linear warm-up, in ``[0, 1]``.
        scale_lr: Scale every group's LR by ``global_batch / reference_batch_size`` (the linear
            scaling rule, Goyal et al., arXiv 1706.02677).
        reference_batch_size: The batch size the base LR refers to (256).
        online_probe_lr: LR of the online linear probe (not scaled, no weight decay).
        compile: Compile the backbone with ``torch.compile`` (opt-in; in place, so parameter
            names and checkpoints do not change): its ``forward`` and the entry points the
            masked methods call (``embed_patches``, ``forward_tokens``, ...), and its EMA
            teachers. Pays off on a GPU for long runs; the first
            steps are slow while it compiles (see docs/performance.md).

    Raises:
        ValueError: for a warm-up fraction outside ``[0, 1]``, or a class count, reference
            batch size or probe LR that is not positive.
    """

    num_classes: int = 10
    optimizer: OptimizerCallable = torch.optim.AdamW
    scheduler: LRSchedulerCallable | None = None
    warmup_fraction: float = 0.05
    scale_lr: bool = True
    reference_batch_size: int = 256
    online_probe_lr: float = 1e-3
    compile: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.warmup_fraction <= 1.0:
            raise ValueError(
                f"training.warmup_fraction is a fraction of the run's steps in [0, 1], got "
                f"{self.warmup_fraction}"
            )
        for name in ("num_classes", "reference_batch_size", "online_probe_lr"):
            if getattr(self, name) <= 0:
                raise ValueError(f"training.{name} must be positive, got {getattr(self, name)}")

    def hparams(self) -> dict[str, Any]:
        """The plain-data fields (all but the factories), as saved in a checkpoint's
        hyperparameters under ``training`` (readable with ``torch.load(weights_only=True)``)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in FACTORIES}
