"""`MaskedReconstruction.reconstruction_preview`: deterministic, faithful to what is shown."""

from __future__ import annotations

import pytest
import torch
from lightly.models.utils import patchify

from ssl_biases.methods import MAE, MaskedModeling


def make_mae(net) -> MAE:
    return MAE(net, decoder_dim=32, decoder_depth=1, decoder_num_heads=2)


@pytest.mark.parametrize("make", [make_mae, MaskedModeling])
def test_preview_is_deterministic_per_seed_and_leaves_the_global_rng_alone(
    tiny_net, fixed_images, make
) -> None:
    model = make(tiny_net()).train()
    images = fixed_images(3)
    torch.manual_seed(7)
    expected_next = torch.rand(1)
    torch.manual_seed(7)
    original, masked, reconstruction = model.reconstruction_preview(images, seed=0)
    assert torch.equal(torch.rand(1), expected_next)  # global RNG untouched
    assert model.training  # mode restored
    again = model.reconstruction_preview(images, seed=0)
    other = model.reconstruction_preview(images, seed=1)
    assert all(torch.equal(a, b) for a, b in zip((original, masked, reconstruction), again))
    assert not torch.equal(masked, other[1])
    assert original.shape == masked.shape == reconstruction.shape == (3, 3, 16, 16)
    assert torch.equal(original, images)


def test_preview_shows_zeros_where_masked_and_the_input_where_visible(
    tiny_net, fixed_images
) -> None:
    model = MaskedModeling(tiny_net(), mask_ratio=0.5)
    images = fixed_images(2)
    _, masked, reconstruction = model.reconstruction_preview(images, seed=3)
    true, shown, rebuilt = (patchify(t, 4) for t in (images, masked, reconstruction))  # [2, 16, 48]
    hidden = (shown == 0).all(-1)  # [2, 16]
    assert hidden.sum(-1).tolist() == [8, 8]
    assert torch.equal(rebuilt[~hidden], true[~hidden])  # visible patches pass through
    assert not torch.equal(rebuilt[hidden], true[hidden])  # masked patches are predictions
