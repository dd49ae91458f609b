"""Means, differences of means and their 95 % intervals; Holm's correction across claims.

Three estimators, each a :class:`Estimate` (mean, standard error, degrees of freedom):

- :func:`mean_estimate`, one sample (a metric over seeds, or seed-paired differences: the
  *paired* estimator): ``mean ± t_{0.975, n-1} * sd / sqrt(n)``, sd with the ``n - 1``
  divisor (Student 1908; NIST/SEMATECH e-Handbook of Statistical Methods, 1.3.5.2);
- :func:`welch_estimate`, the difference of two independent means (the *Welch* estimator):
  ``mean(a) - mean(b) ± t_{0.975, ν} * sqrt(s_a²/n_a + s_b²/n_b)`` with the Welch-Satterthwaite
  degrees of freedom ``ν = (s_a²/n_a + s_b²/n_b)² / ((s_a²/n_a)²/(n_a-1) + (s_b²/n_b)²/(n_b-1))``
  (Welch 1947, Biometrika 34; Satterthwaite 1946). A gain read as the trained cells' mean
  minus the mean of many untrained seeds uses it: the floor's noise shrinks with its own
  seed count instead of entering each seed's difference once;
- :func:`holm`, Holm's step-down adjustment of the p-values of the ``m`` claims of one
  write-up (Holm 1979, Scand. J. Statist. 6): the ``i``-th smallest p-value is tested at
  ``alpha / (m - i + 1)``; the adjusted p-value is ``max_{j<=i} min(1, (m - j + 1) p_(j))``.
  :func:`holm_intervals` gives each claim the interval at its step's level.

``scipy`` is not a dependency: Student's t distribution function is computed here from the
regularised incomplete beta function (continued fraction, Numerical Recipes 3rd ed. 6.4),
``P(|T| > t) = I_{ν/(ν+t²)}(ν/2, 1/2)``, and its quantile by bisection, for any real
``ν > 0``. It reproduces the standard table to its three decimals
(:data:`T_975`, NIST/SEMATECH 1.3.6.7.2; tested).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

T_975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
"""``T_975[d - 1]``: the table's 0.975 quantile of Student's t with ``d`` degrees of freedom."""

ALPHA = 0.05
"""Two-sided level of every interval (95 %) and the family-wise level of Holm's test."""

ESTIMATORS = ("paired", "welch")
"""The estimators a grid's ``report.primary`` may name (see :mod:`.results`)."""


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        even = m * (b - m) * x / ((qam + m2) * (a + m2))
        odd = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        for numerator in (even, odd):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def regularized_beta(a: float, b: float, x: float) -> float:
    """``I_x(a, b)``, the regularised incomplete beta function (``a, b > 0``, ``0 <= x <= 1``)."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must lie in [0, 1], got {x}")
    if x in (0.0, 1.0):
        return x
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, dof: float) -> float:
    """``P(|T| >= |t|)`` for Student's t with ``dof > 0`` (real) degrees of freedom."""
    if dof <= 0:
        raise ValueError(f"Student's t needs positive degrees of freedom, got {dof}")
    return regularized_beta(dof / 2.0, 0.5, dof / (dof + t * t))


def t_quantile(p: float, dof: float) -> float:
    """The ``p`` quantile (``0.5 <= p < 1``) of Student's t with ``dof > 0`` degrees of freedom."""
    if not 0.5 <= p < 1.0:
        raise ValueError(f"t_quantile takes 0.5 <= p < 1, got {p}")
    if dof <= 0:
        raise ValueError(f"Student's t needs positive degrees of freedom, got {dof}")
    tail = 2.0 * (1.0 - p)  # two-sided tail mass beyond the quantile
    lo, hi = 0.0, 1.0
    while t_two_sided_p(hi, dof) > tail:
        hi *= 2.0
    for _ in range(200):  # bisection to float precision
        mid = 0.5 * (lo + hi)
        if t_two_sided_p(mid, dof) > tail:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def t_quantile_975(dof: float) -> float:
    """The 0.975 quantile of Student's t with ``dof > 0`` degrees of freedom."""
    if dof <= 0:
        raise ValueError(f"Student's t needs at least 1 degree of freedom, got {dof}")
    return t_quantile(0.975, dof)


@dataclass(frozen=True)
class Estimate:
    """A mean or a difference of means with its standard error and degrees of freedom.

    Attributes:
        mean: the estimate.
        se: its standard error (``None``: one value, no interval).
        dof: the t distribution's degrees of freedom (Welch: Welch-Satterthwaite, real).
        estimator: ``mean`` (one sample), ``paired`` (one sample of paired differences) or
            ``welch`` (difference of two independent means).
        n: the sample sizes, ``(n,)`` or ``(n_a, n_b)``.
    """

    mean: float
    se: float | None
    dof: float | None
    estimator: str
    n: tuple[int, ...]

    def half_width(self, alpha: float = ALPHA) -> float | None:
        """Half-width of the two-sided ``1 - alpha`` interval (``None`` without one)."""
        if self.se is None or self.dof is None:
            return None
        return t_quantile(1.0 - alpha / 2.0, self.dof) * self.se

    def p_value(self) -> float | None:
        """Two-sided p-value of ``mean == 0`` (``None`` without an interval; 0 when se is 0)."""
        if self.se is None or self.dof is None:
            return None
        if self.se == 0.0:
            return 1.0 if self.mean == 0.0 else 0.0
        return t_two_sided_p(self.mean / self.se, self.dof)


def _mean_var(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    return mean, sum((v - mean) ** 2 for v in values) / (n - 1)


def mean_estimate(values: Sequence[float], estimator: str = "mean") -> Estimate:
    """One-sample estimate of ``values``' mean (``estimator='paired'`` for differences)."""
    n = len(values)
    if n == 0:
        raise ValueError("a mean needs at least one value")
    if n < 2:
        return Estimate(sum(values) / n, None, None, estimator, (n,))
    mean, var = _mean_var(values)
    return Estimate(mean, math.sqrt(var / n), float(n - 1), estimator, (n,))


def welch_estimate(a: Sequence[float], b: Sequence[float]) -> Estimate:
    """``mean(a) - mean(b)`` of two independent samples, Welch-Satterthwaite dof.

    Raises:
        ValueError: a sample has fewer than 2 values (it has no variance to weigh).
    """
    if len(a) < 2 or len(b) < 2:
        raise ValueError(
            f"Welch's interval needs at least 2 values a side, got {len(a)} and {len(b)}: "
            "run more seeds (of the floor: they are cheap) or use the paired estimator"
        )
    (mean_a, var_a), (mean_b, var_b) = _mean_var(a), _mean_var(b)
    wa, wb = var_a / len(a), var_b / len(b)
    se2 = wa + wb
    if se2 == 0.0:
        dof = float(len(a) + len(b) - 2)
    else:
        dof = se2**2 / (wa**2 / (len(a) - 1) + wb**2 / (len(b) - 1))
    return Estimate(mean_a - mean_b, math.sqrt(se2), dof, "welch", (len(a), len(b)))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the input's order (Holm 1979; see the module docstring)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def holm_levels(p_values: Sequence[float], alpha: float = ALPHA) -> list[float]:
    """Each claim's Holm step level ``alpha / (m - i + 1)``, ``i`` its rank by p-value."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    levels = [alpha] * m
    for rank, i in enumerate(order):
        levels[i] = alpha / (m - rank)
    return levels


def holm_intervals(estimates: Sequence[Estimate], alpha: float = ALPHA) -> list[dict]:
    """Holm across ``estimates`` (the claims of one write-up).

    Returns, per estimate in order: ``p`` (raw), ``p_holm`` (adjusted), ``level`` (its step's
    two-sided level), ``half`` (the interval's half-width at that level) and ``rejects``
    (Holm rejects ``mean == 0`` at family-wise ``alpha``: ``p_holm <= alpha``). An estimate
    without an interval gets ``p = 1`` and never rejects.
    """
    p = [e.p_value() for e in estimates]
    p = [1.0 if v is None else v for v in p]
    adjusted, levels = holm(p), holm_levels(p, alpha)
    return [
        {
            "p": p[i],
            "p_holm": adjusted[i],
            "level": levels[i],
            "half": e.half_width(levels[i]),
            "rejects": adjusted[i] <= alpha,
        }
        for i, e in enumerate(estimates)
    ]


def mean_ci(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and the half-width of its 95 % t interval (``None`` for one value: no interval)."""
    estimate = mean_estimate(values)
    return estimate.mean, estimate.half_width()


def excludes_zero(values: Sequence[float]) -> bool:
    """Whether the 95 % interval of ``values``' mean lies wholly above or below 0."""
    if not values:
        return False
    mean, half = mean_ci(values)
    return half is not None and abs(mean) > half


def format_estimate(
    estimate: Estimate | None,
    scale: float = 100.0,
    digits: int = 1,
    mark_nonzero: bool = False,
    half: float | None = None,
) -> str:
    """``"41.2 ± 0.3"`` (± the 95 % half-width, or ``half``), ``"41.2 (n=1, no CI)"``, ``"–"``.

    With ``mark_nonzero`` (a difference: a gain or a contrast) the sign is always written and
    an interval that excludes 0 is bold.
    """
    if estimate is None:
        return "–"
    sign = "+" if mark_nonzero else ""
    text = f"{estimate.mean * scale:{sign}.{digits}f}"
    half = estimate.half_width() if half is None else half
    if half is None:
        return f"{text} (n=1, no CI)"
    text = f"{text} ± {half * scale:.{digits}f}"
    return f"**{text}**" if mark_nonzero and abs(estimate.mean) > half else text


def format_mean_ci(
    values: Sequence[float], scale: float = 100.0, digits: int = 1, mark_nonzero: bool = False
) -> str:
    """:func:`format_estimate` of ``values``' one-sample mean (``"–"`` for no values)."""
    if not values:
        return "–"
    return format_estimate(mean_estimate(values), scale, digits, mark_nonzero)
