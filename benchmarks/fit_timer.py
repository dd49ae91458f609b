"""A callback that times ``ssl-biases fit`` itself, step by step (benchmarks/gpu_check.py).

``gpu_check`` runs the real CLI (``python -m ssl_biases fit ...``: the Lightning loop with every
callback, logger and guard a user gets) and adds this callback with ``--trainer.callbacks+=``
(``benchmarks/`` on ``PYTHONPATH``). It counts the FLOPs of the first step
(``FlopCounterMode``: forward and backward), lets ``warmup`` steps pass, synchronises the
device, records the host wall time of each of the next ``steps`` loop iterations (data,
views, forward, loss, backward, optimiser, callbacks, logging), synchronises again, writes
the figures to ``out`` (JSON) and stops the run.

With ``ready_views`` the views are made once and handed back unchanged every step
(:class:`ReadyViews`): the upper bound of a run whose data is already on the device.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.flop_counter import FlopCounterMode


class ReadyViews:
    """Makes the views of the first batch with ``views`` and returns them for every batch."""

    def __init__(self, views: Any) -> None:
        self.views = views
        self.ready: Any = None

    def __call__(self, images: torch.Tensor, keys: torch.Tensor) -> Any:
        if self.ready is None:
            self.ready = self.views(images, keys)
        return self.ready


def synchronize(device: torch.device) -> None:
    """Waits for the device's queued work (CUDA); nothing on a CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images_in(batch: Any) -> int:
    """Images the backbone sees in a ``(views, labels)`` batch (every view counted)."""
    views = batch[0] if isinstance(batch, (list, tuple)) else batch
    if isinstance(views, torch.Tensor):
        return int(views.shape[0])
    return sum(int(v.shape[0]) for v in views if isinstance(v, torch.Tensor))


class FitStepTimer(pl.Callback):
    """Times ``steps`` training steps of a fit after ``warmup`` steps; writes JSON; stops the fit.

    Args:
        out: The JSON file to write.
        warmup: Steps before the timed ones (compilation, autotuning, the loader workers'
            first burst of batches).
        steps: Timed steps.
        ready_views: Replace the data module's device views by :class:`ReadyViews` (needs
            ``--data.augment device``).
    """

    def __init__(self, out: str, warmup: int = 20, steps: int = 40, ready_views: bool = False):
        if warmup < 1 or steps < 1:
            raise ValueError(f"warmup and steps must be >= 1, got {warmup} and {steps}")
        self.out = Path(out)
        self.warmup, self.steps, self.ready_views = warmup, steps, ready_views
        self.done = 0
        self.flops: float | None = None
        self.images = 0
        self._counter: FlopCounterMode | None = None
        self._start = self._last = 0.0
        self.step_seconds: list[float] = []

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not self.ready_views or stage != "fit":
            return
        datamodule = trainer.datamodule
        views = getattr(datamodule, "device_views", None)
        if views is None:
            raise ValueError("ready_views replaces the device views: add --data.augment device")
        datamodule.device_views = ReadyViews(views)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.done == 0 and self._counter is None:
            self._counter = FlopCounterMode(display=False)
            self._counter.__enter__()

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self.done == 0 and self._counter is not None:
            self._counter.__exit__(None, None, None)
            self.flops = float(self._counter.get_total_flops())
            self.images = images_in(batch)
        self.done += 1
        now = time.perf_counter()
        if self.done == self.warmup:
            synchronize(pl_module.device)
            self._start = self._last = time.perf_counter()
        elif self.done > self.warmup:
            self.step_seconds.append(now - self._last)
            self._last = now
        if self.done == self.warmup + self.steps:
            synchronize(pl_module.device)
            self.write((time.perf_counter() - self._start) / self.steps, pl_module.device)
            trainer.should_stop = True

    def write(self, mean_seconds: float, device: torch.device) -> dict[str, Any]:
        """The figures of the timed steps, written to ``out`` and returned."""
        median = statistics.median(self.step_seconds)
        result = {
            "steps": self.steps,
            "warmup": self.warmup,
            "images_per_step": self.images,
            "step_ms_mean": 1000 * mean_seconds,  # synchronised at both ends
            "step_ms_median": 1000 * median,  # per loop iteration, host clock
            "step_ms_max": 1000 * max(self.step_seconds),
            "images_per_s": self.images / median,
            "images_per_s_mean": self.images / mean_seconds,
            "flops_per_step": self.flops,
            "peak_memory_gib": (
                torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
            ),
        }
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(json.dumps(result, indent=2))
        return result
