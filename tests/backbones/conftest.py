"""Shared fixtures for backbone tests: tiny overrides that keep every preset fast on CPU."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from ssl_biases.backbones import IsotropicNet, create_backbone, list_backbones
from ssl_biases.backbones.registry import _resolve


def _tiny_overrides(name: str) -> dict[str, Any]:
    constructor, _ = _resolve(name)
    if constructor is IsotropicNet:
        return {"width": 32, "depth": 2, "num_heads": 2}
    return {"image_size": 16}


@pytest.fixture
def make_tiny() -> Callable[..., nn.Module]:
    """``make_tiny(name, **overrides)``: preset ``name`` at width 32, depth 2 (ResNet: 16 px)."""

    def make(name: str, **overrides: Any) -> nn.Module:
        torch.manual_seed(0)
        return create_backbone(name, **{**_tiny_overrides(name), **overrides})

    return make


@pytest.fixture(params=list_backbones())
def preset_name(request: pytest.FixtureRequest) -> str:
    return request.param
