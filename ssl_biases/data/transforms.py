"""Transforms shared by every method: the probe transform and normalisation statistics.

The augmented *views* belong to each method (``SSLMethod.view_recipe``, built into lightly's
transforms by ``ssl_biases.data.views`` or into device ops by ``ssl_biases.data.device_views``);
this file holds what all of them share.
"""

from __future__ import annotations

from dataclasses import dataclass

import torchvision.transforms as T


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
