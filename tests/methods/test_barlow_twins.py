"""Barlow Twins: the loss against the paper's cross-correlation written out, fitting a batch."""

from __future__ import annotations

import torch

from ssl_biases.methods import BarlowTwins


def small_barlow_twins(net, **overrides) -> BarlowTwins:
    return BarlowTwins(net, projection_hidden_dim=64, projection_dim=32, **overrides)


def naive_barlow_twins(a: torch.Tensor, b: torch.Tensor, lam: float) -> float:
    """arXiv 2103.03230, Eq. 1-2: standardise each dimension over the batch (biased std, as
    batch norm, eps 1e-5), C_ij = sum_n a_ni b_nj / N, sum (1 - C_ii)^2 + lam sum C_ij^2."""
    n, d = a.shape

    def standardise(z):
        return (z - z.mean(0)) / (z.var(0, unbiased=False) + 1e-5).sqrt()

    a, b = standardise(a), standardise(b)
    loss = 0.0
    for i in range(d):
        for j in range(d):
            c = float(sum(a[k, i] * b[k, j] for k in range(n))) / n
            loss += (1.0 - c) ** 2 if i == j else lam * c**2
    return loss


def test_loss_is_the_papers_cross_correlation_objective(tiny_net, fixed_images) -> None:
    model = small_barlow_twins(tiny_net(), lambda_param=0.05)
    x0, x1 = fixed_images(6), fixed_images(6).flip(-1)
    loss, features = model.ssl_step([x0, x1])
    with torch.no_grad():  # BatchNorm sees both views together in ssl_step
        z0, z1 = model.projection_head(model.backbone(torch.cat([x0, x1]))).chunk(2)
    expected = naive_barlow_twins(z0, z1, 0.05)
    assert abs(loss.item() - expected) < 1e-4 * expected, (loss.item(), expected)
    assert features.shape == (6, 32)
    loss.backward()
    assert model.backbone.stem.proj.weight.grad.abs().sum() > 0


def test_barlow_twins_fits_a_fixed_batch(tiny_net, fixed_images, overfit) -> None:
    model = small_barlow_twins(tiny_net())
    images = fixed_images(8)
    first, last = overfit(model, [images, images.flip(-1)], steps=40, lr=3e-3)
    assert last < 0.1 * first, (first, last)
