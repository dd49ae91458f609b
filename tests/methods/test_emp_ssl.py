"""EMP-SSL: the loss against the paper's terms written out (and its sign), views, fitting."""

from __future__ import annotations

import math

import pytest
import torch
from lightly.loss import EMPSSLLoss
from torch.nn import functional as F

from ssl_biases.methods import EMPSSL
from ssl_biases.methods.emp_ssl import emp_ssl_loss


def small_emp(net, **overrides) -> EMPSSL:
    args = {"projection_hidden_dim": 32, "projection_dim": 16, "n_patches": 4}
    return EMPSSL(net, **{**args, **overrides})


def naive_emp_ssl(z: torch.Tensor, eps: float, lam: float) -> float:
    """arXiv 2304.03977, eq. 4 (minimised): ``-1/n sum_i [R(Z_i) + lam * mean_b cos(z_ib,
    zbar_b)]`` with ``R(Z) = 1/2 log det(I + d/(B eps) Z^T Z)`` from the eigenvalues of
    ``Z^T Z``, one view and one sample at a time, in float64."""
    views, batch, d = z.shape
    z = z.double()
    mean = z.mean(0)  # [B, d], each image's mean embedding over its crops
    total = 0.0
    for i in range(views):
        eigenvalues = torch.linalg.eigvalsh(z[i].T @ z[i])  # [d], >= 0
        rate = 0.5 * float(torch.log1p(d / (batch * eps) * eigenvalues.clamp_min(0)).sum())
        cosine = sum(float(F.cosine_similarity(z[i, b], mean[b], dim=0)) for b in range(batch))
        total += rate + lam * cosine / batch
    return -total / views


def test_loss_is_the_papers_objective_written_out() -> None:
    z = F.normalize(torch.randn(5, 12, 6), dim=-1)  # [V, B, d]
    assert float(emp_ssl_loss(z, 0.2, 3.0)) == pytest.approx(naive_emp_ssl(z, 0.2, 3.0), rel=1e-5)


def test_a_collapsed_embedding_costs_more_than_a_spread_one() -> None:
    """The coding rate rewards spread: lightly 1.6's EMPSSLLoss adds it with the other sign."""
    spread = F.normalize(torch.randn(1, 64, 32), dim=-1).expand(4, 64, 32)  # crops agree
    collapsed = F.normalize(torch.randn(1, 1, 32), dim=-1).expand(4, 64, 32)  # all agree
    # the invariance term is at its optimum (-1) for both: only the coding rate differs
    assert float(emp_ssl_loss(spread, 0.2, 200.0)) < float(emp_ssl_loss(collapsed, 0.2, 200.0))
    lightly = EMPSSLLoss(tcr_eps=0.2, inv_coef=200.0)
    assert float(lightly(list(spread))) > float(lightly(list(collapsed)))  # why not reused


def test_method_loss_uses_the_normalised_projections_of_every_crop(tiny_net) -> None:
    model = small_emp(tiny_net(), inv_coef=50.0).eval()  # BN on running stats
    views = [torch.randn(4, 3, 16, 16) for _ in range(4)]
    loss, features = model.ssl_step(views)
    with torch.no_grad():
        z = torch.stack(
            [F.normalize(model.projection_head(model.backbone(v)), dim=1) for v in views]
        )
    assert float(loss) == pytest.approx(naive_emp_ssl(z, 0.2, 50.0), rel=1e-5)
    assert torch.allclose(features, model.backbone(views[0]), atol=1e-6)


def test_views_are_n_square_quarter_crops_at_the_crop_size(tiny_net) -> None:
    recipe = small_emp(tiny_net(), n_patches=6).view_recipe(16)
    specs = recipe.expanded()
    assert len(specs) == 6 and {s.size for s in specs} == {16}
    assert specs[0].scale == (0.25, 0.25) and specs[0].ratio == (1.0, 1.0)
    assert {s.size for s in small_emp(tiny_net(), crop_size=8).view_recipe(16).expanded()} == {8}


def test_bad_settings_and_a_fixed_size_backbone_are_refused(tiny_net) -> None:
    with pytest.raises(ValueError, match="n_patches >= 2"):
        small_emp(tiny_net(), n_patches=1)
    with pytest.raises(ValueError, match="crop_size: null"):
        small_emp(tiny_net(token_mixer="mlp", pool="gap"), crop_size=8)
    model = small_emp(tiny_net(token_mixer="mlp", pool="gap"))  # crops at the image size
    loss, _ = model.ssl_step([torch.randn(4, 3, 16, 16) for _ in range(4)])
    assert math.isfinite(float(loss))


def test_emp_ssl_fits_a_fixed_batch(tiny_net, fixed_images, overfit) -> None:
    model = small_emp(tiny_net(), inv_coef=10.0)
    images = fixed_images(8, 16)
    views = [images, images.flip(-1), images.flip(-2), images.roll(2, -1)]
    first, last = overfit(model, views, steps=30)
    assert last < first - 1.0  # the loss is negative: a decrease of a nat or more
