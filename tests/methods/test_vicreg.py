"""VICReg: the loss against the paper's terms written out, fitting a fixed batch."""

from __future__ import annotations

import torch

from ssl_biases.methods import VICReg


def small_vicreg(net, **overrides) -> VICReg:
    return VICReg(net, projection_hidden_dim=64, projection_dim=32, **overrides)


def naive_vicreg(a: torch.Tensor, b: torch.Tensor, lam: float, mu: float, nu: float) -> float:
    """The authors' loss (arXiv 2105.04906, Algorithm 1), one dimension / pair at a time."""
    n, d = a.shape
    invariance = sum(float((a[i, j] - b[i, j]) ** 2) for i in range(n) for j in range(d)) / (n * d)

    def variance(z):  # mean over dimensions of relu(1 - std), std unbiased with eps 1e-4
        stds = [float((z[:, j].var(unbiased=True) + 1e-4).sqrt()) for j in range(d)]
        return sum(max(0.0, 1.0 - s) for s in stds) / d

    def covariance(z):  # squared off-diagonal covariances / d
        centred = z - z.mean(0)
        total = 0.0
        for j in range(d):
            for k in range(d):
                if j != k:
                    total += float((centred[:, j] * centred[:, k]).sum() / (n - 1)) ** 2
        return total / d

    return (
        lam * invariance
        + mu * (variance(a) + variance(b)) / 2
        + nu * (covariance(a) + covariance(b))
    )


def test_loss_is_the_papers_three_terms(tiny_net, fixed_images) -> None:
    model = small_vicreg(tiny_net(), lambda_param=20.0, mu_param=15.0, nu_param=2.0)
    x0, x1 = fixed_images(6), fixed_images(6).flip(-1)
    loss, features = model.ssl_step([x0, x1])
    with torch.no_grad():  # BatchNorm sees both views together in ssl_step
        z0, z1 = model.projection_head(model.backbone(torch.cat([x0, x1]))).chunk(2)
    expected = naive_vicreg(z0, z1, 20.0, 15.0, 2.0)
    assert abs(loss.item() - expected) < 1e-5 * expected, (loss.item(), expected)
    assert features.shape == (6, 32)
    loss.backward()
    assert model.backbone.stem.proj.weight.grad.abs().sum() > 0


def test_vicreg_fits_a_fixed_batch(tiny_net, fixed_images, overfit) -> None:
    model = small_vicreg(tiny_net())
    images = fixed_images(8)
    first, last = overfit(model, [images, images.flip(-1)], steps=40, lr=3e-3)
    assert last < 0.5 * first, (first, last)
