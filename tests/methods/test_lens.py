"""The adversarial lens (Minderer et al., arXiv 2002.08822): model, training step, checkpoint."""

from __future__ import annotations

import csv
import functools
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader, Dataset

from ssl_biases.cli import SSLBiasesCLI, cli_main
from ssl_biases.methods import BYOL, SimCLR
from ssl_biases.methods.lens import Lens, lens_edit_grid, reverse_gradient
from ssl_biases.methods.training import Training

from helpers import CONFIGS, tiny_args


class FixedBatch(Dataset):
    """The same ``(views, labels)`` batch ``steps`` times (``batch_size=None`` loaders)."""

    def __init__(self, views: list[torch.Tensor], labels: torch.Tensor, steps: int) -> None:
        self.views, self.labels, self.steps = views, labels, steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, index: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        return self.views, self.labels


def constant_lr(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def fit_fixed_batch(
    model: SimCLR, views: list[torch.Tensor], steps: int, callbacks: list[Callback] | None = None
) -> Trainer:
    labels = torch.arange(views[0].shape[0]) % 2
    trainer = Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=callbacks,
    )
    trainer.fit(model, DataLoader(FixedBatch(views, labels, steps), batch_size=None))
    return trainer


def simclr_with_lens(net, lens: Lens, backbone_lr: float = 0.0, sgd: bool = False) -> SimCLR:
    optimizer = functools.partial(
        torch.optim.SGD if sgd else torch.optim.AdamW, lr=backbone_lr, weight_decay=0.0
    )
    training = Training(num_classes=2, optimizer=optimizer, scheduler=constant_lr,
                        scale_lr=False, warmup_fraction=0.0)  # fmt: skip
    return SimCLR(net, projection_hidden_dim=32, projection_dim=16, lens=lens,
                  training=training)  # fmt: skip


@torch.no_grad()
def lensed_ssl_loss(model: SimCLR, views: list[torch.Tensor]) -> float:
    return model.ssl_step([model.lens(v) for v in views])[0].item()


def test_lens_starts_as_the_identity_and_keeps_any_image_size() -> None:
    lens = Lens(width=4, depth=2)
    x = torch.randn(2, 3, 17, 23)
    assert torch.equal(lens(x), x)
    torch.nn.init.normal_(lens.out.weight)
    y = lens(x)
    assert y.shape == x.shape and (y - x).abs().mean() > 1e-3
    with pytest.raises(ValueError, match="lambda_rec"):
        Lens(lambda_rec=-1.0)


def test_reverse_gradient_is_identity_forward_and_negates_backward() -> None:
    x = torch.randn(5, requires_grad=True)
    y = reverse_gradient(x)
    assert torch.equal(y, x)
    (y * torch.arange(5.0)).sum().backward()
    assert torch.equal(x.grad, -torch.arange(5.0))


def test_reconstruction_loss_is_mean_squared_edit() -> None:
    views = [torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4)]
    lensed = [torch.full((2, 3, 4, 4), 2.0), torch.ones(2, 3, 4, 4)]
    assert Lens.reconstruction_loss(views, lensed).item() == pytest.approx((4.0 + 0.0) / 2)


def test_lens_step_increases_the_ssl_loss_on_a_fixed_batch(fixed_images, tiny_net) -> None:
    views = [fixed_images(8), fixed_images(8).flip(-1)]
    model = simclr_with_lens(tiny_net(), Lens(lambda_rec=0.1, width=4, lr=3e-3))
    before = lensed_ssl_loss(model, views)
    backbone = [p.detach().clone() for p in model.backbone.parameters()]
    fit_fixed_batch(model, views, steps=6)
    after = lensed_ssl_loss(model, views)
    assert after > before + 0.05, (before, after)
    # the backbone's LR is 0 here: the loss rose through the lens alone
    assert all(torch.equal(a, b) for a, b in zip(backbone, model.backbone.parameters()))


def test_large_lambda_rec_keeps_the_lens_near_the_identity(fixed_images, tiny_net) -> None:
    views = [fixed_images(8), fixed_images(8).flip(-1)]
    edits = {}
    for lambda_rec in (1e-3, 1e4):
        torch.manual_seed(0)
        model = simclr_with_lens(tiny_net(), Lens(lambda_rec=lambda_rec, width=4, lr=3e-3))
        fit_fixed_batch(model, views, steps=8)
        with torch.no_grad():
            edits[lambda_rec] = (model.lens(views[0]) - views[0]).pow(2).mean().item()
    assert edits[1e4] < 1e-4
    assert edits[1e4] < edits[1e-3] / 20, edits


def test_backbone_descends_the_ssl_loss_and_never_receives_the_lens_ascent(
    fixed_images, tiny_net
) -> None:
    views = [fixed_images(8), fixed_images(8).flip(-1)]
    model = simclr_with_lens(tiny_net(), Lens(lambda_rec=1.0, width=4, lr=1e-2), 0.5, sgd=True)
    torch.nn.init.normal_(model.lens.out.weight, std=0.1)  # a lens that already edits
    lens_before = [p.detach().clone() for p in model.lens.parameters()]
    backbone_before = [p.detach().clone() for p in model.backbone.parameters()]
    with torch.no_grad():
        lensed = [model.lens(v) for v in views]
    loss_before = model.ssl_step(lensed)[0]  # the loss on views the lens gives before the step
    expected = torch.autograd.grad(loss_before, list(model.backbone.parameters()))
    fit_fixed_batch(model, views, steps=1)
    for before, grad, after in zip(backbone_before, expected, model.backbone.parameters()):
        torch.testing.assert_close(after.detach(), before - 0.5 * grad, rtol=1e-4, atol=1e-6)
    assert any(not torch.equal(a, b) for a, b in zip(lens_before, model.lens.parameters()))
    with torch.no_grad():  # the backbone step lowered the loss on the old lensed views
        assert model.ssl_step(lensed)[0] < loss_before


class RecordFirstStep(Callback):
    """Student and teacher backbone parameters after the first training batch."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == 0:
            self.student = [p.detach().clone() for p in pl_module.backbone.parameters()]
            self.teacher = [p.detach().clone() for p in pl_module.teacher_backbone.parameters()]


def test_momentum_teachers_are_updated_in_manual_optimisation(fixed_images, tiny_net) -> None:
    views = [fixed_images(8), fixed_images(8).flip(-1)]
    model = BYOL(tiny_net(), projection_hidden_dim=32, prediction_hidden_dim=32,
                 projection_dim=16, momentum_start=0.5, lens=Lens(width=4),
                 training=Training(num_classes=2, scale_lr=False,
                                   warmup_fraction=0.0))  # fmt: skip
    teacher_before = [p.detach().clone() for p in model.teacher_backbone.parameters()]
    record = RecordFirstStep()
    trainer = fit_fixed_batch(model, views, steps=3, callbacks=[record])
    assert trainer.global_step == 3  # one global step per batch, as without a lens
    m = model.momentum(0)
    assert m == pytest.approx(0.5)
    for before, student, teacher in zip(teacher_before, record.student, record.teacher):
        torch.testing.assert_close(teacher, m * before + (1 - m) * student)  # EMA after step 0
    assert any(not torch.equal(a, b) for a, b in zip(teacher_before, record.teacher))


def test_lens_edit_grid_shows_inputs_outputs_and_scaled_differences() -> None:
    images = torch.zeros(2, 3, 4, 4)
    lensed = images.clone()
    lensed[0, :, 0, 0] = 1.0
    grid = lens_edit_grid(images, lensed, torch.full((3,), 0.5), torch.full((3,), 0.25))
    assert grid.shape == (6, 3, 4, 4)
    assert grid[0].eq(0.5).all() and grid[2, :, 0, 0].eq(0.75).all()
    assert grid[4, :, 0, 0].eq(1.0).all() and grid[4, :, 1, 1].eq(0.5).all()
    assert grid[5].eq(0.5).all()  # no edit: mid-grey


def cli_args(backbone_config: str, *extra: str) -> list[str]:
    """``tiny_args`` with the lens stacked on SimCLR and the shortcut-planted shapes."""
    return tiny_args(
        backbone_config,
        "--config", str(CONFIGS / "method/lens.yaml"),
        "--config", str(CONFIGS / "data/shapes_shortcut.yaml"),
        "--model.init_args.lens.init_args.width", "4",
        "--model.projection_hidden_dim", "32",
        "--data.image_size", "16",
        "--data.shapes_size", "64",
        "--data.batch_size", "16",
        "--data.max_probe_train_samples", "32",
        *extra,
    )  # fmt: skip


def test_lens_config_fits_logs_probes_and_edits_and_round_trips_the_checkpoint(
    tmp_path, monkeypatch, tiny_backbone_config
) -> None:
    monkeypatch.chdir(tmp_path)
    cli = cli_main(["fit", *cli_args(tiny_backbone_config, "--trainer.max_epochs", "1")])
    run = Path(cli.trainer.log_dir)
    with open(run / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    for name in ("knn_top1", "knn_top1_lensed", "knn_top1_concat", "offline_linear_top1_lensed"):
        values = [float(r[f"val/{name}"]) for r in rows if r.get(f"val/{name}")]
        assert values and 0.0 <= values[-1] <= 1.0, name
    assert [float(r["train/lens_rec_loss"]) for r in rows if r.get("train/lens_rec_loss")]
    assert list((run / "lens").glob("step_*.png"))  # clean queries
    assert list((run / "lens").glob("train_step_*.png"))  # training views, with the cue
    events = EventAccumulator(str(run)).Reload()
    tags = set(events.Tags()["images"])
    assert {"lens/input", "lens/lensed", "lens/difference", "lens/train_difference"} <= tags

    checkpoint = torch.load(run / "checkpoints/last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 4  # 64 images / 16 per batch, one step per batch
    lens_keys = [k for k in checkpoint["state_dict"] if k.startswith("lens.")]
    assert lens_keys
    main_state, lens_state = checkpoint["optimizer_states"]
    assert lens_state["param_groups"][0]["name"] == "lens"
    assert len(lens_state["state"]) == len(list(cli.model.lens.parameters()))
    assert all(g["name"] != "lens" for g in main_state["param_groups"])

    fresh = SSLBiasesCLI(
        args=cli_args(tiny_backbone_config, "--trainer.max_epochs", "1", "--seed_everything", "1"),
        run=False,
    )
    assert not torch.equal(fresh.model.lens.down[0][0].weight, cli.model.lens.down[0][0].weight)
    fresh.trainer.fit(fresh.model, fresh.datamodule, ckpt_path=str(run / "checkpoints/last.ckpt"))
    for key in lens_keys:
        assert torch.equal(fresh.model.state_dict()[key], checkpoint["state_dict"][key]), key
    restored = fresh.trainer.optimizers[1].state_dict()["state"]
    for index, state in lens_state["state"].items():
        assert torch.equal(restored[index]["exp_avg"], state["exp_avg"])
