"""A method's views stated once, as data: :class:`ViewSpec` and :class:`ViewRecipe`.

A method returns its recipe from ``view_recipe(image_size)``; the data side builds from it
either the per-image transforms that run in loader workers (:func:`per_image_views`, lightly's
and torchvision's transforms, this file) or the batched per-sample transforms that run on the
training device (:class:`~ssl_biases.data.device_views.DeviceViews`). Both follow the order
of lightly's view transforms: random resized crop, horizontal flip, colour jitter (applied
with a probability, its four factors in a random order), greyscale, Gaussian blur,
solarisation, then normalisation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from lightly.transforms.gaussian_blur import GaussianBlur
from lightly.transforms.multi_view_transform import MultiViewTransform
from lightly.transforms.solarize import RandomSolarization
from lightly.transforms.torchvision_v2_compatibility import torchvision_transforms as T

from ssl_biases.data.transforms import Normalization

Interpolation = Literal["bilinear", "bicubic"]


def lightly_jitter(
    strength: float, brightness: float, contrast: float, saturation: float, hue: float
) -> dict[str, float]:
    """``ColorJitter`` magnitudes as lightly scales them: each base value times ``strength``."""
    return {
        "brightness": strength * brightness,
        "contrast": strength * contrast,
        "saturation": strength * saturation,
        "hue": strength * hue,
    }


@dataclass(frozen=True)
class ViewSpec:
    """One kind of view (``count`` of them per image), with torchvision's parameter meanings.

    Args:
        size: Side of the output crop in pixels.
        scale: Area range of the crop, as a fraction of the image (``RandomResizedCrop``).
        ratio: Aspect-ratio range (width / height) of the crop, sampled log-uniformly.
        interpolation: Resampling of the crop (lightly uses bicubic for DINO and MAE).
        hflip_prob: Probability of a horizontal flip.
        jitter_prob: Probability that colour jitter is applied.
        brightness: Brightness factor drawn from ``[max(0, 1 - b), 1 + b]``.
        contrast: Contrast factor drawn from ``[max(0, 1 - c), 1 + c]``.
        saturation: Saturation factor drawn from ``[max(0, 1 - s), 1 + s]``.
        hue: Hue shift drawn from ``[-h, h]`` (in turns; at most 0.5).
        grey_prob: Probability of converting the view to greyscale (3 equal channels).
        blur_prob: Probability of a Gaussian blur.
        blur_sigma: Range of the blur's standard deviation in pixels (drawn uniformly).
        solarize_prob: Probability of solarisation (values >= 0.5 of [0, 1] become 1 - x,
            PIL's threshold 128 of 255).
        count: Number of such views per image.
    """

    size: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    interpolation: Interpolation = "bilinear"
    hflip_prob: float = 0.5
    jitter_prob: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    grey_prob: float = 0.0
    blur_prob: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_prob: float = 0.0
    count: int = 1

    def __post_init__(self) -> None:
        if self.size < 1 or self.count < 1:
            raise ValueError(f"a view needs size >= 1 and count >= 1, got {self}")
        low, high = self.scale
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(f"crop scale must satisfy 0 < low <= high <= 1, got {self.scale}")
        if not 0.0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"crop ratio must satisfy 0 < low <= high, got {self.ratio}")
        probs = ("hflip_prob", "jitter_prob", "grey_prob", "blur_prob", "solarize_prob")
        for name in probs:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if min(self.brightness, self.contrast, self.saturation, self.hue) < 0 or self.hue > 0.5:
            raise ValueError(f"jitter magnitudes must be >= 0 and hue <= 0.5, got {self}")
        if not 0.0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise ValueError(f"blur_sigma must satisfy 0 < low <= high, got {self.blur_sigma}")
        if self.interpolation not in ("bilinear", "bicubic"):
            raise ValueError(f"interpolation must be bilinear or bicubic, got {self.interpolation}")

    @property
    def jitter(self) -> tuple[float, float, float, float]:
        """``(brightness, contrast, saturation, hue)`` magnitudes."""
        return (self.brightness, self.contrast, self.saturation, self.hue)

    def blur_kernel_size(self) -> int:
        """Odd kernel side covering +-3 sigma of the largest sigma, at most ``2 * size - 1``."""
        side = 2 * math.ceil(3.0 * self.blur_sigma[1]) + 1
        return min(side, 2 * self.size - 1)


@dataclass(frozen=True)
class ViewRecipe:
    """The views of one training image, in the order the method's ``ssl_step`` reads them."""

    views: tuple[ViewSpec, ...]

    def __post_init__(self) -> None:
        if not self.views:
            raise ValueError("a view recipe needs at least one ViewSpec")

    def expanded(self) -> list[ViewSpec]:
        """One spec per output view (each repeated ``count`` times)."""
        return [spec for spec in self.views for _ in range(spec.count)]


def asymmetric_two_views(
    image_size: int,
    min_scale: float,
    cj_strength: float,
    gaussian_blur: float,
    solarization_prob: float,
) -> ViewRecipe:
    """BYOL's two asymmetric views (arXiv 2006.07733; lightly's ``BYOLView1Transform`` and
    ``BYOLView2Transform``), also used by MoCo v3 and Barlow Twins: the same crop, flip,
    jitter (0.4, 0.4, 0.2, 0.1 times ``cj_strength``, p 0.8) and greyscale (p 0.2); view 1
    blurs with ``gaussian_blur`` and never solarises, view 2 blurs with a tenth of it and
    solarises with ``solarization_prob``."""
    common = {
        "size": image_size,
        "scale": (min_scale, 1.0),
        "jitter_prob": 0.8,
        **lightly_jitter(cj_strength, 0.4, 0.4, 0.2, 0.1),
        "grey_prob": 0.2,
        "blur_sigma": (0.1, 2.0),
    }
    return ViewRecipe(
        (
            ViewSpec(**common, blur_prob=gaussian_blur, solarize_prob=0.0),
            ViewSpec(**common, blur_prob=0.1 * gaussian_blur, solarize_prob=solarization_prob),
        )
    )


def per_image_view(spec: ViewSpec, norm: Normalization) -> T.Compose:
    """One view of a PIL image, from lightly's and torchvision's transforms (loader workers)."""
    mode = T.InterpolationMode.BICUBIC if spec.interpolation == "bicubic" else None
    crop_args = {"interpolation": mode} if mode is not None else {}
    steps = [T.RandomResizedCrop(size=spec.size, scale=spec.scale, ratio=spec.ratio, **crop_args)]
    if spec.hflip_prob > 0:
        steps.append(T.RandomHorizontalFlip(p=spec.hflip_prob))
    if spec.jitter_prob > 0:
        jitter = T.ColorJitter(*spec.jitter)
        steps.append(T.RandomApply([jitter], p=spec.jitter_prob))
    if spec.grey_prob > 0:
        steps.append(T.RandomGrayscale(p=spec.grey_prob))
    if spec.blur_prob > 0:
        steps.append(GaussianBlur(sigmas=spec.blur_sigma, prob=spec.blur_prob))
    if spec.solarize_prob > 0:
        steps.append(RandomSolarization(prob=spec.solarize_prob))
    steps += [T.ToTensor(), T.Normalize(mean=list(norm.mean), std=list(norm.std))]
    return T.Compose(steps)


def per_image_views(recipe: ViewRecipe, norm: Normalization) -> MultiViewTransform:
    """The list of views of one image (lightly's ``MultiViewTransform``), one per spec copy."""
    built = {spec: per_image_view(spec, norm) for spec in recipe.views}
    return MultiViewTransform([built[spec] for spec in recipe.expanded()])
