"""iBOT (Zhou et al., arXiv 2111.07832): DINO's image-level self-distillation plus masked
image modelling with an online tokenizer, i.e. self-distillation of masked patch tokens."""

from __future__ import annotations

import torch
from lightly.loss import IBOTPatchLoss
from lightly.models.modules import DINOProjectionHead
from lightly.models.utils import random_block_mask
from timm.layers import trunc_normal_
from torch import Tensor, nn

from ssl_biases.methods.base import DEFAULT_TRAINING
from ssl_biases.methods.dino import DINO
from ssl_biases.methods.lens import Lens
from ssl_biases.methods.masked import embed_with_mask_token
from ssl_biases.methods.reconstruction import PATCH_API, patchify_count
from ssl_biases.methods.training import Training
from ssl_biases.metric_names import TRAIN_IMAGE_LOSS, TRAIN_PATCH_LOSS, TRAIN_TEACHER_TEMP


class IBOT(DINO):
    """iBOT on any isotropic backbone: :class:`~ssl_biases.methods.DINO` plus a patch loss.

    Both global crops are block-masked for the student (lightly's ``random_block_mask``, the
    DINOv2 version of iBOT's masking: ``masked_fraction`` of the images get blocks covering a
    ``mask_ratio`` fraction of their patches, the rest stay whole; iBOT's ViT-S recipe
    ``pred_ratio 0 0.3 +- 0.2``): masked patches' pixels are zeroed before the stem and their
    embeddings replaced by a learned mask token (as :class:`~ssl_biases.methods.MaskedModeling`),
    so every token mixer works. The teacher sees the unmasked global crops. Losses:

    - image level: DINO's loss (lightly's ``DINOLoss``) between the teacher's pooled (class
      token or ``gap``/``map``) embedding of each global crop and the student's embedding of
      every other crop (masked globals, unmasked locals);
    - patch level: lightly's ``IBOTPatchLoss``, the cross-entropy between the teacher's and
      the student's head outputs at each masked patch of the same crop, averaged per image
      and then over the images (unmasked images add 0). Its centre is an EMA of the
      teacher's masked-patch outputs (DINOv2's choice; iBOT's code centres all patches);
      under DDP lightly averages the per-rank means, which is the full-batch mean when the
      ranks mask equally many patches.

    ``loss = dino_loss + patch_loss_weight * patch_loss``. The head is shared between the
    class and the patch tokens by default (``shared_head``, iBOT's ViT-S setting); otherwise
    a second DINO head (and its EMA teacher) projects the patch tokens. Both teacher
    temperatures follow DINO's warm-up. Local crops (``n_local_views``, unmasked, image
    loss only) need a backbone that takes other image sizes (not ``token_mixer='mlp'``), so
    the default is 0.

    Args:
        backbone: An isotropic patch backbone (IsotropicNet, any ``token_mixer``).
        mask_ratio: Range of the fraction of the patches masked in a masked image.
        masked_fraction: Fraction of the global crops that are masked (0.5).
        min_block_patches: Fewest patches of one masked block (4; 16 on iBOT's 14x14 grid).
        patch_loss_weight: Weight of the patch loss (1.0).
        shared_head: One head for the class and patch tokens.
        n_local_views: Number of local crops (see above).
    """

    def __init__(
        self,
        backbone: nn.Module,
        mask_ratio: tuple[float, float] = (0.1, 0.5),
        masked_fraction: float = 0.5,
        min_block_patches: int = 4,
        patch_loss_weight: float = 1.0,
        shared_head: bool = True,
        n_local_views: int = 0,
        *,
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
        local_crop_size: int | None = None,
        global_crop_scale: tuple[float, float] = (0.4, 1.0),
        local_crop_scale: tuple[float, float] = (0.05, 0.4),
        cj_strength: float = 0.5,
        gaussian_blur: tuple[float, float, float] = (0.0, 0.0, 0.0),
        solarization_prob: float = 0.2,
        lens: Lens | None = None,
        training: Training = DEFAULT_TRAINING,
    ) -> None:
        missing = [name for name in PATCH_API if not hasattr(backbone, name)]
        if missing:
            raise ValueError(
                f"iBOT masks patch tokens, so it needs an isotropic patch backbone "
                f"(ssl_biases.backbones.IsotropicNet, any token_mixer: vit_tiny, localvit_tiny, "
                f"mixer_tiny, convmixer_tiny, poolformer_tiny, ...); {type(backbone).__name__} "
                f"lacks {missing}. Use dino (the same image-level loss) with this backbone."
            )
        if not 0.0 <= mask_ratio[0] <= mask_ratio[1] < 1.0:
            raise ValueError(f"mask_ratio must satisfy 0 <= low <= high < 1, got {mask_ratio}")
        if not 0.0 < masked_fraction <= 1.0:
            raise ValueError(f"masked_fraction must be in (0, 1], got {masked_fraction}")
        super().__init__(**DINO.arguments_of(locals()))
        hp = self.hparams
        self.num_prefix_tokens: int = backbone.num_prefix_tokens
        self.patch_size: int = backbone.patch_size
        width = getattr(backbone, "width", backbone.num_features)  # token width after the stem
        self.mask_token = nn.Parameter(trunc_normal_(torch.zeros(1, 1, width), std=0.02))
        self.patch_head: DINOProjectionHead | None = None
        self.teacher_patch_head: nn.Module | None = None
        if not shared_head:
            head_args = (backbone.num_features, hp.hidden_dim, hp.bottleneck_dim,
                         hp.output_dim, hp.batch_norm)  # fmt: skip
            self.patch_head = DINOProjectionHead(
                *head_args,
                freeze_last_layer=hp.freeze_last_layer,
                norm_last_layer=hp.norm_last_layer,
            )
            self.teacher_patch_head = self.make_teacher(
                self.patch_head, fresh=DINOProjectionHead(*head_args)
            )
        self.patch_criterion = IBOTPatchLoss(
            output_dim=hp.output_dim,
            teacher_temp=hp.teacher_temp,
            student_temp=hp.student_temp,
            center_momentum=hp.center_momentum,
        )

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        pairs = super().momentum_pairs()
        if self.patch_head is not None:
            pairs.append((self.patch_head, self.teacher_patch_head))
        return pairs

    # --------------------------------------------------------------------------- training
    def mask(self, images: Tensor) -> Tensor:
        """Block masks ``[B, h, w]`` (True = masked) for ``images`` ``[B, C, H, W]``.

        Drawn on the CPU (python's global RNG, as lightly's ``random_block_mask``), then
        moved to the images' device. At least one patch of the batch is masked, so the patch
        loss and its centre update always have an input (on every rank).
        """
        side = patchify_count(images, self.patch_size) ** 0.5
        grid = (round(side), round(side))
        hp = self.hparams
        mask = random_block_mask(
            (images.shape[0], *grid),
            batch_mask_ratio=hp.masked_fraction,
            min_image_mask_ratio=hp.mask_ratio[0],
            max_image_mask_ratio=hp.mask_ratio[1],
            min_num_masks_per_block=hp.min_block_patches,
            max_num_masks_per_block=grid[0] * grid[1],  # no cap (lightly's None fails on
            device="cpu",  # images whose mask is smaller than min_block_patches)
        )  # [B, h, w]
        if not mask.any():
            mask[0, grid[0] // 2, grid[1] // 2] = True
        return mask.to(images.device, non_blocking=True)

    def ssl_step(self, views: list[Tensor]) -> tuple[Tensor, Tensor]:
        batch_size, prefix = views[0].shape[0], self.num_prefix_tokens
        global_views = torch.cat(views[:2])  # [2B, C, H, W]
        mask = self.mask(global_views)  # [2B, h, w]
        masked = mask.flatten(1)  # [2B, N]
        patch_head = self.projection_head if self.patch_head is None else self.patch_head
        teacher_patch_head = (
            self.teacher_projection_head
            if self.teacher_patch_head is None
            else self.teacher_patch_head
        )
        with torch.no_grad():
            teacher_tokens = self.teacher_backbone.forward_features(global_views)  # [2B, P+N, D]
            teacher_out = self.teacher_projection_head(
                self.teacher_backbone.pool_tokens(teacher_tokens)
            )  # [2B, K]
            teacher_patch = teacher_patch_head(teacher_tokens[:, prefix:][masked])  # [S, K]
        tokens = embed_with_mask_token(self.backbone, global_views, masked, self.mask_token)
        encoded = self.backbone.forward_tokens(tokens)  # [2B, P+N, D]
        features = self.backbone.pool_tokens(encoded)  # [2B, D]
        student_out = [self.projection_head(features)]  # [2B, K]
        student_patch = patch_head(encoded[:, prefix:][masked])  # [S, K]
        if len(views) > 2:
            local_views = torch.cat(views[2:])  # [nB, C, h, w], unmasked, image loss only
            student_out.append(self.projection_head(self.backbone(local_views)))  # [nB, K]
        temp = self.teacher_temperature(self.global_step)
        image_loss = self.criterion(
            teacher_out=list(teacher_out.chunk(2)),  # 2 x [B, K]
            student_out=list(torch.cat(student_out).split(batch_size)),  # (2+n) x [B, K]
            teacher_temp=temp,
        )
        patch_loss = self.patch_criterion(teacher_patch, student_patch, mask, teacher_temp=temp)
        if self._trainer is not None:
            self.log(TRAIN_TEACHER_TEMP, temp)
            self.log(TRAIN_IMAGE_LOSS, image_loss, batch_size=batch_size)
            self.log(TRAIN_PATCH_LOSS, patch_loss, batch_size=batch_size)
        return image_loss + self.hparams.patch_loss_weight * patch_loss, features[:batch_size]

    def on_after_backward(self) -> None:
        super().on_after_backward()
        if self.patch_head is not None:
            self.patch_head.cancel_last_layer_gradients(current_epoch=self.current_epoch)
