"""DDP on CPU: 2 gloo ranks with half the batch each == 1 process with the full batch.

Two processes are started once (``torch.multiprocessing.spawn``, torchrun-style environment)
and do everything the tests compare: for SimCLR (negatives gathered across ranks), BYOL,
DINO (centre all-reduced), MoCo v3 (keys gathered), VICReg (variance and covariance over the
gathered batch), Barlow Twins (C of the gathered batch), LeJEPA (SIGReg's sums all-reduced),
SwAV (Sinkhorn's sums all-reduced) and EMP-SSL (the coding rate of the gathered batch) one
training step on the rank's half batch with BatchNorm synchronised by
:class:`AnyDeviceSyncBatchNorm`, gradients averaged as DDP averages them; then a Lightning
``Trainer(strategy="ddp", devices=2)`` validation with the kNN and few-shot probes. The
single-process references run in the test process.

Tolerance: losses, gradients and DINO's centre to ``rtol=1e-4, atol=1e-5`` (float32
reductions in a different order; ``atol=1e-4`` for Barlow Twins and EMP-SSL, whose gradients
are about ten times larger); probe metrics exactly.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor

from ssl_biases.backbones import IsotropicNet
from ssl_biases.data.datamodule import SSLDataModule
from ssl_biases.methods import BYOL, DINO, EMPSSL, BarlowTwins, LeJEPA, MoCoV3, SimCLR, SwAV, VICReg
from ssl_biases.methods.base import SSLMethod
from ssl_biases.probes.fewshot import FewShotProbe
from ssl_biases.probes.knn import KNNProbe
from ssl_biases.probes.rankme import RankMeProbe
from ssl_biases.run.sync_batchnorm import AnyDeviceSyncBatchNorm, CPUSyncBatchNorm

WORLD = 2
BATCH = 8  # full batch; each rank gets BATCH // WORLD
METHODS = ("simclr", "byol", "dino")
METHODS += ("mocov3", "vicreg", "barlow_twins")  # keys, VICReg's terms, Barlow's C: global batch
# SIGReg's characteristic-function sums, Sinkhorn's normalisations, the coding rate: global batch
METHODS += ("lejepa", "swav", "swav_queue", "emp_ssl")  # swav_queue: a full queue joins Sinkhorn
VIEW_SIZES = {"lejepa": (16, 16, 8, 8), "swav": (16, 16, 8, 8), "emp_ssl": (16, 16, 16)}
VIEW_SIZES["swav_queue"] = VIEW_SIZES["swav"]
RTOL, ATOL = 1e-4, 1e-5
# Barlow Twins' loss sums d^2 entries of C (gradients up to ~10 here): float noise on gradients
# that are exactly zero (a bias in front of a BatchNorm) reaches 1e-5 there.
ATOL_SCALE = {"barlow_twins": 10.0}
ATOL_SCALE["emp_ssl"] = 10.0  # the same (gradients up to ~20: the coding rate's log det x 200)


def make_method(name: str) -> SSLMethod:
    torch.manual_seed(0)
    backbone = IsotropicNet(image_size=16, patch_size=4, width=32, depth=1, num_heads=2, pool="gap")
    small = {"projection_hidden_dim": 32, "projection_dim": 16}
    if name == "simclr":
        model = SimCLR(backbone, **small)
    elif name == "byol":
        model = BYOL(backbone, **small, prediction_hidden_dim=32)
    elif name == "mocov3":
        model = MoCoV3(backbone, **small)
    elif name == "vicreg":
        model = VICReg(backbone, **small)
    elif name == "barlow_twins":
        model = BarlowTwins(backbone, **small)
    elif name == "lejepa":
        model = LeJEPA(backbone, **small, sigreg_num_vectors=64)
    elif name == "swav":
        model = SwAV(backbone, **small, n_prototypes=8)
    elif name == "swav_queue":
        model = SwAV(backbone, **small, n_prototypes=8, queue_length=16, queue_start_fraction=0.0)
    elif name == "emp_ssl":
        model = EMPSSL(backbone, **small, n_patches=3)
    else:
        model = DINO(backbone, hidden_dim=32, bottleneck_dim=16, output_dim=64, n_local_views=0)
        model.total_steps = lambda: 100.0  # the teacher-temperature schedule needs a length
    return AnyDeviceSyncBatchNorm().apply(model)


def make_views(name: str = "") -> list[Tensor]:
    generator = torch.Generator().manual_seed(1)
    sizes = VIEW_SIZES.get(name, (16, 16))
    return [torch.randn(BATCH, 3, size, size, generator=generator) for size in sizes]


def train_step(name: str, rank: int, world: int) -> dict[str, Tensor]:
    """One step on this rank's slice; loss and gradients averaged over ranks as DDP does."""
    model = make_method(name).train()
    part = BATCH // world
    views = [v[rank * part : (rank + 1) * part] for v in make_views(name)]
    if name == "swav_queue":  # two earlier global batches fill the queue (16 rows) first
        generator = torch.Generator().manual_seed(2)
        for _ in range(2):
            z = torch.randn(2, BATCH, 16, generator=generator)  # [2 global views, B, P]
            z = torch.nn.functional.normalize(z, dim=-1)
            model.queue_logits(z[:, rank * part : (rank + 1) * part].reshape(-1, 16), part)
    loss, _ = model.ssl_step(views)
    loss.backward()
    out = {"loss": loss.detach().clone()}
    for key, param in model.named_parameters():
        if param.grad is not None:
            out[f"grad/{key}"] = param.grad.clone()
    out |= {f"buffer/{k}": b.clone() for k, b in model.named_buffers() if "running" in k}
    if name == "dino":
        out["center"] = model.criterion.center.clone()
    if world > 1:
        for key, value in out.items():
            if key == "loss" or key.startswith("grad/"):
                dist.all_reduce(value)
                value /= world
    return out


def probe_metrics(devices: int) -> dict[str, float]:
    """Validate a fixed (random) SimCLR with the kNN and few-shot probes."""
    data = SSLDataModule(
        dataset="shapes", image_size=16, shapes_size=76, shapes_num_classes=3, probe_batch_size=5,
        num_workers=0, max_probe_train_samples=41, seed=0,
    )  # fmt: skip
    trainer = pl.Trainer(
        accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
        callbacks=[KNNProbe(k=5), FewShotProbe(shots=(1, 3), seeds=(0, 1), every_n_epochs=1),
                   RankMeProbe()],
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False,
    )  # fmt: skip
    per_loader = trainer.validate(make_method("simclr"), datamodule=data, verbose=False)
    return {k: float(v) for metrics in per_loader for k, v in metrics.items()}


def worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD), NODE_RANK="0",
    )  # fmt: skip
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    results = {name: train_step(name, rank, WORLD) for name in METHODS}
    results["probes"] = probe_metrics(devices=WORLD)
    if rank == 0:
        torch.save(results, Path(out_dir) / "ddp.pt")
    dist.barrier()
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory) -> dict:
    out_dir = tmp_path_factory.mktemp("ddp")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(worker, args=(port, str(out_dir)), nprocs=WORLD, join=True)
    return torch.load(out_dir / "ddp.pt")


@pytest.mark.parametrize("name", METHODS)
def test_two_ranks_give_the_full_batch_loss_and_gradients(name, ddp_results):
    reference = train_step(name, rank=0, world=1)
    ddp = ddp_results[name]
    assert set(ddp) == set(reference)
    assert any(k.startswith("grad/backbone") for k in ddp)
    atol = ATOL * ATOL_SCALE.get(name, 1.0)
    bad = {
        key: (ddp[key] - value).abs().max().item()
        for key, value in reference.items()
        if not torch.allclose(ddp[key], value, rtol=RTOL, atol=atol)
    }
    assert not bad, f"max abs differences: {bad}"


def test_batchnorm_heads_are_synchronised(ddp_results):
    model = make_method("simclr")
    assert any(isinstance(m, CPUSyncBatchNorm) for m in model.modules())
    assert any(k.startswith("buffer/") for k in ddp_results["simclr"])  # running stats compared


def test_probes_give_the_single_process_metrics(ddp_results):
    reference = probe_metrics(devices=1)
    ddp = ddp_results["probes"]
    assert {"val/knn_top1", "val/fewshot_1shot", "val/fewshot_3shot"} <= set(reference)
    for key in ("val/knn_top1", "val/knn_top5", "val/fewshot_1shot", "val/fewshot_3shot"):
        assert ddp[key] == pytest.approx(reference[key], abs=1e-6), key
    assert ddp["val/rankme"] == pytest.approx(reference["val/rankme"], rel=1e-5)  # 41 rows, 1 pad


def test_cli_fit_with_two_cpu_processes_completes(tmp_path):
    """The whole CLI under 2-process DDP: no rank waits alone in a collective (a hang)."""
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    backbone = tmp_path / "bb.yaml"
    backbone.write_text(
        "model:\n  init_args:\n    backbone:\n      class_path: ssl_biases.backbones.IsotropicNet\n"
        "      init_args: {width: 32, depth: 2, num_heads: 2, patch_size: 4, mlp_ratio: 2.0}\n"
    )
    command = [
        sys.executable, "-m", "ssl_biases", "fit",
        "--config", str(root / "configs/method/simclr.yaml"), "--config", str(backbone),
        "--config", str(root / "configs/data/shapes.yaml"),
        "--config", str(root / "configs/trainer/ddp_cpu.yaml"),
        "--data.shapes_size", "128", "--data.batch_size", "16",
        "--data.max_probe_train_samples", "32", "--trainer.max_steps", "3",
        "--trainer.enable_progress_bar", "false",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    status = json.loads((tmp_path / "runs/ssl/version_0/status.json").read_text())
    assert status["status"] == "completed" and status["global_step"] == 3
