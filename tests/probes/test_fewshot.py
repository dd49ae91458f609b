"""Tests for ssl_biases/probes/fewshot.py: separable data, a numpy reference, the samplers."""

import numpy as np
import pytest
import torch

from ssl_biases.probes.fewshot import (
    episodic_fewshot,
    fewshot_eval,
    fewshot_lsr_top1,
    fit_lsr,
    sample_kshot,
)


def _blobs(num_classes: int, per_class: int, dim: int, noise: float, seed: int, split: int = 0):
    """Gaussian blobs around class centres fixed by ``seed``; ``split`` picks fresh noise.

    Returns ([n, dim] float32 features, [n] int64 labels).
    """
    centres = 4.0 * torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(seed))
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    gen = torch.Generator().manual_seed(1000 * seed + split + 1)
    features = centres[labels] + noise * torch.randn(len(labels), dim, generator=gen)
    return features, labels


def _numpy_ridge(train_x, train_y, l2_reg):
    """big_vision's recipe written out in numpy, solved as an augmented least squares."""
    x = train_x.numpy().astype(np.float64)
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-5
    design = np.concatenate([(x - mean) / std, np.full((len(x), 1), 100.0)], axis=1)
    classes = np.unique(train_y.numpy())
    y = np.where(train_y.numpy()[:, None] == classes[None, :], 1.0, -1.0)
    d = design.shape[1]
    stacked_x = np.concatenate([design, np.sqrt(l2_reg) * np.eye(d)], axis=0)
    stacked_y = np.concatenate([y, np.zeros((d, len(classes)))], axis=0)
    weight = np.linalg.lstsq(stacked_x, stacked_y, rcond=None)[0]
    return mean, std, weight, classes


# primal (n >= d) and dual (n < d) solves
@pytest.mark.parametrize("per_class,dim,noise", [(20, 8, 3.0), (3, 40, 12.0)])
def test_fit_lsr_matches_numpy_ridge(per_class: int, dim: int, noise: float) -> None:
    train_x, train_y = _blobs(4, per_class, dim, noise=noise, seed=0)
    test_x, test_y = _blobs(4, 30, dim, noise=noise, seed=0, split=1)
    l2_reg = 5.0
    classifier = fit_lsr(train_x, train_y, l2_reg)
    mean, std, weight, classes = _numpy_ridge(train_x, train_y, l2_reg)
    np.testing.assert_allclose(classifier.mean.numpy(), mean, rtol=1e-10)
    np.testing.assert_allclose(classifier.std.numpy(), std, rtol=1e-10)
    np.testing.assert_allclose(classifier.weight.numpy(), weight, rtol=1e-7, atol=1e-10)

    design = np.concatenate(
        [(test_x.numpy() - mean) / std, np.full((len(test_x), 1), 100.0)], axis=1
    )
    expected = float(np.mean(classes[(design @ weight).argmax(axis=1)] == test_y.numpy()))
    assert 0.25 < expected < 1.0  # a case with a non-trivial answer
    assert fewshot_lsr_top1(train_x, train_y, test_x, test_y, l2_reg) == pytest.approx(expected)


def test_separable_features_give_full_accuracy_with_any_label_values() -> None:
    train_x, train_y = _blobs(5, 5, 32, noise=0.1, seed=1)
    test_x, test_y = _blobs(5, 40, 32, noise=0.1, seed=1, split=1)
    codes = torch.tensor([3, 7, 11, 20, 42])
    assert fewshot_lsr_top1(train_x, codes[train_y], test_x, codes[test_y]) == 1.0
    one_shot = sample_kshot(train_y, 1, seed=0)
    assert fewshot_lsr_top1(train_x[one_shot], train_y[one_shot], test_x, test_y) == 1.0


def test_sample_kshot_exact_counts_deterministic_and_nested() -> None:
    labels = torch.tensor([0] * 7 + [1] * 5 + [2] * 9)[torch.randperm(21)]
    index = sample_kshot(labels, 4, seed=3)
    assert len(index) == 12 and len(set(index.tolist())) == 12
    assert torch.bincount(labels[index]).tolist() == [4, 4, 4]
    assert torch.equal(index, sample_kshot(labels, 4, seed=3))
    assert not torch.equal(index, sample_kshot(labels, 4, seed=4))
    smaller = sample_kshot(labels, 2, seed=3)  # same seed: the 2-shot set is inside the 4-shot
    assert set(smaller.tolist()) <= set(index.tolist())


def test_sample_kshot_raises_for_small_class() -> None:
    labels = torch.tensor([0, 0, 0, 1, 1])
    with pytest.raises(ValueError, match="class 1 has 2 examples, fewer than shots=3"):
        sample_kshot(labels, 3, seed=0)


def test_fewshot_eval_reports_mean_and_std_per_shot() -> None:
    train_x, train_y = _blobs(3, 12, 16, noise=0.1, seed=2)
    test_x, test_y = _blobs(3, 10, 16, noise=0.1, seed=2, split=1)
    results = fewshot_eval(train_x, train_y, test_x, test_y, shots=(1, 10), seeds=(0, 1, 2))
    assert results == {
        "fewshot_1shot": 1.0,
        "fewshot_1shot_std": 0.0,
        "fewshot_10shot": 1.0,
        "fewshot_10shot_std": 0.0,
    }
    noisy_test = test_x + 8.0 * torch.randn(
        test_x.shape, generator=torch.Generator().manual_seed(0)
    )
    noisy = fewshot_eval(train_x, train_y, noisy_test, test_y, shots=(1,), seeds=(0, 1, 2))
    per_seed = []
    for seed in (0, 1, 2):
        index = sample_kshot(train_y, 1, seed)
        per_seed.append(fewshot_lsr_top1(train_x[index], train_y[index], noisy_test, test_y))
    assert noisy["fewshot_1shot"] == pytest.approx(np.mean(per_seed))
    assert noisy["fewshot_1shot_std"] == pytest.approx(np.std(per_seed, ddof=1))
    assert 0.0 < noisy["fewshot_1shot"] < 1.0


def test_episodic_fewshot_in_range_and_deterministic() -> None:
    features, labels = _blobs(8, 12, 16, noise=4.0, seed=3)
    mean, ci = episodic_fewshot(features, labels, n_way=5, k_shot=1, n_query=5, episodes=20, seed=0)
    assert 0.0 <= mean <= 1.0 and ci > 0.0
    assert (mean, ci) == episodic_fewshot(
        features, labels, n_way=5, k_shot=1, n_query=5, episodes=20, seed=0
    )
    assert (mean, ci) != episodic_fewshot(
        features, labels, n_way=5, k_shot=1, n_query=5, episodes=20, seed=1
    )
    clean, _ = episodic_fewshot(*_blobs(8, 12, 16, noise=0.1, seed=3), 5, 1, 5, 10, 0)
    assert clean == 1.0


def test_episodic_fewshot_needs_enough_classes() -> None:
    features, labels = _blobs(4, 6, 8, noise=1.0, seed=4)
    with pytest.raises(ValueError, match="fewer than n_way=5"):
        episodic_fewshot(features, labels, n_way=5, k_shot=1, n_query=3, episodes=5, seed=0)
