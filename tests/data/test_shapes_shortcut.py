"""The shortcut variant of `shapes` (issue 9): a per-image grating that survives SimCLR's views."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision.transforms as T

from ssl_biases.backbones import IsotropicNet
from ssl_biases.data.datamodule import SSLDataModule
from ssl_biases.data.datasets import NORMALIZE
from ssl_biases.data.shapes import SHORTCUT_AMPLITUDE, ShapesDataset
from ssl_biases.data.transforms import Normalization
from ssl_biases.methods import SimCLR


def _pixels(dataset: ShapesDataset, index: int) -> np.ndarray:
    return np.asarray(dataset[index][0], dtype=np.float64)  # [H, W, 3]


def test_shortcut_adds_a_luminance_grating_to_the_same_images() -> None:
    clean = ShapesDataset(size=8)
    shortcut = clean.with_shortcut()
    assert shortcut.targets == clean.targets
    for i in range(8):
        a, b = _pixels(clean, i), _pixels(shortcut, i)
        diff = b - a  # [H, W, 3]
        unclipped = ((b > 0) & (b < 255)).all(-1)  # [H, W]
        assert unclipped.mean() > 0.1  # the rest clips at 0 or 255 (amplitude 90)
        # the same offset in R, G and B (a luminance pattern), bounded by the amplitude
        channel_spread = diff[unclipped].max(-1) - diff[unclipped].min(-1)
        assert channel_spread.max() <= 1.0
        assert np.abs(diff).max() <= SHORTCUT_AMPLITUDE + 0.5
        # a strong pattern: a sine of amplitude A has std A / sqrt(2) (less where clipped)
        assert diff[unclipped].std() > 0.3 * SHORTCUT_AMPLITUDE


def test_shortcut_differs_per_image_and_clean_images_are_unchanged() -> None:
    shortcut = ShapesDataset(size=4, shortcut=True)
    diffs = [_pixels(shortcut, i) - _pixels(shortcut.with_shortcut(False), i) for i in range(4)]
    assert all(not np.allclose(diffs[0], d) for d in diffs[1:])
    assert np.array_equal(
        _pixels(ShapesDataset(size=4), 2), _pixels(shortcut.with_shortcut(False), 2)
    )


def _orientation(view: torch.Tensor) -> tuple[float, float]:
    """Flip-invariant dominant gradient orientation ``(cos 2phi, |sin 2phi|)`` of a view."""
    grey = view.mean(0)  # [H, W]
    gy, gx = torch.gradient(grey)
    jxx, jyy, jxy = (gx * gx).sum(), (gy * gy).sum(), (gx * gy).sum()
    phi2 = math.atan2(2 * jxy.item(), (jxx - jyy).item())
    return math.cos(phi2), abs(math.sin(phi2))


@pytest.mark.parametrize(("shortcut", "low", "high"), [(False, 0.6, 2.0), (True, 0.0, 0.3)])
def test_views_of_one_image_can_be_matched_by_the_cue_alone(shortcut, low, high) -> None:
    """Under SimCLR's own augmentation (crop, flip, jitter, greyscale) a hand-made orientation
    descriptor puts two views of one image close together only when the cue is there."""
    method = SimCLR(IsotropicNet(image_size=32, patch_size=8, width=8, depth=1, num_heads=1))
    views = method.train_views(32, Normalization(*NORMALIZE["shapes"]))
    dataset = ShapesDataset(size=32, shortcut=shortcut)
    first, second = zip(*(views(dataset[i][0])[:2] for i in range(32)))
    a = torch.tensor([_orientation(v) for v in first])  # [32, 2]
    b = torch.tensor([_orientation(v) for v in second])  # [32, 2]
    distances = torch.cdist(a, b)  # [32, 32]
    ratio = (distances.diag().mean() / distances.mean()).item()  # ~1: views not matchable
    assert low <= ratio <= high, ratio  # measured: ~0.8-1.2 clean, ~0.1-0.15 with the cue


def test_datamodule_plants_the_cue_in_pretraining_images_only() -> None:
    data = SSLDataModule(shapes_size=16, batch_size=4, num_workers=0, shapes_shortcut=True,
                         max_probe_train_samples=None)  # fmt: skip
    data.train_views = T.PILToTensor()
    clean = ShapesDataset(size=16)
    train_image = data.train_dataset()[3][0].permute(1, 2, 0).double().numpy()  # [H, W, 3]
    assert np.abs(train_image - _pixels(clean, 3)).mean() > 10
    assert np.array_equal(train_image, _pixels(clean.with_shortcut(), 3))
    probe_transform = data.probe_dataset("probe_train").transform
    probe_image = data.probe_dataset("probe_train")[3][0]
    assert torch.equal(probe_image, probe_transform(clean[3][0]))


def test_shortcut_on_another_dataset_is_an_error() -> None:
    with pytest.raises(ValueError, match="shapes_shortcut"):
        SSLDataModule(dataset="cifar10", root="/nonexistent", shapes_shortcut=True)
