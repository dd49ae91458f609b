"""The README is a short front door whose every shell command runs as written.

Every command in the README's shell code blocks is dry-run: ``ssl-biases ...`` is parsed by
the CLI's own parser (types, unknown options, unknown classes, every ``--config`` file read),
``make ...`` runs as ``make -n``, and a ``tensorboard`` command needs the installed script.
Nothing trains, so the whole file takes a few seconds.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from jsonargparse import ArgumentParser

from ssl_biases.cli import cli_parser
from ssl_biases.cli.tools import legacy_args

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_LINES = 200
SHELL_BLOCK = re.compile(r"^```(bash|sh|shell)?\n(.*?)^```", re.MULTILINE | re.DOTALL)


def shell_commands(markdown: str) -> list[list[str]]:
    """The commands of the shell code blocks (untagged or bash/sh/shell), as argv lists."""
    commands = []
    for _, block in SHELL_BLOCK.findall(markdown):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if argv:
                commands.append(argv)
    return commands


def config_files(argv: list[str]) -> list[Path]:
    """The files a command reads: every ``--config`` value and a sweep's experiment YAML."""
    files = [argv[i + 1] for i, token in enumerate(argv[:-1]) if token in ("--config", "-c")]
    if argv[:2] == ["ssl-biases", "sweep"]:
        files.append(argv[2])
    return [ROOT / f for f in files]


def check_command(argv: list[str], parser: ArgumentParser) -> None:
    """Dry-runs one README command; raises (AssertionError, ArgumentError) if it would fail."""
    program, args = argv[0], argv[1:]
    missing = [str(f.relative_to(ROOT)) for f in config_files(argv) if not f.is_file()]
    assert not missing, f"{shlex.join(argv)}: no such config file {missing}"
    if program == "ssl-biases":
        parser.parse_args(legacy_args(args))  # raises ArgumentError on any mistake
    elif program == "make":
        done = subprocess.run(["make", "-n", *args], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, f"{shlex.join(argv)}: {done.stderr}"
    elif program == "tensorboard":
        assert (Path(sys.executable).parent / program).is_file(), "tensorboard is not installed"
        assert args[:1] == ["--logdir"] and len(args) == 2, shlex.join(argv)
    else:
        raise AssertionError(f"{shlex.join(argv)}: add a dry-run for {program!r} to this test")


@pytest.fixture(scope="module")
def parser() -> ArgumentParser:
    return cli_parser()


def test_the_readme_is_a_short_front_door():
    text = README.read_text()
    assert len(text.splitlines()) <= MAX_LINES
    sections = re.findall(r"^## (.+)$", text, re.MULTILINE)
    assert sections[:3] == ["Start here", "Quick start on CIFAR-10", "Your own images"]
    assert {"Commands", "Methods", "Backbones", "GPU", "Findings", "Documentation"} <= set(sections)


def test_every_docs_file_is_linked_and_every_link_resolves():
    text = README.read_text()
    links = set(re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text))
    local = {link for link in links if not link.startswith("http")}
    assert not [link for link in local if not (ROOT / link).exists()]
    docs = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
    assert docs <= local, f"link these from the README: {sorted(docs - local)}"


def test_every_readme_command_runs_as_written(parser, monkeypatch):
    monkeypatch.chdir(ROOT)  # the README's paths are relative to the repository
    commands = shell_commands(README.read_text())
    programs = {argv[0] for argv in commands}
    assert {"make", "ssl-biases"} <= programs and len(commands) >= 8
    tools = {argv[1] for argv in commands if argv[0] == "ssl-biases"}
    assert {"fit", "validate", "export", "sweep", "backbones"} <= tools
    for argv in commands:
        check_command(argv, parser)


@pytest.mark.parametrize(
    "line, error",
    [
        ("ssl-biases fit --config configs/method/simclr.yaml --data.batch_sise 8", "batch_sise"),
        ("ssl-biases export --ckpt a.ckpt --output out --format tflite", "tflite"),
        ("ssl-biases fit --config configs/method/nope.yaml", "no such config file"),
        ("make fitt", "fitt"),
        ("pip install ssl-biases", "add a dry-run"),
    ],
)
def test_the_dry_run_catches_a_broken_command(line, error, parser, monkeypatch):
    monkeypatch.chdir(ROOT)
    (argv,) = shell_commands(f"```bash\n{line}\n```\n")
    with pytest.raises(Exception, match=error):
        check_command(argv, parser)
