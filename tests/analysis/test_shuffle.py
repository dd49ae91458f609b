"""Tests for ssl_biases/analysis/shuffle.py: layout reliance of a frozen representation."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ssl_biases.analysis import shuffle as analysis_shuffle
from ssl_biases.analysis.shuffle import LAYOUT_SHUFFLES, layout_reliance, layout_shuffles
from ssl_biases.backbones import IsotropicNet
from ssl_biases.data import shuffle as data_shuffle
from ssl_biases.probes.knn import KNNProbe


def _loaders(seed: int = 0) -> tuple[DataLoader, DataLoader]:
    """Bank and queries of 16 px images whose class is a bright quadrant (layout-coded)."""
    g = torch.Generator().manual_seed(seed)
    loaders = []
    for n in (40, 20):
        labels = torch.arange(n) % 4
        images = 0.1 * torch.randn(n, 3, 16, 16, generator=g)  # [N, 3, 16, 16]
        for i, y in enumerate(labels.tolist()):
            r, c = divmod(y, 2)
            images[i, :, 8 * r : 8 * r + 8, 8 * c : 8 * c + 8] += 1.0
        loaders.append(DataLoader(TensorDataset(images, labels), batch_size=16))
    return loaders[0], loaders[1]


class Flatten(nn.Module):
    """An embedding that is the image itself: it relies on every pixel's place."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)  # [B, 3*H*W]


def test_old_names_still_import_and_are_the_data_transforms() -> None:
    assert analysis_shuffle.PatchShuffle is data_shuffle.PatchShuffle
    assert analysis_shuffle.PixelShuffle is data_shuffle.PixelShuffle
    assert LAYOUT_SHUFFLES == ("patch", "within_patch", "pixel")
    shuffles = layout_shuffles(4, seed=3)
    assert (
        shuffles["within_patch"].shuffle_within_patch
        and not shuffles["within_patch"].shuffle_patches
    )
    assert not shuffles["patch"].shuffle_within_patch and shuffles["patch"].shuffle_patches


def test_matches_a_naive_knn_on_shuffled_images() -> None:
    bank, queries = _loaders()
    result = layout_reliance(Flatten(), bank, queries, patch_size=4, seed=1)
    knn = KNNProbe()
    bank_x, bank_y = bank.dataset.tensors
    query_x, query_y = queries.dataset.tensors
    base = knn.evaluate(bank_x.flatten(1), bank_y, query_x.flatten(1), query_y)["knn_top1"]
    assert base == 1.0  # the quadrant is found in place
    for kind, shuffle in layout_shuffles(4, seed=1).items():
        top1 = knn.evaluate(
            shuffle(bank_x).flatten(1), bank_y, shuffle(query_x).flatten(1), query_y
        )["knn_top1"]
        assert result[kind]["knn_top1"] == pytest.approx(top1)
        assert result[kind]["drop"] == pytest.approx(base - top1)
        assert result[kind]["relative"] == pytest.approx(top1 / base)
    assert (result["patch_size"], result["seed"]) == (4, 1)


def test_known_answers_of_a_flattened_image_and_a_bag_of_patches() -> None:
    """Known answers: a pixel-wise embedding sees one fixed permutation of *both* bank and
    queries, so cosine kNN is unchanged (drop 0); a position-free, mean-pooled net is exactly
    invariant to the patch order (drop 0) but not to pixels moving inside its patches."""
    bank, queries = _loaders()
    flat = layout_reliance(Flatten(), bank, queries, patch_size=4)
    for kind in LAYOUT_SHUFFLES:
        assert flat[kind]["drop"] == pytest.approx(0.0, abs=1e-9)
    torch.manual_seed(0)
    bag = IsotropicNet(
        image_size=16, patch_size=4, width=32, depth=2, num_heads=2, pos_embed="none", pool="gap"
    ).eval()
    result = layout_reliance(bag, bank, queries, patch_size=4, unshuffled_top1=0.5)
    assert result["patch"]["knn_top1"] == pytest.approx(
        layout_reliance(bag, bank, queries, patch_size=4)["patch"]["knn_top1"]
    )
    with torch.no_grad():
        x = bank.dataset.tensors[0][:4]
        shuffles = layout_shuffles(4, seed=0)
        assert torch.allclose(bag(shuffles["patch"](x)), bag(x), atol=1e-5)
        assert not torch.allclose(bag(shuffles["within_patch"](x)), bag(x), atol=1e-3)
    assert result["patch"]["drop"] == pytest.approx(0.5 - result["patch"]["knn_top1"])
