from pathlib import Path

from ssl_biases.cli.demo import main


def test_demo_compares_pretrained_and_random_probes(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    tiny = [
        "--data.shapes_size", "64", "--data.batch_size", "16", "--data.num_workers", "0",
        "--data.max_probe_train_samples", "32", "--trainer.enable_progress_bar", "false",
        "--model.backbone.depth", "1",
    ]  # fmt: skip
    results = main(["--epochs", "1", "--", *tiny])
    for side in ("pretrained", "random"):
        assert set(results[side]) == {"val/knn_top1", "val/offline_linear_top1"}
        assert all(0.0 <= v <= 1.0 for v in results[side].values())
    printed = capsys.readouterr().out
    assert "random init" in printed and "SimCLR pretrained" in printed and "margin" in printed
    assert (Path("runs/demo/version_0/checkpoints/last.ckpt")).is_file()
    assert (Path("runs/demo_random/version_0/metrics.csv")).is_file()
