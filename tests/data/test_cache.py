"""`--data.cache`: image files decoded once into an in-memory uint8 array (issue 7)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_biases.data.datamodule import SSLDataModule
from ssl_biases.data.datasets import ArrayDataset, decode_to_memory, load_imagefolder


def write_tree(root: Path, sizes: dict[str, list[int]]) -> dict[str, np.ndarray]:
    """``root/{train,test}/<class>/<i>.png`` with random pixels; returns path -> array."""
    rng = np.random.default_rng(0)
    written = {}
    for split in ("train", "test"):
        for class_name, side_list in sizes.items():
            folder = root / split / class_name
            folder.mkdir(parents=True)
            for i, side in enumerate(side_list):
                pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
                written[str(folder / f"{i}.png")] = pixels
    return written


def test_cache_holds_the_decoded_pixels_and_labels_of_every_file(tmp_path: Path) -> None:
    written = write_tree(tmp_path, {"cat": [16] * 5, "dog": [16] * 4})
    files = load_imagefolder(tmp_path, "train")
    cached = decode_to_memory(files, num_workers=0, batch_size=4)  # 3 batches, last one short
    assert isinstance(cached, ArrayDataset)
    assert cached.images.shape == (9, 16, 16, 3) and cached.images.dtype == np.uint8
    assert cached.targets == files.targets == [0] * 5 + [1] * 4
    assert cached.classes == ["cat", "dog"]
    for index, (path, _) in enumerate(files.samples):
        np.testing.assert_array_equal(cached.images[index], written[path])
    assert decode_to_memory(cached) is cached  # arrays are not copied again


def test_cached_datamodule_serves_the_same_probe_tensors(tmp_path: Path) -> None:
    write_tree(tmp_path, {"a": [16] * 3, "b": [16] * 3, "c": [16] * 2})
    kwargs = dict(dataset="imagefolder", root=str(tmp_path), image_size=16, num_workers=0)
    plain, cached = SSLDataModule(**kwargs), SSLDataModule(**kwargs, cache=True)
    assert isinstance(cached.raw_dataset("train"), ArrayDataset)
    assert not isinstance(plain.raw_dataset("train"), ArrayDataset)
    assert cached.num_classes == plain.num_classes == 3
    for split in ("probe_train", "test"):
        a, b = plain.probe_dataset(split), cached.probe_dataset(split)
        assert len(a) == len(b) == 8
        for i in range(len(a)):
            torch.testing.assert_close(a[i][0], b[i][0], rtol=0, atol=0)
            assert a[i][1] == b[i][1]


def test_cache_refuses_images_of_different_sizes(tmp_path: Path) -> None:
    write_tree(tmp_path, {"a": [16, 16], "b": [12]})
    files = load_imagefolder(tmp_path, "train")
    with pytest.raises(ValueError, match="--data.cache none"):
        decode_to_memory(files, batch_size=2)  # the mismatch lands in a later batch
    with pytest.raises(ValueError, match="--data.cache none"):
        decode_to_memory(files, batch_size=8)  # ... or inside one batch
