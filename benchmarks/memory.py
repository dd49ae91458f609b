"""Target 4: peak resident memory of the CIFAR-10 demo-sized run, and its growth per epoch.

Runs ``ssl-biases fit`` in this process with the demo's settings (``configs/demo.yaml``:
SimCLR, ``vit_tiny`` narrowed to width 128 / depth 4 / 8 px patches, batch 128) on the
CIFAR-10 JPEG tree (``--root``, 2,000 training images, 2,000 + 2,000 probe images by default,
validation every epoch), sampling the resident memory (RSS) of this process and the
proportional set size (PSS) of it and its DataLoader workers every 0.2 s. Prints the peaks,
the baseline (this process after imports and data listing, before ``fit``) and the ratio, and
the memory after every epoch (growth = last - first).

Usage::

    .venv/bin/python benchmarks/memory.py --root ../shared/data/cifar10 [--epochs 4 --cache true]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import lightning.pytorch as pl
import psutil

from ssl_biases.cli import SSLBiasesCLI

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
MIB = 2**20


def tree_rss() -> tuple[float, float]:
    """(RSS of this process, PSS of this process + its workers) in MiB.

    Workers share the parent's pages (libraries, copy-on-write data), which RSS would count
    once per process; the proportional set size (PSS) splits shared pages among the sharers,
    so the sum over the tree is the run's real footprint.
    """
    main = psutil.Process()
    own = main.memory_info().rss
    total = 0
    for process in [main, *main.children(recursive=True)]:
        try:
            total += process.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return own / MIB, total / MIB


class Sampler(threading.Thread):
    """Keeps the peak of :func:`tree_rss` while running."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_main = self.peak_total = 0.0
        self.running = True

    def run(self) -> None:
        while self.running:
            main, total = tree_rss()
            self.peak_main, self.peak_total = max(self.peak_main, main), max(self.peak_total, total)
            time.sleep(0.2)


class EpochMemory(pl.Callback):
    def __init__(self) -> None:
        self.after_epoch: list[tuple[float, float]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.after_epoch.append(tree_rss())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default="../shared/data/cifar10")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train-samples", type=int, default=2000)
    parser.add_argument("--probe-samples", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cache", default="false")
    args = parser.parse_args()
    root = str(Path(args.root).resolve())
    epochs = EpochMemory()

    class MeasuredCLI(SSLBiasesCLI):
        def _instantiate_trainer(self, config, callbacks):  # noqa: ANN001, ANN202
            return super()._instantiate_trainer(config, [*callbacks, epochs])

        def before_fit(self) -> None:
            super().before_fit()
            self.baseline = tree_rss()
            sampler.start()

    sampler = Sampler()
    argv = [
        "fit",
        "--config", str(CONFIGS / "method/simclr.yaml"),
        "--config", str(CONFIGS / "backbone/vit_tiny.yaml"),
        "--config", str(CONFIGS / "data/imagefolder.yaml"),
        "--config", str(CONFIGS / "trainer/cpu.yaml"),
        "--config", str(CONFIGS / "demo.yaml"),
        "--data.root", root,
        "--data.num_workers", str(args.workers),
        "--data.cache", args.cache,
        "--data.max_train_samples", str(args.train_samples),
        "--data.max_probe_train_samples", str(args.probe_samples),
        "--data.max_val_samples", str(args.probe_samples),
        "--trainer.max_epochs", str(args.epochs),
        "--trainer.check_val_every_n_epoch", "1",
        "--trainer.enable_progress_bar", "false",
    ]  # fmt: skip
    with tempfile.TemporaryDirectory() as workdir:
        cwd = os.getcwd()
        os.chdir(workdir)
        try:
            start = time.perf_counter()
            cli = MeasuredCLI(args=argv)
            wall = time.perf_counter() - start
        finally:
            os.chdir(cwd)
            sampler.running = False
    base_main, base_total = cli.baseline
    print(
        f"run: {args.epochs} epochs, {args.train_samples} train images, workers={args.workers}, "
        f"cache={args.cache}, wall {wall:.0f} s"
    )
    print(f"baseline before fit: main {base_main:.0f} MiB")
    print(
        f"PEAK RSS main process: {sampler.peak_main:.0f} MiB "
        f"(RATIO vs baseline {sampler.peak_main / base_main:.2f})"
    )
    print(f"PEAK PSS main + workers: {sampler.peak_total:.0f} MiB")
    print(
        "after each epoch (RSS main, PSS main + workers) MiB: "
        f"{[(round(a), round(b)) for a, b in epochs.after_epoch]}"
    )
    first, last = epochs.after_epoch[0][0], epochs.after_epoch[-1][0]
    print(
        f"GROWTH main from epoch 1 to {args.epochs}: {last - first:+.1f} MiB "
        f"(RATIO {last / first:.3f})"
    )


if __name__ == "__main__":
    main()
