"""Target 2: the SimCLR input pipeline on CIFAR-10 JPEGs against what ``vit_tiny`` consumes.

Three measurements in one run, on ``--root`` (an ``imagefolder`` tree such as the CIFAR-10
JPEGs at ``../shared/data/cifar10``):

1. the training loader of :class:`~ssl_biases.data.SSLDataModule` alone (SimCLR's two views per
   image, collated into batches), in view pairs per second, for each ``(num_workers, cache)``
   setting asked for; the one-time decode of ``--data.cache`` is timed on its own;
2. what a bare ``vit_tiny`` SimCLR training step consumes (pairs per second) at the same batch
   size, measured before and after the loaders (median);
3. a short ``ssl-biases fit`` on the same data under Lightning's ``SimpleProfiler``: the time
   a training step waits for its batch (``train_dataloader_next``) as a share of the step
   (``train_dataloader_next + run_training_batch``), the first fetch (worker start) excluded.

Prints ``RATIO loader / model`` (target >= 3) and the data-wait share (target < 5%).

Usage::

    .venv/bin/python benchmarks/input_pipeline.py --root ../shared/data/cifar10 \
        [--batch-size 256 --settings 0:false 2:false 2:true --fit-workers 2 --fit-cache true]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ssl_biases.backbones import create_backbone
from ssl_biases.cli import cli_main
from ssl_biases.data.datamodule import SSLDataModule
from ssl_biases.methods.simclr import SimCLR

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def model_pairs_per_second(batch_size: int, steps: int) -> float:
    """Pairs/s of a bare SimCLR step on ``vit_tiny`` (median step after one warm-up step)."""
    torch.manual_seed(0)
    method = SimCLR(create_backbone("vit_tiny"))
    optimizer = torch.optim.AdamW(method.parameters(), lr=1e-3)
    views = [torch.randn(batch_size, 3, 32, 32) for _ in range(2)]
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        loss, _ = method.ssl_step(views)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return batch_size / statistics.median(times[1:])


def loader_pairs_per_second(
    root: str, batch_size: int, workers: int, cache: bool, batches: int
) -> tuple[float, float]:
    """(pairs/s of the training loader after its first batch, one-time cache seconds)."""
    datamodule = SSLDataModule(
        dataset="imagefolder", root=root, batch_size=batch_size, num_workers=workers, cache=cache
    )
    start = time.perf_counter()
    datamodule.raw_dataset("train")  # the decode of --data.cache (or the file listing)
    setup_seconds = time.perf_counter() - start
    datamodule.train_views = SimCLR(create_backbone("vit_tiny")).train_views(32, datamodule.norm)
    iterator = iter(datamodule.train_dataloader())
    next(iterator)  # worker start-up
    start = time.perf_counter()
    for _ in range(batches):
        views, _ = next(iterator)
        assert len(views) == 2 and views[0].shape == (batch_size, 3, 32, 32)
    return batches * batch_size / (time.perf_counter() - start), setup_seconds


def profiled_fit(root: str, args: argparse.Namespace) -> tuple[float, float]:
    """Data-wait share of a step in a short profiled fit: (without, with) the first fetch."""
    argv = [
        "fit",
        "--config", str(CONFIGS / "method/simclr.yaml"),
        "--config", str(CONFIGS / "backbone/vit_tiny.yaml"),
        "--config", str(CONFIGS / "data/imagefolder.yaml"),
        "--data.root", root,
        "--data.batch_size", str(args.batch_size),
        "--data.num_workers", str(args.fit_workers),
        "--data.cache", args.fit_cache,
        "--data.max_probe_train_samples", "256",
        "--data.max_val_samples", "256",
        "--trainer.max_epochs", "1",
        "--trainer.limit_train_batches", str(args.fit_steps),
        "--trainer.num_sanity_val_steps", "0",
        "--trainer.profiler", "simple",
        "--trainer.enable_progress_bar", "false",
    ]  # fmt: skip
    cli = cli_main(argv)
    durations = cli.trainer.profiler.recorded_durations
    fetch = durations["[_TrainingEpochLoop].train_dataloader_next"]
    step = durations["run_training_batch"]
    print(f"fit: fetch s {[round(t, 3) for t in fetch]}")
    print(f"fit: step  s {[round(t, 2) for t in step]}")
    share = sum(fetch[1:]) / (sum(fetch[1:]) + sum(step[1:]))
    share_all = sum(fetch) / (sum(fetch) + sum(step))
    return share, share_all


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default="../shared/data/cifar10")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--batches", type=int, default=8, help="timed loader batches")
    parser.add_argument("--model-steps", type=int, default=3)
    parser.add_argument("--settings", nargs="+", default=["0:false", "2:false", "2:true"])
    parser.add_argument("--fit-steps", type=int, default=6)
    parser.add_argument("--fit-workers", type=int, default=2)
    parser.add_argument("--fit-cache", default="false")
    parser.add_argument("--skip-fit", action="store_true")
    args = parser.parse_args()
    root = str(Path(args.root).resolve())
    print(
        f"torch {torch.__version__} threads={torch.get_num_threads()} cpus={os.cpu_count()} "
        f"batch={args.batch_size} root={root}"
    )
    model = [model_pairs_per_second(args.batch_size, args.model_steps)]
    print(f"model (vit_tiny SimCLR step): {model[0]:.1f} pairs/s", flush=True)
    loaders = {}
    for setting in args.settings:
        workers, cache = int(setting.split(":")[0]), setting.split(":")[1] == "true"
        rate, setup = loader_pairs_per_second(root, args.batch_size, workers, cache, args.batches)
        loaders[setting] = rate
        print(
            f"loader workers={workers} cache={cache}: {rate:.1f} pairs/s "
            f"(dataset setup {setup:.1f} s)",
            flush=True,
        )
    model.append(model_pairs_per_second(args.batch_size, args.model_steps))
    print(f"model again: {model[1]:.1f} pairs/s")
    consumed = statistics.median(model)
    for setting, rate in loaders.items():
        print(f"RATIO loader[{setting}] / model: {rate / consumed:.1f} (target >= 3)")
    if not args.skip_fit:
        with tempfile.TemporaryDirectory() as workdir:
            cwd = os.getcwd()
            os.chdir(workdir)
            try:
                share, share_all = profiled_fit(root, args)
            finally:
                os.chdir(cwd)
        print(
            f"DATA-WAIT share of a step (workers={args.fit_workers}, cache={args.fit_cache}): "
            f"{100 * share:.2f}% (first fetch included: {100 * share_all:.2f}%) (target < 5%)"
        )


if __name__ == "__main__":
    main()
