"""Target 3 (second half): what the few-shot and layer-wise probes add to a training epoch.

CIFAR-10 sizes: an epoch is 50,000 SimCLR pairs; the probes read a bank of 10,000 train
images and 10,000 test queries (``configs/data/imagefolder.yaml``), with ``vit_tiny`` (32 px,
width 192, depth 6). Measured here, in one process:

- the epoch: the median time of a bare SimCLR training step at ``--batch-size``, times
  ``50,000 / batch`` steps;
- ``FewShotProbe.evaluate`` (shots 1/5/10/25, 3 seeds; it reads the features the validation
  loop extracts anyway) on bank/query features of the real sizes;
- ``LayerwiseKNNProbe``: its extra ``forward_intermediates`` pass over the 20,000 probe images
  (the time of one batch, scaled) plus its ``evaluate`` (a kNN per block) on real sizes;
- for context, the per-epoch validation work (a forward pass over the 20,000 probe images,
  the kNN probe).

A probe run every ``--every`` epochs adds ``cost / every`` to each epoch: printed as a share
of the epoch (target <= 10%) and as the ratio (epoch + cost / every) / epoch.

``--validation-root DIR`` measures instead one real validation (``Trainer.validate`` of a
random-init ``vit_tiny`` SimCLR on an image folder such as the CIFAR-10 JPEGs, ``--bank``
train images, ``--queries`` test images), with the kNN probe only and with the kNN, offline
linear and few-shot probes (interleaved, ``--repeats`` each), against the median training
step at ``--batch-size``: what the offline linear and few-shot probes cost per validation,
in training steps.

Usage::

    .venv/bin/python benchmarks/probes.py [--batch-size 64 --every 10]
    .venv/bin/python benchmarks/probes.py --validation-root ../shared/data/cifar10 \
        --bank 2000 --queries 2000 --batch-size 256 --repeats 2
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from ssl_biases.backbones import create_backbone
from ssl_biases.methods.simclr import SimCLR
from ssl_biases.probes.fewshot import FewShotProbe
from ssl_biases.probes.knn import KNNProbe
from ssl_biases.probes.layerwise import LayerwiseKNNProbe, block_features
from ssl_biases.probes.linear import LinearProbe

TRAIN, BANK, QUERIES = 50_000, 10_000, 10_000


def timed(fn: Callable[[], object], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def step_seconds(method: SimCLR, batch_size: int, repeats: int) -> float:
    """Median time of a bare SimCLR training step on random 32 px views."""
    optimizer = torch.optim.AdamW(method.parameters(), lr=1e-3)
    views = [torch.randn(batch_size, 3, 32, 32) for _ in range(2)]

    def train_step() -> None:
        loss, _ = method.ssl_step(views)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    train_step()  # warm-up
    return timed(train_step, repeats)


def validation(args: argparse.Namespace) -> None:
    """One ``Trainer.validate`` with the kNN probe alone and with the linear/few-shot probes."""
    import lightning.pytorch as pl

    from ssl_biases.data.datamodule import SSLDataModule

    torch.manual_seed(0)
    method = SimCLR(create_backbone("vit_tiny"))
    data = SSLDataModule(
        dataset="imagefolder",
        root=args.validation_root,
        max_probe_train_samples=args.bank,
        max_val_samples=args.queries,
        num_workers=2,
    )

    def validate(with_probes: bool) -> float:
        probes = [LinearProbe(), FewShotProbe()] if with_probes else []
        trainer = pl.Trainer(
            accelerator="cpu",
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            callbacks=[KNNProbe(), *probes],
        )
        start = time.perf_counter()
        trainer.validate(method, datamodule=data, verbose=False)
        return time.perf_counter() - start

    validate(False)  # warm-up: file lists, worker start, first matmuls
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.repeats):
        for with_probes in (False, True):
            times[with_probes].append(validate(with_probes))
    step = step_seconds(method, args.batch_size, args.repeats)
    bare, full = statistics.median(times[False]), statistics.median(times[True])
    print(f"threads={torch.get_num_threads()} bank={args.bank} queries={args.queries}")
    print(f"validation, kNN only: {bare:.1f} s {[round(t, 1) for t in times[False]]}")
    print(
        f"validation, kNN + offline linear + few-shot: {full:.1f} s "
        f"{[round(t, 1) for t in times[True]]}"
    )
    print(f"training step (batch {args.batch_size}): {step:.2f} s")
    print(
        f"offline linear + few-shot: {full - bare:.1f} s per validation = "
        f"{(full - bare) / step:.1f} training steps; whole validation {full / step:.1f} steps"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--validation-root", help="an image folder: time real validations")
    parser.add_argument("--bank", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=2000)
    args = parser.parse_args()
    if args.validation_root:
        validation(args)
        return
    torch.manual_seed(0)
    method = SimCLR(create_backbone("vit_tiny"))
    step = step_seconds(method, args.batch_size, args.repeats)
    epoch = step * TRAIN / args.batch_size
    images = torch.randn(256, 3, 32, 32)
    with torch.no_grad():
        forward = timed(lambda: method.backbone(images), args.repeats) * (BANK + QUERIES) / 256
        blocks = timed(lambda: block_features(method.backbone, images), args.repeats)
    blocks *= (BANK + QUERIES) / 256

    g = torch.Generator().manual_seed(0)
    bank, query = torch.randn(BANK, 192, generator=g), torch.randn(QUERIES, 192, generator=g)
    bank_labels = torch.arange(BANK) % 10
    query_labels = torch.randint(0, 10, (QUERIES,), generator=g)
    fewshot = timed(lambda: FewShotProbe().evaluate(bank, bank_labels, query, query_labels), 1)
    layerwise_probe = LayerwiseKNNProbe(every_n_epochs=args.every)
    layerwise_probe._widths = [192] * 6  # what _collect_batch records for vit_tiny
    bank6, query6 = bank.repeat(1, 6), query.repeat(1, 6)  # [N, 6 * 192]
    layerwise_eval = timed(
        lambda: layerwise_probe.evaluate(bank6, bank_labels, query6, query_labels), 1
    )
    knn = timed(lambda: KNNProbe().evaluate(bank, bank_labels, query, query_labels), 1)

    print(f"threads={torch.get_num_threads()} batch={args.batch_size}")
    print(f"epoch (50,000 pairs): {epoch:.0f} s ({step:.2f} s/step)")
    print(
        f"per-epoch validation, for context: forward over 20,000 probe images {forward:.1f} s, "
        f"kNN probe {knn:.1f} s"
    )
    for name, cost in (
        ("few-shot (evaluate)", fewshot),
        ("layer-wise (extra pass + evaluate)", blocks + layerwise_eval),
        ("both", fewshot + blocks + layerwise_eval),
    ):
        share = cost / args.every / epoch
        print(
            f"{name}: {cost:.1f} s per evaluation; every {args.every} epochs adds "
            f"{100 * share:.2f}% to an epoch; RATIO {1 + share:.3f} (target <= 1.10)"
        )
    print(
        f"  layer-wise parts: forward_intermediates {blocks:.1f} s, kNN per block "
        f"{layerwise_eval:.1f} s"
    )


if __name__ == "__main__":
    main()
