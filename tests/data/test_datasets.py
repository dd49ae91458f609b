import pickle

import numpy as np
import pytest
from PIL import Image

from ssl_biases.data.datasets import build_dataset, load_cifar, load_stl10


def _write_cifar10(folder, n_per_batch=4):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(n_per_batch, 3 * 32 * 32), dtype=np.uint8)
        with open(folder / name, "wb") as handle:
            pickle.dump({"data": data, "labels": list(range(n_per_batch))}, handle)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, handle)
    return data


def test_cifar10_reads_the_python_pickle_folder(tmp_path):
    last = _write_cifar10(tmp_path / "cifar-10-batches-py")
    train = load_cifar(tmp_path, "train")
    test = build_dataset("cifar10", "test", root=tmp_path)
    assert len(train) == 20 and len(test) == 4
    image, label = test[2]
    assert image.size == (32, 32) and label == 2
    # channel-major rows on disk -> HWC pixels
    expected = last[2].reshape(3, 32, 32).transpose(1, 2, 0)
    assert np.array_equal(np.asarray(image), expected)
    assert train.classes[3] == "c3"


def test_cifar100_uses_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    data = np.zeros((3, 3072), dtype=np.uint8)
    for name in ("train", "test"):
        with open(folder / name, "wb") as handle:
            pickle.dump(
                {"data": data, "fine_labels": [5, 6, 7], "coarse_labels": [0, 0, 0]}, handle
            )
    assert load_cifar(tmp_path, "test", "cifar100").targets == [5, 6, 7]


def test_stl10_reads_the_binary_release(tmp_path):
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    images = np.arange(2 * 3 * 96 * 96, dtype=np.uint64).astype(np.uint8).reshape(2, 3, 96, 96)
    for part in ("train", "test", "unlabeled"):
        images.tofile(folder / f"{part}_X.bin")
    for part in ("train", "test"):
        np.array([1, 10], dtype=np.uint8).tofile(folder / f"{part}_y.bin")
    pretrain = load_stl10(tmp_path, "train")
    assert len(pretrain) == 4 and pretrain.targets == [-1, -1, 0, 9]
    test = load_stl10(tmp_path, "test")
    image, _ = test[1]
    assert np.array_equal(np.asarray(image), images[1].transpose(2, 1, 0))  # column-major


def test_imagefolder_converts_greyscale_and_rgba(tmp_path):
    for split in ("train", "test"):
        for cls, mode in (("a", "L"), ("b", "RGBA")):
            (tmp_path / split / cls).mkdir(parents=True)
            Image.new(mode, (8, 8)).save(tmp_path / split / cls / "x.png")
    dataset = build_dataset("imagefolder", "test", root=tmp_path)
    assert dataset.classes == ["a", "b"]
    assert all(dataset[i][0].mode == "RGB" for i in range(2))


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "stl10", "imagefolder"])
def test_missing_dataset_names_the_path(tmp_path, name):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        build_dataset(name, "train", root=tmp_path)


def test_unknown_dataset_lists_known_ones():
    with pytest.raises(ValueError, match="shapes"):
        build_dataset("mnist", "train")
