"""Device views: the same distributions and outputs as the PIL path, keyed by (seed, epoch, index).

Tolerances: rates and quantiles are compared on 20,000 draws (3,000 for torchvision's own
``get_params``), where one standard error of a rate is at most 0.0035; each bound is about four
standard errors. Outputs with fixed parameters are compared with the PIL path on [0, 1]
pixels: the crop (PIL's resize weights) within 2/255, the jitter steps (PIL rounds to uint8
after each step and shifts hue in uint8 HSV) within 10/255 at most and 2/255 on average, PIL's
box-filter approximation of the Gaussian blur within 4/255.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image, ImageFilter, ImageOps
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from ssl_biases.backbones import IsotropicNet
from ssl_biases.data import device_cache
from ssl_biases.data.datamodule import SSLDataModule
from ssl_biases.data.datasets import ArrayDataset
from ssl_biases.data.device_cache import DeviceCache, RawBatch
from ssl_biases.data.device_views import (
    Constants,
    DeviceViews,
    ViewParams,
    blur_matrices,
    draw_salts,
    hashed_draws,
    hashed_uniform,
    hue_shift,
    make_view,
)
from ssl_biases.data.sampler import ResumableSampler
from ssl_biases.data.transforms import Normalization
from ssl_biases.data.views import ViewRecipe, ViewSpec
from ssl_biases.methods import (
    BYOL,
    DINO,
    IBOT,
    MAE,
    BarlowTwins,
    MaskedModeling,
    MoCoV3,
    SimCLR,
    VICReg,
)
from ssl_biases.methods.base import SSLMethod
from ssl_biases.run.op_counter import OpCounter

NORM = Normalization((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
N = 20_000
FULL = ViewSpec(
    32,
    jitter_prob=0.8,
    brightness=0.4,
    contrast=0.8,
    saturation=1.2,
    hue=0.1,
    grey_prob=0.2,
    blur_prob=0.3,
    blur_sigma=(0.1, 2.0),
    solarize_prob=0.2,
)


def keys(n: int, epoch: int = 0, start: int = 0) -> torch.Tensor:
    index = torch.arange(start, start + n)
    return torch.stack([torch.full_like(index, epoch), index], dim=1)  # [n, 2]


def draws(spec: ViewSpec, height: int = 32, width: int = 32, view: int = 0) -> ViewParams:
    recipe = ViewRecipe(tuple([spec] * (view + 1)))
    return DeviceViews(recipe, NORM, seed=0).params(keys(N), view, height, width)


def rate(flags: torch.Tensor) -> float:
    return flags.float().mean().item()


# ------------------------------------------------------------------ parameter distributions
@pytest.mark.parametrize("size", [(32, 32), (24, 48), (8, 64)])
def test_crop_boxes_follow_torchvision_random_resized_crop(size: tuple[int, int]) -> None:
    height, width = size
    spec = ViewSpec(16, scale=(0.08, 1.0)) if height != 8 else ViewSpec(16, scale=(0.6, 1.0))
    top, left, h, w = draws(spec, height, width).box.double().unbind(1)
    torch.manual_seed(0)
    image = torch.empty(3, height, width)
    reference = torch.tensor(
        [T.RandomResizedCrop.get_params(image, spec.scale, spec.ratio) for _ in range(3000)]
    ).double()  # [3000, 4] (top, left, h, w)
    q = torch.linspace(0.1, 0.9, 9, dtype=torch.float64)
    for ours, theirs, tol in [
        (h * w / (height * width), reference[:, 2] * reference[:, 3] / (height * width), 0.03),
        ((w / h).log(), (reference[:, 3] / reference[:, 2]).log(), 0.06),
    ]:
        assert (ours.quantile(q) - theirs.quantile(q)).abs().max() < tol
    assert (top >= 0).all() and (top + h <= height).all() and (left + w <= width).all()
    # the centre-crop fallback (no try fits) is as frequent as torchvision's
    centre = (h == height) & (w == round(height * 4 / 3)) if height == 8 else None
    if centre is not None:
        ref = (reference[:, 2] == height) & (reference[:, 3] == round(height * 4 / 3))
        assert abs(rate(centre) - rate(ref)) < 0.03 and rate(ref) > 0.5
    for offset, room in [(top, height - h), (left, width - w)]:  # uniform offsets
        inner = room > 0
        if inner.sum() > 1000:
            assert abs((offset[inner] / room[inner]).mean().item() - 0.5) < 0.02


def test_application_rates_match_the_recipe() -> None:
    p = draws(FULL)
    for flags, expected in [
        (p.flip, 0.5),
        (p.jitter, 0.8),
        (p.grey, 0.2),
        (p.blur, 0.3),
        (p.solarize, 0.2),
        (p.flip & p.grey, 0.1),  # independent draws
        (p.jitter & p.solarize, 0.16),
    ]:
        assert abs(rate(flags) - expected) < 0.015
    other_view = draws(FULL, view=1)  # a second view of the same images draws anew
    assert abs(rate(p.flip & other_view.flip) - 0.25) < 0.015
    assert not torch.equal(p.box, other_view.box)
    never = draws(ViewSpec(32, hflip_prob=0.0))
    assert not never.flip.any() and not never.jitter.any() and not never.solarize.any()


def test_jitter_factors_are_uniform_on_torchvisions_ranges() -> None:
    p = draws(FULL)
    tv = T.ColorJitter(FULL.brightness, FULL.contrast, FULL.saturation, FULL.hue)
    ranges = [tv.brightness, tv.contrast, tv.saturation, tv.hue]  # [0.6, 1.4], [0.2, 1.8], ...
    assert tuple(ranges[2]) == (0.0, 2.2) and tuple(ranges[3]) == (-0.1, 0.1)
    for column, (low, high) in enumerate(ranges):
        factor = p.factors[:, column].double()
        assert low <= factor.min() < low + 0.01 * (high - low)
        assert high - 0.01 * (high - low) < factor.max() <= high
        bins = torch.histc(factor, bins=10, min=low, max=high) / N
        assert (bins - 0.1).abs().max() < 0.015
    orders = [tuple(o) for o in p.order.tolist()]
    counts = {perm: orders.count(perm) / N for perm in itertools.permutations(range(4))}
    assert len(counts) == 24 and max(abs(c - 1 / 24) for c in counts.values()) < 0.008


def test_blur_sigma_is_uniform_on_its_range() -> None:
    sigma = draws(FULL).sigma.double()
    assert 0.1 <= sigma.min() < 0.12 and 1.98 < sigma.max() <= 2.0
    q = torch.linspace(0.1, 0.9, 9, dtype=torch.float64)
    assert (sigma.quantile(q) - (0.1 + 1.9 * q)).abs().max() < 0.03


def test_byol_recipe_solarises_the_second_view_only() -> None:
    recipe = BYOL(IsotropicNet(image_size=32, patch_size=4, width=32, depth=1, num_heads=2),
                  gaussian_blur=1.0).view_recipe(32)  # fmt: skip
    views = DeviceViews(recipe, NORM, seed=0)
    first, second = (views.params(keys(N), v, 32, 32) for v in (0, 1))
    assert rate(first.solarize) == 0.0 and abs(rate(second.solarize) - 0.2) < 0.015
    assert rate(first.blur) == 1.0 and abs(rate(second.blur) - 0.1) < 0.015


def test_hashed_uniform_is_uniform_and_decorrelated() -> None:
    u = hashed_uniform(12345, keys(N), view=0, draws=8).double()  # [N, 8]
    assert 0.0 <= u.min() and u.max() < 1.0
    assert (u.mean(0) - 0.5).abs().max() < 0.01 and (u.var(0) - 1 / 12).abs().max() < 0.003
    corr = torch.corrcoef(u.T) - torch.eye(8, dtype=torch.float64)
    assert corr.abs().max() < 0.03
    neighbours = torch.corrcoef(torch.stack([u[:-1, 0], u[1:, 0]]))[0, 1]  # index i vs i + 1
    assert abs(neighbours) < 0.03


# ------------------------------------------------------- fixed parameters: the PIL path's output
def smooth_image() -> np.ndarray:
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((32, 32), Image.BICUBIC))  # [32, 32, 3]


def fixed(box, flip=False, factors=None, order=(0, 1, 2, 3), grey=False, sigma=None, sol=False):
    flag = lambda value: torch.tensor([value])  # noqa: E731
    return ViewParams(
        box=torch.tensor([box]),
        flip=flag(flip),
        jitter=flag(factors is not None),
        factors=torch.tensor([factors or (1.0, 1.0, 1.0, 0.0)]),
        order=torch.tensor([order]),
        grey=flag(grey),
        blur=flag(sigma is not None),
        sigma=torch.tensor([sigma or 1.0]),
        solarize=flag(sol),
    )


def pil_view(image, spec, box, flip=False, factors=None, order=(0, 1, 2, 3), grey=False,
             sigma=None, sol=False):  # fmt: skip
    """What the per-image path does with these parameters (torchvision on PIL, lightly's blur)."""
    mode = (
        InterpolationMode.BICUBIC if spec.interpolation == "bicubic" else InterpolationMode.BILINEAR
    )
    out = TF.resized_crop(image, *box, [spec.size, spec.size], interpolation=mode)
    out = TF.hflip(out) if flip else out
    steps = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    for index in order if factors is not None else ():
        if factors[index] != (0.0 if index == 3 else 1.0):  # a neutral step is not run
            out = steps[index](out, factors[index])
    out = TF.to_grayscale(out, 3) if grey else out
    out = out.filter(ImageFilter.GaussianBlur(radius=sigma)) if sigma is not None else out
    out = ImageOps.solarize(out, 128) if sol else out
    return TF.to_tensor(out)  # [3, s, s]


CASES = [  # (name, spec, parameters, max and mean tolerance in 1/255)
    ("identity", ViewSpec(32), {"box": (0, 0, 32, 32)}, 0.01, 0.01),
    ("bilinear up", ViewSpec(32), {"box": (5, 7, 12, 17)}, 2, 0.5),
    ("bilinear up, flip", ViewSpec(32), {"box": (5, 7, 12, 17), "flip": True}, 2, 0.5),
    ("bilinear down", ViewSpec(16), {"box": (2, 5, 28, 20)}, 2, 0.5),
    ("bicubic up", ViewSpec(32, interpolation="bicubic"), {"box": (3, 1, 20, 9)}, 2, 0.5),
    ("bicubic down", ViewSpec(16, interpolation="bicubic"), {"box": (0, 2, 30, 26)}, 2.5, 0.5),
    ("brightness", FULL, {"box": (0, 0, 32, 32), "factors": (1.3, 1, 1, 0)}, 1.5, 0.5),
    ("contrast", FULL, {"box": (0, 0, 32, 32), "factors": (1, 0.6, 1, 0)}, 1.5, 0.5),
    ("saturation", FULL, {"box": (0, 0, 32, 32), "factors": (1, 1, 1.8, 0)}, 1.5, 0.5),
    ("hue", FULL, {"box": (0, 0, 32, 32), "factors": (1, 1, 1, 0.08)}, 10, 2),
    (
        "jitter, drawn order",
        FULL,
        {"box": (0, 0, 32, 32), "factors": (0.7, 1.4, 0.5, -0.1), "order": (3, 1, 0, 2)},
        10,
        2,
    ),
    ("grey", FULL, {"box": (0, 0, 32, 32), "grey": True}, 1, 0.5),
    ("blur", FULL, {"box": (0, 0, 32, 32), "sigma": 1.5}, 4, 1),
    ("solarise", FULL, {"box": (0, 0, 32, 32), "sol": True}, 0.01, 0.01),
]


@pytest.mark.parametrize(("name", "spec", "kwargs", "max_tol", "mean_tol"), CASES)
def test_fixed_parameters_give_the_pil_paths_view(name, spec, kwargs, max_tol, mean_tol) -> None:
    pixels = smooth_image()
    images = torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None].float() / 255  # [1, 3, H, W]
    ours = make_view(images, torch.tensor([0]), fixed(**kwargs), spec)[0]
    theirs = pil_view(Image.fromarray(pixels), spec, **kwargs)
    diff = (ours - theirs).abs() * 255
    assert diff.max() <= max_tol and diff.mean() <= mean_tol, (name, diff.max(), diff.mean())


# ----------------------------------------------------------------- determinism and sharding
def uint8_images(n: int, side: int = 16) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, side, side), generator=torch.Generator().manual_seed(1),
                         dtype=torch.uint8)  # fmt: skip


def test_views_depend_on_seed_epoch_and_index_only() -> None:
    recipe = ViewRecipe((FULL,))
    images, batch_keys = uint8_images(32), keys(32, epoch=3)
    first = DeviceViews(recipe, NORM, seed=7)(images, batch_keys)[0]
    assert torch.equal(first, DeviceViews(recipe, NORM, seed=7)(images, batch_keys)[0])
    perm = torch.randperm(32, generator=torch.Generator().manual_seed(0))
    shuffled = DeviceViews(recipe, NORM, seed=7)(images[perm], batch_keys[perm])[0]
    assert torch.equal(shuffled, first[perm])  # a sample's views do not depend on its batch
    assert not torch.allclose(first, DeviceViews(recipe, NORM, seed=8)(images, batch_keys)[0])
    assert not torch.allclose(first, DeviceViews(recipe, NORM, seed=7)(images, keys(32, 4))[0])


def test_two_ranks_with_half_batches_make_one_processs_views() -> None:
    images = uint8_images(64)
    dino = DINO(IsotropicNet(image_size=16, patch_size=4, width=32, depth=1, num_heads=2))
    views = DeviceViews(dino.view_recipe(16), NORM, seed=5)

    def run(world: int, batch: int) -> list[dict[int, list[torch.Tensor]]]:
        steps: list[dict[int, list[torch.Tensor]]] = [{} for _ in range(64 // (batch * world))]
        for rank in range(world):
            order = list(ResumableSampler(range(64), seed=5, num_replicas=world, rank=rank))
            for step in range(len(steps)):
                chunk = torch.tensor(order[step * batch : (step + 1) * batch])  # [b, 2]
                out = views(images[chunk[:, 1]], chunk)
                for row, index in enumerate(chunk[:, 1].tolist()):
                    steps[step][index] = [view[row] for view in out]
        return steps

    single, sharded = run(world=1, batch=16), run(world=2, batch=8)
    assert [sorted(s) for s in single] == [sorted(s) for s in sharded]  # same images per step
    for one, two in zip(single, sharded):
        for index, views_one in one.items():
            assert all(torch.equal(a, b) for a, b in zip(views_one, two[index]))
    assert [tuple(v.shape) for v in single[0][next(iter(single[0]))]] == [(3, 16, 16)] * 2 + [
        (3, 8, 8)
    ] * 2


# ------------------------------------------------------------------------------ datamodule
def fitted(dm: SSLDataModule, module: object) -> SSLDataModule:
    dm.trainer = SimpleNamespace(lightning_module=module, current_epoch=0)
    dm.setup("fit")
    return dm


def simclr() -> SimCLR:
    return SimCLR(IsotropicNet(image_size=16, patch_size=4, width=32, depth=1, num_heads=2))


def device_batches(dm: SSLDataModule, count: int) -> list[tuple[list[torch.Tensor], torch.Tensor]]:
    loader = iter(dm.train_dataloader())
    return [dm.on_after_batch_transfer(next(loader), 0) for _ in range(count)]


DATA = dict(image_size=16, batch_size=8, num_workers=0, shapes_size=48)


def test_device_cache_serves_the_device_paths_views_and_resumes_exactly() -> None:
    plain_dm = fitted(SSLDataModule(**DATA, augment="device", cache="none"), simclr())
    plain = device_batches(plain_dm, 4)
    assert plain_dm.train_dataloader().num_workers == DATA["num_workers"]
    cached_dm = fitted(SSLDataModule(**DATA, augment="device", cache="device"), simclr())
    cached = device_batches(cached_dm, 4)
    assert len(plain[0][0]) == 2 and plain[0][0][0].shape == (8, 3, 16, 16)
    for (views_a, labels_a), (views_b, labels_b) in zip(plain, cached):
        assert torch.equal(labels_a, labels_b)
        assert all(torch.equal(a, b) for a, b in zip(views_a, views_b))
    resumed = SSLDataModule(**DATA, augment="device", cache="device")
    resumed.load_state_dict({"order_seed": cached_dm.order_seed, "epoch": 0, "batches_done": 2})
    after = device_batches(fitted(resumed, simclr()), 2)
    for (views_a, _), (views_b, _) in zip(cached[2:], after):
        assert all(torch.equal(a, b) for a, b in zip(views_a, views_b))


def test_cache_accepts_the_old_booleans() -> None:
    assert SSLDataModule(cache=True).cache == "memory"
    assert SSLDataModule(cache=False).cache == "none"


def test_a_method_without_a_recipe_names_those_with_one() -> None:
    class NoRecipe(SSLMethod):
        pass

    module = NoRecipe(IsotropicNet(image_size=16, patch_size=4, width=32, depth=1, num_heads=2))
    with pytest.raises(ValueError, match=r"NoRecipe states none.*BYOL.*DINO.*MAE.*SimCLR"):
        fitted(SSLDataModule(**DATA, augment="device"), module)


def test_bad_inputs_are_value_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    views = DeviceViews(ViewRecipe((FULL,)), NORM, seed=0)
    with pytest.raises(ValueError, match="uint8 images"):
        views(torch.rand(4, 3, 16, 16), keys(4))
    with pytest.raises(ValueError, match="keys must be int64"):
        views(uint8_images(4), keys(4).int())
    with pytest.raises(ValueError, match="use --data.augment device or auto"):
        SSLDataModule(cache="device", augment="workers")
    assert SSLDataModule(cache="device").augment == "device"  # auto: where the images wait
    with pytest.raises(ValueError, match="cache must be"):
        SSLDataModule(augment="gpu")  # type: ignore[arg-type]
    monkeypatch.setattr(device_cache, "available_bytes", lambda device: 2**19)
    cache = DeviceCache(ArrayDataset(np.zeros((400, 32, 32, 3), np.uint8), [0] * 400, ["a"]))
    with pytest.raises(ValueError, match=r"needs 1.2 MiB .* cuda:0 has 0.5 MiB free"):
        cache.to(torch.device("cuda", 0))  # checked before anything is moved
    for i, side in enumerate([16, 16, 12, 16]):  # images of two sizes
        (tmp_path / "train" / "a").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (side, side)).save(tmp_path / "train" / "a" / f"{i}.png")
    folder = SSLDataModule(dataset="imagefolder", root=str(tmp_path), image_size=16,
                           batch_size=4, num_workers=0, augment="device")  # fmt: skip
    with pytest.raises(ValueError, match="must have one size"):
        next(iter(fitted(folder, simclr()).train_dataloader()))


def test_raw_batches_carry_uint8_images_and_keys() -> None:
    dm = fitted(SSLDataModule(**DATA, augment="device", cache="none"), simclr())
    batch = next(iter(dm.train_dataloader()))
    assert isinstance(batch, RawBatch) and batch.images.dtype == torch.uint8
    assert batch.images.shape == (8, 3, 16, 16) and batch.keys.shape == (8, 2)
    assert dm.on_after_batch_transfer((torch.zeros(2), torch.zeros(2)), 1)[0].shape == (2,)
    assert math.isclose(batch.keys[:, 0].float().mean().item(), 0.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_views_are_the_cpu_views() -> None:
    dino = DINO(IsotropicNet(image_size=16, patch_size=4, width=32, depth=1, num_heads=2))
    views = DeviceViews(dino.view_recipe(16), NORM, seed=3)
    images, batch_keys = uint8_images(64), keys(64, epoch=2)
    on_cpu = views(images, batch_keys)
    on_gpu = views(images.cuda(), batch_keys.cuda())
    for a, b in zip(on_cpu, on_gpu):
        torch.testing.assert_close(b.cpu(), a, rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    "method_class", [SimCLR, BYOL, DINO, MAE, MaskedModeling, MoCoV3, BarlowTwins, VICReg, IBOT]
)
def test_every_recipe_makes_its_views_on_the_device_path(method_class: type) -> None:
    method = method_class(IsotropicNet(image_size=32, patch_size=4, width=32, depth=1, num_heads=2))
    recipe = method.view_recipe(32)
    views = DeviceViews(recipe, NORM, seed=0)(uint8_images(8, side=40), keys(8))
    assert [tuple(v.shape) for v in views] == [(8, 3, s.size, s.size) for s in recipe.expanded()]
    assert all(torch.isfinite(v).all() for v in views)
    loss, features = method.ssl_step(views)  # the method reads the device views as its own
    assert torch.isfinite(loss) and features.shape == (8, 32)


# ---------------------------------------------- launches and host syncs (issue 28, item 2)
RECIPE_LIMITS = [(SimCLR, 600), (BYOL, 1000), (DINO, 1500)]  # ops at batch 256


@pytest.mark.parametrize(("method_class", "limit"), RECIPE_LIMITS)
def test_device_views_make_no_host_sync_and_few_ops(method_class: type, limit: int) -> None:
    method = method_class(IsotropicNet(image_size=32, patch_size=4, width=32, depth=1, num_heads=2))
    views = DeviceViews(method.view_recipe(32), NORM, seed=0)
    images, batch_keys = uint8_images(256, side=32), keys(256)
    views(images, batch_keys)  # the first call puts the constants on the device
    next_epoch = keys(256, epoch=1)
    with OpCounter() as counter:
        views(images, next_epoch)
    assert counter.syncs == []
    assert counter.ops <= limit, counter.by_name.most_common(10)
    # no host data per call: a literal copied to a GPU waits for every queued kernel
    assert counter.by_name["aten.lift_fresh.default"] == 0


def test_device_cache_gathers_a_batch_without_host_sync() -> None:
    cache = DeviceCache(ArrayDataset(np.zeros((300, 16, 16, 3), np.uint8), [1] * 300, ["a"]))
    cache.to(torch.device("cpu"))
    batch_keys = keys(64, epoch=2, start=100)
    with OpCounter() as counter:
        batch = cache.gather(batch_keys)
    assert counter.syncs == [] and counter.ops == 3  # the index column, images, labels
    assert batch.images.shape == (64, 3, 16, 16) and batch.labels.tolist() == [1] * 64


def test_every_step_drawn_makes_no_host_sync() -> None:
    views = DeviceViews(ViewRecipe((FULL, ViewSpec(16, blur_prob=0.5, count=2))), NORM, seed=0)
    images, batch_keys = uint8_images(64, side=32), keys(64)
    views(images, batch_keys)
    next_epoch = keys(64, epoch=1)
    with OpCounter() as counter:
        out = views(images, next_epoch)
    assert counter.syncs == [] and counter.ops <= 800
    assert [tuple(v.shape) for v in out] == [(64, 3, 32, 32)] + [(64, 3, 16, 16)] * 2


# ------------------------------- vectorised steps against the per-sample form they replaced
MASK32 = 0xFFFFFFFF


def reference_hash(seed: int, batch_keys: torch.Tensor, view: int, count: int) -> torch.Tensor:
    """The per-view hash as it was before issue 28 (one pass per view)."""

    def mul32(x: torch.Tensor, m: int) -> torch.Tensor:
        low, high = x & 0xFFFF, x >> 16
        return (low * m + (((high * m) & 0xFFFF) << 16)) & MASK32

    def mix32(x: torch.Tensor) -> torch.Tensor:
        x = x ^ (x >> 16)
        x = mul32(x, 0x7FEB352D)
        x = x ^ (x >> 15)
        x = mul32(x, 0x846CA68B)
        return x ^ (x >> 16)

    epoch, index = batch_keys[:, 0:1], batch_keys[:, 1:2]
    h = mix32(torch.full_like(epoch, seed & MASK32))
    h = mix32(h ^ ((seed >> 32) & MASK32))
    h = mix32(h ^ (epoch & MASK32))
    h = mix32(h ^ (index & MASK32))
    h = mix32(h ^ ((index >> 32) & MASK32) ^ mix32(torch.full_like(epoch, view + 1)))
    bits = mix32(h ^ mix32(torch.arange(count)[None] + 0x9E3779B9))
    return (bits >> 8).to(torch.float32) * (1.0 / (1 << 24))


def reference_params(spec: ViewSpec, u: torch.Tensor, height: int, width: int) -> ViewParams:
    """One view's parameters as drawn before issue 28 (Python floats, one spec at a time)."""
    d = u.double()
    area = height * width
    target = area * (spec.scale[0] + (spec.scale[1] - spec.scale[0]) * d[:, 0:10])
    log_low, log_high = math.log(spec.ratio[0]), math.log(spec.ratio[1])
    aspect = torch.exp(log_low + (log_high - log_low) * d[:, 10:20])
    w, h = torch.round(torch.sqrt(target * aspect)), torch.round(torch.sqrt(target / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.float().argmax(dim=1, keepdim=True)
    w, h = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0]
    ratio = width / height
    fw, fh = width, height
    if ratio < spec.ratio[0]:
        fh = int(round(width / spec.ratio[0]))
    elif ratio > spec.ratio[1]:
        fw = int(round(height * spec.ratio[1]))
    found = fits.any(dim=1)
    w, h = torch.where(found, w, fw), torch.where(found, h, fh)
    top = torch.where(found, torch.floor(d[:, 20] * (height - h + 1)), (height - h) // 2)
    left = torch.where(found, torch.floor(d[:, 21] * (width - w + 1)), (width - w) // 2)
    low = torch.tensor([max(0.0, 1.0 - m) for m in spec.jitter[:3]] + [-spec.hue])
    high = torch.tensor([1.0 + m for m in spec.jitter[:3]] + [spec.hue])
    sigma_low, sigma_high = spec.blur_sigma
    return ViewParams(
        box=torch.stack([top, left, h, w], dim=1).long(),
        flip=u[:, 22] < spec.hflip_prob,
        jitter=u[:, 23] < spec.jitter_prob,
        factors=low + (high - low) * u[:, 24:28],
        order=u[:, 28:32].argsort(dim=1),
        grey=u[:, 32] < spec.grey_prob,
        blur=u[:, 33] < spec.blur_prob,
        sigma=sigma_low + (sigma_high - sigma_low) * u[:, 34],
        solarize=u[:, 35] < spec.solarize_prob,
    )


def reference_view(images: torch.Tensor, params: ViewParams, spec: ViewSpec) -> torch.Tensor:
    """A view made sample by sample with kornia's steps, as before issue 28."""
    from kornia.color import rgb_to_grayscale
    from kornia.enhance import (
        adjust_brightness_accumulative,
        adjust_contrast_with_mean_subtraction,
        adjust_hue,
        adjust_saturation_with_gray_subtraction,
    )
    from kornia.filters import gaussian_blur2d

    steps = (
        adjust_brightness_accumulative,
        adjust_contrast_with_mean_subtraction,
        adjust_saturation_with_gray_subtraction,
        lambda image, factor: adjust_hue(image, factor * 2 * math.pi),
    )
    crops = make_view(images, torch.arange(len(images)), params._replace(
        jitter=torch.zeros_like(params.jitter), grey=torch.zeros_like(params.grey),
        blur=torch.zeros_like(params.blur), solarize=torch.zeros_like(params.solarize)),
        spec)  # fmt: skip
    out = []
    for i, x in enumerate(crops.split(1)):  # [1, 3, s, s]
        if params.jitter[i]:
            for step in params.order[i].tolist():
                x = steps[step](x, params.factors[i, step : step + 1])
        if params.grey[i]:
            x = rgb_to_grayscale(x).expand_as(x)
        if params.blur[i]:
            side = spec.blur_kernel_size()
            sigma = params.sigma[i].view(1, 1).expand(1, 2)
            x = gaussian_blur2d(x, (side, side), sigma, border_type="replicate")
        if params.solarize[i]:
            x = torch.where(x >= 0.5, 1.0 - x, x)
        out.append(x)
    return torch.cat(out)


def test_hash_of_all_views_in_one_pass_is_the_per_view_hash() -> None:
    batch_keys = torch.cat([keys(64, epoch=3), torch.tensor([[2**33 + 5, 2**40 + 7]])])
    seed = 2**40 + 12345
    views, counters = draw_salts(range(5), 36)
    u = hashed_draws(seed, batch_keys, torch.tensor(views), torch.tensor(counters))  # [B, 5, 36]
    for view in range(5):
        assert torch.equal(u[:, view], reference_hash(seed, batch_keys, view, 36))
    assert torch.equal(hashed_uniform(seed, batch_keys, 3, 36), u[:, 3])


def test_all_views_parameters_are_the_per_spec_parameters() -> None:
    local = ViewSpec(16, scale=(0.05, 0.4), ratio=(0.5, 3.0), interpolation="bicubic",
                     jitter_prob=0.5, hue=0.3, blur_prob=1.0, blur_sigma=(0.5, 1.5))  # fmt: skip
    specs = [FULL, local]
    views = DeviceViews(ViewRecipe(tuple(specs)), NORM, seed=9)
    batch_keys = keys(2000)
    for height, width in [(32, 32), (8, 64), (64, 8)]:  # fallback crops of both orientations
        for view, spec in enumerate(specs):
            ours = views.params(batch_keys, view, height, width)
            theirs = reference_params(spec, hashed_uniform(9, batch_keys, view, 36), height, width)
            for name, a, b in zip(ViewParams._fields, ours, theirs):
                if a.dtype.is_floating_point:
                    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6, msg=name)
                else:
                    assert torch.equal(a, b), name


@pytest.mark.parametrize("spec", [FULL, ViewSpec(24, interpolation="bicubic", jitter_prob=0.9,
                                                 brightness=0.8, contrast=0.8, saturation=0.8,
                                                 hue=0.5, blur_prob=0.7)])  # fmt: skip
def test_views_in_one_pass_are_the_per_sample_views(spec: ViewSpec) -> None:
    images = uint8_images(96, side=32).float() / 255  # [96, 3, 32, 32]
    params = DeviceViews(ViewRecipe((spec,)), NORM, seed=4).params(keys(96), 0, 32, 32)
    assert params.jitter.any() and (~params.jitter).any()
    assert len({tuple(o) for o in params.order[params.jitter].tolist()}) > 12  # many orders
    ours = make_view(images, torch.arange(96), params, spec)
    torch.testing.assert_close(ours, reference_view(images, params, spec), rtol=0, atol=2e-5)


def test_hue_shift_is_kornias_on_edge_cases() -> None:
    from kornia.enhance import adjust_hue

    levels = torch.tensor([0.0, 0.25, 0.5, 0.5, 1.0])  # ties, grey pixels, black and white
    grid = torch.cartesian_prod(levels, levels, levels).T.reshape(1, 3, 5, 25)
    images = torch.cat([grid.expand(6, -1, -1, -1), torch.rand(6, 3, 5, 25)])  # [12, 3, 5, 25]
    turns = torch.tensor([-0.5, -0.25, -1e-7, 0.0, 0.2, 0.5] * 2)
    ours = hue_shift(images, turns, Constants.on(images.device))
    theirs = adjust_hue(images, turns * 2 * math.pi)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=2e-6)


def test_blur_matrices_are_kornias_gaussian_blur() -> None:
    from kornia.filters import gaussian_blur2d

    images, sigma = torch.rand(5, 3, 12, 12), torch.tensor([0.1, 0.5, 1.0, 2.0, 4.0])
    for side in (3, 9, 23):  # 23 > size: the border repeats as kornia's replicate padding
        blur = blur_matrices(sigma, side, 12)[:, None]  # [5, 1, 12, 12]
        theirs = gaussian_blur2d(images, (side, side), sigma[:, None].expand(-1, 2), "replicate")
        torch.testing.assert_close(blur @ images @ blur.transpose(-1, -2), theirs, atol=2e-6,
                                   rtol=0)  # fmt: skip


@pytest.mark.slow
def test_compiled_views_are_the_eager_views() -> None:
    """Captured whole (``fullgraph``: no graph break, no data-dependent op). The ``eager``
    backend keeps this a few seconds; inductor on CPU gives the same views within 5e-6 but
    compiles for minutes on 2 cores (docs/performance.md)."""
    recipe = ViewRecipe((FULL, ViewSpec(8, blur_prob=0.5, solarize_prob=0.5, count=2)))
    images = uint8_images(16)
    eager = DeviceViews(recipe, NORM, seed=2)
    compiled = DeviceViews(recipe, NORM, seed=2, compile=True, backend="eager")
    for epoch in (0, 1):  # the second batch replays the captured graph
        ours, theirs = compiled(images, keys(16, epoch)), eager(images, keys(16, epoch))
        assert [v.shape for v in ours] == [v.shape for v in theirs]
        assert all(torch.equal(a, b) for a, b in zip(ours, theirs))


def test_compile_views_reaches_the_device_views() -> None:
    for flag in (False, True):
        dm = fitted(SSLDataModule(**DATA, augment="device", compile_views=flag), simclr())
        assert dm.device_views is not None and dm.device_views.compile is flag
        assert dm.hparams["compile_views"] is flag


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_graph_views_are_the_eager_views() -> None:
    dino = DINO(IsotropicNet(image_size=16, patch_size=4, width=32, depth=1, num_heads=2))
    images, batch_keys = uint8_images(64).cuda(), keys(64, epoch=2).cuda()
    eager = DeviceViews(dino.view_recipe(16), NORM, seed=3)(images, batch_keys)
    compiled = DeviceViews(dino.view_recipe(16), NORM, seed=3, compile=True)
    for _ in range(3):  # compile, record the graph, replay it
        out = [v.clone() for v in compiled(images, batch_keys)]
    for a, b in zip(out, eager):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-4)
