"""LeJEPA (Balestriero & LeCun, arXiv 2511.08544): view invariance + SIGReg, no teacher."""

from __future__ import annotations

import torch
from lightly.loss import LeJEPALoss
from lightly.models.modules import LeJEPAProjectionHead
from torch import Tensor, nn

from ssl_biases.data.views import ViewRecipe, ViewSpec, lightly_jitter
from ssl_biases.methods import multi_crop
from ssl_biases.methods.base import DEFAULT_TRAINING, SSLMethod
from ssl_biases.methods.lens import Lens
from ssl_biases.methods.training import Training


class LeJEPA(SSLMethod):
    """LeJEPA with lightly's projector (``LeJEPAProjectionHead``) and loss (``LeJEPALoss``).

    Every view (2 global crops, ``n_local_views`` local crops) goes through the backbone and
    one projector; the loss is ``lambda * SIGReg(all) + (1 - lambda) * mean ||z_v - c||^2``
    with ``c`` the mean of the global views' projections (no teacher, no stop-gradient).
    SIGReg (Sketched Isotropic Gaussian Regularisation) projects the embeddings on
    ``sigreg_num_vectors`` random unit directions and compares each 1-D empirical
    characteristic function with the standard Gaussian's (an Epps-Pulley statistic on a
    ``sigreg_knots``-point grid over ``[-sigreg_t_max, sigreg_t_max]``). The directions are
    drawn from torch's global generator at every step (restored on resume, so a resumed run
    draws the same ones). Under DDP, lightly's ``gather_distributed=True`` broadcasts rank 0's
    directions and all-reduces the characteristic-function sums and the sample count
    (autograd-aware), so SIGReg is the global batch's on every rank; the invariance term is a
    per-sample mean, which DDP's gradient averaging makes the global mean.

    Local crops are a separate forward pass at ``local_crop_size`` (default half the image, a
    patch multiple). lightly's loss needs at least one local view; a backbone that takes only
    its own image size (``token_mixer: mlp``) fails at construction with a ``ValueError`` that
    says to set ``local_crop_size`` to the image size.

    Args:
        backbone: The backbone to pretrain.
        projection_hidden_dim: Hidden width of the projector MLP (2048 in the reference code).
        projection_dim: Output width of the projector (lightly's default 64).
        projection_layers: Linear layers of the projector (3).
        lambda_param: Weight of SIGReg in ``[0, 1]`` (0.05, the reference code's).
        sigreg_num_vectors: Random directions per step (1024).
        sigreg_knots: Points of the frequency grid (17).
        sigreg_t_max: Largest frequency of the grid (3).
        n_local_views: Number of small local crops (at least 1).
        local_crop_size: Side of the local crops in pixels (``None``: half the image size).
        global_crop_scale: Area range of the global crops (lightly's example: 0.3-1).
        local_crop_scale: Area range of the local crops (0.05-0.3).
        cj_strength: Colour-jitter strength (0.5 is the usual choice for 32 px images).
        gaussian_blur: Blur probabilities of (global 1, global 2, local) crops.
        solarization_prob: Solarisation probability of the second global crop.
    """

    def __init__(
        self,
        backbone: nn.Module,
        projection_hidden_dim: int = 2048,
        projection_dim: int = 64,
        projection_layers: int = 3,
        lambda_param: float = 0.05,
        sigreg_num_vectors: int = 1024,
        sigreg_knots: int = 17,
        sigreg_t_max: float = 3.0,
        n_local_views: int = 2,
        local_crop_size: int | None = None,
        global_crop_scale: tuple[float, float] = (0.3, 1.0),
        local_crop_scale: tuple[float, float] = (0.05, 0.3),
        cj_strength: float = 0.5,
        gaussian_blur: tuple[float, float, float] = (0.0, 0.0, 0.0),
        solarization_prob: float = 0.2,
        *,
        lens: Lens | None = None,
        training: Training = DEFAULT_TRAINING,
    ) -> None:
        super().__init__(backbone, lens=lens, training=training)
        if n_local_views < 1:
            raise ValueError(
                f"LeJEPA needs n_local_views >= 1 (lightly's LeJEPALoss), got {n_local_views}; "
                "for a backbone of one input size set `local_crop_size` to the image size"
            )
        self.projection_head = LeJEPAProjectionHead(
            input_dim=backbone.num_features,
            hidden_dim=projection_hidden_dim,
            output_dim=projection_dim,
            num_layers=projection_layers,
        )
        self.criterion = LeJEPALoss(
            lambda_param=lambda_param,
            gather_distributed=True,
            sigreg_knots=sigreg_knots,
            sigreg_t_max=sigreg_t_max,
            sigreg_num_vectors=sigreg_num_vectors,
        )
        image_size = getattr(backbone, "image_size", None)
        if image_size is not None:
            size = multi_crop.local_crop_size(backbone, image_size, local_crop_size)
            remedy = f"`local_crop_size: {image_size}` (local crops at the image size)"
            multi_crop.check_crop_size(backbone, size, "LeJEPA", remedy)

    def view_recipe(self, image_size: int) -> ViewRecipe:
        """2 global + ``n_local_views`` local crops, lightly's ``DINOTransform`` (as lightly's
        LeJEPA example) with this method's scales, jitter strength, blur and solarisation."""
        hp = self.hparams
        blur = tuple(hp.gaussian_blur)

        def crop(size: int, scale: tuple, **kwargs: float) -> ViewSpec:
            return ViewSpec(
                size=size,
                scale=tuple(scale),
                interpolation="bicubic",
                jitter_prob=0.8,
                **lightly_jitter(hp.cj_strength, 0.8, 0.8, 0.4, 0.2),
                grey_prob=0.2,
                blur_sigma=(0.1, 2.0),
                **kwargs,
            )

        local = multi_crop.local_crop_size(self.backbone, image_size, hp.local_crop_size)
        return ViewRecipe(
            (
                crop(image_size, hp.global_crop_scale, blur_prob=blur[0]),
                crop(
                    image_size,
                    hp.global_crop_scale,
                    blur_prob=blur[1],
                    solarize_prob=hp.solarization_prob,
                ),
                crop(local, hp.local_crop_scale, blur_prob=blur[2], count=hp.n_local_views),
            )
        )

    def ssl_step(self, views: list[Tensor]) -> tuple[Tensor, Tensor]:
        batch = views[0].shape[0]
        features = self.backbone(torch.cat(views[:2]))  # [2B, D]
        local = self.backbone(torch.cat(views[2:]))  # [nB, D], one pass at the smaller size
        proj = self.projection_head(torch.cat([features, local]))  # [(2+n)B, P], one BN batch
        proj = proj.view(len(views), batch, -1)  # [V, B, P], views in recipe order
        loss = self.criterion(local_proj=proj[2:], global_proj=proj[:2])
        return loss, features[:batch]
