"""EMP-SSL (Tong et al., arXiv 2304.03977): many fixed-scale crops, total coding rate."""

from __future__ import annotations

import torch
from lightly.loss.emp_ssl_loss import invariance_loss, tcr_loss
from lightly.models.modules.heads import ProjectionHead
from lightly.utils import dist
from torch import Tensor, nn
from torch.nn import functional as F

from ssl_biases.data.views import ViewRecipe, ViewSpec, lightly_jitter
from ssl_biases.methods.base import DEFAULT_TRAINING, SSLMethod
from ssl_biases.methods.gpu import fp32_loss
from ssl_biases.methods.lens import Lens
from ssl_biases.methods.multi_crop import check_crop_size
from ssl_biases.methods.training import Training


@fp32_loss
def emp_ssl_loss(z: Tensor, tcr_eps: float, inv_coef: float) -> Tensor:
    """The EMP-SSL objective (arXiv 2304.03977, eq. 4), to be minimised.

    ``-mean_v R(Z_v) - inv_coef * mean_{v,i} cos(z_vi, mean_v z_vi)`` with the total coding
    rate ``R(Z) = 1/2 logdet(I + d / (B eps) Z^T Z)`` of each view's ``[B, d]`` embeddings.
    lightly's ``tcr_loss`` and ``invariance_loss`` compute ``mean_v R(Z_v)`` and the negative
    cosine; lightly 1.6's ``EMPSSLLoss`` *adds* ``R``, which rewards a collapsed embedding
    (a lower coding rate), so the paper's sign (and the authors' code,
    ``TotalCodingRate.forward = -R``) is restored here. As in the authors' code, ``eps`` is
    not squared.

    Args:
        z: L2-normalised projections ``[V, B, d]`` (views, batch, width).
        tcr_eps: ``eps`` of the coding rate (0.2).
        inv_coef: Weight of the invariance term (200, the authors' ``patch_sim``).
    """
    return -tcr_loss(z, eps=tcr_eps) + inv_coef * invariance_loss(z)


class EMPSSL(SSLMethod):
    """EMP-SSL: ``n_patches`` fixed-scale crops per image, coding rate + invariance.

    Each image gives ``n_patches`` crops of a quarter of its area (``RandomResizedCrop`` with
    scale and ratio fixed at 0.25 and 1, resized to ``crop_size``) with VICReg's colour
    augmentations (lightly's docstring of ``EMPSSLLoss``: a multi-crop of
    ``VICRegViewTransform``). All crops go through the backbone in one pass and through a
    2-layer projector (linear, batch norm, ReLU, linear; the authors' ``hidden``/``z_dim``),
    then are L2-normalised; :func:`emp_ssl_loss` (lightly's terms, the paper's sign) makes the
    loss. The coding rate is a statistic of the batch, so under DDP the projections of every
    process are gathered (``lightly.utils.dist.gather``, autograd-aware) and the loss is the
    global batch's on every rank: two ranks give the loss and gradients of one process.

    The paper evaluates the average embedding of many crops; here, as for every method, the
    probes embed the whole image with the backbone.

    Args:
        backbone: The backbone to pretrain.
        projection_hidden_dim: Hidden width of the projector (4096 in the paper).
        projection_dim: Output width ``d`` of the projector (1024 in the paper).
        n_patches: Crops per image (20 in the authors' CIFAR command).
        tcr_eps: ``eps`` of the coding rate (0.2).
        inv_coef: Weight of the invariance term (200).
        crop_scale: Area fraction of each crop (0.25, fixed).
        crop_size: Side of the crops in pixels (``None``: the image size, as the paper; half
            of it keeps a 32 px crop of 16 px at its own resolution, 4x cheaper per crop).
        cj_strength: Colour-jitter strength (0.5: VICReg's 0.4, 0.4, 0.2, 0.1).
        gaussian_blur: Blur probability (off at 32 px).
        solarize_prob: Solarisation probability (0.1, VICReg's).
    """

    def __init__(
        self,
        backbone: nn.Module,
        projection_hidden_dim: int = 1024,
        projection_dim: int = 256,
        n_patches: int = 20,
        tcr_eps: float = 0.2,
        inv_coef: float = 200.0,
        crop_scale: float = 0.25,
        crop_size: int | None = None,
        cj_strength: float = 0.5,
        gaussian_blur: float = 0.0,
        solarize_prob: float = 0.1,
        *,
        lens: Lens | None = None,
        training: Training = DEFAULT_TRAINING,
    ) -> None:
        super().__init__(backbone, lens=lens, training=training)
        if n_patches < 2:
            raise ValueError(
                f"EMP-SSL needs n_patches >= 2 (views to be invariant across), got {n_patches}"
            )
        if not 0.0 < crop_scale <= 1.0 or tcr_eps <= 0:
            raise ValueError(
                f"crop_scale must be in (0, 1] and tcr_eps > 0, got {crop_scale}, {tcr_eps}"
            )
        self.projection_head = ProjectionHead(
            [
                (
                    backbone.num_features,
                    projection_hidden_dim,
                    nn.BatchNorm1d(projection_hidden_dim),
                    nn.ReLU(),
                ),
                (projection_hidden_dim, projection_dim, None, None),
            ]
        )
        image_size = getattr(backbone, "image_size", None)
        if crop_size is not None and image_size is not None and crop_size != image_size:
            check_crop_size(backbone, crop_size, "EMP-SSL", "`crop_size: null` (the image size)")

    def view_recipe(self, image_size: int) -> ViewRecipe:
        """``n_patches`` crops of ``crop_scale`` of the area (square), VICReg's colours."""
        hp = self.hparams
        view = ViewSpec(
            size=hp.crop_size or image_size,
            scale=(hp.crop_scale, hp.crop_scale),
            ratio=(1.0, 1.0),
            jitter_prob=0.8,
            **lightly_jitter(hp.cj_strength, 0.8, 0.8, 0.4, 0.2),
            grey_prob=0.2,
            blur_prob=hp.gaussian_blur,
            blur_sigma=(0.1, 2.0),
            solarize_prob=hp.solarize_prob,
            count=hp.n_patches,
        )
        return ViewRecipe((view,))

    def ssl_step(self, views: list[Tensor]) -> tuple[Tensor, Tensor]:
        batch = views[0].shape[0]
        features = self.backbone(torch.cat(views))  # [V*B, D], every crop in one pass
        z = F.normalize(self.projection_head(features), dim=1)  # [V*B, d]
        z = z.view(len(views), batch, -1)  # [V, B, d]
        if dist.world_size() > 1:  # the coding rate of the global batch
            z = torch.cat(dist.gather(z.contiguous()), dim=1)  # [V, world * B, d]
        loss = emp_ssl_loss(z, self.hparams.tcr_eps, self.hparams.inv_coef)
        return loss, features[:batch]
