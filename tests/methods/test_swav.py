"""SwAV: Sinkhorn's equipartition, the loss against a naive reference, the queue, prototype
freezing, views and the fixed-size-backbone error."""

from __future__ import annotations

import pytest
import torch
from lightly.loss.swav_loss import sinkhorn
from torch.nn import functional as F

from ssl_biases.methods import SwAV


def small_swav(net, **overrides) -> SwAV:
    args = {"projection_hidden_dim": 32, "projection_dim": 16, "n_prototypes": 6}
    return SwAV(net, **{**args, **overrides})


def multi_crop(images: torch.Tensor) -> list[torch.Tensor]:
    """2 global views (16 px) and 2 local views (8 px) of ``images`` ``[B, 3, 16, 16]``."""
    return [images, images.flip(-1), images[..., :8, :8], images[..., 8:, 8:]]


def naive_codes(scores: torch.Tensor, eps: float, iterations: int) -> torch.Tensor:
    """Sinkhorn-Knopp (arXiv 2006.09882, eq. 3 and Appendix A.1), one row / column at a time:
    alternately scale each prototype's total to 1/K and each sample's to 1/B, then x B."""
    q = torch.exp(scores.double() / eps).T  # [K, B]
    q = q / q.sum()
    k, b = q.shape
    for _ in range(iterations):
        for row in range(k):
            q[row] = q[row] / q[row].sum() / k
        for col in range(b):
            q[:, col] = q[:, col] / q[:, col].sum() / b
    return (q * b).T  # [B, K]


def test_sinkhorn_codes_split_the_batch_evenly_over_the_prototypes() -> None:
    scores = torch.randn(12, 4)  # [B, K]
    codes = sinkhorn(scores, iterations=200, epsilon=0.5)
    assert torch.allclose(codes.sum(1), torch.ones(12), atol=1e-5)  # a distribution per sample
    assert torch.allclose(codes.sum(0), torch.full((4,), 3.0), atol=1e-4)  # B / K each
    assert torch.allclose(codes.double(), naive_codes(scores, 0.5, 200), atol=1e-5)


def test_loss_is_the_swapped_prediction_of_each_global_crops_codes(tiny_net) -> None:
    model = small_swav(tiny_net(), temperature=0.2, sinkhorn_epsilon=0.1).eval()
    views = multi_crop(torch.randn(4, 3, 16, 16))
    loss, features = model.ssl_step(views)
    with torch.no_grad():  # the normalised prototypes, each view on its own, then by hand
        protos = model.prototypes.heads[0]
        scores = [
            protos(F.normalize(model.projection_head(model.backbone(v)), dim=1)) for v in views
        ]  # 4 x [B, K]
    expected = 0.0
    for i in range(2):  # the codes of global crop i, predicted by every other crop
        codes = naive_codes(scores[i], 0.1, 3)
        terms = [
            -(codes * F.log_softmax(scores[v].double() / 0.2, dim=1)).sum(1).mean()
            for v in range(4)
            if v != i
        ]
        expected += float(sum(terms)) / 3
    assert float(loss) == pytest.approx(expected / 2, rel=1e-5)
    norms = protos.weight.norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-6)  # re-normalised
    assert features.shape == (4, 32)


def test_queue_fills_newest_first_and_joins_sinkhorn_once_full(tiny_net) -> None:
    model = small_swav(tiny_net(), queue_length=8, queue_start_fraction=0.0)
    z = [F.normalize(torch.randn(8, 16), dim=1) for _ in range(3)]  # [2B, P], B = 4
    assert model.queue_logits(z[0], 4) is None  # 4 of 8 rows filled
    assert model.queue_logits(z[1], 4) is None  # 8 of 8: full only after this push
    scores = model.queue_logits(z[2], 4)
    assert [s.shape for s in scores] == [(8, 6), (8, 6)]  # both global crops' queues
    # the scores of the queue as it was (z[1] newest, then z[0]), pushed z[2] after
    queued = torch.cat([z[1].view(2, 4, 16), z[0].view(2, 4, 16)], dim=1)  # [2, 8, P]
    assert torch.allclose(scores[0], model.prototypes(queued[0]), atol=1e-6)
    assert torch.equal(model.queue[:, :4], z[2].view(2, 4, 16))
    assert int(model.queue_filled) == 12
    assert "queue" in model.state_dict()  # checkpointed: a resumed run continues it
    with pytest.raises(ValueError, match="at least the global batch"):
        model.queue_logits(torch.randn(24, 16), 12)


def test_the_queue_waits_for_its_start(tiny_net, monkeypatch) -> None:
    model = small_swav(tiny_net(), queue_length=8, queue_start_fraction=0.5)
    monkeypatch.setattr(model, "run_progress", lambda step: 0.4)
    assert model.queue_logits(torch.randn(8, 16), 4) is None
    assert int(model.queue_filled) == 0


@pytest.mark.parametrize(("progress", "frozen"), [(0.0, True), (0.1, False)])
def test_prototypes_get_no_update_while_frozen(tiny_net, monkeypatch, progress, frozen) -> None:
    model = small_swav(tiny_net(), freeze_prototypes_fraction=0.05)
    monkeypatch.setattr(model, "run_progress", lambda step: progress)
    loss, _ = model.ssl_step(multi_crop(torch.randn(4, 3, 16, 16)))
    loss.backward()
    model.on_after_backward()
    assert (model.prototypes.heads[0].weight.grad is None) == frozen
    assert model.projection_head.layers[0].weight.grad is not None


def test_views_are_two_global_and_n_local_crops_with_swavs_jitter(tiny_net) -> None:
    recipe = small_swav(tiny_net(), n_local_views=3).view_recipe(16)
    assert [v.size for v in recipe.expanded()] == [16, 16, 8, 8, 8]
    assert recipe.views[0].jitter == (0.4, 0.4, 0.4, 0.1)  # 0.8, 0.8, 0.8, 0.2 x 0.5
    assert recipe.views[1].scale == (0.05, 0.14)
    assert len(small_swav(tiny_net(), n_local_views=0).view_recipe(16).expanded()) == 2


def test_a_fixed_size_backbone_is_refused_with_what_to_set(tiny_net) -> None:
    with pytest.raises(ValueError, match="n_local_views: 0"):
        small_swav(tiny_net(token_mixer="mlp", pool="gap"))
    model = small_swav(tiny_net(token_mixer="mlp", pool="gap"), n_local_views=0)
    loss, _ = model.ssl_step([torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)])
    assert torch.isfinite(loss) and loss.ndim == 0


def test_swav_fits_a_fixed_batch(tiny_net, fixed_images, overfit) -> None:
    model = small_swav(tiny_net())
    first, last = overfit(model, multi_crop(fixed_images(8, 16)), steps=30)
    assert last < 0.8 * first
