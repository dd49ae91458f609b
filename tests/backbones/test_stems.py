"""Stems: same grid, different pixel-to-token maps."""

from __future__ import annotations

import pytest
import torch

from ssl_biases.backbones.stems import ConvStem, OverlapStem, PatchStem, create_stem


@pytest.mark.parametrize("name", ["patch", "conv", "overlap"])
@pytest.mark.parametrize("patch_size", [2, 4, 8])
def test_stems_give_the_patch_grid(name, patch_size):
    stem = create_stem(name, 3, 16, patch_size)
    assert stem(torch.randn(2, 3, 32, 48)).shape == (2, 16, 32 // patch_size, 48 // patch_size)


def test_patch_stem_sees_only_its_patch_and_overlap_stem_its_neighbours():
    x = torch.zeros(1, 3, 16, 16)
    y = x.clone()
    y[..., 4, 4] = 1.0  # top-left pixel of patch (1, 1)
    for stem, expected_cells in ((PatchStem(3, 8, 4), 1), (OverlapStem(3, 8, 4), 4)):
        changed = (stem(x) - stem(y)).abs().amax(1)[0] > 0  # [4, 4]
        assert int(changed.sum()) == expected_cells
        assert changed[1, 1]


def test_overlap_stem_kernel():
    stem = OverlapStem(3, 8, 4)
    assert stem.proj.kernel_size == (8, 8) and stem.proj.padding == (2, 2)


def test_conv_stem_channels_follow_xiao_et_al():
    stem = ConvStem(3, 384, 16)
    convs = [m for m in stem.proj if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [48, 96, 192, 384, 384]
    assert [c.stride[0] for c in convs] == [2, 2, 2, 2, 1]


def test_conv_stem_needs_power_of_two():
    with pytest.raises(ValueError, match="power of two"):
        ConvStem(3, 32, 6)


def test_unknown_stem():
    with pytest.raises(ValueError, match="unknown stem"):
        create_stem("pixel", 3, 8, 4)  # type: ignore[arg-type]
