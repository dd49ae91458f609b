"""ResNet reference backbones built from torchvision's ResNets (He et al., arXiv 1512.03385)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torchvision.models import resnet as tv_resnet

ResNetArch = Literal["resnet18", "resnet34", "resnet50"]


def _widen_last_block(block: nn.Module, out_dim: int) -> None:
    """Give a torchvision Basic/Bottleneck block ``out_dim`` output channels, in place.

    Only the block's last conv (+BN) and its shortcut change; its inner width stays.
    """
    if isinstance(block, tv_resnet.Bottleneck):
        block.conv3 = nn.Conv2d(block.conv3.in_channels, out_dim, 1, bias=False)
        block.bn3 = nn.BatchNorm2d(out_dim)
        in_dim = block.conv1.in_channels
    else:
        block.conv2 = nn.Conv2d(block.conv2.in_channels, out_dim, 3, padding=1, bias=False)
        block.bn2 = nn.BatchNorm2d(out_dim)
        in_dim = block.conv1.in_channels
    stride = block.stride
    block.downsample = nn.Sequential(
        nn.Conv2d(in_dim, out_dim, 1, stride=stride, bias=False), nn.BatchNorm2d(out_dim)
    )


class ResNet(nn.Module):
    """torchvision ResNet without its classifier; global average pooled embedding.

    ``last_dim`` (Bordes et al., arXiv 2304.05369) sets the output channels of the *last
    residual block only* (its last conv + BN and a 1x1 conv shortcut); the inner width of
    that block and every other block are unchanged, and ``num_features == last_dim``.

    Args:
        arch: ``resnet18`` | ``resnet34`` | ``resnet50``.
        image_size: the run's input size; only recorded (ResNets take any size).
        in_chans: input channels.
        cifar_stem: replace the 7x7 stride-2 conv and max-pool with one 3x3 stride-1 conv,
            the usual stem for 32 px images (SimCLR, arXiv 2002.05709, appendix B.9).
        last_dim: output channels of the last block (``None``: the architecture's).
    """

    has_attention: bool = False
    supports_token_dropping: bool = False

    def __init__(
        self,
        arch: ResNetArch = "resnet18",
        image_size: int = 224,
        in_chans: int = 3,
        cifar_stem: bool = False,
        last_dim: int | None = None,
    ) -> None:
        super().__init__()
        builders = {
            "resnet18": tv_resnet.resnet18,
            "resnet34": tv_resnet.resnet34,
            "resnet50": tv_resnet.resnet50,
        }
        if arch not in builders:
            raise ValueError(f"unknown arch {arch!r}; choose one of {sorted(builders)}")
        if last_dim is not None and last_dim < 1:
            raise ValueError(f"last_dim must be a positive int or None, got {last_dim}")
        net = builders[arch](weights=None)
        if cifar_stem:
            net.conv1 = nn.Conv2d(in_chans, 64, 3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        elif in_chans != 3:
            net.conv1 = nn.Conv2d(in_chans, 64, 7, stride=2, padding=3, bias=False)
        if last_dim is not None:
            _widen_last_block(net.layer4[-1], last_dim)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.blocks = nn.ModuleList(
            blk for layer in (net.layer1, net.layer2, net.layer3, net.layer4) for blk in layer
        )
        self.image_size = image_size
        self.num_features = last_dim if last_dim is not None else net.fc.in_features

    def forward_intermediates(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Output maps ``[B, C, h, w]`` of every residual block."""
        x = self.stem(x)  # [B, 64, h, w]
        outs = []
        for blk in self.blocks:
            x = blk(x)  # [B, C, h, w]
            outs.append(x)
        return outs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``[B, C, H, W]`` -> last feature map ``[B, num_features, h, w]``."""
        x = self.stem(x)
        for blk in self.blocks:
            x = blk(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> global average pooled embedding ``[B, num_features]``."""
        return self.forward_features(x).mean(dim=(2, 3))

    def attention_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Always raises: a ResNet has no attention."""
        raise ValueError("this backbone (ResNet) has no attention, so it has no attention maps")
