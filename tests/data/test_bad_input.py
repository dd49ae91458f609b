"""Every bad input fails with a message that says what is wrong and what to do, and none of
them leaves a run directory that a later run could take for a finished one."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_biases.backbones import create_backbone
from ssl_biases.cli import DEBUG_ENV, SSLBiasesCLI, cli_main, main
from ssl_biases.data.datamodule import SSLDataModule
from ssl_biases.data.datasets import build_dataset
from ssl_biases.run.status import RunStatus, is_completed, read_run_status

ROOT = Path(__file__).resolve().parents[2]


def fit_args(folder: Path, *extra: str, width: int = 32, num_heads: int = 2) -> list[str]:
    backbone = folder / f"backbone{width}.yaml"
    backbone.write_text(
        "model: {init_args: {backbone: {class_path: ssl_biases.backbones.IsotropicNet, "
        f"init_args: {{width: {width}, depth: 1, num_heads: {num_heads}, patch_size: 4}}}}}}}}\n"
    )
    return [
        "fit",
        f"--config={ROOT / 'configs' / 'method' / 'simclr.yaml'}",
        f"--config={backbone}",
        f"--config={ROOT / 'configs' / 'data' / 'shapes.yaml'}",
        "--model.init_args.projection_hidden_dim=64",
        "--model.init_args.projection_dim=32",
        "--data.shapes_size=32",
        "--data.image_size=16",
        "--data.batch_size=8",
        "--data.num_workers=0",
        "--data.max_probe_train_samples=16",
        "--trainer.max_steps=2",
        "--trainer.num_sanity_val_steps=0",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        *extra,
    ]


def assert_no_finished_run(folder: Path) -> None:
    """No run directory under ``folder/runs`` is marked completed."""
    runs = list((folder / "runs").glob("*/version_*"))
    assert not any(is_completed(run) for run in runs), runs


def image_tree(root: Path, images: dict[str, Image.Image | bytes]) -> Path:
    """Writes ``{"train/<class>/<name>": image or raw bytes}`` under ``root``."""
    for name, content in images.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            content.save(path)
    return root


def rgb(seed: int, size: int = 16) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


# ------------------------------------------------------------------------------ dataset root
def test_missing_dataset_root_names_the_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere.*point --data.root"):
        cli_main(fit_args(tmp_path, "--data.dataset=imagefolder", f"--data.root={missing}"))
    assert not (tmp_path / "runs").exists()  # failed before any run directory was made


def test_empty_dataset_root(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(FileNotFoundError, match="no images under .*train.*<class>"):
        build_dataset("imagefolder", "train", root=tmp_path)


def test_class_folder_without_images_is_named(tmp_path):
    image_tree(tmp_path, {"train/cat/0.png": rgb(0)})
    (tmp_path / "train" / "dog").mkdir()
    with pytest.raises(FileNotFoundError, match="dog"):
        build_dataset("imagefolder", "train", root=tmp_path)


# ------------------------------------------------------------------------------ image files
def truncated_png() -> bytes:
    path_bytes = __import__("io").BytesIO()
    rgb(1, 32).save(path_bytes, format="PNG")
    return path_bytes.getvalue()[:200]


def test_greyscale_and_rgba_images_are_converted(tmp_path):
    grey = Image.fromarray(np.full((16, 16), 128, dtype=np.uint8), mode="L")
    rgba = Image.fromarray(np.full((16, 16, 4), 200, dtype=np.uint8), mode="RGBA")
    image_tree(tmp_path, {"test/a/grey.png": grey, "test/b/rgba.png": rgba})
    data = SSLDataModule(dataset="imagefolder", root=str(tmp_path), image_size=16)
    dataset = data.probe_dataset("test")
    shapes = [tuple(dataset[i][0].shape) for i in range(len(dataset))]
    assert shapes == [(3, 16, 16), (3, 16, 16)]
    raw = [np.asarray(data.raw_dataset("test")[i][0]) for i in range(2)]
    assert [a.shape for a in raw] == [(16, 16, 3)] * 2
    assert (raw[0] == 128).all() and (raw[1] == 200).all()  # grey copied, alpha dropped


@pytest.mark.parametrize("content", [b"not an image", truncated_png()], ids=["garbage", "cut"])
def test_corrupt_image_error_names_the_file(tmp_path, content):
    image_tree(tmp_path, {"train/a/good.png": rgb(0), "train/a/zz_bad.png": content})
    dataset = build_dataset("imagefolder", "train", root=tmp_path)
    assert dataset[0][0].size == (16, 16)
    with pytest.raises(ValueError, match=r"zz_bad\.png.*--data.skip_corrupt true"):
        dataset[1]


def test_skip_corrupt_replaces_and_counts(tmp_path):
    image_tree(
        tmp_path, {"train/a/0.png": rgb(0), "train/a/1.png": b"junk", "train/b/2.png": rgb(2)}
    )
    data = SSLDataModule(dataset="imagefolder", root=str(tmp_path), skip_corrupt=True)
    dataset = data.raw_dataset("train")
    labels = [dataset[i][1] for i in range(3)]
    assert labels == [0, 1, 1]  # 1.png is replaced by the next readable image (2.png, class b)
    assert data.skipped_images == 1


def imagefolder_run(tmp_path: Path, *extra: str) -> list[str]:
    images = {
        f"{split}/{c}/{i}.png": rgb(i)
        for split in ("train", "test")
        for c in "ab"
        for i in range(8)
    }
    images["train/a/3.png"] = b"corrupt bytes"
    image_tree(tmp_path / "data", images)
    return fit_args(
        tmp_path,
        "--data.dataset=imagefolder",
        f"--data.root={tmp_path / 'data'}",
        "--data.max_probe_train_samples=null",
        "--trainer.max_steps=4",
        "--trainer.log_every_n_steps=1",
        *extra,
    )


@pytest.mark.parametrize("cache", ["none", "auto"])
def test_corrupt_image_in_a_run_fails_it_or_is_skipped(tmp_path, monkeypatch, cache):
    """``none``: a loader worker meets the file mid-run; ``auto`` (the default, here the device
    cache): decoding the train set meets it before the first batch, and no run is left."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"3\.png"):
        cli_main(imagefolder_run(tmp_path, f"--data.cache={cache}"))
    failed = tmp_path / "runs" / "ssl" / "version_0"
    if cache == "none":
        assert read_run_status(failed)["status"] == "failed"
        assert "3.png" in read_run_status(failed)["error"]
    else:  # failed before its first batch: the run directory is not left behind
        assert not failed.exists()
    assert_no_finished_run(tmp_path)

    cli_main(imagefolder_run(tmp_path, f"--data.cache={cache}", "--data.skip_corrupt=true"))
    run = max((tmp_path / "runs" / "ssl").glob("version_*"))
    assert is_completed(run)
    metrics = (run / "metrics.csv").read_text().splitlines()
    column = metrics[0].split(",").index("data/skipped_images")
    counts = [float(row.split(",")[column]) for row in metrics[1:] if row.split(",")[column]]
    assert counts and counts[-1] >= 1


# --------------------------------------------------------------------- model configuration
def test_image_size_the_patch_size_does_not_divide(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="image_size 18 is not divisible by patch_size 4"):
        cli_main(fit_args(tmp_path, "--data.image_size=18"))
    assert not (tmp_path / "runs").exists()


def test_unknown_backbone_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown backbone 'vit_nope'.*'vit_tiny'"):
        create_backbone("vit_nope")


@pytest.mark.parametrize(
    ("override", "known"),
    [
        ("--model=ssl_biases.methods.Nope", "Known methods: .*ssl_biases.methods.SimCLR"),
        (
            "--model.init_args.backbone.class_path=ssl_biases.backbones.Nope",
            "Known backbones: ssl_biases.backbones.IsotropicNet",
        ),
    ],
    ids=["method", "backbone"],
)
def test_unknown_class_lists_the_known_ones(tmp_path, monkeypatch, capsys, override, known):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        cli_main([*fit_args(tmp_path), override])
    error = capsys.readouterr().err
    assert "Nope" in error
    assert pytest.importorskip("re").search(known, error), error[-600:]


def test_method_that_cannot_use_the_backbone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = fit_args(tmp_path)
    args[1] = f"--config={ROOT / 'configs' / 'method' / 'mae.yaml'}"
    args = [a for a in args if "projection" not in a]
    conv = ["--model.init_args.backbone.init_args.token_mixer=conv"]
    conv += ["--model.init_args.backbone.init_args.pool=gap"]
    with pytest.raises(ValueError, match="(?s)MAE .*token_mixer='conv' cannot. Supported"):
        cli_main([*args, *conv])
    assert not (tmp_path / "runs").exists()


def test_batch_larger_than_the_dataset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="batch_size 64 is larger than the training set"):
        cli_main(fit_args(tmp_path, "--data.batch_size=64"))
    # found as the trainer sets up, after the loggers made the run directory: removed again
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("flag", ["batch_size", "probe_batch_size"])
def test_batch_size_zero_names_the_flag(tmp_path, monkeypatch, flag):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=f"--data.{flag} must be 1 or more, got 0"):
        cli_main(fit_args(tmp_path, f"--data.{flag}=0"))
    assert not (tmp_path / "runs").exists()


def test_malformed_yaml_config_names_the_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    broken = tmp_path / "broken.yaml"
    broken.write_text("data:\n  batch_size: [8,\n")
    with pytest.raises(SystemExit) as stop:
        cli_main([*fit_args(tmp_path), f"--config={broken}"])
    assert stop.value.code == 2
    assert f"config file {broken} is not valid YAML" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_user_error_is_one_message_without_a_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    monkeypatch.setattr("sys.argv", ["ssl-biases"])  # as the console script sees it
    args = fit_args(tmp_path, width=30, num_heads=4)
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 2
    error = capsys.readouterr().err
    assert error.splitlines()[-2:] == [
        "ssl-biases: error: width 30 is not divisible by num_heads 4",
        f"(for the traceback, rerun with {DEBUG_ENV}=1)",
    ]
    assert "Traceback" not in error and len(error.splitlines()) <= 3, error  # + "Seed set to 0"
    monkeypatch.setenv(DEBUG_ENV, "1")  # the traceback for a bug report
    with pytest.raises(ValueError, match="width 30 is not divisible by num_heads 4"):
        main(args)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("where", ["command line", "config file"])
def test_unknown_config_key_is_named(tmp_path, monkeypatch, capsys, where):
    monkeypatch.chdir(tmp_path)
    if where == "command line":
        extra = "--data.batchsize=3"
    else:
        (tmp_path / "typo.yaml").write_text("data:\n  batchsize: 3\n")
        extra = f"--config={tmp_path / 'typo.yaml'}"
    with pytest.raises(SystemExit) as stop:
        cli_main([*fit_args(tmp_path), extra])
    assert stop.value.code == 2
    assert "batchsize" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


# ----------------------------------------------------------------------------- checkpoints
def test_checkpoint_of_another_architecture_names_the_shapes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    narrow = SSLBiasesCLI(args=fit_args(tmp_path)[1:], run=False).model
    path = tmp_path / "narrow.ckpt"
    torch.save({"state_dict": narrow.state_dict(), "global_step": 0}, path)
    for command in (["fit"], ["validate"]):
        args = [*command, *fit_args(tmp_path, f"--ckpt_path={path}", width=48)[1:]]
        if command == ["validate"]:
            args = [a for a in args if not a.startswith(("--trainer.max_steps", "--checkpoint"))]
        with pytest.raises(ValueError, match=r"shapes differ.*checkpoint \(\d+, 32.*model \(48"):
            cli_main(args)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        cli_main(fit_args(tmp_path, f"--ckpt_path={path}"))
    assert not (tmp_path / "runs").exists()  # refused before any run directory was made


def test_predict_with_a_checkpoint_of_another_width_names_the_shapes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    narrow = SSLBiasesCLI(args=fit_args(tmp_path)[1:], run=False).model
    path = tmp_path / "narrow.ckpt"
    torch.save({"state_dict": narrow.state_dict(), "global_step": 0}, path)
    args = [a for a in fit_args(tmp_path, f"--ckpt_path={path}", width=48)[1:]]
    args = [a for a in args if not a.startswith(("--trainer.max_steps", "--checkpoint"))]
    with pytest.raises(ValueError, match=r"shapes differ.*checkpoint \(\d+, 32.*model \(48"):
        cli_main(["predict", *args, f"--embeddings.output_dir={tmp_path / 'emb'}"])
    assert not (tmp_path / "emb").exists()


@pytest.mark.parametrize("command", ["fit", "validate"])
def test_missing_ckpt_path_file_names_the_flag(tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    args = [command, *fit_args(tmp_path, f"--ckpt_path={tmp_path / 'gone.ckpt'}")[1:]]
    with pytest.raises(FileNotFoundError, match=r"--ckpt_path .*gone\.ckpt: no such file"):
        cli_main(args)
    assert not (tmp_path / "runs").exists()


def test_a_run_directory_that_existed_is_kept_after_an_early_failure(tmp_path):
    trainer = SimpleNamespace(is_global_zero=True, loggers=[SimpleNamespace(log_dir="")])
    fresh, resumed = tmp_path / "runs/ssl/version_0", tmp_path / "old/ssl/version_3"
    resumed.mkdir(parents=True)
    for folder in (fresh, resumed):
        status = RunStatus()
        trainer.loggers[0].log_dir = str(folder)
        status.note_run_dir(trainer)  # before the trainer (and its loggers) set up
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.yaml").write_text("{}\n")
        status.remove_unstarted_run_dir()
    assert not (tmp_path / "runs").exists()  # made by this run: removed with its parents
    assert (resumed / "config.yaml").is_file()  # a resumed run's directory stays

    started = RunStatus()
    trainer.loggers[0].log_dir = str(fresh)
    started.note_run_dir(trainer)
    fresh.mkdir(parents=True)
    started.on_validation_start(trainer, None)
    started.remove_unstarted_run_dir()
    assert fresh.is_dir()  # failed after its first batch: kept, with its `failed` status
