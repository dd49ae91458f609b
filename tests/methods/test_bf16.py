"""bf16 done right (issue 28 item 4): under ``bf16-mixed`` every loss runs in fp32.

Each method's fp32 ``ssl_step`` is run once with every loss call recorded (its ``*criterion``
modules, its loss methods, EMP-SSL's loss function); each recorded call is then replayed on
the same inputs in fp32 and under CPU bf16 autocast: the two losses agree within 1e-3
relative and the autocast one is float32. Without the base's fp32 mechanism lightly's losses
under autocast are bf16 einsums/matmuls (the control test shows the error it catches). A short
``fit`` with ``precision: bf16-mixed`` logs losses that are not bf16 numbers.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
from tiny_methods import METHODS, tiny_method
from torch import Tensor, nn
from torch.utils._pytree import tree_map

from ssl_biases.cli import cli_main
from ssl_biases.methods import emp_ssl
from ssl_biases.methods.base import SSLMethod
from ssl_biases.methods.gpu import LOSS_SUFFIX, autocast_off, fp32_loss

from helpers import column, fit_args, read_metrics

RTOL = 1e-3
LOSS_METHODS = {  # losses written as methods (decorated with fp32_loss)
    "mocov3": "contrastive_loss",
    "mae": "pixel_loss",
    "masked": "pixel_loss",
    "ijepa": "latent_loss",
}
Call = tuple[str, Callable[..., Any], tuple, dict]


def _clone(tree: Any) -> Any:
    return tree_map(lambda t: t.detach().clone() if isinstance(t, Tensor) else t, tree)


def record_loss_calls(method: SSLMethod, views: list[Tensor], monkeypatch) -> list[Call]:
    """Runs ``ssl_step`` in fp32; returns ``(name, loss, args, kwargs)`` of every loss call,
    where a module loss is a deep copy taken before its call (a DINO centre, a queue)."""
    calls: list[Call] = []

    def module_hook(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            calls.append((name, copy.deepcopy(module), _clone(args), _clone(kwargs)))

        return hook

    handles = [
        module.register_forward_pre_hook(module_hook(name), with_kwargs=True, prepend=True)
        for name, module in method.named_children()
        if name.endswith(LOSS_SUFFIX)
    ]

    def recorder(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def record(*args: Any, **kwargs: Any) -> Any:
            calls.append((name, fn, _clone(args), _clone(kwargs)))
            return fn(*args, **kwargs)

        return record

    for attr in set(LOSS_METHODS.values()):
        if hasattr(method, attr):
            monkeypatch.setattr(method, attr, recorder(attr, getattr(method, attr)))
    monkeypatch.setattr(emp_ssl, "emp_ssl_loss", recorder("emp_ssl_loss", emp_ssl.emp_ssl_loss))
    method.ssl_step(views)
    for handle in handles:  # off the method and off the copies (which share the hook ids)
        handle.remove()
        for _, loss, _, _ in calls:
            if isinstance(loss, nn.Module):
                loss._forward_pre_hooks.pop(handle.id, None)
                loss._forward_pre_hooks_with_kwargs.pop(handle.id, None)
    return calls


def replay(loss: Callable[..., Any], args: tuple, kwargs: dict, bf16: bool) -> Tensor:
    """The loss on a fresh copy of its state, seeded (SIGReg draws random directions)."""
    fn = copy.deepcopy(loss) if isinstance(loss, nn.Module) else loss
    torch.manual_seed(0)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        return fn(*args, **kwargs)


@pytest.mark.parametrize("name", METHODS)
def test_each_loss_under_bf16_autocast_equals_fp32_on_the_same_features(name, monkeypatch):
    method, views = tiny_method(name)
    calls = record_loss_calls(method, views, monkeypatch)
    assert calls, f"{name}: no loss call recorded (a loss that is neither a *criterion module "
    "nor decorated with fp32_loss)"
    for loss_name, loss, args, kwargs in calls:
        reference = replay(loss, args, kwargs, bf16=False)
        autocast = replay(loss, args, kwargs, bf16=True)
        assert autocast.dtype == torch.float32, (name, loss_name, autocast.dtype)
        rel = ((autocast - reference).abs() / reference.abs().clamp_min(1e-6)).max().item()
        assert rel < RTOL, f"{name}.{loss_name}: relative difference {rel:.2e} under bf16"


@pytest.mark.parametrize("name", ["simclr", "dino"])
def test_without_the_fp32_mechanism_the_same_losses_are_off(name, monkeypatch):
    """The control: the raw loss modules under autocast miss the 1e-3 (so the test above
    would fail without the base's hooks)."""
    method, views = tiny_method(name)
    calls = record_loss_calls(method, views, monkeypatch)
    worst = 0.0
    for _, loss, args, kwargs in calls:
        reference = replay(loss, args, kwargs, bf16=False)
        raw = copy.deepcopy(loss)
        torch.manual_seed(0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = type(raw).forward(raw, *args, **kwargs)  # the hooks bypassed
        worst = max(worst, ((out.float() - reference).abs() / reference.abs()).max().item())
    assert worst > RTOL


def test_fp32_loss_casts_inputs_and_restores_autocast():
    seen: list[torch.dtype] = []

    @fp32_loss
    def loss(xs: list[Tensor], scale: Tensor) -> Tensor:
        seen.extend([xs[0].dtype, scale.dtype, (xs[0] @ xs[0].T).dtype])
        return (xs[0] * scale).sum()

    x = torch.randn(4, 4, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = loss([x], scale=torch.ones((), dtype=torch.bfloat16))
        assert torch.is_autocast_enabled("cpu")  # restored after the call
        assert (torch.randn(2, 2) @ torch.randn(2, 2)).dtype == torch.bfloat16
    assert seen == [torch.float32] * 3 and out.dtype == torch.float32
    with autocast_off() as active:
        assert not active


def test_a_loss_module_restores_autocast_after_an_exception():
    method, _ = tiny_method("simclr")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with pytest.raises(RuntimeError):
            method.criterion(torch.randn(4, 8), torch.randn(3, 5))
        assert torch.is_autocast_enabled("cpu")
    assert method.criterion._forward_pre_hooks  # noqa: SLF001 - the base registered them


def test_ema_update_runs_without_autocast():
    method, _ = tiny_method("byol")
    teacher = next(method.teacher_projection_head.parameters())
    student = next(method.projection_head.parameters())
    with torch.no_grad():
        student.add_(torch.randn_like(student) * 1e-3)
    expected = 0.9 * teacher + 0.1 * student
    with torch.autocast("cpu", dtype=torch.bfloat16):
        method.update_teachers(0.9)
    assert teacher.dtype == torch.float32
    torch.testing.assert_close(teacher, expected, rtol=0, atol=1e-7)


def _is_bf16(value: float) -> bool:
    return float(torch.tensor(value).bfloat16()) == value


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dino", "simclr"])
def test_a_bf16_mixed_fit_logs_fp32_losses(name, tmp_path, monkeypatch):
    """Before: DINO logged 7.03125, 7.25, ... (bf16 numbers). Now none of the logged train
    losses is a bf16 number (a float32 value is one with probability ~2^-16)."""
    monkeypatch.chdir(tmp_path)
    cli_main(fit_args(name, tmp_path, "--trainer.precision=bf16-mixed", "--trainer.max_steps=6"))
    (run_dir,) = [p.parent for p in tmp_path.glob("**/metrics.csv")]
    losses = column(read_metrics(run_dir), "train/loss")
    assert len(losses) >= 5
    assert not any(_is_bf16(v) for v in losses), losses
