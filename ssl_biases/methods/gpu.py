"""Train as you benchmark: fp32 losses under bf16, fused optimizers, channels_last, compile.

What :class:`~ssl_biases.methods.base.SSLMethod` does so that a ``fit`` on a GPU runs the way
``benchmarks/gpu_check`` times it (issue 28, items 4 and 5; docs/performance.md, section
"bf16, fused AdamW, channels_last, compile"):

- **fp32 losses.** Under ``bf16-mixed`` Lightning runs the training step inside
  ``torch.autocast``, where matmuls and einsums give bf16: a contrastive loss's
  temperature-scaled logits, DINO's softmaxes and centre would be bf16 numbers (about 0.5 %
  off). :func:`compute_in_fp32` makes a loss module run with autocast off and its floating
  inputs cast to float32 (the backbone and heads stay in bf16); :func:`fp32_loss` does the same
  for a loss written as a function or method. The base applies :func:`compute_in_fp32` to every
  submodule whose attribute name ends with ``criterion``.
- **fused optimizers** (:func:`fused_kwargs`), **channels_last** for conv backbones
  (:func:`wants_channels_last`) and **compile** of every backbone entry point a method calls
  (:func:`compile_entry_points`).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_map

AUTOCAST_DEVICES = ("cuda", "cpu")
LOSS_SUFFIX = "criterion"
"""A method's submodule whose attribute name ends with this is a loss: it runs in fp32."""

FUSABLE = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD)
"""torch optimizers with a ``fused`` CUDA implementation (one kernel for all parameters)."""

ENTRY_POINTS = ("embed_patches", "forward_tokens", "pool_tokens", "forward_features")
"""Backbone methods that methods call besides ``forward`` (MAE, masked, I-JEPA, iBOT)."""

F = TypeVar("F", bound=Callable[..., Any])


def _float32(value: Any) -> Any:
    if isinstance(value, Tensor) and value.is_floating_point():
        return value.float()
    return value


@contextlib.contextmanager
def autocast_off() -> Iterator[bool]:
    """Disables autocast on every device where it is on; yields whether any was on."""
    with contextlib.ExitStack() as stack:
        active = False
        for device_type in AUTOCAST_DEVICES:
            if torch.is_autocast_enabled(device_type):
                stack.enter_context(torch.autocast(device_type, enabled=False))
                active = True
        yield active


def fp32_loss(fn: F) -> F:
    """Decorator: ``fn`` runs with autocast off and, when autocast was on, its floating tensor
    arguments (also inside lists, tuples, dicts) cast to float32.

    For a loss written as a function or a method; a loss module named ``*criterion`` on a
    method gets this from the base (:func:`compute_in_fp32`).
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with autocast_off() as active:
            if active:
                args, kwargs = tree_map(_float32, (args, kwargs))
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _enter_fp32(
    module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    stack = contextlib.ExitStack()
    active = stack.enter_context(autocast_off())
    module.__dict__.setdefault("_fp32_stack", []).append(stack)
    return tree_map(_float32, (args, kwargs)) if active else (args, kwargs)


def _exit_fp32(module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
    module.__dict__["_fp32_stack"].pop().close()


def compute_in_fp32(module: nn.Module) -> nn.Module:
    """Makes ``module`` (a loss) run with autocast off and float32 inputs under autocast.

    Two forward hooks (``always_call``, so an exception restores autocast too); the module, its
    class and its ``state_dict`` stay as they are. Idempotent. Returns ``module``.
    """
    if not module.__dict__.get("_fp32_hooked", False):
        module.register_forward_pre_hook(_enter_fp32, with_kwargs=True)
        module.register_forward_hook(_exit_fp32, with_kwargs=True, always_call=True)
        module.__dict__["_fp32_hooked"] = True
    return module


def fused_kwargs(optimizer: torch.optim.Optimizer, device_type: str | None = None) -> dict:
    """``{"fused": True}`` when ``optimizer`` should be rebuilt fused, else ``{}``.

    Fused when the optimizer is Adam, AdamW or SGD (:data:`FUSABLE`, exact class), neither
    ``fused`` nor ``foreach`` was set by the user, every parameter is a floating tensor and all
    are on one CUDA device type (``device_type``, read from the parameters when ``None``).
    """
    if type(optimizer) not in FUSABLE:
        return {}
    defaults = optimizer.defaults
    if defaults.get("fused") is not None or defaults.get("foreach") is not None:
        return {}  # the user's choice
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if not params or not all(p.is_floating_point() for p in params):
        return {}
    if device_type is None:
        types = {p.device.type for p in params}
        device_type = types.pop() if len(types) == 1 else None
    return {"fused": True} if device_type == "cuda" else {}


def wants_channels_last(backbone: nn.Module, device_type: str) -> bool:
    """channels_last (NHWC) for a conv backbone on CUDA: cuDNN's fast layout for convolutions.

    A conv backbone has more than one ``Conv2d`` (ResNets; isotropic nets with a conv stem or
    conv token mixer); a patch-embedding convolution alone (a ViT) does not count.
    """
    convs = sum(isinstance(m, nn.Conv2d) for m in backbone.modules())
    return device_type == "cuda" and convs > 1


def to_channels_last(value: Any) -> Any:
    """4-D tensors (also inside lists) in channels_last memory format; others as they are."""
    return tree_map(
        lambda t: (
            t.contiguous(memory_format=torch.channels_last)
            if isinstance(t, Tensor) and t.ndim == 4
            else t
        ),
        value,
    )


def compile_entry_points(backbone: nn.Module, **options: Any) -> list[str]:
    """``torch.compile`` the backbone's ``forward`` and every entry point of
    :data:`ENTRY_POINTS` it has, in place (``state_dict`` keys stay the same).

    Methods that encode through ``embed_patches``/``forward_tokens`` (MAE, masked modelling,
    I-JEPA, iBOT) bypass ``forward``; compiling those too makes ``compile: true`` reach them.

    Args:
        backbone: The module to compile.
        options: ``torch.compile`` keyword arguments (e.g. ``backend``).

    Returns:
        The names compiled (``"forward"`` first).
    """
    backbone.compile(**options)  # nn.Module.compile: __call__ runs the compiled forward
    names = ["forward"]
    for name in ENTRY_POINTS:
        method = getattr(backbone, name, None)
        if callable(method):
            setattr(backbone, name, torch.compile(method, **options))  # instance attribute
            names.append(name)
    return names
