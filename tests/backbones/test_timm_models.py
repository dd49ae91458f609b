"""timm models behind the backbone contract."""

from __future__ import annotations

import pytest
import torch

from ssl_biases.backbones import TimmBackbone, create_backbone


def test_timm_cnn():
    model = create_backbone("timm:resnet18", image_size=32).eval()
    x = torch.randn(2, 3, 32, 32)
    assert model(x).shape == (2, 512)
    assert model.forward_features(x).shape == (2, 512, 1, 1)
    inter = model.forward_intermediates(x)
    assert [t.shape[1] for t in inter] == [64, 64, 128, 256, 512]
    assert model.image_size == 32 and model.has_attention is False


def test_timm_vit_takes_image_size_and_gives_tokens_per_block():
    model = TimmBackbone("vit_tiny_patch16_224", image_size=32).eval()
    x = torch.randn(2, 3, 32, 32)
    assert model(x).shape == (2, 192)
    assert model.forward_features(x).shape == (2, 1 + 4, 192)
    inter = model.forward_intermediates(x)
    assert len(inter) == 12 and inter[0].shape == (2, 5, 192)
    with pytest.raises(ValueError, match="no attention maps"):
        model.attention_maps(x)


def test_unknown_timm_model():
    with pytest.raises(ValueError, match="unknown timm model"):
        TimmBackbone("definitely_not_a_model")
