"""OpCounter: ops and host syncs as a GPU would see them, counted on CPU."""

from __future__ import annotations

import torch

from ssl_biases.run.op_counter import OpCounter


def test_counts_ops_and_names_each_sync_with_its_caller() -> None:
    x = torch.arange(-4.0, 4.0).reshape(2, 4)
    with OpCounter() as counter:
        x[x > 0]  # boolean-mask indexing: a data-dependent size
        (x * 2).sum().item()  # a value read back
        torch.nonzero(x)
        torch.where(x > 0, x, 0.0)  # no sync
    assert counter.ops == 9  # gt, index, mul, sum, item, nonzero, gt, scalar_tensor, where
    assert [s.op for s in counter.syncs] == [
        "aten.index.Tensor",
        "aten._local_scalar_dense.default",
        "aten.nonzero.default",
    ]
    assert all("test_op_counter.py" in s.caller for s in counter.syncs)


def test_optimizer_step_counters_are_host_scalars_not_device_syncs() -> None:
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    with OpCounter() as counter:
        model(torch.randn(3, 4)).sum().backward()
        optimizer.step()
    assert len(counter.syncs) == 2  # AdamW reads each parameter's CPU `step` counter
    assert counter.device_syncs() == []
