"""SwAV (Caron et al., arXiv 2006.09882): swapped prediction of online cluster assignments."""

from __future__ import annotations

import math

import torch
from lightly.loss import SwaVLoss
from lightly.models.modules import SwaVProjectionHead, SwaVPrototypes
from lightly.utils import dist
from torch import Tensor, nn
from torch.nn import functional as F

from ssl_biases.data.views import ViewRecipe, ViewSpec, lightly_jitter
from ssl_biases.methods import multi_crop
from ssl_biases.methods.base import DEFAULT_TRAINING, SSLMethod
from ssl_biases.methods.lens import Lens
from ssl_biases.methods.training import Training

GLOBAL_VIEWS = 2  # the crops whose codes are computed (SwAV's crops_for_assign)


class SwAV(SSLMethod):
    """SwAV with lightly's projection head, prototypes, loss (Sinkhorn) and multi-crop views.

    Each crop's L2-normalised projection is scored against ``n_prototypes`` unit-norm
    prototypes (lightly's ``SwaVPrototypes``, re-normalised before every step); the codes of
    each global crop come from lightly's Sinkhorn-Knopp (``sinkhorn_iterations`` steps at
    ``sinkhorn_epsilon``) and every other crop predicts them (cross-entropy at
    ``temperature``). The Sinkhorn normalisations run over the global batch: lightly's
    ``sinkhorn_gather_distributed=True`` all-reduces its sums, so two ranks with half the batch
    get the codes of one process with the whole batch.

    Prototype freezing and the queue follow the paper's code (lightly's examples do the same
    things in epochs): the prototypes get no gradient (``grad = None`` after the backward, as
    the original; DDP-safe, unlike toggling ``requires_grad``) during the first
    ``freeze_prototypes_fraction`` of the run; with ``queue_length > 0`` the projections of the
    global crops of past batches are kept in a FIFO of ``queue_length`` rows from
    ``queue_start_fraction`` of the run on, and once it is full they join the Sinkhorn problem
    (their codes are dropped). Under DDP every process pushes the gathered global batch, so the
    queue is the same on every rank (DDP's buffer broadcast leaves it unchanged), and each
    process adds its own ``1 / world`` share to Sinkhorn: the union is the one queue of a single
    process. The queue is a persistent buffer, so a checkpoint holds it and a resumed run
    continues exactly. Fractions follow the time budget's progress when
    ``max_time`` alone bounds the run; with no bound at all, freezing is off and the queue on.

    Local crops are a separate forward pass at ``local_crop_size`` (default half the image, a
    patch multiple); a backbone that takes only its own image size (``token_mixer: mlp``)
    fails at construction with a ``ValueError`` that says to set ``n_local_views: 0``.

    Args:
        backbone: The backbone to pretrain.
        projection_hidden_dim: Hidden width of the projection head (2048 in the paper; 512
            in lightly's CIFAR-10 benchmark).
        projection_dim: Output width of the projection head (128).
        n_prototypes: Number of prototypes K (3000 for ImageNet; 512 as lightly's CIFAR-10).
        temperature: Temperature of the swapped-prediction cross-entropy (0.1).
        sinkhorn_iterations: Sinkhorn-Knopp iterations (3).
        sinkhorn_epsilon: Entropic regularisation of Sinkhorn (0.05).
        freeze_prototypes_fraction: Fraction of the run without prototype updates.
        queue_length: Projections of past global crops kept per global crop, over all
            processes: at least the global batch, a multiple of the number of processes (0: no
            queue; the paper uses 3840 for batches of 256).
        queue_start_fraction: Fraction of the run after which the queue fills.
        n_local_views: Number of small local crops (the paper uses 6; 0 for backbones that
            need the full image size).
        local_crop_size: Side of the local crops in pixels (``None``: half the image size).
        global_crop_scale: Area range of the global crops (0.14-1, lightly's SwaVTransform).
        local_crop_scale: Area range of the local crops (0.05-0.14).
        cj_strength: Colour-jitter strength (0.5 is the usual choice for 32 px images).
        gaussian_blur: Blur probability of every crop (0.5 in the paper; off at 32 px).
    """

    def __init__(
        self,
        backbone: nn.Module,
        projection_hidden_dim: int = 512,
        projection_dim: int = 128,
        n_prototypes: int = 512,
        temperature: float = 0.1,
        sinkhorn_iterations: int = 3,
        sinkhorn_epsilon: float = 0.05,
        freeze_prototypes_fraction: float = 0.01,
        queue_length: int = 0,
        queue_start_fraction: float = 0.15,
        n_local_views: int = 2,
        local_crop_size: int | None = None,
        global_crop_scale: tuple[float, float] = (0.14, 1.0),
        local_crop_scale: tuple[float, float] = (0.05, 0.14),
        cj_strength: float = 0.5,
        gaussian_blur: float = 0.0,
        *,
        lens: Lens | None = None,
        training: Training = DEFAULT_TRAINING,
    ) -> None:
        super().__init__(backbone, lens=lens, training=training)
        if n_local_views < 0 or queue_length < 0:
            raise ValueError(
                f"n_local_views and queue_length must be >= 0, got {n_local_views}, {queue_length}"
            )
        for name in ("freeze_prototypes_fraction", "queue_start_fraction"):
            if not 0.0 <= self.hparams[name] <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {self.hparams[name]}")
        self.projection_head = SwaVProjectionHead(
            input_dim=backbone.num_features,
            hidden_dim=projection_hidden_dim,
            output_dim=projection_dim,
        )
        self.prototypes = SwaVPrototypes(input_dim=projection_dim, n_prototypes=n_prototypes)
        self.criterion = SwaVLoss(
            temperature=temperature,
            sinkhorn_iterations=sinkhorn_iterations,
            sinkhorn_epsilon=sinkhorn_epsilon,
            sinkhorn_gather_distributed=True,
        )
        # [global views, queue_length, P]: the newest first, the same on every process.
        # `queue_filled`: rows written so far (saved, as the queue).
        self.register_buffer("queue", torch.zeros(GLOBAL_VIEWS, queue_length, projection_dim))
        self.register_buffer("queue_filled", torch.zeros((), dtype=torch.long))
        image_size = getattr(backbone, "image_size", None)
        if n_local_views > 0 and image_size is not None:
            size = multi_crop.local_crop_size(backbone, image_size, local_crop_size)
            remedy = "`n_local_views: 0` (global crops only)"
            multi_crop.check_crop_size(backbone, size, "SwAV", remedy)

    # ------------------------------------------------------------------------------ views
    def view_recipe(self, image_size: int) -> ViewRecipe:
        """2 global + ``n_local_views`` local crops, lightly's ``SwaVTransform`` (jitter 0.8,
        0.8, 0.8, 0.2 times ``cj_strength`` with p 0.8, greyscale 0.2, flip, blur)."""
        hp = self.hparams

        def crop(size: int, scale: tuple, count: int) -> ViewSpec:
            return ViewSpec(
                size=size,
                scale=tuple(scale),
                jitter_prob=0.8,
                **lightly_jitter(hp.cj_strength, 0.8, 0.8, 0.8, 0.2),
                grey_prob=0.2,
                blur_prob=hp.gaussian_blur,
                blur_sigma=(0.1, 2.0),
                count=count,
            )

        views = [crop(image_size, hp.global_crop_scale, GLOBAL_VIEWS)]
        if hp.n_local_views > 0:
            local = multi_crop.local_crop_size(self.backbone, image_size, hp.local_crop_size)
            views.append(crop(local, hp.local_crop_scale, hp.n_local_views))
        return ViewRecipe(tuple(views))

    # --------------------------------------------------------------------------- training
    def run_progress(self, step: int) -> float:
        """Progress of the run at ``step`` in ``[0, 1]``: the time budget's when ``max_time``
        alone bounds the run, else ``step / total``; 1 with no bound (warm-ups are over)."""
        budget = self.time_budget()
        if budget is not None:
            return budget.progress(step)
        total = self.total_steps()
        return 1.0 if math.isinf(total) else step / total

    @torch.no_grad()
    def queue_logits(self, z_global: Tensor, batch: int) -> list[Tensor] | None:
        """Prototype scores of this process's share of the queue (``None`` until the queue is
        full), then pushes the global batch's ``z_global`` ``[2B, P]`` (detached, gathered from
        every process) into the queue, newest first."""
        length = self.hparams.queue_length
        if length == 0 or self.run_progress(self.global_step) < self.hparams.queue_start_fraction:
            return None
        world = dist.world_size()
        z = z_global.detach().view(GLOBAL_VIEWS, batch, -1)  # [2, B, P]
        if world > 1:
            z = torch.cat(dist.gather(z.contiguous()), dim=1)  # [2, world * B, P]
        new = z.shape[1]
        if length < new or length % world:
            raise ValueError(
                f"SwAV's queue_length ({length}) must be at least the global batch ({new}) and "
                f"a multiple of the {world} processes: change queue_length or set it to 0"
            )
        scores = None
        if int(self.queue_filled) >= length:  # full of real projections: join Sinkhorn
            share = length // world
            mine = self.queue[:, dist.rank() * share : (dist.rank() + 1) * share]  # [2, L/w, P]
            scores = [self.prototypes(q) for q in mine]  # 2 x [L / world, K]
        self.queue[:, new:] = self.queue[:, :-new].clone()  # shift the older ones back
        self.queue[:, :new] = z
        self.queue_filled += new
        return scores

    def ssl_step(self, views: list[Tensor]) -> tuple[Tensor, Tensor]:
        self.prototypes.normalize()  # unit-norm prototypes (lightly: in place, no grad)
        batch = views[0].shape[0]
        features = self.backbone(torch.cat(views[:GLOBAL_VIEWS]))  # [2B, D]
        embedded = [features]
        if len(views) > GLOBAL_VIEWS:  # one pass at the smaller size
            embedded.append(self.backbone(torch.cat(views[GLOBAL_VIEWS:])))  # [nB, D]
        z = F.normalize(self.projection_head(torch.cat(embedded)), dim=1)  # [(2+n)B, P]
        scores = self.prototypes(z).split(batch)  # (2+n) x [B, K]
        loss = self.criterion(
            high_resolution_outputs=list(scores[:GLOBAL_VIEWS]),
            low_resolution_outputs=list(scores[GLOBAL_VIEWS:]),
            queue_outputs=self.queue_logits(z[: GLOBAL_VIEWS * batch], batch),
        )
        return loss.squeeze(0), features[:batch]  # lightly's loss has shape [1]

    def on_after_backward(self) -> None:
        """No prototype update during the first ``freeze_prototypes_fraction`` of the run."""
        if self.run_progress(self.global_step) < self.hparams.freeze_prototypes_fraction:
            for param in self.prototypes.parameters():
                param.grad = None
