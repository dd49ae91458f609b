"""Any timm model as a backbone (randomly initialised; no downloads)."""

from __future__ import annotations

import inspect

import timm
import torch
from torch import nn


class TimmBackbone(nn.Module):
    """``timm.create_model(model_name, pretrained=False, num_classes=0)`` behind our contract.

    ``img_size=image_size`` is passed when the model takes it (ViTs, Mixers); for CNNs the
    size is only recorded. ``forward_intermediates`` uses timm's own method where the model
    has one (ViT-like models: tokens ``[B, T, D]`` including prefix tokens, one per block;
    CNNs: maps ``[B, C, h, w]`` at timm's feature points, e.g. one per ResNet stage) and
    falls back to ``[forward_features(x)]``. Attention maps are not exposed (``has_attention``
    is False); use :class:`~ssl_biases.backbones.IsotropicNet` for attention analysis.

    Args:
        model_name: a timm model name, e.g. ``resnet18`` or ``vit_tiny_patch16_224``.
        image_size: the run's input size.
        in_chans: input channels.
    """

    has_attention: bool = False
    supports_token_dropping: bool = False

    def __init__(self, model_name: str, image_size: int = 224, in_chans: int = 3) -> None:
        super().__init__()
        if not timm.is_model(model_name):
            close = timm.list_models(f"*{model_name}*")[:10]
            raise ValueError(f"unknown timm model {model_name!r}; similar names: {close}")
        try:
            self.model = timm.create_model(
                model_name, pretrained=False, num_classes=0, in_chans=in_chans, img_size=image_size
            )
        except TypeError as err:
            if "img_size" not in str(err):
                raise
            self.model = timm.create_model(
                model_name, pretrained=False, num_classes=0, in_chans=in_chans
            )
        self.model_name = model_name
        self.image_size = image_size
        self.num_features = int(self.model.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``[B, C, H, W]`` -> pooled embedding ``[B, num_features]``."""
        return self.model(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """timm's unpooled features: tokens ``[B, T, D]`` or maps ``[B, C, h, w]``."""
        return self.model.forward_features(x)

    def forward_intermediates(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per-block (or per-stage, for CNNs) outputs, as timm defines them."""
        method = getattr(self.model, "forward_intermediates", None)
        if method is None:
            return [self.forward_features(x)]
        params = inspect.signature(method).parameters
        if "return_prefix_tokens" in params:
            outs = method(x, intermediates_only=True, output_fmt="NLC", return_prefix_tokens=True)
            return [
                torch.cat([prefix, tokens], dim=1) if prefix is not None else tokens
                for tokens, prefix in outs
            ]
        return list(method(x, intermediates_only=True))

    def attention_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Always raises: attention maps are exposed only by ``IsotropicNet``."""
        raise ValueError(
            f"this backbone (timm {self.model_name!r}) has no attention maps exposed; "
            "use an IsotropicNet preset (e.g. 'vit_tiny') for attention analysis"
        )
