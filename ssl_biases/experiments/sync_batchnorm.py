"""Synchronised BatchNorm that also works on CPU (gloo), as a Lightning ``LayerSync`` plugin.

``torch.nn.SyncBatchNorm`` only runs on GPU-like devices, so a CPU DDP run (the tests, a
laptop) with BatchNorm in a backbone (ResNet) or a head (SimCLR's and BYOL's projection MLPs)
would normalise every rank with its own half batch and differ from one process with the full
batch. :class:`AnyDeviceSyncBatchNorm` converts BatchNorm layers exactly as Lightning's
``TorchSyncBatchNorm`` does and, on CPU, computes the batch statistics over all ranks with a
differentiable all-reduce (gradients flow to every rank's inputs, as with the CUDA kernel).
On GPU it is plain ``SyncBatchNorm``. Use it with ``trainer.plugins`` (see
``configs/trainer/ddp_cpu.yaml``) or ``AnyDeviceSyncBatchNorm().apply(model)``.
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
from lightning.pytorch.plugins.layer_sync import TorchSyncBatchNorm
from torch import Tensor, nn


class CPUSyncBatchNorm(nn.SyncBatchNorm):
    """``SyncBatchNorm`` whose statistics are all-reduced with autograd on any device."""

    def _world_size(self) -> int:
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return 1
        return dist.get_world_size(self.process_group or dist.group.WORLD)

    def forward(self, input: Tensor) -> Tensor:
        if input.device.type != "cpu" or self._world_size() == 1:
            return super().forward(input)
        self._check_input_dim(input)
        channels = input.shape[1]
        dims = [0, *range(2, input.ndim)]
        count = input.new_full((1,), input.numel() / channels)
        stats = torch.cat([input.sum(dims), (input * input).sum(dims), count])  # [2C + 1]
        with warnings.catch_warnings():  # deprecated in favour of a private API; kept
            warnings.simplefilter("ignore", FutureWarning)
            stats = dist_nn.all_reduce(stats, group=self.process_group or dist.group.WORLD)
        total = stats[-1]
        mean = stats[:channels] / total  # [C]
        var = stats[channels : 2 * channels] / total - mean * mean  # [C], biased
        if self.track_running_stats and self.running_mean is not None:
            self.num_batches_tracked.add_(1)
            factor = (
                self.momentum
                if self.momentum is not None
                else 1.0 / float(self.num_batches_tracked)
            )
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach(), factor)
                self.running_var.lerp_(var.detach() * total / (total - 1), factor)
        shape = [1, channels] + [1] * (input.ndim - 2)
        out = (input - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


class AnyDeviceSyncBatchNorm(TorchSyncBatchNorm):
    """Lightning ``LayerSync`` plugin: BatchNorm -> ``SyncBatchNorm`` that also syncs on CPU."""

    def apply(self, model: nn.Module) -> nn.Module:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        for module in model.modules():
            if type(module) is nn.SyncBatchNorm:
                module.__class__ = CPUSyncBatchNorm
        return model
