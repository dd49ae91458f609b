"""Position embeddings: added to patch tokens, resampled or recomputed for other grids."""

from __future__ import annotations

import pytest
import torch

from ssl_biases.backbones.pos_embed import create_pos_embed


def test_none_adds_nothing():
    x = torch.randn(1, 4, 8)
    assert torch.equal(create_pos_embed("none", 8, (2, 2))(x, (2, 2)), x)


def test_learned_has_a_row_per_patch_and_resamples():
    pe = create_pos_embed("learned", 8, (4, 4))
    assert pe.weight.shape == (1, 16, 8)
    out = pe(torch.zeros(1, 4, 8), (2, 2))
    assert out.shape == (1, 4, 8)


def test_sincos2d_is_fixed_and_distinct_per_position():
    pe = create_pos_embed("sincos2d", 16, (4, 4))
    assert list(pe.parameters()) == []
    table = pe(torch.zeros(1, 16, 16), (4, 4))[0]  # [16, 16]
    assert torch.cdist(table, table).add(torch.eye(16)).min() > 0
    assert pe(torch.zeros(1, 6, 16), (2, 3)).shape == (1, 6, 16)


def test_sincos2d_needs_width_divisible_by_4():
    with pytest.raises(ValueError, match="divisible by 4"):
        create_pos_embed("sincos2d", 10, (2, 2))


def test_unknown_name():
    with pytest.raises(ValueError, match="unknown pos_embed"):
        create_pos_embed("rope", 8, (2, 2))  # type: ignore[arg-type]
