"""The sweep runner end to end on tiny generated data: failures, skipping, resuming, submitit,
stale cells, and a file checked whole before the first cell starts."""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from ssl_biases.cli import cli_main
from ssl_biases.experiments.grid import load_experiment
from ssl_biases.experiments.sweep import (
    cell_settings,
    fit_command,
    last_checkpoint,
    setting_changes,
)


def main(argv: list[str]) -> None:
    """`ssl-biases sweep ARGV`, through the one parser (user errors raise)."""
    cli_main(["sweep", *argv])


ROOT = Path(__file__).resolve().parents[2]


def tiny_spec() -> dict:
    return {
        "name": "tiny",
        "configs": [
            str(ROOT / "configs/method/simclr.yaml"),
            str(ROOT / "configs/data/shapes.yaml"),
        ],
        "args": {
            "model.init_args.backbone.class_path": "ssl_biases.backbones.IsotropicNet",
            "model.init_args.backbone.init_args.width": 32,
            "model.init_args.backbone.init_args.depth": 1,
            "model.init_args.backbone.init_args.num_heads": 3,  # attention: 32 % 3 fails
            "model.init_args.backbone.init_args.pool": "gap",
            "data.image_size": 16,
            "data.shapes_size": 64,
            "data.batch_size": 32,
            "data.num_workers": 0,
            "data.max_probe_train_samples": 32,
            "trainer.accelerator": "cpu",
            "trainer.max_epochs": 1,
            "trainer.enable_progress_bar": False,
            "trainer.enable_model_summary": False,
        },
        "axes": [
            {
                "name": "token_mixer",
                "key": "model.init_args.backbone.init_args.token_mixer",
                "values": ["conv", "attention"],
            }
        ],
        "report": {"metric": "val/knn_top1", "rows": "token_mixer", "x": "token_mixer"},
    }


def tiny_experiment(path: Path, spec: dict | None = None) -> Path:
    path.write_text(yaml.safe_dump(spec or tiny_spec()))
    return path


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A 2-cell sweep, run once: the ``conv`` cell trains, the ``attention`` cell fails (it
    parses, but its backbone refuses 3 heads for width 32)."""
    tmp = tmp_path_factory.mktemp("sweep")
    experiment = tiny_experiment(tmp / "tiny.yaml")
    out = tmp / "out"
    with pytest.raises(SystemExit, match="1 cells failed"):
        main([str(experiment), "--output-dir", str(out)])
    return experiment, out


def test_a_failed_cell_does_not_stop_the_others(sweep):
    _, out = sweep
    good, bad = out / "token_mixer-conv", out / "token_mixer-attention"
    status = json.loads((good / "status.json").read_text())  # the marker of runs and cells
    assert status["status"] == "completed" and status["resumed_from"] is None
    assert last_checkpoint(good) == good / "version_0/checkpoints/last.ckpt"
    assert (good / "version_0/config.yaml").is_file()
    assert not (bad / "status.json").exists()
    assert "not divisible by num_heads 3" in (bad / "fit.log").read_text()
    results = (out / "results.csv").read_text().splitlines()
    assert len(results) == 2 and results[1].startswith("token_mixer-conv,conv,")
    knn = float(dict(zip(results[0].split(","), results[1].split(",")))["val/knn_top1"])
    assert 0.0 <= knn <= 1.0
    assert "1 of 2 cells finished" in (out / "results.md").read_text()


def test_unfinished_cell_resumes_from_last_ckpt_through_submitit_and_done_cells_are_skipped(sweep):
    experiment, out = sweep
    good = out / "token_mixer-conv"
    (good / "status.json").unlink()  # as if the process died after its last checkpoint
    only = ["--only", "token_mixer=conv", "--output-dir", str(out)]
    main([str(experiment), *only, "--launcher", "submitit", "--cluster", "debug"])
    done = json.loads((good / "status.json").read_text())
    assert done["resumed_from"] == str(good / "version_0/checkpoints/last.ckpt")
    assert list((out / "submitit").iterdir())  # submitit's job folder
    log = (good / "fit.log").read_text()
    assert log.count("\n$ ") == 2 and "--ckpt_path" in log.split("\n$ ")[2]
    assert not (good / "version_1").exists()  # the resume continued version_0 in place
    assert json.loads((good / "version_0/status.json").read_text())["status"] == "completed"

    main([str(experiment), *only])  # finished: skipped, no new command in the log
    assert (good / "fit.log").read_text() == log


def test_fit_command_stacks_configs_then_args_then_extra_args(tmp_path):
    experiment = load_experiment(tiny_experiment(tmp_path / "tiny.yaml"))
    cell = experiment.cells()[0]
    command = fit_command(
        cell, tmp_path / "cell", ["--trainer.max_epochs", "2"], tmp_path / "a.ckpt"
    )
    assert command[1:4] == ["-m", "ssl_biases", "fit"]
    configs = [command[i + 1] for i, token in enumerate(command) if token == "--config"]
    assert configs[-1] == str(tmp_path / "cell/logger.yaml") and len(configs) == 3
    assert command[command.index("--trainer.enable_progress_bar") + 1] == "false"
    assert command[-4:] == ["--trainer.max_epochs", "2", "--ckpt_path", str(tmp_path / "a.ckpt")]


def test_a_rerun_after_the_grid_changed_refuses_naming_the_change_and_runs_nothing(sweep, tmp_path):
    experiment, out = sweep
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    good = copy / "token_mixer-conv"
    log, done = (good / "fit.log").read_text(), (good / "status.json").read_text()
    spec = tiny_spec()
    spec["args"]["trainer.max_epochs"] = 2
    changed = tiny_experiment(tmp_path / "changed.yaml", spec)
    for argv in (
        [str(changed), "--output-dir", str(copy)],
        [str(changed), "--output-dir", str(copy), "--collect-only"],
        [str(experiment), "--output-dir", str(copy), "--", "--trainer.max_epochs", "2"],
    ):
        with pytest.raises(ValueError, match=r"trainer.max_epochs: 1 -> 2  \(2 cells: token_"):
            main(argv)
    assert (good / "fit.log").read_text() == log and (good / "status.json").read_text() == done
    main([str(experiment), "--output-dir", str(copy), "--collect-only"])  # unchanged: fine


def test_setting_changes_name_changed_configs_and_accept_old_records_and_unknown_extras():
    command = [
        "python", "-m", "ssl_biases", "fit", "--config", "a.yaml", "--config",
        "runs/x/cell/logger.yaml", "--data.batch_size", "32", "--ckpt_path", "last.ckpt",
    ]  # fmt: skip
    settings = cell_settings(command)
    assert settings == ["fit", "--config", "a.yaml", "--data.batch_size", "32"]
    old = {"command": command}  # a record written before config digests
    assert setting_changes(old, settings, {"a.yaml": "1" * 64}) == []
    record = {"command": command, "config_sha256": {"a.yaml": "0" * 64}}
    assert setting_changes(record, settings, {"a.yaml": "1" * 64}) == ["a.yaml: contents changed"]
    extended = {"command": [*command, "--trainer.max_steps", "5"]}  # run with `-- ...`
    assert setting_changes(extended, settings, {}) == ["trainer.max_steps: 5 -> (unset)"]
    assert setting_changes(extended, settings, {}, exact=False) == []  # --collect-only
    moved = ["fit", "--config", "b.yaml", "--data.batch_size", "64"]
    assert setting_changes(old, moved, {}) == [
        "configs ['a.yaml'] -> ['b.yaml']",
        "data.batch_size: 32 -> 64",
    ]


def _typo(spec: dict, where: str) -> dict:
    if where == "report.rows":
        spec["report"]["rows"] = "token_mixr"
    elif where == "report.x":
        spec["report"]["x"] = "token_mixr"
    elif where == "axis key":
        spec["axes"][0]["key"] = "model.init_args.backbone.init_args.tokn_mixer"
    return spec


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("report.rows", r"report.rows is 'token_mixr', which is no axis; the axes are \['token"),
        ("report.x", r"report.x is 'token_mixr', which is no axis"),
        ("axis key", r"(?s)2 of 2 cells have arguments .* refuses.*tokn_mixer"),
        ("--only", r"--only token_mixer=convv matches no cell; .* are \['conv', 'attention'\]"),
    ],
)
def test_a_typo_anywhere_in_the_file_fails_before_the_first_cell_starts(tmp_path, where, message):
    experiment = tiny_experiment(tmp_path / "typo.yaml", _typo(tiny_spec(), where))
    out = tmp_path / "out"
    only = ["--only", "token_mixer=convv"] if where == "--only" else []
    with pytest.raises(ValueError, match=message):
        main([str(experiment), "--output-dir", str(out), *only])
    assert not out.exists()  # no cell started


def test_cells_that_differ_only_in_an_integer_seed_are_parsed_once(tmp_path, monkeypatch):
    from ssl_biases.cli import cli_parser
    from ssl_biases.experiments.grid import load_experiment
    from ssl_biases.experiments.sweep import check_cell_arguments

    spec = tiny_spec()
    spec["axes"].append({"name": "seed", "key": "seed_everything", "values": [0, 1, 2, "x"]})
    cells = load_experiment(tiny_experiment(tmp_path / "seeds.yaml", spec)).cells()
    parser = cli_parser()
    parsed: list[list[str]] = []
    parse = parser.parse_args
    monkeypatch.setattr(parser, "parse_args", lambda args: parsed.append(args) or parse(args))
    with pytest.raises(ValueError, match=r"2 of 8 cells .*seed-x.*seed-x"):
        check_cell_arguments(cells, [], "fit", parser)
    seeds = [a[a.index("--seed_everything") + 1] for a in parsed]
    assert len(cells) == 8 and sorted(seeds) == ["0", "0", "x", "x"]  # 1 of 0-2, and x alone


ISSUE_15_GRIDS = {  # file -> cells: the grids of issue 15's findings and their floors
    "conv_vs_attention_cifar10": 24,
    "conv_vs_attention_cifar10_random": 8,
    "conv_vs_attention_long_cifar10": 16,
    "last_dim_cifar10": 24,
    "last_dim_cifar10_random": 24,
    "masked_depth_cifar10": 24,
    "masked_depth_cifar10_random": 24,
    "masked_mixers_gpu": 4,
    "shuffle_cifar10": 36,
    "shuffle_cifar10_random": 36,
}


@pytest.mark.parametrize(("name", "cells"), ISSUE_15_GRIDS.items())
def test_issue_15_grids_pass_the_dry_run(name, cells, monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(ROOT)  # configs and baselines are named relative to the repository root
    main([f"configs/experiment/{name}.yaml", "--dry-run", "--output-dir", str(tmp_path)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == cells and all(" fit " in x or " validate " in x for x in lines)
    experiment = load_experiment(f"configs/experiment/{name}.yaml")
    if experiment.report.get("baseline"):
        floor = load_experiment(experiment.report["baseline"])
        assert floor.command == "validate"
        # every trained seed has its floor seed: gains are paired, none falls back to a mean
        seeds = dict(experiment.axes)["seed"]
        assert [v.label for v in dict(floor.axes)["seed"]] == [v.label for v in seeds]
