"""Trainer configs for scaling out: bf16 mixed precision runs on CPU; DDP configs build."""

import torch
from lightning.pytorch.strategies import DDPStrategy

from ssl_biases.cli import SSLBiasesCLI
from ssl_biases.run.sync_batchnorm import AnyDeviceSyncBatchNorm

from helpers import CONFIGS
from helpers import tiny_args as cli_tiny_args


def tiny_args(backbone_config: str, *extra: str) -> list[str]:
    """One epoch at 16 px on 64 shapes."""
    return cli_tiny_args(
        backbone_config,
        "--data.image_size", "16",
        "--data.shapes_size", "64",
        "--data.max_probe_train_samples", "32",
        "--trainer.max_epochs", "1",
        *extra,
    )  # fmt: skip


def test_bf16_mixed_fit_runs_on_cpu_in_bfloat16(tmp_path, monkeypatch, tiny_backbone_config):
    monkeypatch.chdir(tmp_path)
    cli = SSLBiasesCLI(
        tiny_args(tiny_backbone_config, "--trainer.accelerator", "cpu", "--trainer.precision",
                  "bf16-mixed"),
        run=False,
    )  # fmt: skip
    dtypes: list[torch.dtype] = []
    linear = next(m for m in cli.model.backbone.modules() if isinstance(m, torch.nn.Linear))
    linear.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    before = [p.detach().clone() for p in cli.model.backbone.parameters()]
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.precision == "bf16-mixed"
    assert torch.bfloat16 in dtypes  # autocast ran the backbone's matmuls in bf16
    params = list(cli.model.backbone.parameters())
    assert all(p.dtype == torch.float32 for p in params)  # master weights stay fp32
    assert any(not torch.equal(a, b) for a, b in zip(before, params))  # it trained
    loss = cli.trainer.callback_metrics["train/loss"]
    assert torch.isfinite(loss)


def test_ddp_cpu_config_builds_a_two_process_ddp_trainer_with_synced_batchnorm(
    tmp_path, monkeypatch, tiny_backbone_config
):
    monkeypatch.chdir(tmp_path)
    cli = SSLBiasesCLI(
        tiny_args(tiny_backbone_config, "--config", str(CONFIGS / "trainer/ddp_cpu.yaml")),
        run=False,
    )
    trainer = cli.trainer
    assert isinstance(trainer.strategy, DDPStrategy)
    assert trainer.num_devices == 2 and trainer.accelerator.__class__.__name__ == "CPUAccelerator"
    assert isinstance(trainer.strategy._layer_sync, AnyDeviceSyncBatchNorm)
