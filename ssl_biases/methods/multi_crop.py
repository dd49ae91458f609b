"""Multi-crop (Caron et al., arXiv 2006.09882): the local-crop size and the backbone check.

DINO, iBOT, SwAV and LeJEPA embed small local crops in a separate forward pass at a smaller size. A
backbone sized for one input (``token_mixer='mlp'``, a timm ViT built for one ``img_size``)
cannot; the methods call :func:`check_crop_size` at construction so the run fails at once with
a message that says what to set, not mid-run.
"""

from __future__ import annotations

import torch
from torch import nn


def local_crop_size(backbone: nn.Module, image_size: int, override: int | None) -> int:
    """``override``, or half ``image_size`` rounded down to a multiple of the backbone's patch
    size (16 px at 32 px with patch 4 or 8)."""
    if override is not None:
        return override
    patch = getattr(backbone, "patch_size", 1)
    return max(patch, image_size // 2 // patch * patch)


def check_crop_size(backbone: nn.Module, size: int, method: str, remedy: str) -> None:
    """Raises ``ValueError`` (naming ``remedy``) if ``backbone`` cannot embed ``size`` px crops.

    Args:
        backbone: The method's backbone (its train/eval mode is restored).
        size: Side of the crops in pixels.
        method: The method's name, for the message.
        remedy: What to set instead, e.g. ``"`n_local_views: 0`"``.
    """
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            backbone(torch.zeros(2, 3, size, size))  # [2, D]
    except (ValueError, RuntimeError, AssertionError) as err:
        raise ValueError(
            f"{method}'s local crops are {size} px, which {type(backbone).__name__} cannot embed "
            f"({err}). Set {remedy}, or use a backbone that takes other image sizes "
            "(any IsotropicNet but token_mixer: mlp, a ResNet)."
        ) from err
    finally:
        backbone.train(was_training)
