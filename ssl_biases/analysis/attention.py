"""Attention analyses of Walmer et al., "Teaching Matters" (arXiv 2212.03862).

All functions read the post-softmax attention of one block, ``[B, heads, T, T]`` with
``T = num_prefix_tokens + K_h * K_w``, patch tokens in row-major order. Prefix tokens
(class / register tokens) are dropped from queries and keys, and each query row is
renormalised over the patches, as in the official code (mwalmer-umd/vit_analysis,
``analysis/attention_metrics.py``).

Two per-head statistics, both in units of the image side:

- *mean attention distance* (Raghu et al., arXiv 2108.08810; Walmer et al. Sec. 4):
  patch centres on ``[0, 1]^2`` (``x = col / (K_w - 1)``, ``y = row / (K_h - 1)``),
  ``d_i = sum_j a_ij ||p_i - p_j||``, averaged over queries and images;
- *attention offset*: the aligned aggregated attention map (each query's ``K x K`` map
  pasted into a ``(2K-1) x (2K-1)`` canvas centred on the query, averaged over queries and
  images) has its centre of mass taken in coordinates spanning ``[-1, 1]`` across the
  canvas; the offset is the length of that vector. One canvas cell is one patch step, so
  the offset is the length of the mean query-to-key displacement, and by Jensen's
  inequality ``offset <= distance`` for every head.

Query rows whose whole mass sat on prefix tokens have no patch attention left ("null"
rows). The official code keeps them as zeros in the average; here they are left out of
both the sums and the counts, so they do not pull a head towards distance zero.

Every statistic is additive over batches (a sum and a count per head): the functions
``attention_distance_sums`` and ``aligned_attention_sums`` return them, and the metrics
``MeanAttentionDistance`` and ``AlignedAttentionMap`` accumulate them over a dataloader
(and sum them across ranks under DDP).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
from torch import Tensor
from torchmetrics import Metric


def _check_attention(attn: Tensor, grid_size: tuple[int, int], num_prefix_tokens: int) -> None:
    """Raise ``ValueError`` unless ``attn`` is ``[B, H, T, T]`` with ``T = prefix + K_h K_w``."""
    if attn.ndim != 4 or attn.shape[-1] != attn.shape[-2]:
        raise ValueError(
            f"attention must be post-softmax [B, heads, T, T], got shape {tuple(attn.shape)}"
        )
    grid_h, grid_w = grid_size
    if grid_h < 1 or grid_w < 1:
        raise ValueError(f"grid_size must be positive, got {grid_size}")
    if num_prefix_tokens < 0:
        raise ValueError(f"num_prefix_tokens must be >= 0, got {num_prefix_tokens}")
    if attn.shape[-1] != num_prefix_tokens + grid_h * grid_w:
        raise ValueError(
            f"attention has {attn.shape[-1]} tokens but grid_size={grid_size} and "
            f"num_prefix_tokens={num_prefix_tokens} imply {num_prefix_tokens + grid_h * grid_w}; "
            "pass the backbone's patch grid and its number of class/register tokens"
        )


def patch_positions(grid_size: tuple[int, int]) -> Tensor:
    """Patch centres of a ``K_h x K_w`` grid on the unit square (arXiv 2212.03862).

    Args:
        grid_size: ``(K_h, K_w)`` patches per column and per row.

    Returns:
        ``[K_h * K_w, 2]`` float64 ``(x, y)`` in row-major patch order, with
        ``x = col / (K_w - 1)`` and ``y = row / (K_h - 1)`` (0 along an axis of one patch).
    """
    grid_h, grid_w = grid_size
    ys = torch.arange(grid_h, dtype=torch.float64) / max(grid_h - 1, 1)  # [K_h]
    xs = torch.arange(grid_w, dtype=torch.float64) / max(grid_w - 1, 1)  # [K_w]
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")  # [K_h, K_w] each
    return torch.stack([xx.flatten(), yy.flatten()], dim=-1)  # [N, 2]


def patch_attention(attn: Tensor, num_prefix_tokens: int) -> Tensor:
    """Patch-to-patch attention: prefix rows and columns dropped, rows renormalised.

    Args:
        attn: post-softmax attention ``[B, H, T, T]``.
        num_prefix_tokens: leading class/register tokens to drop (0 or 1 usually).

    Returns:
        ``[B, H, N, N]`` with ``N = T - num_prefix_tokens``; each query row sums to 1, or is
        all zeros if that query attended only to prefix tokens. Computed in at least float32.
    """
    if attn.ndim != 4 or attn.shape[-1] != attn.shape[-2]:
        raise ValueError(
            f"attention must be post-softmax [B, heads, T, T], got shape {tuple(attn.shape)}"
        )
    if not 0 <= num_prefix_tokens < attn.shape[-1]:
        raise ValueError(f"num_prefix_tokens={num_prefix_tokens} must be in [0, {attn.shape[-1]})")
    attn = attn.to(torch.promote_types(attn.dtype, torch.float32))
    patches = attn[..., num_prefix_tokens:, num_prefix_tokens:]  # [B, H, N, N]
    mass = patches.sum(dim=-1, keepdim=True)  # [B, H, N, 1]
    return patches / torch.where(mass > 0, mass, torch.ones_like(mass))  # [B, H, N, N]


def _valid_queries(patches: Tensor) -> Tensor:
    """Mask of query rows with patch attention left after renormalisation: ``[B, H, N]``."""
    return patches.sum(dim=-1) > 0.5  # [B, H, N]; rows sum to 1 or 0


def attention_distance_sums(
    attn: Tensor, grid_size: tuple[int, int], num_prefix_tokens: int = 0
) -> tuple[Tensor, Tensor]:
    """Batch-additive parts of the mean attention distance (arXiv 2212.03862).

    Args:
        attn: post-softmax attention ``[B, H, T, T]`` of one block.
        grid_size: patch grid ``(K_h, K_w)``.
        num_prefix_tokens: leading class/register tokens.

    Returns:
        ``(distance_sum, count)``, both ``[H]`` float64: the sum of ``d_i`` over images and
        non-null queries, and the number of such queries. Sum both over batches and divide.
    """
    _check_attention(attn, grid_size, num_prefix_tokens)
    patches = patch_attention(attn, num_prefix_tokens)  # [B, H, N, N]
    pos = patch_positions(grid_size).to(device=patches.device)  # [N, 2]
    dist = torch.cdist(pos, pos).to(patches.dtype)  # [N, N]
    per_query = torch.einsum("bhqk,qk->bhq", patches, dist)  # [B, H, N]
    count = _valid_queries(patches).sum(dim=(0, 2))  # [H]
    return per_query.sum(dim=(0, 2)).double(), count.double()


def mean_attention_distance(
    attn: Tensor, grid_size: tuple[int, int], num_prefix_tokens: int = 0
) -> Tensor:
    """Mean attention distance per head, in units of the image side (arXiv 2212.03862).

    Args:
        attn: post-softmax attention ``[B, H, T, T]`` of one block.
        grid_size: patch grid ``(K_h, K_w)``.
        num_prefix_tokens: leading class/register tokens.

    Returns:
        ``[H]`` float64; NaN for a head whose every query attended only to prefix tokens.
        Use ``MeanAttentionDistance`` to average over a dataloader.
    """
    distance_sum, count = attention_distance_sums(attn, grid_size, num_prefix_tokens)
    return distance_sum / count  # [H]


def _canvas_index(grid_size: tuple[int, int], device: torch.device) -> Tensor:
    """Flat canvas cell of each (query, key) pair: ``[N, N]`` indices into ``(2K_h-1)(2K_w-1)``.

    Key ``(r, c)`` seen from query ``(i, j)`` lands at canvas cell
    ``(K_h - 1 + r - i, K_w - 1 + c - j)``, so the query sits at the canvas centre.
    """
    grid_h, grid_w = grid_size
    rows = torch.arange(grid_h, device=device).repeat_interleave(grid_w)  # [N]
    cols = torch.arange(grid_w, device=device).repeat(grid_h)  # [N]
    canvas_r = grid_h - 1 + rows[None, :] - rows[:, None]  # [N(query), N(key)]
    canvas_c = grid_w - 1 + cols[None, :] - cols[:, None]  # [N, N]
    return canvas_r * (2 * grid_w - 1) + canvas_c  # [N, N]


def aligned_attention_sums(
    attn: Tensor, grid_size: tuple[int, int], num_prefix_tokens: int = 0
) -> tuple[Tensor, Tensor]:
    """Batch-additive parts of the aligned aggregated attention map (arXiv 2212.03862).

    Args:
        attn: post-softmax attention ``[B, H, T, T]`` of one block.
        grid_size: patch grid ``(K_h, K_w)``.
        num_prefix_tokens: leading class/register tokens.

    Returns:
        ``(map_sum, count)``: ``[H, 2K_h-1, 2K_w-1]`` and ``[H]``, float64. ``map_sum`` is the
        sum over images and queries of each query's patch attention pasted so that the
        query sits at the canvas centre; ``count`` is the number of non-null queries.
    """
    _check_attention(attn, grid_size, num_prefix_tokens)
    grid_h, grid_w = grid_size
    patches = patch_attention(attn, num_prefix_tokens)  # [B, H, N, N]
    heads = patches.shape[1]
    index = _canvas_index(grid_size, patches.device).flatten()  # [N*N]
    per_pair = patches.sum(dim=0).flatten(1).double()  # [H, N*N]
    canvas = per_pair.new_zeros(heads, (2 * grid_h - 1) * (2 * grid_w - 1))  # [H, C]
    canvas.index_add_(1, index, per_pair)  # [H, C]
    count = _valid_queries(patches).sum(dim=(0, 2)).double()  # [H]
    return canvas.view(heads, 2 * grid_h - 1, 2 * grid_w - 1), count


def aligned_attention_map(
    attn: Tensor, grid_size: tuple[int, int], num_prefix_tokens: int = 0
) -> Tensor:
    """Aligned aggregated attention map per head (arXiv 2212.03862, Sec. 4).

    Args:
        attn: post-softmax attention ``[B, H, T, T]`` of one block.
        grid_size: patch grid ``(K_h, K_w)``.
        num_prefix_tokens: leading class/register tokens.

    Returns:
        ``[H, 2K_h-1, 2K_w-1]`` float64, the average over images and non-null queries; the
        centre cell ``(K_h-1, K_w-1)`` is the query itself; each head's map sums to 1.
        Use ``AlignedAttentionMap`` to average over a dataloader.
    """
    map_sum, count = aligned_attention_sums(attn, grid_size, num_prefix_tokens)
    return map_sum / count[:, None, None]  # [H, 2K_h-1, 2K_w-1]


def attention_center(aligned_map: Tensor) -> Tensor:
    """Centre of mass of aligned attention maps in ``[-1, 1]`` canvas coordinates.

    Args:
        aligned_map: ``[..., 2K_h-1, 2K_w-1]``, e.g. ``[H, ...]`` or ``[L, H, ...]``.

    Returns:
        ``[..., 2]`` float64 ``(x, y)``, x to the right, y downwards; the canvas centre is
        ``(0, 0)`` and one cell is ``1 / (K - 1)``, one patch step on the unit-square grid.
        All-zero maps give ``(0, 0)``.
    """
    if aligned_map.ndim < 2:
        raise ValueError(f"aligned map must be [..., 2K-1, 2K-1], got {tuple(aligned_map.shape)}")
    canvas_h, canvas_w = aligned_map.shape[-2:]
    weights = aligned_map.double()  # [..., Ch, Cw]
    total = weights.sum(dim=(-2, -1), keepdim=True)  # [..., 1, 1]
    weights = weights / torch.where(total > 0, total, torch.ones_like(total))  # [..., Ch, Cw]
    ys = torch.linspace(-1.0, 1.0, canvas_h, dtype=torch.float64, device=weights.device)
    xs = torch.linspace(-1.0, 1.0, canvas_w, dtype=torch.float64, device=weights.device)
    if canvas_h == 1:
        ys = torch.zeros_like(ys)
    if canvas_w == 1:
        xs = torch.zeros_like(xs)
    center_x = (weights.sum(dim=-2) * xs).sum(dim=-1)  # [...]
    center_y = (weights.sum(dim=-1) * ys).sum(dim=-1)  # [...]
    return torch.stack([center_x, center_y], dim=-1)  # [..., 2]


def attention_offset(aligned_map: Tensor) -> Tensor:
    """Attention offset: length of the aligned map's centre of mass (arXiv 2212.03862).

    Args:
        aligned_map: ``[..., 2K_h-1, 2K_w-1]`` from ``aligned_attention_map``.

    Returns:
        ``[...]`` float64 in units of the image side; a head that always attends one patch
        to the side on a ``K x K`` grid has offset ``1 / (K - 1)``, a centred head 0.
    """
    return torch.linalg.vector_norm(attention_center(aligned_map), dim=-1)  # [...]


def offset_local_heads(
    distance: Tensor,
    offset: Tensor,
    max_distance: float = 0.3,
    min_offset: float = 0.05,
    min_directionality: float = 0.5,
    *,
    grid_size: tuple[int, int] | None = None,
) -> list[tuple[int, int]]:
    """Find offset local heads: low attention distance, clear fixed offset (arXiv 2212.03862).

    The paper picks these heads by eye; this is the documented rule used instead. A head
    ``(l, h)`` is offset-local when all three hold (distances in units of the image side):

    1. ``distance <= max_distance`` (default 0.3). Local: uniform attention over the whole
       grid has mean distance 0.59 on an 8x8 grid, 0.56 on 14x14, tending to 0.52 (the mean
       distance of two random points of the unit square) on fine grids, so 0.3 is about half
       of "global", while a head fixed on a neighbour one or two patches away (1/7 or
       2/7 = 0.29 on an 8x8 grid) passes. On a grid whose patch step ``1 / (K - 1)`` exceeds
       ``max_distance`` (K <= 4 at 0.3; the minimum is 5x5, step 0.25) even a head fixed
       on its nearest neighbour fails, so the rule cannot find the heads it is meant for:
       given ``grid_size``, that case warns (once per call site).
    2. ``offset >= min_offset`` (default 0.05). The attention centre moves by at least 5% of
       the image side: a fixed one-patch neighbour head on any grid up to 21x21 qualifies
       (offset ``1/(K-1)``: 1/7 = 0.143 on 8x8, 1/13 = 0.077 on 14x14); a local but centred
       head (offset ~0) does not.
    3. ``offset / distance >= min_directionality`` (default 0.5). Directionality is in
       ``[0, 1]`` (Jensen: ``offset <= distance``); it is 1 for a head that always looks at
       the same neighbour, also when it keeps part of its mass on the query itself
       (half self, half right neighbour: distance = offset = 1/14 on 8x8), and ~0 for
       centred heads however local or global. 0.5 asks that at least half of the distance
       travelled be a consistent displacement; a head splitting its mass between a fixed
       neighbour and global uniform attention (8x8: distance ~0.37, directionality ~0.2) fails.

    Args:
        distance: ``[L, H]`` mean attention distance per block and head.
        offset: ``[L, H]`` attention offset per block and head.
        max_distance: upper bound on the mean attention distance.
        min_offset: lower bound on the offset.
        min_directionality: lower bound on ``offset / distance``.
        grid_size: ``(K_h, K_w)`` patch grid the statistics come from; only used to warn
            when it is too coarse for ``max_distance``.

    Returns:
        ``(block, head)`` pairs in increasing order. NaN entries never qualify.
    """
    if distance.shape != offset.shape or distance.ndim != 2:
        raise ValueError(
            "distance and offset must both be [blocks, heads], got "
            f"{tuple(distance.shape)} and {tuple(offset.shape)}"
        )
    if grid_size is not None:
        step = 1.0 / max(max(grid_size) - 1, 1)  # the finer axis' patch step, image sides
        if step > max_distance:
            minimum = math.ceil(1.0 / max_distance) + 1
            warnings.warn(
                f"offset_local_heads: on a {grid_size[0]}x{grid_size[1]} grid one patch step is "
                f"{step:.2f} of the image, above max_distance={max_distance}, so a head fixed "
                f"on its nearest neighbour cannot qualify; use a grid of at least "
                f"{minimum}x{minimum} (smaller patches or larger images) for this rule",
                stacklevel=2,
            )
    distance = distance.double()  # [L, H]
    offset = offset.double()  # [L, H]
    directionality = offset / distance.clamp_min(1e-12)  # [L, H]
    chosen = (
        (distance <= max_distance) & (offset >= min_offset) & (directionality >= min_directionality)
    )  # [L, H]
    return [(int(block), int(head)) for block, head in chosen.nonzero().tolist()]


class _AttentionSums(Metric):
    """Per-head sums over batches of one block's attention, and their counts.

    Subclasses name the per-batch reduction (``sums``: ``attn, grid_size, num_prefix_tokens ->
    (sum, count)``) and divide in ``compute``. Sums and counts are reduced across processes,
    so under DDP every rank gets the whole-dataset value.
    """

    full_state_update = False
    total: Tensor
    count: Tensor
    sums: Callable[[Tensor, tuple[int, int], int], tuple[Tensor, Tensor]]

    def __init__(self, grid_size: tuple[int, int], num_prefix_tokens: int = 0) -> None:
        super().__init__()
        self.grid_size = (int(grid_size[0]), int(grid_size[1]))
        self.num_prefix_tokens = num_prefix_tokens
        # Scalar zeros broadcast to one entry per head on the first update.
        self.add_state("total", torch.zeros((), dtype=torch.float64), "sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), "sum")

    def update(self, attn: Tensor) -> None:
        """Add one batch of attention ``[B, H, T, T]``."""
        total, count = self.sums(attn, self.grid_size, self.num_prefix_tokens)
        if self.total.ndim and self.total.shape != total.shape:
            raise ValueError(
                f"got per-head sums of shape {tuple(total.shape)} after "
                f"{tuple(self.total.shape)}; use one {type(self).__name__} per block"
            )
        self.total = self.total + total  # [H, ...]
        self.count = self.count + count  # [H]


class MeanAttentionDistance(_AttentionSums):
    """Mean attention distance per head of one block, accumulated over batches.

    ``update(attn)`` takes post-softmax attention ``[B, H, T, T]``; ``compute()`` returns
    ``[H]`` float64 (see ``mean_attention_distance``; arXiv 2212.03862). DDP-reduced.

    Args:
        grid_size: patch grid ``(K_h, K_w)``.
        num_prefix_tokens: leading class/register tokens.
    """

    sums = staticmethod(attention_distance_sums)

    def compute(self) -> Tensor:
        """Mean attention distance ``[H]``."""
        return self.total / self.count


class AlignedAttentionMap(_AttentionSums):
    """Aligned aggregated attention map per head of one block, accumulated over batches.

    ``update(attn)`` takes post-softmax attention ``[B, H, T, T]``; ``compute()`` returns
    ``[H, 2K_h-1, 2K_w-1]`` float64 (see ``aligned_attention_map``; arXiv 2212.03862);
    ``attention_offset(metric.compute())`` gives the offsets. DDP-reduced.

    Args:
        grid_size: patch grid ``(K_h, K_w)``.
        num_prefix_tokens: leading class/register tokens.
    """

    sums = staticmethod(aligned_attention_sums)

    def compute(self) -> Tensor:
        """Aligned map ``[H, 2K_h-1, 2K_w-1]``."""
        return self.total / self.count[:, None, None]
