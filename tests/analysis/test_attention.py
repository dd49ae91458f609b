"""Tests for ssl_biases/analysis/attention.py: cases with known answers and naive loops."""

import math
import warnings

import pytest
import torch

from ssl_biases.analysis.attention import (
    AlignedAttentionMap,
    MeanAttentionDistance,
    aligned_attention_map,
    attention_center,
    attention_offset,
    mean_attention_distance,
    offset_local_heads,
    patch_attention,
)


def _random_attention(batch: int, heads: int, tokens: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, heads, tokens, tokens, generator=gen, dtype=torch.float64)
    return logits.mul(3.0).softmax(dim=-1)  # [B, H, T, T]


def _naive_distance(attn: torch.Tensor, grid: tuple[int, int], prefix: int) -> torch.Tensor:
    """Double loop over queries and keys, straight from the definition."""
    grid_h, grid_w = grid
    batch, heads = attn.shape[:2]
    num = grid_h * grid_w
    out = torch.zeros(heads, dtype=torch.float64)
    for h in range(heads):
        total = 0.0
        for b in range(batch):
            for i in range(num):
                row = attn[b, h, prefix + i, prefix:].double()
                row = row / row.sum()
                yi, xi = divmod(i, grid_w)
                for j in range(num):
                    yj, xj = divmod(j, grid_w)
                    dx = (xi - xj) / max(grid_w - 1, 1)
                    dy = (yi - yj) / max(grid_h - 1, 1)
                    total += row[j].item() * math.hypot(dx, dy)
        out[h] = total / (batch * num)
    return out


def _naive_aligned_map(attn: torch.Tensor, grid: tuple[int, int], prefix: int) -> torch.Tensor:
    """Paste each query's map into the canvas with a loop over queries (Walmer's code)."""
    grid_h, grid_w = grid
    batch, heads = attn.shape[:2]
    patches = attn[:, :, prefix:, prefix:].double()
    patches = patches / patches.sum(dim=-1, keepdim=True)
    canvas = torch.zeros(heads, 2 * grid_h - 1, 2 * grid_w - 1, dtype=torch.float64)
    for q in range(grid_h * grid_w):
        i, j = divmod(q, grid_w)
        query_map = patches[:, :, q, :].sum(dim=0).view(heads, grid_h, grid_w)
        top, left = grid_h - 1 - i, grid_w - 1 - j
        canvas[:, top : top + grid_h, left : left + grid_w] += query_map
    return canvas / (batch * grid_h * grid_w)


def _right_neighbour_attention(grid: int, heads: int = 1) -> torch.Tensor:
    """Each query attends only to the patch to its right; the last column to the CLS token."""
    num = grid * grid
    attn = torch.zeros(2, heads, num + 1, num + 1)
    attn[:, :, 0, 0] = 1.0
    for q in range(num):
        if q % grid < grid - 1:
            attn[:, :, q + 1, q + 2] = 1.0
        else:
            attn[:, :, q + 1, 0] = 1.0  # null row after dropping CLS
    return attn


def test_identity_attention_has_zero_distance_and_offset() -> None:
    attn = torch.eye(16).expand(3, 2, 16, 16)
    assert torch.allclose(
        mean_attention_distance(attn, (4, 4)), torch.zeros(2, dtype=torch.float64)
    )
    aligned = aligned_attention_map(attn, (4, 4))
    assert aligned.shape == (2, 7, 7)
    assert aligned[:, 3, 3].tolist() == [1.0, 1.0]
    assert torch.allclose(attention_offset(aligned), torch.zeros(2, dtype=torch.float64))


def test_uniform_attention_distance_matches_naive_loop() -> None:
    attn = torch.full((2, 3, 16, 16), 1.0 / 16)
    expected = _naive_distance(attn, (4, 4), prefix=0)
    got = mean_attention_distance(attn, (4, 4))
    assert torch.allclose(got, expected, atol=1e-6)
    assert got[0].item() == pytest.approx(0.6693, abs=1e-4)  # uniform on a 4x4 grid


def test_random_attention_distance_matches_naive_loop_non_square_grid_with_prefix() -> None:
    attn = _random_attention(batch=2, heads=2, tokens=1 + 3 * 4)
    expected = _naive_distance(attn, (3, 4), prefix=1)
    assert torch.allclose(mean_attention_distance(attn, (3, 4), 1), expected, atol=1e-10)


def test_patch_attention_drops_prefix_and_renormalises() -> None:
    attn = torch.tensor([[[[0.5, 0.25, 0.25], [0.5, 0.1, 0.4], [0.2, 0.6, 0.2]]]])
    patches = patch_attention(attn, num_prefix_tokens=1)
    expected = torch.tensor([[[[0.2, 0.8], [0.75, 0.25]]]])
    assert torch.allclose(patches, expected)


def test_prefix_token_mass_does_not_change_distance() -> None:
    # A block with a CLS token that takes half of every row must give the same distance as
    # the same patch attention without a CLS token.
    patches = _random_attention(batch=2, heads=3, tokens=9)  # [B, H, 9, 9]
    with_cls = torch.zeros(2, 3, 10, 10, dtype=torch.float64)
    with_cls[..., 0] = 0.5
    with_cls[..., 1:, 1:] = 0.5 * patches
    with_cls[..., 0, 1:] = 0.5 / 9
    assert torch.allclose(
        mean_attention_distance(with_cls, (3, 3), 1), mean_attention_distance(patches, (3, 3), 0)
    )


def test_right_neighbour_head_map_and_offset() -> None:
    grid = 8
    attn = _right_neighbour_attention(grid)
    aligned = aligned_attention_map(attn, (grid, grid), num_prefix_tokens=1)  # [1, 15, 15]
    assert aligned.shape == (1, 15, 15)
    assert aligned[0, 7, 8].item() == pytest.approx(1.0)  # one cell right of the centre
    assert aligned.sum().item() == pytest.approx(1.0)
    # Canvas x of column c is 2c/14 - 1, so column 8 is 1/7 = 1/(K-1).
    assert torch.allclose(
        attention_center(aligned), torch.tensor([[1.0 / 7.0, 0.0]], dtype=torch.float64)
    )
    assert attention_offset(aligned).item() == pytest.approx(1.0 / 7.0, abs=1e-12)
    # Null rows (last column) are left out: the distance is exactly one patch step too.
    distance = mean_attention_distance(attn, (grid, grid), 1)
    assert distance.item() == pytest.approx(1.0 / 7.0, abs=1e-7)


def test_centred_attention_has_zero_offset() -> None:
    grid = 6
    num = grid * grid
    box = torch.zeros(1, 1, num, num)
    for q in range(num):
        r, c = divmod(q, grid)
        for k in range(num):
            kr, kc = divmod(k, grid)
            if abs(kr - r) <= 1 and abs(kc - c) <= 1:
                box[0, 0, q, k] = 1.0
    box = box / box.sum(dim=-1, keepdim=True)
    uniform = torch.full((1, 1, num, num), 1.0 / num)
    attn = torch.cat([box, uniform], dim=1)  # [1, 2, N, N]
    offsets = attention_offset(aligned_attention_map(attn, (grid, grid)))
    assert torch.allclose(offsets, torch.zeros(2, dtype=torch.float64), atol=1e-12)


def test_aligned_map_matches_query_loop() -> None:
    attn = _random_attention(batch=3, heads=2, tokens=1 + 3 * 5, seed=1)
    expected = _naive_aligned_map(attn, (3, 5), prefix=1)
    got = aligned_attention_map(attn, (3, 5), 1)
    assert got.shape == (2, 5, 9)
    assert torch.allclose(got, expected, atol=1e-12)
    assert torch.allclose(got.sum(dim=(1, 2)), torch.ones(2, dtype=torch.float64))


def test_offset_never_exceeds_distance() -> None:
    attn = _random_attention(batch=2, heads=4, tokens=25, seed=2)
    distance = mean_attention_distance(attn, (5, 5))
    offset = attention_offset(aligned_attention_map(attn, (5, 5)))
    assert bool((offset <= distance + 1e-9).all())


def test_metrics_accumulate_like_one_big_batch() -> None:
    attn = _random_attention(batch=6, heads=3, tokens=17, seed=3)
    distance_metric = MeanAttentionDistance(grid_size=(4, 4), num_prefix_tokens=1)
    map_metric = AlignedAttentionMap(grid_size=(4, 4), num_prefix_tokens=1)
    for chunk in attn.split([1, 2, 3]):
        batch_value = distance_metric(chunk)  # forward: this batch's value, and accumulate
        assert torch.allclose(batch_value, mean_attention_distance(chunk, (4, 4), 1))
        map_metric.update(chunk)
    assert torch.allclose(distance_metric.compute(), mean_attention_distance(attn, (4, 4), 1))
    assert torch.allclose(map_metric.compute(), aligned_attention_map(attn, (4, 4), 1))
    distance_metric.reset()
    assert distance_metric.total.ndim == 0


@pytest.mark.parametrize("metric_class", [MeanAttentionDistance, AlignedAttentionMap])
def test_metric_refuses_a_second_block_with_another_head_count(metric_class) -> None:
    metric = metric_class(grid_size=(4, 4), num_prefix_tokens=1)
    metric.update(_random_attention(batch=2, heads=3, tokens=17, seed=4))
    with pytest.raises(ValueError, match=f"use one {metric_class.__name__} per block"):
        metric.update(_random_attention(batch=2, heads=2, tokens=17, seed=5))


def test_offset_local_heads_finds_planted_head_only() -> None:
    grid = 8
    num = grid * grid
    planted = _right_neighbour_attention(grid)[:1]  # [1, 1, T, T]
    uniform = torch.zeros(1, 1, num + 1, num + 1)
    uniform[..., 1:] = 1.0 / num
    identity = torch.eye(num + 1).expand(1, 1, num + 1, num + 1)
    blocks = [
        torch.cat([uniform, identity], dim=1),  # block 0: global and self heads
        torch.cat([identity, planted], dim=1),  # block 1: head 1 is offset-local
    ]
    distance = torch.stack([mean_attention_distance(b, (grid, grid), 1) for b in blocks])
    offset = torch.stack(
        [attention_offset(aligned_attention_map(b, (grid, grid), 1)) for b in blocks]
    )
    assert distance.shape == (2, 2)
    assert offset_local_heads(distance, offset) == [(1, 1)]


def test_bad_token_count_raises() -> None:
    attn = torch.full((1, 1, 17, 17), 1.0 / 17)
    with pytest.raises(ValueError, match="grid_size"):
        mean_attention_distance(attn, (4, 4), num_prefix_tokens=0)


@pytest.mark.parametrize(("grid", "warns"), [((4, 4), True), ((8, 8), False), ((5, 5), False)])
def test_offset_local_heads_warns_when_the_grid_is_too_coarse(grid, warns) -> None:
    # 4x4: one patch step is 1/3 > 0.3, so a pure nearest-neighbour head cannot qualify
    distance = offset = torch.full((1, 1), 1.0 / (grid[0] - 1))  # such a head, [1, 1]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        heads = offset_local_heads(distance, offset, grid_size=grid)
    messages = [str(w.message) for w in caught]
    assert any("at least 5x5" in m for m in messages) == warns, messages
    assert heads == ([] if warns else [(0, 0)])
