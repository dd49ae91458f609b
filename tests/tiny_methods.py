"""Every method at test size (16 px, width 32, depth 1, tiny heads) with a batch of its views."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ssl_biases.backbones import IsotropicNet
from ssl_biases.methods import (
    BYOL,
    DINO,
    EMPSSL,
    IBOT,
    IJEPA,
    MAE,
    BarlowTwins,
    LeJEPA,
    MaskedModeling,
    MoCoV3,
    SimCLR,
    SwAV,
    VICReg,
)
from ssl_biases.methods.base import SSLMethod

SMALL = {"projection_hidden_dim": 32, "projection_dim": 16}
DINO_HEAD = {"hidden_dim": 32, "bottleneck_dim": 16, "output_dim": 64}
BUILDERS: dict[str, tuple[type[SSLMethod], dict[str, Any], tuple[int, ...]]] = {
    # name: (class, arguments, view sizes)
    "simclr": (SimCLR, SMALL, (16, 16)),
    "byol": (BYOL, {**SMALL, "prediction_hidden_dim": 32}, (16, 16)),
    "mocov3": (MoCoV3, SMALL, (16, 16)),
    "vicreg": (VICReg, {**SMALL, "projection_layers": 2}, (16, 16)),
    "barlow_twins": (BarlowTwins, SMALL, (16, 16)),
    "dino": (DINO, {**DINO_HEAD, "n_local_views": 2}, (16, 16, 8, 8)),
    "ibot": (IBOT, DINO_HEAD, (16, 16)),
    "swav": (SwAV, {**SMALL, "n_prototypes": 8}, (16, 16, 8, 8)),
    "lejepa": (LeJEPA, {**SMALL, "sigreg_num_vectors": 64}, (16, 16, 8, 8)),
    "emp_ssl": (EMPSSL, {**SMALL, "n_patches": 3}, (16, 16, 16)),
    "mae": (MAE, {"decoder_dim": 32, "decoder_depth": 1, "decoder_num_heads": 2}, (16,)),
    "masked": (MaskedModeling, {}, (16,)),
    "ijepa": (
        IJEPA,
        {"predictor_dim": 32, "predictor_depth": 1, "predictor_num_heads": 2},
        (16,),
    ),
}
METHODS = tuple(BUILDERS)


def tiny_method(name: str, batch: int = 8, **backbone: Any) -> tuple[SSLMethod, list[Tensor]]:
    """``(method, views)``: the method on a seeded tiny IsotropicNet and seeded views."""
    cls, kwargs, sizes = BUILDERS[name]
    torch.manual_seed(0)
    args = {"image_size": 16, "patch_size": 4, "width": 32, "depth": 1, "num_heads": 2}
    method = cls(IsotropicNet(**{**args, **backbone}), **kwargs)
    method.total_steps = lambda: 100.0  # teacher-temperature schedules need a length
    generator = torch.Generator().manual_seed(1)
    views = [torch.randn(batch, 3, s, s, generator=generator) for s in sizes]  # [B, 3, s, s]
    return method, views
