"""Issue 14's GPU figures in one run (at most ~8 minutes on one H200): JSON and a markdown table.

For ``vit_tiny`` and ``resnet18_cifar`` (32 px, batch 512 pairs, bf16) a SimCLR step
(benchmarks/gpu_throughput.py's ``SimCLRStep``: backbone on both views, projection head,
NT-Xent, AdamW) is timed in three settings:

- ``a_model``: the model alone on views already on the device (the upper bound);
- ``b_workers<N>``: lightly's per-image views made in N DataLoader workers (8 and 16);
- ``c_device``: the uint8 train set cached on the device (``--data.cache device``) and the
  views made there (``DeviceViews`` from SimCLR's ``view_recipe``, ``--data.augment device``).

Each reports images/s (both views counted, free-running: one synchronisation at the end), the
data wait (time from asking for a batch until its views are ready on the device, as a share
of the step; measured in a second pass that synchronises around every step) and MFU (FLOPs of
one step counted with ``FlopCounterMode`` over the card's dense bf16 peak). The ratio c/a is
the goal of the device path (>= 0.9). Then ViT-S/16 at 224 px (``vit_s16``, bf16; goal MFU
>= 40%), and a correctness run: a few hundred SimCLR steps through the real CLI
(``python -m ssl_biases fit ... --data.augment device --data.cache device``, gpu.yaml) whose
kNN top-1 is compared with a ``validate`` of the same config from random init.

Every section is guarded: a failure is recorded in ``results.json`` as ``error`` and the next
section runs; the JSON and ``results.md`` are rewritten after every section.

Data: ``--data-root`` a CIFAR-10 JPEG tree ``root/{train,test}/<class>/*.jpg`` inside the
repository (only the repository travels to a GPU machine, 64 MiB at most, so copy a subset into
an ignored folder first; ``build/`` is ignored)::

    python benchmarks/gpu_check.py --make-subset ../shared/data/cifar10 build/cifar10 \
        --train-per-class 2000 --test-per-class 500        # 20k + 5k images, 23 MB (37 MB tar)

without it, the generated ``shapes`` dataset (``--shapes-size`` images).

Usage::

    bash benchmarks/gpu_check.sh OUTDIR [--data-root build/cifar10]   # on the GPU
    bash benchmarks/gpu_check.sh --cpu-smoke OUTDIR                      # the same, tiny, on CPU
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))  # gpu_throughput, run as a script

from gpu_throughput import SimCLRStep, peak_tflops, synchronize  # noqa: E402

from ssl_biases.backbones import create_backbone  # noqa: E402
from ssl_biases.data.datamodule import SSLDataModule  # noqa: E402
from ssl_biases.data.device_views import DeviceViews  # noqa: E402
from ssl_biases.data.views import ViewRecipe, per_image_views  # noqa: E402
from ssl_biases.methods import SimCLR  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GOAL_DEVICE_RATIO = 0.9  # c_device / a_model images/s
GOAL_VIT_S16_MFU = 40.0  # percent


@dataclass(frozen=True)
class Sizes:
    """How big every section is: the GPU run, or the CPU smoke run (tiny, a few steps)."""

    device: str = "cuda"
    setting: str = "bf16"  # gpu_throughput's setting (fp32 on CPU: CPU bf16 is slow)
    backbones: tuple[str, ...] = ("vit_tiny", "resnet18_cifar")
    batch_size: int = 512  # pairs of views per step
    warmup: int = 5
    steps: int = 25  # timed steps per pass (two passes for b and c)
    workers: tuple[int, ...] = (8, 16)
    cache_workers: int = 8  # decode the train set into the device cache
    shapes_size: int = 20000
    vit_s16_batch: int = 128
    vit_s16_steps: int = 15
    fit_steps: int = 300
    fit_batch_size: int = 512
    fit_backbone: str = "configs/backbone/resnet18_cifar.yaml"
    fit_extra: tuple[str, ...] = ()
    fit_timeout_s: int = 180


GPU = Sizes()
CPU_SMOKE = Sizes(
    device="cpu",
    setting="fp32",
    batch_size=4,
    warmup=0,
    steps=1,
    workers=(2,),
    cache_workers=0,
    shapes_size=256,
    vit_s16_batch=1,
    vit_s16_steps=1,
    fit_steps=12,
    fit_batch_size=32,
    fit_backbone="configs/backbone/vit_tiny.yaml",
    fit_extra=(
        "--model.init_args.backbone.init_args.width=32",
        "--model.init_args.backbone.init_args.depth=2",
        "--model.init_args.backbone.init_args.num_heads=2",
        "--model.init_args.projection_hidden_dim=64",
        "--model.init_args.projection_dim=32",
        "--data.max_probe_train_samples=128",
        "--data.max_val_samples=128",
        "--data.probe_batch_size=64",
        "--data.num_workers=0",
        "--trainer.accelerator=cpu",
        "--trainer.precision=32-true",
    ),
    fit_timeout_s=150,
)


# ------------------------------------------------------------------------------ timing
def images_per_second(pairs: int, seconds_per_step: float) -> float:
    return 2 * pairs / seconds_per_step


def mfu_percent(flops: float, seconds_per_step: float, peak: float | None) -> float | None:
    """Model FLOP utilisation in percent (``None`` without a known peak, e.g. on a CPU)."""
    return 100 * flops / seconds_per_step / (peak * 1e12) if peak else None


def step_flops(step: Callable[[Tensor], None], views: Tensor) -> float:
    """FLOPs of one step (forward and backward), counted by ``FlopCounterMode``."""
    counter = FlopCounterMode(display=False)
    with counter:
        step(views)
    return float(counter.get_total_flops())


def time_loop(
    step: Callable[[Tensor], None],
    next_views: Callable[[], Tensor],
    device: torch.device,
    warmup: int,
    steps: int,
) -> dict[str, float]:
    """Seconds per step of ``step(next_views())``, and the share of it spent waiting for data.

    Two passes of ``steps`` after ``warmup``: a free-running one (one synchronisation at the
    end: the throughput) and one that synchronises before asking for a batch, once its views
    are ready and after the step (the data wait: asking for a batch until its views are on
    the device, over the whole step).
    """
    for _ in range(warmup):
        step(next_views())
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step(next_views())
    synchronize(device)
    free = (time.perf_counter() - start) / steps
    wait = compute = 0.0
    for _ in range(steps):
        t0 = time.perf_counter()
        views = next_views()
        synchronize(device)
        t1 = time.perf_counter()
        step(views)
        synchronize(device)
        t2 = time.perf_counter()
        wait, compute = wait + t1 - t0, compute + t2 - t1
    return {
        "seconds_per_step": free,
        "synced_seconds_per_step": (wait + compute) / steps,
        "data_wait_pct": 100 * wait / (wait + compute),
    }


def endless(loader: Any) -> Iterator[Any]:
    """The loader's batches, epoch after epoch."""
    while True:
        yield from loader


# ------------------------------------------------------------------------------ data
def datamodule(sizes: Sizes, data_root: str | None, **kwargs: Any) -> SSLDataModule:
    """CIFAR-10-like 32 px training data: the JPEG tree at ``data_root``, else ``shapes``."""
    source: dict[str, Any] = (
        {"dataset": "imagefolder", "root": data_root}
        if data_root
        else {"dataset": "shapes", "shapes_size": sizes.shapes_size}
    )
    return SSLDataModule(
        image_size=32,
        batch_size=sizes.batch_size,
        pin_memory=sizes.device == "cuda",
        normalization="imagenet",
        **source,
        **kwargs,
    )


def simclr_recipe() -> ViewRecipe:
    """SimCLR's views at 32 px with the project's defaults (configs/method/simclr.yaml)."""
    method = SimCLR(create_backbone("vit_tiny"), cj_strength=0.5, min_scale=0.08)
    return method.view_recipe(32)


def make_subset(source: Path, target: Path, train_per_class: int, test_per_class: int) -> int:
    """Copies the first images of each class of ``source/{train,test}``; returns the count."""
    copied = 0
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        split_dir = source / split
        classes = sorted(p for p in split_dir.iterdir() if p.is_dir()) if split_dir.is_dir() else []
        if not classes:
            raise FileNotFoundError(f"{source / split} has no class folders (root/<split>/<class>)")
        for folder in classes:
            out = target / split / folder.name
            out.mkdir(parents=True, exist_ok=True)
            for image in sorted(folder.iterdir())[:count]:
                shutil.copyfile(image, out / image.name)
                copied += 1
    return copied


# ------------------------------------------------------------------------------ sections
def model_alone(sizes: Sizes, backbone: str, peak: float | None) -> dict[str, Any]:
    """(a) The step on views already on the device: the upper bound."""
    device = torch.device(sizes.device)
    views = torch.randn(2 * sizes.batch_size, 3, 32, 32, device=device)  # [2B, 3, 32, 32]
    flops = step_flops(SimCLRStep(backbone, "fp32", device), views)
    step = SimCLRStep(backbone, sizes.setting, device)
    timing = time_loop(step, lambda: views, device, sizes.warmup, sizes.steps)
    timing["data_wait_pct"] = 0.0  # nothing to wait for
    return summarise(sizes, timing, flops, peak)


def worker_batches(sizes: Sizes, data_root: str | None, workers: int) -> Callable[[], Tensor]:
    """(b)'s data: lightly's per-image views made in ``workers`` DataLoader workers, then
    copied to the device; each call gives the next ``[2B, 3, 32, 32]`` pair of views."""
    device = torch.device(sizes.device)
    dm = datamodule(sizes, data_root, num_workers=workers)
    dm.train_views = per_image_views(simclr_recipe(), dm.norm)
    batches = endless(dm.train_dataloader())

    def next_views() -> Tensor:
        views, _ = next(batches)
        return torch.cat(views[:2]).to(device, non_blocking=True)  # [2B, 3, 32, 32]

    return next_views


def device_batches(sizes: Sizes, data_root: str | None) -> Callable[[], Tensor]:
    """(c)'s data: the uint8 train set cached on the device, the views made there (what
    ``--data.augment device --data.cache device`` does); each call gives the next views."""
    device = torch.device(sizes.device)
    dm = datamodule(
        sizes, data_root, num_workers=sizes.cache_workers, augment="device", cache="device"
    )
    dm.device_views = DeviceViews(simclr_recipe(), dm.norm, dm.order_seed)
    batches = endless(dm.train_dataloader())  # keys only; the images wait on the device

    def next_views() -> Tensor:
        keys = next(batches)
        keys = type(keys)(*(t.to(device, non_blocking=True) for t in keys))
        views, _ = dm.on_after_batch_transfer(keys, 0)
        return torch.cat(views[:2])  # [2B, 3, 32, 32]

    return next_views


def loader_section(
    sizes: Sizes,
    backbone: str,
    make_batches: Callable[[], Callable[[], Tensor]],
    flops: float,
    peak: float | None,
    warmup: int,
) -> dict[str, Any]:
    """(b) or (c): the step fed by the loader ``make_batches()`` builds once the model is built
    (no head start for the loader); ``warmup`` steps first, to drain the burst of batches that
    all workers make at once when they start."""
    device = torch.device(sizes.device)
    step = SimCLRStep(backbone, sizes.setting, device)
    timing = time_loop(step, make_batches(), device, warmup, sizes.steps)
    return summarise(sizes, timing, flops, peak)


def vit_s16(sizes: Sizes, peak: float | None) -> dict[str, Any]:
    """ViT-S/16 at 224 px, the model alone (as benchmarks/gpu_throughput.py)."""
    device = torch.device(sizes.device)
    views = torch.randn(2 * sizes.vit_s16_batch, 3, 224, 224, device=device)
    flops = step_flops(SimCLRStep("vit_s16", "fp32", device), views)
    step = SimCLRStep("vit_s16", sizes.setting, device)
    timing = time_loop(step, lambda: views, device, min(sizes.warmup, 3), sizes.vit_s16_steps)
    timing["data_wait_pct"] = 0.0
    return summarise(replace(sizes, batch_size=sizes.vit_s16_batch), timing, flops, peak)


def summarise(sizes: Sizes, timing: dict[str, float], flops: float, peak: float | None) -> dict:
    seconds = timing["seconds_per_step"]
    return {
        "images_per_s": images_per_second(sizes.batch_size, seconds),
        "step_ms": 1000 * seconds,
        "data_wait_pct": timing["data_wait_pct"],
        "mfu_pct": mfu_percent(flops, seconds, peak),
        "tflop_per_step": flops / 1e12,
        "batch_size": sizes.batch_size,
        "setting": sizes.setting,
    }


def last_metric(root: Path, name: str) -> float | None:
    """The last value of ``name`` in the newest ``metrics.csv`` under ``root``."""
    files = sorted(root.rglob("metrics.csv"), key=lambda p: p.stat().st_mtime)
    if not files:
        return None
    with open(files[-1]) as handle:
        values = [float(row[name]) for row in csv.DictReader(handle) if row.get(name)]
    return values[-1] if values else None


def correctness_run(sizes: Sizes, data_root: str | None, work: Path, out: Path) -> dict:
    """A few hundred SimCLR steps through the CLI (device views + cache) vs random init."""
    data = (
        ["--config=configs/data/imagefolder.yaml", f"--data.root={data_root}"]
        if data_root
        else ["--config=configs/data/shapes.yaml", f"--data.shapes_size={sizes.shapes_size}"]
    )
    common = [
        "--config=configs/method/simclr.yaml",
        f"--config={sizes.fit_backbone}",
        *data,
        "--config=configs/trainer/gpu.yaml",
        "--data.augment=device",
        "--data.cache=device",
        f"--data.batch_size={sizes.fit_batch_size}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.num_sanity_val_steps=0",
        *sizes.fit_extra,
    ]
    result: dict[str, Any] = {"steps": sizes.fit_steps}
    for command, extra in (
        ("validate", []),
        (
            "fit",
            [
                f"--trainer.max_steps={sizes.fit_steps}",
                "--trainer.max_epochs=-1",
                "--trainer.check_val_every_n_epoch=100000",  # one validation, at the end
                "--trainer.log_every_n_steps=10",
            ],
        ),
    ):
        root = work / command
        argv = [sys.executable, "-m", "ssl_biases", command, *common, *extra]
        argv.append(f"--trainer.default_root_dir={root}")
        start = time.perf_counter()
        done = subprocess.run(
            argv, cwd=ROOT, capture_output=True, text=True, timeout=sizes.fit_timeout_s
        )
        (out / f"{command}.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            raise RuntimeError(f"{command} exited {done.returncode}: {done.stderr[-800:]}")
        key = "random" if command == "validate" else "trained"
        result[f"{key}_knn_top1"] = last_metric(root, "val/knn_top1")
        result[f"{key}_seconds"] = time.perf_counter() - start
    trained, random = result["trained_knn_top1"], result["random_knn_top1"]
    result["beats_random"] = trained is not None and random is not None and trained > random
    return result


# ------------------------------------------------------------------------------ report
def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def markdown(results: dict[str, Any]) -> str:
    """The figures as a markdown table (errors as rows that say so)."""
    meta = results.get("meta", {})
    lines = [
        f"# GPU check ({meta.get('device_name', '?')}, torch {meta.get('torch', '?')}, "
        f"{meta.get('mode', '?')}, data {meta.get('data', '?')})",
        "",
        "| backbone | setting | images/s | data wait % | MFU % | step ms | TFLOP/step |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for key, row in results.get("throughput", {}).items():
        backbone, _, setting = key.partition("/")
        if "error" in row:
            lines.append(f"| {backbone} | {setting} | error: {row['error']} | | | | |")
            continue
        lines.append(
            f"| {backbone} | {setting} | {fmt(row['images_per_s'], 0)} | "
            f"{fmt(row['data_wait_pct'])} | {fmt(row['mfu_pct'])} | {fmt(row['step_ms'])} | "
            f"{fmt(row['tflop_per_step'], 3)} |"
        )
    lines.append("")
    for backbone, ratio in results.get("device_ratio", {}).items():
        verdict = "meets" if ratio >= GOAL_DEVICE_RATIO else "misses"
        lines.append(
            f"- {backbone}: c_device / a_model images/s = {ratio:.2f} ({verdict} the goal "
            f">= {GOAL_DEVICE_RATIO})"
        )
    vit = results.get("vit_s16")
    if vit and "error" not in vit:
        mfu = vit["mfu_pct"]
        goal = f"the goal >= {GOAL_VIT_S16_MFU:.0f}%"
        verdict = f"{'meets' if mfu >= GOAL_VIT_S16_MFU else 'misses'} {goal}" if mfu else "no peak"
        lines.append(
            f"- vit_s16 224 px, batch {vit['batch_size']}: {fmt(vit['images_per_s'], 1)} images/s, "
            f"MFU {fmt(mfu) + '%' if mfu else 'n/a'} ({verdict})"
        )
    elif vit:
        lines.append(f"- vit_s16: error: {vit['error']}")
    fit = results.get("correctness")
    if fit and "error" not in fit:
        lines.append(
            f"- SimCLR {fit['steps']} steps (CLI, device views + cache): kNN top-1 "
            f"{fmt(fit['trained_knn_top1'], 4)} vs random init {fmt(fit['random_knn_top1'], 4)} "
            f"-> {'beats' if fit['beats_random'] else 'does NOT beat'} random "
            f"(fit {fmt(fit['trained_seconds'], 0)} s, validate {fmt(fit['random_seconds'], 0)} s)"
        )
    elif fit:
        lines.append(f"- correctness run: error: {fit['error']}")
    lines.append(f"- total {fmt(meta.get('seconds'), 0)} s")
    return "\n".join(lines) + "\n"


def guarded(
    results: dict[str, Any], where: dict[str, Any], key: str, out: Path, fn: Callable[[], Any]
) -> Any:
    """Runs one section: its result, or ``{"error": ...}``; then rewrites the JSON and table."""
    start = time.perf_counter()
    try:
        where[key] = fn()
    except Exception as error:  # a section's failure must not lose the others' figures
        where[key] = {"error": f"{type(error).__name__}: {str(error)[:300]}"}
        traceback.print_exc()
    gc.collect()  # a finished section's loader workers go now, not during the next one
    if isinstance(where[key], dict):
        where[key]["section_seconds"] = time.perf_counter() - start
    results["meta"]["seconds"] = time.perf_counter() - results["meta"]["start"]
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "results.md").write_text(markdown(results))
    print(f"[{results['meta']['seconds']:6.1f} s] {key}: {where[key]}", flush=True)
    return where[key]


def run(sizes: Sizes, out: Path, data_root: str | None, sections: list[str]) -> dict:
    """All sections in order; returns the results (also written under ``out``)."""
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(sizes.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as configs/trainer/gpu.yaml
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    results: dict[str, Any] = {
        "meta": {
            "device_name": name,
            "torch": torch.__version__,
            "mode": "gpu" if device.type == "cuda" else "cpu-smoke",
            "data": data_root or f"shapes ({sizes.shapes_size})",
            "sizes": asdict(sizes),
            "start": time.perf_counter(),
        },
        "throughput": {},
        "device_ratio": {},
    }
    peak = peak_tflops(device, None)
    results["meta"]["peak_bf16_tflops"] = peak
    table = results["throughput"]
    for backbone in sizes.backbones:
        if "throughput" not in sections:
            break
        alone = guarded(
            results,
            table,
            f"{backbone}/a_model",
            out,
            partial(model_alone, sizes, backbone, peak),
        )
        flops = 1e12 * alone.get("tflop_per_step", math.nan)
        for workers in sizes.workers:
            guarded(
                results,
                table,
                f"{backbone}/b_workers{workers}",
                out,
                lambda b=backbone, w=workers, f=flops: loader_section(
                    sizes,
                    b,
                    partial(worker_batches, sizes, data_root, w),
                    f,
                    peak,
                    max(sizes.warmup, 2 * w) if sizes.warmup else 0,  # prefetch_factor 2
                ),
            )
        dev = guarded(
            results,
            table,
            f"{backbone}/c_device",
            out,
            lambda b=backbone, f=flops: loader_section(
                sizes, b, partial(device_batches, sizes, data_root), f, peak, sizes.warmup
            ),
        )
        if "images_per_s" in alone and "images_per_s" in dev:
            results["device_ratio"][backbone] = dev["images_per_s"] / alone["images_per_s"]
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if "vit_s16" in sections:
        guarded(results, results, "vit_s16", out, lambda: vit_s16(sizes, peak))
    if "correctness" in sections:
        with tempfile.TemporaryDirectory() as work:  # checkpoints stay out of OUTDIR
            guarded(
                results,
                results,
                "correctness",
                out,
                lambda: correctness_run(sizes, data_root, Path(work), out),
            )
    return results


SECTIONS = ("throughput", "vit_s16", "correctness")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="folder for results.json, results.md, logs")
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU")
    parser.add_argument("--data-root", help="a root/{train,test}/<class>/*.jpg tree (else shapes)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--steps", type=int, help="timed steps per pass (default by mode)")
    parser.add_argument("--fit-steps", type=int, help="steps of the correctness run")
    parser.add_argument(
        "--make-subset",
        nargs=2,
        metavar=("SOURCE", "TARGET"),
        help="copy the first --train-per-class / --test-per-class images of a JPEG tree, exit",
    )
    parser.add_argument("--train-per-class", type=int, default=2000)
    parser.add_argument("--test-per-class", type=int, default=500)
    args = parser.parse_args(argv)
    if args.make_subset:
        source, target = map(Path, args.make_subset)
        count = make_subset(source, target, args.train_per_class, args.test_per_class)
        print(f"copied {count} images into {target}")
        return
    if args.out is None:
        parser.error("--out is required")
    sizes = CPU_SMOKE if args.cpu_smoke else GPU
    if args.steps:
        sizes = replace(sizes, steps=args.steps)
    if args.fit_steps:
        sizes = replace(sizes, fit_steps=args.fit_steps)
    if sizes.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU, or pass --cpu-smoke")
    if args.data_root and not (Path(args.data_root) / "train").is_dir():
        raise SystemExit(f"--data-root {args.data_root} has no train/ folder (root/train/<class>)")
    results = run(sizes, args.out, args.data_root, args.sections)
    print(markdown(results))


if __name__ == "__main__":
    main()
