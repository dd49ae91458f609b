"""RankMe: the effective rank of the frozen embeddings, a label-free collapse monitor.

Garrido, Balestriero, Najman, LeCun, "RankMe: Assessing the Downstream Performance of
Pretrained Self-Supervised Representations by Their Rank" (arXiv 2210.02885), Eq. 1: for an
embedding matrix ``Z`` ``[N, D]`` with singular values ``sigma_1 >= ... >= sigma_min(N, D)``,

    p_k = sigma_k / sum_j sigma_j + eps,    RankMe(Z) = exp(-sum_k p_k log p_k),

the exponential of the entropy of the normalised singular values (Roy & Vetterli's effective
rank). It lies in ``[1, min(N, D)]``: 1 for a collapsed (constant or rank-1) embedding, ``k``
for ``k`` equal non-zero singular values, close to ``D`` for an isotropic one. As in the paper,
``Z`` is used as it is (**not centred**): a mean shared by all images is one direction of the
spectrum, so a constant embedding scores 1, not 0.

:class:`RankMeProbe` logs ``val/rankme`` at every validation from the probe bank's embeddings
that validation extracts anyway (no extra forward pass): at most ``max_samples`` rows, evenly
spaced over the bank, in float32 (``torch.linalg.svdvals``; 4,096 x 192 takes milliseconds).
The bank is gathered across DDP ranks first, so two ranks log the single-process number. When
RankMe falls below ``warn_fraction`` of ``min(N, D)`` it warns once per run, with what to try.
"""

from __future__ import annotations

import math

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from ssl_biases.metric_names import RANKME
from ssl_biases.probes.features import FrozenFeatureProbe

EPSILON = 1e-7
"""The paper's ``eps`` (float32): keeps ``log p_k`` finite for zero singular values."""

WARN_FRACTION = 0.03
"""Warn when RankMe < this fraction of ``min(N, D)`` (or < :data:`COLLAPSED_RANK`). Untrained
backbones already score low, not centred: 0.06-0.25 of the width over the project's isotropic
nets and ResNet-18 on ``shapes`` and CIFAR-10 (``mixer_tiny`` on ``shapes`` lowest, 0.06;
docs/performance.md), so a tenth would warn before any training. 0.03 is half the lowest of
them: a run that warns has lost half the effective rank a random network has."""

COLLAPSED_RANK = 1.5
"""Below this RankMe one direction carries more than two would: collapse at any width (it
sets the bar for widths under 50, where 0.03 of the width is under 1.5)."""

ADVICE = (
    "dimensional collapse: the embeddings use few of their {width} dimensions. Things to "
    "try: a lower learning rate or a longer warm-up; a wider projector (the method's "
    "projection/hidden widths, e.g. --model.init_args.projection_dim); check that "
    "train/loss decreases and is not constant; "
    "stronger augmentations (crop scale, colour jitter); for BYOL/DINO a higher teacher "
    "momentum, for VICReg/Barlow Twins a larger variance/off-diagonal weight."
)


def rankme(embeddings: Tensor, epsilon: float = EPSILON) -> float:
    """RankMe of an embedding matrix (Garrido et al. arXiv 2210.02885, Eq. 1), not centred.

    Args:
        embeddings: ``[N, D]`` embeddings, one row per image.
        epsilon: Added to each normalised singular value before the logarithm.

    Returns:
        ``exp(-sum_k p_k log p_k)`` with ``p_k = sigma_k / sum_j sigma_j + epsilon``, in
        ``[1, min(N, D)]`` up to ``epsilon``; 1.0 for an all-zero matrix.

    Raises:
        ValueError: if ``embeddings`` is not a non-empty 2-d matrix.
    """
    if embeddings.ndim != 2 or embeddings.numel() == 0:
        raise ValueError(f"RankMe needs embeddings [N, D] with N, D >= 1, got {embeddings.shape}")
    sigma = torch.linalg.svdvals(embeddings.float())  # [min(N, D)]
    total = sigma.sum()
    if total <= 0:  # all zeros: one (degenerate) direction
        return 1.0
    p = sigma / total + epsilon  # [min(N, D)]
    return math.exp(-(p * p.log()).sum().item())


def evenly_spaced(rows: Tensor, max_rows: int) -> Tensor:
    """At most ``max_rows`` rows of ``rows`` ``[N, ...]``, evenly spaced (every ``ceil(N / m)``-th).

    The bank is in dataset order (often sorted by class), so its head would be a few classes.
    """
    step = max(1, math.ceil(rows.shape[0] / max_rows))
    return rows[::step]  # [<= max_rows, ...]


def collapse_bar(width: int, warn_fraction: float = WARN_FRACTION) -> float:
    """The RankMe below which :class:`RankMeProbe` warns, for ``width = min(N, D)``."""
    return 0.0 if warn_fraction == 0 else max(warn_fraction * width, COLLAPSED_RANK)


class RankMeProbe(FrozenFeatureProbe):
    """Logs ``<stage>/rankme`` of the probe bank's embeddings; warns once on collapse.

    Args:
        max_samples: Rows of the bank used (evenly spaced); RankMe needs ``N >= D`` to reach
            ``D``, and the bank (``--data.max_probe_train_samples``) is 10,000 by default.
        warn_fraction: Warn (once per run) when RankMe < ``warn_fraction * min(N, D)`` or
            < :data:`COLLAPSED_RANK`; 0 never warns.
        every_n_epochs: Evaluate at every n-th validation epoch (and at the end).
    """

    def __init__(
        self,
        max_samples: int = 4096,
        warn_fraction: float = WARN_FRACTION,
        every_n_epochs: int = 1,
    ) -> None:
        super().__init__(every_n_epochs)
        if max_samples < 1:
            raise ValueError(f"--rankme.max_samples must be 1 or more, got {max_samples}")
        if not 0.0 <= warn_fraction <= 1.0:
            raise ValueError(f"--rankme.warn_fraction must be in [0, 1], got {warn_fraction}")
        self.max_samples = max_samples
        self.warn_fraction = warn_fraction
        self.warned = False
        self._stage = ""

    def evaluate(
        self, bank: Tensor, bank_labels: Tensor, query: Tensor, query_labels: Tensor
    ) -> dict[str, float]:
        embeddings = evenly_spaced(bank, self.max_samples)  # [n, D]
        value = rankme(embeddings)
        bar = collapse_bar(min(embeddings.shape), self.warn_fraction)
        if not self.warned and value < bar:
            self.warned = True
            rank_zero_warn(
                f"{self._stage}/{RANKME} = {value:.2f} of at most {min(embeddings.shape)}, "
                f"below {bar:.2f} (--rankme.warn_fraction {self.warn_fraction:g} x min(N, D), "
                f"at least {COLLAPSED_RANK}; arXiv 2210.02885): "
                + ADVICE.format(width=embeddings.shape[1])
            )
        return {RANKME: value}

    def _finish(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._stage = stage
        super()._finish(trainer, pl_module, stage)
