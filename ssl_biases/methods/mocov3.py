"""MoCo v3 (Chen, Xie & He, arXiv 2104.02057): a predictor contrasts against momentum keys."""

from __future__ import annotations

import torch
from lightly.models.modules import MoCoProjectionHead
from lightly.models.utils import deactivate_requires_grad
from lightly.utils import dist
from torch import Tensor, nn
from torch.nn import functional as F

from ssl_biases.backbones.stems import OverlapStem, PatchStem
from ssl_biases.data.views import ViewRecipe, asymmetric_two_views
from ssl_biases.methods.base import DEFAULT_TRAINING, SSLMethod
from ssl_biases.methods.gpu import fp32_loss
from ssl_biases.methods.lens import Lens
from ssl_biases.methods.training import Training


def patch_projection(backbone: nn.Module) -> nn.Module:
    """The linear patch-embedding layer of ``backbone`` (MoCo v3's "patch projection").

    ``IsotropicNet`` with ``stem='patch'`` or ``'overlap'`` (its ``stem``), or a timm ViT
    (``model.patch_embed``).

    Raises:
        ValueError: The backbone has no linear patch stem (a ResNet, ``stem='conv'``).
    """
    stem = getattr(backbone, "stem", None)
    if isinstance(stem, (PatchStem, OverlapStem)):
        return stem
    timm_patch_embed = getattr(getattr(backbone, "model", None), "patch_embed", None)
    if isinstance(timm_patch_embed, nn.Module):
        return timm_patch_embed
    raise ValueError(
        f"freeze_patch_embed fixes a random linear patch projection, and "
        f"{type(backbone).__name__} has none (it needs an IsotropicNet with stem='patch' or "
        "'overlap', or a timm ViT). Set `freeze_patch_embed: false` for this backbone."
    )


class MoCoV3(SSLMethod):
    """MoCo v3 with lightly's MoCo heads and BYOL's asymmetric views.

    The query encoder is ``backbone -> projection_head -> prediction_head``; the key encoder
    is an EMA copy of ``backbone -> projection_head`` (updated by the base after every
    optimiser step, momentum following ``cosine_schedule`` from ``momentum_start`` to 1). Both
    heads are lightly's ``MoCoProjectionHead`` with batch norm in every layer, as in the paper
    (projection: 3 layers, prediction: 2 layers). The loss is the paper's Algorithm 1,
    ``ctr(q1, k2) + ctr(q2, k1)`` with ``ctr(q, k) = 2 tau * CE(q k^T / tau, diagonal)`` on
    l2-normalised vectors: the negatives of a query are the keys of the other images only.
    lightly has no such loss (``NTXentLoss`` without a memory bank also contrasts queries
    with queries and keys with keys, SimCLR's loss), so it is written here; the keys of
    every process are gathered (``lightly.utils.dist.gather``), so two ranks with half the
    batch see the negatives of one process with the full batch.

    ``freeze_patch_embed`` is the paper's "random patch projection" trick: the linear
    patch-embedding layer keeps its random initialisation, which stabilises ViT training.

    Args:
        backbone: The backbone to pretrain.
        projection_hidden_dim: Hidden width of the projection and prediction MLPs (4096).
        projection_dim: Output width of the projection and prediction MLPs (256).
        temperature: Softmax temperature tau (0.2 for ViTs in the paper, 1.0 for ResNets).
        momentum_start: Key-encoder momentum after the first step (0.99 in the paper, -> 1).
        freeze_patch_embed: Keep the backbone's patch projection fixed at its random init.
        min_scale: Smallest random-resized-crop area fraction of a view.
        cj_strength: Colour-jitter strength (0.5 is the usual choice for 32 px images).
        gaussian_blur: Probability of Gaussian blur of the first view (the second view uses
            a tenth of it, as BYOL's 1.0 / 0.1; off by default at 32 px).
        solarization_prob: Probability of solarisation of the second view (0.2).
    """

    def __init__(
        self,
        backbone: nn.Module,
        projection_hidden_dim: int = 1024,
        projection_dim: int = 256,
        temperature: float = 0.2,
        momentum_start: float = 0.99,
        freeze_patch_embed: bool = False,
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
        if temperature <= 0.0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.momentum_start = momentum_start
        if freeze_patch_embed:  # before the teacher copy, so both share the random stem
            deactivate_requires_grad(patch_projection(self.backbone))
        self.projection_head = MoCoProjectionHead(
            backbone.num_features, projection_hidden_dim, projection_dim, 3, batch_norm=True
        )
        self.prediction_head = MoCoProjectionHead(
            projection_dim, projection_hidden_dim, projection_dim, 2, batch_norm=True
        )
        self.teacher_backbone = self.make_teacher(self.backbone)
        self.teacher_projection_head = self.make_teacher(self.projection_head)

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [
            (self.backbone, self.teacher_backbone),
            (self.projection_head, self.teacher_projection_head),
        ]

    def view_recipe(self, image_size: int) -> ViewRecipe:
        """BYOL's two asymmetric views, as MoCo v3 uses (lightly's ``BYOLView1Transform`` /
        ``BYOLView2Transform``)."""
        hp = self.hparams
        return asymmetric_two_views(
            image_size, hp.min_scale, hp.cj_strength, hp.gaussian_blur, hp.solarization_prob
        )

    @fp32_loss
    def contrastive_loss(self, q: Tensor, k: Tensor) -> Tensor:
        """``2 tau * CE(q k_all^T / tau)``: query i's positive is key i, the other keys (of
        every process) are its negatives (the paper's ``ctr``); in fp32 under autocast."""
        q = F.normalize(q, dim=1)  # [B, K]
        k = F.normalize(k, dim=1)  # [B, K]
        if dist.world_size() > 1:
            k = torch.cat(dist.gather(k.contiguous()))  # [world * B, K], no gradient (keys)
        logits = q @ k.T / self.hparams.temperature  # [B, world * B]
        labels = torch.arange(q.shape[0], device=q.device) + dist.rank() * q.shape[0]  # [B]
        return 2.0 * self.hparams.temperature * F.cross_entropy(logits, labels)

    def ssl_step(self, views: list[Tensor]) -> tuple[Tensor, Tensor]:
        batch_size = views[0].shape[0]
        x = torch.cat(views[:2])  # [2B, 3, H, W], both views in one pass
        features = self.backbone(x)  # [2B, D]
        q0, q1 = self.prediction_head(self.projection_head(features)).chunk(2)  # 2 x [B, K]
        with torch.no_grad():
            k0, k1 = self.teacher_projection_head(self.teacher_backbone(x)).chunk(2)  # [B, K]
        loss = self.contrastive_loss(q0, k1) + self.contrastive_loss(q1, k0)
        return loss, features[:batch_size]
