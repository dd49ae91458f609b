"""LeJEPA: SIGReg and the loss against naive references, views, the fixed-size-backbone error."""

from __future__ import annotations

import math

import pytest
import torch
from lightly.loss.lejepa_loss import SIGReg

from ssl_biases.methods import LeJEPA


def small_lejepa(net, **overrides) -> LeJEPA:
    args = {"projection_hidden_dim": 32, "projection_dim": 16, "sigreg_num_vectors": 64}
    return LeJEPA(net, **{**args, **overrides})


def naive_sigreg(z: torch.Tensor, directions: torch.Tensor, t_max: float, knots: int) -> float:
    """Epps-Pulley statistic of each 1-D projection (arXiv 2511.08544, SIGReg), written out:
    ``N * int_{-t_max}^{t_max} |phi_N(t) - e^{-t^2/2}|^2 e^{-t^2/2} dt`` with the empirical
    characteristic function ``phi_N(t) = mean_n exp(i t x_n)``, the integral by the trapezoid
    rule on the symmetric grid of ``2 * knots - 1`` points, averaged over directions and views."""
    grid = torch.linspace(-t_max, t_max, 2 * knots - 1, dtype=torch.float64)
    values = []
    for view in z.double():  # [N, D]
        n = view.shape[0]
        for a in directions.double().T:  # a unit direction [D]
            x = view @ a  # [N]
            phi = torch.exp(1j * grid[:, None] * x[None]).mean(1)  # [T], complex
            target = torch.exp(-(grid**2) / 2)
            integrand = (phi - target).abs() ** 2 * target
            values.append(n * float(torch.trapezoid(integrand, grid)))
    return sum(values) / len(values)


def test_sigreg_is_the_epps_pulley_statistic_written_out() -> None:
    z = torch.randn(2, 24, 8)  # [V, N, D]
    sigreg = SIGReg(knots=9, t_max=3.0, num_vectors=5)
    torch.manual_seed(3)
    value = float(sigreg(z))
    torch.manual_seed(3)  # the same directions: lightly's draw, normalised per column
    directions = torch.randn(8, 5)
    directions = directions / directions.norm(dim=0)
    assert value == pytest.approx(naive_sigreg(z, directions, 3.0, 9), rel=1e-4)


def test_sigreg_is_small_for_a_standard_gaussian_and_large_for_a_collapse() -> None:
    sigreg = SIGReg(num_vectors=256)
    gaussian = sigreg(torch.randn(1, 512, 16))
    collapsed = sigreg(torch.randn(1, 1, 16).expand(1, 512, 16))
    # N x the weighted CF distance: O(1) for a Gaussian sample (a test statistic), O(N) apart
    assert float(gaussian) < 3.0 < 100.0 < float(collapsed)


def test_loss_is_lambda_sigreg_plus_invariance_to_the_global_centre(tiny_net) -> None:
    model = small_lejepa(tiny_net(), lambda_param=0.3).eval()  # BN on running stats
    views = [torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16), torch.randn(4, 3, 8, 8)]
    torch.manual_seed(5)
    loss, features = model.ssl_step(views)
    with torch.no_grad():  # the same projections, then the paper's terms by hand
        proj = torch.stack([model.projection_head(model.backbone(v)) for v in views])  # [3,4,P]
        torch.manual_seed(5)
        directions = torch.randn(16, 64)
        directions = directions / directions.norm(dim=0)
        sigreg = naive_sigreg(proj, directions, 3.0, 17)
        centre = proj[:2].mean(0)  # [4, P], mean of the global views
        invariance = float(((proj - centre) ** 2).mean())
    assert float(loss) == pytest.approx(0.3 * sigreg + 0.7 * invariance, rel=1e-4)
    assert features.shape == (4, 32)
    assert torch.allclose(features, model.backbone(views[0]), atol=1e-6)


def test_identical_views_have_no_invariance_term(tiny_net) -> None:
    model = small_lejepa(tiny_net(), lambda_param=0.0).eval()
    image = torch.randn(4, 3, 16, 16)
    loss, _ = model.ssl_step([image, image, image])
    assert float(loss) == pytest.approx(0.0, abs=1e-10)


def test_views_are_two_global_and_n_local_crops_half_the_size(tiny_net) -> None:
    recipe = small_lejepa(tiny_net(), n_local_views=3).view_recipe(16)
    assert [v.size for v in recipe.expanded()] == [16, 16, 8, 8, 8]
    assert recipe.views[1].solarize_prob == 0.2 and recipe.views[0].solarize_prob == 0.0
    assert recipe.views[2].scale == (0.05, 0.3)


def test_a_fixed_size_backbone_is_refused_with_what_to_set(tiny_net) -> None:
    with pytest.raises(ValueError, match="local_crop_size: 16"):
        small_lejepa(tiny_net(token_mixer="mlp", pool="gap"))
    model = small_lejepa(tiny_net(token_mixer="mlp", pool="gap"), local_crop_size=16)
    views = [torch.randn(4, 3, 16, 16) for _ in range(3)]
    assert math.isfinite(float(model.ssl_step(views)[0]))
    with pytest.raises(ValueError, match="n_local_views >= 1"):
        small_lejepa(tiny_net(), n_local_views=0)


def test_lejepa_fits_a_fixed_batch(tiny_net, fixed_images, overfit) -> None:
    model = small_lejepa(tiny_net())
    images = fixed_images(8, 16)
    views = [images, images.flip(-1), images[..., :8, :8], images[..., 8:, 8:]]
    first, last = overfit(model, views, steps=30)
    assert last < 0.5 * first
