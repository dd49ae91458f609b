"""Fused AdamW on CUDA and channels_last for conv backbones (issue 28 item 5), on CPU.

The decisions are functions of a device type, so they are tested without a GPU; the optimizer
a CPU ``configure_optimizers`` builds is unchanged, and channels_last forced on a CPU gives
the same features.
"""

from __future__ import annotations

import pytest
import torch
from tiny_methods import tiny_method
from torch import nn

from ssl_biases.backbones import IsotropicNet
from ssl_biases.backbones.resnet import ResNet
from ssl_biases.methods import SimCLR
from ssl_biases.methods.gpu import fused_kwargs, wants_channels_last

PARAMS = [nn.Parameter(torch.randn(3, 3)), nn.Parameter(torch.randn(3))]


@pytest.mark.parametrize(
    ("optimizer", "device_type", "expected"),
    [
        (torch.optim.AdamW(PARAMS), "cuda", {"fused": True}),
        (torch.optim.Adam(PARAMS), "cuda", {"fused": True}),
        (torch.optim.SGD(PARAMS, lr=0.1), "cuda", {"fused": True}),
        (torch.optim.AdamW(PARAMS), "cpu", {}),  # CPU: as it was
        (torch.optim.AdamW(PARAMS), None, {}),  # read from the parameters: CPU
        (torch.optim.AdamW(PARAMS, fused=False), "cuda", {}),  # the user's choice
        (torch.optim.AdamW(PARAMS, foreach=True), "cuda", {}),  # the user's choice
        (torch.optim.RMSprop(PARAMS), "cuda", {}),  # no fused implementation
    ],
)
def test_fused_is_chosen_on_cuda_for_adam_adamw_sgd_only(optimizer, device_type, expected):
    assert fused_kwargs(optimizer, device_type) == expected


def test_cpu_configure_optimizers_is_not_fused():
    method, _ = tiny_method("simclr")
    optimizer = method.configure_optimizers()["optimizer"]
    assert type(optimizer) is torch.optim.AdamW
    assert not any(group.get("fused") for group in optimizer.param_groups)


def test_channels_last_is_for_conv_backbones_on_cuda():
    resnet = ResNet("resnet18", image_size=16)
    vit = IsotropicNet(image_size=16, patch_size=4, width=32, depth=1, num_heads=2)
    conv_mixer = IsotropicNet(
        image_size=16, patch_size=4, width=32, depth=2, token_mixer="conv", pool="gap"
    )
    assert wants_channels_last(resnet, "cuda")
    assert not wants_channels_last(resnet, "cpu")
    assert not wants_channels_last(vit, "cuda")  # one patch-embedding conv only
    assert wants_channels_last(conv_mixer, "cuda")  # a Conv2d per mixer


def test_forced_channels_last_gives_the_same_features():
    torch.manual_seed(0)
    method = SimCLR(ResNet("resnet18", image_size=16), projection_hidden_dim=32, projection_dim=16)
    method.eval()
    images = torch.randn(4, 3, 16, 16)  # [B, 3, H, W]
    with torch.no_grad():
        expected = method.backbone(images)  # [B, 512]
        method.use_channels_last(True)
        conv = method.backbone.stem[0].weight
        assert conv.is_contiguous(memory_format=torch.channels_last)
        (batch,) = method._layout([images])
        assert batch.is_contiguous(memory_format=torch.channels_last)
        actual = method.backbone(batch)  # [B, 512]
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
