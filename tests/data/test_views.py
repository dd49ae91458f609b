"""View recipes: the per-image path built from a method's recipe is lightly's transform."""

from __future__ import annotations

from typing import Any

import pytest
from lightly.transforms import (
    BYOLTransform,
    BYOLView1Transform,
    BYOLView2Transform,
    DINOTransform,
    MAETransform,
    SimCLRTransform,
    VICRegTransform,
)

from ssl_biases.backbones import IsotropicNet
from ssl_biases.data.transforms import Normalization
from ssl_biases.data.views import ViewRecipe, ViewSpec, per_image_views
from ssl_biases.methods import (
    BYOL,
    DINO,
    MAE,
    BarlowTwins,
    MaskedModeling,
    MoCoV3,
    SimCLR,
    VICReg,
)

NORM = Normalization((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
LIGHTLY_NORM = NORM.as_lightly()


def backbone() -> IsotropicNet:
    return IsotropicNet(image_size=32, patch_size=4, width=32, depth=1, num_heads=2)


def describe(view: Any) -> list[tuple]:
    """The steps of one view transform that can act, with their parameters (rounded)."""
    compose = view if hasattr(view, "transforms") else view.transform
    steps = []
    for step in compose.transforms:
        name = type(step).__name__
        if name == "RandomResizedCrop":
            entry = ("crop", step.size, step.scale, step.ratio, str(step.interpolation))
        elif name == "RandomHorizontalFlip":
            entry = ("hflip", step.p)
        elif name in ("RandomVerticalFlip", "RandomRotate"):
            assert getattr(step, "p", getattr(step, "prob", None)) == 0.0
            continue
        elif name == "RandomApply":
            (jitter,) = step.transforms
            ranges = (jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue)
            entry = ("jitter", step.p, *(tuple(r) if r is not None else None for r in ranges))
        elif name == "RandomGrayscale":
            entry = ("grey", step.p)
        elif name == "GaussianBlur":
            entry = ("blur", step.prob, tuple(step.sigmas))
        elif name == "RandomSolarization":
            entry = ("solarize", step.prob, step.threshold)
        elif name == "Normalize":
            entry = ("normalize", tuple(step.mean), tuple(step.std))
        else:
            entry = (name,)
        if len(entry) > 1 and entry[1] == 0.0:  # a step that never acts
            continue
        steps.append(rounded(entry))
    return steps


def rounded(value: Any) -> Any:
    """Floats rounded to 9 digits, inside tuples and lists too."""
    if isinstance(value, float):
        return round(value, 9)
    if isinstance(value, (tuple, list)):
        return tuple(rounded(v) for v in value)
    return value


def describe_all(transform: Any) -> list[list[tuple]]:
    views = transform.transforms if hasattr(transform, "transforms") else [transform]
    return [describe(view) for view in views]


def test_simclr_views_are_lightlys_simclr_transform() -> None:
    method = SimCLR(
        backbone(), min_scale=0.2, cj_strength=0.7, gaussian_blur=0.3, random_gray_scale=0.1
    )
    lightly = SimCLRTransform(
        input_size=32,
        min_scale=0.2,
        cj_strength=0.7,
        gaussian_blur=0.3,
        random_gray_scale=0.1,
        normalize=LIGHTLY_NORM,
    )
    ours = describe_all(method.train_views(32, NORM))
    assert ours == describe_all(lightly)
    assert ours[0][2] == ("jitter", 0.8, (0.44, 1.56), (0.44, 1.56), (0.44, 1.56), (-0.14, 0.14))


@pytest.mark.parametrize("method_class", [BYOL, MoCoV3, BarlowTwins])
def test_byol_views_are_lightlys_asymmetric_views(method_class: type) -> None:
    method = method_class(backbone(), min_scale=0.1, cj_strength=0.6, gaussian_blur=0.5)
    common = {"input_size": 32, "min_scale": 0.1, "cj_strength": 0.6, "normalize": LIGHTLY_NORM}
    lightly = BYOLTransform(
        view_1_transform=BYOLView1Transform(gaussian_blur=0.5, solarization_prob=0.0, **common),
        view_2_transform=BYOLView2Transform(gaussian_blur=0.05, solarization_prob=0.2, **common),
    )
    ours = describe_all(method.train_views(32, NORM))
    assert ours == describe_all(lightly)
    assert ("blur", 0.5, (0.1, 2.0)) in ours[0] and ("blur", 0.05, (0.1, 2.0)) in ours[1]
    assert not any(s[0] == "solarize" for s in ours[0]) and ("solarize", 0.2, 128) in ours[1]


@pytest.mark.parametrize("n_local", [0, 3])
def test_dino_views_are_lightlys_multi_crop(n_local: int) -> None:
    method = DINO(backbone(), n_local_views=n_local, cj_strength=0.9, gaussian_blur=(0.6, 0.2, 0.4))
    lightly = DINOTransform(
        global_crop_size=32,
        global_crop_scale=(0.4, 1.0),
        local_crop_size=16,
        local_crop_scale=(0.05, 0.4),
        n_local_views=n_local,
        cj_strength=0.9,
        gaussian_blur=(0.6, 0.2, 0.4),
        solarization_prob=0.2,
        normalize=LIGHTLY_NORM,
    )
    ours = describe_all(method.train_views(32, NORM))
    assert ours == describe_all(lightly) and len(ours) == 2 + n_local
    # lightly gives the second global crop its default strength 0.5, not cj_strength
    assert ours[0][2][2] == (0.28, 1.72) and ours[1][2][2] == (0.6, 1.4)
    assert [spec.size for spec in method.view_recipe(32).expanded()] == [32, 32] + [16] * n_local


@pytest.mark.parametrize("method_class", [MAE, MaskedModeling])
def test_masked_methods_have_lightlys_mae_view(method_class: type) -> None:
    method = method_class(backbone(), min_scale=0.3)
    lightly = MAETransform(input_size=32, min_scale=0.3, normalize=LIGHTLY_NORM)
    assert describe_all(method.train_views(32, NORM)) == [describe(lightly)]
    assert method.view_recipe(32).views[0].interpolation == "bicubic"


def test_views_come_in_recipe_order_with_their_sizes() -> None:
    recipe = ViewRecipe((ViewSpec(24, count=2), ViewSpec(8, scale=(0.1, 0.5), count=3)))
    assert [s.size for s in recipe.expanded()] == [24, 24, 8, 8, 8]
    from PIL import Image

    views = per_image_views(recipe, NORM)(Image.new("RGB", (40, 30), (10, 200, 90)))
    assert [tuple(v.shape) for v in views] == [(3, 24, 24)] * 2 + [(3, 8, 8)] * 3


def test_blur_kernel_covers_three_sigma_within_the_view() -> None:
    assert ViewSpec(32, blur_sigma=(0.1, 2.0)).blur_kernel_size() == 13
    assert ViewSpec(32, blur_sigma=(0.1, 0.5)).blur_kernel_size() == 5
    assert ViewSpec(4, blur_sigma=(0.1, 2.0)).blur_kernel_size() == 7


@pytest.mark.parametrize(
    "kwargs",
    [
        {"scale": (0.5, 0.2)},
        {"scale": (0.0, 1.0)},
        {"ratio": (2.0, 1.0)},
        {"hflip_prob": 1.5},
        {"solarize_prob": -0.1},
        {"hue": 0.6},
        {"blur_sigma": (0.0, 1.0)},
        {"count": 0},
        {"interpolation": "nearest"},
    ],
)
def test_bad_view_specs_are_value_errors(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        ViewSpec(32, **kwargs)
    with pytest.raises(ValueError, match="at least one"):
        ViewRecipe(())


def test_vicreg_views_are_lightlys_vicreg_views() -> None:
    method = VICReg(backbone(), min_scale=0.15, cj_strength=0.6, random_gray_scale=0.3)
    lightly = VICRegTransform(
        input_size=32,
        min_scale=0.15,
        cj_strength=0.6,
        random_gray_scale=0.3,
        solarize_prob=0.1,
        gaussian_blur=0.0,
        normalize=LIGHTLY_NORM,
    )
    ours = describe_all(method.train_views(32, NORM))
    assert ours == describe_all(lightly) and len(ours) == 2
    assert ours[0][2] == ("jitter", 0.8, (0.52, 1.48), (0.52, 1.48), (0.76, 1.24), (-0.12, 0.12))
