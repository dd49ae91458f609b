"""Fixed patch and pixel permutations of MLP-Mixer's invariance study (arXiv 2105.01601).

Tolstikhin et al. (Sec. 3.4, Fig. 4) *train and test* models on images whose pixels are
rearranged by one fixed permutation shared by all images: the order of the patches and the
pixels inside each patch ("patch + pixel shuffling"), or the pixels over the whole image
("global shuffling"). MLP-Mixer is invariant to the first (its stem is linear per patch and
its token MLP has one weight per patch position, so a fixed permutation is a permutation of
its weights); a ConvNet's locality bias is not, and under the global shuffle Mixer loses
about 45% and a ResNet about 75% (5-shot linear, ImageNet).

``SSLDataModule(shuffle=...)`` (``--data.shuffle``) applies :func:`fixed_input_shuffle` to
every image the network sees during a run: each pretraining view (after augmentation, on both
view paths), the probe bank and queries, and ``predict``. :mod:`ssl_biases.analysis.shuffle`
uses the same transforms on a network trained on unshuffled images (a different measurement).

Permutations are drawn from ``torch.randperm`` with a CPU generator seeded by ``seed``, once per
image size, so the same seed gives the same permutation in every process, split, epoch and
run. The transforms act on ``[B, C, H, W]`` batches and on single ``[C, H, W]`` images.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

ShuffleKind = Literal["none", "patch", "within_patch", "patch_and_within_patch", "pixel"]
SHUFFLE_KINDS: tuple[str, ...] = get_args(ShuffleKind)


def _fixed_permutation(size: int, seed: int) -> Tensor:
    """Deterministic permutation of ``range(size)`` for ``seed``: ``[size]`` int64 on CPU."""
    return torch.randperm(size, generator=torch.Generator().manual_seed(seed))


def _as_batch(x: Tensor) -> Tensor:
    if x.ndim not in (3, 4):
        raise ValueError(
            f"expected an image [C, H, W] or a batch [B, C, H, W], got {tuple(x.shape)}"
        )
    return x if x.ndim == 4 else x[None]  # [B, C, H, W]


class PatchShuffle(nn.Module):
    """Shuffle ``patch_size x patch_size`` patches and/or the pixels inside them, fixedly.

    Every image of a given size gets the same permutation of patch positions (unless
    ``shuffle_patches`` is off); with ``shuffle_within_patch`` every patch also gets one fixed
    permutation of its ``p * p`` pixel positions (all channels of a pixel move together).
    Both on: Mixer's "patch + pixel shuffling" (arXiv 2105.01601, Sec. 3.4).

    Args:
        patch_size: side of a patch in pixels; must divide the image height and width.
        seed: seed of the patch permutation (the pixel permutation uses ``seed + 1``).
        shuffle_within_patch: permute pixel positions inside patches.
        shuffle_patches: permute the patch positions.
    """

    def __init__(
        self,
        patch_size: int,
        seed: int = 0,
        shuffle_within_patch: bool = False,
        shuffle_patches: bool = True,
    ) -> None:
        super().__init__()
        if patch_size < 1:
            raise ValueError(f"patch_size must be positive, got {patch_size}")
        if not (shuffle_patches or shuffle_within_patch):
            raise ValueError("PatchShuffle needs shuffle_patches or shuffle_within_patch")
        self.patch_size = patch_size
        self.seed = seed
        self.shuffle_within_patch = shuffle_within_patch
        self.shuffle_patches = shuffle_patches

    def permutation(self, height: int, width: int) -> Tensor:
        """Source patch index for each output patch, row-major: ``[(H/p) * (W/p)]``."""
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(
                f"image size {height}x{width} is not divisible by patch_size={p}; "
                "resize or crop the images to a multiple of the patch size "
                "(--data.image_size, or --data.shuffle_patch_size for --data.shuffle)"
            )
        if not self.shuffle_patches:
            return torch.arange((height // p) * (width // p))
        return _fixed_permutation((height // p) * (width // p), self.seed)

    def pixel_permutation(self) -> Tensor:
        """Source pixel index inside a patch for each output pixel: ``[p * p]``."""
        if not self.shuffle_within_patch:
            return torch.arange(self.patch_size**2)
        return _fixed_permutation(self.patch_size**2, self.seed + 1)

    def forward(self, x: Tensor) -> Tensor:
        """Shuffle ``[B, C, H, W]`` or ``[C, H, W]``; returns the same shape."""
        batch = _as_batch(x)  # [B, C, H, W]
        b, c, h, w = batch.shape
        p = self.patch_size
        perm = self.permutation(h, w).to(x.device)  # [G]
        gh, gw = h // p, w // p
        patches = batch.reshape(b, c, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5)  # [B,gh,gw,C,p,p]
        patches = patches.reshape(b, gh * gw, c, p * p)[:, perm]  # [B, G, C, p*p]
        if self.shuffle_within_patch:
            patches = patches[..., self.pixel_permutation().to(x.device)]  # [B, G, C, p*p]
        patches = patches.reshape(b, gh, gw, c, p, p).permute(0, 3, 1, 4, 2, 5)  # [B,C,gh,p,gw,p]
        return patches.reshape(x.shape)

    def extra_repr(self) -> str:
        return (
            f"patch_size={self.patch_size}, seed={self.seed}, "
            f"shuffle_within_patch={self.shuffle_within_patch}, "
            f"shuffle_patches={self.shuffle_patches}"
        )


class PixelShuffle(nn.Module):
    """Shuffle pixel positions over the whole image by one fixed permutation.

    Mixer's "global shuffling" (arXiv 2105.01601, Sec. 3.4): all channels of a pixel move
    together, and every image of a given size gets the same permutation. Not to be confused
    with ``torch.nn.PixelShuffle`` (sub-pixel upsampling).

    Args:
        seed: seed of the permutation.
    """

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.seed = seed

    def permutation(self, height: int, width: int) -> Tensor:
        """Source pixel index for each output pixel, row-major: ``[H * W]``."""
        return _fixed_permutation(height * width, self.seed)

    def forward(self, x: Tensor) -> Tensor:
        """Shuffle ``[B, C, H, W]`` or ``[C, H, W]``; returns the same shape."""
        batch = _as_batch(x)  # [B, C, H, W]
        b, c, h, w = batch.shape
        perm = self.permutation(h, w).to(x.device)  # [H*W]
        return batch.reshape(b, c, h * w)[..., perm].reshape(x.shape)

    def extra_repr(self) -> str:
        return f"seed={self.seed}"


def fixed_input_shuffle(kind: str, patch_size: int = 4, seed: int = 0) -> nn.Module | None:
    """The fixed input permutation ``kind`` (``None`` for ``none``).

    Args:
        kind: ``none``; ``patch`` (patch order); ``within_patch`` (pixels inside each patch);
            ``patch_and_within_patch`` (both: Mixer's "patch + pixel shuffling"); ``pixel``
            (pixels over the whole image: Mixer's "global shuffling"). arXiv 2105.01601.
        patch_size: side of the patches of the patch kinds (the backbone's patch size).
        seed: seed of the permutation.

    Raises:
        ValueError: for an unknown ``kind`` or a patch size below 1.
    """
    if kind not in SHUFFLE_KINDS:
        raise ValueError(f"shuffle must be one of {', '.join(SHUFFLE_KINDS)}; got {kind!r}")
    if kind == "none":
        return None
    if kind == "pixel":
        return PixelShuffle(seed)
    return PatchShuffle(
        patch_size,
        seed,
        shuffle_within_patch=kind != "patch",
        shuffle_patches=kind != "within_patch",
    )


def shuffle_tensors(value: Any, shuffle: nn.Module) -> Any:
    """``shuffle`` applied to every tensor of ``value`` (a tensor or nested lists/tuples)."""
    if isinstance(value, Tensor):
        return shuffle(value)
    if isinstance(value, (list, tuple)):
        return type(value)(shuffle_tensors(v, shuffle) for v in value)
    return value


class ShuffledViews:
    """A view transform whose every output view is shuffled by ``shuffle``.

    The permutation acts on each final view (after crop, flip and jitter), so the network's
    input patch grid is always rearranged by the same fixed permutation, as in Mixer's
    protocol; shuffling the raw image before a random crop would not be a fixed permutation
    of the views.

    Args:
        transform: the method's view transform (image -> list of view tensors).
        shuffle: the fixed permutation (:func:`fixed_input_shuffle`).
    """

    def __init__(self, transform: Any, shuffle: nn.Module) -> None:
        self.transform = transform
        self.shuffle = shuffle

    def __call__(self, image: Any) -> Any:
        return shuffle_tensors(self.transform(image), self.shuffle)
