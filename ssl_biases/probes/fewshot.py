"""Few-shot linear transfer by closed-form least squares on frozen features.

The classifier is big_vision's ``fewshot_lsr`` evaluator (Zhai et al., "Scaling Vision
Transformers", arXiv 2106.04560): features standardised per dimension with the support
(train) set's mean and standard deviation (``(x - mean) / (std + 1e-5)``, population std),
a constant bias feature of 100 appended (so the bias is all but unregularised), targets
one-hot in ``{-1, 1}``, weights ``W = (X^T X + l2 I)^{-1} X^T Y`` (primal, ``n >= d``) or
``X^T (X X^T + l2 I)^{-1} Y`` (dual, ``n < d``), solved in float64, and the prediction is
the class of the largest score. ``l2_reg`` defaults to big_vision's ``2 ** 10``.

Dumoulin et al. (arXiv 2104.02638) show that few-shot conclusions depend on the protocol,
so two are provided and each result should be reported with its protocol:

- ``fewshot_eval``: all-classes K-shot transfer (big_vision): K support examples of every
  class drawn from the train split, tested on the whole test split; shots (1, 5, 10, 25),
  seeds (0, 1, 2), mean and sample std over seeds;
- ``episodic_fewshot``: fixed N-way K-shot episodes (meta-learning style): N classes,
  K support and Q query examples per class drawn from one pool, accuracy averaged over
  episodes with a 95% confidence interval ``1.96 * std / sqrt(episodes)``.

``FewShotProbe`` runs the first protocol as a callback during validation and test, with the
probe bank as the train split and the probe queries as the test split.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from ssl_biases.metric_names import fewshot_name, fewshot_std_name
from ssl_biases.probes.features import FrozenFeatureProbe

BIAS_FEATURE = 100.0
"""Value of the constant feature appended for the bias (big_vision ``BIAS_CONSTANT``)."""

DEFAULT_L2_REG = 2.0**10
"""L2 strength of big_vision's standard few-shot config (``common_fewshot.py``)."""


@dataclass(frozen=True)
class LeastSquaresClassifier:
    """A fitted few-shot least-squares classifier (see ``fit_lsr``).

    Attributes:
        mean: ``[D]`` support-set feature mean.
        std: ``[D]`` support-set feature std plus 1e-5.
        weight: ``[D + 1, C]`` weights, the last row for the bias feature.
        classes: ``[C]`` label of each output column (sorted).
    """

    mean: Tensor
    std: Tensor
    weight: Tensor
    classes: Tensor

    def scores(self, features: Tensor) -> Tensor:
        """Class scores ``[n, C]`` (float64) of features ``[n, D]``."""
        return _design_matrix(features, self.mean, self.std) @ self.weight  # [n, C]

    def predict(self, features: Tensor) -> Tensor:
        """Predicted labels ``[n]`` of features ``[n, D]``."""
        return self.classes[self.scores(features).argmax(dim=1)]  # [n]


def _design_matrix(features: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """Standardise ``[n, D]`` features and append the bias feature: ``[n, D + 1]`` float64."""
    x = (features.double() - mean) / std  # [n, D]
    return torch.cat([x, x.new_full((x.shape[0], 1), BIAS_FEATURE)], dim=1)  # [n, D+1]


def _check_features(features: Tensor, labels: Tensor, name: str) -> None:
    if features.ndim != 2 or labels.ndim != 1 or features.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{name} features must be [n, D] with labels [n], got {tuple(features.shape)} "
            f"and {tuple(labels.shape)}"
        )
    if features.shape[0] == 0:
        raise ValueError(f"{name} split is empty")


def fit_lsr(
    train_x: Tensor, train_y: Tensor, l2_reg: float = DEFAULT_L2_REG
) -> LeastSquaresClassifier:
    """Fit big_vision's L2-regularised least-squares classifier (arXiv 2106.04560).

    Args:
        train_x: ``[n, D]`` support features.
        train_y: ``[n]`` integer labels (any values; the classes are the labels present).
        l2_reg: ridge strength on standardised features.

    Returns:
        The fitted classifier; all of its tensors are float64 on ``train_x``'s device.
    """
    _check_features(train_x, train_y, "train")
    if l2_reg <= 0:
        raise ValueError(f"l2_reg must be positive, got {l2_reg}")
    features = train_x.double()  # [n, D]
    mean = features.mean(dim=0)  # [D]
    std = features.std(dim=0, correction=0) + 1e-5  # [D]
    x = _design_matrix(features, mean, std)  # [n, D+1]
    classes, targets = torch.unique(train_y, sorted=True, return_inverse=True)  # [C], [n]
    y = 2.0 * torch.nn.functional.one_hot(targets, len(classes)).double() - 1.0  # [n, C]
    n, d = x.shape
    if n >= d:  # primal: (X^T X + l2 I)^{-1} X^T Y
        eye = torch.eye(d, dtype=x.dtype, device=x.device)
        weight = torch.linalg.solve(x.T @ x + l2_reg * eye, x.T @ y)  # [D+1, C]
    else:  # dual: X^T (X X^T + l2 I)^{-1} Y
        eye = torch.eye(n, dtype=x.dtype, device=x.device)
        weight = x.T @ torch.linalg.solve(x @ x.T + l2_reg * eye, y)  # [D+1, C]
    return LeastSquaresClassifier(mean=mean, std=std, weight=weight, classes=classes)


def fewshot_lsr_top1(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    l2_reg: float = DEFAULT_L2_REG,
) -> float:
    """Top-1 accuracy of the least-squares classifier (big_vision ``fewshot_lsr``).

    Args:
        train_x: ``[n, D]`` support features.
        train_y: ``[n]`` support labels.
        test_x: ``[m, D]`` test features.
        test_y: ``[m]`` test labels (a label absent from the support set is always wrong).
        l2_reg: ridge strength on standardised features.

    Returns:
        Accuracy in ``[0, 1]``.
    """
    _check_features(test_x, test_y, "test")
    classifier = fit_lsr(train_x, train_y, l2_reg)
    predictions = classifier.predict(test_x.to(classifier.weight.device))  # [m]
    return (predictions == test_y.to(predictions.device)).double().mean().item()


def sample_kshot(labels: Tensor, shots: int, seed: int) -> Tensor:
    """Indices of ``shots`` examples of every class, as big_vision draws its support sets.

    For each class in increasing label order, its indices are permuted with a generator
    seeded by ``seed`` and the first ``shots`` are kept; so for one seed the 5-shot set
    contains the 1-shot set.

    Args:
        labels: ``[n]`` integer labels.
        shots: examples per class (K).
        seed: seed of the draw.

    Returns:
        ``[num_classes * shots]`` int64 indices into ``labels``, grouped by class.

    Raises:
        ValueError: if a class has fewer than ``shots`` examples.
    """
    if shots < 1:
        raise ValueError(f"shots must be >= 1, got {shots}")
    labels = labels.cpu()
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for cls in torch.unique(labels, sorted=True).tolist():
        members = (labels == cls).nonzero().flatten()  # [n_c]
        if members.numel() < shots:
            raise ValueError(
                f"class {cls} has {members.numel()} examples, fewer than shots={shots}; "
                "lower the shots or use a larger train split"
            )
        chosen.append(members[torch.randperm(members.numel(), generator=generator)[:shots]])
    return torch.cat(chosen)


def fewshot_eval(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    shots: Sequence[int] = (1, 5, 10, 25),
    seeds: Sequence[int] = (0, 1, 2),
    l2_reg: float = DEFAULT_L2_REG,
) -> dict[str, float]:
    """All-classes K-shot linear transfer (big_vision protocol, arXiv 2106.04560).

    Protocol: for every K in ``shots`` and seed in ``seeds``, ``sample_kshot`` draws K
    examples of every class from the train split; ``fewshot_lsr_top1`` (standardisation
    with support statistics, bias feature 100, targets in {-1, 1}, ridge ``l2_reg``) is
    scored on the whole test split.

    Args:
        train_x: ``[n, D]`` train-split features (frozen, pre-logit).
        train_y: ``[n]`` train-split labels.
        test_x: ``[m, D]`` test-split features.
        test_y: ``[m]`` test-split labels.
        shots: the K values.
        seeds: one support draw per seed.
        l2_reg: ridge strength.

    Returns:
        ``{"fewshot_<K>shot": mean, "fewshot_<K>shot_std": std}`` for each K; accuracy in
        ``[0, 1]``, std over seeds with Bessel's correction (0 for a single seed).
    """
    if len(seeds) == 0 or len(shots) == 0:
        raise ValueError("fewshot_eval needs at least one shot count and one seed")
    _check_features(train_x, train_y, "train")
    results: dict[str, float] = {}
    for k in shots:
        accuracies = []
        for seed in seeds:
            index = sample_kshot(train_y, k, seed).to(train_x.device)  # [C*K]
            accuracies.append(
                fewshot_lsr_top1(train_x[index], train_y[index], test_x, test_y, l2_reg)
            )
        values = torch.tensor(accuracies, dtype=torch.float64)  # [S]
        results[fewshot_name(k)] = values.mean().item()
        results[fewshot_std_name(k)] = values.std().item() if len(values) > 1 else 0.0
    return results


def episodic_fewshot(
    features: Tensor,
    labels: Tensor,
    n_way: int = 5,
    k_shot: int = 1,
    n_query: int = 15,
    episodes: int = 600,
    seed: int = 0,
    l2_reg: float = DEFAULT_L2_REG,
) -> tuple[float, float]:
    """Fixed N-way K-shot episodic evaluation with the same least-squares classifier.

    Protocol (meta-learning style, requested by Dumoulin et al., arXiv 2104.02638): each
    episode draws ``n_way`` classes uniformly among those with at least
    ``k_shot + n_query`` examples, then ``k_shot`` support and ``n_query`` disjoint query
    examples of each; ``fit_lsr`` on the support set (standardised with support statistics),
    accuracy on the queries. Defaults 5-way 1-shot, 15 queries, 600 episodes, the common
    miniImageNet setting. One generator seeded by ``seed`` draws every episode.

    Args:
        features: ``[n, D]`` features of the evaluation pool (e.g. a test split).
        labels: ``[n]`` integer labels.
        n_way: classes per episode (N).
        k_shot: support examples per class (K).
        n_query: query examples per class.
        episodes: number of episodes (at least 2, for the interval).
        seed: seed of the episode draws.
        l2_reg: ridge strength.

    Returns:
        ``(mean accuracy, half-width of the 95% confidence interval)``, i.e.
        ``1.96 * std / sqrt(episodes)`` with the sample std over episodes.
    """
    _check_features(features, labels, "episode pool")
    if n_way < 2 or k_shot < 1 or n_query < 1:
        raise ValueError(
            f"need n_way >= 2, k_shot >= 1, n_query >= 1; got {n_way}, {k_shot}, {n_query}"
        )
    if episodes < 2:
        raise ValueError(f"a confidence interval needs at least 2 episodes, got {episodes}")
    labels_cpu = labels.cpu()
    classes, counts = torch.unique(labels_cpu, sorted=True, return_counts=True)
    eligible = classes[counts >= k_shot + n_query]  # [C']
    if eligible.numel() < n_way:
        raise ValueError(
            f"only {eligible.numel()} classes have k_shot + n_query = {k_shot + n_query} "
            f"examples, fewer than n_way={n_way}; lower n_way, k_shot or n_query"
        )
    members = {int(c): (labels_cpu == c).nonzero().flatten() for c in eligible.tolist()}
    generator = torch.Generator().manual_seed(seed)
    accuracies = []
    for _ in range(episodes):
        episode_classes = eligible[torch.randperm(eligible.numel(), generator=generator)[:n_way]]
        support, query = [], []
        for cls in episode_classes.tolist():
            pool = members[cls]
            drawn = pool[torch.randperm(pool.numel(), generator=generator)[: k_shot + n_query]]
            support.append(drawn[:k_shot])
            query.append(drawn[k_shot:])
        support_idx = torch.cat(support).to(features.device)  # [N*K]
        query_idx = torch.cat(query).to(features.device)  # [N*Q]
        accuracies.append(
            fewshot_lsr_top1(
                features[support_idx],
                labels[support_idx],
                features[query_idx],
                labels[query_idx],
                l2_reg,
            )
        )
    values = torch.tensor(accuracies, dtype=torch.float64)  # [E]
    return values.mean().item(), 1.96 * values.std().item() / math.sqrt(episodes)


class FewShotProbe(FrozenFeatureProbe):
    """Logs ``<stage>/fewshot_<K>shot`` (and ``..._std``): all-classes K-shot least squares.

    Protocol (``fewshot_eval``, big_vision ``fewshot_lsr``, arXiv 2106.04560): frozen
    backbone embeddings; the K-shot support sets are drawn from the probe *bank* (a fixed
    subset of the train split, ``data.max_probe_train_samples``), one draw per seed, every
    class; features standardised with support statistics, bias feature 100, targets one-hot
    in {-1, 1}, ridge ``l2_reg``; top-1 on all probe *queries* (the test split, or its
    ``data.max_val_samples`` subset), mean (``fewshot_<K>shot``) and sample std
    (``fewshot_<K>shot_std``) over seeds. Stage ``test`` in ``ssl-biases test``, ``val``
    during fit (every ``every_n_validations``-th validation and the final one) and
    ``validate``.

    A K larger than the rarest class of the bank cannot be drawn: it is skipped with a
    warning (it is not logged), so raise ``max_probe_train_samples`` to get it.

    Args:
        shots: The K values.
        seeds: One support draw per seed.
        l2_reg: Ridge strength on standardised features.
        every_n_epochs: Evaluate at the validations of every n-th epoch during fit instead
            (as before ``every_n_validations`` existed; earlier runs' configs set it to 10).
        every_n_validations: Evaluate at every n-th validation of a fit.
    """

    def __init__(
        self,
        shots: list[int] | tuple[int, ...] = (1, 5, 10, 25),
        seeds: list[int] | tuple[int, ...] = (0, 1, 2),
        l2_reg: float = DEFAULT_L2_REG,
        every_n_epochs: int | None = None,
        every_n_validations: int = 10,
    ) -> None:
        super().__init__(every_n_epochs, every_n_validations)
        if len(shots) == 0 or len(seeds) == 0 or min(shots) < 1:
            raise ValueError(f"need shots >= 1 and at least one seed, got {shots} and {seeds}")
        if l2_reg <= 0:
            raise ValueError(f"l2_reg must be positive, got {l2_reg}")
        self.shots = tuple(int(k) for k in shots)
        self.seeds = tuple(int(s) for s in seeds)
        self.l2_reg = float(l2_reg)

    def evaluate(
        self, bank: Tensor, bank_labels: Tensor, query: Tensor, query_labels: Tensor
    ) -> dict[str, float]:
        rarest = int(torch.unique(bank_labels, return_counts=True)[1].min())
        shots = [k for k in self.shots if k <= rarest]
        if len(shots) < len(self.shots):
            rank_zero_warn(
                f"few-shot probe: the rarest class of the bank has {rarest} examples, so "
                f"shots {[k for k in self.shots if k > rarest]} are skipped; raise "
                "--data.max_probe_train_samples to evaluate them"
            )
        if not shots:
            return {}
        return fewshot_eval(bank, bank_labels, query, query_labels, shots, self.seeds, self.l2_reg)
