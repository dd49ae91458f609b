"""Target 1: steps/s of ``ssl-biases fit`` against a bare PyTorch loop on the same work.

Both sides train SimCLR on ``vit_tiny`` (32 px) from the same in-memory batches of two views
(ready tensors, so neither pays for augmentation): lightly's ``SimCLRProjectionHead`` and
``NTXentLoss``, AdamW on the same parameter groups and LR. The framework side is the real CLI
(``SSLBiasesCLI`` with the project's configs and defaults: online linear probe, kNN and offline
linear probe callbacks, checkpointing, LR monitor, TensorBoard + CSV loggers, the Rich progress
bar, the warm-up + cosine schedule); only its training loader is swapped for the in-memory one.
The bare side is ``forward -> loss -> zero_grad -> backward -> step``.

Runs alternate (bare, framework, bare, framework, ...) so load changes on a shared machine hit
both; each run times its steady-state steps (after ``--warmup`` steps) and the figure is the
median over runs of the per-run median step time. Validation (the probes) happens at the end of
the framework's epoch, outside the timed steps, and is reported on its own line.

With ``--data-path default`` the framework side is the *default* ``fit`` a user runs on the
CIFAR-10 JPEGs (``configs/data/imagefolder.yaml``, ``--data.root``, default ``--data.augment
auto`` and ``--data.num_workers``): its real loader, view making and probes' per-step hooks,
nothing swapped, on the CPU (``--trainer.accelerator cpu``, like the bare loop). The bare side
stays the loop on ready tensors, so the ratio is what the framework *and* its data path cost
against the model alone (issue 30's target: >= 0.95). A framework step is then timed from one
``on_train_batch_end`` to the next, which includes waiting for the loader, the host-to-device
copy and ``--data.augment device``'s views (all of which happen before
``on_train_batch_start``). Validation is off in this mode (``--trainer.limit_val_batches 0``):
the probes run after training, outside the steps. ``--fit-arg`` adds CLI arguments to the
framework's command line (e.g. ``--fit-arg=--data.augment=workers`` to time the worker path).
Wall time only: the loader workers' CPU time is not this process's, so ``--cpu-time`` is
refused.

With ``--micro`` both sides use ``vit_tiny`` shrunk to width 16, depth 1, 8 px patches: a step
then costs milliseconds and the difference is the framework's own time per step, which added
to a real ``vit_tiny`` step gives the ratio at any batch size.

On a shared machine, ``--threads 1 --cpu-time`` times steps in this process's CPU time with
one intra-op thread (no OpenMP threads waiting to be scheduled): a measure of the work each
side does per step that other jobs barely disturb.

Usage::

    .venv/bin/python benchmarks/overhead.py --threads 1 --cpu-time --batch-size 16 --steps 4
    .venv/bin/python benchmarks/overhead.py [--batch-size 256 --steps 10 --repeats 3] [--profile]
    .venv/bin/python benchmarks/overhead.py --micro --batch-size 16 --steps 100 --repeats 5
    .venv/bin/python benchmarks/overhead.py --data-path default --steps 10 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from torch.utils.data import DataLoader

from ssl_biases.backbones import create_backbone
from ssl_biases.cli import SSLBiasesCLI
from ssl_biases.data.datamodule import SSLDataModule
from ssl_biases.methods.base import split_weight_decay

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CIFAR10_JPEGS = Path(__file__).resolve().parents[2] / "shared/data/cifar10"  # ../shared/data


def make_batches(count: int, batch_size: int, image_size: int) -> list:
    """``count`` ready SimCLR batches ``([view0, view1], labels)`` held in memory."""
    g = torch.Generator().manual_seed(0)
    views = lambda: torch.randn(batch_size, 3, image_size, image_size, generator=g)  # noqa: E731
    return [
        ([views(), views()], torch.randint(0, 4, (batch_size,), generator=g)) for _ in range(count)
    ]


# The clock of the step timings: wall time, or with ``--cpu-time`` the CPU time of this
# process (all its threads), which other jobs on a shared machine barely change.
CLOCK = [time.perf_counter]

# ``--micro``: vit_tiny shrunk until a step costs milliseconds, so the framework's own
# per-step cost is not drowned in the model's time (and in the noise of a shared machine).
MICRO = {"width": 16, "depth": 1, "num_heads": 1, "patch_size": 8}


def bare_loop(batches: list, warmup: int, micro: bool) -> list[float]:
    """Step times (s) of the plain PyTorch loop after ``warmup`` steps."""
    torch.manual_seed(0)
    backbone = create_backbone("vit_tiny", **(MICRO if micro else {}))
    head = SimCLRProjectionHead(backbone.num_features, 512, 128)
    criterion = NTXentLoss(temperature=0.2)
    modules = torch.nn.ModuleDict({"backbone": backbone, "projection_head": head})
    optimizer = torch.optim.AdamW(
        split_weight_decay(modules.named_parameters()), lr=1e-3, weight_decay=0.05
    )
    times = []
    for step, (views, _) in enumerate(batches):
        start = CLOCK[0]()
        features = backbone(torch.cat(views))  # [2B, D]
        z0, z1 = head(features).chunk(2)  # 2 x [B, 128]
        loss = criterion(z0, z1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= warmup:
            times.append(CLOCK[0]() - start)
    return times


class StepTimer(pl.Callback):
    """Times whole training steps (batch start to batch end, hooks and logging included).

    With ``between_ends`` a step is the time from one batch end to the next: it then also
    holds the wait for the loader and everything before ``on_train_batch_start`` (the
    transfer, ``on_after_batch_transfer``: device views).
    """

    def __init__(self, warmup: int, between_ends: bool = False) -> None:
        self.warmup, self.times, self.val_seconds = warmup, [], 0.0
        self.between_ends = between_ends
        self._start = self._val_start = 0.0
        self._last_end: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        self._start = CLOCK[0]()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        now = CLOCK[0]()
        start = self._last_end if self.between_ends else self._start
        if batch_idx >= self.warmup and start is not None:
            self.times.append(now - start)
        self._last_end = now

    def on_validation_start(self, trainer, pl_module) -> None:  # noqa: ANN001
        self._val_start = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        if not trainer.sanity_checking:
            self.val_seconds += time.perf_counter() - self._val_start


def default_fit_argv(args: argparse.Namespace) -> list[str]:
    """The default ``fit`` on the CIFAR-10 JPEG tree: the shipped configs, nothing swapped."""
    return [
        "fit",
        "--config", str(CONFIGS / "method/simclr.yaml"),
        "--config", str(CONFIGS / "backbone/vit_tiny.yaml"),
        "--config", str(CONFIGS / "data/imagefolder.yaml"),
        "--data.root", str(Path(args.data_root).resolve()),
        "--data.batch_size", str(args.batch_size),
        "--data.image_size", str(args.image_size),
        "--trainer.accelerator", "cpu",
        "--trainer.max_steps", str(args.warmup + args.steps),
        "--trainer.limit_val_batches", "0",  # the probes are not part of a step
        *args.fit_arg,
    ]  # fmt: skip


def framework_run(batches: list, args: argparse.Namespace) -> tuple[list[float], float, float]:
    """``ssl-biases fit`` (one epoch over ``batches``, or with ``--data-path default`` the
    default fit on the JPEGs): step times, validation s, fit wall s."""
    default = args.data_path == "default"
    if default:
        argv = default_fit_argv(args)
    else:
        argv = [
            "fit",
            "--config", str(CONFIGS / "method/simclr.yaml"),
            "--config", str(CONFIGS / "backbone/vit_tiny.yaml"),
            "--config", str(CONFIGS / "data/shapes.yaml"),
            "--data.batch_size", str(args.batch_size),
            "--data.shapes_size", str(args.shapes_size),
            "--data.num_workers", "0",
            "--trainer.max_epochs", "1",
        ]  # fmt: skip
    if args.profile:
        argv += ["--trainer.profiler", "simple"]
    if args.micro:
        argv += [
            f"--model.init_args.backbone.init_args.{key}={value}" for key, value in MICRO.items()
        ]
    if args.no_progress_bar:
        argv += ["--trainer.enable_progress_bar", "false"]
    timer = StepTimer(args.warmup, between_ends=default)

    class TimedCLI(SSLBiasesCLI):
        def _instantiate_trainer(self, config, callbacks):  # noqa: ANN001, ANN202
            return super()._instantiate_trainer(config, [*callbacks, timer])

    loader = DataLoader(batches, batch_size=None, shuffle=False, num_workers=0)
    original = SSLDataModule.train_dataloader
    if not default:  # the in-memory batches, nothing else
        SSLDataModule.train_dataloader = lambda self: loader
    try:
        start = time.perf_counter()
        cli = TimedCLI(args=argv)
        wall = time.perf_counter() - start
    finally:
        SSLDataModule.train_dataloader = original
    if default:
        dm = cli.datamodule
        print(f"default fit: {dm.views_made_on} views, cache {dm.cache}", flush=True)
    if args.profile:
        steps = args.warmup + args.steps if default else len(batches)
        per_step = hook_seconds_per_step(cli.trainer.profiler.recorded_durations, steps)
        top = sorted(per_step.items(), key=lambda item: -item[1])[:8]
        print(
            f"framework hooks per training step: {1000 * sum(per_step.values()):.2f} ms; "
            f"largest: {[(name, round(1000 * t, 2)) for name, t in top]}"
        )
    return timer.times, timer.val_seconds, wall


PER_STEP_HOOKS = (
    "on_train_batch_start",
    "on_train_batch_end",
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_before_zero_grad",
    "optimizer_zero_grad",
    "lr_scheduler_step",
    "train_dataloader_next",
    "on_train_batch",
)


def hook_seconds_per_step(durations: dict[str, list[float]], steps: int) -> dict[str, float]:
    """Seconds per training step spent in Lightning's per-step hooks (SimpleProfiler)."""
    return {
        name: sum(times) / steps
        for name, times in durations.items()
        if any(hook in name for hook in PER_STEP_HOOKS)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=256, help="pairs of views per step")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shapes-size", type=int, default=512, help="size of the probe data")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--profile", action="store_true", help="Lightning SimpleProfiler summary")
    parser.add_argument("--no-progress-bar", action="store_true")
    parser.add_argument("--micro", action="store_true", help="a tiny model: time the framework")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--cpu-time", action="store_true", help="time steps in process CPU time")
    parser.add_argument(
        "--data-path",
        choices=("ready", "default"),
        default="ready",
        help="the framework's training batches: ready in-memory tensors, or the default fit's "
        "own data path on the CIFAR-10 JPEGs (--data-root)",
    )
    parser.add_argument("--data-root", default=str(CIFAR10_JPEGS), help="root/{train,test}/<class>")
    parser.add_argument(
        "--fit-arg",
        action="append",
        default=[],
        help="with --data-path default: one more fit argument (--fit-arg=--data.augment=workers)",
    )
    args = parser.parse_args()
    if args.data_path == "default":
        if args.cpu_time:
            parser.error(
                "--cpu-time does not count the loader workers' CPU time: time --data-path "
                "default in wall time (leave out --cpu-time)"
            )
        args.data_root = str(Path(args.data_root).resolve())  # before the chdir below
        if not (Path(args.data_root) / "train").is_dir():
            parser.error(f"no '{args.data_root}/train/<class>/' JPEG tree: set --data-root")
    elif args.fit_arg:
        parser.error("--fit-arg changes the default fit: add --data-path default")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cpu_time:
        CLOCK[0] = time.process_time
    print(
        f"torch {torch.__version__} threads={torch.get_num_threads()} cpus={os.cpu_count()} "
        f"batch={args.batch_size} steps={args.steps}+{args.warmup} repeats={args.repeats} "
        f"data-path={args.data_path}"
    )
    batches = make_batches(args.steps + args.warmup, args.batch_size, args.image_size)
    bare, framework, validation, walls = [], [], [], []
    with tempfile.TemporaryDirectory() as workdir:
        cwd = os.getcwd()
        os.chdir(workdir)  # the run directory lands in the temporary folder
        try:
            for repeat in range(args.repeats):
                bare.append(statistics.median(bare_loop(batches, args.warmup, args.micro)))
                times, val_s, wall = framework_run(batches, args)
                framework.append(statistics.median(times))
                validation.append(val_s)
                walls.append(wall)
                print(
                    f"repeat {repeat}: bare {bare[-1]:.3f} s/step, framework {framework[-1]:.3f} "
                    f"s/step, validation {val_s:.2f} s, fit wall {wall:.1f} s",
                    flush=True,
                )
        finally:
            os.chdir(cwd)
    bare_s, framework_s = statistics.median(bare), statistics.median(framework)
    ratios = [b / f for b, f in zip(bare, framework)]
    print(f"bare loop      : {1 / bare_s:.3f} steps/s ({bare_s:.3f} s/step)")
    fit = "default fit    " if args.data_path == "default" else "ssl-biases fit "
    print(f"{fit}: {1 / framework_s:.3f} steps/s ({framework_s:.3f} s/step)")
    print(f"per-repeat ratios: {[round(r, 3) for r in ratios]}")
    print(f"framework time per step beyond the bare loop: {1000 * (framework_s - bare_s):.1f} ms")
    print(
        f"RATIO fit / bare steps/s (median of paired repeats): {statistics.median(ratios):.3f} "
        "(target >= 0.95)"
    )
    if args.data_path == "default":
        print("validation: off (--trainer.limit_val_batches 0); the probes are not in a step")
        return
    print(
        f"end-of-epoch validation (kNN + offline linear on {args.shapes_size} + "
        f"{args.shapes_size // 4} shapes images): median {statistics.median(validation):.2f} s"
    )


if __name__ == "__main__":
    sys.exit(main())
