"""Shared helpers of the method tests: tiny backbones and a fixed-batch overfitting loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor
from torch.nn import functional as F

from ssl_biases.backbones import IsotropicNet
from ssl_biases.methods.base import SSLMethod


def make_tiny_net(**overrides: Any) -> IsotropicNet:
    """A 16 px, width-32, depth-2 IsotropicNet (4x4 patch grid); attention + class token."""
    args = {"image_size": 16, "patch_size": 4, "width": 32, "depth": 2, "num_heads": 2}
    return IsotropicNet(**{**args, **overrides})


def run_overfit(
    method: SSLMethod, views: list[Tensor], steps: int = 40, lr: float = 3e-3
) -> tuple[float, float]:
    """Trains ``method`` on one fixed batch of views; returns (first loss, mean of last 5).

    Teachers are updated after every step with the base's schedule, as in a real run.
    """
    params = [p for p in method.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    losses = []
    for step in range(steps):
        loss, _ = method.ssl_step(views)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        method.update_teachers(method.momentum(step))
        losses.append(loss.item())
    return losses[0], sum(losses[-5:]) / 5


@pytest.fixture
def fixed_images() -> Callable[[int, int], Tensor]:
    """``fixed_images(batch, size)``: a seeded batch of normalised-looking images."""

    def make(batch: int = 8, size: int = 16) -> Tensor:
        generator = torch.Generator().manual_seed(1)
        return torch.randn(batch, 3, size, size, generator=generator)

    return make


@pytest.fixture
def tiny_net() -> Callable[..., IsotropicNet]:
    """``tiny_net(**overrides)``: a 16 px, width-32, depth-2 IsotropicNet."""
    return make_tiny_net


@pytest.fixture
def overfit() -> Callable[..., tuple[float, float]]:
    """``overfit(method, views, steps, lr)`` -> (first loss, mean of the last 5 losses)."""
    return run_overfit


@pytest.fixture
def smooth_images() -> Callable[[int, int], Tensor]:
    """``smooth_images(batch, size)``: seeded low-frequency images (4x4 noise, upsampled), whose
    masked patches are predictable from their neighbours, unlike white noise."""

    def make(batch: int = 8, size: int = 16) -> Tensor:
        generator = torch.Generator().manual_seed(1)
        coarse = torch.randn(batch, 3, 4, 4, generator=generator)  # [B, 3, 4, 4]
        return F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)

    return make
