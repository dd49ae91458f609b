"""Transforms shared by every method: the probe transform and normalisation statistics
(published per dataset, or computed from the data with :func:`channel_statistics`).

The augmented *views* belong to each method (``SSLMethod.view_recipe``, built into lightly's
transforms by ``ssl_biases.data.views`` or into device ops by ``ssl_biases.data.device_views``);
this file holds what all of them share.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torchvision.transforms as T
from torch import Tensor
from torch.utils.data import DataLoader, Dataset


@dataclass(frozen=True)
class Normalization:
    """Per-channel mean and std (RGB, images scaled to [0, 1])."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def as_lightly(self) -> dict[str, list[float]]:
        """The ``normalize`` argument lightly's transforms expect."""
        return {"mean": list(self.mean), "std": list(self.std)}


def probe_transform(image_size: int, norm: Normalization) -> T.Compose:
    """Deterministic transform for probes and analysis: resize, centre crop, normalise."""
    return T.Compose(
        [
            T.Resize(image_size),
            T.CenterCrop(image_size),
            T.ToTensor(),
            T.Normalize(norm.mean, norm.std),
        ]
    )


def _stack_transformed(transform: Callable[[Any], Tensor], batch: list[tuple[Any, int]]) -> Tensor:
    return torch.stack([transform(image) for image, _ in batch])  # [b, 3, H, W]


def channel_statistics(
    dataset: Dataset, image_size: int, num_workers: int = 0, batch_size: int = 64
) -> Normalization:
    """Per-channel mean and std of every image of ``dataset``, as the probes see them.

    Each image is resized and centre-cropped to ``image_size`` (so every image weighs the
    same, whatever its size) and scaled to [0, 1]; mean and (population) std are pooled over
    all pixels of all images, accumulated in float64, and rounded to 4 decimals (the values
    used are the values recorded). A std below 1/255 (a constant channel) is raised to 1/255.
    Pass a fixed subset for a deterministic sample of a large dataset.

    Raises:
        ValueError: if ``dataset`` is empty.
    """
    to_tensor = T.Compose([T.Resize(image_size), T.CenterCrop(image_size), T.ToTensor()])
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=partial(_stack_transformed, to_tensor),
    )
    total = torch.zeros(3, dtype=torch.float64)
    squares = torch.zeros(3, dtype=torch.float64)
    count = 0
    for images in loader:
        pixels = images.double()  # [b, 3, H, W]
        total += pixels.sum(dim=(0, 2, 3))  # [3]
        squares += pixels.square().sum(dim=(0, 2, 3))  # [3]
        count += pixels.shape[0] * pixels.shape[2] * pixels.shape[3]
    if count == 0:
        raise ValueError("cannot compute normalisation statistics of an empty dataset")
    mean = total / count  # [3]
    std = (squares / count - mean.square()).clamp_min(0).sqrt().clamp_min(1 / 255)  # [3]
    return Normalization(
        tuple(round(float(m), 4) for m in mean),  # type: ignore[arg-type]
        tuple(round(float(s), 4) for s in std),  # type: ignore[arg-type]
    )
