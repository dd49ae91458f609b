"""The one checkpoint reader: its errors, the backbone it rebuilds, and its users agree."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from ssl_biases.backbones import IsotropicNet
from ssl_biases.cli import cli_main, main
from ssl_biases.run.checkpoint import BACKBONE_CONFIG_KEY, read_checkpoint
from ssl_biases.run.export import export_checkpoint

from helpers import fit_args

CONFIG = {
    "class_path": "ssl_biases.backbones.IsotropicNet",
    "init_args": {"image_size": 16, "patch_size": 4, "width": 32, "depth": 1, "num_heads": 2},
}
# what backbone_config() returns for it: the current shape, the mixer explicit
STORED = {**CONFIG, "init_args": {**CONFIG["init_args"], "token_mixer": {
    "class_path": "ssl_biases.backbones.mixers.AttentionMixer", "init_args": {"qkv_bias": True},
}}}  # fmt: skip


def write_checkpoint(path, with_config: bool = True) -> IsotropicNet:
    """A method-like checkpoint: ``backbone.*`` and a head's weights, step 7."""
    torch.manual_seed(3)
    backbone = IsotropicNet(**CONFIG["init_args"]).eval()
    state = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    state["head.weight"] = torch.ones(2, 32)
    contents = {"state_dict": state, "global_step": 7}
    if with_config:
        contents[BACKBONE_CONFIG_KEY] = CONFIG
    torch.save(contents, path)
    return backbone


def test_the_backbone_comes_back_with_its_weights_config_and_step(tmp_path):
    original = write_checkpoint(tmp_path / "a.ckpt")
    checkpoint = read_checkpoint(tmp_path / "a.ckpt")
    assert checkpoint.global_step == 7
    assert set(checkpoint.state_dict) == {f"backbone.{k}" for k in original.state_dict()} | {
        "head.weight"
    }
    assert checkpoint.backbone_config() == STORED
    assert set(checkpoint.backbone_weights()) == set(original.state_dict())
    rebuilt = checkpoint.backbone()
    assert not rebuilt.training
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), original(x))


def test_an_older_checkpoint_takes_its_config_from_the_run_directory(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    write_checkpoint(run / "checkpoints/last.ckpt", with_config=False)
    init_args = {k: v for k, v in CONFIG["init_args"].items() if k != "image_size"}
    backbone = {"class_path": CONFIG["class_path"], "init_args": init_args}
    config = {"model": {"init_args": {"backbone": backbone}}, "data": {"image_size": 16}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))  # image_size: the data link
    assert read_checkpoint(run / "checkpoints/last.ckpt").backbone_config() == STORED


def test_every_unusable_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"checkpoint .*gone\.ckpt not found"):
        read_checkpoint(tmp_path / "gone.ckpt")
    (tmp_path / "garbage.ckpt").write_bytes(b"not a checkpoint\n" * 4)
    with pytest.raises(ValueError, match=r"cannot read checkpoint .*garbage\.ckpt.*ssl-biases fit"):
        read_checkpoint(tmp_path / "garbage.ckpt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "plain.ckpt")
    with pytest.raises(ValueError, match="without `state_dict`: it is not a Lightning checkpoint"):
        read_checkpoint(tmp_path / "plain.ckpt")
    torch.save({"state_dict": {"head.weight": torch.zeros(1)}}, tmp_path / "headless.ckpt")
    with pytest.raises(ValueError, match="holds no `backbone.\\*` weights"):
        read_checkpoint(tmp_path / "headless.ckpt").backbone_weights()
    write_checkpoint(tmp_path / "nameless.ckpt", with_config=False)  # no config.yaml either
    with pytest.raises(ValueError, match="does not say how its backbone was built"):
        read_checkpoint(tmp_path / "nameless.ckpt").backbone()
    write_checkpoint(tmp_path / "wider.ckpt")
    wider = torch.load(tmp_path / "wider.ckpt", weights_only=True)
    wider[BACKBONE_CONFIG_KEY] = {**CONFIG, "init_args": {**CONFIG["init_args"], "depth": 2}}
    torch.save(wider, tmp_path / "wider.ckpt")
    with pytest.raises(ValueError, match="the weights do not fit"):
        read_checkpoint(tmp_path / "wider.ckpt").backbone()


def test_validate_and_export_give_the_same_error_for_the_same_file(tmp_path, monkeypatch, capsys):
    # one reader: the CLI's --ckpt_path check and `ssl-biases export` say the same thing
    monkeypatch.chdir(tmp_path)
    torch.save({"weights": torch.zeros(1)}, tmp_path / "plain.ckpt")
    expected = "without `state_dict`: it is not a Lightning checkpoint"
    with pytest.raises(ValueError, match=expected):
        cli_main(["validate", *fit_args("simclr", tmp_path, "--ckpt_path=plain.ckpt")[1:]])
    with pytest.raises(ValueError, match=expected):
        export_checkpoint(tmp_path / "plain.ckpt", tmp_path / "out")
    with pytest.raises(SystemExit) as stop:
        main(["export", "--ckpt", str(tmp_path / "plain.ckpt"), "--output", str(tmp_path / "o")])
    assert stop.value.code == 2 and expected in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "o").exists()


def test_analyze_reads_checkpoints_with_the_one_reader(tmp_path):
    from ssl_biases.analysis.report import load_checkpoint_backbone

    reference = write_checkpoint(tmp_path / "a.ckpt")
    backbone, config, step = load_checkpoint_backbone(tmp_path / "a.ckpt")
    assert config == STORED and step == 7 and not backbone.training
    images = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(backbone(images), reference(images), rtol=0, atol=0)
    wider = {**CONFIG, "init_args": {**CONFIG["init_args"], "width": 64}}
    contents = torch.load(tmp_path / "a.ckpt", weights_only=True)
    torch.save({**contents, BACKBONE_CONFIG_KEY: wider}, tmp_path / "wider.ckpt")
    with pytest.raises(ValueError, match="the weights do not fit"):  # as export says it
        load_checkpoint_backbone(tmp_path / "wider.ckpt")
    with pytest.raises(ValueError, match="it is not a Lightning checkpoint"):
        torch.save({"weights": torch.zeros(1)}, tmp_path / "plain.ckpt")
        load_checkpoint_backbone(tmp_path / "plain.ckpt")


# ----------------------------------------------------------------- leftovers of a killed run
def test_a_corrupt_last_ckpt_offers_the_newest_readable_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "runs" / "ssl" / "version_0" / "checkpoints"
    folder.mkdir(parents=True)
    write_checkpoint(folder / "best-epoch0-step6.ckpt")  # step 7
    torch.save({"state_dict": {}, "global_step": 3}, folder / "best-epoch0-step3.ckpt")
    (folder / "last.ckpt").write_bytes(b"PK\x03\x04 cut short by a full disk")
    with pytest.raises(ValueError) as error:
        cli_main([*fit_args("simclr", tmp_path), "--ckpt_path=last"])
    message = str(error.value)
    relative = Path("runs/ssl/version_0/checkpoints")  # as the run names it
    assert f"cannot read checkpoint {relative / 'last.ckpt'}" in message
    newest = relative / "best-epoch0-step6.ckpt"
    assert f"newest readable checkpoint of this run is {newest} (step 7)" in message
    assert f"--ckpt_path {newest}" in message
    for path in folder.glob("best-*"):
        path.unlink()
    with pytest.raises(ValueError, match="No other checkpoint of this run is readable"):
        cli_main([*fit_args("simclr", tmp_path), "--ckpt_path=last"])


def test_stale_partial_files_of_killed_processes_are_removed_on_the_next_start(tmp_path):
    import subprocess
    import sys
    from types import SimpleNamespace

    from ssl_biases.run.faults import LastCheckpoint, remove_stale_partials

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        folder = tmp_path / "version_0" / "checkpoints"
        folder.mkdir(parents=True)
        stale = folder / f".last.ckpt.partial-{dead.pid}"  # a SIGKILL during a save
        stale.write_bytes(b"\0" * 1000)
        status = folder.parent / f".status.json.partial-{dead.pid}"
        status.write_text("{")
        busy = folder / f".best.ckpt.partial-{alive.pid}"  # another run, writing right now
        busy.write_bytes(b"\0")
        trainer = SimpleNamespace(checkpoint_callback=SimpleNamespace(dirpath=str(folder)))
        trainer.is_global_zero = True
        LastCheckpoint().on_train_start(trainer, None)  # the next start of the run
        assert not stale.exists() and not status.exists() and busy.exists()
        assert remove_stale_partials(folder) == []
    finally:
        alive.kill()
        alive.wait()
