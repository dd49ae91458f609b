"""I-JEPA (Assran et al., arXiv 2301.08243): predict the EMA encoder's patch tokens of masked
target blocks from a context block, in representation space (no pixels, no augmentations)."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from lightly.models.modules import IJEPAPredictorTIMM
from lightly.models.utils import apply_masks, get_at_index
from lightly.transforms.ijepa_transform import IJEPATransform
from lightly.transforms.multi_view_transform import MultiViewTransform
from timm.layers import trunc_normal_
from torch import Tensor, nn
from torch.nn import functional as F

from ssl_biases.data.transforms import Normalization
from ssl_biases.methods.base import DEFAULT_TRAINING, SSLMethod
from ssl_biases.methods.gpu import fp32_loss
from ssl_biases.methods.lens import Lens
from ssl_biases.methods.masked import embed_with_mask_token
from ssl_biases.methods.reconstruction import PATCH_API, patchify_count
from ssl_biases.methods.training import Training


def block_size(
    grid: tuple[int, int], scale: tuple[float, float], aspect: tuple[float, float]
) -> tuple[int, int]:
    """A random ``(h, w)`` block of ``scale`` of the grid's area and height/width ``aspect``
    (as lightly's ``IJEPAMaskCollator``), clamped to ``[1, grid side]``; global CPU RNG."""
    height, width = grid
    u_scale, u_aspect = torch.rand(2).tolist()
    area = height * width * (scale[0] + u_scale * (scale[1] - scale[0]))
    ratio = aspect[0] + u_aspect * (aspect[1] - aspect[0])
    h = min(max(round(math.sqrt(area * ratio)), 1), height)
    w = min(max(round(math.sqrt(area / ratio)), 1), width)
    return h, w


def random_blocks(
    batch_size: int, grid: tuple[int, int], size: tuple[int, int], num: int, device: Any
) -> Tensor:
    """``num`` blocks of ``size`` per image at uniform positions: a boolean ``[num, B, h, w]``."""
    height, width = grid
    top = torch.randint(0, height - size[0] + 1, (num, batch_size, 1, 1), device=device)
    left = torch.randint(0, width - size[1] + 1, (num, batch_size, 1, 1), device=device)
    rows = torch.arange(height, device=device).view(1, 1, height, 1)
    cols = torch.arange(width, device=device).view(1, 1, 1, width)
    inside_rows = (rows >= top) & (rows < top + size[0])  # [num, B, h, 1]
    return inside_rows & (cols >= left) & (cols < left + size[1])  # [num, B, h, w]


def multi_block_masks(
    batch_size: int,
    grid: tuple[int, int],
    num_targets: int = 4,
    target_scale: tuple[float, float] = (0.15, 0.2),
    target_aspect: tuple[float, float] = (0.75, 1.5),
    context_scale: tuple[float, float] = (0.85, 1.0),
    min_context: int = 4,
    device: Any = None,
) -> tuple[Tensor, list[Tensor]]:
    """I-JEPA's multi-block masks, sampled on ``device`` for a whole batch at once.

    As lightly's ``IJEPAMaskCollator`` (which samples per image in the loader workers): one
    target block size and one square context block size per batch; per image, ``num_targets``
    target blocks and one context block at random positions; the context is the context block
    minus every target block. An image whose context keeps fewer than ``min_context`` patches
    draws its context block again (up to 20 times), then keeps the whole context block (the
    collator too relaxes the no-overlap rule in the end). Every image keeps the batch's
    smallest context size K, a random subset of its context patches (the collator keeps the
    first K in row-major order), so that the indices stack.

    Returns:
        ``(idx_context [B, K], idx_targets)``: row-major patch indices of the context and a list
        of ``num_targets`` index tensors ``[B, M]``, each one target block (M = h * w).
    """
    height, width = grid
    target_h, target_w = block_size(grid, target_scale, target_aspect)
    context_size = block_size(grid, context_scale, (1.0, 1.0))
    targets = random_blocks(batch_size, grid, (target_h, target_w), num_targets, device)
    covered = targets.any(0)  # [B, h, w]
    context = random_blocks(batch_size, grid, context_size, 1, device)[0] & ~covered  # [B, h, w]
    for _ in range(20):
        small = context.flatten(1).sum(1) < min_context  # [B]
        if not bool(small.any()):
            break
        again = random_blocks(batch_size, grid, context_size, 1, device)[0] & ~covered
        context = torch.where(small[:, None, None], again, context)  # [B, h, w]
    small = context.flatten(1).sum(1) < min_context  # [B]
    if bool(small.any()):  # overlap allowed for the rest: the bare context block
        bare = random_blocks(batch_size, grid, context_size, 1, device)[0]
        context = torch.where(small[:, None, None], bare, context)
    context = context.flatten(1)  # [B, N]
    num_context = int(context.sum(1).min())
    scores = torch.rand(context.shape, device=device).masked_fill(~context, 2.0)  # [B, N]
    idx_context = scores.argsort(1)[:, :num_context].sort(1).values  # [B, K]
    # exactly M = h * w patches per block; nonzero lists them in row-major order
    idx_targets = targets.flatten(2).nonzero()[:, 2].view(num_targets, batch_size, -1)
    return idx_context, list(idx_targets.unbind(0))


class IJEPA(SSLMethod):
    """I-JEPA with lightly's predictor (``IJEPAPredictorTIMM``) on any isotropic backbone.

    One view (lightly's ``IJEPATransform``: random-resized crop + flip) is split by
    :func:`multi_block_masks` into a context and ``num_targets`` target blocks. The target
    encoder (an EMA of the backbone, momentum ``momentum_start`` -> 1 through the base's
    ``momentum_pairs``) encodes the full view; its patch tokens, layer-normed (no affine), at
    the target blocks are the targets. The context encoder (the backbone) sees the view with
    every non-context patch replaced by a learned mask token (pixels zeroed before the stem,
    as :class:`~ssl_biases.methods.MaskedModeling`), so every token mixer works, not only
    token-dropping attention as in the paper. The predictor (a narrow ViT) reads the context
    tokens at their positions plus one mask token per target patch, and predicts each target
    block; the loss is the smooth L1 (the paper's code) or MSE over all target tokens.

    The online probe trains on the pooled output of the masked context view (computed
    anyway); probes at validation see unmasked images. The predictor's position embedding is
    sized for the backbone's grid, so views must have the backbone's ``image_size``.

    Args:
        backbone: An isotropic patch backbone (IsotropicNet, any ``token_mixer``).
        predictor_dim: Width of the predictor (384 in the paper; 96 at CPU scale).
        predictor_depth: Predictor blocks (12 in the paper for ViT-H; 4 at CPU scale).
        predictor_num_heads: Predictor attention heads (must divide ``predictor_dim``).
        num_targets: Target blocks per image (4).
        target_scale: Area range of a target block, as a fraction of the grid (0.15-0.2).
        target_aspect: Height/width range of a target block (0.75-1.5).
        context_scale: Area range of the (square) context block (0.85-1.0).
        min_context: Fewest context patches an image may keep (10 of 196 in the paper's code;
            4 on an 8x8 grid).
        loss: ``smooth_l1`` (the paper's code) or ``mse``.
        momentum_start: EMA momentum of the target encoder after the first step (0.996).
        min_scale: Smallest random-resized-crop area fraction (0.3 in the paper).
    """

    def __init__(
        self,
        backbone: nn.Module,
        predictor_dim: int = 96,
        predictor_depth: int = 4,
        predictor_num_heads: int = 3,
        num_targets: int = 4,
        target_scale: tuple[float, float] = (0.15, 0.2),
        target_aspect: tuple[float, float] = (0.75, 1.5),
        context_scale: tuple[float, float] = (0.85, 1.0),
        min_context: int = 4,
        loss: Literal["smooth_l1", "mse"] = "smooth_l1",
        momentum_start: float = 0.996,
        min_scale: float = 0.3,
        *,
        lens: Lens | None = None,
        training: Training = DEFAULT_TRAINING,
    ) -> None:
        missing = [name for name in (*PATCH_API, "num_patches") if not hasattr(backbone, name)]
        if missing:
            raise ValueError(
                f"I-JEPA masks patch tokens, so it needs an isotropic patch backbone "
                f"(ssl_biases.backbones.IsotropicNet, any token_mixer: vit_tiny, localvit_tiny, "
                f"mixer_tiny, convmixer_tiny, poolformer_tiny, ...); {type(backbone).__name__} "
                f"lacks {missing}. Use simclr, byol or dino with this backbone."
            )
        if predictor_dim % predictor_num_heads:
            raise ValueError(
                f"predictor_dim {predictor_dim} is not divisible by predictor_num_heads "
                f"{predictor_num_heads}"
            )
        if num_targets < 1:
            raise ValueError(f"num_targets must be >= 1, got {num_targets}")
        if loss not in ("smooth_l1", "mse"):
            raise ValueError(f"loss must be 'smooth_l1' or 'mse', got {loss!r}")
        for name, (low, high) in (("target_scale", target_scale), ("context_scale", context_scale)):
            if not 0.0 < low <= high <= 1.0:
                raise ValueError(f"{name} must satisfy 0 < low <= high <= 1, got {(low, high)}")
        super().__init__(backbone, lens=lens, training=training)
        self.momentum_start = momentum_start
        self.patch_size: int = backbone.patch_size
        self.num_prefix_tokens: int = backbone.num_prefix_tokens
        width = getattr(backbone, "width", backbone.num_features)  # token width after the stem
        self.mask_token = nn.Parameter(trunc_normal_(torch.zeros(1, 1, width), std=0.02))
        self.predictor = IJEPAPredictorTIMM(
            num_patches=backbone.num_patches,
            depth=predictor_depth,
            mlp_dim=backbone.num_features,
            predictor_embed_dim=predictor_dim,
            num_heads=predictor_num_heads,
        )
        self.teacher_backbone = self.make_teacher(self.backbone)

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.teacher_backbone)]

    def train_views(self, image_size: int, norm: Normalization) -> MultiViewTransform:
        """One random-resized crop + flip per image (lightly's ``IJEPATransform``)."""
        view = IJEPATransform(
            input_size=image_size, min_scale=self.hparams.min_scale, normalize=norm.as_lightly()
        )
        return MultiViewTransform([view])

    # --------------------------------------------------------------------------- training
    def mask(self, images: Tensor) -> tuple[Tensor, list[Tensor]]:
        """``(idx_context [B, K], idx_targets: num_targets x [B, M])`` for ``images``."""
        num_patches = patchify_count(images, self.patch_size)
        if num_patches != self.backbone.num_patches:
            raise ValueError(
                f"I-JEPA's predictor is sized for the backbone's {self.backbone.num_patches} "
                f"patches, but the views have {num_patches}: set data.image_size to the "
                f"backbone's image_size ({getattr(self.backbone, 'image_size', '?')})."
            )
        side = math.isqrt(num_patches)
        hp = self.hparams
        return multi_block_masks(
            images.shape[0], (side, side), hp.num_targets, tuple(hp.target_scale),
            tuple(hp.target_aspect), tuple(hp.context_scale), hp.min_context, images.device,
        )  # fmt: skip

    def targets(self, images: Tensor, idx_targets: list[Tensor]) -> Tensor:
        """Layer-normed target-encoder patch tokens at the target blocks ``[T*B, M, D']``."""
        with torch.no_grad():
            tokens = self.teacher_backbone.forward_features(images)  # [B, P+N, D']
            tokens = tokens[:, self.num_prefix_tokens :]  # [B, N, D']
            tokens = F.layer_norm(tokens, tokens.shape[-1:])  # [B, N, D']
            return apply_masks(tokens, idx_targets)  # [T*B, M, D'], block-major

    def predict(
        self, images: Tensor, idx_context: Tensor, idx_targets: list[Tensor]
    ) -> tuple[Tensor, Tensor]:
        """``(predictions [T*B, M, D'], pooled features [B, D'])`` from the context only."""
        num_patches = patchify_count(images, self.patch_size)
        hidden = idx_context.new_ones(idx_context.shape[0], num_patches, dtype=torch.bool)
        hidden = hidden.scatter(1, idx_context, False)  # [B, N], True = not in the context
        tokens = embed_with_mask_token(self.backbone, images, hidden, self.mask_token)
        encoded = self.backbone.forward_tokens(tokens)  # [B, P+N, D']
        features = self.backbone.pool_tokens(encoded)  # [B, D']
        context = get_at_index(encoded[:, self.num_prefix_tokens :], idx_context)  # [B, K, D']
        prediction = self.predictor(context, masks_x=idx_context, masks=idx_targets)
        return prediction, features  # [T*B, M, D'], [B, D']

    def ssl_step(self, views: list[Tensor]) -> tuple[Tensor, Tensor]:
        images = views[0]  # [B, C, H, W]
        idx_context, idx_targets = self.mask(images)  # [B, K], T x [B, M]
        prediction, features = self.predict(images, idx_context, idx_targets)
        target = self.targets(images, idx_targets)  # [T*B, M, D']
        return self.latent_loss(prediction, target), features

    @fp32_loss
    def latent_loss(self, prediction: Tensor, target: Tensor) -> Tensor:
        """Smooth L1 or MSE between predicted and target tokens ``[T*B, M, D']`` (fp32)."""
        if self.hparams.loss == "smooth_l1":
            return F.smooth_l1_loss(prediction, target)
        return F.mse_loss(prediction, target)
