"""A run from before typed token mixers (issue 16) and the training object (issue 33) still
resumes, validates and exports (the migrations of ``ssl_biases.run.legacy``).

The test writes that run itself: a tiny fit whose stored configs are then set to exactly what
the old code wrote. The backbone's (the checkpoint's ``backbone_config`` and
``RUN/config.yaml``): the mixer as a name plus all four flat mixer knobs (``window_radius``,
``kernel_size``, ``token_mlp_ratio``, ``qkv_bias``). The method's (the checkpoint's
``hyper_parameters`` and ``model.init_args`` of ``RUN/config.yaml``): the shared knobs flat on
the method (``optimizer``, ``warmup_fraction``, ..., ``num_classes``), as the code before
issue 33 (commit 8efbd4a) wrote them for this fit.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from ssl_biases.backbones import IsotropicNet, backbone_config
from ssl_biases.backbones.mixers import ConvMixer
from ssl_biases.cli import cli_main, main
from ssl_biases.run.export import META_FILE, load_backbone, read_meta

from helpers import CONFIGS, fit_args

# IsotropicNet's init_args as the old code dumped them: every argument, mixer knobs flat.
OLD_INIT_ARGS = {
    "image_size": 16, "patch_size": 4, "in_chans": 3, "width": 32, "depth": 1, "num_heads": 2,
    "mlp_ratio": 2.0, "stem": "patch", "pos_embed": "learned", "token_mixer": "conv",
    "pool": "gap", "window_radius": 1, "kernel_size": 5, "token_mlp_ratio": 2.0,
    "drop_path": 0.0, "last_dim": None, "qkv_bias": True,
}  # fmt: skip
OLD_CONFIG = {"class_path": "ssl_biases.backbones.IsotropicNet", "init_args": OLD_INIT_ARGS}

# The method's hyper_parameters as the code before issue 33 saved them for this fit (read from
# a checkpoint written at commit 8efbd4a), but for the online probe's LR: not the default, so
# a resume shows that the checkpoint's value arrived.
OLD_PROBE_LR = 0.003
OLD_HPARAMS = {
    "_class_path": "ssl_biases.methods.SimCLR", "projection_hidden_dim": 64,
    "projection_dim": 32, "temperature": 0.2, "min_scale": 0.08, "cj_strength": 0.5,
    "gaussian_blur": 0.0, "random_gray_scale": 0.2, "num_classes": 4, "warmup_fraction": 0.05,
    "scale_lr": True, "reference_batch_size": 256, "online_probe_lr": OLD_PROBE_LR,
    "compile": False, "_instantiator": "lightning.pytorch.cli.instantiate_module",
}  # fmt: skip
# model.init_args of that commit's config.yaml: the shared knobs flat, num_classes (a link
# target) left out
OLD_METHOD_KEYS = [
    "backbone", "projection_hidden_dim", "projection_dim", "temperature", "min_scale",
    "cj_strength", "gaussian_blur", "random_gray_scale", "optimizer", "scheduler",
    "warmup_fraction", "scale_lr", "reference_batch_size", "online_probe_lr", "lens", "compile",
]  # fmt: skip


@pytest.fixture(scope="module")
def old_run(tmp_path_factory) -> Path:
    """A 2-step SimCLR run whose checkpoint and config.yaml have the old backbone layout."""
    root = tmp_path_factory.mktemp("legacy_run")
    backbone = root / "old_backbone.yaml"
    backbone.write_text(yaml.safe_dump({"model": {"init_args": {"backbone": OLD_CONFIG}}}))
    cli = cli_main(
        fit_args(
            "simclr", root, f"--config={backbone}", "--trainer.max_steps=2",
            f"--trainer.logger.save_dir={root / 'runs'}",
        )
    )  # fmt: skip
    run = Path(cli.trainer.log_dir)
    ckpt = run / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    checkpoint["backbone_config"] = OLD_CONFIG  # the old layout, exactly
    checkpoint["hyper_parameters"] = OLD_HPARAMS
    torch.save(checkpoint, ckpt)
    config = yaml.safe_load((run / "config.yaml").read_text())
    old_args = {k: v for k, v in OLD_INIT_ARGS.items() if k != "image_size"}  # a link target
    method = config["model"]["init_args"]
    method["backbone"]["init_args"] = old_args
    training = method.pop("training")  # flat on the method, where the shared knobs were
    lens = method.pop("lens")
    method.update({k: v for k, v in training.items() if k != "compile"})
    method.update(lens=lens, compile=training["compile"])
    assert list(method) == OLD_METHOD_KEYS
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return run


def test_old_checkpoint_has_the_old_layout(old_run):
    checkpoint = torch.load(old_run / "checkpoints/last.ckpt", map_location="cpu")
    assert checkpoint["backbone_config"]["init_args"]["kernel_size"] == 5
    assert "backbone" not in checkpoint["hyper_parameters"]
    assert checkpoint["global_step"] == 2
    assert checkpoint["hyper_parameters"]["warmup_fraction"] == 0.05
    config = yaml.safe_load((old_run / "config.yaml").read_text())
    assert "training" not in config["model"]["init_args"]
    assert config["model"]["init_args"]["optimizer"]["class_path"] == "torch.optim.AdamW"
    assert "backbone.blocks.0.mixer.conv.weight" in checkpoint["state_dict"]


def test_old_run_resumes_one_more_step(old_run, monkeypatch):
    monkeypatch.chdir(old_run.parent)
    ckpt = old_run / "checkpoints" / "last.ckpt"
    before = torch.load(ckpt, map_location="cpu")["state_dict"]
    cli = cli_main(
        ["fit", f"--config={old_run / 'config.yaml'}", f"--ckpt_path={ckpt}",
         "--trainer.max_steps=3"]
    )  # fmt: skip
    assert cli.trainer.global_step == 3
    # the old flat knobs arrived in the training object: the config's and the checkpoint's
    training = cli.model.training_setup
    assert (training.num_classes, training.online_probe_lr) == (4, OLD_PROBE_LR)
    probe = cli.trainer.optimizers[0].param_groups[-1]
    assert probe["name"] == "online_probe" and probe["initial_lr"] == OLD_PROBE_LR
    assert cli.model.hparams.training["online_probe_lr"] == OLD_PROBE_LR  # saved in the new shape
    backbone = cli.model.backbone
    assert backbone.mixer_factory == ConvMixer(kernel_size=5)
    # the trained weights came back (the one more step ends the cosine schedule at lr ~ 0)
    resumed = backbone.blocks[0].mixer.conv.weight.detach()
    saved = before["backbone.blocks.0.mixer.conv.weight"]
    torch.testing.assert_close(resumed, saved, rtol=0, atol=1e-4)
    fresh = IsotropicNet(**OLD_INIT_ARGS).blocks[0].mixer.conv.weight.detach()
    assert (fresh - saved).abs().max() > 1e-2


def test_old_run_validates(old_run, monkeypatch):
    monkeypatch.chdir(old_run.parent)
    cli = cli_main(
        ["validate", f"--config={old_run / 'config.yaml'}",
         f"--ckpt_path={old_run / 'checkpoints' / 'last.ckpt'}", "--trainer.limit_val_batches=1.0"]
    )  # fmt: skip
    top1 = float(cli.trainer.callback_metrics["val/knn_top1"])
    assert 0.0 <= top1 <= 1.0


def test_old_run_exports_the_same_net(old_run, tmp_path):
    ckpt = old_run / "checkpoints" / "last.ckpt"
    out = tmp_path / "export"
    main(["export", "--ckpt", str(ckpt), "--output", str(out)])
    exported = load_backbone(out)
    assert isinstance(exported, IsotropicNet)
    stored = read_meta(out)["init_args"]  # backbone.json in the new shape
    assert stored["token_mixer"] == {
        "class_path": "ssl_biases.backbones.mixers.ConvMixer",
        "init_args": {"kernel_size": 5},
    }
    assert not {"window_radius", "kernel_size", "token_mlp_ratio", "qkv_bias"} & set(stored)
    assert exported.mixer_factory == ConvMixer(kernel_size=5)
    state = torch.load(ckpt, map_location="cpu")["state_dict"]
    reference = IsotropicNet(**OLD_INIT_ARGS).eval()  # the old flat knobs still build it
    prefix = "backbone."
    weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    reference.load_state_dict(weights, strict=True)
    images = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(exported(images), reference(images), rtol=0, atol=0)


def test_export_of_a_cli_run_names_its_registry_preset(tmp_path):
    args = fit_args("simclr", tmp_path, "--data.image_size=32", "--trainer.max_steps=1")
    preset = (CONFIGS / "backbone" / "identity_tiny.yaml").read_text()
    (tmp_path / "backbone.yaml").write_text(preset)  # fit_args' backbone file, replaced
    cli = cli_main([*args, f"--trainer.logger.save_dir={tmp_path / 'runs'}"])
    ckpt = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    main(["export", "--ckpt", str(ckpt), "--output", str(tmp_path / "export")])
    meta = read_meta(tmp_path / "export")
    assert meta["registry_name"] == "identity_tiny"
    assert {k: meta[k] for k in ("class_path", "init_args")} == backbone_config("identity_tiny")
    assert (tmp_path / "export" / META_FILE).is_file()
