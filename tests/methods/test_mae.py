"""MAE: masking fraction, pixel targets, visible-only encoding, compatibility, fitting."""

from __future__ import annotations

import pytest
import torch

from ssl_biases.backbones import ResNet
from ssl_biases.methods import MAE


def small_mae(net, **kwargs) -> MAE:
    return MAE(net, decoder_dim=32, decoder_depth=1, decoder_num_heads=2, **kwargs)


@pytest.mark.parametrize("ratio", [0.75, 0.5])
def test_mask_hides_the_requested_fraction_of_patches(tiny_net, ratio) -> None:
    model = small_mae(tiny_net(image_size=32), mask_ratio=ratio)  # 8x8 = 64 patches
    idx_keep, idx_mask = model.mask(torch.zeros(3, 3, 32, 32))
    assert idx_mask.shape == (3, int(64 * ratio))
    assert idx_keep.shape == (3, 64 - int(64 * ratio))
    for keep, mask in zip(idx_keep, idx_mask):
        assert sorted(torch.cat([keep, mask]).tolist()) == list(range(64))


def test_target_is_a_naive_patchify_of_the_masked_patches(tiny_net, fixed_images) -> None:
    model = small_mae(tiny_net())
    images = fixed_images(2)  # [2, 3, 16, 16], 4x4 patches of 4 px
    _, idx_mask = model.mask(images)
    target = model.targets(images, idx_mask)  # [2, M, 48]
    for b in range(2):
        for m, index in enumerate(idx_mask[b].tolist()):
            row, col = divmod(index, 4)
            patch = images[b, :, 4 * row : 4 * row + 4, 4 * col : 4 * col + 4]  # [3, 4, 4]
            assert torch.equal(target[b, m], patch.permute(1, 2, 0).reshape(-1))  # (y, x, c)


def test_norm_pix_loss_targets_are_standardised_per_patch(tiny_net, fixed_images) -> None:
    model = small_mae(tiny_net(), norm_pix_loss=True)
    images = fixed_images(2) * 3.0 + 1.0
    target = model.targets(images, model.mask(images)[1])  # [2, M, 48]
    torch.testing.assert_close(target.mean(-1), torch.zeros(target.shape[:2]), atol=1e-5, rtol=0)
    torch.testing.assert_close(target.var(-1), torch.ones(target.shape[:2]), atol=1e-4, rtol=0)


def test_the_encoder_never_sees_the_masked_patches(tiny_net, fixed_images) -> None:
    model = small_mae(tiny_net()).eval()
    images = fixed_images(2)
    idx_keep, idx_mask = model.mask(images)
    prediction, features = model.predict_masked(images, idx_keep, idx_mask)
    changed = images.clone()
    for b in range(2):
        for index in idx_mask[b].tolist():
            row, col = divmod(index, 4)
            changed[b, :, 4 * row : 4 * row + 4, 4 * col : 4 * col + 4] = 5.0
    prediction2, features2 = model.predict_masked(changed, idx_keep, idx_mask)
    torch.testing.assert_close(prediction, prediction2)
    torch.testing.assert_close(features, features2)
    assert prediction.shape == (2, 12, 48) and features.shape == (2, 32)


@pytest.mark.parametrize("mixer", ["local_attention", "mlp", "conv", "pool"])
def test_backbones_that_cannot_drop_tokens_are_refused_with_a_pointer_to_masked(
    tiny_net, mixer
) -> None:
    with pytest.raises(ValueError, match="configs/method/masked.yaml"):
        small_mae(tiny_net(token_mixer=mixer, pool="gap"))


def test_a_resnet_is_refused_with_every_mixer_that_drops_tokens(tiny_net) -> None:
    with pytest.raises(ValueError, match="token_mixer='attention' or 'identity'"):
        small_mae(ResNet(arch="resnet18", image_size=32, cifar_stem=True))
    small_mae(tiny_net(token_mixer="identity", pool="gap"))  # named, so accepted


@pytest.mark.parametrize("pool", ["cls", "gap"])
def test_mae_fits_a_fixed_batch(tiny_net, smooth_images, overfit, pool) -> None:
    torch.manual_seed(0)  # the masks of every step come from the global RNG
    model = small_mae(tiny_net(pool=pool), mask_ratio=0.5)
    first, last = overfit(model, [smooth_images(8)], steps=40, lr=3e-3)
    assert last < 0.7 * first, (first, last)
