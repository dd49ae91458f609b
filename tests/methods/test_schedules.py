"""Schedules sized to a time budget (`TimeBudget`): warm-up, decay, teacher momentum and DINO's
teacher temperature end inside ``max_time``; step- and epoch-bounded runs keep their schedule."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import SimpleNamespace

import pytest
import torch
from lightly.utils.scheduler import CosineWarmupScheduler
from lightning.pytorch import Callback, Trainer
from torch.utils.data import DataLoader, TensorDataset

from ssl_biases.cli import SSLBiasesCLI
from ssl_biases.methods import BYOL, DINO
from ssl_biases.methods.base import SSLMethod
from ssl_biases.methods.schedules import ScheduleProgress, warmup_cosine
from ssl_biases.methods.training import Training
from ssl_biases.probes.knn import KNNProbe
from ssl_biases.run.budget import DEFAULT_MAX_EPOCHS, TimeBudget, time_budget_trainer_args

from helpers import tiny_args

HOUR = 3600.0


class FakeClock(Callback):
    """Seconds that advance by ``step_seconds(i)`` with each step ``i`` the trainer completes;
    stops the run when they pass ``stop_after`` (the ``Timer``, on this clock)."""

    def __init__(self, step_seconds: Callable[[int], float], stop_after: float = HOUR) -> None:
        self.step_seconds = step_seconds
        self.stop_after = stop_after
        self.trainer: Trainer | None = None

    def __call__(self) -> float:
        steps = self.trainer.global_step if self.trainer is not None else 0
        return sum(self.step_seconds(i) for i in range(steps))

    def setup(self, trainer, pl_module, stage) -> None:
        self.trainer = trainer

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self() >= self.stop_after:
            trainer.should_stop = True


class RecordSchedules(Callback):
    """The LR factor, teacher momentum and (DINO) teacher temperature used at every step."""

    def __init__(self) -> None:
        self.lr: list[float] = []
        self.lr_factor: list[float] = []
        self.momentum: list[float] = []
        self.temperature: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        group = trainer.optimizers[0].param_groups[0]
        self.lr.append(group["lr"])
        self.lr_factor.append(group["lr"] / group["initial_lr"])
        step = trainer.global_step
        self.momentum.append(pl_module.momentum(step))
        if isinstance(pl_module, DINO):
            self.temperature.append(pl_module.teacher_temperature(step))


def two_view_loader(images: torch.Tensor, batch_size: int = 4) -> DataLoader:
    return DataLoader(
        TensorDataset(images, images.flip(-1), torch.zeros(len(images), dtype=torch.long)),
        batch_size=batch_size,
        collate_fn=lambda items: ([torch.stack([i[0] for i in items]),
                                   torch.stack([i[1] for i in items])],
                                  torch.stack([i[2] for i in items])),
    )  # fmt: skip


def tiny_byol(tiny_net) -> BYOL:
    return BYOL(tiny_net(depth=1), projection_hidden_dim=16, prediction_hidden_dim=16,
                projection_dim=8, momentum_start=0.99,
                training=Training(num_classes=2))  # fmt: skip


def fit(
    model: SSLMethod, images: torch.Tensor, *callbacks: Callback, ckpt_path: str | None = None,
    **bounds,
) -> Trainer:  # fmt: skip
    trainer = Trainer(
        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, callbacks=list(callbacks), **bounds,
    )  # fmt: skip
    trainer.fit(model, train_dataloaders=two_view_loader(images), ckpt_path=ckpt_path)
    return trainer


# ---------------------------------------------------------------------------- the progress
def test_progress_is_step_over_last_step_for_a_constant_total() -> None:
    progress = ScheduleProgress()
    assert progress(5) == 0.0  # no estimate yet: the schedule waits at its start
    progress.reestimate(0, 11)
    assert [progress(s) for s in range(12)] == pytest.approx([s / 10 for s in range(11)] + [1])
    progress.reestimate(4, 11)  # the same estimate again: the same line
    assert [progress(s) for s in range(4, 11)] == pytest.approx([s / 10 for s in range(4, 11)])


@pytest.mark.parametrize("new_total", [21, 201, 5])
def test_a_new_estimate_keeps_the_progress_continuous_and_reaches_1_at_its_last_step(
    new_total,
) -> None:
    progress = ScheduleProgress()
    progress.reestimate(0, 41)
    before = progress(4)  # 0.1
    progress.reestimate(4, new_total)
    last = max(new_total, 6) - 1  # at least one more step to reach the end
    values = [progress(s) for s in range(4, last + 1)]
    assert values[0] == before  # the step it is made for keeps its progress
    assert values[-1] == 1.0
    steps = [b - a for a, b in zip(values, values[1:])]
    assert min(steps) > 0 and max(steps) == pytest.approx(min(steps))  # rest spread evenly


def test_warmup_cosine_matches_lightly_at_step_over_last_step() -> None:
    total, warmup = 101, 5
    scheduler = CosineWarmupScheduler(
        torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), warmup, total, end_value=0.0
    )
    for step in range(total):
        # lightly's warm-up ends at step `warmup`, its cosine spans steps warmup..total-1
        p, nxt = step / (total - 1), (step + 1) / (total - 1)
        factor = warmup_cosine(p, nxt, warmup / (total - 1))
        assert factor == pytest.approx(scheduler.scale_lr(step), abs=1e-9), step


# ---------------------------------------------------------------------- the rule of bounds
@pytest.mark.parametrize(
    ("given", "max_epochs"),
    [
        ({}, DEFAULT_MAX_EPOCHS),
        ({"max_time": "00:00:10:00"}, None),  # the budget alone: Lightning makes it -1
        ({"max_time": "00:00:10:00", "max_steps": 60}, DEFAULT_MAX_EPOCHS),  # as before
        ({"max_time": "00:00:10:00", "max_epochs": 100}, 100),  # explicit: a bound
        ({"max_time": "00:00:10:00", "max_epochs": -1}, -1),
        ({"max_steps": 60}, DEFAULT_MAX_EPOCHS),
    ],
)
def test_max_epochs_is_a_bound_with_max_time_only_when_given(given, max_epochs) -> None:
    config = {"max_epochs": None, "max_steps": -1, "max_time": None, **given}
    config, callbacks = time_budget_trainer_args(config, [])
    assert config["max_epochs"] == max_epochs
    assert [type(c) for c in callbacks] == [TimeBudget]


def test_cli_leaves_max_epochs_unset_for_a_time_budget(tiny_backbone_config) -> None:
    budget = SSLBiasesCLI(tiny_args(tiny_backbone_config, "--trainer.max_time", "00:00:01:00"),
                          run=False)  # fmt: skip
    assert budget.trainer.fit_loop.max_epochs is None  # -1 at fit: no epoch bound
    assert any(isinstance(c, TimeBudget) for c in budget.trainer.callbacks)
    plain = SSLBiasesCLI(tiny_args(tiny_backbone_config), run=False)
    assert plain.trainer.max_epochs == DEFAULT_MAX_EPOCHS


# ------------------------------------------------------------------- step-bounded: as before
@pytest.mark.parametrize(("bounds", "total"), [({"max_steps": 23}, 23), ({"max_epochs": 3}, 12)])
def test_a_step_or_epoch_bound_keeps_the_cosine_warmup_schedule_exactly(
    bounds, total, fixed_images, tiny_net
) -> None:
    recorder = RecordSchedules()
    model = tiny_byol(tiny_net)
    trainer = fit(model, fixed_images(16), TimeBudget(), recorder, max_time={"hours": 1}, **bounds)
    assert trainer.global_step == total and model.time_budget() is None
    initial = trainer.optimizers[0].param_groups[0]["initial_lr"]
    reference = CosineWarmupScheduler(
        torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=initial),
        warmup_epochs=int(0.05 * total), max_epochs=total, end_value=0.0,
    )  # fmt: skip
    expected = []
    for _ in range(total):
        expected.append(reference.optimizer.param_groups[0]["lr"])
        reference.step()
    assert recorder.lr == expected  # bit for bit


# ----------------------------------------------------------------------- max_time alone
@pytest.mark.parametrize("accumulate", [1, 2])
def test_a_time_budget_warms_up_decays_to_zero_and_brings_momentum_to_1(
    accumulate, fixed_images, tiny_net
) -> None:
    clock = FakeClock(lambda step: 60.0)  # 60 s a step, a 1 h budget: 60 steps at most
    recorder = RecordSchedules()
    model = tiny_byol(tiny_net)
    trainer = fit(model, fixed_images(16), clock, TimeBudget(clock=clock), recorder,
                  max_time={"hours": 1}, accumulate_grad_batches=accumulate)  # fmt: skip
    # 2% of the hour (72 s) is kept for the final validation: 58 steps, stopped by the budget
    assert trainer.global_step == 58 and clock() < HOUR
    assert trainer.callback_metrics["train/estimated_total_steps"] == 58
    factors = recorder.lr_factor[::accumulate]  # one per optimisation step
    assert len(factors) == 58 and factors[:3] == [0.0, 0.0, 0.0]  # until the first measurement
    peak = factors.index(max(factors))
    assert max(factors) == pytest.approx(1.0, abs=0.02) and 3 <= peak <= 6
    assert all(a >= b for a, b in zip(factors[peak:], factors[peak + 1 :]))  # then only down
    assert factors[-1] == 0.0 and factors[-2] < 0.01
    momentum = recorder.momentum[::accumulate]
    assert momentum[0] == pytest.approx(0.99) and momentum[-1] == 1.0
    assert all(a <= b for a, b in zip(momentum, momentum[1:]))


def test_dino_teacher_temperature_warms_up_within_the_budget(fixed_images, tiny_net) -> None:
    clock = FakeClock(lambda step: 60.0)
    recorder = RecordSchedules()
    model = DINO(tiny_net(depth=1), hidden_dim=16, bottleneck_dim=8, output_dim=16,
                 n_local_views=0, training=Training(num_classes=2))  # fmt: skip
    fit(model, fixed_images(16), clock, TimeBudget(clock=clock), recorder, max_time={"hours": 1})
    temps = recorder.temperature
    assert temps[0] == pytest.approx(0.04) and temps[-1] == pytest.approx(0.07)
    warm = next(i for i, t in enumerate(temps) if t == pytest.approx(0.07))
    assert 0.25 * len(temps) <= warm <= 0.4 * len(temps)  # 30% of the progress
    assert all(a <= b for a, b in zip(temps, temps[1:]))
    assert recorder.momentum[-1] == 1.0


@pytest.mark.parametrize("later_seconds", [30.0, 120.0])
def test_a_changing_step_time_never_jumps_and_still_ends_the_schedule_in_the_budget(
    later_seconds, fixed_images, tiny_net
) -> None:
    clock = FakeClock(lambda step: 60.0 if step < 20 else later_seconds)
    recorder = RecordSchedules()
    fit(tiny_byol(tiny_net), fixed_images(16), clock, TimeBudget(clock=clock, window=20),
        recorder, max_time={"hours": 1})  # fmt: skip
    factors = recorder.lr_factor
    peak = factors.index(max(factors))
    assert peak < 10 and all(a >= b for a, b in zip(factors[peak:], factors[peak + 1 :]))
    assert max(abs(a - b) for a, b in zip(factors[peak:], factors[peak + 1 :])) < 0.1
    assert factors[-1] < 0.02 and recorder.momentum[-1] > 0.9999  # ended, not truncated
    assert clock() <= HOUR


def test_a_resumed_time_budget_continues_the_same_schedule(
    fixed_images, tiny_net, tmp_path
) -> None:
    images = fixed_images(16)
    clock, reference = FakeClock(lambda step: 60.0), RecordSchedules()
    fit(tiny_byol(tiny_net), images, clock, TimeBudget(clock=clock), reference,
        max_time={"hours": 1})  # fmt: skip

    class StopAt(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            trainer.should_stop = trainer.global_step == 25 or trainer.should_stop

    clock = FakeClock(lambda step: 60.0)
    first = fit(tiny_byol(tiny_net), images, clock, TimeBudget(clock=clock), StopAt(),
                max_time={"hours": 1})  # fmt: skip
    assert first.global_step == 25
    first.save_checkpoint(tmp_path / "mid.ckpt")
    clock, resumed = FakeClock(lambda step: 60.0), RecordSchedules()
    fit(tiny_byol(tiny_net), images, clock, TimeBudget(clock=clock), resumed,
        max_time={"hours": 1}, ckpt_path=str(tmp_path / "mid.ckpt"))  # fmt: skip
    assert len(reference.lr) == 58 and reference.lr[-1] == 0.0
    assert resumed.lr == pytest.approx(reference.lr[25:], rel=1e-12)
    assert resumed.momentum == pytest.approx(reference.momentum[25:], rel=1e-12)


def test_a_real_clock_budget_of_a_few_seconds_ends_its_schedule(fixed_images, tiny_net) -> None:
    class Slow(Callback):  # a step of at least 40 ms, whatever the machine's load
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            time.sleep(0.04)

    recorder = RecordSchedules()
    trainer = fit(tiny_byol(tiny_net), fixed_images(16), Slow(), TimeBudget(), recorder,
                  max_time={"seconds": 4})  # fmt: skip
    factors = recorder.lr_factor
    assert trainer.global_step >= 20
    assert max(factors) > 0.95 and factors[-1] < 0.1 and recorder.momentum[-1] > 0.999


@pytest.mark.parametrize(("max_epochs", "active"), [(-1, [False, True]), (3, [False, True])])
def test_probes_keep_their_every_n_epochs_without_an_epoch_bound(max_epochs, active) -> None:
    probe = KNNProbe(every_n_epochs=2)  # epochs 1 and 2 (current_epoch 0 and 1)
    fit_state = SimpleNamespace(fn="fit")
    trainers = [
        SimpleNamespace(sanity_checking=False, state=fit_state, current_epoch=epoch,
                        max_epochs=max_epochs, should_stop=False, max_steps=-1, global_step=0)
        for epoch in (0, 1)
    ]  # fmt: skip
    assert [probe._active(t) for t in trainers] == active  # -1: not "the last epoch" each time
