"""Tests for ssl_biases/analysis/cka.py against known answers and a naive numpy estimator."""

import numpy as np
import pytest
import torch

from ssl_biases.analysis.cka import MinibatchCKA, gram_linear, hsic_unbiased, linear_cka


def _naive_hsic(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased HSIC_1 of Nguyen et al. (arXiv 2010.15327, eq. 3), term by term."""
    n = x.shape[0]
    k = x.reshape(n, -1) @ x.reshape(n, -1).T
    l = y.reshape(n, -1) @ y.reshape(n, -1).T  # noqa: E741
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(l, 0.0)
    ones = np.ones(n)
    first = np.trace(k @ l)
    second = (ones @ k @ ones) * (ones @ l @ ones) / ((n - 1) * (n - 2))
    third = 2.0 / (n - 2) * (ones @ k @ l @ ones)
    return (first + second - third) / (n * (n - 3))


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_cka_of_a_representation_with_itself_is_one() -> None:
    x = _randn(40, 7, seed=0)
    assert linear_cka(x, x).item() == pytest.approx(1.0, abs=1e-12)


def test_cka_invariant_to_orthogonal_transform_scaling_and_shift() -> None:
    x = _randn(60, 12, seed=1)
    y = x[:, :6] @ _randn(6, 9, seed=2) + 0.5 * _randn(60, 9, seed=3)
    q, _ = torch.linalg.qr(_randn(12, 12, seed=4))  # orthogonal
    reference = linear_cka(x, y).item()
    assert 0.2 < reference < 0.95
    assert linear_cka(x @ q, y).item() == pytest.approx(reference, abs=1e-10)
    assert linear_cka(7.5 * x, 0.1 * y).item() == pytest.approx(reference, abs=1e-10)
    assert linear_cka(x + 3.0, y - 1.0).item() == pytest.approx(reference, abs=1e-10)
    assert linear_cka(x, 2.0 * x @ q).item() == pytest.approx(1.0, abs=1e-10)


def test_cka_near_zero_for_independent_features() -> None:
    # The unbiased estimator is ~0 even when width equals the number of samples (the biased
    # one would be far from 0 here).
    x, y = _randn(300, 300, seed=5), _randn(300, 300, seed=6)
    assert abs(linear_cka(x, y).item()) < 0.02


def test_hsic_unbiased_matches_naive_formula_and_leaves_inputs_alone() -> None:
    x, y = _randn(9, 4, seed=7), _randn(9, 3, 2, seed=8)
    gram_x, gram_y = gram_linear(x), gram_linear(y)
    before = gram_x.clone()
    got = hsic_unbiased(gram_x, gram_y).item()
    assert got == pytest.approx(_naive_hsic(x.numpy(), y.numpy()), rel=1e-10)
    assert torch.equal(gram_x, before)


def test_minibatch_cka_matches_naive_accumulation() -> None:
    batches = 3
    layers_a = [_randn(24, 4, 3, seed=10), _randn(24, 6, seed=11)]  # tokens and pooled
    layers_b = [_randn(24, 5, seed=12), layers_a[1] + 0.3 * _randn(24, 6, seed=13)]
    layers_b.append(layers_a[0].flatten(1) @ _randn(12, 8, seed=14))

    metric = MinibatchCKA()
    for b in range(batches):
        rows = slice(8 * b, 8 * (b + 1))
        metric.update([f[rows] for f in layers_a], [f[rows] for f in layers_b])
    got = metric.compute()
    assert got.shape == (2, 3)
    assert got.dtype == torch.float64

    expected = np.zeros((2, 3))
    for i, fa in enumerate(layers_a):
        for j, fb in enumerate(layers_b):
            ab = aa = bb = 0.0
            for b in range(batches):
                xa, xb = fa[8 * b : 8 * (b + 1)].numpy(), fb[8 * b : 8 * (b + 1)].numpy()
                ab += _naive_hsic(xa, xb)
                aa += _naive_hsic(xa, xa)
                bb += _naive_hsic(xb, xb)
            expected[i, j] = ab / np.sqrt(aa * bb)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-9)


def test_minibatch_cka_single_batch_equals_linear_cka_and_self_diagonal_is_one() -> None:
    feats = [_randn(16, 5, seed=20), _randn(16, 2, 4, seed=21), _randn(16, 3, seed=22)]
    metric = MinibatchCKA()
    matrix = metric(feats, feats)  # forward: one batch's value, also accumulated
    assert torch.equal(matrix, metric.compute())  # [3, 3]
    assert torch.allclose(torch.diagonal(matrix), torch.ones(3, dtype=torch.float64))
    assert matrix[0, 1].item() == pytest.approx(linear_cka(feats[0], feats[1]).item(), abs=1e-12)
    assert torch.allclose(matrix, matrix.T)


def test_minibatch_cka_of_one_layer_each_is_a_1x1_matrix() -> None:
    x, y = _randn(16, 5, seed=23), _randn(16, 3, seed=24)
    metric = MinibatchCKA()
    assert metric([x], [y]).shape == (1, 1)  # forward, too: torchmetrics squeezes to a scalar
    matrix = metric.compute()
    assert matrix.shape == (1, 1)
    assert matrix[0, 0].item() == pytest.approx(linear_cka(x, y).item(), abs=1e-12)


def test_minibatch_cka_float32_inputs_accumulate_in_float64() -> None:
    x = _randn(32, 10, seed=30).float()
    metric = MinibatchCKA()
    metric.update([x[:16]], [x[:16] * 2.0])
    metric.update([x[16:]], [x[16:] * 2.0])
    assert metric.hsic_ab.dtype == torch.float64
    assert metric.compute().item() == pytest.approx(1.0, abs=1e-12)


def test_too_small_batch_and_mismatched_examples_raise() -> None:
    with pytest.raises(ValueError, match="at least 4"):
        linear_cka(_randn(3, 5, seed=40), _randn(3, 5, seed=41))
    with pytest.raises(ValueError, match="same examples"):
        MinibatchCKA().update([_randn(8, 5, seed=42)], [_randn(6, 5, seed=43)])


def _ddp_worker(rank: int, world_size: int, port: int, feats: list, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    try:
        metric = MinibatchCKA()
        half = feats[0].shape[0] // world_size
        for batch in range(2):  # two batches of 8 per rank
            rows = slice(rank * half + 8 * batch, rank * half + 8 * (batch + 1))
            metric.update([f[rows] for f in feats], [f[rows] for f in feats[::-1]])
        torch.save(metric.compute(), f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_minibatch_cka_under_ddp_equals_single_process(tmp_path) -> None:
    import socket

    import torch.multiprocessing as mp

    feats = [_randn(32, 6, seed=50), _randn(32, 3, 2, seed=51)]
    single = MinibatchCKA()
    for batch in range(4):
        rows = slice(8 * batch, 8 * (batch + 1))
        single.update([f[rows] for f in feats], [f[rows] for f in feats[::-1]])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = (2, port, feats, str(tmp_path))
    mp.start_processes(_ddp_worker, args=args, nprocs=2, start_method="fork")
    for rank in range(2):
        synced = torch.load(tmp_path / f"rank{rank}.pt")
        assert torch.allclose(synced, single.compute(), atol=1e-12)
