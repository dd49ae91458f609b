"""Equal budget: the framework's ``fit`` against bare lightly-style PyTorch loops.

For SimCLR, BYOL, VICReg, MoCo v3, SwAV, LeJEPA and EMP-SSL, a bare loop in the style of
lightly's ``examples/pytorch/<method>.py`` (a small ``nn.Module`` with lightly's heads, lightly's
loss and view transform, a plain ``DataLoader`` and ``for`` loop) trains the same backbone
(``create_backbone('vit_tiny')``) on the same data with the optimiser, LR (scaled by
``batch / 256`` as the framework scales it), weight-decay groups, warm-up + cosine schedule
and teacher-momentum schedule of ``configs/method/<method>.yaml``. Then the framework's
``fit`` runs the same configs for the same steps and seed, and both backbones get the same
weighted kNN (k=20, T=0.07; ``ssl_biases.probes.knn``) on the same probe bank and queries.
A table prints the kNN top-1 of both and the difference (framework - bare).

What differs by design: the bare loops embed the two views in two passes (as lightly's
examples do; the framework uses one pass of both views, so its head BatchNorm sees 2B
images), draw their data order and augmentations from their own seeded generators, and have
no online probe. MoCo v3 has no lightly example or loss; its bare loop writes the paper's
``ctr`` (arXiv 2104.02057, Algorithm 1) directly. The multi-crop loops (SwAV: lightly's
``SwaVTransform``, prototypes frozen with ``n_steps_frozen_prototypes``; LeJEPA: lightly's
``DINOTransform`` as in its LeJEPA example; EMP-SSL: fixed-scale crops with VICReg's colours)
embed each crop in its own pass, as lightly's examples do. EMP-SSL's bare loop uses lightly's
``tcr_loss`` and ``invariance_loss`` with the paper's sign, as the framework does
(``ssl_biases.methods.emp_ssl``): lightly 1.6's ``EMPSSLLoss`` adds the coding rate.

Usage (the CIFAR-10 JPEG tree, on a GPU)::

    .venv/bin/python benchmarks/equal_budget.py --dataset imagefolder \\
        --root ../shared/data/cifar10 --steps 500 --batch-size 256 --num-workers 8

A smoke run: ``--steps 2 --batch-size 16 --dataset shapes``.

With ``--json ROWS.json`` every finished run is written at once and a rerun with the same file
skips the runs it already holds (keyed by method, mode, steps, batch size and seed), so a
long CPU run survives an interruption and the seeds can run one at a time into one file; the
table then also gives, per method, the mean difference over the seeds with its 95 % interval.
``--json ROWS.json --table-only`` prints the table of the rows so far and trains nothing.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
import yaml
from lightly.loss import LeJEPALoss, NegativeCosineSimilarity, NTXentLoss, SwaVLoss, VICRegLoss
from lightly.loss.emp_ssl_loss import invariance_loss, tcr_loss
from lightly.models.modules import (
    BYOLPredictionHead,
    BYOLProjectionHead,
    LeJEPAProjectionHead,
    MoCoProjectionHead,
    SimCLRProjectionHead,
    SwaVProjectionHead,
    SwaVPrototypes,
)
from lightly.models.modules.heads import ProjectionHead, VICRegProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.transforms import (
    BYOLTransform,
    BYOLView1Transform,
    BYOLView2Transform,
    DINOTransform,
    SimCLRTransform,
    SwaVTransform,
    VICRegTransform,
)
from lightly.transforms.gaussian_blur import GaussianBlur
from lightly.transforms.multi_view_transform import MultiViewTransform
from lightly.transforms.solarize import RandomSolarization
from lightly.transforms.torchvision_v2_compatibility import torchvision_transforms as T
from lightly.utils.scheduler import CosineWarmupScheduler, cosine_schedule
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from ssl_biases.backbones import create_backbone
from ssl_biases.cli import cli_main
from ssl_biases.data.datamodule import SSLDataModule, TransformedDataset, fixed_subset
from ssl_biases.data.datasets import NORMALIZE, build_dataset
from ssl_biases.experiments.equal_budget import format_table
from ssl_biases.methods.base import split_weight_decay
from ssl_biases.probes.knn import knn_scores, topk_accuracy

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("simclr", "byol", "vicreg", "mocov3", "swav", "lejepa", "emp_ssl")
BACKBONE = "vit_tiny"
IMAGE_SIZE = 32


def method_args(method: str) -> dict[str, Any]:
    """The ``init_args`` of ``configs/method/<method>.yaml``."""
    config = yaml.safe_load((ROOT / "configs" / "method" / f"{method}.yaml").read_text())
    return config["model"]["init_args"]


# ------------------------------------------------------------------ bare lightly-style models
class SimCLR(nn.Module):
    def __init__(self, backbone: nn.Module, a: dict[str, Any]) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection_head = SimCLRProjectionHead(
            backbone.num_features, a["projection_hidden_dim"], a["projection_dim"]
        )
        self.criterion = NTXentLoss(temperature=a["temperature"])

    def forward(self, x: Tensor) -> Tensor:
        return self.projection_head(self.backbone(x))

    def loss(self, x0: Tensor, x1: Tensor) -> Tensor:
        return self.criterion(self(x0), self(x1))


class BYOL(nn.Module):
    def __init__(self, backbone: nn.Module, a: dict[str, Any]) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection_head = BYOLProjectionHead(
            backbone.num_features, a["projection_hidden_dim"], a["projection_dim"]
        )
        self.prediction_head = BYOLPredictionHead(
            a["projection_dim"], a["prediction_hidden_dim"], a["projection_dim"]
        )
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)
        self.criterion = NegativeCosineSimilarity()

    def forward(self, x: Tensor) -> Tensor:
        return self.prediction_head(self.projection_head(self.backbone(x)))

    def forward_momentum(self, x: Tensor) -> Tensor:
        return self.projection_head_momentum(self.backbone_momentum(x)).detach()

    def loss(self, x0: Tensor, x1: Tensor) -> Tensor:
        p0, p1 = self(x0), self(x1)
        z0, z1 = self.forward_momentum(x0), self.forward_momentum(x1)
        return 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))

    def update_momentum(self, m: float) -> None:
        update_momentum(self.backbone, self.backbone_momentum, m=m)
        update_momentum(self.projection_head, self.projection_head_momentum, m=m)


class VICReg(nn.Module):
    def __init__(self, backbone: nn.Module, a: dict[str, Any]) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection_head = VICRegProjectionHead(
            backbone.num_features,
            a["projection_hidden_dim"],
            a["projection_dim"],
            a["projection_layers"],
        )
        self.criterion = VICRegLoss(
            lambda_param=a["lambda_param"],
            mu_param=a["mu_param"],
            nu_param=a["nu_param"],
            eps=a["eps"],
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.projection_head(self.backbone(x))

    def loss(self, x0: Tensor, x1: Tensor) -> Tensor:
        return self.criterion(self(x0), self(x1))


class MoCoV3(nn.Module):
    def __init__(self, backbone: nn.Module, a: dict[str, Any]) -> None:
        super().__init__()
        hidden, out = a["projection_hidden_dim"], a["projection_dim"]
        self.backbone = backbone
        self.projection_head = MoCoProjectionHead(backbone.num_features, hidden, out, 3, True)
        self.prediction_head = MoCoProjectionHead(out, hidden, out, 2, True)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)
        self.temperature = a["temperature"]

    def forward(self, x: Tensor) -> Tensor:
        return self.prediction_head(self.projection_head(self.backbone(x)))

    def forward_momentum(self, x: Tensor) -> Tensor:
        return self.projection_head_momentum(self.backbone_momentum(x)).detach()

    def ctr(self, q: Tensor, k: Tensor) -> Tensor:
        logits = F.normalize(q, dim=1) @ F.normalize(k, dim=1).T / self.temperature  # [B, B]
        labels = torch.arange(q.shape[0], device=q.device)
        return 2 * self.temperature * F.cross_entropy(logits, labels)

    def loss(self, x0: Tensor, x1: Tensor) -> Tensor:
        q0, q1 = self(x0), self(x1)
        k0, k1 = self.forward_momentum(x0), self.forward_momentum(x1)
        return self.ctr(q0, k1) + self.ctr(q1, k0)

    def update_momentum(self, m: float) -> None:
        update_momentum(self.backbone, self.backbone_momentum, m=m)
        update_momentum(self.projection_head, self.projection_head_momentum, m=m)


class SwAV(nn.Module):
    """lightly's ``examples/pytorch/swav.py``: normalised prototypes, frozen for the config's
    fraction of the steps (``n_steps_frozen_prototypes``), no queue (the config's default)."""

    def __init__(self, backbone: nn.Module, a: dict[str, Any], steps: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection_head = SwaVProjectionHead(
            backbone.num_features, a["projection_hidden_dim"], a["projection_dim"]
        )
        frozen = int(a["freeze_prototypes_fraction"] * steps)
        self.prototypes = SwaVPrototypes(a["projection_dim"], a["n_prototypes"], frozen)
        self.criterion = SwaVLoss(
            temperature=a["temperature"], sinkhorn_iterations=a["sinkhorn_iterations"],
            sinkhorn_epsilon=a["sinkhorn_epsilon"],
        )  # fmt: skip
        self.step = 0

    def before_step(self, step: int) -> None:
        self.prototypes.normalize()
        self.step = step

    def forward(self, x: Tensor) -> Tensor:
        z = F.normalize(self.projection_head(self.backbone(x)), dim=1)
        return self.prototypes(z, self.step)

    def loss(self, *views: Tensor) -> Tensor:
        scores = [self(v) for v in views]
        return self.criterion(scores[:2], scores[2:])[0]


class LeJEPA(nn.Module):
    """lightly's ``examples/pytorch/lejepa.py``: one projector, each view in its own pass."""

    def __init__(self, backbone: nn.Module, a: dict[str, Any], steps: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection_head = LeJEPAProjectionHead(
            backbone.num_features, a["projection_hidden_dim"], a["projection_dim"],
            a["projection_layers"],
        )  # fmt: skip
        self.criterion = LeJEPALoss(
            lambda_param=a["lambda_param"], sigreg_knots=a["sigreg_knots"],
            sigreg_t_max=a["sigreg_t_max"], sigreg_num_vectors=a["sigreg_num_vectors"],
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return self.projection_head(self.backbone(x))

    def loss(self, *views: Tensor) -> Tensor:
        global_proj = torch.stack([self(v) for v in views[:2]])  # [2, B, P]
        local_proj = torch.stack([self(v) for v in views[2:]])  # [n, B, P]
        return self.criterion(local_proj=local_proj, global_proj=global_proj)


class EMPSSL(nn.Module):
    """The authors' model (arXiv 2304.03977): a 2-layer projector, normalised outputs, the
    coding rate and invariance terms of lightly with the paper's sign."""

    def __init__(self, backbone: nn.Module, a: dict[str, Any], steps: int) -> None:
        super().__init__()
        hidden = a["projection_hidden_dim"]
        self.backbone = backbone
        self.projection_head = ProjectionHead(
            [
                (backbone.num_features, hidden, nn.BatchNorm1d(hidden), nn.ReLU()),
                (hidden, a["projection_dim"], None, None),
            ]
        )
        self.tcr_eps, self.inv_coef = a["tcr_eps"], a["inv_coef"]

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.projection_head(self.backbone(x)), dim=1)

    def loss(self, *views: Tensor) -> Tensor:
        z = torch.stack([self(v) for v in views])  # [V, B, d]
        return -tcr_loss(z, eps=self.tcr_eps) + self.inv_coef * invariance_loss(z)


BARE_MODELS: dict[str, type[nn.Module]] = {
    "simclr": SimCLR,
    "byol": BYOL,
    "vicreg": VICReg,
    "mocov3": MoCoV3,
}
MULTI_CROP_MODELS: dict[str, type[nn.Module]] = {"swav": SwAV, "lejepa": LeJEPA, "emp_ssl": EMPSSL}


def multi_crop_transform(method: str, a: dict[str, Any], normalize: dict) -> Callable[[Any], Any]:
    """lightly's crops of SwAV and LeJEPA (local crops at half the image), EMP-SSL's patches."""
    local = IMAGE_SIZE // 2
    if method == "swav":
        kinds = 1 + (a["n_local_views"] > 0)  # global crops, then local ones if any
        sizes, counts = (IMAGE_SIZE, local)[:kinds], (2, a["n_local_views"])[:kinds]
        scales = (a["global_crop_scale"], a["local_crop_scale"])[:kinds]
        return SwaVTransform(
            crop_sizes=sizes, crop_counts=counts, crop_min_scales=tuple(s[0] for s in scales),
            crop_max_scales=tuple(s[1] for s in scales),
            cj_strength=a["cj_strength"], gaussian_blur=a["gaussian_blur"], normalize=normalize,
        )  # fmt: skip
    if method == "lejepa":
        return DINOTransform(
            global_crop_size=IMAGE_SIZE, global_crop_scale=tuple(a["global_crop_scale"]),
            local_crop_size=local, local_crop_scale=tuple(a["local_crop_scale"]),
            n_local_views=a["n_local_views"], cj_strength=a["cj_strength"],
            gaussian_blur=tuple(a["gaussian_blur"]), solarization_prob=a["solarization_prob"],
            normalize=normalize,
        )  # fmt: skip
    strength = a["cj_strength"]  # EMP-SSL: VICReg's view colours on fixed-scale squares
    patch = T.Compose(
        [
            T.RandomResizedCrop(IMAGE_SIZE, scale=(a["crop_scale"],) * 2, ratio=(1.0, 1.0)),
            T.RandomHorizontalFlip(),
            T.RandomApply(
                [T.ColorJitter(0.8 * strength, 0.8 * strength, 0.4 * strength, 0.2 * strength)],
                p=0.8,
            ),
            T.RandomGrayscale(p=0.2),
            GaussianBlur(prob=a["gaussian_blur"]),
            RandomSolarization(prob=a["solarize_prob"]),
            T.ToTensor(),
            T.Normalize(mean=normalize["mean"], std=normalize["std"]),
        ]
    )
    return MultiViewTransform([patch] * a["n_patches"])


def views_transform(method: str, a: dict[str, Any], normalize: dict) -> Callable[[Any], Any]:
    """lightly's view transform of the method, with the config's view settings at 32 px."""
    if method in MULTI_CROP_MODELS:
        return multi_crop_transform(method, a, normalize)
    common = {"input_size": IMAGE_SIZE, "min_scale": a["min_scale"], "normalize": normalize}
    common["cj_strength"] = a["cj_strength"]
    if method == "simclr":
        return SimCLRTransform(
            gaussian_blur=a["gaussian_blur"], random_gray_scale=a.get("random_gray_scale", 0.2),
            **common,
        )  # fmt: skip
    if method == "vicreg":
        return VICRegTransform(
            gaussian_blur=a["gaussian_blur"], solarize_prob=a["solarize_prob"],
            random_gray_scale=a["random_gray_scale"], **common,
        )  # fmt: skip
    return BYOLTransform(  # BYOL and MoCo v3
        view_1_transform=BYOLView1Transform(
            gaussian_blur=a["gaussian_blur"], solarization_prob=0.0, **common
        ),
        view_2_transform=BYOLView2Transform(
            gaussian_blur=0.1 * a["gaussian_blur"],
            solarization_prob=a["solarization_prob"],
            **common,
        ),
    )


# ---------------------------------------------------------------------------- the two runs
def backbone_overrides(opts: argparse.Namespace) -> dict[str, Any]:
    """``--backbone-arg KEY=VALUE`` pairs (values parsed as YAML), for both runs."""
    pairs = (item.split("=", 1) for item in opts.backbone_arg)
    return {key: yaml.safe_load(value) for key, value in pairs}


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train_bare(method: str, opts: argparse.Namespace, device: torch.device) -> nn.Module:
    """The lightly-style loop; returns the trained backbone."""
    seed_all(opts.seed)
    a = method_args(method)
    backbone = create_backbone(BACKBONE, **backbone_overrides(opts))
    if method in MULTI_CROP_MODELS:
        model = MULTI_CROP_MODELS[method](backbone, a, opts.steps).to(device)
    else:
        model = BARE_MODELS[method](backbone, a).to(device)
    mean, std = NORMALIZE[opts.dataset]
    transform = views_transform(method, a, {"mean": list(mean), "std": list(std)})
    if opts.dataset == "imagefolder":
        raw = torchvision.datasets.ImageFolder(os.path.join(opts.root, "train"))
    else:
        raw = build_dataset(opts.dataset, "train", opts.root, IMAGE_SIZE, opts.shapes_size)
    dataset = TransformedDataset(fixed_subset(raw, opts.max_train_samples, 0), transform)
    dataloader = DataLoader(
        dataset, batch_size=opts.batch_size, shuffle=True, drop_last=True,
        num_workers=opts.num_workers, generator=torch.Generator().manual_seed(opts.seed),
    )  # fmt: skip
    optim_args = a["training"]["optimizer"]["init_args"]
    lr = optim_args["lr"] * opts.batch_size / 256  # the framework's scale_lr
    optimizer = torch.optim.AdamW(
        split_weight_decay(model.named_parameters()), lr=lr,
        weight_decay=optim_args["weight_decay"],
    )  # fmt: skip
    warmup = int(a["training"].get("warmup_fraction", 0.05) * opts.steps)
    scheduler = CosineWarmupScheduler(optimizer, warmup, opts.steps, end_value=0.0)
    step = 0
    model.train()
    while step < opts.steps:
        for views, _ in dataloader:
            if hasattr(model, "before_step"):
                model.before_step(step)
            loss = model.loss(*(v.to(device) for v in views))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            scheduler.step()
            if hasattr(model, "update_momentum"):
                model.update_momentum(cosine_schedule(step, opts.steps, a["momentum_start"], 1.0))
            step += 1
            if step == opts.steps:
                break
    return model.backbone


def train_framework(method: str, opts: argparse.Namespace, work_dir: Path) -> nn.Module:
    """``ssl-biases fit`` with the method and backbone configs; returns the trained backbone."""
    data = ["--data.dataset", opts.dataset, "--data.image_size", str(IMAGE_SIZE)]
    if opts.root is not None:
        data += ["--data.root", opts.root]
    if opts.max_train_samples is not None:
        data += ["--data.max_train_samples", str(opts.max_train_samples)]
    for key, value in backbone_overrides(opts).items():
        data += [f"--model.init_args.backbone.init_args.{key}", json.dumps(value)]
    args = [
        "fit",
        "--config", str(ROOT / "configs" / "method" / f"{method}.yaml"),
        "--config", str(ROOT / "configs" / "backbone" / f"{BACKBONE}.yaml"),
        *data,
        "--data.shapes_size", str(opts.shapes_size),
        "--data.batch_size", str(opts.batch_size),
        "--data.num_workers", str(opts.num_workers),
        "--seed_everything", str(opts.seed),
        "--trainer.max_steps", str(opts.steps),
        "--trainer.limit_val_batches", "0",
        "--trainer.num_sanity_val_steps", "0",
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
        "--checkpoint.monitor", "null",
        "--trainer.logger.init_args.save_dir", str(work_dir),
        "--trainer.logger.init_args.name", method,
        *opts.fit_args,
    ]  # fmt: skip
    return cli_main(args).model.backbone


@torch.no_grad()
def knn_top1(backbone: nn.Module, opts: argparse.Namespace, device: torch.device) -> float:
    """Weighted kNN top-1 (k=20, T=0.07) of the probe queries against the probe bank."""
    data = SSLDataModule(
        dataset=opts.dataset, root=opts.root, image_size=IMAGE_SIZE,
        num_workers=opts.num_workers, shapes_size=opts.shapes_size,
        max_probe_train_samples=opts.max_probe_train_samples, max_val_samples=opts.max_val_samples,
    )  # fmt: skip
    backbone = backbone.to(device).eval()
    embedded = []
    for loader in data.probe_dataloaders():  # [bank, queries]
        features, labels = zip(*((backbone(x.to(device)), y) for x, y in loader), strict=True)
        embedded.append((torch.cat(features).float(), torch.cat(labels).to(device)))
    (bank, bank_labels), (query, query_labels) = embedded
    scores = knn_scores(query, bank, bank_labels, data.num_classes, k=20, temperature=0.07)
    return topk_accuracy(scores, query_labels, 1)


def row_key(row: dict[str, Any]) -> tuple:
    """What makes two rows the same run: method, steps, batch size and seed."""
    return (row["method"], row["steps"], row.get("batch_size"), row.get("seed"))


def load_rows(path: str | None) -> list[dict[str, Any]]:
    """The rows of an earlier ``--json`` file, or none."""
    if path is None or not Path(path).exists():
        return []
    return json.loads(Path(path).read_text())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated")
    parser.add_argument("--mode", choices=("both", "bare", "framework"), default="both")
    parser.add_argument("--dataset", choices=("imagefolder", "shapes"), default="imagefolder")
    parser.add_argument("--root", default=None, help="imagefolder root with train/ and test/")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shapes-size", type=int, default=2000)
    parser.add_argument("--max-train-samples", type=int, default=None)
    parser.add_argument("--max-probe-train-samples", type=int, default=10000)
    parser.add_argument("--max-val-samples", type=int, default=None)
    parser.add_argument(
        "--backbone-arg", action="append", default=[], metavar="KEY=VALUE",
        help=f"override an argument of {BACKBONE} in both runs (tests: width=32)",
    )  # fmt: skip
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--work-dir", default=None, help="framework runs (default: a temp dir)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument(
        "--table-only", action="store_true",
        help="print the table of the --json file's rows and exit (no training)",
    )  # fmt: skip
    parser.add_argument(
        "--fit-args", nargs=argparse.REMAINDER, default=[],
        help="extra `ssl-biases fit` arguments for the framework runs (last on the line)",
    )  # fmt: skip
    opts = parser.parse_args(argv)
    unknown = sorted(set(opts.methods.split(",")) - set(METHODS))
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {list(METHODS)}")
    if any("=" not in item for item in opts.backbone_arg):
        parser.error(f"--backbone-arg takes KEY=VALUE, got {opts.backbone_arg}")
    if opts.table_only:  # nothing trains, so nothing else needs checking
        if opts.json is None or not Path(opts.json).exists():
            parser.error(f"--table-only reads the rows of --json FILE; got {opts.json!r}")
        return opts
    if opts.dataset == "imagefolder" and opts.root is None:
        parser.error("--dataset imagefolder needs --root (a folder with train/ and test/)")
    return opts


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    opts = parse_args(argv)
    device = torch.device(opts.device)
    rows = load_rows(opts.json)  # earlier runs into the same file: kept, and not run again
    if opts.table_only:
        print(format_table(rows))
        return rows
    done = {row_key(r): r for r in rows}
    with tempfile.TemporaryDirectory() as tmp:
        work_dir = Path(opts.work_dir or tmp)
        for method in opts.methods.split(","):
            fresh = {"method": method, "steps": opts.steps, "batch_size": opts.batch_size,
                     "seed": opts.seed}  # fmt: skip
            row = done.get(row_key(fresh))
            if row is None:
                row = fresh
                rows.append(row)
            for mode in ("bare", "framework"):
                if opts.mode not in ("both", mode) or mode in row:
                    continue
                start = time.perf_counter()
                if mode == "bare":
                    backbone = train_bare(method, opts, device)
                else:
                    backbone = train_framework(method, opts, work_dir)
                row[f"{mode}_s"] = time.perf_counter() - start
                row[mode] = knn_top1(backbone, opts, device)
                if "bare" in row and "framework" in row:
                    row["difference"] = row["framework"] - row["bare"]
                if opts.json is not None:  # after every run: an interruption loses only one
                    Path(opts.json).write_text(json.dumps(rows, indent=2))
            print(json.dumps(row), flush=True)
    print(format_table(rows))
    return rows


if __name__ == "__main__":
    main()
