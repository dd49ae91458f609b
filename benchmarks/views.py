"""Views per second of each method's recipe: the per-image path against the device path.

The per-image path is what a DataLoader worker runs (``SSLMethod.train_views``: lightly's and
torchvision's transforms on one PIL image at a time) in this one process; the device path is
:class:`~ssl_biases.data.device_views.DeviceViews` on uint8 batches (on the CPU by default,
``--device cuda`` for a GPU). With ``--threads 1`` (the default) both use one core, so the CPU
figures are views per second per core. Images are generated ``shapes`` (no data needed).

Usage::

    .venv/bin/python benchmarks/views.py [--image-size 32 --batch-size 256 --images 512
                                          --methods simclr byol dino mae --device cpu]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ssl_biases.backbones import IsotropicNet
from ssl_biases.data.datasets import NORMALIZE
from ssl_biases.data.device_views import DeviceViews
from ssl_biases.data.shapes import ShapesDataset
from ssl_biases.data.transforms import Normalization
from ssl_biases.methods import BYOL, DINO, MAE, SimCLR

METHODS = {"simclr": SimCLR, "byol": BYOL, "dino": DINO, "mae": MAE}


def per_image_rate(transform, images: list, repeats: int) -> float:
    """Views per second of ``transform`` over the PIL ``images`` (best of ``repeats``)."""
    views = len(transform(images[0]))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for image in images:
            transform(image)
        best = min(best, time.perf_counter() - start)
    return views * len(images) / best


def device_rate(views: DeviceViews, batch: torch.Tensor, repeats: int, device: str) -> float:
    """Views per second of ``views`` on a uint8 ``batch`` (best of ``repeats``, one warm-up)."""
    keys = torch.stack([torch.zeros(len(batch)), torch.arange(len(batch))], 1).long().to(device)
    batch = batch.to(device)
    count = len(views(batch, keys))  # warm-up
    best = float("inf")
    for step in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        views(batch, keys + torch.tensor([step + 1, 0], device=device))
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return count * len(batch) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--images", type=int, default=512, help="PIL images per timing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    size = args.image_size
    shapes = ShapesDataset("train", max(args.images, args.batch_size), size, seed=0)
    pil = [shapes[i][0] for i in range(args.images)]
    uint8 = np.stack([np.asarray(shapes[i][0]) for i in range(args.batch_size)])  # [B, H, W, 3]
    batch = torch.from_numpy(uint8).permute(0, 3, 1, 2).contiguous()  # [B, 3, H, W]
    norm = Normalization(*NORMALIZE["shapes"])
    backbone = IsotropicNet(image_size=size, patch_size=4, width=32, depth=1, num_heads=2)
    print(f"{size} px, {args.threads} thread(s), device path on {args.device}, B={len(batch)}")
    print(f"{'method':8s} {'views':>5s} {'per-image views/s':>18s} {'device views/s':>15s} "
          f"{'ratio':>6s}")  # fmt: skip
    for name in args.methods:
        method = METHODS[name](backbone)
        recipe = method.view_recipe(size)
        slow = per_image_rate(method.train_views(size, norm), pil, args.repeats)
        fast = device_rate(DeviceViews(recipe, norm, seed=0), batch, args.repeats, args.device)
        count = len(recipe.expanded())
        print(f"{name:8s} {count:5d} {slow:18.0f} {fast:15.0f} {fast / slow:6.1f}")


if __name__ == "__main__":
    main()
