"""Views made on the training device: batched per-sample transforms of uint8 images.

:class:`DeviceViews` turns a batch ``uint8 [B, 3, H, W]`` into a method's views from its
:class:`~ssl_biases.data.views.ViewRecipe`, on whatever device the batch is on. Every random
parameter of a sample's view is a counter-based hash of ``(seed, epoch, dataset index, view,
draw)`` (:func:`hashed_uniform`), not a draw from a stateful generator: a sample gets the same
views whichever rank, batch or step it lands in, so a resumed run is bit-exact and two ranks
with ``B/2`` each make the same views as one process with ``B``.

Semantics follow torchvision / lightly (the per-image path of ``ssl_biases.data.views``):
the crop box is torchvision's ``RandomResizedCrop.get_params`` algorithm (10 tries, then a
centre crop), resampled with the weights of PIL's bilinear or bicubic resize (anti-aliased
when shrinking) as per-sample matrices applied with batched matrix products; the
colour-jitter steps are torchvision's formulas as kornia implements them
(``kornia.enhance.adjust_*``, as in ``kornia.augmentation.ColorJitter``) but with a random
order *per sample* as torchvision draws it (kornia's modules draw one order per batch); blur
is ``kornia.filters.gaussian_blur2d`` with a per-sample sigma; solarisation inverts values
``>= 0.5`` (PIL's 128 of 255).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from kornia.color import rgb_to_grayscale
from kornia.enhance import (
    adjust_brightness_accumulative,
    adjust_contrast_with_mean_subtraction,
    adjust_hue,
    adjust_saturation_with_gray_subtraction,
)
from kornia.filters import gaussian_blur2d
from torch import Tensor

from ssl_biases.data.transforms import Normalization
from ssl_biases.data.views import ViewRecipe, ViewSpec

MASK32 = 0xFFFFFFFF
CROP_TRIES = 10  # torchvision's RandomResizedCrop.get_params
# columns of a view's block of uniform draws
AREA, RATIO = 0, CROP_TRIES
TOP, LEFT, FLIP, JITTER, FACTORS, ORDER = 20, 21, 22, 23, 24, 28
GREY, BLUR, SIGMA, SOLARIZE = 32, 33, 34, 35
DRAWS = 36


# ------------------------------------------------------------------------ counter-based draws
def _mul32(x: Tensor, m: int) -> Tensor:
    """``x * m mod 2**32`` for int64 ``x`` in ``[0, 2**32)`` without int64 overflow."""
    low, high = x & 0xFFFF, x >> 16
    return (low * m + (((high * m) & 0xFFFF) << 16)) & MASK32


def _mix32(x: Tensor) -> Tensor:
    """A 32-bit integer hash (Wellons' "lowbias32"), element-wise on int64 tensors."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def hashed_uniform(seed: int, keys: Tensor, view: int, draws: int) -> Tensor:
    """Uniform ``[0, 1)`` numbers ``[B, draws]`` (24 bits) from ``(seed, epoch, index, view)``.

    Args:
        seed: The run's seed (any Python int; its low 64 bits are used).
        keys: ``[B, 2]`` int64 ``(epoch, dataset index)`` of each sample.
        view: Index of the view in the recipe's expanded list.
        draws: Numbers per sample.
    """
    epoch, index = keys[:, 0:1], keys[:, 1:2]  # [B, 1]
    h = _mix32(torch.full_like(epoch, seed & MASK32))
    h = _mix32(h ^ ((seed >> 32) & MASK32))
    h = _mix32(h ^ (epoch & MASK32))
    h = _mix32(h ^ (index & MASK32))
    h = _mix32(h ^ ((index >> 32) & MASK32) ^ _mix32(torch.full_like(epoch, view + 1)))
    counter = torch.arange(draws, device=keys.device, dtype=torch.int64)[None]  # [1, draws]
    bits = _mix32(h ^ _mix32(counter + 0x9E3779B9))  # [B, draws]
    return (bits >> 8).to(torch.float32) * (1.0 / (1 << 24))


# ------------------------------------------------------------------------------ parameters
class ViewParams(NamedTuple):
    """Per-sample parameters of one view ``[N]`` (``factors`` ``[N, 4]``, ``order`` ``[N, 4]``).

    ``box`` is ``[N, 4]`` ``(top, left, height, width)`` in pixels of the source image;
    ``factors`` are (brightness, contrast, saturation, hue) and ``order`` the order in which
    the four steps run (indices into ``factors``).
    """

    box: Tensor
    flip: Tensor
    jitter: Tensor
    factors: Tensor
    order: Tensor
    grey: Tensor
    blur: Tensor
    sigma: Tensor
    solarize: Tensor


def crop_boxes(u: Tensor, spec: ViewSpec, height: int, width: int) -> Tensor:
    """torchvision's ``RandomResizedCrop.get_params``, vectorised: ``[N, 4]`` (top, left, h, w).

    ``u`` holds the view's uniform draws; tries ``AREA``/``RATIO`` columns in order and keeps
    the first that fits, else falls back to torchvision's centre crop.
    """
    dtype = torch.float32 if u.device.type == "mps" else torch.float64
    u = u.to(dtype)
    area = height * width
    target = area * (spec.scale[0] + (spec.scale[1] - spec.scale[0]) * u[:, AREA:RATIO])
    log_low, log_high = math.log(spec.ratio[0]), math.log(spec.ratio[1])
    aspect = torch.exp(log_low + (log_high - log_low) * u[:, RATIO:TOP])  # [N, tries]
    w = torch.round(torch.sqrt(target * aspect))  # round half to even, as Python's round
    h = torch.round(torch.sqrt(target / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)  # [N, tries]
    first = fits.to(torch.float32).argmax(dim=1, keepdim=True)  # [N, 1], first try that fits
    w, h = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0]  # [N]
    # fallback (no try fits): the largest centre crop within the ratio range
    in_ratio = width / height
    if in_ratio < spec.ratio[0]:
        fw, fh = width, int(round(width / spec.ratio[0]))
    elif in_ratio > spec.ratio[1]:
        fw, fh = int(round(height * spec.ratio[1])), height
    else:
        fw, fh = width, height
    found = fits.any(dim=1)
    w, h = torch.where(found, w, fw), torch.where(found, h, fh)
    top = torch.floor(u[:, TOP] * (height - h + 1))  # torch.randint(0, height - h + 1)
    left = torch.floor(u[:, LEFT] * (width - w + 1))
    top = torch.where(found, top, torch.div(height - h, 2, rounding_mode="floor"))
    left = torch.where(found, left, torch.div(width - w, 2, rounding_mode="floor"))
    return torch.stack([top, left, h, w], dim=1).to(torch.int64)  # [N, 4]


def sample_params(spec: ViewSpec, u: Tensor, height: int, width: int) -> ViewParams:
    """The parameters of ``spec`` for each row of uniform draws ``u`` ``[N, DRAWS]``."""
    low = torch.tensor([max(0.0, 1.0 - m) for m in spec.jitter[:3]] + [-spec.hue], device=u.device)
    high = torch.tensor([1.0 + m for m in spec.jitter[:3]] + [spec.hue], device=u.device)
    sigma_low, sigma_high = spec.blur_sigma
    return ViewParams(
        box=crop_boxes(u, spec, height, width),
        flip=u[:, FLIP] < spec.hflip_prob,
        jitter=u[:, JITTER] < spec.jitter_prob,
        factors=low + (high - low) * u[:, FACTORS:ORDER],  # [N, 4], uniform in each range
        order=u[:, ORDER:GREY].argsort(dim=1),  # [N, 4], a uniformly random permutation
        grey=u[:, GREY] < spec.grey_prob,
        blur=u[:, BLUR] < spec.blur_prob,
        sigma=sigma_low + (sigma_high - sigma_low) * u[:, SIGMA],
        solarize=u[:, SOLARIZE] < spec.solarize_prob,
    )


# ------------------------------------------------------------------------------ operations
def _pil_filter(t: Tensor, interpolation: str) -> Tensor:
    """PIL's resampling filters: triangle (bilinear) or Keys cubic with a = -0.5 (bicubic)."""
    t = t.abs()
    if interpolation == "bilinear":
        return (1.0 - t).clamp_min(0.0)
    a = -0.5
    near = ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0
    far = ((a * t - 5.0 * a) * t + 8.0 * a) * t - 4.0 * a
    return torch.where(t < 1.0, near, torch.where(t < 2.0, far, torch.zeros_like(t)))


def resample_weights(
    start: Tensor, length: Tensor, in_size: int, out_size: int, interpolation: str
) -> Tensor:
    """Per-sample weights ``[N, out_size, in_size]`` of PIL's resize of a crop along one axis.

    PIL's ``precompute_coeffs`` for ``crop(...).resize(...)``: output pixel ``o`` is centred
    at ``(o + 0.5) * scale`` in the crop (``scale = length / out_size``); the filter is
    widened by ``max(scale, 1)`` (anti-aliasing when shrinking), sees only the crop's pixels
    and its weights are normalised to sum to 1.
    """
    dtype = torch.float32
    scale = length.to(dtype) / out_size  # [N]
    widen = scale.clamp_min(1.0)[:, None, None]  # [N, 1, 1]
    centre = (torch.arange(out_size, device=start.device, dtype=dtype) + 0.5) * scale[:, None]
    offset = torch.arange(in_size, device=start.device)[None, None] - start[:, None, None]
    inside = (offset >= 0) & (offset < length[:, None, None])  # [N, 1, in], the crop's pixels
    t = (offset.to(dtype) + 0.5 - centre[:, :, None]) / widen  # [N, out, in]
    weights = _pil_filter(t, interpolation) * inside
    return weights / weights.sum(dim=-1, keepdim=True)  # [N, out, in]


def resized_crops(images: Tensor, source: Tensor, params: ViewParams, spec: ViewSpec) -> Tensor:
    """Crops ``params.box`` of ``images[source]`` resized to ``spec.size``, flipped if drawn.

    torchvision's ``resized_crop`` of a PIL image (crop, then PIL's resize, horizontal pass
    first), as two batched matrix products with per-sample weights; a flip reverses the
    rows of the horizontal weights.

    Args:
        images: ``[B, 3, H, W]`` float images in [0, 1].
        source: ``[N]`` index into ``images`` of each output view.
    """
    top, left, h, w = params.box.unbind(1)  # [N] each
    height, width = images.shape[-2:]
    rows = resample_weights(top, h, height, spec.size, spec.interpolation)  # [N, s, H]
    cols = resample_weights(left, w, width, spec.size, spec.interpolation)  # [N, s, W]
    cols = torch.where(params.flip[:, None, None], cols.flip(1), cols)
    x = images[source]  # [N, 3, H, W]
    x = (x @ cols.transpose(1, 2)[:, None]).clamp(0.0, 1.0)  # [N, 3, H, s]
    return (rows[:, None] @ x).clamp(0.0, 1.0)  # [N, 3, s, s]


def apply_to(
    x: Tensor, chosen: Tensor, step: Callable[[Tensor, Tensor], Tensor], arg: Tensor
) -> Tensor:
    """``step(x[i], arg[i])`` for the samples ``i`` where ``chosen`` is true, others as they are.

    Runs ``step`` on the chosen rows only (a host sync for their count, far cheaper than
    running a blur or a hue shift on every sample and discarding most of it).
    """
    index = chosen.nonzero()[:, 0]  # [n]
    if index.numel() == 0:
        return x
    return x.index_copy(0, index, step(x[index], arg[index]))


def colour_jitter(x: Tensor, params: ViewParams) -> Tensor:
    """torchvision's ``ColorJitter`` per sample: four steps in each sample's drawn order."""
    steps = (
        adjust_brightness_accumulative,
        adjust_contrast_with_mean_subtraction,
        adjust_saturation_with_gray_subtraction,
        lambda image, factor: adjust_hue(image, factor * 2 * math.pi),  # turns -> radians
    )
    factors = params.factors.to(x.dtype)  # [N, 4]
    for position in range(4):
        for index, step in enumerate(steps):
            chosen = params.jitter & (params.order[:, position] == index)  # [N]
            x = apply_to(x, chosen, step, factors[:, index])
    return x


def make_view(images: Tensor, source: Tensor, params: ViewParams, spec: ViewSpec) -> Tensor:
    """One view ``[N, 3, s, s]`` in [0, 1]: crop, flip, jitter, grey, blur, solarise."""
    x = resized_crops(images, source, params, spec)  # [N, 3, s, s]
    if spec.jitter_prob > 0:
        x = colour_jitter(x, params)
    if spec.grey_prob > 0:
        grey = rgb_to_grayscale(x).expand_as(x)  # [N, 3, s, s]
        x = torch.where(params.grey[:, None, None, None], grey, x)
    if spec.blur_prob > 0:
        side = spec.blur_kernel_size()
        sigma = params.sigma.to(x.dtype)[:, None].expand(-1, 2)  # [N, 2]

        def blur(image: Tensor, sigmas: Tensor) -> Tensor:
            return gaussian_blur2d(image, (side, side), sigmas, border_type="replicate")

        x = apply_to(x, params.blur, blur, sigma)
    if spec.solarize_prob > 0:
        invert = params.solarize[:, None, None, None] & (x >= 0.5)
        x = torch.where(invert, 1.0 - x, x)
    return x


class DeviceViews:
    """A recipe's views of a uint8 batch, made with batched tensor ops on the batch's device.

    Args:
        recipe: The method's views.
        norm: Normalisation applied to every view.
        seed: Seed of the augmentations (with each sample's epoch and index).
    """

    def __init__(self, recipe: ViewRecipe, norm: Normalization, seed: int) -> None:
        self.recipe = recipe
        self.norm = norm
        self.seed = seed

    def params(self, keys: Tensor, view: int, height: int, width: int) -> ViewParams:
        """Parameters of expanded view ``view`` for samples ``keys`` ``[B, 2]``."""
        spec = self.recipe.expanded()[view]
        return sample_params(spec, hashed_uniform(self.seed, keys, view, DRAWS), height, width)

    def __call__(self, images: Tensor, keys: Tensor) -> list[Tensor]:
        """Views of ``images`` ``uint8 [B, 3, H, W]`` keyed by ``keys`` ``int64 [B, 2]``.

        Returns:
            One ``[B, 3, size, size]`` float tensor per view, normalised, in recipe order.
            Views of one spec are made in one batched pass.
        """
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                "device views take uint8 images [B, 3, H, W], got "
                f"{images.dtype} {tuple(images.shape)}"
            )
        if keys.shape != (images.shape[0], 2) or keys.dtype != torch.int64:
            raise ValueError(
                f"keys must be int64 [B, 2] (epoch, index) for B={images.shape[0]}, got "
                f"{keys.dtype} {tuple(keys.shape)}"
            )
        batch, height, width = images.shape[0], images.shape[2], images.shape[3]
        x = images.float() / 255.0  # [B, 3, H, W]
        mean = torch.tensor(self.norm.mean, device=x.device)[:, None, None]  # [3, 1, 1]
        std = torch.tensor(self.norm.std, device=x.device)[:, None, None]
        source = torch.arange(batch, device=x.device)
        views: list[Tensor] = []
        first = 0
        for spec in self.recipe.views:
            params = [self.params(keys, v, height, width) for v in range(first, first + spec.count)]
            stacked = ViewParams(*(torch.cat(p) for p in zip(*params)))  # count * B rows
            out = make_view(x, source.repeat(spec.count), stacked, spec)  # [count*B, 3, s, s]
            views.extend(((out - mean) / std).split(batch))
            first += spec.count
        return views
