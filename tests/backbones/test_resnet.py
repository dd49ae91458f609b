"""ResNet references: CIFAR stem, Bordes-style last block width, contract extras."""

from __future__ import annotations

import pytest
import torch

from ssl_biases.backbones import ResNet


def test_cifar_stem_keeps_resolution():
    model = ResNet("resnet18", image_size=32, cifar_stem=True).eval()
    assert model.forward_features(torch.randn(2, 3, 32, 32)).shape == (2, 512, 4, 4)
    imagenet_stem = ResNet("resnet18", image_size=32).eval()
    assert imagenet_stem.forward_features(torch.randn(2, 3, 32, 32)).shape == (2, 512, 1, 1)


@pytest.mark.parametrize(
    ("arch", "blocks", "last_dim"),
    [("resnet18", 8, 64), ("resnet18", 8, 1024), ("resnet50", 16, 256)],
)
def test_last_dim_widens_only_the_last_block(arch, blocks, last_dim):
    model = ResNet(arch, image_size=16, cifar_stem=True, last_dim=last_dim).eval()
    ref = ResNet(arch, image_size=16, cifar_stem=True)
    x = torch.randn(2, 3, 16, 16)
    assert model.num_features == last_dim
    assert model(x).shape == (2, last_dim)
    inter = model.forward_intermediates(x)
    assert len(inter) == blocks
    assert inter[-1].shape[1] == last_dim
    assert inter[-2].shape[1] == ref.num_features
    for a, b in zip(model.blocks[:-1], ref.blocks[:-1]):
        assert sum(p.numel() for p in a.parameters()) == sum(p.numel() for p in b.parameters())


def test_resnet_has_no_attention():
    with pytest.raises(ValueError, match="no attention"):
        ResNet("resnet18", image_size=32).attention_maps(torch.randn(1, 3, 32, 32))


def test_unknown_arch():
    with pytest.raises(ValueError, match="unknown arch"):
        ResNet("resnet7", image_size=32)  # type: ignore[arg-type]
