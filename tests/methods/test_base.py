"""The momentum teachers of `SSLMethod`: frozen copies, EMA after each step, cosine schedule."""

from __future__ import annotations

import inspect
import math
from dataclasses import fields

import pytest
import torch
from jsonargparse import ArgumentError, ArgumentParser
from lightly.utils.scheduler import cosine_schedule
from lightning.pytorch import Callback, Trainer
from torch.utils.data import DataLoader, TensorDataset

from ssl_biases.methods import (
    BYOL,
    DINO,
    IBOT,
    IJEPA,
    MAE,
    BarlowTwins,
    MaskedModeling,
    MaskedReconstruction,
    MoCoV3,
    SimCLR,
    SSLMethod,
    VICReg,
)
from ssl_biases.methods.lens import Lens
from ssl_biases.methods.training import FACTORIES, Training


class RecordParams(Callback):
    """Stores student and teacher parameters before and after every training batch."""

    def __init__(self) -> None:
        self.before: list[list[torch.Tensor]] = []
        self.after: list[tuple[list[torch.Tensor], list[torch.Tensor]]] = []
        self.teacher_grads: list[bool] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.before.append([p.detach().clone() for p in pl_module.teacher_backbone.parameters()])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        student = [p.detach().clone() for p in pl_module.backbone.parameters()]
        teacher = [p.detach().clone() for p in pl_module.teacher_backbone.parameters()]
        self.after.append((student, teacher))
        self.teacher_grads.append(
            any(p.grad is not None for p in pl_module.teacher_backbone.parameters())
        )


def test_teacher_is_frozen_and_becomes_the_ema_of_the_student_after_each_step(
    fixed_images, tiny_net
) -> None:
    model = BYOL(tiny_net(), projection_hidden_dim=32, prediction_hidden_dim=32,
                 projection_dim=16, momentum_start=0.5,
                 training=Training(num_classes=2))  # fmt: skip
    assert all(not p.requires_grad for p in model.teacher_backbone.parameters())
    assert all(not p.requires_grad for p in model.teacher_projection_head.parameters())
    images = fixed_images(12)
    loader = DataLoader(
        TensorDataset(images, images.flip(-1), torch.zeros(12, dtype=torch.long)),
        batch_size=4,
        collate_fn=lambda items: ([torch.stack([i[0] for i in items]),
                                   torch.stack([i[1] for i in items])],
                                  torch.stack([i[2] for i in items])),
    )  # fmt: skip
    recorder = RecordParams()
    trainer = Trainer(
        max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
        callbacks=[recorder],
    )  # fmt: skip
    trainer.fit(model, train_dataloaders=loader)
    assert recorder.teacher_grads == [False, False, False]
    for step in range(3):
        m = cosine_schedule(step, 3, 0.5, 1.0)
        student, teacher = recorder.after[step]
        for t_before, s_after, t_after in zip(recorder.before[step], student, teacher):
            torch.testing.assert_close(t_after, m * t_before + (1 - m) * s_after)
    # the last step uses m = 1: the teacher did not move
    assert all(torch.equal(a, b) for a, b in zip(recorder.before[2], recorder.after[2][1]))
    assert not all(torch.equal(a, b) for a, b in zip(recorder.before[0], recorder.after[0][1]))


def test_momentum_follows_the_cosine_schedule_and_holds_without_a_step_budget(
    monkeypatch, tiny_net
) -> None:
    model = BYOL(tiny_net(), projection_hidden_dim=16, prediction_hidden_dim=16,
                 projection_dim=8, momentum_start=0.99)  # fmt: skip
    assert model.momentum(5) == 0.99  # no trainer: infinite budget, m stays at the start
    monkeypatch.setattr(model, "total_steps", lambda: 101.0)
    assert model.momentum(0) == pytest.approx(0.99)
    assert model.momentum(50) == pytest.approx(0.995)  # half-way: (0.99 + 1) / 2
    assert model.momentum(25) == pytest.approx(1 - 0.01 * (1 + math.cos(math.pi / 4)) / 2)
    assert model.momentum(100) == 1.0
    assert model.momentum(150) == 1.0  # past the end (e.g. extra steps): clamp, no warning
    monkeypatch.setattr(model, "total_steps", lambda: math.inf)
    assert model.momentum(10**6) == 0.99


def test_methods_without_a_teacher_have_no_momentum_pairs(tiny_net) -> None:
    model = SimCLR(tiny_net())
    assert model.momentum_pairs() == []
    before = [p.clone() for p in model.parameters()]
    model.update_teachers(0.5)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_the_teacher_is_deterministic_even_when_the_student_drops_paths(tiny_net) -> None:
    model = BYOL(tiny_net(drop_path=0.5), projection_hidden_dim=16, prediction_hidden_dim=16,
                 projection_dim=8).train()  # fmt: skip
    x = torch.randn(2, 3, 16, 16)
    assert not torch.equal(model.backbone(x), model.backbone(x))
    assert torch.equal(model.teacher_backbone(x), model.teacher_backbone(x))


# ------------------------------------------------------------------ constructor arguments
ALL_METHODS = [BarlowTwins, BYOL, DINO, IBOT, IJEPA, MAE, MaskedModeling, MaskedReconstruction,
               MoCoV3, SimCLR, VICReg]  # fmt: skip


SHARED = {"lens", "training"}  # what a method passes to the base, after its own knobs (*)


@pytest.mark.parametrize("method", ALL_METHODS, ids=lambda cls: cls.__name__)
def test_a_method_takes_its_own_knobs_then_the_lens_and_the_training_object(method) -> None:
    parent = method.__mro__[1]
    params = inspect.signature(method.__init__).parameters
    assert all(p.kind is not inspect.Parameter.VAR_KEYWORD for p in params.values())
    for name, inherited in inspect.signature(parent.__init__).parameters.items():
        if name == "self":
            continue
        own = params[name]
        assert own.annotation == inherited.annotation, name
        if own.kind is inspect.Parameter.KEYWORD_ONLY:  # restated, not the method's own knob
            assert own.default == inherited.default, name
    assert list(params)[-2:] == ["lens", "training"]
    assert all(params[name].kind is inspect.Parameter.KEYWORD_ONLY for name in SHARED)
    assert params["training"].default == Training()  # the defaults stated once
    shared_fields = {f.name for f in fields(Training)}
    assert not shared_fields & set(params), "a shared knob restated by the method"


def test_simclr_takes_at_most_eleven_parameters() -> None:
    assert len(inspect.signature(SimCLR.__init__).parameters) <= 11  # self, backbone, 7, 2


@pytest.mark.parametrize("method", ALL_METHODS, ids=lambda cls: cls.__name__)
def test_the_parser_lists_every_training_knob_and_rejects_a_typo(method) -> None:
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(method, "model", skip={"backbone"})
    help_text = parser.format_help()
    for field in fields(Training):
        assert f"--model.training.{field.name} " in help_text, field.name
    config = parser.parse_args(
        ["--model.training.warmup_fraction=0.25", "--model.training.num_classes=7"]
    )
    training = config.model.training
    assert (training.warmup_fraction, training.num_classes) == (0.25, 7)
    assert training.scale_lr is True and config.model.lens is None  # defaults shown
    with pytest.raises(ArgumentError, match="warmup_fractoin"):
        parser.parse_args(["--model.training.warmup_fractoin=0.25"])
    with pytest.raises(ArgumentError, match="warmup_fraction"):  # the old flat shape
        parser.parse_args(["--model.warmup_fraction=0.25"])


def test_a_method_hands_the_lens_and_the_training_object_to_the_base(tiny_net) -> None:
    lens = Lens(width=4)
    training = Training(num_classes=3, warmup_fraction=0.2, scale_lr=False,
                        reference_batch_size=64, online_probe_lr=0.5)  # fmt: skip
    model = IBOT(tiny_net(), hidden_dim=16, bottleneck_dim=8, output_dim=16, lens=lens,
                 training=training)  # fmt: skip
    assert model.online_probe.out_features == 3 and model.lens is lens
    assert model.training_setup is training and model.training is True  # nn.Module's flag
    assert model.hparams.training == {
        "num_classes": 3, "warmup_fraction": 0.2, "scale_lr": False,
        "reference_batch_size": 64, "online_probe_lr": 0.5, "compile": False,
    }  # fmt: skip
    assert model.hparams.output_dim == 16  # DINO's argument, through iBOT


@pytest.mark.parametrize(
    ("knob", "value"),
    [("warmup_fraction", 1.5), ("warmup_fraction", -0.1), ("num_classes", 0),
     ("reference_batch_size", 0), ("online_probe_lr", 0.0)],
)  # fmt: skip
def test_a_training_knob_out_of_range_is_a_value_error_naming_it(knob, value) -> None:
    with pytest.raises(ValueError, match=f"training.{knob}"):
        Training(**{knob: value})


@pytest.mark.parametrize("method", ALL_METHODS, ids=lambda cls: cls.__name__)
def test_hparams_hold_the_whole_constructor_chain_but_the_modules_and_factories(
    method, tiny_net
) -> None:
    assert "save_hyperparameters" not in inspect.getsource(method.__init__)  # the base's only
    names = set()
    for cls in method.__mro__[: method.__mro__.index(SSLMethod) + 1]:
        names |= set(inspect.signature(cls.__init__).parameters)
    model = method(tiny_net(), training=Training(num_classes=2))
    assert set(model.hparams) == names - {"self", "backbone", "lens"}
    assert set(model.hparams.training) == {f.name for f in fields(Training)} - set(FACTORIES)


def test_a_subclass_hyperparameter_is_saved_and_the_backbone_is_not(tiny_net) -> None:
    model = SimCLR(tiny_net(), temperature=0.37, training=Training(num_classes=2))
    assert model.hparams.temperature == 0.37 and model.hparams.training["num_classes"] == 2
    assert "backbone" not in model.hparams and "lens" not in model.hparams
