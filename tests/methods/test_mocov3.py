"""MoCo v3: the paper's symmetric contrastive loss, the stop-gradient key encoder, the fixed
random patch projection, fitting a fixed batch."""

from __future__ import annotations

import math

import pytest
import torch

from ssl_biases.backbones import ResNet
from ssl_biases.methods import MoCoV3


def small_mocov3(net, **overrides) -> MoCoV3:
    return MoCoV3(net, projection_hidden_dim=64, projection_dim=32, **overrides)


def naive_ctr(q: torch.Tensor, k: torch.Tensor, tau: float) -> torch.Tensor:
    """The paper's Algorithm 1 ``ctr``, one query at a time: 2 tau * mean_i -log softmax_i."""
    losses = []
    for i in range(q.shape[0]):
        qi = q[i] / q[i].norm()
        sims = [float(qi @ (k[j] / k[j].norm())) / tau for j in range(k.shape[0])]
        losses.append(-(sims[i] - math.log(sum(math.exp(s) for s in sims))))
    return torch.tensor(2 * tau * sum(losses) / len(losses))


def test_loss_is_the_papers_symmetric_ctr_against_momentum_keys(tiny_net, fixed_images) -> None:
    model = small_mocov3(tiny_net(), temperature=0.2)
    x0, x1 = fixed_images(6), fixed_images(6).flip(-1)
    loss, features = model.ssl_step([x0, x1])

    # BatchNorm sees both views together in ssl_step: reproduce that batch.
    x = torch.cat([x0, x1])
    with torch.no_grad():
        q0, q1 = model.prediction_head(model.projection_head(model.backbone(x))).chunk(2)
        k0, k1 = model.teacher_projection_head(model.teacher_backbone(x)).chunk(2)
    expected = naive_ctr(q0, k1, 0.2) + naive_ctr(q1, k0, 0.2)
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-5)
    assert features.shape == (6, 32)

    loss.backward()
    assert all(p.grad is None for p in model.teacher_backbone.parameters())
    assert all(p.grad is None for p in model.teacher_projection_head.parameters())
    assert model.backbone.stem.proj.weight.grad.abs().sum() > 0
    assert model.prediction_head.layers[0].weight.grad.abs().sum() > 0


def test_momentum_pairs_are_the_backbone_and_projection_head(tiny_net) -> None:
    model = small_mocov3(tiny_net(), momentum_start=0.9)
    with torch.no_grad():
        model.backbone.stem.proj.weight.add_(1.0)
    before = model.teacher_backbone.stem.proj.weight.clone()
    model.update_teachers(0.9)
    after = model.teacher_backbone.stem.proj.weight
    torch.testing.assert_close(after, 0.9 * before + 0.1 * model.backbone.stem.proj.weight)
    assert {id(t) for _, t in model.momentum_pairs()} == {
        id(model.teacher_backbone),
        id(model.teacher_projection_head),
    }


def test_freeze_patch_embed_keeps_the_random_patch_projection(tiny_net, fixed_images) -> None:
    model = small_mocov3(tiny_net(), freeze_patch_embed=True)
    stem = model.backbone.stem.proj.weight
    initial = stem.clone()
    assert not stem.requires_grad and not model.teacher_backbone.stem.proj.weight.requires_grad
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    images = fixed_images(6)
    loss, _ = model.ssl_step([images, images.flip(-1)])
    loss.backward()
    optimizer.step()
    assert torch.equal(stem, initial)
    assert model.backbone.blocks[0].mlp.fc1.weight.grad.abs().sum() > 0  # the rest trains
    names = {
        g["name"]: len(g["params"]) for g in model.configure_optimizers()["optimizer"].param_groups
    }
    unfrozen = small_mocov3(tiny_net()).configure_optimizers()["optimizer"].param_groups
    assert names["decay"] == {g["name"]: len(g["params"]) for g in unfrozen}["decay"] - 1


@pytest.mark.parametrize("stem", ["conv", None])
def test_freeze_patch_embed_refuses_a_backbone_without_a_patch_stem(tiny_net, stem) -> None:
    net = tiny_net(stem="conv") if stem else ResNet(arch="resnet18", image_size=16, cifar_stem=True)
    with pytest.raises(ValueError, match="freeze_patch_embed: false"):
        small_mocov3(net, freeze_patch_embed=True)


def test_mocov3_fits_a_fixed_batch(tiny_net, fixed_images, overfit) -> None:
    model = small_mocov3(tiny_net(), momentum_start=0.9)
    images = fixed_images(8)
    first, last = overfit(model, [images, images.flip(-1)], steps=40, lr=3e-3)
    assert last < 0.25 * first, (first, last)
