"""Pretraining on your own unlabelled images (``--data.dataset folder --data.train_root``), with
probes on a labelled ``--data.probe_root`` or none, and normalisation from the data."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from ssl_biases.cli import cli_main
from ssl_biases.data import datamodule as datamodule_module
from ssl_biases.data.datamodule import SSLDataModule, fixed_subset
from ssl_biases.data.datasets import IMAGENET_NORMALIZE, NORMALIZE, build_dataset

from helpers import HEADS, read_metrics

ROOT = Path(__file__).resolve().parents[2]


def mixed_folder(root: Path) -> dict[str, tuple[int, int, int]]:
    """Writes one image per mode and format in nested folders; returns name -> RGB pixel."""
    palette = Image.new("P", (16, 16), 1)
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    palette.info["transparency"] = 0  # palette entry 0 is transparent
    exact_rgb = Image.new("RGB", (16, 16), (40, 80, 120))
    images = {
        "grey.png": (Image.new("L", (16, 16), 128), (128, 128, 128)),
        "sub/rgba.PNG": (Image.new("RGBA", (16, 16), (200, 100, 50, 0)), (200, 100, 50)),
        "sub/deeper/palette.gif": (palette, (10, 200, 30)),
        "sub/deeper/cmyk.jpg": (Image.new("CMYK", (16, 16), (0, 255, 0, 0)), (255, 0, 255)),
        "b/sixteen_bit.tiff": (
            Image.fromarray(np.full((16, 16), 128 * 257, dtype=np.uint16)),
            (128, 128, 128),
        ),
        "b/photo.jpeg": (exact_rgb, (40, 80, 120)),
        "b/photo.bmp": (exact_rgb, (40, 80, 120)),
        "b/photo.webp": (exact_rgb, (40, 80, 120)),
    }
    for name, (image, _) in images.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        image.save(root / name, **({"lossless": True} if name.endswith("webp") else {}))
    (root / "notes.txt").write_text("not an image")
    (root / "b" / "._photo.jpeg").write_bytes(b"macOS metadata, not an image")
    (root / ".thumbnails").mkdir()
    Image.new("RGB", (4, 4)).save(root / ".thumbnails" / "t.png")
    return {name: pixel for name, (_, pixel) in images.items()}


def random_images(root: Path, count: int, size: int = 16, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for i in range(count):
        folder = root / f"part{i % 3}" / ("nested" if i % 2 else "")
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def labelled_tree(root: Path, classes: str = "ab", per_class: int = 6) -> Path:
    for split in ("train", "test"):
        for c, name in enumerate(classes):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.new("RGB", (16, 16), (60 * c + 10, 5 * i, 100)).save(
                    root / split / name / f"{i}.png"
                )
    return root


def tiny_backbone(folder: Path) -> Path:
    path = folder / "backbone.yaml"
    path.write_text(
        "model: {init_args: {backbone: {class_path: ssl_biases.backbones.IsotropicNet, "
        "init_args: {width: 32, depth: 1, num_heads: 2, patch_size: 4}}}}\n"
    )
    return path


# ------------------------------------------------------------------------------ the images
def test_every_image_under_train_root_is_read_as_rgb_without_a_label(tmp_path):
    expected = mixed_folder(tmp_path)
    dataset = build_dataset("folder", "train", train_root=tmp_path)
    names = [str(Path(path).relative_to(tmp_path)) for path, _ in dataset.samples]
    assert names == sorted(expected)  # recursive, any case, no hidden or non-image files
    for index, name in enumerate(names):
        image, label = dataset[index]
        assert label == -1 and image.mode == "RGB" and image.size == (16, 16)
        pixel = np.asarray(image)[8, 8].astype(int)
        tolerance = 4 if name.endswith((".jpg", ".jpeg")) else 0  # lossy JPEG
        assert np.abs(pixel - expected[name]).max() <= tolerance, (name, pixel)


def test_a_folder_without_images_names_the_path_and_the_extensions(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "notes.txt").write_text("no images here")
    with pytest.raises(FileNotFoundError, match=rf"no images under '{tmp_path}'.*\.jpg.*\.png"):
        build_dataset("folder", "train", train_root=tmp_path)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        build_dataset("folder", "train", train_root=tmp_path / "missing")


def test_folder_options_belong_to_the_folder_dataset(tmp_path):
    with pytest.raises(ValueError, match="add --data.dataset folder"):
        SSLDataModule(dataset="shapes", train_root=str(tmp_path))
    with pytest.raises(ValueError, match="set --data.train_root"):
        SSLDataModule(dataset="folder")
    missing_probe = SSLDataModule(dataset="folder", train_root=str(tmp_path))
    with pytest.raises(ValueError, match="set --data.probe_root"):
        missing_probe.raw_dataset("test")


# ----------------------------------------------------------------------------- the probes
def test_without_a_probe_set_there_are_no_probe_loaders(tmp_path):
    data = SSLDataModule(
        dataset="folder", train_root=str(random_images(tmp_path, 7)), image_size=16, num_workers=0
    )
    assert not data.has_probe_set and data.val_dataloader() == [] and data.test_dataloader() == []
    assert data.num_classes == 2  # an online probe that only ever sees label -1
    images, labels = next(iter(data.predict_dataloader()))  # predict embeds the images
    assert images.shape == (7, 3, 16, 16) and labels.tolist() == [-1] * 7


def test_probe_root_gives_the_bank_and_the_queries(tmp_path):
    probe_root = labelled_tree(tmp_path / "labelled", "abc", per_class=4)
    (probe_root / "test").rename(probe_root / "val")  # `val` stands in for `test`
    data = SSLDataModule(
        dataset="folder",
        train_root=str(random_images(tmp_path / "mine", 5)),
        probe_root=str(probe_root),
        image_size=16,
        num_workers=0,
    )
    bank, queries = data.val_dataloader()
    assert data.num_classes == 3
    assert len(bank.dataset) == 12 and len(queries.dataset) == 12
    assert sorted({label for _, label in bank.dataset}) == [0, 1, 2]  # iteration ends


def test_a_one_class_folder_says_the_probes_need_two_classes(tmp_path, monkeypatch):
    root = labelled_tree(tmp_path / "data", "a")
    with pytest.raises(ValueError, match=r"probes need two or more classes.*--data.train_root"):
        _ = SSLDataModule(dataset="imagefolder", root=str(root)).num_classes
    monkeypatch.chdir(tmp_path)
    args = [
        "fit",
        f"--config={ROOT / 'configs/method/simclr.yaml'}",
        f"--config={tiny_backbone(tmp_path)}",
        "--data.dataset=imagefolder",
        f"--data.root={root}",
        "--trainer.max_steps=1",
    ]
    with pytest.raises(ValueError, match="probes need two or more classes"):
        cli_main(args)  # before any model is built (torchmetrics would fail on 1 class)
    folder = SSLDataModule(dataset="folder", train_root=str(root), probe_root=str(root))
    with pytest.raises(ValueError, match="leave out --data.probe_root"):
        _ = folder.num_classes


def test_train_and_test_splits_must_have_the_same_classes(tmp_path):
    root = labelled_tree(tmp_path, "ab")
    (root / "test" / "a").rename(root / "test" / "c")  # labels 0/1 would mean other classes
    data = SSLDataModule(dataset="imagefolder", root=str(root), image_size=16, num_workers=0)
    with pytest.raises(ValueError, match=r"different class folders \(\['a', 'b'\] vs \['b', 'c'"):
        data.val_dataloader()


# ------------------------------------------------------------------------- normalisation
def test_normalisation_comes_from_a_fixed_sample_of_the_data(tmp_path, monkeypatch):
    monkeypatch.setattr(datamodule_module, "NORMALIZATION_SAMPLES", 5)
    train_root = random_images(tmp_path, 9)
    data = SSLDataModule(dataset="folder", train_root=str(train_root), image_size=16)
    sample = fixed_subset(data.raw_dataset("train"), 5, seed=0)  # 5 of the 9 images
    pixels = np.stack([np.asarray(sample[i][0]) for i in range(5)]) / 255.0  # [5, 16, 16, 3]
    np.testing.assert_allclose(data.norm.mean, pixels.mean(axis=(0, 1, 2)), atol=6e-5)
    np.testing.assert_allclose(data.norm.std, pixels.std(axis=(0, 1, 2)), atol=6e-5)
    assert data.hparams["normalization_mean"] == list(data.norm.mean)
    assert data.hparams_initial["normalization_std"] == list(data.norm.std)  # what is logged
    again = SSLDataModule(dataset="folder", train_root=str(train_root), image_size=16)
    assert again.norm == data.norm  # deterministic


def test_named_datasets_keep_their_published_statistics_unless_asked():
    assert SSLDataModule().norm.mean == NORMALIZE["shapes"][0]
    assert SSLDataModule(normalization="imagenet").norm.std == IMAGENET_NORMALIZE[1]
    from_data = SSLDataModule(normalization="data", shapes_size=16, image_size=16).norm
    assert from_data != SSLDataModule().norm and 0.0 < from_data.std[0] < 0.5


# ------------------------------------------------------------------------------ end to end
def own_images_fit(tmp_path: Path, method: str, *extra: str) -> list[str]:
    return [
        "fit",
        f"--config={ROOT / 'configs/method' / f'{method}.yaml'}",
        f"--config={tiny_backbone(tmp_path)}",
        f"--config={ROOT / 'configs/data/folder.yaml'}",
        *HEADS[method],
        f"--data.train_root={random_images(tmp_path / 'mine', 20, size=20)}",
        "--data.image_size=16",
        "--data.batch_size=8",
        "--data.num_workers=0",
        "--trainer.max_steps=2",
        "--trainer.num_sanity_val_steps=0",
        "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        *extra,
    ]


@pytest.mark.parametrize("method", ["simclr", "byol", "mae", "dino"])
def test_every_method_pretrains_on_a_folder_without_labels(tmp_path, monkeypatch, method):
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match="no labelled probe set .* probes are off"):
        cli_main(own_images_fit(tmp_path, method))
    run = tmp_path / "runs" / "ssl" / "version_0"
    rows = read_metrics(run)
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    assert not any(key.startswith("val/") for key in rows[0])  # no probes ran
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["last.ckpt"]
    hparams = yaml.safe_load((run / "hparams.yaml").read_text())
    assert hparams["normalization"] == "data" and len(hparams["normalization_mean"]) == 3
    assert 0.3 < hparams["normalization_mean"][0] < 0.7  # random uint8 pixels: about 0.5


def test_a_folder_pretraining_probes_on_probe_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    probe_root = labelled_tree(tmp_path / "labelled", "abc", per_class=4)
    cli_main(own_images_fit(tmp_path, "simclr", f"--data.probe_root={probe_root}"))
    run = tmp_path / "runs" / "ssl" / "version_0"
    rows = read_metrics(run)
    knn = [float(r["val/knn_top1"]) for r in rows if r.get("val/knn_top1")]
    linear = [float(r["val/linear_top1"]) for r in rows if r.get("val/linear_top1")]
    assert knn and linear and 0.0 <= knn[-1] <= 1.0 and 0.0 <= linear[-1] <= 1.0
    assert any(p.name.startswith("best-") for p in (run / "checkpoints").iterdir())
