"""SimCLR's NT-Xent: lightly's loss, without its host syncs."""

from __future__ import annotations

import pytest
import torch
from lightly.loss import NTXentLoss

from ssl_biases.methods.simclr import SyncFreeNTXentLoss
from ssl_biases.run.op_counter import OpCounter


@pytest.mark.parametrize(("batch", "temperature"), [(2, 0.5), (7, 0.2), (32, 0.1)])
def test_loss_and_gradients_equal_lightly(batch: int, temperature: float) -> None:
    torch.manual_seed(batch)
    z0, z1 = torch.randn(2, batch, 16, dtype=torch.float64).unbind(0)
    grads = []
    losses = []
    for loss_fn in (NTXentLoss(temperature), SyncFreeNTXentLoss(temperature)):
        a, b = z0.clone().requires_grad_(), z1.clone().requires_grad_()
        loss = loss_fn(a, b)
        loss.backward()
        losses.append(loss.detach())
        grads.append(torch.cat([a.grad, b.grad]))
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-10, atol=1e-12)


def test_known_answer_for_orthogonal_pairs() -> None:
    # two images, views identical, the images orthogonal: for each of the 4 rows the
    # positive has similarity 1 and the two negatives 0, so loss = -log(e^{1/T} / (e^{1/T} + 2))
    z = torch.eye(2, 4)
    t = 0.5
    expected = -torch.log(torch.exp(torch.tensor(1 / t)) / (torch.exp(torch.tensor(1 / t)) + 2))
    torch.testing.assert_close(SyncFreeNTXentLoss(t)(z, z.clone()), expected)


def test_forward_and_backward_make_no_host_sync() -> None:
    a = torch.randn(8, 16, requires_grad=True)
    b = torch.randn(8, 16, requires_grad=True)
    with OpCounter() as lightly_count:
        NTXentLoss(0.2)(a, b).backward()
    with OpCounter() as ours:
        SyncFreeNTXentLoss(0.2)(a, b).backward()
    assert len(lightly_count.syncs) >= 2  # the boolean mask, forward and backward
    assert ours.syncs == []
