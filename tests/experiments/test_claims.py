"""A grid's claims: Welch gains against many floor seeds, the primary estimator, Holm."""

import pytest

from ssl_biases.experiments.claims import (
    check_primary,
    claims_table,
    contrast_estimates,
    grid_claims,
    verdict,
    welch_gains,
)
from ssl_biases.experiments.confidence import Estimate, holm, mean_estimate, welch_estimate
from ssl_biases.experiments.grid import load_experiment

GRID = """
name: toy
axes:
  - {name: method, key: m, values: [simclr, byol]}
  - {name: token_mixer, key: t, values: [conv, attention]}
  - {name: seed, key: seed_everything, values: [0, 1, 2]}
report:
  baseline: BASELINE
  contrasts: [{axis: token_mixer, levels: [conv, attention]}]
  primary: {metric: gain/val/knn_top1, estimator: welch, claim: greater}
"""
FLOOR = """
name: toy_random
command: validate
axes:
  - {name: token_mixer, key: t, values: [conv, attention]}
  - {name: seed, key: seed_everything, values: [0, 1, 2, 3, 4, 5]}
"""
TRAINED = {  # (method, token_mixer) -> knn per seed
    ("simclr", "conv"): [0.40, 0.42, 0.41],
    ("simclr", "attention"): [0.35, 0.36, 0.38],
    ("byol", "conv"): [0.30, 0.33, 0.31],
    ("byol", "attention"): [0.29, 0.30, 0.28],
}
FLOORS = {"conv": [0.28, 0.27, 0.29, 0.28, 0.26, 0.29], "attention": [0.25] * 3 + [0.24] * 3}


def experiments(tmp_path):
    (tmp_path / "floor.yaml").write_text(FLOOR)
    (tmp_path / "grid.yaml").write_text(GRID.replace("BASELINE", str(tmp_path / "floor.yaml")))
    return load_experiment(tmp_path / "grid.yaml"), load_experiment(tmp_path / "floor.yaml")


def rows_of():
    rows = [
        {"method": m, "token_mixer": t, "seed": str(s), "val/knn_top1": v}
        for (m, t), values in TRAINED.items()
        for s, v in enumerate(values)
    ]
    floor = [
        {"token_mixer": t, "seed": str(s), "val/knn_top1": v}
        for t, values in FLOORS.items()
        for s, v in enumerate(values)
    ]
    for row in rows:  # the paired gain, as add_baseline_gains makes it
        row["gain/val/knn_top1"] = (
            row["val/knn_top1"] - FLOORS[row["token_mixer"]][int(row["seed"])]
        )
    return rows, floor


def test_welch_gain_is_the_trained_mean_minus_all_floor_seeds_mean():
    rows, floor = rows_of()
    gains = welch_gains(rows, ["method", "token_mixer", "seed"], floor, ["token_mixer", "seed"],
                        "val/knn_top1")  # fmt: skip
    # only floor seeds 3-5 enter: seeds 0-2 are the trained cells' own initial weights
    expected = welch_estimate(TRAINED[("simclr", "conv")], FLOORS["conv"][3:])
    assert gains[("simclr", "conv")] == expected
    assert expected.n == (3, 3)


def test_welch_contrast_of_gains_sets_trained_differences_against_floor_differences():
    rows, floor = rows_of()
    contrast = {"axis": "token_mixer", "levels": ["conv", "attention"]}
    axes, floor_axes = ["method", "token_mixer", "seed"], ["token_mixer", "seed"]
    welch = contrast_estimates(
        rows, axes, contrast, "gain/val/knn_top1", "welch", floor, floor_axes
    )
    trained = [a - b for a, b in zip(TRAINED[("simclr", "conv")], TRAINED[("simclr", "attention")])]
    floors = [a - b for a, b in zip(FLOORS["conv"], FLOORS["attention"])]
    assert welch[("simclr",)] == welch_estimate(trained, floors[3:])
    paired = contrast_estimates(rows, axes, contrast, "gain/val/knn_top1", "paired")
    gain_differences = [t - f for t, f in zip(trained, floors)]  # floor seeds 0-2, paired
    assert paired[("simclr",)].mean == pytest.approx(mean_estimate(gain_differences).mean)
    # a contrast along an axis the floor does not vary: the floor cancels
    by_method = {"axis": "method", "levels": ["simclr", "byol"]}
    cancel = contrast_estimates(
        rows, axes, by_method, "gain/val/knn_top1", "welch", floor, floor_axes
    )
    direct = [a - b for a, b in zip(TRAINED[("simclr", "conv")], TRAINED[("byol", "conv")])]
    assert cancel[("conv",)].mean == pytest.approx(sum(direct) / 3)
    assert cancel[("conv",)].estimator == "paired"


def test_grid_claims_and_the_holm_table(tmp_path):
    experiment, _ = experiments(tmp_path)
    rows, floor = rows_of()
    claims = grid_claims(experiment, rows, floor, ["token_mixer", "seed"])
    assert [c["claim"] for c in claims] == [
        "token_mixer conv − attention (method=simclr)",
        "token_mixer conv − attention (method=byol)",
    ]
    assert all(c["estimator"] == "welch" and c["primary"] is c["welch"] for c in claims)
    table = claims_table(claims)
    p = [c["primary"].p_value() for c in claims]
    for adjusted in holm(p):
        assert f"{adjusted:.3f}" in table
    assert table.count("| welch |") == 2


def test_verdict_reads_the_claimed_side():
    up, down = Estimate(1.0, 0.1, 9.0, "welch", (5, 20)), Estimate(-1.0, 0.1, 9.0, "welch", (5, 20))
    assert verdict(up, True, "greater") == "agree"
    assert verdict(down, True, "greater") == "disagree"
    assert verdict(down, True, "less") == "agree"
    assert verdict(up, False, "greater") == "inconclusive"


@pytest.mark.parametrize(
    ("primary", "message"),
    [
        ("{metric: gain/val/knn_top1, estimator: bootstrap}", "estimator"),
        ("{metric: gain/val/knn_top1}", "must be"),
        ("{metric: gain/val/knn_top1, estimator: welch, claim: bigger}", "claim"),
        ("{metric: gain/val/knn_top1, estimator: welch, contrasts: [3]}", "indices"),
        ("{metric: gain/val/knn_top1, estimator: welch, alpha: 0.1}", "unknown keys"),
    ],
)
def test_check_primary_refuses_what_could_only_fail_after_the_run(tmp_path, primary, message):
    text = GRID.replace("BASELINE", "floor.yaml")
    text = text.replace("primary: {metric: gain/val/knn_top1, estimator: welch, claim: greater}",
                        f"primary: {primary}")  # fmt: skip
    (tmp_path / "grid.yaml").write_text(text)
    with pytest.raises(ValueError, match=message):
        check_primary(load_experiment(tmp_path / "grid.yaml"))


def test_a_gain_claim_needs_a_baseline(tmp_path):
    text = GRID.replace("  baseline: BASELINE\n", "")
    (tmp_path / "grid.yaml").write_text(text)
    with pytest.raises(ValueError, match="baseline"):
        check_primary(load_experiment(tmp_path / "grid.yaml"))


def test_welch_has_no_floor_when_every_floor_seed_is_a_trained_seed():
    rows, floor = rows_of()
    shared = [r for r in floor if int(r["seed"]) < 3]  # the trained cells' own seeds only
    axes, floor_axes = ["method", "token_mixer", "seed"], ["token_mixer", "seed"]
    assert welch_gains(rows, axes, shared, floor_axes, "val/knn_top1") == {}
    contrast = {"axis": "token_mixer", "levels": ["conv", "attention"]}
    welch = contrast_estimates(
        rows, axes, contrast, "gain/val/knn_top1", "welch", shared, floor_axes
    )
    assert welch == {}
