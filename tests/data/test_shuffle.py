"""Tests for ssl_biases/data/shuffle.py and ``SSLDataModule(shuffle=...)`` (arXiv 2105.01601)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from ssl_biases.backbones import IsotropicNet
from ssl_biases.data.datamodule import SSLDataModule
from ssl_biases.data.shuffle import (
    SHUFFLE_KINDS,
    PatchShuffle,
    PixelShuffle,
    ShuffledViews,
    fixed_input_shuffle,
)
from ssl_biases.methods import DINO, SimCLR

KINDS = [k for k in SHUFFLE_KINDS if k != "none"]


def _coded_batch(batch: int = 3, channels: int = 3, height: int = 8, width: int = 12):
    """Every value unique: value = image * 10_000 + channel * 1_000 + pixel index."""
    pixel = torch.arange(height * width).view(1, 1, height, width)
    channel = 1_000 * torch.arange(channels).view(1, channels, 1, 1)
    image = 10_000 * torch.arange(batch).view(batch, 1, 1, 1)
    return (image + channel + pixel).float()  # [B, C, H, W]


def _patches(x: torch.Tensor, p: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, G, C, p, p] in row-major patch order."""
    b, c, h, w = x.shape
    return x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(b, -1, c, p, p)


# ------------------------------------------------------------------------------ transforms
@pytest.mark.parametrize("kind", KINDS)
def test_one_permutation_for_every_image_and_values_preserved(kind: str) -> None:
    x = _coded_batch()
    out = fixed_input_shuffle(kind, 4, seed=0)(x)
    assert out.shape == x.shape and not torch.equal(out, x)
    relative = out - 10_000 * torch.arange(3).view(3, 1, 1, 1)  # undo the per-image code
    assert torch.equal(relative[0], relative[1]) and torch.equal(relative[0], relative[2])
    for b in range(3):  # a permutation: the multiset of values is unchanged
        assert torch.equal(out[b].flatten().sort().values, x[b].flatten().sort().values)
    position = out % 1_000  # all channels of a pixel move together
    assert torch.equal(position[:, 0], position[:, 1]) and torch.equal(
        position[:, 0], position[:, 2]
    )


@pytest.mark.parametrize("kind", KINDS)
def test_fixed_by_the_seed_and_single_image_matches_batch(kind: str) -> None:
    x = _coded_batch()
    out = fixed_input_shuffle(kind, 2, seed=5)(x)
    assert torch.equal(out, fixed_input_shuffle(kind, 2, seed=5)(x))  # a new object, same perm
    assert not torch.equal(out, fixed_input_shuffle(kind, 2, seed=6)(x))
    assert torch.equal(fixed_input_shuffle(kind, 2, seed=5)(x[1]), out[1])


def test_patch_shuffle_keeps_patch_contents() -> None:
    x = _coded_batch()
    shuffle = fixed_input_shuffle("patch", 4, seed=3)
    perm = shuffle.permutation(8, 12)
    assert sorted(perm.tolist()) == list(range(6)) and perm.tolist() != list(range(6))
    assert torch.equal(_patches(shuffle(x), 4), _patches(x, 4)[:, perm])


def test_within_patch_keeps_patch_positions() -> None:
    x = _coded_batch()
    shuffle = fixed_input_shuffle("within_patch", 4, seed=3)
    out_patches, in_patches = _patches(shuffle(x), 4).flatten(3), _patches(x, 4).flatten(3)
    # each patch keeps its place and its pixels; one pixel permutation for all patches
    assert torch.equal(out_patches.sort(-1).values, in_patches.sort(-1).values)
    pixel_perm = shuffle.pixel_permutation()
    assert sorted(pixel_perm.tolist()) == list(range(16)) and pixel_perm.tolist() != list(range(16))
    assert torch.equal(out_patches, in_patches[..., pixel_perm])


def test_patch_and_within_patch_is_both() -> None:
    x = _coded_batch()
    both = fixed_input_shuffle("patch_and_within_patch", 4, seed=3)
    within = fixed_input_shuffle("within_patch", 4, seed=3)
    assert torch.equal(both(x), within(fixed_input_shuffle("patch", 4, seed=3)(x)))


def test_pixel_shuffle_is_one_global_permutation() -> None:
    x = _coded_batch(batch=1)
    shuffle = fixed_input_shuffle("pixel", 4, seed=1)
    assert isinstance(shuffle, PixelShuffle)
    source = (shuffle(x)[0, 0] % 1_000).flatten().long()  # source pixel per output pixel
    assert torch.equal(source, shuffle.permutation(8, 12))
    assert fixed_input_shuffle("none") is None


def test_bad_shuffle_inputs_are_value_errors() -> None:
    with pytest.raises(ValueError, match="shuffle must be one of none, patch"):
        fixed_input_shuffle("rows")
    with pytest.raises(ValueError, match="patch_size must be positive"):
        fixed_input_shuffle("patch", 0)
    with pytest.raises(ValueError, match="not divisible by patch_size=5"):
        fixed_input_shuffle("within_patch", 5)(_coded_batch())
    with pytest.raises(ValueError, match=r"image \[C, H, W\] or a batch"):
        PatchShuffle(4)(torch.zeros(8, 8))
    with pytest.raises(ValueError, match="shuffle_patch_size to a divisor"):
        SSLDataModule(image_size=16, shuffle="patch", shuffle_patch_size=5)
    with pytest.raises(ValueError, match="shuffle_patch_size to a divisor"):
        SSLDataModule(image_size=18, shuffle="within_patch")
    with pytest.raises(ValueError, match="shuffle must be one of"):
        SSLDataModule(shuffle="global")  # type: ignore[arg-type]
    assert SSLDataModule(image_size=18, shuffle="pixel").input_shuffle is not None


# ------------------------------------------------------------------------------ datamodule
DATA = dict(image_size=16, batch_size=8, num_workers=0, shapes_size=48, max_probe_train_samples=12)


def _simclr(patch_size: int = 4) -> SimCLR:
    return SimCLR(
        IsotropicNet(image_size=16, patch_size=patch_size, width=32, depth=1, num_heads=2)
    )


def _fitted(dm: SSLDataModule, module: object, epoch: int = 0) -> SSLDataModule:
    dm.trainer = SimpleNamespace(lightning_module=module, current_epoch=epoch)
    dm.setup("fit")
    return dm


@pytest.mark.parametrize("kind", KINDS)
def test_every_probe_split_is_the_shuffled_unshuffled_split(kind: str) -> None:
    plain, shuffled = SSLDataModule(**DATA), SSLDataModule(**DATA, shuffle=kind, shuffle_seed=2)
    shuffle = fixed_input_shuffle(kind, 4, seed=2)
    for a, b in zip(plain.val_dataloader() + [plain.predict_dataloader()],
                    shuffled.val_dataloader() + [shuffled.predict_dataloader()]):  # fmt: skip
        (x_plain, y_plain), (x_shuffled, y_shuffled) = next(iter(a)), next(iter(b))
        assert torch.equal(y_plain, y_shuffled)
        assert torch.equal(x_shuffled, shuffle(x_plain)) and not torch.equal(x_shuffled, x_plain)


@pytest.mark.parametrize("augment", ["workers", "device"])
def test_every_training_view_is_shuffled_after_augmentation(augment: str) -> None:
    """Same augmentation draws with and without the shuffle: each final view is permuted."""
    shuffle = fixed_input_shuffle("patch", 4, seed=1)
    for epoch in (0, 1):  # one permutation in every epoch
        batches = []
        for kind in ("none", "patch"):
            dm = SSLDataModule(**DATA, augment=augment, shuffle=kind, shuffle_seed=1)
            loader = _fitted(dm, _simclr(), epoch).train_dataloader()
            batches.append(dm.on_after_batch_transfer(next(iter(loader)), 0))
        (views_plain, labels_plain), (views_shuffled, labels_shuffled) = batches
        assert torch.equal(labels_plain, labels_shuffled) and len(views_plain) == 2
        for plain, shuffled in zip(views_plain, views_shuffled):
            assert plain.shape == (8, 3, 16, 16)
            assert torch.equal(shuffled, shuffle(plain)) and not torch.equal(shuffled, plain)


def test_shuffled_views_handles_lists_of_view_tensors() -> None:
    views = ShuffledViews(lambda x: [x, [x[:, :8, :8]]], PixelShuffle(0))
    x = _coded_batch(batch=1)[0, :, :8, :8]
    out = views(x)
    assert torch.equal(out[0], PixelShuffle(0)(x)) and torch.equal(out[1][0], PixelShuffle(0)(x))


def test_a_patch_size_other_than_the_backbones_is_warned_about() -> None:
    with pytest.warns(UserWarning, match="shuffle_patch_size 4 differs from the backbone's"):
        _fitted(SSLDataModule(**DATA, shuffle="patch"), _simclr(patch_size=8))


def test_every_view_size_must_be_a_multiple_of_the_patch_size() -> None:
    dino = DINO(IsotropicNet(image_size=16, patch_size=8, width=32, depth=1, num_heads=2))
    dm = SSLDataModule(**DATA, shuffle="patch", shuffle_patch_size=16)  # local views are 8 px
    with pytest.raises(ValueError, match=r"views are \[8, 16\] px: set --data.shuffle_patch_size"):
        _fitted(dm, dino)
    _fitted(SSLDataModule(**DATA, shuffle="pixel"), dino)  # any size for the global shuffle
