"""Method configs: each parses and instantiates with any data and compatible backbone config,
refuses incompatible backbones with the promised error, and fits a few steps end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ssl_biases.cli import SSLBiasesCLI, cli_main
from ssl_biases.methods import (
    BYOL,
    DINO,
    IBOT,
    IJEPA,
    MAE,
    BarlowTwins,
    MaskedModeling,
    MoCoV3,
    SimCLR,
    VICReg,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
METHODS = {"simclr": SimCLR, "byol": BYOL, "dino": DINO, "mae": MAE, "masked": MaskedModeling}
METHODS |= {"ijepa": IJEPA, "ibot": IBOT}  # masked prediction with a mask token
METHODS |= {"mocov3": MoCoV3, "vicreg": VICReg, "barlow_twins": BarlowTwins}
TINY_ISOTROPIC = ["vit_tiny", "localvit_tiny", "mixer_tiny", "convmixer_tiny", "poolformer_tiny"]
TINY_BACKBONES = [*TINY_ISOTROPIC, "resnet18_cifar"]


def args(method: str, backbone: str, *extra: str) -> list[str]:
    return [
        "--config", str(CONFIGS / f"method/{method}.yaml"),
        "--config", backbone,
        "--config", str(CONFIGS / "data/shapes.yaml"),
        "--data.num_workers", "0",
        *extra,
    ]  # fmt: skip


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_config_instantiates_with_the_vit_tiny_config(method) -> None:
    cli = SSLBiasesCLI(args=args(method, str(CONFIGS / "backbone/vit_tiny.yaml")), run=False)
    assert type(cli.model) is METHODS[method]
    assert cli.model.backbone.num_features == 192


@pytest.mark.parametrize("method", ["simclr", "byol", "masked"])
def test_methods_that_need_no_token_dropping_take_an_mlp_mixer(method) -> None:
    cli = SSLBiasesCLI(args=args(method, str(CONFIGS / "backbone/mixer_tiny.yaml")), run=False)
    assert cli.model.backbone.token_mixer == "mlp"


# each tiny backbone once, each new two-view method twice (they use the backbone alike)
@pytest.mark.parametrize(
    ("method", "backbone"),
    zip(["mocov3", "vicreg", "barlow_twins"] * 2, TINY_BACKBONES, strict=True),
)
def test_two_view_methods_take_every_tiny_backbone(method, backbone) -> None:
    cli = SSLBiasesCLI(args=args(method, str(CONFIGS / f"backbone/{backbone}.yaml")), run=False)
    views = [torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)]
    loss, features = cli.model.ssl_step(views)
    assert torch.isfinite(loss) and features.shape == (4, cli.model.backbone.num_features)


def test_mocov3_random_patch_projection_needs_a_patch_stem() -> None:
    vit = str(CONFIGS / "backbone/vit_tiny.yaml")
    cli = SSLBiasesCLI(args=args("mocov3", vit, "--model.freeze_patch_embed", "true"), run=False)
    assert not cli.model.backbone.stem.proj.weight.requires_grad
    resnet = str(CONFIGS / "backbone/resnet18_cifar.yaml")
    with pytest.raises(ValueError, match="freeze_patch_embed: false"):
        SSLBiasesCLI(args=args("mocov3", resnet, "--model.freeze_patch_embed", "true"), run=False)


def test_incompatible_pairs_raise_the_promised_errors() -> None:
    mixer = str(CONFIGS / "backbone/mixer_tiny.yaml")
    with pytest.raises(ValueError, match="configs/method/masked.yaml"):
        SSLBiasesCLI(args=args("mae", mixer), run=False)
    with pytest.raises(ValueError, match="n_local_views: 0"):
        SSLBiasesCLI(args=args("dino", mixer), run=False)
    cli = SSLBiasesCLI(args=args("dino", mixer, "--model.n_local_views", "0"), run=False)
    assert cli.model.hparams.n_local_views == 0


@pytest.mark.parametrize("backbone", TINY_ISOTROPIC)
@pytest.mark.parametrize("method", ["ijepa", "ibot"])
def test_mask_token_methods_take_every_tiny_isotropic_backbone_and_refuse_a_resnet(
    method, backbone
) -> None:
    cli = SSLBiasesCLI(args=args(method, str(CONFIGS / f"backbone/{backbone}.yaml")), run=False)
    assert type(cli.model) is METHODS[method]
    torch.manual_seed(0)
    images = torch.randn(2, 3, 32, 32)
    loss, features = cli.model.ssl_step([images, images.flip(-1)])
    assert torch.isfinite(loss) and features.shape == (2, 192)
    if backbone == "vit_tiny":
        with pytest.raises(ValueError, match="IsotropicNet, any token_mixer"):
            SSLBiasesCLI(
                args=args(method, str(CONFIGS / "backbone/resnet18_cifar.yaml")), run=False
            )


@pytest.mark.parametrize(
    "method",
    ["byol", "dino", "mae", "masked", "ijepa", "ibot", "mocov3", "vicreg", "barlow_twins"],
)
def test_fit_a_few_steps_and_the_checkpoint_reproduces_student_teacher_and_centre(
    method, tmp_path, monkeypatch, tiny_backbone_config
) -> None:
    monkeypatch.chdir(tmp_path)
    cli = cli_main(
        ["fit", *args(method, tiny_backbone_config,
                      "--data.shapes_size", "64", "--data.batch_size", "16",
                      "--data.max_probe_train_samples", "32",
                      "--trainer.max_steps", "3", "--trainer.accelerator", "cpu",
                      "--trainer.enable_progress_bar", "false",
                      "--trainer.enable_model_summary", "false")]
    )  # fmt: skip
    run = Path(cli.trainer.log_dir)
    checkpoint = torch.load(run / "checkpoints/last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 3
    state = cli.model.state_dict()
    assert state.keys() == checkpoint["state_dict"].keys()
    assert all(torch.equal(state[k], checkpoint["state_dict"][k]) for k in state)
    if method in ("byol", "dino", "ijepa", "ibot", "mocov3"):
        assert any(k.startswith("teacher_backbone.") for k in state)
        student = cli.model.backbone.stem.proj.weight
        teacher = cli.model.teacher_backbone.stem.proj.weight
        assert not torch.equal(student, teacher)  # the teacher lags behind the student
    if method == "dino":
        assert state["criterion.center"].abs().sum() > 0  # updated, saved and restored
        backbone = type(cli.model.backbone)(width=32, depth=2, num_heads=2, patch_size=4,
                                            mlp_ratio=2.0)  # fmt: skip
        restored = DINO.load_from_checkpoint(run / "checkpoints/last.ckpt", backbone=backbone)
        assert torch.equal(restored.criterion.center, cli.model.criterion.center)
        assert torch.equal(
            restored.teacher_projection_head.last_layer.weight_v,
            cli.model.teacher_projection_head.last_layer.weight_v,
        )
