"""Every method fits under the shipped ``configs/trainer/ddp.yaml`` with 2 CPU processes.

``ddp.yaml`` is the GPU recipe (``strategy: ddp``, so ``find_unused_parameters=False``, and
``bf16-mixed``); here it is adapted to CPU the way ``ddp_cpu.yaml`` does it (``accelerator:
cpu``, BatchNorm synchronised by ``AnyDeviceSyncBatchNorm`` instead of torch's GPU-only
``SyncBatchNorm``, no loader workers) and nothing else. A parameter that gets no gradient makes
DDP fail at the second step ("Expected to have finished reduction in the prior iteration"),
so each method runs 2 steps. Two processes are spawned once (gloo, torchrun-style
environment) and fit every method in turn through the CLI; each test reads one method's
outcome.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import traceback
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ssl_biases.cli import cli_main

import helpers
from helpers import CONFIGS, fit_args

WORLD = 2
STEPS = 2
METHODS = sorted(p.stem for p in (CONFIGS / "method").glob("*.yaml") if p.stem != "lens")
CASES = [*METHODS, "simclr+lens"]  # the lens: manual optimisation, two optimizers
SMALL_HEADS = {  # methods helpers.HEADS leaves at their default widths
    "barlow_twins": ["--model.init_args.projection_hidden_dim=64"],
    "vicreg": ["--model.init_args.projection_hidden_dim=64"],
}
SMALL_HEADS["barlow_twins"].append("--model.init_args.projection_dim=32")
SMALL_HEADS["vicreg"].append("--model.init_args.projection_dim=32")
CPU_ADAPTATION = """\
trainer:
  accelerator: cpu
  devices: 2
  sync_batchnorm: false  # torch's SyncBatchNorm is GPU-only: the plugin below does it on CPU
  plugins:
    - class_path: ssl_biases.run.sync_batchnorm.AnyDeviceSyncBatchNorm
data:
  num_workers: 0
  pin_memory: false
"""


def case_args(case: str, folder: Path) -> list[str]:
    method, _, modifier = case.partition("+")
    folder.mkdir(parents=True, exist_ok=True)
    adaptation = folder / "ddp_on_cpu.yaml"
    adaptation.write_text(CPU_ADAPTATION)
    extra = [f"--config={CONFIGS / 'method' / f'{modifier}.yaml'}"] if modifier else []
    helpers.HEADS.setdefault(method, [])  # (in the spawned process) fit_args looks it up
    args = fit_args(
        method,
        folder,
        *extra,
        *SMALL_HEADS.get(method, []),
        f"--config={CONFIGS / 'trainer' / 'ddp.yaml'}",
        f"--config={adaptation}",
        f"--trainer.max_steps={STEPS}",
        "--checkpoint.every_n_train_steps=0",
    )
    return args


def worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD), NODE_RANK="0",
    )  # fmt: skip
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=60)
    )
    results = {}
    for case in CASES:
        folder = Path(out_dir) / case
        try:
            cli = cli_main(case_args(case, folder))
            results[case] = {"steps": cli.trainer.global_step, "error": None}
        except Exception as err:  # noqa: BLE001 - recorded, asserted by the test
            results[case] = {"steps": -1, "error": "".join(traceback.format_exception(err))}
        dist.barrier()
    (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(results))
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_fits(tmp_path_factory) -> list[dict]:
    out_dir = tmp_path_factory.mktemp("ddp_methods")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cwd = os.getcwd()
    os.chdir(out_dir)  # the runs' directories
    try:
        mp.spawn(worker, args=(port, str(out_dir)), nprocs=WORLD, join=True)
    finally:
        os.chdir(cwd)
    return [json.loads((out_dir / f"rank{r}.json").read_text()) for r in range(WORLD)]


def test_every_method_config_is_covered():
    assert {"simclr", "dino", "mae", "ibot", "ijepa", "masked"} <= set(METHODS)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_two_process_ddp_fit_has_no_unused_parameter(case, ddp_fits):
    for rank, results in enumerate(ddp_fits):
        outcome = results[case]
        assert outcome["error"] is None, f"rank {rank}:\n{outcome['error']}"
        assert outcome["steps"] == STEPS
