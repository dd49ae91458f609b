"""The GPU check of issue 28 (at most 8 minutes on one GPU): JSON and a markdown table.

``ssl-biases fit`` itself is timed -- the real CLI in a subprocess, with the Lightning loop and
every callback, logger and guard a user gets; ``benchmarks/fit_timer.py``'s ``FitStepTimer``
rides along (``--trainer.callbacks+=``) and times each loop iteration after a warm-up, with
the device synchronised at both ends of the timed steps. SimCLR (configs/method/simclr.yaml)
with ``vit_tiny`` and ``resnet18_cifar`` at batch 512, ``bf16-mixed`` (configs/trainer/gpu.yaml),
in three settings:

- ``a_ready``: ready device tensors, the upper bound: the train set on the device
  (``--data.cache device``) and the views of the first batch handed back every step;
- ``b_workers``: per-image views in the loader workers (``--data.augment workers``,
  ``--data.cache memory``; gpu.yaml's worker count);
- ``c_device``: device views from the device cache (``--data.augment device --data.cache
  device``).

Each row gives images/s (every view counted; the median loop iteration, so the epoch-end
checkpoint of ``LastCheckpoint`` does not count; the synchronised mean is in the JSON too),
MFU (the FLOPs of the first step, counted by ``FlopCounterMode``, over the card's dense bf16
peak) and peak memory; ``b/a`` and ``c/a`` are the ratios of images/s (the goal of the device
path: ``c/a >= 0.9``). Then ViT-S/16 at 224 px, the model alone (``vit_s16``: the MFU goal
>= 40 %), and last a short bf16 SimCLR fit (device views and cache) whose kNN top-1 is
compared with a ``validate`` of the same config from random init.

``results.json`` and ``results.md`` are rewritten after every measurement, so a kill keeps
what was measured; a failing measurement is recorded as ``error`` and the next one runs.
Data: ``--data-root``, a CIFAR-10 python-pickle folder (what ``gpu_check.sh`` unpacks from the
bundle's uint8 arrays); without it the generated ``shapes`` dataset.

Usage (``gpu_check.sh`` installs the bundle and passes ``--data-root``)::

    bash benchmarks/gpu_check.sh OUTDIR [--sections fit correctness]     # on the GPU
    bash benchmarks/gpu_check.sh --cpu-smoke OUTDIR                       # the same, tiny, on CPU
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

BENCHMARKS = Path(__file__).resolve().parent
ROOT = BENCHMARKS.parent
sys.path.insert(0, str(BENCHMARKS))  # gpu_throughput, run as a script

from gpu_throughput import PEAK_BF16_TFLOPS, SimCLRStep, synchronize  # noqa: E402

GOAL_DEVICE_RATIO = 0.9  # c_device / a_ready images/s
GOAL_VIT_S16_MFU = 40.0  # percent
SECTIONS = ("fit", "vit_s16", "correctness")
SETTINGS: dict[str, tuple[list[str], bool]] = {  # CLI arguments, ready views
    "a_ready": (["--data.augment=device", "--data.cache=device"], True),
    "b_workers": (["--data.augment=workers", "--data.cache=memory"], False),
    "c_device": (["--data.augment=device", "--data.cache=device"], False),
}


@dataclass(frozen=True)
class Sizes:
    """How big every part is: the GPU run, or the CPU smoke run (tiny, a few steps)."""

    device: str = "cuda"
    trainer: str = "configs/trainer/gpu.yaml"
    precision: str = "bf16-mixed"  # the timed fits
    backbones: tuple[str, ...] = ("vit_tiny", "resnet18_cifar")
    batch_size: int = 512
    warmup: int = 20  # drains the workers' first burst (8 workers x prefetch 2)
    steps: int = 40
    fit_timeout_s: int = 100  # one timed fit, start-up included
    extra: tuple[str, ...] = ()  # added to every fit (the smoke run's tiny model)
    vit_s16_batch: int = 128
    vit_s16_steps: int = 15
    vit_s16_setting: str = "bf16"
    correctness_backbone: str = "resnet18_cifar"
    correctness_precision: str = "bf16-mixed"
    correctness_steps: int = 300
    correctness_timeout_s: int = 150


GPU = Sizes()
CPU_SMOKE = Sizes(
    device="cpu",
    trainer="configs/trainer/cpu.yaml",
    precision="32-true",
    backbones=("vit_tiny",),
    batch_size=16,
    warmup=2,
    steps=3,
    fit_timeout_s=150,
    extra=(
        "--model.init_args.backbone.init_args.width=32",
        "--model.init_args.backbone.init_args.depth=2",
        "--model.init_args.backbone.init_args.num_heads=2",
        "--model.init_args.projection_hidden_dim=64",
        "--model.init_args.projection_dim=32",
        "--data.max_probe_train_samples=256",
        "--data.max_val_samples=256",
        "--data.probe_batch_size=128",
        "--data.num_workers=2",
    ),
    vit_s16_batch=1,
    vit_s16_steps=1,
    vit_s16_setting="fp32",
    correctness_backbone="vit_tiny",
    correctness_precision="bf16-mixed",  # CPU autocast: the bf16 code path, tiny
    correctness_steps=20,
    correctness_timeout_s=300,
)


# ------------------------------------------------------------------------------ figures
def peak_tflops(device: torch.device) -> float | None:
    """The card's dense bf16 peak (TFLOP/s), looked up by name; ``None`` on a CPU."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_TFLOPS.items() if key in name), None)


def mfu_percent(flops: float | None, seconds_per_step: float, peak: float | None) -> float | None:
    """Model FLOP utilisation in percent (``None`` without FLOPs or a known peak)."""
    if not flops or not peak:
        return None
    return 100 * flops / seconds_per_step / (peak * 1e12)


def ratios(throughput: dict[str, Any], backbone: str) -> dict[str, float]:
    """``b/a`` and ``c/a``: images/s of worker and device views over ready device tensors."""
    rows = {key.split("/")[1]: row for key, row in throughput.items() if key.startswith(backbone)}
    base = rows.get("a_ready", {}).get("images_per_s")
    found = {}
    for name, key in (("b/a", "b_workers"), ("c/a", "c_device")):
        value = rows.get(key, {}).get("images_per_s")
        if base and value:
            found[name] = value / base
    return found


def last_metric(root: Path, name: str) -> float | None:
    """The last value of ``name`` in the newest ``metrics.csv`` under ``root``."""
    files = sorted(root.rglob("metrics.csv"), key=lambda p: p.stat().st_mtime)
    if not files:
        return None
    with open(files[-1]) as handle:
        values = [float(row[name]) for row in csv.DictReader(handle) if row.get(name)]
    return values[-1] if values else None


# ------------------------------------------------------------------------------ the CLI
def data_args(data_root: str | None) -> list[str]:
    """The whole CIFAR-10 subset as bank and queries, or generated shapes without a root."""
    if data_root is None:
        return ["--config=configs/data/shapes.yaml", "--data.shapes_size=2000"]
    return [
        "--config=configs/data/cifar10.yaml",
        f"--data.root={data_root}",
        "--data.max_probe_train_samples=null",
        "--data.max_val_samples=null",
    ]


def fit_command(
    sizes: Sizes, backbone: str, data_root: str | None, work: Path, *extra: str
) -> list[str]:
    """``python -m ssl_biases fit`` of SimCLR as the user runs it, plus ``extra``."""
    return [
        sys.executable,
        "-m",
        "ssl_biases",
        "fit",
        "--config=configs/method/simclr.yaml",
        f"--config=configs/backbone/{backbone}.yaml",
        *data_args(data_root),
        f"--config={sizes.trainer}",
        f"--data.batch_size={sizes.batch_size}",
        "--trainer.max_epochs=-1",
        "--trainer.num_sanity_val_steps=0",
        f"--trainer.default_root_dir={work}",
        *sizes.extra,
        *extra,
    ]


def run_cli(argv: list[str], log: Path, timeout_s: int) -> None:
    """Runs a CLI command with ``benchmarks/`` importable; its output goes to ``log``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(BENCHMARKS), env.get("PYTHONPATH")) if p)
    start = time.perf_counter()
    with open(log, "w") as handle:
        done = subprocess.run(
            argv, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, timeout=timeout_s
        )
    if done.returncode != 0:
        tail = log.read_text()[-600:]
        raise RuntimeError(
            f"exit {done.returncode} after {time.perf_counter() - start:.0f} s: {tail}"
        )


# ------------------------------------------------------------------------------ sections
def timed_fit_command(
    sizes: Sizes, backbone: str, setting: str, data_root: str | None, work: Path
) -> list[str]:
    """The ``fit`` of ``backbone`` in ``setting`` with ``FitStepTimer`` writing
    ``work/<backbone>_<setting>.json``."""
    setting_args, ready = SETTINGS[setting]
    name = f"{backbone}_{setting}"
    timer = {
        "class_path": "fit_timer.FitStepTimer",
        "init_args": {
            "out": str(work / f"{name}.json"),
            "warmup": sizes.warmup,
            "steps": sizes.steps,
            "ready_views": ready,
        },
    }
    return fit_command(
        sizes,
        backbone,
        data_root,
        work / name,
        *setting_args,
        f"--trainer.precision={sizes.precision}",
        f"--trainer.max_steps={sizes.warmup + sizes.steps + 5}",  # the timer stops it first
        "--trainer.limit_val_batches=0",  # no probes: training steps only
        "--checkpoint.monitor=null",
        "--checkpoint.save_top_k=0",
        "--checkpoint.save_last=false",
        f"--trainer.callbacks+={json.dumps(timer)}",
    )


def timed_fit(
    sizes: Sizes, backbone: str, setting: str, data_root: str | None, out: Path, work: Path
) -> dict[str, Any]:
    """One ``fit`` of ``backbone`` in ``setting``, timed by ``FitStepTimer``."""
    name = f"{backbone}_{setting}"
    start = time.perf_counter()
    argv = timed_fit_command(sizes, backbone, setting, data_root, work)
    run_cli(argv, out / f"fit_{name}.log", sizes.fit_timeout_s)
    row = json.loads((work / f"{name}.json").read_text())
    row["fit_seconds"] = time.perf_counter() - start
    row["precision"] = sizes.precision
    row["batch_size"] = sizes.batch_size
    return row


def vit_s16(sizes: Sizes, peak: float | None) -> dict[str, Any]:
    """ViT-S/16 at 224 px, the model alone (benchmarks/gpu_throughput.py's SimCLR step)."""
    device = torch.device(sizes.device)
    views = torch.randn(2 * sizes.vit_s16_batch, 3, 224, 224, device=device)  # [2B, 3, 224, 224]
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        SimCLRStep("vit_s16", "fp32", device)(views)
    flops = float(counter.get_total_flops())
    step = SimCLRStep("vit_s16", sizes.vit_s16_setting, device)
    for _ in range(3):
        step(views)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(sizes.vit_s16_steps):
        step(views)
    synchronize(device)
    seconds = (time.perf_counter() - start) / sizes.vit_s16_steps
    return {
        "images_per_s": 2 * sizes.vit_s16_batch / seconds,
        "step_ms": 1000 * seconds,
        "mfu_pct": mfu_percent(flops, seconds, peak),
        "batch_size": sizes.vit_s16_batch,
        "setting": sizes.vit_s16_setting,
    }


def correctness_commands(sizes: Sizes, data_root: str | None, work: Path) -> dict[str, list[str]]:
    """``random``: a ``validate`` from random init; ``trained``: a short SimCLR ``fit`` (device
    views and cache, one validation at its end)."""
    common = [
        "--data.augment=device",
        "--data.cache=device",
        f"--trainer.precision={sizes.correctness_precision}",
    ]
    validate = fit_command(sizes, sizes.correctness_backbone, data_root, work / "random", *common)
    validate[3] = "validate"
    fit = fit_command(
        sizes,
        sizes.correctness_backbone,
        data_root,
        work / "trained",
        *common,
        f"--trainer.max_steps={sizes.correctness_steps}",
        "--trainer.check_val_every_n_epoch=100000",  # one validation, at the end
        "--trainer.log_every_n_steps=10",
    )
    return {"random": validate, "trained": fit}


def correctness_run(sizes: Sizes, data_root: str | None, work: Path, out: Path) -> dict:
    """The kNN top-1 of a short SimCLR fit beside that of the same config from random init."""
    result: dict[str, Any] = {"steps": sizes.correctness_steps}
    for key, argv in correctness_commands(sizes, data_root, work).items():
        start = time.perf_counter()
        run_cli(argv, out / f"correctness_{key}.log", sizes.correctness_timeout_s)
        result[f"{key}_knn_top1"] = last_metric(work / key, "val/knn_top1")
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
    """The figures as markdown: the fit table, the ratios, ViT-S/16 and the kNN check."""
    meta = results.get("meta", {})
    lines = [
        f"# GPU check ({meta.get('device_name', '?')}, torch {meta.get('torch', '?')}, "
        f"{meta.get('mode', '?')}, data {meta.get('data', '?')})",
        "",
        "`ssl-biases fit` of SimCLR, images/s over the median loop iteration (every view "
        "counted); MFU from the first step's FLOPs.",
        "",
        "| backbone | setting | images/s | step ms (median) | step ms (mean) | MFU % | peak GiB |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for key, row in results.get("fit", {}).items():
        backbone, _, setting = key.partition("/")
        if "error" in row:
            lines.append(f"| {backbone} | {setting} | error: {row['error']} | | | | |")
            continue
        lines.append(
            f"| {backbone} | {setting} | {fmt(row['images_per_s'], 0)} | "
            f"{fmt(row['step_ms_median'])} | {fmt(row['step_ms_mean'])} | "
            f"{fmt(row.get('mfu_pct'))} | {fmt(row.get('peak_memory_gib'))} |"
        )
    lines.append("")
    for backbone, found in results.get("ratios", {}).items():
        for name, ratio in found.items():
            goal = ""
            if name == "c/a":
                verdict = "meets" if ratio >= GOAL_DEVICE_RATIO else "misses"
                goal = f" ({verdict} the goal >= {GOAL_DEVICE_RATIO})"
            lines.append(f"- {backbone}: {name} images/s = {ratio:.2f}{goal}")
    vit = results.get("vit_s16")
    if vit and "error" not in vit:
        mfu = vit["mfu_pct"]
        verdict = (
            f"{'meets' if mfu >= GOAL_VIT_S16_MFU else 'misses'} the goal >= "
            f"{GOAL_VIT_S16_MFU:.0f}%"
            if mfu
            else "no peak"
        )
        lines.append(
            f"- vit_s16 224 px, batch {vit['batch_size']} ({vit['setting']}, model alone): "
            f"{fmt(vit['images_per_s'], 1)} images/s, MFU {fmt(mfu)} % ({verdict})"
        )
    elif vit:
        lines.append(f"- vit_s16: error: {vit['error']}")
    fit = results.get("correctness")
    if fit and "error" not in fit:
        lines.append(
            f"- SimCLR {fit['steps']} steps (fit, bf16, device views + cache): kNN top-1 "
            f"{fmt(fit['trained_knn_top1'], 4)} vs random init {fmt(fit['random_knn_top1'], 4)} "
            f"-> {'beats' if fit['beats_random'] else 'does NOT beat'} random "
            f"(fit {fmt(fit['trained_seconds'], 0)} s, validate {fmt(fit['random_seconds'], 0)} s)"
        )
    elif fit:
        lines.append(f"- correctness run: error: {fit['error']}")
    lines.append(f"- total {fmt(meta.get('seconds'), 0)} s")
    return "\n".join(lines) + "\n"


def save(results: dict[str, Any], out: Path) -> None:
    """Rewrites ``results.json`` and ``results.md``."""
    results["meta"]["seconds"] = time.perf_counter() - results["meta"]["start"]
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "results.md").write_text(markdown(results))


def guarded(
    results: dict[str, Any], where: dict[str, Any], key: str, out: Path, fn: Callable[[], Any]
) -> Any:
    """Runs one measurement: its result, or ``{"error": ...}``; then rewrites the files."""
    start = time.perf_counter()
    try:
        where[key] = fn()
    except Exception as error:  # one measurement's failure must not lose the others
        where[key] = {"error": f"{type(error).__name__}: {str(error)[-300:]}"}
        traceback.print_exc()
    if isinstance(where[key], dict):
        where[key]["section_seconds"] = time.perf_counter() - start
    save(results, out)
    print(f"[{results['meta']['seconds']:6.1f} s] {key}: {where[key]}", flush=True)
    return where[key]


def run(sizes: Sizes, out: Path, data_root: str | None, sections: list[str]) -> dict:
    """The chosen sections in order; returns the results (also written under ``out``)."""
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(sizes.device)
    peak = peak_tflops(device)
    results: dict[str, Any] = {
        "meta": {
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__,
            "mode": "gpu" if device.type == "cuda" else "cpu-smoke",
            "data": data_root or "shapes",
            "sizes": asdict(sizes),
            "peak_bf16_tflops": peak,
            "start": time.perf_counter(),
        },
        "fit": {},
        "ratios": {},
    }
    with tempfile.TemporaryDirectory() as tmp:  # checkpoints stay out of OUTDIR
        work = Path(tmp)
        for backbone in sizes.backbones if "fit" in sections else ():
            for setting in SETTINGS:
                row = guarded(
                    results,
                    results["fit"],
                    f"{backbone}/{setting}",
                    out,
                    lambda b=backbone, s=setting: timed_fit(sizes, b, s, data_root, out, work),
                )
                if "step_ms_median" in row:
                    row["mfu_pct"] = mfu_percent(
                        row.get("flops_per_step"), row["step_ms_median"] / 1000, peak
                    )
                results["ratios"][backbone] = ratios(results["fit"], backbone)
                save(results, out)
        if "vit_s16" in sections:
            guarded(results, results, "vit_s16", out, lambda: vit_s16(sizes, peak))
            if device.type == "cuda":
                torch.cuda.empty_cache()
        if "correctness" in sections:
            guarded(
                results,
                results,
                "correctness",
                out,
                lambda: correctness_run(sizes, data_root, work, out),
            )
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the results")
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU")
    parser.add_argument("--data-root", help="a CIFAR-10 python-pickle folder (else shapes)")
    parser.add_argument(
        "--sections",
        nargs="+",
        choices=SECTIONS,
        help="parts to run, in this order (default: all; --cpu-smoke: fit and correctness)",
    )
    parser.add_argument("--backbones", nargs="+", help="registry presets to time (default both)")
    parser.add_argument("--steps", type=int, help="timed steps per fit (default by mode)")
    parser.add_argument("--correctness-steps", type=int, help="steps of the kNN check's fit")
    args = parser.parse_args(argv)
    sizes = CPU_SMOKE if args.cpu_smoke else GPU
    if args.backbones:
        sizes = replace(sizes, backbones=tuple(args.backbones))
    if args.steps:
        sizes = replace(sizes, steps=args.steps)
    if args.correctness_steps:
        sizes = replace(sizes, correctness_steps=args.correctness_steps)
    if sizes.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU, or pass --cpu-smoke")
    if args.data_root and not Path(args.data_root).is_dir():
        raise SystemExit(f"--data-root {args.data_root} is not a folder (cifar-10-batches-py)")
    sections = args.sections or [s for s in SECTIONS if s != "vit_s16" or not args.cpu_smoke]
    results = run(sizes, args.out, args.data_root, sections)
    print(markdown(results))


if __name__ == "__main__":
    main()
