"""`ssl-biases predict` writes embeddings [N, D], labels [N] and image paths, in dataset order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Subset
from torchvision.datasets import ImageFolder

from ssl_biases.cli import cli_main
from ssl_biases.data.datamodule import SSLDataModule, TransformedDataset
from ssl_biases.data.shapes import ShapesDataset
from ssl_biases.probes.embeddings import dataset_paths

from helpers import tiny_args, write_tiny_backbone

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
CLASSES = ("cat", "dog", "emu")


def write_imagefolder(root: Path, split: str, per_class: int) -> None:
    """Tiny ``root/<split>/<class>/<i>.png`` images, each class its own colour."""
    for label, name in enumerate(CLASSES):
        folder = root / split / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            colour = (80 * label + 10 * i, 40, 200 - 60 * label)
            Image.new("RGB", (20, 20), colour).save(folder / f"{i}.png")


def predict_args(root: Path, out: Path, *extra: str) -> list[str]:
    """``predict`` of a tiny random backbone over the imagefolder tree at ``root / "data"``."""
    return [
        "predict",
        *tiny_args(write_tiny_backbone(root)),
        "--data.dataset", "imagefolder",
        "--data.root", str(root / "data"),
        "--data.image_size", "16",
        "--embeddings.output_dir", str(out),
        *extra,
    ]  # fmt: skip


def test_dataset_paths_look_through_subsets_and_transforms(tmp_path):
    write_imagefolder(tmp_path, "test", per_class=2)
    folder = ImageFolder(str(tmp_path / "test"))
    wrapped = TransformedDataset(Subset(Subset(folder, [5, 3, 1, 0]), [2, 0]), lambda x: x)
    assert dataset_paths(wrapped) == [folder.samples[1][0], folder.samples[5][0]]
    assert dataset_paths(ShapesDataset(size=8, image_size=16)) is None


def test_predict_writes_embeddings_labels_and_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_imagefolder(tmp_path / "data", "test", per_class=3)
    write_imagefolder(tmp_path / "data", "train", per_class=1)
    out = tmp_path / "emb"
    cli = cli_main(predict_args(tmp_path, out, "--data.probe_batch_size", "4"))
    embeddings = np.load(out / "embeddings.npy")
    labels = np.load(out / "labels.npy")
    paths = (out / "paths.txt").read_text().splitlines()
    assert embeddings.shape == (9, 32) and embeddings.dtype == np.float32
    assert labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert [Path(p).parent.name for p in paths] == [c for c in CLASSES for _ in range(3)]
    assert [Path(p).name for p in paths[:3]] == ["0.png", "1.png", "2.png"]

    dataset = cli.datamodule.probe_dataset("test")  # row i is dataset item i
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])  # [9, 3, 16, 16]
    with torch.no_grad():
        expected = cli.model.backbone.eval()(images).numpy()
    np.testing.assert_allclose(embeddings, expected, rtol=1e-5, atol=1e-6)


def test_several_predict_loaders_are_refused():
    from ssl_biases.probes.embeddings import EmbeddingWriter

    batch = {"embeddings": torch.zeros(1, 2), "labels": torch.zeros(1)}
    with pytest.raises(ValueError, match="one predict dataloader"):
        EmbeddingWriter(output_dir="unused").write_on_epoch_end(
            None, None, [[batch], [batch]], [[[0]], [[1]]]
        )


def test_predict_split_probe_train_embeds_the_probe_bank(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_imagefolder(tmp_path / "data", "test", per_class=1)
    write_imagefolder(tmp_path / "data", "train", per_class=4)
    out = tmp_path / "emb"
    args = ["--data.max_probe_train_samples", "10", "--data.predict_split", "probe_train"]
    cli = cli_main(predict_args(tmp_path, out, *args))
    bank = cli.datamodule.probe_dataset("probe_train")  # 10 of the 12 train images
    assert len(bank) == 10
    assert np.load(out / "embeddings.npy").shape == (10, 32)
    assert np.load(out / "labels.npy").tolist() == [int(bank[i][1]) for i in range(10)]
    paths = (out / "paths.txt").read_text().splitlines()
    assert all(Path(p).parent.parent.name == "train" for p in paths)


def test_an_unknown_predict_split_is_a_clear_error():
    with pytest.raises(ValueError, match="predict_split must be 'test' or 'probe_train'"):
        SSLDataModule(predict_split="val")
