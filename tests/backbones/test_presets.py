"""The backbone contract, checked on every registered preset (at tiny width and depth)."""

from __future__ import annotations

import pytest
import torch

from ssl_biases.backbones import IsotropicNet, create_backbone, list_backbones
from ssl_biases.backbones.summary import count_flops


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
        assert model.supports_token_dropping == (model.token_mixer in ("attention", "identity"))
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


# (parameters, FLOPs at the preset's image size) measured with the code before typed token
# mixers (issue 16), plus the new identity presets (= poolformer's: both mixers have no
# weights and the FLOP counter does not count pooling).
PRESET_SIZE = {
    "convmixer_tiny": (1831872, 231358464),
    "convmixer_tiny_64": (1859520, 234897408),
    "identity_tiny": (1801920, 227672064),
    "identity_tiny_64": (1829568, 231211008),
    "localvit_tiny": (2691456, 365695488),
    "localvit_tiny_64": (2719104, 369234432),
    "mixer_s16": (18015264, 7552892928),
    "mixer_tiny": (1901376, 265420800),
    "mixer_tiny_64": (1929024, 268959744),
    "poolformer_tiny": (1801920, 227672064),
    "poolformer_tiny_64": (1829568, 231211008),
    "resnet18": (11176512, 3627122688),
    "resnet18_cifar": (11168832, 1110835200),
    "resnet50": (23508032, 8174272512),
    "vit_s16": (21665280, 9196996608),
    "vit_small": (10691328, 1421485056),
    "vit_ti16": (5524224, 2506982400),
    "vit_tiny": (2691456, 365695488),
    "vit_tiny_64": (2719104, 369234432),
    "vit_tiny_gap": (2691264, 359792640),
    "vit_tiny_gap_64": (2718912, 363331584),
}


def test_every_preset_keeps_its_parameters_and_flops():
    torch.set_num_threads(1)
    assert sorted(PRESET_SIZE) == list_backbones()
    for name, expected in PRESET_SIZE.items():
        model = create_backbone(name)
        params = sum(p.numel() for p in model.parameters())
        assert (params, count_flops(model, model.image_size)) == expected, name
