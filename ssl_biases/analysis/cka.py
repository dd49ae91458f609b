"""Linear CKA with the unbiased HSIC estimator, full-batch and minibatch.

Centred kernel alignment (Kornblith et al., arXiv 1905.00414) compares two representations
of the same examples: ``CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with linear
Grams ``K = X X^T``, ``L = Y Y^T`` of per-sample flattened features. HSIC is estimated with
the unbiased estimator HSIC_1 (Song et al., JMLR 2012), which makes minibatch CKA
consistent (Nguyen et al., "Do Wide and Deep Networks Learn the Same Things?",
arXiv 2010.15327, eq. 3): per batch of ``n >= 4`` examples, with ``K~``, ``L~`` the Grams
with zeroed diagonals,

    HSIC_1(K, L) = [tr(K~ L~) + (1^T K~ 1)(1^T L~ 1) / ((n-1)(n-2))
                    - 2 / (n-2) * 1^T K~ L~ 1] / (n (n-3)),

averaged over batches (the average's ``1/k`` cancels in the ratio, so sums are kept). This
is the standard estimator; Walmer et al. (arXiv 2212.03862) additionally min-max rescale
the Grams, which is not done here. Everything is computed and accumulated in float64.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import wraps

import torch
from torch import Tensor
from torchmetrics import Metric


def gram_linear(features: Tensor) -> Tensor:
    """Linear Gram matrix of per-sample flattened features.

    Args:
        features: ``[n, ...]`` (e.g. ``[n, D]`` pooled or ``[n, N, D]`` tokens).

    Returns:
        ``[n, n]`` float64 ``X X^T`` with ``X = features.flatten(1)``.
    """
    flat = features.flatten(1).double()  # [n, F]
    return flat @ flat.T  # [n, n]


def _zero_diagonal(grams: Tensor) -> Tensor:
    """Copy of ``[..., n, n]`` Grams with zeroed diagonals."""
    return grams * (1.0 - torch.eye(grams.shape[-1], dtype=grams.dtype, device=grams.device))


def _check_batch_size(n: int) -> None:
    if n < 4:
        raise ValueError(
            f"the unbiased HSIC estimator needs at least 4 examples per batch, got {n}; "
            "use a larger batch (and drop_last=True on the dataloader)"
        )


def _hsic_pairs(grams_a: Tensor, grams_b: Tensor) -> Tensor:
    """Unbiased HSIC between every pair of Grams: ``[A, n, n] x [B, n, n] -> [A, B]``."""
    n = grams_a.shape[-1]
    _check_batch_size(n)
    k_tilde = _zero_diagonal(grams_a.double())  # [A, n, n]
    l_tilde = _zero_diagonal(grams_b.double())  # [B, n, n]
    trace = torch.einsum("aij,bij->ab", k_tilde, l_tilde)  # [A, B]; tr(K~ L~), symmetric
    rows_k, rows_l = k_tilde.sum(dim=-1), l_tilde.sum(dim=-1)  # [A, n], [B, n]
    totals = rows_k.sum(dim=-1)[:, None] * rows_l.sum(dim=-1)[None, :]  # [A, B]
    cross = rows_k @ rows_l.T  # [A, B]; 1^T K~ L~ 1
    return (trace + totals / ((n - 1) * (n - 2)) - 2.0 * cross / (n - 2)) / (n * (n - 3))


def _hsic_self(grams: Tensor) -> Tensor:
    """Unbiased HSIC of each Gram with itself: ``[A, n, n] -> [A]``."""
    n = grams.shape[-1]
    _check_batch_size(n)
    k_tilde = _zero_diagonal(grams.double())  # [A, n, n]
    trace = (k_tilde * k_tilde).sum(dim=(-2, -1))  # [A]
    rows = k_tilde.sum(dim=-1)  # [A, n]
    totals = rows.sum(dim=-1) ** 2  # [A]
    cross = (rows * rows).sum(dim=-1)  # [A]
    return (trace + totals / ((n - 1) * (n - 2)) - 2.0 * cross / (n - 2)) / (n * (n - 3))


def hsic_unbiased(gram_k: Tensor, gram_l: Tensor) -> Tensor:
    """Unbiased HSIC estimator HSIC_1 (Song et al. 2012; arXiv 2010.15327, eq. 3).

    Args:
        gram_k: ``[n, n]`` symmetric Gram of the first representation.
        gram_l: ``[n, n]`` symmetric Gram of the second; ``n >= 4``. Diagonals are zeroed
            here (the inputs are not modified).

    Returns:
        Scalar float64 tensor.
    """
    if gram_k.shape != gram_l.shape or gram_k.ndim != 2 or gram_k.shape[0] != gram_k.shape[1]:
        raise ValueError(
            f"Grams must be square and of equal shape, got {tuple(gram_k.shape)} "
            f"and {tuple(gram_l.shape)}"
        )
    return _hsic_pairs(gram_k[None], gram_l[None])[0, 0]


def linear_cka(features_x: Tensor, features_y: Tensor) -> Tensor:
    """Full-batch linear CKA with the unbiased HSIC estimator (arXiv 2010.15327).

    Args:
        features_x: ``[n, ...]`` features of ``n >= 4`` examples.
        features_y: ``[n, ...]`` features of the same examples (any width).

    Returns:
        Scalar float64 tensor; 1 for identical representations, invariant to orthogonal
        transforms and isotropic scaling, near 0 for independent ones (the estimator can be
        slightly negative).
    """
    if features_x.shape[0] != features_y.shape[0]:
        raise ValueError(
            f"both representations need the same examples, got {features_x.shape[0]} "
            f"and {features_y.shape[0]} rows"
        )
    gram_x, gram_y = gram_linear(features_x)[None], gram_linear(features_y)[None]  # [1, n, n]
    hsic_xy = _hsic_pairs(gram_x, gram_y)[0, 0]
    return hsic_xy / torch.sqrt(_hsic_self(gram_x)[0] * _hsic_self(gram_y)[0])


class MinibatchCKA(Metric):
    """Minibatch linear CKA between every layer of model A and every layer of model B.

    Accumulates, over batches, the unbiased HSIC of every pair ``(a, b)`` and of every layer
    with itself (arXiv 2010.15327, eq. 2-3), in float64; ``compute()`` returns the
    ``[L_a, L_b]`` CKA matrix. States are summed across processes, so under DDP each rank
    gets the CKA of the whole dataset. Pass the same list twice for a model's CKA with
    itself.

    Example::

        cka = MinibatchCKA()
        for images, _ in loader:
            cka.update(model_a.forward_intermediates(images), model_b.forward_intermediates(images))
        matrix = cka.compute()  # [L_a, L_b]
    """

    full_state_update = False
    hsic_ab: Tensor
    hsic_aa: Tensor
    hsic_bb: Tensor

    def __init__(self) -> None:
        super().__init__()
        # Scalar zeros broadcast to the numbers of layers on the first update.
        self.add_state("hsic_ab", torch.zeros((), dtype=torch.float64), "sum")
        self.add_state("hsic_aa", torch.zeros((), dtype=torch.float64), "sum")
        self.add_state("hsic_bb", torch.zeros((), dtype=torch.float64), "sum")

    def update(self, feats_a: Sequence[Tensor], feats_b: Sequence[Tensor]) -> None:
        """Add one batch: per-layer features ``[n, ...]`` of the same ``n >= 4`` examples.

        Args:
            feats_a: ``L_a`` tensors from model A (shapes may differ between layers).
            feats_b: ``L_b`` tensors from model B.
        """
        if len(feats_a) == 0 or len(feats_b) == 0:
            raise ValueError("feats_a and feats_b must each hold at least one layer")
        sizes = {f.shape[0] for f in (*feats_a, *feats_b)}
        if len(sizes) != 1:
            raise ValueError(f"all layers must hold the same examples, got batch sizes {sizes}")
        grams_a = torch.stack([gram_linear(f) for f in feats_a])  # [L_a, n, n]
        grams_b = (
            grams_a
            if feats_b is feats_a
            else torch.stack([gram_linear(f) for f in feats_b])  # [L_b, n, n]
        )
        hsic_ab = _hsic_pairs(grams_a, grams_b)  # [L_a, L_b]
        hsic_aa = _hsic_self(grams_a)  # [L_a]
        hsic_bb = hsic_aa if grams_b is grams_a else _hsic_self(grams_b)  # [L_b]
        if self.hsic_ab.ndim and self.hsic_ab.shape != hsic_ab.shape:
            raise ValueError(
                f"got {tuple(hsic_ab.shape)} layer pairs after {tuple(self.hsic_ab.shape)}; "
                "pass the same layers on every update"
            )
        self.hsic_ab = self.hsic_ab + hsic_ab  # [L_a, L_b]
        self.hsic_aa = self.hsic_aa + hsic_aa  # [L_a]
        self.hsic_bb = self.hsic_bb + hsic_bb  # [L_b]

    def compute(self) -> Tensor:
        """CKA matrix ``[L_a, L_b]`` (float64), ``[1, 1]`` for one layer each."""
        return self.hsic_ab / torch.sqrt(self.hsic_aa[:, None] * self.hsic_bb[None, :])

    def _wrap_compute(self, compute: Callable[[], Tensor]) -> Callable[[], Tensor]:
        """torchmetrics squeezes a one-element result to a scalar: keep a ``[1, 1]`` matrix."""
        wrapped = super()._wrap_compute(compute)

        @wraps(wrapped)
        def matrix() -> Tensor:
            return torch.atleast_2d(wrapped())  # [L_a, L_b]

        return matrix
