"""``ssl-biases sweep`` as a typed function: its parser, ``--config`` and today's spelling."""

from pathlib import Path

import pytest
import yaml
from jsonargparse import ActionConfigFile, ArgumentError, ArgumentParser

from ssl_biases.cli import cli_main
from ssl_biases.experiments.sweep import sweep


def main(argv: list[str]) -> None:
    """`ssl-biases sweep ARGV`, through the one parser (user errors raise)."""
    cli_main(["sweep", *argv])


ROOT = Path(__file__).resolve().parents[2]
GRID = {
    "name": "tiny",
    "configs": [str(ROOT / "configs/method/simclr.yaml"), str(ROOT / "configs/data/shapes.yaml")],
    "args": {"data.image_size": 16},
    "axes": [{"name": "seed", "key": "seed_everything", "values": [0, 1]}],
    "report": {"metric": "val/knn_top1", "rows": "seed", "x": "seed"},
}


def function_parser() -> ArgumentParser:
    """How a subcommand parser is built from the typed function."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_function_arguments(sweep)
    return parser


def test_sweep_runs_from_a_yaml_config_and_refuses_typos(tmp_path, capsys):
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(GRID))
    config = {"grid": str(tmp_path / "grid.yaml"), "output_dir": str(tmp_path / "out"),
              "only": ["seed=1"], "collect_only": True}  # fmt: skip
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(config))
    parser = function_parser()
    parsed = parser.parse_args(["--config", str(tmp_path / "sweep.yaml")])
    assert (parsed.only, parsed.launcher, parsed.dry_run) == (["seed=1"], "local", False)
    sweep(**{k: v for k, v in vars(parsed).items() if k != "config"})
    assert capsys.readouterr().out.startswith("collected 0 finished cells: ")
    for typo, key in [({"dry_runn": True}, "dry_runn"), ({"launcher": "slurm"}, "launcher")]:
        (tmp_path / "typo.yaml").write_text(yaml.safe_dump({**config, **typo}))
        with pytest.raises(ArgumentError, match=key):
            parser.parse_args(["--config", str(tmp_path / "typo.yaml")])
    main(["--config", str(tmp_path / "sweep.yaml")])  # the grid, a positional, from the config
    assert capsys.readouterr().out.startswith("collected 0 finished cells: ")


def test_a_bad_choice_is_a_usage_error_with_exit_status_2(tmp_path, capsys):
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(GRID))
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "grid.yaml"), "--launcher", "slurm"])
    assert exit_info.value.code == 2 and "launcher" in capsys.readouterr().err
