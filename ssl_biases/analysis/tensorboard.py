"""`TensorBoardSummaries`: what a person sees of a run in TensorBoard, beside the curves.

- IMAGES ``views/train``: a grid of the augmented views of the first training batch (one row
  per image, one column per view), so the user sees what the method's transforms do.
- IMAGES ``attention/block_<i>``, at every validation, for attention backbones
  (``backbone.has_attention``): for a few fixed probe images, one row per image: the image,
  then the attention of every head of block ``i`` over the patch grid: the class token's
  attention when there is one, else the mean attention each patch receives (post-softmax,
  from ``backbone.attention_maps``; Walmer et al., arXiv 2212.03862).
- IMAGES ``reconstruction/preview``, at every validation, for masked-modelling methods (those
  with ``reconstruction_preview(images) -> (original, masked, reconstruction)``, all in the
  normalised pixel space of the input; MAE, arXiv 2111.06377): rows of those three.
- HPARAMS: the method, backbone and bias knobs, data and optimiser settings, with the final
  probe metrics (``val/*``) of the run, written at the end of fit (and again after a
  validation that follows the fit, as the CLI runs one after a mid-epoch stop), so runs of a
  study can be compared and sorted there; ``hp_metric`` is the primary probe's final value
  (:mod:`ssl_biases.run.hparams`, which says why no per-run experiment summary is written).
- PROJECTOR ``probe_queries``: backbone embeddings of a small labelled subset of the probe
  queries with their class names and thumbnails, at every validation.
"""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn
from torch import Tensor
from torch.nn import functional as F
from torchvision.utils import make_grid

from ssl_biases.metric_names import VAL
from ssl_biases.run.hparams import write_hparams


def denormalize(images: Tensor, mean: Any = None, std: Any = None) -> Tensor:
    """Normalised images ``[B, C, H, W]`` back to ``[0, 1]`` (min-max per image without stats)."""
    images = images.detach().float().cpu()
    if mean is None or std is None:
        low = images.amin(dim=(1, 2, 3), keepdim=True)  # [B, 1, 1, 1]
        high = images.amax(dim=(1, 2, 3), keepdim=True)
        return (images - low) / (high - low).clamp_min(1e-8)
    mean_t = torch.as_tensor(mean, dtype=images.dtype).view(1, -1, 1, 1)  # [1, C, 1, 1]
    std_t = torch.as_tensor(std, dtype=images.dtype).view(1, -1, 1, 1)
    return (images * std_t + mean_t).clamp(0.0, 1.0)


def views_grid(views: list[Tensor], num_images: int, mean: Any = None, std: Any = None) -> Tensor:
    """Grid ``[3, H', W']``: row ``i`` holds the views of image ``i`` (smaller crops upsampled)."""
    size = max(v.shape[-1] for v in views)
    columns = [
        F.interpolate(denormalize(v[:num_images], mean, std), size=(size, size), mode="nearest")
        for v in views
    ]  # V x [n, 3, size, size]
    tiles = torch.stack(columns, dim=1).flatten(0, 1)  # [n * V, 3, size, size]
    return make_grid(tiles, nrow=len(views), padding=2, pad_value=1.0)


def attention_heatmaps(attention: Tensor, num_prefix_tokens: int) -> Tensor:
    """Per-head attention over the patch grid, ``[B, heads, K, K]``, scaled to ``[0, 1]``.

    The class token's attention to the patches when ``num_prefix_tokens > 0``, else the mean
    attention each patch receives from all patch queries.

    Args:
        attention: post-softmax attention ``[B, heads, T, T]`` of one block, square grid.
        num_prefix_tokens: class/register tokens in front of the patches.
    """
    num_patches = attention.shape[-1] - num_prefix_tokens
    side = math.isqrt(num_patches)
    if side * side != num_patches:
        raise ValueError(f"attention over {num_patches} patches is not a square grid")
    if num_prefix_tokens > 0:
        maps = attention[:, :, 0, num_prefix_tokens:]  # [B, heads, N]
    else:
        maps = attention.mean(dim=2)  # [B, heads, N]
    maps = maps.float().reshape(*maps.shape[:2], side, side)  # [B, heads, K, K]
    low = maps.amin(dim=(2, 3), keepdim=True)
    high = maps.amax(dim=(2, 3), keepdim=True)
    return (maps - low) / (high - low).clamp_min(1e-8)


def attention_grid(images: Tensor, heatmaps: Tensor) -> Tensor:
    """Grid ``[3, H', W']``: per row an image (in ``[0, 1]``) then its heads' heat maps."""
    import matplotlib

    batch, heads = heatmaps.shape[:2]
    size = images.shape[-1]
    maps = F.interpolate(heatmaps.cpu(), size=(size, size), mode="nearest")  # [B, heads, H, W]
    colored = matplotlib.colormaps["viridis"](maps.numpy())[..., :3]  # [B, heads, H, W, 3]
    colored = torch.from_numpy(colored).float().permute(0, 1, 4, 2, 3)  # [B, heads, 3, H, W]
    tiles = torch.cat([images.cpu().unsqueeze(1), colored], dim=1)  # [B, 1 + heads, 3, H, W]
    return make_grid(tiles.flatten(0, 1), nrow=heads + 1, padding=2, pad_value=1.0)


def _flat(prefix: str, values: dict[str, Any]) -> dict[str, Any]:
    """``{prefix/key: value}``, nested dicts (``method/training/...``) flattened too."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if not str(key).startswith("_"):
            nested = isinstance(value, dict)
            out.update(_flat(f"{prefix}/{key}", value) if nested else {f"{prefix}/{key}": value})
    return out


def run_hparams(trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
    """Method, backbone (class and constructor knobs), data and optimiser settings of a run."""
    params: dict[str, Any] = {"method": type(pl_module).__name__}
    params.update(_flat("method", dict(pl_module.hparams)))
    backbone = getattr(pl_module, "backbone", None)
    config = getattr(backbone, "config", None) or {}
    params["backbone"] = str(config.get("class_path", type(backbone).__name__)).rsplit(".")[-1]
    params.update(_flat("backbone", config.get("init_args", {})))
    if backbone is not None and hasattr(backbone, "num_features"):
        params["backbone/num_features"] = int(backbone.num_features)
    datamodule = getattr(trainer, "datamodule", None)
    for key in ("dataset_name", "image_size", "batch_size", "max_train_samples"):
        if hasattr(datamodule, key):
            params[f"data/{key.removesuffix('_name')}"] = getattr(datamodule, key)
    if trainer.optimizers:
        group = trainer.optimizers[0].param_groups[0]
        params["optim/name"] = type(trainer.optimizers[0]).__name__
        params["optim/lr"] = float(group.get("initial_lr", group["lr"]))
        params["optim/weight_decay"] = float(group.get("weight_decay", 0.0))
    params["trainer/max_epochs"] = trainer.max_epochs
    params["trainer/max_steps"] = trainer.max_steps
    params["trainer/world_size"] = trainer.world_size
    return {k: (v if isinstance(v, (bool, int, float, str)) else str(v)) for k, v in params.items()}


class TensorBoardSummaries(pl.Callback):
    """Logs views, attention maps, reconstructions, HPARAMS and a projector view (see module).

    Every part has a switch (``--tensorboard.<part> false`` on the CLI); all are no-ops
    without a ``TensorBoardLogger``.

    Args:
        views: Log the grid of augmented views at the start of training.
        attention: Log attention maps of the fixed images at every validation.
        reconstructions: Log reconstructions of masked-modelling methods at every validation.
        hparams: Log the HPARAMS view with the final ``metric_prefixes`` metrics.
        projector: Log the projector view of ``projector_samples`` probe queries.
        num_images: Images in the views, attention and reconstruction grids.
        projector_samples: Size of the labelled subset shown in the projector.
        metric_prefixes: Metrics (``trainer.callback_metrics``) shown in HPARAMS.
    """

    def __init__(
        self,
        views: bool = True,
        attention: bool = True,
        reconstructions: bool = True,
        hparams: bool = True,
        projector: bool = True,
        num_images: int = 8,
        projector_samples: int = 256,
        metric_prefixes: tuple[str, ...] = (f"{VAL}/",),
    ) -> None:
        if num_images < 1 or projector_samples < 1:
            raise ValueError("num_images and projector_samples must be >= 1")
        self.views = views
        self.attention = attention
        self.reconstructions = reconstructions
        self.hparams = hparams
        self.projector = projector
        self.num_images = num_images
        self.projector_samples = projector_samples
        self.metric_prefixes = tuple(metric_prefixes)
        self._views_logged = False
        self._fixed: Tensor | None = None  # [n, C, H, W] normalised probe queries
        self._samples: dict[str, list[Tensor]] = {}
        self._projected_steps: set[int] = set()
        self._fit_done = False

    # ------------------------------------------------------------------------- helpers
    @staticmethod
    def _logger(trainer: pl.Trainer) -> TensorBoardLogger | None:
        if not trainer.is_global_zero:
            return None
        return next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)

    @staticmethod
    def _norm(trainer: pl.Trainer) -> tuple[Any, Any]:
        norm = getattr(getattr(trainer, "datamodule", None), "norm", None)
        return getattr(norm, "mean", None), getattr(norm, "std", None)

    def _class_names(self, trainer: pl.Trainer) -> list[str] | None:
        try:
            return [str(c) for c in trainer.datamodule.raw_dataset("test").classes]
        except (AttributeError, TypeError, ValueError, FileNotFoundError):
            return None

    # ----------------------------------------------------------------------- training
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        logger = self._logger(trainer)
        if not self.views or self._views_logged or logger is None:
            return
        self._views_logged = True
        self._guarded("views", self._log_views, logger, trainer, batch)

    def _log_views(self, logger: TensorBoardLogger, trainer: pl.Trainer, batch: Any) -> None:
        views = batch[0] if isinstance(batch, (tuple, list)) else batch
        views = [views] if isinstance(views, Tensor) else list(views)
        grid = views_grid(views, self.num_images, *self._norm(trainer))
        logger.experiment.add_image("views/train", grid, trainer.global_step)

    # --------------------------------------------------------------------- validation
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._samples = {"features": [], "labels": [], "images": []}

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if dataloader_idx != 1 or self._logger(trainer) is None:  # the probe queries only
            return
        images, labels = batch
        if self._fixed is None:
            self._fixed = images[: self.num_images].detach().cpu().clone()
        have = sum(len(x) for x in self._samples.get("labels", []))
        if self.projector and not trainer.sanity_checking and isinstance(outputs, dict):
            take = self.projector_samples - have
            if take > 0 and "features" in outputs:
                self._samples["features"].append(outputs["features"][:take].detach().float().cpu())
                self._samples["labels"].append(labels[:take].detach().cpu())
                self._samples["images"].append(images[:take].detach().cpu())

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        logger = self._logger(trainer)
        if logger is None or trainer.sanity_checking or self._fixed is None:
            return
        backbone = getattr(pl_module, "backbone", None)
        if self.attention and getattr(backbone, "has_attention", False):
            self._guarded("attention", self._log_attention, logger, trainer, backbone)
        if self.reconstructions and hasattr(pl_module, "reconstruction_preview"):
            self._guarded("reconstructions", self._log_reconstructions, logger, trainer, pl_module)
        step = trainer.global_step
        if self.projector and self._samples.get("features") and step not in self._projected_steps:
            self._projected_steps.add(step)
            self._guarded("projector", self._log_projector, logger, trainer)
        self._samples = {}

    @torch.no_grad()
    def _log_attention(self, logger: TensorBoardLogger, trainer: pl.Trainer, backbone: Any) -> None:
        images = self._fixed.to(next(backbone.parameters()).device)  # [n, C, H, W]
        shown = denormalize(images, *self._norm(trainer))  # [n, C, H, W] in [0, 1]
        prefix = int(getattr(backbone, "num_prefix_tokens", 0))
        for i, attn in enumerate(backbone.attention_maps(images)):  # [n, heads, T, T]
            grid = attention_grid(shown, attention_heatmaps(attn, prefix))
            logger.experiment.add_image(f"attention/block_{i}", grid, trainer.global_step)

    @torch.no_grad()
    def _log_reconstructions(
        self, logger: TensorBoardLogger, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> None:
        triplet = pl_module.reconstruction_preview(
            self._fixed.to(pl_module.device)
        )  # 3 x [n, C, H, W]
        tiles = torch.stack([denormalize(t, *self._norm(trainer)) for t in triplet], 1)
        grid = make_grid(tiles.flatten(0, 1), nrow=3, padding=2, pad_value=1.0)
        logger.experiment.add_image("reconstruction/preview", grid, trainer.global_step)

    def _log_projector(self, logger: TensorBoardLogger, trainer: pl.Trainer) -> None:
        labels = torch.cat(self._samples["labels"])  # [n]
        names = self._class_names(trainer)
        metadata = [names[y] if names and 0 <= y < len(names) else str(y) for y in labels.tolist()]
        logger.experiment.add_embedding(
            torch.cat(self._samples["features"]),  # [n, D]
            metadata=metadata,
            label_img=denormalize(torch.cat(self._samples["images"]), *self._norm(trainer)),
            global_step=trainer.global_step,
            tag="probe_queries",
        )

    def _guarded(self, part: str, log: Any, *args: Any) -> None:
        """Run one summary; on an error, warn once and switch that part off (a picture must
        never stop a training run)."""
        try:
            log(*args)
        except Exception as err:  # noqa: BLE001
            setattr(self, part, False)
            rank_zero_warn(
                f"TensorBoard {part} summary failed and is now off ({type(err).__name__}: {err}); "
                f"turn it off with --tensorboard.{part} false"
            )

    # ------------------------------------------------------------------------ hparams
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._fit_done = False

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._fit_done = True
        self.log_hparams(trainer, pl_module)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._fit_done and trainer.state.fn == "validate":  # the CLI's final validation
            self.log_hparams(trainer, pl_module)

    @rank_zero_only
    def log_hparams(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Write HPARAMS: :func:`run_hparams` with the current ``metric_prefixes`` metrics."""
        logger = self._logger(trainer)
        if not self.hparams or logger is None:
            return
        metrics = {
            name: float(value)
            for name, value in trainer.callback_metrics.items()
            if name.startswith(self.metric_prefixes) and torch.as_tensor(value).numel() == 1
        }
        if metrics:  # hp_metric = the primary probe; no per-run experiment: run/hparams.py
            monitor = getattr(trainer.checkpoint_callback, "monitor", None)
            write_hparams(
                logger, run_hparams(trainer, pl_module), metrics, trainer.global_step, monitor
            )
