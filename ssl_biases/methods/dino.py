"""DINO (Caron et al., arXiv 2104.14294): self-distillation, momentum teacher, multi-crop."""

from __future__ import annotations

import math

import torch
from lightly.loss import DINOLoss
from lightly.models.modules import DINOProjectionHead
from torch import Tensor, nn

from ssl_biases.data.views import ViewRecipe, ViewSpec, lightly_jitter
from ssl_biases.methods import multi_crop
from ssl_biases.methods.base import DEFAULT_TRAINING, SSLMethod
from ssl_biases.methods.lens import Lens
from ssl_biases.methods.training import Training
from ssl_biases.metric_names import TRAIN_TEACHER_TEMP


class DINO(SSLMethod):
    """DINO with lightly's projection head, loss (centring + sharpening) and multi-crop views.

    Views are 2 global crops at the run's image size and ``n_local_views`` local crops of
    ``local_crop_size`` (default: half the image size, rounded down to a multiple of the
    backbone's patch size; 16 px at 32 px). The teacher (EMA of backbone + head) sees the
    global crops only; the student sees all crops; each local crop is a separate, smaller
    forward pass, so the backbone must accept the smaller size (isotropic nets interpolate
    their position embedding). A backbone that cannot (``token_mixer='mlp'``, whose weights
    are sized for one patch count) fails at construction with a ``ValueError`` that says to set
    ``n_local_views: 0`` (two global crops only).

    Schedules, all derived from ``global_step`` so that a resumed run continues them exactly:
    the teacher momentum follows ``cosine_schedule`` from ``momentum_start`` to 1 (base
    class); the teacher temperature rises linearly from ``warmup_teacher_temp`` to
    ``teacher_temp`` over the first ``teacher_temp_warmup_fraction`` of the steps (the paper's
    0.04 -> 0.07 over 30 epochs); the centre is lightly's ``DINOLoss`` EMA of the teacher
    outputs (momentum ``center_momentum``), updated inside every loss call. lightly 1.6
    computes the batch centre with ``dist.all_reduce`` (sum, divided by the world size)
    whenever ``torch.distributed`` is initialised, so the centre is the same on every rank.
    The centre is a buffer of ``criterion``, so it is saved in and restored from checkpoints.
    When ``max_time`` alone bounds the run, both schedules follow the progress of the
    :class:`~ssl_biases.run.budget.TimeBudget` (the steps estimated to fit the budget);
    with no bound at all (infinite total steps) the momentum stays at ``momentum_start`` and
    the teacher temperature is ``teacher_temp`` from the start. The last layer of the head
    gets no gradient during the first ``freeze_last_layer`` epochs (lightly's
    ``cancel_last_layer_gradients``).

    Args:
        backbone: The backbone to pretrain.
        hidden_dim: Hidden width of the 3-layer head MLP (2048 in the paper).
        bottleneck_dim: Width before the weight-normalised last layer (256 in the paper).
        output_dim: Number of prototypes K. The paper uses 65,536 for ImageNet; 2048 is a
            small-scale default (as lightly's CIFAR-10 benchmark); use 4096-16384 on GPU.
        batch_norm: Batch norm in the head MLP (off for ViTs, as in the paper).
        norm_last_layer: Keep the last layer's weight-norm scale fixed (more stable).
        freeze_last_layer: Epochs during which the last layer gets no gradient.
        momentum_start: Teacher momentum after the first step (0.996 in the paper, -> 1.0).
        warmup_teacher_temp: Teacher temperature at the first step.
        teacher_temp: Teacher temperature after the warm-up.
        teacher_temp_warmup_fraction: Fraction of the run's steps of the linear warm-up.
        student_temp: Student temperature (0.1).
        center_momentum: Momentum of the centre's EMA (0.9).
        n_local_views: Number of small local crops (the paper uses 6-10; 2 keeps CPU runs
            cheap; 0 for backbones that need the full image size).
        local_crop_size: Side of the local crops in pixels (``None``: half the image size).
        global_crop_scale: Area range of the global crops.
        local_crop_scale: Area range of the local crops.
        cj_strength: Colour-jitter strength (0.5 is the usual choice for 32 px images).
        gaussian_blur: Blur probabilities of (global 1, global 2, local) crops.
        solarization_prob: Solarisation probability of the second global crop.
    """

    def __init__(
        self,
        backbone: nn.Module,
        hidden_dim: int = 1024,
        bottleneck_dim: int = 256,
        output_dim: int = 2048,
        batch_norm: bool = False,
        norm_last_layer: bool = True,
        freeze_last_layer: int = 1,
        momentum_start: float = 0.996,
        warmup_teacher_temp: float = 0.04,
        teacher_temp: float = 0.07,
        teacher_temp_warmup_fraction: float = 0.3,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        n_local_views: int = 2,
        local_crop_size: int | None = None,
        global_crop_scale: tuple[float, float] = (0.4, 1.0),
        local_crop_scale: tuple[float, float] = (0.05, 0.4),
        cj_strength: float = 0.5,
        gaussian_blur: tuple[float, float, float] = (0.0, 0.0, 0.0),
        solarization_prob: float = 0.2,
        *,
        lens: Lens | None = None,
        training: Training = DEFAULT_TRAINING,
    ) -> None:
        super().__init__(backbone, lens=lens, training=training)
        if n_local_views < 0:
            raise ValueError(f"n_local_views must be >= 0, got {n_local_views}")
        if not 0.0 <= teacher_temp_warmup_fraction <= 1.0:
            raise ValueError(
                "teacher_temp_warmup_fraction must be in [0, 1], "
                f"got {teacher_temp_warmup_fraction}"
            )
        self.momentum_start = momentum_start
        head_args = (backbone.num_features, hidden_dim, bottleneck_dim, output_dim, batch_norm)
        self.projection_head = DINOProjectionHead(
            *head_args, freeze_last_layer=freeze_last_layer, norm_last_layer=norm_last_layer
        )
        self.teacher_backbone = self.make_teacher(self.backbone)
        # deepcopy cannot copy torch's old weight_norm: build the head anew, load the student.
        self.teacher_projection_head = self.make_teacher(
            self.projection_head, fresh=DINOProjectionHead(*head_args)
        )
        self.criterion = DINOLoss(
            output_dim=output_dim,
            warmup_teacher_temp=warmup_teacher_temp,
            teacher_temp=teacher_temp,
            student_temp=student_temp,
            center_momentum=center_momentum,
        )
        image_size = getattr(backbone, "image_size", None)
        if n_local_views > 0 and image_size is not None:
            remedy = "`n_local_views: 0` (global crops only) or a `local_crop_size` it accepts"
            multi_crop.check_crop_size(backbone, self.local_size(image_size), "DINO", remedy)

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [
            (self.backbone, self.teacher_backbone),
            (self.projection_head, self.teacher_projection_head),
        ]

    # ------------------------------------------------------------------------------ views
    def local_size(self, image_size: int) -> int:
        """Side of the local crops: ``local_crop_size`` or half the image, a patch multiple."""
        return multi_crop.local_crop_size(self.backbone, image_size, self.hparams.local_crop_size)

    def view_recipe(self, image_size: int) -> ViewRecipe:
        """2 global crops + ``n_local_views`` local crops, lightly's ``DINOTransform``.

        As in lightly's ``DINOTransform``, the second global crop keeps the default colour
        jitter strength 0.5 (lightly passes no ``cj_strength`` to it).
        """
        hp = self.hparams
        blur = tuple(hp.gaussian_blur)

        def crop(size: int, scale: tuple, strength: float, **kwargs: float) -> ViewSpec:
            return ViewSpec(
                size=size,
                scale=tuple(scale),
                interpolation="bicubic",
                jitter_prob=0.8,
                **lightly_jitter(strength, 0.8, 0.8, 0.4, 0.2),
                grey_prob=0.2,
                blur_sigma=(0.1, 2.0),
                **kwargs,
            )

        views = [
            crop(image_size, hp.global_crop_scale, hp.cj_strength, blur_prob=blur[0]),
            crop(
                image_size,
                hp.global_crop_scale,
                0.5,
                blur_prob=blur[1],
                solarize_prob=hp.solarization_prob,
            ),
        ]
        if hp.n_local_views > 0:
            local = self.local_size(image_size)
            views.append(
                crop(
                    local,
                    hp.local_crop_scale,
                    hp.cj_strength,
                    blur_prob=blur[2],
                    count=hp.n_local_views,
                )
            )
        return ViewRecipe(tuple(views))

    # --------------------------------------------------------------------------- training
    def teacher_temperature(self, step: int) -> float:
        """Linear warm-up ``warmup_teacher_temp -> teacher_temp`` over the warm-up steps (over
        the first ``teacher_temp_warmup_fraction`` of the progress of a time budget)."""
        start, end = self.hparams.warmup_teacher_temp, self.hparams.teacher_temp
        budget = self.time_budget()
        if budget is not None:  # max_time alone bounds the run
            warmup = self.hparams.teacher_temp_warmup_fraction
            done = 1.0 if warmup == 0 else min(budget.progress(step) / warmup, 1.0)
            return float(start + (end - start) * done)
        total = self.total_steps()
        if math.isinf(total):  # no bound at all: no known end, so no warm-up
            return float(end)
        warmup = self.hparams.teacher_temp_warmup_fraction * total
        if step >= warmup:
            return float(end)
        return float(start + (end - start) * step / warmup)

    def ssl_step(self, views: list[Tensor]) -> tuple[Tensor, Tensor]:
        batch_size = views[0].shape[0]
        global_views = torch.cat(views[:2])  # [2B, 3, H, W]
        with torch.no_grad():
            teacher_out = self.teacher_projection_head(self.teacher_backbone(global_views))
        features = self.backbone(global_views)  # [2B, D]
        student_out = [self.projection_head(features)]  # [2B, K]
        if len(views) > 2:
            local_views = torch.cat(views[2:])  # [nB, 3, h, w], one pass at the smaller size
            student_out.append(self.projection_head(self.backbone(local_views)))  # [nB, K]
        temp = self.teacher_temperature(self.global_step)
        loss = self.criterion(
            teacher_out=list(teacher_out.chunk(2)),  # 2 x [B, K]
            student_out=list(torch.cat(student_out).split(batch_size)),  # (2+n) x [B, K]
            teacher_temp=temp,
        )
        if self._trainer is not None:
            self.log(TRAIN_TEACHER_TEMP, temp)
        return loss, features[:batch_size]

    def on_after_backward(self) -> None:
        self.projection_head.cancel_last_layer_gradients(current_epoch=self.current_epoch)
