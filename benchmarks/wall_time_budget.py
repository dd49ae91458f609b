"""Methods at equal wall time: kNN top-1 of every method after the same ``--trainer.max_time``.

A user with a small budget (say 10 minutes on a laptop) asks which method to pick. For each
method config, ``ssl-biases fit`` trains the same backbone on the same data for the same wall
time, with ``--trainer.max_time`` as the only bound, so the time budget sizes the schedules
(warm-up, cosine decay, teacher momentum: ``ssl_biases.run.budget.TimeBudget``) and they end
inside the budget. Then the backbone gets the weighted kNN (k=20, T=0.07;
``ssl_biases.probes.knn``) on a fixed probe bank and fixed queries. The random-init floor is
the same backbone, built from the same configs and seed, untrained, probed the same way. The
table gives per method the steps made in the budget, the kNN top-1 and its gain over the floor.

The default setting is the families grid's (``configs/experiment/families_cifar10_quick.yaml``:
width 64, depth 4, patch 8 on 32 px, gap pooling; batch 128; a 5,000-image probe bank and
2,000 queries), on the whole CIFAR-10 training set, with every data default a user gets:
``--data.cache auto`` decodes the 50,000 JPEGs once before the first step (outside the budget,
inside ``fit_s``) for the methods with device views; I-JEPA's worker views read the files
during training, on the budget's cores, as they do for a user.

Usage (CPU, 5 minutes a method, 13 methods + the floor: about 1 h 20 min; 10 minutes: about
2 h 30 min)::

    .venv/bin/python benchmarks/wall_time_budget.py --root ../shared/data/cifar10 \\
        --max-time 00:00:05:00 --json docs/results/wall_time_cpu.json

``--methods`` picks a subset; ``--json`` keeps every finished run (keyed by method, budget,
batch size and seed), so a rerun skips them and seeds can run one at a time into one file;
``--table-only`` prints the table of the rows so far. A smoke run: ``--dataset shapes
--max-time 00:00:00:05 --backbone-arg width=32``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from ssl_biases.cli import SSLBiasesCLI, cli_main
from ssl_biases.data.datamodule import SSLDataModule
from ssl_biases.experiments.wall_time import FLOOR, format_table
from ssl_biases.probes.knn import knn_scores, topk_accuracy

ROOT = Path(__file__).resolve().parents[1]
METHODS = (
    "simclr", "byol", "mocov3", "vicreg", "barlow_twins", "dino", "ibot", "ijepa", "mae",
    "masked", "swav", "lejepa", "emp_ssl",
)  # fmt: skip
IMAGE_SIZE = 32
FAMILIES_BACKBONE = {  # configs/experiment/families_cifar10_quick.yaml
    "patch_size": 8, "width": 64, "depth": 4, "num_heads": 4, "mlp_ratio": 2.0, "pool": "gap",
}  # fmt: skip


def backbone_args(opts: argparse.Namespace) -> dict[str, Any]:
    """The families grid's backbone, with ``--backbone-arg KEY=VALUE`` (YAML values) on top."""
    pairs = (item.split("=", 1) for item in opts.backbone_arg)
    return {**FAMILIES_BACKBONE, **{key: yaml.safe_load(value) for key, value in pairs}}


def fit_args(method: str, opts: argparse.Namespace, work_dir: Path) -> list[str]:
    """The ``ssl-biases fit`` arguments of one method (the floor: SimCLR's, untrained)."""
    config = "simclr" if method == FLOOR else method
    args = [
        "--config", str(ROOT / "configs" / "method" / f"{config}.yaml"),
        "--config", str(ROOT / "configs" / "backbone" / "vit_tiny.yaml"),
        "--data.dataset", opts.dataset, "--data.image_size", str(IMAGE_SIZE),
        "--data.batch_size", str(opts.batch_size), "--data.num_workers", str(opts.num_workers),
        "--data.shapes_size", str(opts.shapes_size), "--seed_everything", str(opts.seed),
        "--trainer.accelerator", opts.accelerator, "--trainer.max_time", opts.max_time,
        "--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--checkpoint.monitor", "null",
        "--trainer.logger.init_args.save_dir", str(work_dir),
        "--trainer.logger.init_args.name", f"{method}_seed{opts.seed}",
    ]  # fmt: skip
    if opts.root is not None:
        args += ["--data.root", opts.root]
    if opts.max_train_samples is not None:
        args += ["--data.max_train_samples", str(opts.max_train_samples)]
    for key, value in backbone_args(opts).items():
        text = value if isinstance(value, str) else json.dumps(value)
        args += [f"--model.init_args.backbone.init_args.{key}", text]
    return [*args, *opts.fit_args]


def train(method: str, opts: argparse.Namespace, work_dir: Path) -> tuple[nn.Module, int]:
    """``(backbone, steps made)``: ``fit`` within the budget, or the untrained floor."""
    args = fit_args(method, opts, work_dir)
    if method == FLOOR:  # the same configs and seed: the backbone every method starts from
        return SSLBiasesCLI(args=args, run=False).model.backbone, 0
    cli = cli_main(["fit", *args])
    return cli.model.backbone, int(cli.trainer.global_step)


@torch.no_grad()
def knn_top1(backbone: nn.Module, opts: argparse.Namespace) -> float:
    """Weighted kNN top-1 (k=20, T=0.07) of the probe queries against the probe bank."""
    data = SSLDataModule(
        dataset=opts.dataset, root=opts.root, image_size=IMAGE_SIZE,
        num_workers=opts.num_workers, shapes_size=opts.shapes_size,
        max_probe_train_samples=opts.max_probe_train_samples, max_val_samples=opts.max_val_samples,
    )  # fmt: skip
    device = torch.device("cuda" if opts.accelerator == "gpu" else "cpu")
    backbone = backbone.to(device).eval()
    embedded = []
    for loader in data.probe_dataloaders():  # [bank, queries]
        features, labels = zip(*((backbone(x.to(device)), y) for x, y in loader), strict=True)
        embedded.append((torch.cat(features).float(), torch.cat(labels).to(device)))
    (bank, bank_labels), (query, query_labels) = embedded
    scores = knn_scores(query, bank, bank_labels, data.num_classes, k=20, temperature=0.07)
    return topk_accuracy(scores, query_labels, 1)


def row_key(row: dict[str, Any]) -> tuple:
    """What makes two rows the same run: method, budget, batch size and seed."""
    return (row["method"], row["max_time"], row["batch_size"], row["seed"])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated")
    parser.add_argument("--no-floor", action="store_true", help="skip the random-init floor")
    parser.add_argument("--max-time", default="00:00:10:00", help="DD:HH:MM:SS per method")
    parser.add_argument("--dataset", choices=("imagefolder", "shapes"), default="imagefolder")
    parser.add_argument("--root", default=None, help="imagefolder root with train/ and test/")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shapes-size", type=int, default=2000)
    parser.add_argument("--max-train-samples", type=int, default=None)
    parser.add_argument("--max-probe-train-samples", type=int, default=5000)
    parser.add_argument("--max-val-samples", type=int, default=2000)
    parser.add_argument("--accelerator", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument(
        "--backbone-arg", action="append", default=[], metavar="KEY=VALUE",
        help="override an argument of the families grid's backbone (tests: width=32)",
    )  # fmt: skip
    parser.add_argument("--work-dir", default=None, help="the fit runs (default: a temp dir)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--table-only", action="store_true", help="print the --json table")
    parser.add_argument(
        "--fit-args", nargs=argparse.REMAINDER, default=[],
        help="extra `ssl-biases fit` arguments for every run (last on the line)",
    )  # fmt: skip
    opts = parser.parse_args(argv)
    unknown = sorted(set(opts.methods.split(",")) - set(METHODS))
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {list(METHODS)}")
    if any("=" not in item for item in opts.backbone_arg):
        parser.error(f"--backbone-arg takes KEY=VALUE, got {opts.backbone_arg}")
    if opts.table_only:
        if opts.json is None or not Path(opts.json).exists():
            parser.error(f"--table-only reads the rows of --json FILE; got {opts.json!r}")
        return opts
    if opts.dataset == "imagefolder" and opts.root is None:
        parser.error("--dataset imagefolder needs --root (a folder with train/ and test/)")
    return opts


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    opts = parse_args(argv)
    rows = json.loads(Path(opts.json).read_text()) if opts.json and Path(opts.json).exists() else []
    if opts.table_only:
        print(format_table(rows))
        return rows
    done = {row_key(r) for r in rows}
    methods = ([] if opts.no_floor else [FLOOR]) + opts.methods.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        work_dir = Path(opts.work_dir or tmp)
        for method in methods:
            row = {"method": method, "max_time": opts.max_time, "batch_size": opts.batch_size,
                   "seed": opts.seed}  # fmt: skip
            if row_key(row) in done:
                continue
            start = time.perf_counter()
            backbone, row["steps"] = train(method, opts, work_dir)
            row["fit_s"] = time.perf_counter() - start
            row["knn_top1"] = knn_top1(backbone, opts)
            rows.append(row)
            if opts.json is not None:  # after every run: an interruption loses only one
                Path(opts.json).write_text(json.dumps(rows, indent=2))
            print(json.dumps(row), flush=True)
    print(format_table(rows))
    return rows


if __name__ == "__main__":
    main()
