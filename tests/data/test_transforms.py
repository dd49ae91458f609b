import numpy as np
import pytest
from PIL import Image

from ssl_biases.data.datasets import ArrayDataset
from ssl_biases.data.transforms import channel_statistics


def test_channel_statistics_match_numpy():
    rng = np.random.default_rng(0)
    images = np.stack(
        [
            rng.integers(0, 256, (12, 16, 16)),  # R: uniform
            rng.integers(100, 140, (12, 16, 16)),  # G: narrow
            rng.integers(0, 64, (12, 16, 16)),  # B: dark
        ],
        axis=-1,
    ).astype(np.uint8)  # [12, 16, 16, 3]
    dataset = ArrayDataset(images, [0] * 12, ["x"])
    norm = channel_statistics(dataset, image_size=16, batch_size=5)
    pixels = images.astype(np.float64) / 255.0
    np.testing.assert_allclose(norm.mean, pixels.mean(axis=(0, 1, 2)), atol=6e-5)
    np.testing.assert_allclose(norm.std, pixels.std(axis=(0, 1, 2)), atol=6e-5)
    assert norm.mean == tuple(round(m, 4) for m in norm.mean)  # recorded as used


class _Images:
    def __init__(self, images: list[Image.Image]) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return self.images[index], -1


def test_every_image_weighs_the_same_whatever_its_size():
    # a black 64 px and a white 16 px image: pixel-weighted the mean would be 1/17
    images = _Images([Image.new("RGB", (64, 64), (0, 0, 0)), Image.new("RGB", (16, 16), "white")])
    norm = channel_statistics(images, image_size=16)
    assert norm.mean == pytest.approx((0.5, 0.5, 0.5)) and norm.std == pytest.approx((0.5,) * 3)


def test_a_constant_channel_gets_a_nonzero_std():
    norm = channel_statistics(_Images([Image.new("RGB", (8, 8), (0, 10, 20))] * 3), image_size=8)
    assert min(norm.std) == pytest.approx(round(1 / 255, 4))


def test_an_empty_dataset_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        channel_statistics(_Images([]), image_size=8)
