"""Known answers for the t distribution, Welch's interval and Holm's adjustment."""

import math

import pytest

from ssl_biases.experiments.confidence import (
    T_975,
    Estimate,
    format_estimate,
    holm,
    holm_intervals,
    mean_estimate,
    t_quantile,
    t_quantile_975,
    t_two_sided_p,
    welch_estimate,
)

# Wikipedia, "Welch's t-test", Examples, example 1 (two samples of 15): Welch t = -2.46,
# nu = 24.98, p = 0.021 (Student's pooled test: t = -2.46, 28 dof, p = 0.021).
A1 = [27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4]
A2 = [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4]


def test_t_quantile_reproduces_the_nist_table_and_the_normal_limit():
    for dof, table in enumerate(T_975, start=1):
        assert t_quantile_975(dof) == pytest.approx(table, abs=5e-4)
    assert t_quantile_975(31) == pytest.approx(2.0395, abs=1e-4)  # the old code said 1.960
    assert t_quantile_975(1e7) == pytest.approx(1.95996, abs=1e-4)
    assert t_quantile(0.995, 10) == pytest.approx(3.169, abs=5e-4)  # NIST table, 0.995 column
    assert t_two_sided_p(2.228, 10) == pytest.approx(0.05, abs=1e-4)
    with pytest.raises(ValueError, match="degree"):
        t_quantile_975(0)


def test_welch_matches_the_textbook_example():
    e = welch_estimate(A1, A2)
    assert e.mean == pytest.approx(-2.1667, abs=1e-4)
    assert e.mean / e.se == pytest.approx(-2.46, abs=0.005)
    assert e.dof == pytest.approx(24.98, abs=0.01)
    assert e.p_value() == pytest.approx(0.021, abs=0.0005)
    assert e.half_width() == pytest.approx(t_quantile_975(e.dof) * e.se)
    # a floor of many seeds: the interval is that of the trained side plus a shrinking floor
    narrow = welch_estimate([0.30, 0.31, 0.32], [0.25] * 10 + [0.26] * 10)
    assert narrow.half_width() < mean_estimate([0.05, 0.05, 0.07]).half_width()


def test_welch_refuses_a_single_value_side():
    with pytest.raises(ValueError, match="at least 2 values"):
        welch_estimate([0.3], [0.2, 0.25])


def test_holm_matches_a_hand_example():
    # sorted: 0.005 x4 = 0.02, 0.01 x3 = 0.03, 0.03 x2 = 0.06, max(0.06, 0.04 x1) = 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5]) == [0.5]
    assert holm([0.6, 0.6]) == [1.0, 1.0]


def test_holm_intervals_widen_by_the_step_level_and_reject_by_adjusted_p():
    # one clear claim (t = 10) and one marginal (p ~ 0.03 alone): Holm keeps only the first
    clear = Estimate(1.0, 0.1, 20.0, "paired", (21,))
    marginal = Estimate(0.46, 0.2, 20.0, "paired", (21,))
    assert 0.025 < marginal.p_value() < 0.05
    first, second = holm_intervals([clear, marginal])
    assert first["level"] == pytest.approx(0.025) and second["level"] == pytest.approx(0.05)
    assert first["half"] == pytest.approx(t_quantile(1 - 0.0125, 20.0) * 0.1)
    assert first["rejects"] and second["rejects"]  # 2p <= .05 for the first, p <= .05 next
    weak = Estimate(0.46, 0.2, 20.0, "paired", (21,))
    results = holm_intervals([weak, weak])  # two marginal claims: neither survives
    assert [r["rejects"] for r in results] == [False, False]
    assert all(r["p_holm"] == pytest.approx(2 * weak.p_value()) for r in results)


def test_format_estimate_bold_only_where_the_interval_excludes_zero():
    e = Estimate(0.02, 0.005, 10.0, "welch", (5, 20))
    half = 2.228 * 0.005
    assert format_estimate(e, mark_nonzero=True) == f"**+2.0 ± {100 * half:.1f}**"
    assert format_estimate(e, mark_nonzero=True, half=0.03) == "+2.0 ± 3.0"
    assert format_estimate(None) == "–"
    assert format_estimate(Estimate(0.4, None, None, "mean", (1,))) == "40.0 (n=1, no CI)"
    assert not math.isnan(e.p_value())
