"""`MaskedReconstruction.reconstruction_preview`: deterministic, faithful to what is shown."""

from __future__ import annotations

import pytest
import torch
from lightly.models.utils import patchify
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader, TensorDataset

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


@pytest.mark.parametrize("norm_pix_loss", [False, True])
def test_held_out_masked_mse_matches_a_hand_computation(
    tiny_net, fixed_images, monkeypatch, norm_pix_loss
) -> None:
    model = MaskedModeling(tiny_net(), mask_ratio=0.5, norm_pix_loss=norm_pix_loss).eval()
    images = fixed_images(2)  # [2, 3, 16, 16]: 16 patches of 48 pixels, 8 masked
    # predicting 0 everywhere makes the MSE the mean square of the masked targets
    monkeypatch.setattr(
        model, "predict_masked", lambda x, keep, mask: (x.new_zeros(*mask.shape, 48), None)
    )
    noise = torch.rand(2, 16, generator=torch.Generator().manual_seed(model.val_mask_seed + 5))
    squares = []
    for b in range(2):
        for index in noise[b].argsort()[8:].tolist():
            row, col = divmod(index, 4)
            patch = images[b, :, 4 * row : 4 * row + 4, 4 * col : 4 * col + 4]  # [3, 4, 4]
            patch = patch.permute(1, 2, 0).reshape(48)  # lightly's (p, p, C) order
            if norm_pix_loss:
                patch = (patch - patch.mean()) / (patch.var() + 1e-6) ** 0.5
            squares.append(patch.pow(2).mean())
    expected = torch.stack(squares).mean()
    torch.testing.assert_close(model.held_out_masked_mse(images, batch_idx=5), expected)


@pytest.mark.parametrize("make", [make_mae, MaskedModeling])
def test_val_masked_mse_is_logged_on_the_probe_queries_and_identical_across_validations(
    tiny_net, fixed_images, make
) -> None:
    model = make(tiny_net())
    data = TensorDataset(fixed_images(8), torch.zeros(8, dtype=torch.long))
    loaders = [DataLoader(data, batch_size=4), DataLoader(data, batch_size=4)]
    trainer = Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    values = []
    for seed in (0, 1):
        torch.manual_seed(seed)  # the global RNG must not matter
        values.append(trainer.validate(model, loaders, verbose=False)[1]["val/masked_mse"])
    assert values[0] == values[1]
    # the two batches of 4 under their fixed masks, averaged over the 8 queries
    by_batch = [model.held_out_masked_mse(fixed_images(8)[4 * i : 4 * i + 4], i) for i in (0, 1)]
    assert values[0] == pytest.approx(torch.stack(by_batch).mean().item(), rel=1e-5)


@pytest.mark.parametrize("make", [make_mae, MaskedModeling])
def test_online_probe_trains_on_the_unmasked_views_features(
    tiny_net, fixed_images, monkeypatch, make
) -> None:
    model = make(tiny_net()).train()
    images = fixed_images(4)
    seen = []
    monkeypatch.setattr(model, "online_probe_loss", lambda f, y: seen.append(f) or f.sum() * 0)
    model.training_step(([images], torch.zeros(4, dtype=torch.long)), 0)
    with torch.no_grad():
        expected = model.backbone(images)  # [4, 32], the unmasked view
    torch.testing.assert_close(seen[0], expected)
    assert not seen[0].requires_grad  # no extra graph through the backbone
