"""Offline linear probe: logistic regression on frozen features, trained to convergence.

The standard linear-evaluation protocol of SSL papers, on cached features: features are
standardised with bank statistics, then a multinomial logistic regression with L2 penalty is
fitted by full-batch L-BFGS (as in CLIP's linear probes, arXiv 2103.00020). Unlike the online
probe (``val/linear_top1``, trained on augmented views during pretraining) it also gives a fair
number for a randomly initialised backbone.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from ssl_biases.metric_names import OFFLINE_LINEAR_TOP1
from ssl_biases.probes.features import FrozenFeatureProbe


def fit_linear_classifier(
    features: Tensor, labels: Tensor, num_classes: int, l2: float = 1e-4, max_iter: int = 200
) -> tuple[Tensor, Tensor]:
    """Fits ``W [C, D]``, ``b [C]`` minimising mean cross-entropy + ``l2 * ||W||^2``."""
    with torch.inference_mode(False), torch.enable_grad():  # probes run inside validation
        return _fit_lbfgs(features.double().clone(), labels.clone(), num_classes, l2, max_iter)


def _fit_lbfgs(
    features: Tensor, labels: Tensor, num_classes: int, l2: float, max_iter: int
) -> tuple[Tensor, Tensor]:
    weight = torch.zeros(num_classes, features.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(features @ weight.T + bias, labels) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weight.detach(), bias.detach()


def linear_probe_top1(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    l2: float = 1e-4,
    max_iter: int = 200,
) -> float:
    """Top-1 accuracy on ``test`` of a logistic regression fitted on ``train`` features."""
    train_x, test_x = train_x.double().cpu(), test_x.double().cpu()
    train_y, test_y = train_y.cpu(), test_y.cpu()
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    weight, bias = fit_linear_classifier((train_x - mean) / std, train_y, num_classes, l2, max_iter)
    predictions = (((test_x - mean) / std) @ weight.T + bias).argmax(1)
    return (predictions == test_y).double().mean().item()


class LinearProbe(FrozenFeatureProbe):
    """Logs ``<stage>/offline_linear_top1``: the offline linear probe on frozen features.

    During ``fit`` it runs at every ``every_n_validations``-th validation and at the final one
    (see :mod:`ssl_biases.probes.features`; what it costs: docs/performance.md, section 6),
    and in every ``validate``/``test``.

    Args:
        l2: L2 penalty on the weights (features are standardised first).
        max_iter: L-BFGS iterations.
        every_n_epochs: Evaluate at the validations of every n-th epoch instead (as before
            ``every_n_validations`` existed; earlier runs' configs set it to 1).
        every_n_validations: Evaluate at every n-th validation of a fit.
    """

    def __init__(
        self,
        l2: float = 1e-4,
        max_iter: int = 200,
        every_n_epochs: int | None = None,
        every_n_validations: int = 5,
    ) -> None:
        super().__init__(every_n_epochs, every_n_validations)
        self.l2 = l2
        self.max_iter = max_iter

    def evaluate(
        self, bank: Tensor, bank_labels: Tensor, query: Tensor, query_labels: Tensor
    ) -> dict[str, float]:
        top1 = linear_probe_top1(bank, bank_labels, query, query_labels, self.l2, self.max_iter)
        return {OFFLINE_LINEAR_TOP1: top1}
