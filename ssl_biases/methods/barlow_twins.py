"""Barlow Twins (Zbontar et al., arXiv 2103.03230): the cross-correlation of two views -> I."""

from __future__ import annotations

import torch
from lightly.loss import BarlowTwinsLoss
from lightly.models.modules import BarlowTwinsProjectionHead
from lightly.utils import dist
from torch import Tensor, nn

from ssl_biases.data.views import ViewRecipe, asymmetric_two_views
from ssl_biases.methods.base import DEFAULT_TRAINING, SSLMethod
from ssl_biases.methods.lens import Lens
from ssl_biases.methods.training import Training


class BarlowTwins(SSLMethod):
    """Barlow Twins with lightly's projector, loss and BYOL's asymmetric views (as the paper).

    The loss (lightly's ``BarlowTwinsLoss``) standardises each embedding dimension over the
    batch, forms the cross-correlation ``C = z_a^T z_b / N`` and returns
    ``sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2``. The paper (and its code, with a
    synchronised batch norm) standardises over the *global* batch. lightly's
    ``gather_distributed=True`` does not: it standardises on each process and averages the
    per-process ``C``, which differs from the full-batch loss. So the embeddings of every
    process are gathered here (``lightly.utils.dist.gather``, autograd-aware) and the loss
    runs on the global batch, which gives two ranks the loss and gradients of one process.

    Args:
        backbone: The backbone to pretrain.
        projection_hidden_dim: Hidden width of the 3-layer projector (8192 in the paper).
        projection_dim: Output width of the projector (8192 in the paper).
        lambda_param: Weight of the redundancy-reduction (off-diagonal) term (5e-3).
        min_scale: Smallest random-resized-crop area fraction of a view.
        cj_strength: Colour-jitter strength (0.5 is the usual choice for 32 px images).
        gaussian_blur: Probability of Gaussian blur of the first view (the second view uses
            a tenth of it, as the paper's 1.0 / 0.1; off by default at 32 px).
        solarization_prob: Probability of solarisation of the second view (0.2).
    """

    def __init__(
        self,
        backbone: nn.Module,
        projection_hidden_dim: int = 2048,
        projection_dim: int = 2048,
        lambda_param: float = 5e-3,
        min_scale: float = 0.08,
        cj_strength: float = 0.5,
        gaussian_blur: float = 0.0,
        solarization_prob: float = 0.2,
        *,
        lens: Lens | None = None,
        training: Training = DEFAULT_TRAINING,
    ) -> None:
        super().__init__(backbone, lens=lens, training=training)
        self.projection_head = BarlowTwinsProjectionHead(
            input_dim=backbone.num_features,
            hidden_dim=projection_hidden_dim,
            output_dim=projection_dim,
        )
        self.criterion = BarlowTwinsLoss(lambda_param=lambda_param, gather_distributed=False)

    def view_recipe(self, image_size: int) -> ViewRecipe:
        """BYOL's two asymmetric views, as Barlow Twins uses (lightly's ``BYOLView1Transform`` /
        ``BYOLView2Transform``)."""
        hp = self.hparams
        return asymmetric_two_views(
            image_size, hp.min_scale, hp.cj_strength, hp.gaussian_blur, hp.solarization_prob
        )

    def ssl_step(self, views: list[Tensor]) -> tuple[Tensor, Tensor]:
        features = self.backbone(torch.cat(views[:2]))  # [2B, D], both views in one pass
        z0, z1 = self.projection_head(features).chunk(2)  # 2 x [B, projection_dim]
        if dist.world_size() > 1:  # the global batch: standardised over all processes
            z0 = torch.cat(dist.gather(z0.contiguous()))  # [world * B, projection_dim]
            z1 = torch.cat(dist.gather(z1.contiguous()))  # [world * B, projection_dim]
        return self.criterion(z0, z1), features[: views[0].shape[0]]
