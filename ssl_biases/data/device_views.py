"""Views made on the training device: batched per-sample transforms of uint8 images.

:class:`DeviceViews` turns a batch ``uint8 [B, 3, H, W]`` into a method's views from its
:class:`~ssl_biases.data.views.ViewRecipe`, on whatever device the batch is on. Every random
parameter of a sample's view is a counter-based hash of ``(seed, epoch, dataset index, view,
draw)`` (:func:`hashed_draws`), not a draw from a stateful generator: a sample gets the same
views whichever rank, batch or step it lands in, so a resumed run is bit-exact and two ranks
with ``B/2`` each make the same views as one process with ``B``.

Semantics follow torchvision / lightly (the per-image path of ``ssl_biases.data.views``):
the crop box is torchvision's ``RandomResizedCrop.get_params`` algorithm (10 tries, then a
centre crop), resampled with the weights of PIL's bilinear or bicubic resize (anti-aliased
when shrinking) as per-sample matrices applied with batched matrix products; the
colour-jitter steps are torchvision's formulas as kornia implements them
(``kornia.enhance.adjust_*``, as in ``kornia.augmentation.ColorJitter``) but with a random
order *per sample* as torchvision draws it (kornia's modules draw one order per batch); blur
is kornia's ``gaussian_blur2d`` (replicate border) with a per-sample sigma; solarisation
inverts values ``>= 0.5`` (PIL's 128 of 255).

No host sync, few launches: every step runs on every sample and a per-sample flag or factor
selects its effect (an identity factor, ``torch.where``, or an identity matrix), so no op has
a data-dependent size and nothing is read back; the draws of all views are hashed in one
pass, their parameters drawn in one pass, and views of one size are made in one batched pass
(SimCLR's two views, BYOL's two, DINO's two global and its local crops). Constants live on
the device once (a host literal on a GPU is a copy that waits for queued work). The whole
call can therefore be compiled (``compile=True``; CUDA graphs on a GPU), see
docs/performance.md, "Device views: launches and host syncs".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
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
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, torchvision's and kornia's grayscale weights
EPS = 1e-8  # kornia's rgb_to_hsv


# ------------------------------------------------------------------------ counter-based draws
def _mix32_int(x: int) -> int:
    """:func:`_mix32` on a Python int (for constants, computed on the host once)."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & MASK32
    x ^= x >> 15
    x = (x * 0x846CA68B) & MASK32
    return x ^ (x >> 16)


def _mul32(x: Tensor, m: int) -> Tensor:
    """``x * m mod 2**32`` for int64 ``x`` in ``[0, 2**32)`` without int64 overflow."""
    low, high = m & 0xFFFF, m >> 16  # x * high < 2**48
    return (x * low + (((x * high) & 0xFFFF) << 16)) & MASK32


def _mix32(x: Tensor) -> Tensor:
    """A 32-bit integer hash (Wellons' "lowbias32"), element-wise on int64 tensors."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def draw_salts(views: Sequence[int], draws: int) -> tuple[list[int], list[int]]:
    """The hashed constants of each view (``mix(view + 1)``) and each draw's counter."""
    return [_mix32_int(v + 1) for v in views], [_mix32_int(d + 0x9E3779B9) for d in range(draws)]


def hashed_draws(seed: int, keys: Tensor, view_salt: Tensor, draw_salt: Tensor) -> Tensor:
    """Uniform ``[0, 1)`` numbers ``[B, V, D]`` (24 bits) of all views, in one pass.

    Number ``d`` of view ``v`` of a sample is ``mix(h_v ^ mix(d + golden))`` with
    ``h_v = mix(mix(mix(mix(mix(seed_lo) ^ seed_hi) ^ epoch) ^ index_lo) ^ index_hi ^
    mix(v + 1))``: the seed's part is hashed on the host, the rest element-wise.

    Args:
        seed: The run's seed (any Python int; its low 64 bits are used).
        keys: ``[B, 2]`` int64 ``(epoch, dataset index)`` of each sample.
        view_salt: ``[V]`` int64 from :func:`draw_salts` (on the keys' device).
        draw_salt: ``[D]`` int64 from :func:`draw_salts`.
    """
    seeded = _mix32_int(_mix32_int(seed & MASK32) ^ ((seed >> 32) & MASK32))
    epoch, index = keys[:, 0:1], keys[:, 1:2]  # [B, 1]
    h = _mix32((epoch & MASK32) ^ seeded)
    h = _mix32(h ^ (index & MASK32))
    h = _mix32(h ^ ((index >> 32) & MASK32) ^ view_salt)  # [B, V]
    bits = _mix32(h[:, :, None] ^ draw_salt)  # [B, V, D]
    return (bits >> 8).to(torch.float32) * (1.0 / (1 << 24))


def hashed_uniform(seed: int, keys: Tensor, view: int, draws: int) -> Tensor:
    """The ``[B, draws]`` numbers of one view (:func:`hashed_draws` for ``views=[view]``)."""
    views, counters = draw_salts([view], draws)
    salts = (torch.tensor(s, device=keys.device, dtype=torch.int64) for s in (views, counters))
    return hashed_draws(seed, keys, *salts)[:, 0]


# ------------------------------------------------------------------------------ parameters
class ViewParams(NamedTuple):
    """Per-sample parameters of views ``[N]`` (``factors`` ``[N, 4]``, ``order`` ``[N, 4]``).

    ``box`` is ``[N, 4]`` ``(top, left, height, width)`` in pixels of the source image;
    ``factors`` are (brightness, contrast, saturation, hue) and ``order`` the order in which
    the four steps run (indices into ``factors``). Fields may carry a leading view axis
    (``[V, B, ...]``) while all views are drawn together.
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


class SpecTable(NamedTuple):
    """Each view's constants as ``[V, 1]`` columns (``[V, 1, k]`` for vectors), on one device.

    Built once per device and image size by :meth:`build`; crop columns are float64 (float32
    on MPS) and in the same arithmetic as torchvision's Python floats.
    """

    scale_low: Tensor
    scale_span: Tensor
    log_ratio_low: Tensor
    log_ratio_span: Tensor
    fallback_h: Tensor
    fallback_w: Tensor
    hflip_prob: Tensor
    jitter_prob: Tensor
    grey_prob: Tensor
    blur_prob: Tensor
    solarize_prob: Tensor
    jitter_low: Tensor  # [V, 1, 4]
    jitter_span: Tensor  # [V, 1, 4]
    sigma_low: Tensor
    sigma_span: Tensor

    @classmethod
    def build(
        cls, specs: Sequence[ViewSpec], height: int, width: int, device: torch.device
    ) -> SpecTable:
        """The table of ``specs`` for ``height x width`` images on ``device``."""
        crop_dtype = torch.float32 if device.type == "mps" else torch.float64

        def column(values: list[float], dtype: torch.dtype = crop_dtype) -> Tensor:
            return torch.tensor(values, dtype=dtype, device=device)[:, None]  # [V, 1]

        fallback = [_centre_crop(spec, height, width) for spec in specs]
        low = torch.tensor([[max(0.0, 1.0 - m) for m in s.jitter[:3]] + [-s.hue] for s in specs])
        high = torch.tensor([[1.0 + m for m in s.jitter[:3]] + [s.hue] for s in specs])
        return cls(
            scale_low=column([s.scale[0] for s in specs]),
            scale_span=column([s.scale[1] - s.scale[0] for s in specs]),
            log_ratio_low=column([math.log(s.ratio[0]) for s in specs]),
            log_ratio_span=column([math.log(s.ratio[1]) - math.log(s.ratio[0]) for s in specs]),
            fallback_h=column([float(h) for h, _ in fallback]),
            fallback_w=column([float(w) for _, w in fallback]),
            hflip_prob=column([s.hflip_prob for s in specs], torch.float32),
            jitter_prob=column([s.jitter_prob for s in specs], torch.float32),
            grey_prob=column([s.grey_prob for s in specs], torch.float32),
            blur_prob=column([s.blur_prob for s in specs], torch.float32),
            solarize_prob=column([s.solarize_prob for s in specs], torch.float32),
            jitter_low=low.to(device)[:, None],
            jitter_span=(high - low).to(device)[:, None],  # float32, as the reference
            sigma_low=column([s.blur_sigma[0] for s in specs], torch.float32),
            sigma_span=column([s.blur_sigma[1] - s.blur_sigma[0] for s in specs], torch.float32),
        )


def _centre_crop(spec: ViewSpec, height: int, width: int) -> tuple[int, int]:
    """torchvision's fallback box size: the largest centre crop within the ratio range."""
    in_ratio = width / height
    if in_ratio < spec.ratio[0]:
        return int(round(width / spec.ratio[0])), width
    if in_ratio > spec.ratio[1]:
        return height, int(round(height * spec.ratio[1]))
    return height, width


def crop_boxes(u: Tensor, table: SpecTable, height: int, width: int) -> Tensor:
    """torchvision's ``RandomResizedCrop.get_params``, vectorised: ``[V, B, 4]`` (top, left, h, w).

    ``u`` ``[V, B, DRAWS]`` holds the views' uniform draws; tries the ``AREA``/``RATIO``
    columns in order and keeps the first that fits, else torchvision's centre crop.
    """
    u = u.to(table.scale_low.dtype)
    low, span = table.scale_low[..., None], table.scale_span[..., None]  # [V, 1, 1]
    target = height * width * (low + span * u[..., AREA:RATIO])  # [V, B, tries]
    r_low, r_span = table.log_ratio_low[..., None], table.log_ratio_span[..., None]
    aspect = torch.exp(r_low + r_span * u[..., RATIO:TOP])  # [V, B, tries]
    w = torch.round(torch.sqrt(target * aspect))  # round half to even, as Python's round
    h = torch.round(torch.sqrt(target / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)  # [V, B, tries]
    first = fits.to(torch.float32).argmax(dim=-1, keepdim=True)  # [V, B, 1], first fit
    w, h = w.gather(-1, first)[..., 0], h.gather(-1, first)[..., 0]  # [V, B]
    found = fits.any(dim=-1)  # [V, B]; else the centre crop
    w, h = torch.where(found, w, table.fallback_w), torch.where(found, h, table.fallback_h)
    top = torch.where(
        found,
        torch.floor(u[..., TOP] * (height - h + 1)),  # torch.randint(0, height - h + 1)
        torch.div(height - h, 2, rounding_mode="floor"),
    )
    left = torch.where(
        found,
        torch.floor(u[..., LEFT] * (width - w + 1)),
        torch.div(width - w, 2, rounding_mode="floor"),
    )
    return torch.stack([top, left, h, w], dim=-1).to(torch.int64)  # [V, B, 4]


def sample_params(table: SpecTable, u: Tensor, height: int, width: int) -> ViewParams:
    """The parameters ``[V, B, ...]`` of every view for draws ``u`` ``[V, B, DRAWS]``."""
    return ViewParams(
        box=crop_boxes(u, table, height, width),
        flip=u[..., FLIP] < table.hflip_prob,  # [V, B]
        jitter=u[..., JITTER] < table.jitter_prob,
        factors=table.jitter_low + table.jitter_span * u[..., FACTORS:ORDER],  # [V, B, 4]
        order=u[..., ORDER:GREY].argsort(dim=-1),  # [V, B, 4], a uniformly random permutation
        grey=u[..., GREY] < table.grey_prob,
        blur=u[..., BLUR] < table.blur_prob,
        sigma=table.sigma_low + table.sigma_span * u[..., SIGMA],  # [V, B]
        solarize=u[..., SOLARIZE] < table.solarize_prob,
    )


# ------------------------------------------------------------------------------ operations
class Constants(NamedTuple):
    """Small constant tensors the image steps need, made once per device (``[1, 3, 1, 1]``)."""

    luma: Tensor
    hue_sector: Tensor  # 5, 3, 1: HSV -> RGB's ``n`` per channel

    @classmethod
    def on(cls, device: torch.device) -> Constants:
        """The constants on ``device``."""

        def channels(values: tuple[float, float, float]) -> Tensor:
            return torch.tensor(values, device=device).view(1, 3, 1, 1)

        return cls(channels(LUMA), channels((5.0, 3.0, 1.0)))


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


def resized_crops(x: Tensor, params: ViewParams, spec: ViewSpec) -> Tensor:
    """Crops ``params.box`` of ``x`` ``[N, 3, H, W]`` resized to ``spec.size``, flipped if drawn.

    torchvision's ``resized_crop`` of a PIL image (crop, then PIL's resize, horizontal pass
    first), as two batched matrix products with per-sample weights; a flip reverses the
    rows of the horizontal weights.
    """
    top, left, h, w = params.box.unbind(1)  # [N] each
    height, width = x.shape[-2:]
    rows = resample_weights(top, h, height, spec.size, spec.interpolation)  # [N, s, H]
    cols = resample_weights(left, w, width, spec.size, spec.interpolation)  # [N, s, W]
    cols = torch.where(params.flip[:, None, None], cols.flip(1), cols)
    n, size = x.shape[0], spec.size
    x = (x.reshape(n, 3 * height, width) @ cols.transpose(1, 2)).clamp_(0.0, 1.0)  # [N, 3H, s]
    return (rows[:, None] @ x.view(n, 3, height, size)).clamp_(0.0, 1.0)  # [N, 3, s, s]


def grayscale(x: Tensor, c: Constants) -> Tensor:
    """``[N, 1, h, w]`` luma of RGB ``x`` (kornia's ``rgb_to_grayscale``, ITU-R 601-2)."""
    return (x * c.luma).sum(dim=1, keepdim=True)


def hue_shift(x: Tensor, turns: Tensor, c: Constants) -> Tensor:
    """kornia's ``adjust_hue`` (torchvision's HSV hue shift) by ``turns`` ``[N]``, in few ops.

    The hue in sectors (``[0, 6)``) is the max channel's formula of kornia's ``rgb_to_hsv``;
    HSV -> RGB is ``v - v s clamp(min(k, 4 - k), 0, 1)`` with ``k = (n + hue) mod 6`` and
    ``n`` = 5, 3, 1 for R, G, B (the same values as kornia's sector table).
    """
    v = x.amax(dim=1, keepdim=True)  # [N, 1, h, w]
    delta = v - x.amin(dim=1, keepdim=True)  # [N, 1, h, w]
    safe = delta + (delta == 0)  # 1 where grey: kornia's where(delta == 0, 1, delta)
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]  # [N, 1, h, w] each
    # the max channel's formula; the first max on ties, as kornia (the formulas agree there)
    sector = torch.where(g == v, (b - r).add_(safe, alpha=2.0), (r - g).add_(safe, alpha=4.0))
    sector = torch.where(r == v, g - b, sector).div_(safe)  # [N, 1, h, w], in [-1, 5]
    k = (sector + (6.0 * turns)[:, None, None, None]).add(c.hue_sector).remainder_(6.0)
    ramp = k.sub_(2.0).abs_().neg_().add_(2.0).clamp_(0.0, 1.0)  # min(k, 4 - k) in [0, 1]
    chroma = delta.mul_(v / (v + EPS))  # v * s of kornia's HSV
    return ramp.mul_(chroma).neg_().add_(v)  # [N, 3, h, w]: v - v s ramp


def colour_jitter(x: Tensor, params: ViewParams, c: Constants) -> Tensor:
    """torchvision's ``ColorJitter`` per sample: four steps in each sample's drawn order.

    Brightness, contrast and saturation are one affine step ``clamp((x - ref) f + ref)``
    (``ref`` 0, the image's mean luma, the pixel's luma: kornia's ``adjust_*`` formulas).
    Each sample runs its affine steps before the hue shift in three slots (right-aligned,
    identity ``f = 1`` where it has fewer), the hue shift once for all, then its steps after
    the hue shift in three more slots: 6 affine slots and one hue shift for any order.
    """
    hue_at = (params.order == 3).to(torch.float32).argmax(dim=1, keepdim=True)  # [N, 1]
    offset = torch.arange(-3, 3, device=x.device)  # [6]: 3 slots before hue, 3 after
    position = hue_at + offset + (offset >= 0)  # [N, 6], position in the order
    valid = (position >= 0) & (position <= 3) & params.jitter[:, None]  # [N, 6]
    step = params.order.gather(1, position.clamp(0, 3))  # [N, 6], index into factors
    factor = torch.where(valid, params.factors.gather(1, step), 1.0)  # [N, 6]
    # per slot [6, N, 1, 1, 1]: the factor, 1 - factor and the weights of mean / pixel luma
    factor = factor.to(x.dtype).T[:, :, None, None, None]
    keep = 1.0 - factor
    with_mean = (step == 1).to(x.dtype).T[:, :, None, None, None]
    with_luma = (step == 2).to(x.dtype).T[:, :, None, None, None]
    jittered = params.jitter.to(x.dtype)[:, None, None, None]  # [N, 1, 1, 1]
    x = x.clone()  # the steps below write in place (a fresh 6 MB tensor per op is slow on CPU)
    for slot in range(6):
        if slot == 3:  # the hue shift, between the steps before it and those after it
            shifted = hue_shift(x, params.factors[:, 3].to(x.dtype), c)
            x = torch.lerp(x, shifted, jittered)  # weight 0 or 1: exactly x or shifted
        luma = grayscale(x, c)  # [N, 1, s, s]
        mean = luma.mean(dim=(2, 3), keepdim=True).mul_(with_mean[slot])  # [N, 1, 1, 1]
        ref = luma.mul_(with_luma[slot]).add_(mean).mul_(keep[slot])  # [N, 1, s, s]
        # (x - ref) f + ref as x f + ref (1 - f): fewer passes; the identity where f is 1
        x = x.mul_(factor[slot]).add_(ref).clamp_(0.0, 1.0)
    return x


def blur_matrices(sigma: Tensor, side: int, size: int) -> Tensor:
    """``[N, size, size]`` matrices of a 1-D Gaussian blur with replicate border per sample.

    Row ``o`` holds kernel tap ``d`` (``exp(-d^2 / 2 sigma^2)``, normalised, kornia's
    ``get_gaussian_kernel1d``) at column ``clamp(o + d, 0, size - 1)``: ``M @ x @ M^T`` is
    kornia's ``gaussian_blur2d(x, (side, side), (sigma, sigma), "replicate")``.
    """
    radius = side // 2
    taps = torch.arange(side, device=sigma.device) - radius  # [k]
    kernel = torch.exp(-taps.to(sigma.dtype).pow(2) / (2.0 * sigma[:, None].pow(2)))  # [N, k]
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    column = (torch.arange(size, device=sigma.device)[None] + taps[:, None]).clamp(0, size - 1)
    onehot = column[:, :, None] == torch.arange(size, device=sigma.device)  # [k, s, s]
    return (kernel @ onehot.to(sigma.dtype).flatten(1)).view(-1, size, size)  # [N, s, s]


def render(x: Tensor, params: ViewParams, spec: ViewSpec, c: Constants) -> Tensor:
    """Views ``[N, 3, s, s]`` in [0, 1] of source images ``x`` ``[N, 3, H, W]`` (one per row):
    crop, flip, jitter, grey, blur, solarise; each step where ``spec`` can draw it."""
    x = resized_crops(x, params, spec)  # [N, 3, s, s]
    if spec.jitter_prob > 0:
        x = colour_jitter(x, params, c)
    if spec.grey_prob > 0:
        grey = params.grey.to(x.dtype)[:, None, None, None]  # [N, 1, 1, 1]
        x = torch.lerp(x, grayscale(x, c).expand_as(x), grey)  # weight 0 or 1: a selection
    if spec.blur_prob > 0:
        blur = blur_matrices(params.sigma.to(x.dtype), spec.blur_kernel_size(), spec.size)
        eye = torch.eye(spec.size, device=x.device, dtype=x.dtype)  # [s, s]
        blur = torch.where(params.blur[:, None, None], blur, eye)[:, None]  # [N, 1, s, s]
        x = blur @ x @ blur.transpose(-1, -2)  # identity rows for samples not blurred
    if spec.solarize_prob > 0:
        invert = params.solarize[:, None, None, None] & (x >= 0.5)
        x = torch.where(invert, 1.0 - x, x)
    return x


def make_view(images: Tensor, source: Tensor, params: ViewParams, spec: ViewSpec) -> Tensor:
    """One view ``[N, 3, s, s]`` in [0, 1] of ``images[source]`` (``images`` ``[B, 3, H, W]``
    floats in [0, 1], ``source`` ``[N]``) with the parameters ``params`` (``[N]`` rows)."""
    return render(images[source], params, spec, Constants.on(images.device))


# ------------------------------------------------------------------------------ the views
class ViewGroup(NamedTuple):
    """Consecutive views ``first:last`` of one size, resampling and blur kernel: one pass."""

    first: int
    last: int
    spec: ViewSpec
    """Their spec for :func:`render`: size and resampling, each step if any view draws it."""


def view_groups(specs: Sequence[ViewSpec]) -> list[ViewGroup]:
    """Runs of consecutive ``specs`` that can be made in one batched pass."""

    def key(spec: ViewSpec) -> tuple:
        blur = spec.blur_kernel_size() if spec.blur_prob > 0 else None
        return spec.size, spec.interpolation, blur

    groups: list[ViewGroup] = []
    first = 0
    for index in range(1, len(specs) + 1):
        if index < len(specs) and key(specs[index]) == key(specs[first]):
            continue
        run = specs[first:index]
        blurred = [s for s in run if s.blur_prob > 0]
        merged = ViewSpec(
            size=run[0].size,
            interpolation=run[0].interpolation,
            jitter_prob=max(s.jitter_prob for s in run),
            grey_prob=max(s.grey_prob for s in run),
            blur_prob=max(s.blur_prob for s in run),
            blur_sigma=blurred[0].blur_sigma if blurred else run[0].blur_sigma,
            solarize_prob=max(s.solarize_prob for s in run),
        )
        groups.append(ViewGroup(first, index, merged))
        first = index
    return groups


class DeviceState(NamedTuple):
    """What :class:`DeviceViews` keeps per device and image size: every constant tensor."""

    table: SpecTable
    constants: Constants
    view_salt: Tensor  # [V] int64
    draw_salt: Tensor  # [DRAWS] int64
    mean: Tensor  # [1, 3, 1, 1]
    std: Tensor  # [1, 3, 1, 1]


class DeviceViews:
    """A recipe's views of a uint8 batch, made with batched tensor ops on the batch's device.

    No op has a data-dependent shape and nothing is read back to the host, so the call can
    be compiled: ``compile=True`` wraps it in ``torch.compile`` (``fullgraph``, static
    shapes: a last, smaller batch compiles once more), with ``mode="reduce-overhead"`` on CUDA,
    which replays the whole call as one CUDA graph (its output memory is reused by the next
    call: a batch's views must be done with when the next batch's are made, as in a training
    loop). The compiled views equal the eager views up to float rounding.

    Args:
        recipe: The method's views.
        norm: Normalisation applied to every view.
        seed: Seed of the augmentations (with each sample's epoch and index).
        compile: Compile the view function on first use (see above).
        backend: ``torch.compile`` backend (``"inductor"``; ``"aot_eager"`` to check capture
            without code generation).
    """

    def __init__(
        self,
        recipe: ViewRecipe,
        norm: Normalization,
        seed: int,
        compile: bool = False,
        backend: str = "inductor",
    ) -> None:
        self.recipe = recipe
        self.norm = norm
        self.seed = seed
        self.compile = compile
        self.backend = backend
        self.specs = recipe.expanded()
        self.groups = view_groups(self.specs)
        self._states: dict[tuple[torch.device, int, int], DeviceState] = {}
        self._compiled: dict[str, Callable[[Tensor, Tensor, DeviceState], list[Tensor]]] = {}

    def state(self, device: torch.device, height: int, width: int) -> DeviceState:
        """The constants for ``height x width`` images on ``device`` (made on first use)."""
        key = (device, height, width)
        if key not in self._states:
            views, counters = draw_salts(range(len(self.specs)), DRAWS)
            channels = (self.norm.mean, self.norm.std)
            mean, std = (torch.tensor(v, device=device).view(1, 3, 1, 1) for v in channels)
            self._states[key] = DeviceState(
                table=SpecTable.build(self.specs, height, width, device),
                constants=Constants.on(device),
                view_salt=torch.tensor(views, device=device, dtype=torch.int64),
                draw_salt=torch.tensor(counters, device=device, dtype=torch.int64),
                mean=mean,
                std=std,
            )
        return self._states[key]

    def all_params(self, keys: Tensor, state: DeviceState, height: int, width: int) -> ViewParams:
        """Parameters ``[V, B, ...]`` of every expanded view for samples ``keys`` ``[B, 2]``."""
        u = hashed_draws(self.seed, keys, state.view_salt, state.draw_salt)  # [B, V, DRAWS]
        return sample_params(state.table, u.transpose(0, 1), height, width)

    def params(self, keys: Tensor, view: int, height: int, width: int) -> ViewParams:
        """Parameters ``[B, ...]`` of expanded view ``view`` for samples ``keys`` ``[B, 2]``."""
        state = self.state(keys.device, height, width)
        return ViewParams(*(p[view] for p in self.all_params(keys, state, height, width)))

    def views(self, images: Tensor, keys: Tensor, state: DeviceState) -> list[Tensor]:
        """The views (no input checks): what :meth:`__call__` runs, eager or compiled."""
        batch, height, width = images.shape[0], images.shape[2], images.shape[3]
        params = self.all_params(keys, state, height, width)  # [V, B, ...]
        x = images.float() / 255.0  # [B, 3, H, W]
        views: list[Tensor] = []
        for group in self.groups:
            count = group.last - group.first
            rows = params
            if count < len(self.specs):
                rows = ViewParams(*(p[group.first : group.last] for p in params))
            rows = ViewParams(*(p.flatten(0, 1) for p in rows))  # [count * B, ...]
            source = x.repeat(count, 1, 1, 1) if count > 1 else x  # [count * B, 3, H, W]
            out = render(source, rows, group.spec, state.constants)  # [count * B, 3, s, s]
            views.extend(((out - state.mean) / state.std).split(batch))
        return views

    def __call__(self, images: Tensor, keys: Tensor) -> list[Tensor]:
        """Views of ``images`` ``uint8 [B, 3, H, W]`` keyed by ``keys`` ``int64 [B, 2]``.

        Returns:
            One ``[B, 3, size, size]`` float tensor per view, normalised, in recipe order.
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
        state = self.state(images.device, images.shape[2], images.shape[3])
        if not self.compile:
            return self.views(images, keys, state)
        compiled = self._compiled_for(images.device)
        if images.device.type == "cuda" and self.backend == "inductor":
            # CUDA graphs reuse their output memory: the previous batch's views are done with
            torch.compiler.cudagraph_mark_step_begin()
        return compiled(images, keys, state)

    def _compiled_for(
        self, device: torch.device
    ) -> Callable[[Tensor, Tensor, DeviceState], list[Tensor]]:
        """``torch.compile`` of :meth:`views` for ``device``'s type (made on first use)."""
        if device.type not in self._compiled:
            cuda = device.type == "cuda" and self.backend == "inductor"
            self._compiled[device.type] = torch.compile(
                self.views,
                fullgraph=True,
                dynamic=False,
                backend=self.backend,
                mode="reduce-overhead" if cuda else None,
            )
        return self._compiled[device.type]
