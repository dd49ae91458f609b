"""Synchronised BatchNorm that also works on CPU (gloo), as a Lightning ``LayerSync`` plugin.

``torch.nn.SyncBatchNorm`` only runs on GPU-like devices, so a CPU DDP run (the tests, a
laptop) with BatchNorm in a backbone (ResNet) or a head (SimCLR's and BYOL's projection MLPs)
would normalise every rank with its own half batch and differ from one process with the full
batch. :class:`AnyDeviceSyncBatchNorm` converts BatchNorm layers as Lightning's
``TorchSyncBatchNorm`` does on GPU and, on CPU, computes the batch statistics over all ranks
with a differentiable all-reduce (gradients flow to every rank's inputs, as with the CUDA
kernel). Use it with ``trainer.plugins`` (see ``configs/trainer/ddp_cpu.yaml``) or
``AnyDeviceSyncBatchNorm().apply(model)``.
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
from lightning.pytorch.plugins.layer_sync import TorchSyncBatchNorm
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm


class CPUSyncBatchNorm(_BatchNorm):
    """BatchNorm whose training statistics are all-reduced, with autograd, over all ranks.

    Made by swapping the class of an existing ``BatchNorm1d/2d/3d`` (same parameters, buffers
    and state-dict keys); it is not a ``torch.nn.SyncBatchNorm``, which DDP refuses on CPU.
    """

    _plain_class: type[_BatchNorm]

    def _check_input_dim(self, input: Tensor) -> None:
        if input.ndim < 2:
            raise ValueError(f"expected at least 2D input (got {input.ndim}D input)")

    def _world_size(self) -> int:
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return 1
        return dist.get_world_size()

    def forward(self, input: Tensor) -> Tensor:
        if self._world_size() == 1:
            return super().forward(input)
        self._check_input_dim(input)
        dtype = input.dtype  # bf16 under autocast: the statistics are summed in fp32
        input = input.float()
        channels = input.shape[1]
        dims = [0, *range(2, input.ndim)]
        count = input.new_full((1,), input.numel() / channels)
        stats = torch.cat([input.sum(dims), (input * input).sum(dims), count])  # [2C + 1]
        with warnings.catch_warnings():  # deprecated in favour of a private API; kept
            warnings.simplefilter("ignore", FutureWarning)
            stats = dist_nn.all_reduce(stats)  # summed over ranks, gradients flow back
        total = stats[-1]
        mean = stats[:channels] / total  # [C]
        var = stats[channels : 2 * channels] / total - mean * mean  # [C], biased
        if self.track_running_stats and self.running_mean is not None:
            self.num_batches_tracked.add_(1)
            momentum = self.momentum
            factor = momentum if momentum is not None else 1.0 / float(self.num_batches_tracked)
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach(), factor)
                self.running_var.lerp_(var.detach() * total / (total - 1), factor)
        shape = [1, channels] + [1] * (input.ndim - 2)
        out = (input - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(dtype)


class AnyDeviceSyncBatchNorm(TorchSyncBatchNorm):
    """Lightning ``LayerSync`` plugin: synchronised BatchNorm on CPU (and on any device).

    A model whose parameters are on a GPU gets ``torch.nn.SyncBatchNorm`` (Lightning's
    ``TorchSyncBatchNorm``); otherwise every BatchNorm becomes a :class:`CPUSyncBatchNorm`.
    Lightning applies layer sync *before* moving the model to its device, so under the
    Trainer this is always :class:`CPUSyncBatchNorm`, which is correct on GPU as well (NCCL
    all-reduce) but unfused: on GPUs use ``trainer.sync_batchnorm: true`` instead.
    """

    def apply(self, model: nn.Module) -> nn.Module:
        param = next(model.parameters(), None)
        if param is not None and param.device.type != "cpu":
            return super().apply(model)
        for module in model.modules():
            if isinstance(module, _BatchNorm) and not isinstance(module, CPUSyncBatchNorm):
                if isinstance(module, nn.SyncBatchNorm):
                    continue
                module._plain_class = type(module)
                module.__class__ = CPUSyncBatchNorm
        return model

    def revert(self, model: nn.Module) -> nn.Module:
        for module in model.modules():
            if isinstance(module, CPUSyncBatchNorm):
                module.__class__ = module._plain_class
        return super().revert(model)
