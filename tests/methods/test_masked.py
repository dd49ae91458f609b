"""BERT-style masked modelling: every mixer, no leak through the stem, compatibility, fitting."""

from __future__ import annotations

import pytest
import torch

from ssl_biases.backbones import ResNet
from ssl_biases.methods import MaskedModeling

MIXERS = ["attention", "local_attention", "mlp", "conv", "pool"]


@pytest.mark.parametrize("mixer", MIXERS)
def test_masked_modelling_fits_a_fixed_batch_with_every_mixer(
    tiny_net, smooth_images, overfit, mixer
) -> None:
    torch.manual_seed(0)  # the masks of every step come from the global RNG
    model = MaskedModeling(tiny_net(token_mixer=mixer, pool="gap"), mask_ratio=0.5)
    first, last = overfit(model, [smooth_images(8)], steps=30, lr=3e-3)
    assert last < 0.7 * first, (mixer, first, last)


@pytest.mark.parametrize("stem", ["patch", "overlap"])
def test_predictions_ignore_the_masked_pixels_even_with_an_overlapping_stem(
    tiny_net, fixed_images, stem
) -> None:
    model = MaskedModeling(tiny_net(stem=stem)).eval()
    images = fixed_images(2)
    idx_keep, idx_mask = model.mask(images)
    prediction, _ = model.predict_masked(images, idx_keep, idx_mask)  # [2, M, 48]
    changed = images.clone()
    for b in range(2):
        for index in idx_mask[b].tolist():
            row, col = divmod(index, 4)
            changed[b, :, 4 * row : 4 * row + 4, 4 * col : 4 * col + 4] = -3.0
    torch.testing.assert_close(model.predict_masked(changed, idx_keep, idx_mask)[0], prediction)
    assert prediction.shape == (2, 16 - int(16 * 0.4), 48)  # mask_ratio 0.6: 10 of 16


def test_loss_is_the_mse_on_masked_patches_only(tiny_net, fixed_images, monkeypatch) -> None:
    model = MaskedModeling(tiny_net())
    images = fixed_images(2)
    torch.manual_seed(3)
    loss, features = model.ssl_step([images])
    torch.manual_seed(3)
    idx_keep, idx_mask = model.mask(images)
    prediction, _ = model.predict_masked(images, idx_keep, idx_mask)
    expected = (prediction - model.targets(images, idx_mask)).pow(2).mean()
    torch.testing.assert_close(loss, expected)
    assert features.shape == (2, 32)


def test_a_backbone_without_patch_tokens_is_refused() -> None:
    with pytest.raises(ValueError, match="IsotropicNet"):
        MaskedModeling(ResNet(arch="resnet18", image_size=32, cifar_stem=True))
