"""BERT-style masked modelling: every mixer, no leak through the stem, compatibility, fitting."""

from __future__ import annotations

import pytest
import torch

from ssl_biases.backbones import ResNet
from ssl_biases.methods import MaskedModeling
from ssl_biases.methods.masked import embed_with_mask_token

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


def mask_token_outputs(backbone, images) -> torch.Tensor:
    """Output tokens ``[B, 8, D]`` at 8 masked positions (every 2nd patch) of a 4x4 grid."""
    torch.manual_seed(0)
    mask = torch.zeros(images.shape[0], 16, dtype=torch.bool)  # [B, N]
    mask[:, ::2] = True
    token = torch.randn(1, 1, backbone.width)  # [1, 1, D]
    with torch.no_grad():
        tokens = embed_with_mask_token(backbone, images, mask, token)  # [B, N, D]
        encoded = backbone.forward_tokens(tokens)[:, backbone.num_prefix_tokens :]  # [B, N, D]
    return encoded[:, ::2]  # [B, 8, D]


def spread_over_positions(outputs: torch.Tensor) -> float:
    """Largest distance of a mask token's output from the mean over positions, relative."""
    centred = outputs - outputs.mean(dim=1, keepdim=True)  # [B, 8, D]
    return (centred.norm(dim=-1).max() / outputs.norm(dim=-1).mean()).item()


@pytest.mark.parametrize("pool", ["gap", "cls"])
def test_global_attention_without_pos_embed_is_refused(tiny_net, fixed_images, pool) -> None:
    backbone = tiny_net(token_mixer="attention", pos_embed="none", pool=pool).eval()
    # the known answer behind the refusal: every mask token's output is the same
    assert spread_over_positions(mask_token_outputs(backbone, fixed_images(2))) < 1e-5
    with pytest.raises(ValueError, match="pos_embed='learned'"):
        MaskedModeling(backbone)


def test_identity_mixer_without_pos_embed_is_refused(tiny_net, fixed_images) -> None:
    backbone = tiny_net(token_mixer="identity", pos_embed="none", pool="gap").eval()
    # no token mixing, no position: every mask token's output is the same
    assert spread_over_positions(mask_token_outputs(backbone, fixed_images(2))) < 1e-5
    with pytest.raises(ValueError, match="token_mixer='identity' and pos_embed='none'"):
        MaskedModeling(backbone)


@pytest.mark.parametrize(
    ("mixer", "pos_embed"),
    [("attention", "learned"), ("attention", "sincos2d"), ("identity", "learned")]
    + [(mixer, "none") for mixer in ("local_attention", "mlp", "conv", "pool")],
)
def test_allowed_cells_give_mask_tokens_position_dependent_outputs(
    tiny_net, fixed_images, mixer, pos_embed
) -> None:
    backbone = tiny_net(token_mixer=mixer, pos_embed=pos_embed, pool="gap").eval()
    MaskedModeling(backbone)  # accepted
    # at init the spreads are 5e-3 (local attention, mlp) to 0.5 (pool); the refused cell 1e-7
    assert spread_over_positions(mask_token_outputs(backbone, fixed_images(2))) > 1e-3
