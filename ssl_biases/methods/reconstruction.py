"""`MaskedReconstruction`: what MAE and BERT-style masked modelling share.

Both mask a random fraction of the patches of one lightly-augmented view, predict the masked
patches' pixels and take the mean squared error on the masked patches only (MAE, arXiv
2111.06377; SimMIM, arXiv 2111.09886). A subclass supplies only :meth:`predict_masked`.

Validation also logs ``val/masked_mse``: the same loss on the probe queries (validation
dataloader 1, the unaugmented test images) under fixed masks (:meth:`held_out_mask`), a
held-out reconstruction error that is comparable across validations and runs.
"""

from __future__ import annotations

from typing import Any

import torch
from lightly.models.utils import get_at_index, patchify, random_token_mask, unpatchify
from torch import Tensor, nn
from torch.nn import functional as F

from ssl_biases.data.views import ViewRecipe, ViewSpec
from ssl_biases.methods.base import DEFAULT_TRAINING, SSLMethod
from ssl_biases.methods.gpu import fp32_loss
from ssl_biases.methods.lens import Lens
from ssl_biases.methods.training import Training
from ssl_biases.metric_names import VAL_MASKED_MSE

PATCH_API = ("embed_patches", "forward_tokens", "pool_tokens", "patch_size", "num_prefix_tokens")


class MaskedReconstruction(SSLMethod):
    """Base of the pixel-reconstruction methods: views, masking, targets, loss and preview.

    ``val_mask_seed`` seeds the fixed validation masks (:meth:`held_out_mask`).

    Args:
        backbone: An isotropic patch backbone (``embed_patches``, ``forward_tokens``, ...).
        mask_ratio: Fraction of the patches that are masked, in (0, 1).
        norm_pix_loss: Predict each patch's pixels normalised by that patch's mean and
            variance (MAE's ``norm_pix_loss``) instead of the raw (dataset-normalised) pixels.
        min_scale: Smallest random-resized-crop area fraction of the single view.
    """

    def __init__(
        self,
        backbone: nn.Module,
        mask_ratio: float = 0.75,
        norm_pix_loss: bool = False,
        min_scale: float = 0.2,
        *,
        lens: Lens | None = None,
        training: Training = DEFAULT_TRAINING,
    ) -> None:
        missing = [name for name in PATCH_API if not hasattr(backbone, name)]
        if missing:
            raise ValueError(
                f"{type(self).__name__} reconstructs masked patches, so it needs a patch "
                f"backbone (ssl_biases.backbones.IsotropicNet, any token_mixer); "
                f"{type(backbone).__name__} lacks {missing}. Use a contrastive or "
                "distillation method (simclr, byol, dino) with this backbone."
            )
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
        super().__init__(backbone, lens=lens, training=training)
        self.patch_size: int = backbone.patch_size
        self.pixels_per_patch = self.patch_size**2 * getattr(backbone, "in_chans", 3)

    # ---------------------------------------------------------------------- subclass hook
    def predict_masked(
        self, images: Tensor, idx_keep: Tensor, idx_mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Predicts the pixels of the masked patches.

        Args:
            images: ``[B, C, H, W]`` normalised images.
            idx_keep: ``[B, K]`` indices of the visible patches (row-major).
            idx_mask: ``[B, M]`` indices of the masked patches.

        Returns:
            ``(predictions [B, M, p*p*C], features [B, num_features])``: the predicted
            pixels of the masked patches in ``idx_mask`` order, and the pooled encoding of
            the masked input (the online probe uses :meth:`probe_features` instead).
        """
        raise NotImplementedError

    # ------------------------------------------------------------------------------ views
    def view_recipe(self, image_size: int) -> ViewRecipe:
        """One random-resized crop (bicubic) + flip per image (lightly's ``MAETransform``)."""
        view = ViewSpec(
            size=image_size, scale=(self.hparams.min_scale, 1.0), interpolation="bicubic"
        )
        return ViewRecipe((view,))

    # --------------------------------------------------------------------------- training
    def mask(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Random ``(idx_keep [B, K], idx_mask [B, M])`` over the patch grid, M = N - K.

        lightly's ``random_token_mask``: K = int(N * (1 - mask_ratio)) patches stay visible.
        """
        num_patches = patchify_count(images, self.patch_size)
        return random_token_mask(
            (images.shape[0], num_patches),
            mask_ratio=self.hparams.mask_ratio,
            mask_class_token=True,  # no class token in the index space: every patch may go
            device=images.device,
        )

    def targets(self, images: Tensor, idx_mask: Tensor) -> Tensor:
        """Pixels of the masked patches ``[B, M, p*p*C]``, per-patch normalised if asked."""
        target = get_at_index(patchify(images, self.patch_size), idx_mask)  # [B, M, p*p*C]
        if self.hparams.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)  # [B, M, 1]
            var = target.var(dim=-1, keepdim=True)  # [B, M, 1]
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        return target

    def ssl_step(self, views: list[Tensor]) -> tuple[Tensor, Tensor]:
        images = views[0]  # [B, C, H, W]
        idx_keep, idx_mask = self.mask(images)  # [B, K], [B, M]
        prediction, _ = self.predict_masked(images, idx_keep, idx_mask)  # [B, M, P]
        loss = self.pixel_loss(prediction, self.targets(images, idx_mask))
        return loss, self.probe_features(images)

    @staticmethod
    @fp32_loss
    def pixel_loss(prediction: Tensor, target: Tensor) -> Tensor:
        """MSE of the masked patches' pixels ``[B, M, p*p*C]`` (fp32 under autocast)."""
        return F.mse_loss(prediction, target)

    @torch.no_grad()
    def probe_features(self, images: Tensor) -> Tensor:
        """Backbone embeddings ``[B, num_features]`` of the *unmasked* view, for the online
        probe: one extra no-grad forward pass.

        The probe is tested on unmasked images, so training it on the masked input's encoding
        (what the step computes anyway) would give a train/test mismatch no other method has,
        and ``val/linear_top1`` would not compare across methods. Measured cost on 2 CPU
        threads (width 64, depth 4, 8x8 tokens, batch 64): +13 % of an MAE step, +29 % of a
        masked-modelling step.
        """
        return self.backbone(images)  # [B, D]

    # ------------------------------------------------------------------------- validation
    val_mask_seed: int = 0

    def held_out_mask(self, images: Tensor, batch_idx: int) -> tuple[Tensor, Tensor]:
        """Fixed ``(idx_keep [B, K], idx_mask [B, M])`` for validation batch ``batch_idx``.

        ``random_token_mask``'s rule (argsort of uniform noise, K = int(N * (1 - mask_ratio)))
        with noise from a CPU ``torch.Generator`` seeded with ``val_mask_seed + batch_idx``:
        the same masks at every validation, on any device, and the global RNG untouched.
        """
        num_patches = patchify_count(images, self.patch_size)
        generator = torch.Generator().manual_seed(self.val_mask_seed + batch_idx)
        noise = torch.rand(images.shape[0], num_patches, generator=generator)  # [B, N]
        order = torch.argsort(noise, dim=1).to(images.device)  # [B, N]
        num_keep = int(num_patches * (1 - self.hparams.mask_ratio))
        return order[:, :num_keep], order[:, num_keep:]

    @torch.no_grad()
    def held_out_masked_mse(self, images: Tensor, batch_idx: int) -> Tensor:
        """The training loss (masked-patch MSE, same target normalisation) under the fixed
        masks of :meth:`held_out_mask`."""
        idx_keep, idx_mask = self.held_out_mask(images, batch_idx)  # [B, K], [B, M]
        prediction, _ = self.predict_masked(images, idx_keep, idx_mask)  # [B, M, P]
        return F.mse_loss(prediction.float(), self.targets(images, idx_mask).float())

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict:
        """The base's probe outputs; on the probe queries (dataloader 1) also
        ``val/masked_mse``, averaged over the queries."""
        outputs = super().validation_step(batch, batch_idx, dataloader_idx)
        if dataloader_idx == 1:
            images = batch[0]  # [B, C, H, W]
            self.log(
                VAL_MASKED_MSE,
                self.held_out_masked_mse(images, batch_idx),
                add_dataloader_idx=False,
                batch_size=images.shape[0],
            )
        return outputs

    # ---------------------------------------------------------------------------- preview
    @torch.no_grad()
    def reconstruction_preview(
        self, images: Tensor, seed: int = 0
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(original, masked input, reconstruction)``, each ``[B, C, H, W]``, for logging.

        The mask is drawn from a CPU generator seeded with ``seed`` (the global RNG is left
        untouched), so the same images and seed give the same mask on any device. Masked
        patches are 0 (the dataset mean) in the masked input; the reconstruction shows the
        visible patches as they are and the predicted masked patches (de-normalised with the
        true patch statistics under ``norm_pix_loss``, as in MAE's figures). All in the
        dataset-normalised pixel space of the input.
        """
        was_training = self.training
        self.eval()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.random.default_generator.manual_seed(seed)
                idx_keep, idx_mask = random_token_mask(
                    (images.shape[0], patchify_count(images, self.patch_size)),
                    mask_ratio=self.hparams.mask_ratio,
                    mask_class_token=True,
                    device="cpu",
                )
            idx_keep, idx_mask = idx_keep.to(images.device), idx_mask.to(images.device)
            prediction, _ = self.predict_masked(images, idx_keep, idx_mask)  # [B, M, P]
        finally:
            self.train(was_training)
        patches = patchify(images, self.patch_size)  # [B, N, P]
        if self.hparams.norm_pix_loss:
            true = get_at_index(patches, idx_mask)  # [B, M, P]
            mean, var = true.mean(-1, keepdim=True), true.var(-1, keepdim=True)
            prediction = prediction * (var + 1.0e-6) ** 0.5 + mean
        index = idx_mask[..., None].expand(-1, -1, patches.shape[-1])  # [B, M, P]
        masked = patches.scatter(1, index, 0.0)  # [B, N, P]
        reconstruction = patches.scatter(1, index, prediction.to(patches.dtype))  # [B, N, P]
        channels = images.shape[1]
        return (
            images,
            unpatchify(masked, self.patch_size, channels),  # [B, C, H, W]
            unpatchify(reconstruction, self.patch_size, channels),  # [B, C, H, W]
        )


def patchify_count(images: Tensor, patch_size: int) -> int:
    """Number of ``patch_size`` patches of square ``images`` ``[B, C, H, W]``."""
    height, width = images.shape[-2:]
    if height != width or height % patch_size:
        raise ValueError(
            f"masked reconstruction needs square images with sides divisible by the patch size "
            f"{patch_size}; got {height}x{width}. Set data.image_size to a multiple of it."
        )
    return (height // patch_size) ** 2
