"""Count what a GPU would see of a piece of code, on any device: ops (kernel launches) and
host syncs.

On a GPU every ATen op is (at least) one kernel launch of 5-10 µs of host time, and some ops
block the host until the device has caught up: their output's size or value is data
dependent (``nonzero``, boolean-mask indexing, ``unique``) or a value is read back
(``.item()``, ``bool(tensor)``: ``aten._local_scalar_dense``). A :class:`OpCounter` is a
``TorchDispatchMode`` that records both while the code runs, on CPU as well, so tests can
bound them without a GPU::

    with OpCounter() as counter:
        views = make_views(images)
    assert counter.syncs == [] and counter.ops <= 600

Each sync is recorded with the first frame of the caller outside torch, so a test (and
docs/performance.md) can name where it comes from and filter known, harmless ones (e.g. the
optimizer's CPU-resident step counter).
"""

from __future__ import annotations

import traceback
from collections import Counter
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

SYNC_OPS: frozenset = frozenset(
    {
        aten._local_scalar_dense.default,  # .item(), bool(t), int(t), float(t)
        aten.nonzero.default,
        aten.nonzero_static.default,  # static size: no sync on CUDA, but listed by name below
        aten.masked_select.default,
        aten.unique_consecutive.default,
        aten._unique2.default,
        aten.repeat_interleave.Tensor,
        aten.is_nonzero.default,
        aten.equal.default,
    }
)
"""Ops whose result needs the device to finish first (the host reads a value or a size)."""

NO_SYNC_ON_CUDA: frozenset = frozenset({aten.nonzero_static.default})
"""In :data:`SYNC_OPS` by family, but with a size fixed by the caller: no host sync."""


@dataclass(frozen=True)
class Sync:
    """One sync-prone op: its name and where (``file:line function``) user code called it."""

    op: str
    caller: str
    cpu_scalar: bool
    """The input was a 0-dim CPU tensor that stays on the host under CUDA too (e.g. AdamW's
    ``step``); on CPU runs every tensor is a CPU tensor, so :meth:`OpCounter.device_syncs`
    uses the caller to tell these apart."""


def _boolean_index(func, args) -> bool:
    """``x[mask]`` / ``x[mask] = v``: indexing with a boolean tensor (a data-dependent size)."""
    if func not in (aten.index.Tensor, aten.index_put.default, aten.index_put_.default):
        return False
    indices = args[1] if len(args) > 1 else ()
    return any(
        isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices
    )


def _caller() -> str:
    """The innermost frame outside torch itself and this module: who asked for the op."""
    for frame in reversed(traceback.extract_stack()):
        name = frame.filename.replace("\\", "/")
        if "/torch/" in name and "/torch/optim/" not in name:
            continue
        if frame.filename == __file__:
            continue
        return f"{name}:{frame.lineno} {frame.name}"
    return "<unknown>"


@dataclass
class OpCounter(TorchDispatchMode):
    """Counts ATen ops and records sync-prone ones while active (a ``with`` block).

    Attributes:
        ops: Number of ATen ops dispatched (views and metadata ops included).
        by_name: Ops per overload name (``aten.add.Tensor`` -> count).
        syncs: Every sync-prone op, in order, with its caller.
    """

    ops: int = 0
    by_name: Counter = field(default_factory=Counter)
    syncs: list[Sync] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.ops += 1
        self.by_name[str(func)] += 1
        if (func in SYNC_OPS and func not in NO_SYNC_ON_CUDA) or _boolean_index(func, args):
            first = args[0] if args else None
            cpu_scalar = isinstance(first, torch.Tensor) and first.dim() == 0
            self.syncs.append(Sync(str(func), _caller(), cpu_scalar))
        return func(*args, **kwargs)

    def device_syncs(self, host_callers: tuple[str, ...] = ("/torch/optim/",)) -> list[Sync]:
        """The syncs a GPU run would pay: all but 0-dim reads by ``host_callers`` (the
        optimizers keep their ``step`` counters on the host)."""
        return [
            s for s in self.syncs if not (s.cpu_scalar and any(h in s.caller for h in host_callers))
        ]
