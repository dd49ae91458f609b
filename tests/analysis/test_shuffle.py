"""Tests for ssl_biases/analysis/shuffle.py: fixed, shared, pixel-preserving permutations."""

import pytest
import torch

from ssl_biases.analysis.shuffle import PatchShuffle, PixelShuffle


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


@pytest.mark.parametrize("shuffle", [PatchShuffle(4, seed=0), PixelShuffle(seed=0)])
def test_same_permutation_for_every_image_and_values_preserved(shuffle) -> None:
    x = _coded_batch()
    out = shuffle(x)
    assert out.shape == x.shape
    offsets = 10_000 * torch.arange(3).view(3, 1, 1, 1)
    relative = out - offsets  # undo the per-image code
    assert torch.equal(relative[0], relative[1]) and torch.equal(relative[0], relative[2])
    for b in range(3):  # a permutation: the multiset of values is unchanged
        assert torch.equal(out[b].flatten().sort().values, x[b].flatten().sort().values)
    assert not torch.equal(out, x)


@pytest.mark.parametrize("shuffle", [PatchShuffle(4, seed=0), PixelShuffle(seed=0)])
def test_single_image_matches_batch(shuffle) -> None:
    x = _coded_batch()
    assert torch.equal(shuffle(x[1]), shuffle(x)[1])


def test_patch_shuffle_keeps_patches_intact() -> None:
    x = _coded_batch()
    shuffle = PatchShuffle(4, seed=3)
    out_patches = _patches(shuffle(x), 4)  # [B, 6, C, 4, 4]
    in_patches = _patches(x, 4)
    perm = shuffle.permutation(8, 12)
    assert sorted(perm.tolist()) == list(range(6))
    assert torch.equal(out_patches, in_patches[:, perm])


def test_patch_shuffle_within_patch_uses_one_pixel_permutation() -> None:
    x = _coded_batch()
    shuffle = PatchShuffle(4, seed=3, shuffle_within_patch=True)
    out_patches = _patches(shuffle(x), 4).flatten(3)  # [B, 6, C, 16]
    in_patches = _patches(x, 4).flatten(3)[:, shuffle.permutation(8, 12)]
    pixel_perm = shuffle.pixel_permutation()
    assert sorted(pixel_perm.tolist()) == list(range(16))
    assert torch.equal(out_patches, in_patches[..., pixel_perm])


def test_pixel_shuffle_moves_channels_together() -> None:
    x = _coded_batch(batch=1)
    out = PixelShuffle(seed=1)(x)[0]  # [C, H, W]
    position = out % 1_000  # source pixel index per output pixel
    assert torch.equal(position[0], position[1]) and torch.equal(position[0], position[2])
    assert torch.equal(position[0].flatten().long(), PixelShuffle(seed=1).permutation(8, 12))


def test_permutations_deterministic_by_seed() -> None:
    x = _coded_batch()
    assert torch.equal(PatchShuffle(2, seed=5)(x), PatchShuffle(2, seed=5)(x))
    assert not torch.equal(PatchShuffle(2, seed=5)(x), PatchShuffle(2, seed=6)(x))
    assert torch.equal(PixelShuffle(seed=5)(x), PixelShuffle(seed=5)(x))
    assert not torch.equal(PixelShuffle(seed=5)(x), PixelShuffle(seed=6)(x))


def test_patch_size_must_divide_image() -> None:
    with pytest.raises(ValueError, match="not divisible"):
        PatchShuffle(5)(_coded_batch())
