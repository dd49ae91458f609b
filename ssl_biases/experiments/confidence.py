"""Mean and 95 % confidence interval over seeds, and seed-paired differences.

The interval is Student's t with ``n - 1`` degrees of freedom (Student 1908; e.g. NIST/SEMATECH
e-Handbook of Statistical Methods, section 1.3.5.2)::

    mean ± t_{0.975, n-1} * sd / sqrt(n),   sd the sample standard deviation (n - 1 divisor)

``scipy`` is not a dependency: the quantiles for 1-30 degrees of freedom are the standard table
(NIST/SEMATECH e-Handbook, section 1.3.6.7.2), and beyond 30 the normal quantile 1.960 (at 31
degrees of freedom the exact value is 2.040, so the interval is then up to 4 % too narrow).
One value has no interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

T_975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
"""``T_975[d - 1]``: the 0.975 quantile of Student's t with ``d`` degrees of freedom."""

NORMAL_975 = 1.960
"""The 0.975 quantile of the standard normal, used beyond 30 degrees of freedom."""


def t_quantile_975(dof: int) -> float:
    """The 0.975 quantile of Student's t with ``dof >= 1`` degrees of freedom (see above)."""
    if dof < 1:
        raise ValueError(f"Student's t needs at least 1 degree of freedom, got {dof}")
    return T_975[dof - 1] if dof <= len(T_975) else NORMAL_975


def mean_ci(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and the half-width of its 95 % t interval (``None`` for one value: no interval)."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_ci needs at least one value")
    mean = sum(values) / n
    if n < 2:
        return mean, None
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, t_quantile_975(n - 1) * sd / math.sqrt(n)


def excludes_zero(values: Sequence[float]) -> bool:
    """Whether the 95 % interval of ``values``' mean lies wholly above or below 0."""
    if not values:
        return False
    mean, half = mean_ci(values)
    return half is not None and abs(mean) > half


def format_mean_ci(
    values: Sequence[float], scale: float = 100.0, digits: int = 1, mark_nonzero: bool = False
) -> str:
    """``"41.2 ± 0.3"`` (± the 95 % half-width), ``"41.2 (n=1, no CI)"``, ``"–"`` for none.

    With ``mark_nonzero`` (a difference: a gain or a contrast) the sign is always written and
    an interval that excludes 0 is bold.
    """
    if not values:
        return "–"
    mean, half = mean_ci(values)
    sign = "+" if mark_nonzero else ""
    text = f"{mean * scale:{sign}.{digits}f}"
    if half is None:
        return f"{text} (n=1, no CI)"
    text = f"{text} ± {half * scale:.{digits}f}"
    return f"**{text}**" if mark_nonzero and excludes_zero(values) else text
