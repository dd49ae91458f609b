"""VICReg (Bardes, Ponce & LeCun, arXiv 2105.04906): variance-invariance-covariance."""

from __future__ import annotations

import torch
from lightly.loss import VICRegLoss
from lightly.models.modules.heads import VICRegProjectionHead
from torch import Tensor, nn

from ssl_biases.data.views import ViewRecipe, ViewSpec, lightly_jitter
from ssl_biases.methods.base import DEFAULT_TRAINING, SSLMethod
from ssl_biases.methods.lens import Lens
from ssl_biases.methods.training import Training


class VICReg(SSLMethod):
    """VICReg with lightly's expander (``VICRegProjectionHead``), loss and views.

    The loss (lightly's ``VICRegLoss``, as the authors' code) is
    ``lambda * mse(z, z') + mu * (v(z) + v(z')) / 2 + nu * (c(z) + c(z'))`` with the hinge
    ``v`` on each dimension's standard deviation and ``c`` the squared off-diagonal
    covariances divided by the width. The variance and covariance terms are computed over
    the global batch: lightly gathers the embeddings of every process
    (``gather_distributed=True``, autograd-aware), so two ranks with half the batch give the
    loss and gradients of one process with the full batch.

    Args:
        backbone: The backbone to pretrain.
        projection_hidden_dim: Hidden width of the expander (8192 in the paper).
        projection_dim: Output width of the expander (8192 in the paper).
        projection_layers: Linear layers of the expander (3).
        lambda_param: Weight of the invariance term (25).
        mu_param: Weight of the variance term (25).
        nu_param: Weight of the covariance term (1).
        eps: Added to the variance before the square root (1e-4).
        min_scale: Smallest random-resized-crop area fraction of a view.
        cj_strength: Colour-jitter strength (0.5 is the usual choice for 32 px images).
        gaussian_blur: Probability of Gaussian blur (off by default at 32 px).
        solarize_prob: Probability of solarisation (0.1 in the paper).
        random_gray_scale: Probability of converting a view to greyscale.
    """

    def __init__(
        self,
        backbone: nn.Module,
        projection_hidden_dim: int = 2048,
        projection_dim: int = 2048,
        projection_layers: int = 3,
        lambda_param: float = 25.0,
        mu_param: float = 25.0,
        nu_param: float = 1.0,
        eps: float = 1e-4,
        min_scale: float = 0.08,
        cj_strength: float = 0.5,
        gaussian_blur: float = 0.0,
        solarize_prob: float = 0.1,
        random_gray_scale: float = 0.2,
        *,
        lens: Lens | None = None,
        training: Training = DEFAULT_TRAINING,
    ) -> None:
        super().__init__(backbone, lens=lens, training=training)
        if projection_layers < 2:
            raise ValueError(f"projection_layers must be >= 2, got {projection_layers}")
        self.projection_head = VICRegProjectionHead(
            input_dim=backbone.num_features,
            hidden_dim=projection_hidden_dim,
            output_dim=projection_dim,
            num_layers=projection_layers,
        )
        self.criterion = VICRegLoss(
            lambda_param=lambda_param,
            mu_param=mu_param,
            nu_param=nu_param,
            eps=eps,
            gather_distributed=True,
        )

    def view_recipe(self, image_size: int) -> ViewRecipe:
        """Two views of lightly's ``VICRegTransform`` (jitter 0.8, 0.8, 0.4, 0.2 times
        ``cj_strength``, p 0.8; greyscale; solarisation; blur). lightly solarises before it
        blurs; the recipe blurs first (the order of every recipe), which differs only when
        both ``gaussian_blur`` and ``solarize_prob`` are on (blur is off at 32 px)."""
        hp = self.hparams
        view = ViewSpec(
            size=image_size,
            scale=(hp.min_scale, 1.0),
            jitter_prob=0.8,
            **lightly_jitter(hp.cj_strength, 0.8, 0.8, 0.4, 0.2),
            grey_prob=hp.random_gray_scale,
            blur_prob=hp.gaussian_blur,
            blur_sigma=(0.1, 2.0),
            solarize_prob=hp.solarize_prob,
            count=2,
        )
        return ViewRecipe((view,))

    def ssl_step(self, views: list[Tensor]) -> tuple[Tensor, Tensor]:
        features = self.backbone(torch.cat(views[:2]))  # [2B, D], both views in one pass
        z0, z1 = self.projection_head(features).chunk(2)  # 2 x [B, projection_dim]
        return self.criterion(z0, z1), features[: views[0].shape[0]]
