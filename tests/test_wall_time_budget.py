"""benchmarks/wall_time_budget.py: the floor and the methods at one budget, gains over the floor
of the same seed, resumable rows; one real run whose schedule the budget sizes."""

from __future__ import annotations

import importlib.util
import json

import pytest

from helpers import ROOT


def load_benchmark():
    spec = importlib.util.spec_from_file_location(
        "wall_time_budget", ROOT / "benchmarks" / "wall_time_budget.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_method_config_is_in_the_table() -> None:
    bench = load_benchmark()
    configs = {p.stem for p in (ROOT / "configs" / "method").glob("*.yaml")} - {"lens"}
    assert set(bench.METHODS) == configs  # a new method config joins the wall-time table


def test_rows_resume_and_gains_subtract_the_floor_of_the_same_seed(
    tmp_path, monkeypatch, capsys
) -> None:
    bench = load_benchmark()
    trained = []
    knn = {("random_init", 0): 0.30, ("swav", 0): 0.35, ("random_init", 1): 0.32, ("swav", 1): 0.36}

    def fake_train(method, opts, work_dir):
        trained.append((method, opts.seed))
        return (method, opts.seed), 0 if method == bench.FLOOR else 100

    monkeypatch.setattr(bench, "train", fake_train)
    monkeypatch.setattr(bench, "knn_top1", lambda backbone, opts: knn[backbone])
    rows_json = tmp_path / "rows.json"
    argv = ["--dataset", "shapes", "--methods", "swav", "--json", str(rows_json)]
    bench.main(argv)
    bench.main(argv)  # nothing left to run
    assert trained == [("random_init", 0), ("swav", 0)]
    rows = bench.main([*argv, "--seed", "1"])
    assert len(rows) == len(json.loads(rows_json.read_text())) == 4
    out = capsys.readouterr().out
    assert "| swav | 00:00:10:00 | 0 | 100 | 35.00 | +5.00 |" in out
    assert "| swav | 00:00:10:00 | 1 | 100 | 36.00 | +4.00 |" in out
    # mean +4.5 points, sd 0.707, half-width t(1) * 0.707 / sqrt(2) = 6.4
    assert "| swav | 2 | +4.5 ± 6.4 |" in out
    with pytest.raises(SystemExit):
        bench.main(["--methods", "nope", "--dataset", "shapes"])


@pytest.mark.slow
def test_a_tiny_budget_trains_and_probes_against_the_untrained_floor(tmp_path) -> None:
    bench = load_benchmark()
    argv = [
        "--dataset", "shapes", "--shapes-size", "64", "--methods", "simclr",
        "--max-time", "00:00:00:02", "--batch-size", "16", "--num-workers", "0",
        "--max-probe-train-samples", "32", "--max-val-samples", "32",
        "--backbone-arg", "width=32", "--backbone-arg", "depth=1", "--backbone-arg", "num_heads=2",
        "--work-dir", str(tmp_path),
    ]  # fmt: skip
    floor, simclr = bench.main(argv)
    assert (floor["method"], floor["steps"]) == ("random_init", 0)
    assert simclr["steps"] >= 1 and 0.0 <= simclr["knn_top1"] <= 1.0
    metrics = (tmp_path / "simclr_seed0" / "version_0" / "metrics.csv").read_text()
    assert "train/estimated_total_steps" in metrics  # the budget sized the schedule
