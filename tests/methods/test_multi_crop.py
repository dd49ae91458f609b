"""LeJEPA, SwAV and EMP-SSL fit from their configs on every kind of backbone (the isotropic
family, a ResNet, a timm model), with views made in loader workers or on the device; the
local-crop size and the fixed-size backbone check of ``methods/multi_crop.py``."""

from __future__ import annotations

import json

import pytest
import torch

from ssl_biases.backbones import IsotropicNet, TimmBackbone
from ssl_biases.cli import SSLBiasesCLI, cli_main
from ssl_biases.methods.multi_crop import check_crop_size, local_crop_size

from helpers import CONFIGS

BACKBONES = {  # tiny members of each family the three methods accept
    "attention": "{class_path: ssl_biases.backbones.IsotropicNet, init_args: "
    "{width: 32, depth: 1, num_heads: 2, patch_size: 4, mlp_ratio: 2.0}}",
    "conv": "{class_path: ssl_biases.backbones.IsotropicNet, init_args: "
    "{width: 32, depth: 1, patch_size: 4, token_mixer: conv, pool: gap, mlp_ratio: 2.0}}",
    "resnet": "{class_path: ssl_biases.backbones.ResNet, init_args: {cifar_stem: true}}",
    "timm": "{class_path: ssl_biases.backbones.TimmBackbone, init_args: {model_name: test_resnet}}",
}
HEADS = {  # tiny heads and few views, so a step costs milliseconds
    "lejepa": ["--model.init_args.projection_hidden_dim=32", "--model.init_args.projection_dim=16",
               "--model.init_args.sigreg_num_vectors=32"],
    "swav": ["--model.init_args.projection_hidden_dim=32", "--model.init_args.projection_dim=16",
             "--model.init_args.n_prototypes=8"],
    "emp_ssl": ["--model.init_args.projection_hidden_dim=32",
                "--model.init_args.projection_dim=16", "--model.init_args.n_patches=3"],
}  # fmt: skip
# Lightning fits: each method with device views, and loader-worker views on a timm model (every
# backbone kind with every method: test_each_method_trains_every_kind_of_backbone below)
CASES = [(m, "attention", "device") for m in HEADS] + [("swav", "timm", "workers")]


def fit_one_step(method: str, backbone: str, augment: str, folder) -> dict:
    """``ssl-biases fit`` of one step at 16 px; returns the run's status."""
    config = folder / "backbone.yaml"
    config.write_text(f"model: {{init_args: {{backbone: {BACKBONES[backbone]}}}}}\n")
    cli_main(
        [
            "fit", f"--config={CONFIGS / 'method' / f'{method}.yaml'}", f"--config={config}",
            f"--config={CONFIGS / 'data' / 'shapes.yaml'}", *HEADS[method],
            "--data.shapes_size=16", "--data.image_size=16", "--data.batch_size=8",
            "--data.num_workers=0", "--data.max_probe_train_samples=8", f"--data.augment={augment}",
            "--trainer.max_steps=1", "--trainer.accelerator=cpu", "--trainer.limit_val_batches=0",
            "--trainer.num_sanity_val_steps=0", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false", "--checkpoint.monitor=null",
        ]
    )  # fmt: skip
    return json.loads((folder / "runs/ssl/version_0/status.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize(("method", "backbone", "augment"), CASES)
def test_each_method_fits_a_step_on_every_kind_of_backbone(
    method, backbone, augment, tmp_path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    status = fit_one_step(method, backbone, augment, tmp_path)
    assert status["status"] == "completed" and status["global_step"] == 1


@pytest.mark.parametrize("backbone", list(BACKBONES))
@pytest.mark.parametrize("method", list(HEADS))
def test_each_method_trains_every_kind_of_backbone(method, backbone, tmp_path) -> None:
    """Every (method, backbone) pair from the configs: a loss step with gradients, 16 px."""
    config = tmp_path / "backbone.yaml"
    config.write_text(f"model: {{init_args: {{backbone: {BACKBONES[backbone]}}}}}\n")
    args = [
        f"--config={CONFIGS / 'method' / f'{method}.yaml'}", f"--config={config}",
        f"--config={CONFIGS / 'data' / 'shapes.yaml'}", *HEADS[method], "--data.image_size=16",
    ]  # fmt: skip
    model = SSLBiasesCLI(args=args, run=False).model
    views = [torch.randn(4, 3, v.size, v.size) for v in model.view_recipe(16).expanded()]
    loss, features = model.ssl_step(views)
    loss.backward()
    assert torch.isfinite(loss) and features.shape == (4, model.backbone.num_features)
    assert all(p.grad is not None for p in model.backbone.parameters() if p.requires_grad)


def test_local_crops_are_half_the_image_in_whole_patches() -> None:
    net = IsotropicNet(image_size=32, patch_size=8, width=32, depth=1, num_heads=2)
    assert local_crop_size(net, 32, None) == 16
    assert local_crop_size(net, 24, None) == 8  # 12 px rounded down to a patch multiple
    assert local_crop_size(net, 32, 24) == 24


def test_a_backbone_of_one_input_size_is_named_with_the_remedy() -> None:
    vit = TimmBackbone("vit_tiny_patch16_224", image_size=32)  # built for 32 px only
    with pytest.raises(ValueError, match=r"16 px, which TimmBackbone cannot embed.*SET_THIS"):
        check_crop_size(vit, 16, "SwAV", "SET_THIS")
    check_crop_size(vit, 32, "SwAV", "SET_THIS")  # its own size is fine
    resnet = TimmBackbone("test_resnet", image_size=32).train()
    check_crop_size(resnet, 16, "SwAV", "SET_THIS")
    assert resnet.training  # the mode is restored
    assert torch.is_grad_enabled()
