"""Views per second of each method's recipe: the per-image path against the device path;
ops (kernel launches on a GPU) and host syncs of one batch of device views.

The per-image path is what a DataLoader worker runs (``SSLMethod.train_views``: lightly's and
torchvision's transforms on one PIL image at a time) in this one process; the device path is
:class:`~ssl_biases.data.device_views.DeviceViews` on uint8 batches (on the CPU by default,
``--device cuda`` for a GPU). With ``--threads 1`` (the default) both use one core, so the CPU
figures are views per second per core. Images are generated ``shapes`` (no data needed).

``--ops`` prints, per recipe, the ATen ops and host syncs of one batch of device views
(:class:`~ssl_biases.run.op_counter.OpCounter`) and the milliseconds per batch, with
``--before PATH`` the same for another version of ``device_views.py`` (e.g. one checked out
with ``git worktree``), timed alternately in the same run so that the ratio holds under load;
``--compile inductor`` adds the compiled views (one CUDA graph on ``--device cuda``).

Usage::

    .venv/bin/python benchmarks/views.py [--image-size 32 --batch-size 256 --images 512
                                          --methods simclr byol dino mae --device cpu]
    .venv/bin/python benchmarks/views.py --ops [--before OLD/ssl_biases/data/device_views.py]
                                          [--compile inductor --device cuda]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from functools import partial

import numpy as np
import torch

from ssl_biases.backbones import IsotropicNet
from ssl_biases.data.datasets import NORMALIZE
from ssl_biases.data.device_views import DeviceViews
from ssl_biases.data.shapes import ShapesDataset
from ssl_biases.data.transforms import Normalization
from ssl_biases.methods import BYOL, DINO, MAE, SimCLR
from ssl_biases.run.op_counter import OpCounter

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


def load_device_views(path: str) -> type:
    """``DeviceViews`` of another version of ``device_views.py`` (same package around it)."""
    spec = importlib.util.spec_from_file_location("device_views_before", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.DeviceViews


def batch_ms(views, batch: torch.Tensor, keys: torch.Tensor, step: int, device: str) -> float:
    """Milliseconds of one batch of ``views``: wall clock, synchronised, on CUDA; on the CPU
    the process's CPU time (one thread: the compute, less distorted by other processes)."""
    cuda = device.startswith("cuda")
    clock = time.perf_counter if cuda else time.process_time
    keys = keys + torch.tensor([step, 0], device=device)
    if cuda:
        torch.cuda.synchronize()
    start = clock()
    views(batch, keys)
    if cuda:
        torch.cuda.synchronize()
    return (clock() - start) * 1000


def ops_table(args: argparse.Namespace, batch: torch.Tensor, norm: Normalization) -> None:
    """Ops, host syncs and ms per batch of each recipe's device views (before and after)."""
    backbone = IsotropicNet(image_size=args.image_size, patch_size=4, width=32, depth=1,
                            num_heads=2)  # fmt: skip
    batch = batch.to(args.device)
    keys = torch.stack([torch.zeros(len(batch)), torch.arange(len(batch))], 1).long()
    keys = keys.to(args.device)
    versions = {"after": DeviceViews}
    if args.before:
        versions = {"before": load_device_views(args.before), **versions}
    if args.compile:  # torch.compile of the views (a CUDA graph on CUDA with inductor)
        versions["compiled"] = partial(DeviceViews, compile=True, backend=args.compile)
    print(f"{'method':8s} {'version':8s} {'ops':>6s} {'syncs':>5s} {'ms/batch':>9s} {'ratio':>6s}")
    for name in args.methods:
        recipe = METHODS[name](backbone).view_recipe(args.image_size)
        made = {v: cls(recipe, norm, seed=0) for v, cls in versions.items()}
        counts = {}
        for version, views in made.items():
            for _ in range(3 if version == "compiled" else 1):  # compile, record, replay
                views(batch, keys)  # warm-up: constants made on first use
            if version == "compiled":  # dynamo cannot run under a dispatch mode: not counted
                continue
            with OpCounter() as counter:
                views(batch, keys)
            counts[version] = (counter.ops, len(counter.syncs))
        times: dict[str, list[float]] = {v: [] for v in made}
        for step in range(args.repeats):  # alternate, so that both see the same load
            for version, views in made.items():
                times[version].append(batch_ms(views, batch, keys, step + 1, args.device))
        first = statistics.median(times[next(iter(made))])
        for version in made:
            ms = statistics.median(times[version])
            ops, syncs = (str(n) for n in counts.get(version, ("-", "-")))
            print(f"{name:8s} {version:8s} {ops:>6s} {syncs:>5s} {ms:9.1f} {first / ms:6.2f}")
        if "compiled" in made:
            pairs = zip(made["after"](batch, keys), made["compiled"](batch, keys))
            diff = max((a - b).abs().max().item() for a, b in pairs)
            print(f"{name:8s} compiled views differ from eager by at most {diff:.2g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--images", type=int, default=512, help="PIL images per timing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--ops", action="store_true", help="ops, syncs and ms per batch")
    parser.add_argument("--before", help="another device_views.py to compare with (--ops)")
    parser.add_argument("--compile", metavar="BACKEND", help="also time compiled views (--ops)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    size = args.image_size
    shapes = ShapesDataset("train", max(args.images, args.batch_size), size, seed=0)
    pil = [shapes[i][0] for i in range(args.images)]
    uint8 = np.stack([np.asarray(shapes[i][0]) for i in range(args.batch_size)])  # [B, H, W, 3]
    batch = torch.from_numpy(uint8).permute(0, 3, 1, 2).contiguous()  # [B, 3, H, W]
    norm = Normalization(*NORMALIZE["shapes"])
    if args.ops:
        ops_table(args, batch, norm)
        return
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
