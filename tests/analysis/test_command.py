"""``ssl-biases analyze``: the typed command, its parser and today's command line."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from jsonargparse import ActionConfigFile, ArgumentError, ArgumentParser

from ssl_biases.analysis.command import analyze, build_parser
from ssl_biases.analysis.report import block_matrix, load_report
from ssl_biases.cli import cli_main
from ssl_biases.data.datamodule import SSLDataModule


def main(argv: list[str]) -> None:
    """`ssl-biases analyze ARGV`, through the one parser (user errors raise)."""
    cli_main(["analyze", *argv])


SHAPES = Path(__file__).parents[2] / "configs" / "data" / "shapes.yaml"
DATA = [
    "--config", str(SHAPES), "--data.shapes_size", "64", "--data.num_workers", "0",
    "--data.max_probe_train_samples", "64",
    "--data.probe_batch_size", "16",
]  # fmt: skip
TINY_DATA = {"dataset": "shapes", "shapes_size": 64, "num_workers": 0,
             "max_probe_train_samples": 64, "probe_batch_size": 16}  # fmt: skip


def test_analyze_end_to_end_writes_report_figures_and_tensorboard(tmp_path, write_checkpoint):
    vit = write_checkpoint(tmp_path / "vit.ckpt", 0)
    # No position embedding, mean pooling: a permutation of whole patches permutes the tokens
    # and leaves the embedding unchanged, so the patch-shuffle drop is 0 (arXiv 2105.01601).
    bag = write_checkpoint(tmp_path / "bag.ckpt", 1, pos_embed="none", pool="gap")
    out, tb = tmp_path / "out", tmp_path / "tb"
    main(["--ckpt", str(vit), "--ckpt", str(bag), "--label", "vit", "--label", "bag",
          "--output", str(out), "--tensorboard", str(tb), "--shots", "1", "5", "25",
          "--seeds", "0", "1", *DATA])  # fmt: skip
    report = load_report(out)
    assert set(report["models"]) == {"vit", "bag"}
    vit_r, bag_r = report["models"]["vit"], report["models"]["bag"]
    # Keyed by block and head; 2 blocks of 2 heads; distances within the unit square.
    distance = block_matrix(vit_r["attention"]["mean_distance"])
    assert list(vit_r["attention"]["mean_distance"]) == ["block0", "block1"]
    assert distance.shape == (2, 2) and bool(((distance > 0) & (distance < 1.5)).all())
    offset = block_matrix(vit_r["attention"]["offset"])
    assert bool((offset <= distance + 1e-9).all())  # Jensen: offset <= distance
    assert isinstance(vit_r["attention"]["offset_local_heads"], list)
    rule = {"max_distance": 0.3, "min_offset": 0.05, "min_directionality": 0.5}
    assert vit_r["attention"]["offset_local_rule"] == rule
    # CKA of a model with itself: ones on the diagonal; between two models: [2, 2] in [0, 1].
    ones = torch.ones(2, dtype=torch.float64)
    torch.testing.assert_close(block_matrix(vit_r["cka"]).diag(), ones)
    cross = block_matrix(report["cka_between"]["vit vs bag"])
    assert cross.shape == (2, 2) and bool(((cross > -0.2) & (cross < 1.0 + 1e-9)).all())
    assert list(vit_r["layerwise_knn_top1"]) == ["block0", "block1"]
    assert vit_r["layerwise_best_block"] in (0, 1)
    # 64 bank images of 4 classes: 25 shots cannot be drawn for every class and are skipped.
    assert set(vit_r["fewshot"]) == {"fewshot_1shot", "fewshot_1shot_std", "fewshot_5shot",
                                     "fewshot_5shot_std"}  # fmt: skip
    assert 0.0 <= vit_r["offline_linear_top1"] <= 1.0 and vit_r["global_step"] == 7
    assert bag_r["shuffle"]["patch"]["drop"] == pytest.approx(0.0, abs=1e-9)
    assert bag_r["shuffle"]["patch"]["relative"] == pytest.approx(1.0)
    assert report["data"]["init_args"]["shapes_size"] == 64
    del report["data"]["init_args"]
    assert report["data"] == {"dataset": "shapes", "root": None, "image_size": 32,
                              "bank_size": 64, "query_size": 16}  # fmt: skip
    pngs = {p.name for p in out.glob("*.png")}
    assert pngs == {
        "attention_distance.png", "layerwise_knn.png", "fewshot.png", "shuffle.png",
        "offset_heads_vit.png", "offset_heads_bag.png", "cka_vit.png", "cka_bag.png",
        "cka_vit_vs_bag.png",
    }  # fmt: skip
    assert all((out / name).stat().st_size > 1000 for name in pngs)
    assert json.loads((out / "report.json").read_text())["models"] == report["models"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tb))
    events.Reload()
    assert "analysis/cka_vit_vs_bag" in events.Tags()["images"]
    assert events.Images("analysis/fewshot")[0].step == 7


def test_user_errors_say_what_to_do(tmp_path, write_checkpoint):
    ckpt = write_checkpoint(tmp_path / "a.ckpt", 0)
    with pytest.raises(ValueError, match="--data.image_size 32"):
        main(["--ckpt", str(ckpt), "--output", str(tmp_path), *DATA, "--data.image_size", "64"])
    with pytest.raises(FileNotFoundError, match="--config"):
        main(["--ckpt", str(ckpt), "--output", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_info:  # a typo: usage error, exit status 2
        main(["--ckpt", str(ckpt), "--output", str(tmp_path), *DATA, "--data.shapes_sizee", "1"])
    assert exit_info.value.code == 2


def test_without_config_the_run_config_gives_data_and_data_options_override_it(
    tmp_path, write_checkpoint, capsys
):
    run = tmp_path / "runs" / "version_0"
    (run / "checkpoints").mkdir(parents=True)
    ckpt = write_checkpoint(run / "checkpoints" / "last.ckpt", 0)
    config = {"model": {"class_path": "ssl_biases.methods.simclr.SimCLR"}, "data": TINY_DATA}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    main(["--ckpt", str(ckpt), "--output", str(tmp_path / "o"),
          "--data.max_probe_train_samples", "32", "--shots", "1", "--seeds", "0"])  # fmt: skip
    report = load_report(tmp_path / "o")
    assert report["data"]["init_args"]["shapes_size"] == 64  # from the run's config.yaml
    assert report["data"]["bank_size"] == 32  # the override on top of it
    assert list(report["models"]) == ["simclr"]  # label: the run's method
    assert capsys.readouterr().out.splitlines()[-1] == f"Report: {tmp_path / 'o' / 'report.json'}"


def function_parser() -> ArgumentParser:
    """How a subcommand parser is built from the typed function."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_function_arguments(analyze)
    return parser


def test_typed_analyze_runs_from_a_yaml_config_and_refuses_typos(tmp_path, write_checkpoint):
    ckpt = write_checkpoint(tmp_path / "a.ckpt", 0)
    config = {"ckpt": [str(ckpt)], "output": str(tmp_path / "o"), "label": ["tiny"],
              "shots": [1], "seeds": [0], "data": TINY_DATA}  # fmt: skip
    (tmp_path / "analyze.yaml").write_text(yaml.safe_dump(config))
    parser = function_parser()
    parsed = parser.parse_args(["--config", str(tmp_path / "analyze.yaml")])
    assert parsed.shots == (1,) and parsed.data.init_args.shapes_size == 64
    analyze(**{k: v for k, v in vars(parser.instantiate(parsed)).items() if k != "config"})
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert list(report["models"]) == ["tiny"] and report["data"]["bank_size"] == 64
    for typo, key in [({"shotz": [1]}, "shotz"), ({"data": {"shapes_sizee": 3}}, "shapes_sizee")]:
        (tmp_path / "typo.yaml").write_text(yaml.safe_dump({**config, **typo}))
        with pytest.raises(ArgumentError, match=key):
            parser.parse_args(["--config", str(tmp_path / "typo.yaml")])


def test_analyze_called_with_a_data_module(tmp_path, write_checkpoint, capsys):
    ckpt = str(write_checkpoint(tmp_path / "a.ckpt", 0, depth=1))
    analyze([ckpt], str(tmp_path / "o"), shots=(1,), seeds=(0,), data=SSLDataModule(**TINY_DATA))
    line = capsys.readouterr().out.splitlines()[0]
    report = load_report(tmp_path / "o")
    assert line.startswith(f"a: knn_top1 {report['models']['a']['knn_top1']:.4f}  offline_linear")
    assert block_matrix(report["models"]["a"]["cka"]).shape == (1, 1)


def test_help_shows_each_parameter_from_the_docstring(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert "Checkpoints written by" in out and "Few-shot support draws" in out
    assert "--data.help" in out and "ssl-biases analyze" in out
