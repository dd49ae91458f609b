"""The tool commands (analyze, export, sweep, backbones) as subcommands of the one CLI parser."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import pytest
import yaml

from ssl_biases.cli import DEBUG_ENV, cli_main, main
from ssl_biases.cli.tools import TOOL_COMMANDS, legacy_args

COMMANDS = ("fit", "validate", "test", "predict", "analyze", "export", "sweep", "backbones")
HELP_LINES = {  # a line of each command's per-parameter help (from the function's docstring)
    "analyze": "Few-shot K values",
    "export": "A checkpoint written by",
    "sweep": "Run only matching cells",
    "backbones": "Presets to list",
}


def tool_args(name: str, tmp_path: Path) -> list[str]:
    """A command line of each tool command, in today's spelling."""
    if name == "analyze":  # no --config: the run's config.yaml gives the data
        run = tmp_path / "run"
        (run / "checkpoints").mkdir(parents=True, exist_ok=True)
        (run / "config.yaml").write_text(yaml.safe_dump({"data": {"image_size": 16}}))
        ckpt = str(run / "checkpoints/last.ckpt")
        return ["--ckpt", ckpt, "--ckpt", ckpt, "--output", "o", "--shots", "1", "5",
                "--data.batch_size", "4"]  # fmt: skip
    if name == "export":
        return ["--ckpt", "a.ckpt", "--output", "o"]
    if name == "sweep":
        return ["grid.yaml", "--output-dir", "o", "--dry-run", "--", "--trainer.max_steps", "2"]
    return ["--image-size", "32", "--names", "vit_tiny", "mixer_tiny"]


def comparable(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The called arguments, with the data module as its settings and the CLI parser (that
    ``sweep`` gets) as its class."""
    if "cli_parser" in kwargs:
        kwargs = {**kwargs, "cli_parser": type(kwargs["cli_parser"]).__name__}
    data = kwargs.get("data")
    if data is not None:
        kwargs = {**kwargs, "data": (type(data).__name__, data.image_size, data.batch_size)}
    return kwargs


@pytest.fixture
def calls(monkeypatch) -> list[dict[str, Any]]:
    """Records each tool command's call instead of running it."""
    recorded: list[dict[str, Any]] = []
    for name, tool in TOOL_COMMANDS.items():

        @functools.wraps(tool.function)
        def record(**kwargs: Any) -> None:
            recorded.append(comparable(kwargs))

        monkeypatch.setitem(TOOL_COMMANDS, name, dataclasses.replace(tool, function=record))
    return recorded


def test_help_lists_the_eight_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert [c for c in COMMANDS if f"\n    {c} " in out] == list(COMMANDS)


@pytest.mark.parametrize("name", list(HELP_LINES))
def test_help_shows_the_parameters_docs(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main([name, "--help"])
    assert exit_info.value.code == 0
    assert HELP_LINES[name] in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("name", list(HELP_LINES))
def test_a_typo_is_an_error_naming_the_key(name, tmp_path, capsys, calls):
    with pytest.raises(SystemExit) as exit_info:
        cli_main([name, "--outptu_dir", "x", *tool_args(name, tmp_path)])
    assert exit_info.value.code == 2 and "outptu_dir" in capsys.readouterr().err
    assert calls == []


@pytest.mark.parametrize("name", list(HELP_LINES))
def test_print_config_gives_a_config_that_runs_the_same_command(name, tmp_path, capsys, calls):
    args = tool_args(name, tmp_path)
    cli_main([name, *args])
    with pytest.raises(SystemExit) as exit_info:
        cli_main([name, "--print_config", *args])  # before the `--` of sweep
    assert exit_info.value.code == 0
    config = tmp_path / "printed.yaml"
    config.write_text(capsys.readouterr().out)
    cli_main([name, "--config", str(config)])
    assert len(calls) == 2 and calls[1] == calls[0]
    expected = {  # today's spellings reach the function
        "analyze": {"shots": (1, 5), "data": ("SSLDataModule", 16, 4)},
        "export": {"ckpt": "a.ckpt", "output": "o"},
        "sweep": {
            "output_dir": "o",
            "dry_run": True,
            "extra_args": ["--trainer.max_steps", "2"],
            "cli_parser": "SSLBiasesArgumentParser",  # checks each cell's arguments
        },
        "backbones": {"names": ["vit_tiny", "mixer_tiny"], "image_size": 32},
    }[name]
    assert {key: calls[0][key] for key in expected} == expected


def test_backbones_runs_from_a_config_file(tmp_path, capsys):
    config = tmp_path / "b.yaml"
    config.write_text(yaml.safe_dump({"names": ["vit_tiny"], "image_size": 16}))
    cli_main(["backbones", "--config", str(config)])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| vit")]
    assert len(rows) == 1 and rows[0].split(" | ")[2] == "16"  # the image_size column


def test_a_tool_commands_user_error_is_one_line_and_exit_2(monkeypatch, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["backbones", "--names", "nope"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("ssl-biases: error: unknown backbone")
    assert "Traceback" not in err
    monkeypatch.setenv(DEBUG_ENV, "1")
    with pytest.raises(ValueError, match="unknown backbone 'nope'"):
        main(["backbones", "--names", "nope"])


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["analyze", "--ckpt", "a", "--ckpt=b", "--label", "x", "--shots", "1", "5",
             "--seeds", "0", "--data.root", "r", "--shots=[2]", "--seeds", "[1,2]"],
            ["analyze", "--ckpt+", "a", "--ckpt+", "b", "--label+", "x", "--shots=[1, 5]",
             "--seeds=[0]", "--data.root", "r", "--shots=[2]", "--seeds", "[1,2]"],
        ),
        (
            ["sweep", "grid.yaml", "--output-dir", "o", "--only", "a=b", "--only=c=d",
             "--dry-run", "--collect-only", "--launcher", "submitit",
             "--", "--trainer.max_epochs", "2", "--only", "x"],
            ["sweep", "grid.yaml", "--output_dir", "o", "--only+", "a=b", "--only+", "c=d",
             "--dry_run=true", "--collect_only=true", "--launcher", "submitit",
             '--extra_args=["--trainer.max_epochs", "2", "--only", "x"]'],
        ),
        (["sweep", "g.yaml", "--output-dir=o"], ["sweep", "g.yaml", "--output_dir", "o"]),
        (
            ["backbones", "--image-size", "32", "--names", "a", "timm:b", "--image-size=8",
             "--names", "[c]"],
            ["backbones", "--image_size", "32", '--names=["a", "timm:b"]', "--image_size", "8",
             "--names", "[c]"],
        ),
        (["fit", "--only", "a", "--image-size", "3"], ["fit", "--only", "a", "--image-size", "3"]),
    ],
)  # fmt: skip
def test_earlier_spelling_becomes_jsonargparse_spelling(argv, expected):
    assert legacy_args(argv) == expected
