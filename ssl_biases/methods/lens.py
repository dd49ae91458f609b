"""An adversarial lens that removes shortcut features for any SSL method.

Minderer, Bachem, Houlsby and Tschannen, "Automatic Shortcut Removal for Self-Supervised
Representation Learning" (arXiv 2002.08822). A small image-to-image network ``L`` (here a U-Net
with a residual output, ``L(x) = x + u(x)``) is trained *against* the pretext task while staying
close to its input,

    L_lens = -L_SSL(L(x)) + lambda_rec * L_rec,   L_rec = mean ||x - L(x)||^2,

and the backbone and heads minimise ``L_SSL(L(x))`` on lensed views. Downstream, features of
unlensed and lensed images (and both concatenated) are probed.

One forward and one backward pass serve both players: the lensed views pass through a
gradient-reversal layer before the method's ``ssl_step``, so the backbone and heads receive
``+dL_SSL`` and the lens ``-dL_SSL + lambda_rec * dL_rec``. The two players have two optimizers
(stepped in Lightning's manual optimisation by the base, both in the checkpoint). The lens is
the method's :class:`~ssl_biases.methods.hook.TrainingHook`: the base calls it around the SSL
step, for its optimizer and for the probes' features, and this module never imports the base.
``L_rec`` is the mean squared error per pixel and channel in normalised pixel units, so
``lambda_rec`` does not depend on the image size (the paper's sum differs by the constant
``3 * H * W``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightly.utils.scheduler import CosineWarmupScheduler
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.utils import save_image

from ssl_biases.methods.gpu import fp32_loss
from ssl_biases.methods.hook import SSLLosses, SSLStep, TrainingHook
from ssl_biases.metric_names import LR_LENS, TRAIN_LENS_LOSS, TRAIN_LENS_REC_LOSS


class _ReverseGradient(torch.autograd.Function):
    """Identity forward; negated gradient backward (Ganin & Lempitsky, arXiv 1409.7495)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return -grad


def reverse_gradient(x: Tensor) -> Tensor:
    """``x`` in the forward pass; ``-grad`` flows back to whatever produced ``x``."""
    return _ReverseGradient.apply(x)


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        nn.GroupNorm(1, out_channels),
        nn.GELU(),
        nn.Conv2d(out_channels, out_channels, 3, padding=1),
        nn.GELU(),
    )


class Lens(nn.Module, TrainingHook):
    """A small U-Net with a residual output, ``lens(x) = x + u(x)`` (arXiv 2002.08822).

    The last convolution starts at zero, so an untrained lens is the identity.
    Configure it as the ``lens`` of any :class:`~ssl_biases.methods.base.SSLMethod`; it is
    that method's :class:`~ssl_biases.methods.hook.TrainingHook`.

    Args:
        lambda_rec: Weight of the reconstruction penalty ``mean ||x - lens(x)||^2``; larger
            values keep the lens closer to the identity (the paper tunes it per task).
        width: Channels of the first U-Net level (doubled at every level down).
        depth: Number of 2x downsamplings.
        lr: Learning rate of the lens's AdamW (not scaled with the batch size); it follows the
            method's warm-up + cosine schedule.
        weight_decay: Weight decay of the lens's AdamW.
        channels: Image channels.
    """

    def __init__(
        self,
        lambda_rec: float = 1.0,
        width: int = 16,
        depth: int = 2,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        channels: int = 3,
    ) -> None:
        super().__init__()
        if lambda_rec < 0:
            raise ValueError(f"lens lambda_rec must be >= 0, got {lambda_rec}")
        if width < 1 or depth < 0:
            raise ValueError(f"lens width must be >= 1 and depth >= 0, got {width}, {depth}")
        self.lambda_rec = lambda_rec
        self.lr = lr
        self.weight_decay = weight_decay
        self.last_views: Tensor | None = None  # a few training views, for the edit images
        widths = [width * 2**level for level in range(depth + 1)]
        self.down = nn.ModuleList(
            _conv_block(c_in, c_out) for c_in, c_out in zip([channels, *widths], widths)
        )
        self.up = nn.ModuleList(
            _conv_block(c_deep + c_skip, c_skip)
            for c_deep, c_skip in zip(widths[:0:-1], widths[-2::-1])
        )
        self.out = nn.Conv2d(width, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``x + u(x)`` for images ``[B, C, H, W]`` of any size."""
        skips = []
        h = x
        for level, block in enumerate(self.down):
            if level > 0:
                h = F.avg_pool2d(h, 2, ceil_mode=True)  # [B, c, ceil(h/2), ceil(w/2)]
            h = block(h)
            skips.append(h)
        for block, skip in zip(self.up, skips[-2::-1]):
            h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            h = block(torch.cat([h, skip], dim=1))  # [B, c_skip, h, w]
        return x + self.out(h)  # [B, C, H, W]

    @staticmethod
    @fp32_loss
    def reconstruction_loss(views: list[Tensor], lensed: list[Tensor]) -> Tensor:
        """Mean squared edit ``||x - lens(x)||^2`` per pixel and channel, averaged over views."""
        losses = [F.mse_loss(out, x) for x, out in zip(views, lensed)]
        return torch.stack(losses).mean()

    # ------------------------------------------------------------ the hook points (hook.py)
    has_optimizer = True

    def ssl_losses(self, views: list[Tensor], ssl_step: SSLStep) -> SSLLosses:
        """The SSL step on lensed views, through a gradient reversal, plus ``lambda_rec * L_rec``.

        The backbone and heads then descend ``L_SSL`` on lensed views and the lens descends
        ``-L_SSL + lambda_rec * L_rec`` (one backward pass for both players).
        """
        lensed = [self(view) for view in views]  # each [B, C, H, W]
        self.last_views = views[0][:16].detach()
        rec_loss = self.reconstruction_loss(views, lensed)
        loss, features = ssl_step([reverse_gradient(view) for view in lensed])
        metrics = {
            TRAIN_LENS_REC_LOSS: rec_loss,
            TRAIN_LENS_LOSS: self.lambda_rec * rec_loss - loss.detach(),
        }
        return SSLLosses(loss, features, self.lambda_rec * rec_loss, metrics)

    def configure_optimizer(self, main_scheduler: Any) -> tuple[Any, dict[str, Any]]:
        """The lens's AdamW, on the main schedule's warm-up and length (``lr-lens``)."""
        optimizer = torch.optim.AdamW(
            [{"params": list(self.parameters()), "name": "lens", "initial_lr": self.lr}],
            lr=self.lr,
            weight_decay=self.weight_decay,
        )
        warmup = getattr(main_scheduler, "warmup_epochs", 0)
        total = getattr(main_scheduler, "max_epochs", 10**12)
        scheduler = CosineWarmupScheduler(
            optimizer, warmup_epochs=warmup, max_epochs=total, end_value=0.0
        )
        return optimizer, {"scheduler": scheduler, "interval": "step", "name": LR_LENS}

    def eval_features(
        self,
        module: pl.LightningModule,
        backbone: nn.Module,
        images: Tensor,
        features: Tensor,
        batch_idx: int,
        dataloader_idx: int,
    ) -> dict[str, Tensor]:
        """Features of lensed images and of both concatenated, for the frozen-feature probes.

        The concatenation joins the L2-normalised halves, so neither dominates a cosine kNN.
        Also logs the lens's edits of the first query batch, and of the last training views
        (the images the lens was trained on, shortcut included), as images
        (see :func:`log_lens_edits`).
        """
        lensed = self(images)  # [B, C, H, W]
        lensed_features = backbone(lensed)  # [B, D]
        concat = torch.cat(
            [F.normalize(features, dim=1), F.normalize(lensed_features, dim=1)], 1
        )  # [B, 2D]
        if batch_idx == 0 and dataloader_idx == 1:
            log_lens_edits(module, images, lensed, "")
            if self.last_views is not None:
                train_views = self.last_views.to(images.device)
                log_lens_edits(module, train_views, self(train_views), "train_")
        return {"features_lensed": lensed_features, "features_concat": concat}


@torch.no_grad()
def lens_edit_grid(images: Tensor, lensed: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """Rows of inputs, lensed images and their differences, in ``[0, 1]`` for display.

    Args:
        images: ``[B, C, H, W]`` normalised inputs.
        lensed: ``[B, C, H, W]`` lensed inputs.
        mean: ``[C]`` normalisation mean.
        std: ``[C]`` normalisation std.

    Returns:
        ``[3B, C, H, W]``: inputs, lensed, and ``0.5 + diff / (2 max|diff|)`` per image (grey
        where the lens changed nothing).
    """
    mean, std = mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)
    shown_in = (images * std + mean).clamp(0, 1)  # [B, C, H, W]
    shown_out = (lensed * std + mean).clamp(0, 1)
    diff = (lensed - images) * std  # [B, C, H, W], in pixel units
    scale = diff.abs().flatten(1).amax(1).clamp_min(1e-6).view(-1, 1, 1, 1)  # [B, 1, 1, 1]
    return torch.cat([shown_in, shown_out, 0.5 + diff / (2 * scale)])


def log_lens_edits(
    module: pl.LightningModule,
    images: Tensor,
    lensed: Tensor,
    prefix: str = "",
    max_images: int = 16,
) -> None:
    """Logs ``lens/<prefix>input``, ``lens/<prefix>lensed``, ``lens/<prefix>difference`` to
    TensorBoard and saves ``<log_dir>/lens/<prefix>step_<N>.png`` (rows: input, lensed,
    difference); at validations of a fit only.
    """
    trainer = module._trainer
    if trainer is None or trainer.sanity_checking or not trainer.is_global_zero:
        return
    if trainer.state.fn != "fit":
        return
    datamodule = getattr(trainer, "datamodule", None)
    norm = getattr(datamodule, "norm", None)
    mean = torch.tensor(norm.mean if norm else (0.0, 0.0, 0.0), device=images.device)
    std = torch.tensor(norm.std if norm else (1.0, 1.0, 1.0), device=images.device)
    n = min(max_images, images.shape[0])
    grid = lens_edit_grid(images[:n], lensed[:n], mean, std).float().cpu()  # [3n, C, H, W]
    step = trainer.global_step
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            for name, part in zip(("input", "lensed", "difference"), grid.split(n)):
                logger.experiment.add_images(f"lens/{prefix}{name}", part, step)
    if trainer.log_dir is not None:
        folder = Path(trainer.log_dir) / "lens"
        folder.mkdir(parents=True, exist_ok=True)
        save_image(grid, folder / f"{prefix}step_{step:06d}.png", nrow=n, padding=1)
