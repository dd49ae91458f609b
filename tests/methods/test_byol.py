"""BYOL: the symmetrised 2 - 2cos loss, the stop-gradient teacher, fitting a fixed batch."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from ssl_biases.methods import BYOL


def small_byol(net) -> BYOL:
    return BYOL(net, projection_hidden_dim=64, prediction_hidden_dim=64, projection_dim=32)


def test_loss_is_the_papers_normalised_mse_symmetrised(tiny_net, fixed_images) -> None:
    model = small_byol(tiny_net())
    x0, x1 = fixed_images(6), fixed_images(6).flip(-1)
    loss, features = model.ssl_step([x0, x1])

    def target(x):
        return model.teacher_projection_head(model.teacher_backbone(x))

    def normalised_mse(p, z):  # ||p/|p| - z/|z|||^2, the paper's Eq. 2
        return (F.normalize(p, dim=1) - F.normalize(z, dim=1)).pow(2).sum(1).mean()

    # BatchNorm sees both views together in ssl_step: reproduce that batch.
    p0, p1 = model.prediction_head(
        model.projection_head(model.backbone(torch.cat([x0, x1])))
    ).chunk(2)
    z0, z1 = target(torch.cat([x0, x1])).chunk(2)
    expected = (normalised_mse(p0, z1) + normalised_mse(p1, z0)) / 2
    torch.testing.assert_close(loss, expected)
    assert features.shape == (6, 32)
    loss.backward()
    assert all(p.grad is None for p in model.teacher_backbone.parameters())
    assert all(p.grad is None for p in model.teacher_projection_head.parameters())
    assert model.backbone.stem.proj.weight.grad.abs().sum() > 0


def test_byol_fits_a_fixed_batch(tiny_net, fixed_images, overfit) -> None:
    model = small_byol(tiny_net())
    images = fixed_images(8)
    first, last = overfit(model, [images, images.flip(-1)], steps=40, lr=3e-3)
    assert last < 0.25 * first, (first, last)
