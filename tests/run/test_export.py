"""`ssl-biases export` and `load_backbone`: weights leave the framework and come back exact."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import timm
import torch

from ssl_biases.backbones import TimmBackbone, backbone_config, create_backbone
from ssl_biases.cli import cli_main, main
from ssl_biases.run.checkpoint import BACKBONE_CONFIG_KEY
from ssl_biases.run.export import (
    META_FILE,
    WEIGHTS_FILE,
    export_backbone,
    export_checkpoint,
    load_backbone,
)

from helpers import tiny_args, write_tiny_backbone


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    """A 2-step SimCLR run of a tiny attention IsotropicNet: (run dir, trained backbone)."""
    root = tmp_path_factory.mktemp("export_run")
    args = [
        "fit",
        *tiny_args(write_tiny_backbone(root)),
        "--data.image_size", "16",
        "--data.shapes_size", "64",
        "--data.max_probe_train_samples", "32",
        "--trainer.max_epochs", "1",
        "--trainer.logger.save_dir", str(root / "runs"),
        "--tensorboard.attention", "false",
        "--tensorboard.projector", "false",
    ]  # fmt: skip
    cli = cli_main(args)
    return Path(cli.trainer.log_dir), cli.model.backbone.eval()


def test_export_then_load_in_a_new_process_gives_identical_embeddings(tiny_run, tmp_path):
    run, trained = tiny_run
    out = tmp_path / "export"
    main(["export", "--ckpt", str(run / "checkpoints/last.ckpt"), "--output", str(out)])
    meta = json.loads((out / META_FILE).read_text())
    assert meta["class_path"] == "ssl_biases.backbones.IsotropicNet"
    assert meta["init_args"]["width"] == 32 and meta["init_args"]["image_size"] == 16
    assert meta["num_features"] == 32 and meta["global_step"] == 2

    images = torch.randn(5, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    images_file, embeddings_file = tmp_path / "images.pt", tmp_path / "emb.pt"
    torch.save(images, images_file)
    script = textwrap.dedent(
        f"""
        import sys, torch
        torch.set_num_threads(1)
        import ssl_biases
        backbone = ssl_biases.load_backbone({str(out)!r})
        with torch.no_grad():
            torch.save(backbone(torch.load({str(images_file)!r})), {str(embeddings_file)!r})
        print("lightning imported:", "lightning" in sys.modules)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "lightning imported: False" in done.stdout
    with torch.no_grad():
        expected = trained(images)  # [5, 32]
    assert torch.equal(torch.load(embeddings_file), expected)


def test_a_copied_checkpoint_carries_its_backbone_config(tiny_run, tmp_path):
    run, trained = tiny_run
    copied = tmp_path / "elsewhere/model.ckpt"
    copied.parent.mkdir()
    shutil.copy(run / "checkpoints/last.ckpt", copied)  # no config.yaml next to it
    backbone = load_backbone(export_checkpoint(copied, tmp_path / "out"))
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(backbone(x), trained(x))


def test_config_yaml_of_the_run_is_the_fallback_and_its_absence_an_error(tiny_run, tmp_path):
    run, _ = tiny_run
    checkpoint = torch.load(run / "checkpoints/last.ckpt", weights_only=False)
    del checkpoint[BACKBONE_CONFIG_KEY]
    in_run = tmp_path / "run/checkpoints/old.ckpt"
    in_run.parent.mkdir(parents=True)
    torch.save(checkpoint, in_run)
    shutil.copy(run / "config.yaml", tmp_path / "run/config.yaml")
    meta_dir = export_checkpoint(in_run, tmp_path / "out")
    assert load_backbone(meta_dir).num_features == 32

    (tmp_path / "run/config.yaml").unlink()
    with pytest.raises(ValueError, match="does not say how its backbone was built"):
        export_checkpoint(in_run, tmp_path / "out2")
    with pytest.raises(FileNotFoundError, match="not found"):
        export_checkpoint(tmp_path / "missing.ckpt", tmp_path / "out3")
    with pytest.raises(SystemExit) as exit_info:  # the command: a message, no traceback
        main(["export", "--ckpt", str(in_run), "--output", str(tmp_path / "out4")])
    assert exit_info.value.code == 2


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_garbage_or_truncated_checkpoint_is_a_clear_error(tiny_run, tmp_path, capsys, damage):
    run, _ = tiny_run
    bad = tmp_path / "bad.ckpt"
    if damage == "garbage":
        bad.write_bytes(b"this is not a checkpoint\n" * 4)
    else:
        whole = (run / "checkpoints/last.ckpt").read_bytes()
        bad.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match=r"cannot read checkpoint .*bad\.ckpt.*ssl-biases fit"):
        export_checkpoint(bad, tmp_path / "out")
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--ckpt", str(bad), "--output", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert "cannot read checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_timm_backbone_loads_into_timm_create_model_directly(tmp_path):
    backbone = TimmBackbone("test_vit", image_size=32).eval()
    config = {
        "class_path": "ssl_biases.backbones.TimmBackbone",
        "init_args": {"model_name": "test_vit", "image_size": 32, "in_chans": 3},
    }
    export_backbone(backbone, tmp_path, config)
    meta = json.loads((tmp_path / META_FILE).read_text())
    assert meta["registry_name"] == "timm:test_vit"
    assert meta["timm"] == {
        "model_name": "test_vit",
        "kwargs": {"num_classes": 0, "in_chans": 3, "img_size": 32},
    }
    plain = timm.create_model(
        "test_vit",
        pretrained=True,
        pretrained_cfg_overlay={"file": str(tmp_path / WEIGHTS_FILE)},
        **meta["timm"]["kwargs"],
    ).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(plain(x), backbone(x))
        assert torch.equal(load_backbone(tmp_path)(x), backbone(x))


def test_registry_name_is_recorded_for_a_preset(tmp_path):
    config = backbone_config("vit_tiny")
    export_backbone(create_backbone("vit_tiny"), tmp_path, config)
    assert json.loads((tmp_path / META_FILE).read_text())["registry_name"] == "vit_tiny"


def test_weights_that_do_not_fit_the_architecture_are_a_value_error(tmp_path):
    small = backbone_config("vit_tiny")
    small["init_args"].update(width=32, depth=1, num_heads=2)
    export_backbone(create_backbone("vit_tiny", width=32, depth=1, num_heads=2), tmp_path, small)
    meta = json.loads((tmp_path / META_FILE).read_text())
    meta["init_args"]["depth"] = 2
    (tmp_path / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="do not fit"):
        load_backbone(tmp_path)
    with pytest.raises(ValueError, match="do not fit"):  # caught at export time too
        export_backbone(
            create_backbone("vit_tiny", width=32, depth=1, num_heads=2), tmp_path / "b", meta
        )
    with pytest.raises(FileNotFoundError, match="ssl-biases export"):
        load_backbone(tmp_path / "nothing_here")
