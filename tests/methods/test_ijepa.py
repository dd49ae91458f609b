"""I-JEPA: multi-block masks, no leak from hidden patches, the loss, the EMA target encoder,
compatibility with every mixer, fitting."""

from __future__ import annotations

import pytest
import torch

from ssl_biases.backbones import ResNet
from ssl_biases.methods import IJEPA
from ssl_biases.methods.ijepa import multi_block_masks

MIXERS = ["attention", "local_attention", "mlp", "conv", "pool"]


def small_ijepa(net, **kwargs) -> IJEPA:
    args = {"predictor_dim": 32, "predictor_depth": 1, "predictor_num_heads": 2}
    return IJEPA(net, **{**args, **kwargs})


def test_multi_block_masks_are_rectangles_and_a_disjoint_context() -> None:
    torch.manual_seed(0)
    for _ in range(5):
        idx_context, idx_targets = multi_block_masks(16, (8, 8), num_targets=4, min_context=4)
        assert len(idx_targets) == 4 and idx_context.shape[0] == 16
        assert idx_context.shape[1] >= 4
        sizes = set()
        for block in idx_targets:  # [B, M]
            rows, cols = block // 8, block % 8
            height = rows.amax(1) - rows.amin(1) + 1  # [B]
            width = cols.amax(1) - cols.amin(1) + 1  # [B]
            assert torch.equal(height * width, torch.full((16,), block.shape[1]))  # rectangles
            sizes.add((int(height[0]), int(width[0])))
            assert 0.1 * 64 <= block.shape[1] <= 0.25 * 64  # target_scale 0.15-0.2, rounded
        assert len(sizes) == 1  # one block size per batch
        targets = torch.cat(idx_targets, dim=1)  # [B, 4M]
        for b in range(16):
            context = set(idx_context[b].tolist())
            assert len(context) == idx_context.shape[1]  # no repeats
            assert not context & set(targets[b].tolist())  # disjoint from every target


@pytest.mark.parametrize("stem", ["patch", "overlap"])
def test_predictions_ignore_every_patch_outside_the_context(tiny_net, fixed_images, stem) -> None:
    model = small_ijepa(tiny_net(stem=stem)).eval()
    images = fixed_images(2)
    idx_context, idx_targets = model.mask(images)
    prediction, _ = model.predict(images, idx_context, idx_targets)  # [T*B, M, D]
    changed = images.clone()
    for b in range(2):
        for index in set(range(16)) - set(idx_context[b].tolist()):
            row, col = divmod(index, 4)
            changed[b, :, 4 * row : 4 * row + 4, 4 * col : 4 * col + 4] = -3.0
    torch.testing.assert_close(model.predict(changed, idx_context, idx_targets)[0], prediction)
    assert prediction.shape == (4 * 2, idx_targets[0].shape[1], 32)


@pytest.mark.parametrize("loss", ["smooth_l1", "mse"])
def test_loss_matches_a_naive_reference_on_layer_normed_teacher_tokens(
    tiny_net, fixed_images, loss
) -> None:
    model = small_ijepa(tiny_net(), loss=loss)  # class token: 1 prefix token
    images = fixed_images(3)
    torch.manual_seed(3)
    value, features = model.ssl_step([images])
    torch.manual_seed(3)
    idx_context, idx_targets = model.mask(images)
    prediction, _ = model.predict(images, idx_context, idx_targets)  # [T*B, M, D]
    with torch.no_grad():
        tokens = model.teacher_backbone.forward_features(images)[:, 1:]  # [B, N, D]
        mean = tokens.mean(-1, keepdim=True)
        var = ((tokens - mean) ** 2).mean(-1, keepdim=True)
        normed = (tokens - mean) / torch.sqrt(var + 1e-5)
    rows = [normed[b, block[b]] for block in idx_targets for b in range(3)]  # block-major
    diff = prediction - torch.stack(rows)
    if loss == "smooth_l1":
        expected = torch.where(diff.abs() < 1, 0.5 * diff**2, diff.abs() - 0.5).mean()
    else:
        expected = (diff**2).mean()
    torch.testing.assert_close(value, expected)
    assert features.shape == (3, 32)


def test_the_target_encoder_starts_as_the_student_gets_no_gradient_and_follows_the_ema(
    tiny_net, fixed_images
) -> None:
    model = small_ijepa(tiny_net())
    student, teacher = model.backbone.state_dict(), model.teacher_backbone.state_dict()
    assert all(torch.equal(student[k], teacher[k]) for k in student)
    loss, _ = model.ssl_step([fixed_images(2)])
    loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in model.teacher_backbone.parameters())
    assert (
        model.mask_token.grad is not None and model.predictor.predictor_proj.weight.grad is not None
    )
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(1.0)
    before = {k: v.clone() for k, v in model.teacher_backbone.state_dict().items()}
    model.update_teachers(0.9)
    after, student = model.teacher_backbone.state_dict(), model.backbone.state_dict()
    for key in before:
        torch.testing.assert_close(after[key], 0.9 * before[key] + 0.1 * student[key])


@pytest.mark.parametrize("mixer", MIXERS)
def test_every_token_mixer_gives_a_finite_loss_and_gradients(tiny_net, fixed_images, mixer):
    model = small_ijepa(tiny_net(token_mixer=mixer, pool="gap"))
    loss, features = model.ssl_step([fixed_images(2)])
    loss.backward()
    assert torch.isfinite(loss) and features.shape == (2, 32)
    assert model.backbone.stem.proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("mixer", ["attention", "conv"])
def test_ijepa_fits_a_fixed_batch_against_a_fixed_target_encoder(
    tiny_net, smooth_images, overfit, mixer
) -> None:
    torch.manual_seed(0)  # the masks of every step come from the global RNG
    model = small_ijepa(tiny_net(token_mixer=mixer, pool="gap"), momentum_start=1.0)
    first, last = overfit(model, [smooth_images(8)], steps=20, lr=3e-3)
    assert last < 0.8 * first, (mixer, first, last)


def test_backbones_without_patch_tokens_and_wrong_view_sizes_are_refused(tiny_net) -> None:
    with pytest.raises(ValueError, match="IsotropicNet, any token_mixer"):
        IJEPA(ResNet(arch="resnet18", image_size=32, cifar_stem=True))
    with pytest.raises(ValueError, match="data.image_size"):
        small_ijepa(tiny_net()).ssl_step([torch.randn(2, 3, 32, 32)])
