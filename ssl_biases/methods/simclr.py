"""SimCLR (Chen et al., arXiv 2002.05709): contrast two views against the other images."""

from __future__ import annotations

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from lightly.utils import dist
from torch import Tensor, nn

from ssl_biases.data.views import ViewRecipe, ViewSpec, lightly_jitter
from ssl_biases.methods.base import DEFAULT_TRAINING, SSLMethod
from ssl_biases.methods.lens import Lens
from ssl_biases.methods.training import Training


class SyncFreeNTXentLoss(NTXentLoss):
    """lightly's NT-Xent (arXiv 2002.05709) without its one host sync per call.

    lightly drops each view's similarity to itself by boolean-mask indexing
    (``logits_00[~diag_mask]``), whose data-dependent size makes the host wait for the GPU, in
    the forward and again in the backward. Filling those entries with ``-inf`` instead gives
    the same cross-entropy (``exp(-inf) = 0``) at a fixed shape. In-batch negatives only (no
    memory bank, which SimCLR does not use).
    """

    def __init__(self, temperature: float = 0.5, gather_distributed: bool = False) -> None:
        super().__init__(temperature=temperature, gather_distributed=gather_distributed)

    def forward(self, out0: Tensor, out1: Tensor) -> Tensor:
        """NT-Xent of two batches of projections ``[n, c]`` (one row per image and view)."""
        batch_size = out0.shape[0]
        out0 = nn.functional.normalize(out0, dim=1)  # [n, c]
        out1 = nn.functional.normalize(out1, dim=1)
        if self.gather_distributed and dist.world_size() > 1:
            out0_all = torch.cat(dist.gather(out0), 0)  # [m, c], m = n * world_size
            out1_all = torch.cat(dist.gather(out1), 0)
            self_pairs = dist.eye_rank(batch_size, device=out0.device)  # [n, m] bool
            offset = dist.rank() * batch_size
        else:
            out0_all, out1_all = out0, out1
            self_pairs = torch.eye(batch_size, device=out0.device, dtype=torch.bool)
            offset = 0
        logits_00 = (out0 @ out0_all.T / self.temperature).masked_fill(self_pairs, -torch.inf)
        logits_01 = out0 @ out1_all.T / self.temperature  # [n, m]
        logits_10 = out1 @ out0_all.T / self.temperature
        logits_11 = (out1 @ out1_all.T / self.temperature).masked_fill(self_pairs, -torch.inf)
        logits = torch.cat(  # [2n, 2m]: the positive of row i sits in column offset + i
            [torch.cat([logits_01, logits_00], 1), torch.cat([logits_10, logits_11], 1)], 0
        )
        labels = torch.arange(batch_size, device=out0.device) + offset
        return self.cross_entropy(logits, labels.repeat(2))


class SimCLR(SSLMethod):
    """SimCLR with lightly's projection head and NT-Xent loss.

    Negatives are gathered across processes (``gather_distributed=True``), so two ranks with
    half the batch see the same negatives as one process with the full batch.

    Args:
        backbone: The backbone to pretrain.
        projection_hidden_dim: Hidden width of the 2-layer projection head.
        projection_dim: Output width of the projection head.
        temperature: NT-Xent temperature.
        min_scale: Smallest random-resized-crop area fraction of a view.
        cj_strength: Colour-jitter strength (0.5 is the usual choice for 32 px images).
        gaussian_blur: Probability of Gaussian blur (off by default at 32 px).
        random_gray_scale: Probability of converting a view to greyscale.
    """

    def __init__(
        self,
        backbone: nn.Module,
        projection_hidden_dim: int = 512,
        projection_dim: int = 128,
        temperature: float = 0.2,
        min_scale: float = 0.08,
        cj_strength: float = 0.5,
        gaussian_blur: float = 0.0,
        random_gray_scale: float = 0.2,
        *,
        lens: Lens | None = None,
        training: Training = DEFAULT_TRAINING,
    ) -> None:
        super().__init__(backbone, lens=lens, training=training)
        self.projection_head = SimCLRProjectionHead(
            input_dim=backbone.num_features,
            hidden_dim=projection_hidden_dim,
            output_dim=projection_dim,
        )
        self.criterion = SyncFreeNTXentLoss(temperature=temperature, gather_distributed=True)

    def view_recipe(self, image_size: int) -> ViewRecipe:
        """Two views from one chain, lightly's ``SimCLRTransform`` with this method's knobs."""
        view = ViewSpec(
            size=image_size,
            scale=(self.hparams.min_scale, 1.0),
            jitter_prob=0.8,
            **lightly_jitter(self.hparams.cj_strength, 0.8, 0.8, 0.8, 0.2),
            grey_prob=self.hparams.random_gray_scale,
            blur_prob=self.hparams.gaussian_blur,
            blur_sigma=(0.1, 2.0),
            count=2,
        )
        return ViewRecipe((view,))

    def ssl_step(self, views: list[Tensor]) -> tuple[Tensor, Tensor]:
        features = self.backbone(torch.cat(views[:2]))  # [2B, D], both views in one pass
        z0, z1 = self.projection_head(features).chunk(2)  # 2 x [B, projection_dim]
        return self.criterion(z0, z1), features[: views[0].shape[0]]
