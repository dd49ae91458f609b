"""iBOT: image + masked-patch loss against a naive reference, both centres, no leak from masked
patches, frozen teachers, every mixer, 2 gloo ranks == 1 process, fitting."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn import functional as F

from ssl_biases.backbones import IsotropicNet, ResNet
from ssl_biases.methods import IBOT
from ssl_biases.methods.masked import embed_with_mask_token

MIXERS = ["attention", "local_attention", "mlp", "conv", "pool"]


def small_ibot(net, **kwargs) -> IBOT:
    args = {"hidden_dim": 64, "bottleneck_dim": 16, "output_dim": 64}
    return IBOT(net, **{**args, **kwargs})


def fixed_mask(batch: int, seed: int = 2) -> torch.Tensor:
    """``[batch, 4, 4]``: image i masks ``(i % 4) + 1`` random patches (0 patches: none)."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.zeros(batch, 16, dtype=torch.bool)
    for i in range(batch):
        mask[i, torch.randperm(16, generator=generator)[: (i % 4) + 1]] = True
    return mask.view(batch, 4, 4)


@pytest.mark.parametrize("shared_head", [True, False])
def test_loss_and_both_centres_match_a_naive_reference(
    tiny_net, fixed_images, monkeypatch, shared_head
) -> None:
    model = small_ibot(tiny_net(), teacher_temp=0.05, student_temp=0.1, center_momentum=0.9,
                       shared_head=shared_head, patch_loss_weight=0.5)  # fmt: skip
    x = fixed_images(3)
    views = [x, x.flip(-1)]
    mask = fixed_mask(6)
    monkeypatch.setattr(model, "mask", lambda images: mask)
    centre, patch_centre = torch.randn(1, 1, 64) * 0.1, torch.randn(1, 64) * 0.1
    model.criterion.center.copy_(centre)
    model.patch_criterion.center.center.copy_(patch_centre)
    student_patch_head = model.patch_head or model.projection_head
    teacher_patch_head = model.teacher_patch_head or model.teacher_projection_head
    with torch.no_grad():
        both = torch.cat(views)  # [6, 3, 16, 16]
        t_tokens = model.teacher_backbone.forward_features(both)  # [6, 1+16, 32]
        t_img = model.teacher_projection_head(t_tokens[:, 0])  # class token: [6, K]
        t_patch = teacher_patch_head(t_tokens[:, 1:])  # [6, 16, K]
        tokens = embed_with_mask_token(model.backbone, both, mask.flatten(1), model.mask_token)
        s_tokens = model.backbone.forward_tokens(tokens)  # [6, 17, 32]
        s_img = model.projection_head(s_tokens[:, 0])  # [6, K]
        s_patch = student_patch_head(s_tokens[:, 1:])  # [6, 16, K]
    loss, features = model.ssl_step(views)

    def cross_entropy(teacher, centre, student):
        return -(F.softmax((teacher - centre) / 0.05, -1) * F.log_softmax(student / 0.1, -1)).sum(
            -1
        )

    image_terms = [cross_entropy(t_img[3 * i : 3 * i + 3], centre[0], s_img[3 * j : 3 * j + 3])
                   for i in range(2) for j in range(2) if i != j]  # fmt: skip
    per_image = []
    for i in range(6):
        chosen = mask[i].flatten()
        terms = cross_entropy(t_patch[i, chosen], patch_centre, s_patch[i, chosen])
        per_image.append(terms.mean() if chosen.any() else torch.tensor(0.0))
    expected = torch.stack(image_terms).mean() + 0.5 * torch.stack(per_image).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-5)
    assert features.shape == (3, 32)
    masked_teacher = t_patch[mask.flatten(1)]  # [S, K]
    torch.testing.assert_close(
        model.patch_criterion.center.center, 0.9 * patch_centre + 0.1 * masked_teacher.mean(0)
    )
    torch.testing.assert_close(model.criterion.center, 0.9 * centre + 0.1 * t_img.mean(0))


def test_the_student_ignores_masked_pixels_with_an_overlapping_stem(
    tiny_net, fixed_images, monkeypatch
) -> None:
    model = small_ibot(tiny_net(stem="overlap")).eval()
    x = fixed_images(2)
    mask = fixed_mask(4)
    monkeypatch.setattr(model, "mask", lambda images: mask)
    changed = x.clone()
    for i in range(2):  # the first global view's masked patches of image i
        for index in mask[i].flatten().nonzero().flatten().tolist():
            row, col = divmod(index, 4)
            changed[i, :, 4 * row : 4 * row + 4, 4 * col : 4 * col + 4] = -3.0
    tokens = embed_with_mask_token(model.backbone, x, mask[:2].flatten(1), model.mask_token)
    changed_tokens = embed_with_mask_token(
        model.backbone, changed, mask[:2].flatten(1), model.mask_token
    )
    torch.testing.assert_close(
        model.backbone.forward_tokens(changed_tokens), model.backbone.forward_tokens(tokens)
    )
    assert not torch.equal(changed, x)


def test_block_masks_mask_about_half_the_crops_and_never_an_empty_batch(tiny_net) -> None:
    model = small_ibot(tiny_net(image_size=32))  # an 8x8 grid
    torch.manual_seed(0)
    mask = model.mask(torch.zeros(16, 3, 32, 32))  # [16, 8, 8]
    counts = mask.flatten(1).sum(1)
    assert mask.shape == (16, 8, 8) and int((counts == 0).sum()) >= 8  # half stay whole
    assert int(counts.max()) <= 0.5 * 64
    tiny = small_ibot(tiny_net(image_size=8))  # a 2x2 grid: blocks of 4 rarely fit
    assert all(tiny.mask(torch.zeros(2, 3, 8, 8)).any() for _ in range(20))


def test_teachers_start_as_the_students_and_get_no_gradient(tiny_net, fixed_images) -> None:
    model = small_ibot(tiny_net(), shared_head=False)
    pairs = model.momentum_pairs()
    assert len(pairs) == 3 and pairs[-1] == (model.patch_head, model.teacher_patch_head)
    for student, teacher in pairs:
        s, t = student.state_dict(), teacher.state_dict()
        assert all(torch.equal(s[k], t[k]) for k in s)
    x = fixed_images(2)
    loss, _ = model.ssl_step([x, x.flip(-1)])
    loss.backward()
    for _, teacher in pairs:
        assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert model.mask_token.grad is not None and model.patch_head.layers[0].weight.grad is not None


@pytest.mark.parametrize("mixer", MIXERS)
def test_every_token_mixer_gives_a_finite_loss_and_gradients(tiny_net, fixed_images, mixer):
    model = small_ibot(tiny_net(token_mixer=mixer, pool="gap"))
    x = fixed_images(2)
    loss, features = model.ssl_step([x, x.flip(-1)])
    loss.backward()
    assert torch.isfinite(loss) and features.shape == (2, 32)
    assert model.backbone.stem.proj.weight.grad.abs().sum() > 0


def test_ibot_student_fits_a_fixed_teacher_on_a_fixed_batch(
    tiny_net, fixed_images, overfit, monkeypatch
) -> None:
    # Teacher, centres and masks held fixed (as in test_dino): the loss is then the teacher's
    # entropies (image + masked patches) plus KL terms that the student can drive towards 0.
    model = small_ibot(tiny_net(), momentum_start=1.0, center_momentum=1.0,
                       freeze_last_layer=0, teacher_temp=0.02)  # fmt: skip
    x = fixed_images(8)
    mask = fixed_mask(16)
    monkeypatch.setattr(model, "mask", lambda images: mask)

    def entropy(logits: torch.Tensor) -> torch.Tensor:
        p = F.softmax(logits / 0.02, dim=-1)
        return -(p * p.clamp_min(1e-30).log()).sum(-1)

    with torch.no_grad():
        tokens = model.teacher_backbone.forward_features(torch.cat([x, x]))  # [16, 17, 32]
        image = entropy(model.teacher_projection_head(tokens[:, 0])).mean()
        patch = entropy(model.teacher_projection_head(tokens[:, 1:]))  # [16, 16]
        patch = torch.stack([patch[i][mask[i].flatten()].mean() for i in range(16)]).mean()
        floor = (image + patch).item()
    first, last = overfit(model, [x, x], steps=40, lr=3e-3)
    assert last - floor < 0.25 * (first - floor), (first, last, floor)


def test_backbones_without_patch_tokens_and_local_crops_on_an_mlp_mixer_are_refused(tiny_net):
    with pytest.raises(ValueError, match="IsotropicNet, any token_mixer"):
        IBOT(ResNet(arch="resnet18", image_size=32, cifar_stem=True))
    with pytest.raises(ValueError, match="n_local_views: 0"):
        small_ibot(tiny_net(token_mixer="mlp", pool="gap"), n_local_views=2)


# ------------------------------------------------------------------ 2 gloo ranks == 1 process
WORLD, BATCH = 2, 4


def ddp_step(rank: int, world: int) -> dict[str, torch.Tensor]:
    """One iBOT step on this rank's half of a fixed batch and fixed masks; loss and gradients
    averaged over ranks as DDP averages them. Each rank masks equally many patches."""
    torch.manual_seed(0)
    backbone = IsotropicNet(image_size=16, patch_size=4, width=32, depth=1, num_heads=2, pool="gap")
    model = small_ibot(backbone, output_dim=32)
    model.total_steps = lambda: 100.0  # the teacher-temperature schedule needs a length
    generator = torch.Generator().manual_seed(1)
    views = [torch.randn(BATCH, 3, 16, 16, generator=generator) for _ in range(2)]
    mask = fixed_mask(2 * BATCH)  # rows: view 0 of images 0-3, then view 1; 1-4 patches
    if world > 1:  # images {0, 3} | {1, 2}: both ranks mask 10 patches
        images = [0, 3] if rank == 0 else [1, 2]
        mask = mask[images + [BATCH + i for i in images]]
        views = [v[images] for v in views]
    model.mask = lambda images: mask
    loss, _ = model.ssl_step(views)
    loss.backward()
    out = {"loss": loss.detach().clone()}
    out |= {f"grad/{k}": p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    if world > 1:
        for value in out.values():
            dist.all_reduce(value)
            value /= world
    out["center"] = model.criterion.center.clone()
    out["patch_center"] = model.patch_criterion.center.center.clone()
    return out


def ddp_worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    result = ddp_step(rank, WORLD)
    if rank == 0:
        torch.save(result, Path(out_dir) / "ibot.pt")
    dist.barrier()
    dist.destroy_process_group()


def test_two_gloo_ranks_give_the_full_batch_loss_gradients_and_centres(tmp_path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(ddp_worker, args=(port, str(tmp_path)), nprocs=WORLD, start_method="fork")
    ddp = torch.load(tmp_path / "ibot.pt")
    reference = ddp_step(rank=0, world=1)
    assert set(ddp) == set(reference) and any(k.startswith("grad/backbone") for k in ddp)
    bad = {
        key: (ddp[key] - value).abs().max().item()
        for key, value in reference.items()
        if not torch.allclose(ddp[key], value, rtol=1e-4, atol=1e-5)
    }
    assert not bad, f"max abs differences: {bad}"
