"""Target 5: training throughput (images/s) and model FLOP utilisation (MFU) on one GPU.

A SimCLR training step (backbone on two views, lightly's projection head and NT-Xent loss,
AdamW) of a registered backbone -- by default ``vit_s16`` (ViT-S/16 at 224 px: width 384,
depth 12, 6 heads) -- under several settings, all in one process so every ratio is against the
baseline measured in the same run:

- ``fp32``: eager float32 (TF32 matmuls off), the baseline;
- ``bf16``: ``torch.autocast`` bfloat16, as ``--trainer.precision bf16-mixed`` does;
- ``bf16-math-attn``: bf16 with fused attention kernels off (SDPA's math backend), to show
  what fused attention brings;
- ``bf16-compile``: bf16 with the backbone compiled (``--model.init_args.training.compile true``);
- ``bf16-channels-last``: bf16 with ``channels_last`` inputs and weights (for conv backbones:
  ``resnet50``, ``convmixer_tiny``).

FLOPs per step are counted once with ``torch.utils.flop_counter.FlopCounterMode`` (matmuls,
convolutions and attention, forward and backward); MFU = FLOPs/s / the card's dense bf16 peak
(looked up by name, or ``--peak-tflops``). Images/s counts both views.

Usage (on a GPU)::

    python benchmarks/gpu_throughput.py [--backbone vit_s16 --batch-size 128]
    python benchmarks/gpu_throughput.py --backbone resnet50 --settings fp32 bf16 bf16-channels-last

A CPU smoke run: ``--device cpu --backbone vit_tiny --image-size 32 --batch-size 4 --steps 2``.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Iterator

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from ssl_biases.backbones import create_backbone

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) from the vendors' data sheets.
PEAK_BF16_TFLOPS = {
    "H200": 989.4,
    "H100 PCIe": 756.0,
    "H100": 989.4,  # SXM
    "A100": 312.0,
    "L40S": 362.1,
    "L4": 121.0,
    "A10": 125.0,
    "RTX 4090": 165.2,
}
SETTINGS = ("fp32", "bf16", "bf16-math-attn", "bf16-compile", "bf16-channels-last")


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override is not None:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_TFLOPS.items() if key in name), None)


class SimCLRStep:
    """One SimCLR optimisation step on ``[2B, 3, S, S]`` views."""

    def __init__(self, backbone_name: str, setting: str, device: torch.device) -> None:
        torch.manual_seed(0)
        self.backbone = create_backbone(backbone_name).to(device)
        self.head = SimCLRProjectionHead(self.backbone.num_features, 512, 128).to(device)
        self.criterion = NTXentLoss(temperature=0.2)
        params = [*self.backbone.parameters(), *self.head.parameters()]
        fused = device.type == "cuda"
        self.optimizer = torch.optim.AdamW(params, lr=1e-4, fused=fused)
        self.setting, self.device = setting, device
        self.channels_last = setting.endswith("channels-last")
        if self.channels_last:
            self.backbone = self.backbone.to(memory_format=torch.channels_last)
        if setting.endswith("compile"):
            self.backbone.compile()  # what Training(compile=True) does

    @contextlib.contextmanager
    def context(self) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            if self.setting != "fp32":
                stack.enter_context(torch.autocast(self.device.type, dtype=torch.bfloat16))
            if self.setting.endswith("math-attn"):
                stack.enter_context(sdpa_kernel(SDPBackend.MATH))
            yield

    def __call__(self, views: torch.Tensor) -> None:
        if self.channels_last:
            views = views.contiguous(memory_format=torch.channels_last)
        with self.context():
            z0, z1 = self.head(self.backbone(views)).chunk(2)  # 2 x [B, 128]
            loss = self.criterion(z0.float(), z1.float())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(step: SimCLRStep, views: torch.Tensor, warmup: int, steps: int) -> float:
    """Median seconds per step over ``steps`` after ``warmup`` (compilation happens there)."""
    for _ in range(warmup):
        step(views)
    synchronize(views.device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step(views)
        synchronize(views.device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="vit_s16", help="a registered backbone name")
    parser.add_argument("--batch-size", type=int, default=128, help="pairs of views per step")
    parser.add_argument("--image-size", type=int, default=224, help="the backbone's image size")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument(
        "--settings",
        nargs="+",
        default=["fp32", "bf16", "bf16-math-attn", "bf16-compile"],
        choices=SETTINGS,
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--peak-tflops", type=float, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU, or pass --device cpu for a smoke run")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 for the baseline
        torch.backends.cudnn.allow_tf32 = False
        print(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    size = args.image_size
    views = torch.randn(2 * args.batch_size, 3, size, size, device=device)  # both views
    peak = peak_tflops(device, args.peak_tflops)

    counter = FlopCounterMode(display=False)
    with counter:
        SimCLRStep(args.backbone, "fp32", device)(views)
    flops = counter.get_total_flops()  # forward + backward of one step
    print(
        f"{args.backbone} at {size} px, batch {args.batch_size} pairs "
        f"({2 * args.batch_size} images/step), {flops / 1e12:.3f} TFLOP/step, "
        f"peak {peak if peak else 'unknown'} TFLOP/s bf16"
    )
    baseline = None
    for setting in args.settings:
        seconds = measure(
            SimCLRStep(args.backbone, setting, device), views, args.warmup, args.steps
        )
        images = 2 * args.batch_size / seconds
        baseline = baseline or images
        mfu = f"{100 * flops / seconds / (peak * 1e12):.1f}%" if peak else "n/a"
        print(
            f"{setting:20s} {images:10.1f} img/s  {flops / seconds / 1e12:7.2f} TFLOP/s  "
            f"MFU {mfu:>6s}  RATIO vs {args.settings[0]}: {images / baseline:.2f}",
            flush=True,
        )
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
