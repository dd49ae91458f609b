"""The backbone contract, checked on every registered preset (at tiny width and depth)."""

from __future__ import annotations

import pytest
import torch

from ssl_biases.backbones import IsotropicNet


def test_contract_shapes(preset_name, make_tiny):
    model = make_tiny(preset_name).eval()
    s = model.image_size
    x = torch.randn(2, 3, s, s)
    assert isinstance(model.num_features, int)
    assert isinstance(model.has_attention, bool)
    assert isinstance(model.supports_token_dropping, bool)
    assert model(x).shape == (2, model.num_features)
    feats = model.forward_features(x)
    inter = model.forward_intermediates(x)
    assert all(t.shape[0] == 2 for t in inter)
    if isinstance(model, IsotropicNet):
        t = model.num_prefix_tokens + model.num_patches
        assert model.num_patches == model.grid_size[0] * model.grid_size[1]
        assert model.num_prefix_tokens == (1 if model.cls_token is not None else 0)
        assert feats.shape == (2, t, model.num_features)
        assert len(inter) == len(model.blocks)
        assert inter[-1].shape == (2, t, model.num_features)
        assert model.supports_token_dropping == (model.token_mixer == "attention")
        tokens = model.embed_patches(x)
        assert tokens.shape == (2, model.num_patches, model.width)
        torch.testing.assert_close(model.pool_tokens(model.forward_tokens(tokens)), model(x))
    else:
        assert feats.ndim == 4 and feats.shape[:2] == (2, model.num_features)
        assert len(inter) == len(model.blocks)
        assert all(t.ndim == 4 for t in inter)


def test_attention_maps_contract(preset_name, make_tiny):
    model = make_tiny(preset_name).eval()
    x = torch.randn(2, 3, model.image_size, model.image_size)
    if not model.has_attention:
        with pytest.raises(ValueError, match="no attention"):
            model.attention_maps(x)
        return
    maps = model.attention_maps(x)
    t = model.num_prefix_tokens + model.num_patches
    assert len(maps) == len(model.blocks)
    for a in maps:
        assert a.shape == (2, 2, t, t)
        torch.testing.assert_close(a.sum(-1), torch.ones(2, 2, t))


def test_backward_reaches_every_parameter(preset_name, make_tiny):
    model = make_tiny(preset_name).train()
    x = torch.randn(2, 3, model.image_size, model.image_size)
    model(x).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []
