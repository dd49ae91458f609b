"""benchmarks/equal_budget.py at toy size: both loops train, the table holds their difference."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from helpers import ROOT


def load_benchmark():
    spec = importlib.util.spec_from_file_location(
        "equal_budget", ROOT / "benchmarks" / "equal_budget.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bare_loops_use_the_configs_heads_and_schedule() -> None:
    bench = load_benchmark()
    args = bench.method_args("mocov3")
    model = bench.MoCoV3(bench.create_backbone("vit_tiny", width=32, depth=1, num_heads=2), args)
    assert model.projection_head.layers[0].out_features == args["projection_hidden_dim"]
    assert model.backbone.num_features == 32
    x = torch.randn(4, 3, 32, 32)
    assert model.loss(x, x.flip(-1)).requires_grad
    assert not any(p.requires_grad for p in model.backbone_momentum.parameters())


@pytest.mark.parametrize(
    ("method", "sizes"),
    [("swav", [32, 32, 16, 16]), ("lejepa", [32, 32, 16, 16]), ("emp_ssl", [32] * 20)],
)
def test_multi_crop_bare_loops_take_the_configs_crops_and_heads(method, sizes) -> None:
    bench = load_benchmark()
    args = bench.method_args(method)
    views = bench.views_transform(method, args, {"mean": [0.5] * 3, "std": [0.25] * 3})
    from PIL import Image

    crops = views(Image.new("RGB", (32, 32), (120, 60, 30)))
    assert [c.shape[-1] for c in crops] == sizes
    backbone = bench.create_backbone("vit_tiny", width=32, depth=1, num_heads=2)
    model = bench.MULTI_CROP_MODELS[method](backbone, args, 100)
    if hasattr(model, "before_step"):
        model.before_step(0)  # SwAV: prototypes frozen for the first 1 % of the steps
    batch = [torch.randn(4, *c.shape) for c in crops[:4]]
    loss = model.loss(*batch)
    assert loss.ndim == 0 and loss.requires_grad


def test_tiny_run_prints_both_knn_accuracies_and_their_difference(tmp_path, capsys) -> None:
    bench = load_benchmark()
    argv = [
        "--steps", "2", "--batch-size", "16", "--dataset", "shapes", "--shapes-size", "64",
        "--max-probe-train-samples", "32", "--device", "cpu", "--work-dir", str(tmp_path),
        "--backbone-arg", "width=32", "--backbone-arg", "depth=1", "--backbone-arg", "num_heads=2",
        "--json", str(tmp_path / "rows.json"), "--methods", "simclr,byol,vicreg,mocov3",
        "--fit-args", "--trainer.accelerator", "cpu",
    ]  # fmt: skip
    rows = bench.main(argv)
    assert [r["method"] for r in rows] == ["simclr", "byol", "vicreg", "mocov3"]
    for row in rows:
        assert 0.0 <= row["bare"] <= 1.0 and 0.0 <= row["framework"] <= 1.0
        assert row["difference"] == pytest.approx(row["framework"] - row["bare"])
    out = capsys.readouterr().out
    assert "| mocov3 | 2 |" in out and "framework - bare" in out
    for method in ("simclr", "byol", "vicreg", "mocov3"):  # the framework ran the same steps
        status = json.loads((tmp_path / method / "version_0" / "status.json").read_text())
        assert status["status"] == "completed" and status["global_step"] == 2


def test_a_rerun_with_the_same_json_skips_finished_runs_and_summarises_seeds(
    tmp_path, monkeypatch, capsys
) -> None:
    """An interrupted CPU run resumes, and seeds run one at a time into one file."""
    bench = load_benchmark()
    trained = []
    accuracy = {
        ("bare", 0): 0.30,
        ("framework", 0): 0.32,
        ("bare", 1): 0.31,
        ("framework", 1): 0.32,
    }

    def fake_train(mode):
        def train(method, opts, *rest):
            trained.append((method, mode, opts.seed))
            return (mode, opts.seed)

        return train

    monkeypatch.setattr(bench, "train_bare", fake_train("bare"))
    monkeypatch.setattr(bench, "train_framework", fake_train("framework"))
    monkeypatch.setattr(bench, "knn_top1", lambda backbone, opts, device: accuracy[backbone])
    rows_json = tmp_path / "rows.json"
    argv = [
        "--dataset",
        "shapes",
        "--methods",
        "simclr",
        "--steps",
        "300",
        "--json",
        str(rows_json),
    ]
    bench.main([*argv, "--mode", "bare"])  # interrupted after the bare run, say
    assert json.loads(rows_json.read_text())[0]["bare"] == 0.30
    bench.main(argv)  # the rerun trains only what is missing
    assert trained == [("simclr", "bare", 0), ("simclr", "framework", 0)]
    rows = bench.main([*argv, "--seed", "1"])
    assert trained[2:] == [("simclr", "bare", 1), ("simclr", "framework", 1)]
    assert [(r["seed"], round(r["difference"], 4)) for r in rows] == [(0, 0.02), (1, 0.01)]
    assert len(json.loads(rows_json.read_text())) == 2
    out = capsys.readouterr().out
    # mean +1.5 points, sd 0.707, half-width t(1) * 0.707 / sqrt(2) = 12.706 * 0.5 = 6.4
    assert "| simclr | 300 | 256 | 2 | +1.5 ± 6.4 |" in out


def test_the_table_pools_seeds_of_one_setting_only() -> None:
    """Rows of another step count or batch (EMP-SSL's smaller setting) are not averaged in."""
    from ssl_biases.experiments.equal_budget import format_table

    def row(seed, batch, difference):
        return {"method": "emp_ssl", "steps": 100, "batch_size": batch, "seed": seed,
                "bare": 0.3, "framework": 0.3 + difference, "difference": difference}  # fmt: skip

    table = format_table([row(0, 64, 0.01), row(1, 64, 0.03), row(0, 128, 0.5)])
    # batch 64: mean +2.0 points, sd 1.414, half-width 12.706 * 1.414 / sqrt(2) = 12.7
    assert "| emp_ssl | 100 | 64 | 2 | +2.0 ± 12.7 |" in table
    assert "| emp_ssl | 100 | 128 | 0 | 30.00 | 80.00 | +50.00 | – | – |" in table
    assert table.count("| emp_ssl | 100 | 128 |") == 1  # one seed: no summary row


def test_table_only_prints_the_rows_so_far_and_trains_nothing(tmp_path, monkeypatch, capsys):
    bench = load_benchmark()
    monkeypatch.setattr(bench, "train_bare", lambda *a: pytest.fail("--table-only trained"))
    rows_json = tmp_path / "rows.json"
    rows = [
        {"method": "simclr", "steps": 300, "batch_size": 128, "seed": 0, "bare": 0.3747,
         "framework": 0.3721, "difference": 0.3721 - 0.3747, "bare_s": 734.2, "framework_s": 730.6},
        {"method": "byol", "steps": 300, "batch_size": 128, "seed": 0, "bare": 0.2692,
         "bare_s": 915.6},
    ]  # fmt: skip
    rows_json.write_text(json.dumps(rows))
    assert bench.main(["--json", str(rows_json), "--table-only"]) == rows
    out = capsys.readouterr().out
    assert "| simclr | 300 | 128 | 0 | 37.47 | 37.21 | -0.26 | 734 | 731 |" in out
    assert "| byol | 300 | 128 | 0 | 26.92 | – | – | 916 | – |" in out  # its framework run: not yet
    with pytest.raises(SystemExit):  # no file to read: a usage error, not an empty table
        bench.main(["--json", str(tmp_path / "missing.json"), "--table-only"])
    assert "--table-only reads the rows of --json FILE" in capsys.readouterr().err
