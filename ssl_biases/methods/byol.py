"""BYOL (Grill et al., arXiv 2006.07733): predict a momentum teacher's view of the other crop."""

from __future__ import annotations

import torch
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
from torch import Tensor, nn

from ssl_biases.data.views import (
    ViewRecipe,
    asymmetric_two_views,
)
from ssl_biases.methods.base import DEFAULT_TRAINING, SSLMethod
from ssl_biases.methods.lens import Lens
from ssl_biases.methods.training import Training


class BYOL(SSLMethod):
    """BYOL with lightly's heads, negative cosine similarity and two asymmetric views.

    The student is ``backbone -> projection_head -> prediction_head``; the teacher is an EMA
    copy of ``backbone -> projection_head`` (updated by the base after every optimiser step,
    momentum following ``cosine_schedule`` from ``momentum_start`` to 1). The loss is the
    paper's symmetrised ``2 - 2 cos(p, z')`` averaged over both directions, so it lies in
    ``[0, 4]`` and is 0 at perfect prediction.

    Args:
        backbone: The backbone to pretrain.
        projection_hidden_dim: Hidden width of the projection MLP (4096 in the paper).
        projection_dim: Output width of the projection and prediction MLPs (256).
        prediction_hidden_dim: Hidden width of the prediction MLP (4096 in the paper).
        momentum_start: Teacher momentum after the first step (0.99 in the paper, -> 1.0).
        min_scale: Smallest random-resized-crop area fraction of a view.
        cj_strength: Colour-jitter strength (0.5 is the usual choice for 32 px images).
        gaussian_blur: Probability of Gaussian blur of the first view (the second view uses
            a tenth of it, as in the paper's 1.0 / 0.1; off by default at 32 px).
        solarization_prob: Probability of solarisation of the second view (0.2 in the paper).
    """

    def __init__(
        self,
        backbone: nn.Module,
        projection_hidden_dim: int = 1024,
        projection_dim: int = 256,
        prediction_hidden_dim: int = 1024,
        momentum_start: float = 0.99,
        min_scale: float = 0.08,
        cj_strength: float = 0.5,
        gaussian_blur: float = 0.0,
        solarization_prob: float = 0.2,
        *,
        lens: Lens | None = None,
        training: Training = DEFAULT_TRAINING,
    ) -> None:
        super().__init__(backbone, lens=lens, training=training)
        if not 0.0 <= momentum_start <= 1.0:
            raise ValueError(f"momentum_start must be in [0, 1], got {momentum_start}")
        self.momentum_start = momentum_start
        self.projection_head = BYOLProjectionHead(
            backbone.num_features, projection_hidden_dim, projection_dim
        )
        self.prediction_head = BYOLPredictionHead(
            projection_dim, prediction_hidden_dim, projection_dim
        )
        self.teacher_backbone = self.make_teacher(self.backbone)
        self.teacher_projection_head = self.make_teacher(self.projection_head)
        self.criterion = NegativeCosineSimilarity()

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [
            (self.backbone, self.teacher_backbone),
            (self.projection_head, self.teacher_projection_head),
        ]

    def view_recipe(self, image_size: int) -> ViewRecipe:
        """Two asymmetric views, lightly's ``BYOLView1Transform`` / ``BYOLView2Transform``."""
        hp = self.hparams
        return asymmetric_two_views(
            image_size, hp.min_scale, hp.cj_strength, hp.gaussian_blur, hp.solarization_prob
        )

    def ssl_step(self, views: list[Tensor]) -> tuple[Tensor, Tensor]:
        batch_size = views[0].shape[0]
        x = torch.cat(views[:2])  # [2B, 3, H, W], both views in one pass
        features = self.backbone(x)  # [2B, D]
        p0, p1 = self.prediction_head(self.projection_head(features)).chunk(2)  # 2 x [B, K]
        with torch.no_grad():
            z0, z1 = self.teacher_projection_head(self.teacher_backbone(x)).chunk(2)  # [B, K]
        # NegativeCosineSimilarity is -cos; the paper's loss is ||p/|p| - z/|z|||^2 = 2 - 2 cos.
        loss = 2.0 + self.criterion(p0, z1) + self.criterion(p1, z0)  # mean of both directions
        return loss, features[:batch_size]
