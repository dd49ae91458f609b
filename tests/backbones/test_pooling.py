"""Pooling: class token, patch mean, multi-head attention pooling."""

from __future__ import annotations

import pytest
import torch

from ssl_biases.backbones.pooling import create_pool


def test_cls_takes_first_token():
    x = torch.randn(2, 5, 8)
    assert torch.equal(create_pool("cls", 8, 2, 4.0)(x, 1), x[:, 0])


def test_gap_excludes_prefix_tokens():
    x = torch.randn(2, 5, 8)
    torch.testing.assert_close(create_pool("gap", 8, 2, 4.0)(x, 1), x[:, 1:].mean(1))


def test_map_is_permutation_invariant_and_ignores_prefix():
    torch.manual_seed(0)
    pool = create_pool("map", 8, 2, 4.0).eval()
    x = torch.randn(2, 5, 8)
    out = pool(x, 1)
    assert out.shape == (2, 8)
    y = torch.cat([torch.randn(2, 1, 8), x[:, 1:].flip(1)], 1)
    torch.testing.assert_close(pool(y, 1), out)


def test_map_needs_heads_dividing_width():
    with pytest.raises(ValueError, match="num_heads"):
        create_pool("map", 10, 4, 4.0)
