from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torch.utils.data import Subset

from ssl_biases.backbones import IsotropicNet
from ssl_biases.data.augment_choice import choose_augment, image_sizes
from ssl_biases.data.datasets import ArrayDataset, load_imagefolder
from ssl_biases.data.shapes import ShapesDataset
from ssl_biases.methods import SimCLR, SSLMethod


def tiny() -> IsotropicNet:
    return IsotropicNet(image_size=16, patch_size=4, width=32, depth=1, num_heads=2)


class NoRecipe(SSLMethod):
    """A method that states no view recipe (as I-JEPA: its own per-image views)."""


class OwnViews(SimCLR):
    """A recipe, but train_views of its own: the device path would not make these views."""

    def train_views(self, image_size, norm):  # noqa: ANN001, ANN201
        return lambda image: [image]


def image_tree(root: Path, sides: list[int]) -> Path:
    for i, side in enumerate(sides):
        (root / "train" / "a").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (side, side + 1)).save(root / "train" / "a" / f"{i}.png")
    return root


def test_image_sizes_of_arrays_shapes_files_and_subsets(tmp_path: Path) -> None:
    arrays = ArrayDataset(np.zeros((3, 8, 10, 3), np.uint8), [0, 1, 0], ["a", "b"])
    assert image_sizes(arrays) == {(8, 10)}
    assert image_sizes(ShapesDataset(size=4, image_size=24)) == {(24, 24)}
    files = load_imagefolder(image_tree(tmp_path, [16, 16, 12, 16]), "train")
    assert image_sizes(files) == {(17, 16), (13, 12)}  # (H, W) from the headers
    assert image_sizes(Subset(Subset(files, [0, 1, 3]), [0, 2])) == {(17, 16)}
    assert image_sizes(files, limit=3) is None  # too many files to read cheaply
    assert image_sizes(Subset(files, [0, 2]), num_workers=1) == {(17, 16), (13, 12)}
    assert image_sizes([(Image.new("RGB", (4, 4)), 0)]) is None  # an unknown kind of dataset


def test_auto_chooses_device_views_only_for_a_recipe_and_one_size(tmp_path: Path) -> None:
    shapes = ShapesDataset(size=4, image_size=16)
    choice, reason = choose_augment(SimCLR(tiny()), shapes, 16)
    assert choice == "device" and "SimCLR states a view_recipe" in reason and "16x16" in reason
    choice, reason = choose_augment(NoRecipe(tiny()), shapes, 16)
    assert choice == "workers" and "NoRecipe states no view_recipe" in reason
    choice, reason = choose_augment(OwnViews(tiny()), shapes, 16)
    assert choice == "workers" and "OwnViews overrides train_views" in reason
    files = load_imagefolder(image_tree(tmp_path, [16, 16, 12]), "train")
    choice, reason = choose_augment(SimCLR(tiny()), files, 16)
    assert choice == "workers" and "2 sizes (13x12, 17x16)" in reason
    assert choose_augment(SimCLR(tiny()), Subset(files, [0, 1]), 16)[0] == "device"


def test_an_unknown_size_means_worker_views(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from ssl_biases.data import augment_choice

    monkeypatch.setattr(augment_choice, "AUTO_SCAN_LIMIT", 1)
    files = load_imagefolder(image_tree(tmp_path, [16, 16]), "train")
    choice, reason = choose_augment(SimCLR(tiny()), files, 16)
    assert choice == "workers" and "--data.augment device" in reason
