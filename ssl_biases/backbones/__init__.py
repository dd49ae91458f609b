"""Backbones: isotropic nets with pluggable inductive biases, ResNets and timm models.

Build one with ``create_backbone("vit_tiny", depth=4)``; list presets with
``list_backbones()``; get the config dict of a preset with ``backbone_config(name)``.
"""

from ssl_biases.backbones import presets  # noqa: E402, F401  (registers the presets)
from ssl_biases.backbones.isotropic import IsotropicNet
from ssl_biases.backbones.registry import (
    backbone_config,
    create_backbone,
    list_backbones,
    register_backbone,
)
from ssl_biases.backbones.resnet import ResNet
from ssl_biases.backbones.timm_models import TimmBackbone

__all__ = [
    "IsotropicNet",
    "ResNet",
    "TimmBackbone",
    "backbone_config",
    "create_backbone",
    "list_backbones",
    "register_backbone",
]
