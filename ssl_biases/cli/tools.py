"""The tool commands beside Lightning's fit/validate/test/predict: ``analyze``, ``export``,
``sweep``, ``backbones``.

Each is a typed function (jsonargparse reads its signature and docstring, so ``--config``,
``--print_config``, ``--help`` and typo errors work as for ``fit``) with its module's
``build_parser()``. The spellings these commands had before they joined the parser keep
working: each command's :class:`Spelling` says how they read in jsonargparse's
(:func:`jsonargparse_spelling`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from jsonargparse import ActionSubCommands, ArgumentParser, Namespace

from ssl_biases.analysis import command as analyze_command
from ssl_biases.backbones import summary
from ssl_biases.experiments import sweep
from ssl_biases.run import export


@dataclass(frozen=True)
class Spelling:
    """How a tool command's earlier (argparse) spelling reads in jsonargparse's.

    Attributes:
        renames: Option -> its jsonargparse spelling (``--output-dir`` -> ``--output_dir``;
            ``--ckpt`` -> ``--ckpt+``, which appends; ``--dry-run`` -> ``--dry_run=true``);
            the option's value, if any, follows unchanged.
        lists: Options that take the values up to the next option (``--shots 1 5``), given
            as one JSON list (``--shots=[1, 5]``); a value given as a list passes unchanged.
        rest: The option that takes the arguments after ``--`` as a JSON list, if any.
    """

    renames: Mapping[str, str] = field(default_factory=dict)
    lists: frozenset[str] = frozenset()
    rest: str | None = None


def _value(text: str) -> Any:
    """``"5"`` -> 5, ``"0.5"`` -> 0.5; any other text stays a string."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, int | float) and not isinstance(value, bool) else text


def jsonargparse_spelling(argv: list[str], spelling: Spelling) -> list[str]:
    """A tool command's arguments (without its name) in jsonargparse's spelling."""
    rest: list[str] | None = None
    if spelling.rest is not None and "--" in argv:
        argv, rest = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    out, i = [], 0
    while i < len(argv):
        key, eq, value = argv[i].partition("=")
        following = argv[i + 1] if i + 1 < len(argv) else ""
        if key in spelling.renames:
            out += [spelling.renames[key], *([value] if eq else [])]
        elif key in spelling.lists and not eq and not following.startswith("["):
            values = []
            while i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                values.append(_value(argv[i + 1]))
                i += 1
            out.append(f"{key}={json.dumps(values)}")
        else:
            out.append(argv[i])
        i += 1
    return out if rest is None else [*out, f"{spelling.rest}={json.dumps(rest)}"]


@dataclass(frozen=True)
class ToolCommand:
    """One tool command: its function, parser and earlier spelling.

    Attributes:
        function: The command as a typed function.
        build_parser: Its jsonargparse parser (``--config`` + the function's arguments).
        spelling: Its earlier command line in jsonargparse's terms.
        run_defaults: Defaults taken from the parsed config when no ``--config`` is given
            (``analyze``: the data section of the first run's config.yaml).
        cli_parser_argument: The function's keyword that gets the CLI's own parser, which
            then raises instead of exiting (``sweep`` checks each cell's arguments with it).
    """

    function: Callable[..., Any]
    build_parser: Callable[[], ArgumentParser]
    spelling: Spelling = Spelling()
    run_defaults: Callable[[Namespace], dict[str, Any]] | None = None
    cli_parser_argument: str | None = None

    @property
    def help(self) -> str:
        """The first line of the function's docstring."""
        return ((self.function.__doc__ or "").strip().splitlines() or [""])[0]


TOOL_COMMANDS: dict[str, ToolCommand] = {
    "analyze": ToolCommand(
        analyze_command.analyze,
        analyze_command.build_parser,
        Spelling({"--ckpt": "--ckpt+", "--label": "--label+"}, frozenset({"--shots", "--seeds"})),
        run_defaults=analyze_command.run_defaults,
    ),
    "export": ToolCommand(export.export, export.build_parser),
    "sweep": ToolCommand(
        sweep.sweep,
        sweep.build_parser,
        Spelling(
            {
                "--output-dir": "--output_dir",
                "--only": "--only+",
                "--dry-run": "--dry_run=true",
                "--collect-only": "--collect_only=true",
            },
            rest="--extra_args",
        ),
        cli_parser_argument="cli_parser",
    ),
    "backbones": ToolCommand(
        summary.backbones,
        summary.build_parser,
        Spelling({"--image-size": "--image_size"}, frozenset({"--names"})),
    ),
}


def add_tool_commands(subcommands: ActionSubCommands | None) -> dict[str, ArgumentParser]:
    """Adds the tool commands to the CLI's ``subcommands`` (none: LightningCLI's ``run=False``).

    Returns:
        The tool commands' parsers, by name.
    """
    parsers = {name: tool.build_parser() for name, tool in TOOL_COMMANDS.items()}
    for name, tool_parser in parsers.items():
        if subcommands is not None:
            subcommands.add_subcommand(name, tool_parser, help=TOOL_COMMANDS[name].help)
    return parsers


def tool_command_line(args: Any, argv: list[str]) -> list[str] | None:
    """The command line (LightningCLI's ``args``, else ``argv``) if it runs a tool command."""
    line = list(argv if args is None else args) if isinstance(args, list | None) else []
    return line if line and line[0] in TOOL_COMMANDS else None


def legacy_args(argv: list[str]) -> list[str]:
    """``argv`` with a tool command's arguments in jsonargparse's spelling."""
    if argv and argv[0] in TOOL_COMMANDS:
        return [argv[0], *jsonargparse_spelling(argv[1:], TOOL_COMMANDS[argv[0]].spelling)]
    return argv


def gives_config(argv: list[str]) -> bool:
    """Whether a command line passes ``--config``."""
    return any(a in ("-c", "--config") or a.startswith("--config=") for a in argv)


def raising(parser: ArgumentParser) -> ArgumentParser:
    """``parser``, with its subcommands' parsers, raising ``ArgumentError`` instead of exiting."""
    subcommands = getattr(parser, "_subcommands_action", None)
    for each in [parser, *(subcommands.choices.values() if subcommands else [])]:
        each.exit_on_error = False
    return parser


def run_tool_command(
    parser: ArgumentParser, tool_parsers: dict[str, ArgumentParser], argv: list[str]
) -> Namespace:
    """Parses ``argv`` (a tool command, either spelling) with the CLI's parser; runs it.

    Returns:
        The parsed config.
    """
    name, argv = argv[0], legacy_args(argv)
    tool = TOOL_COMMANDS[name]
    if tool.run_defaults is not None and not gives_config(argv[1:]):  # before --print_config
        first = parser.parse_args([a for a in argv if not a.startswith("--print_config")])
        tool_parsers[name].set_defaults(tool.run_defaults(first[name]))
    config = parser.parse_args(argv)
    init = parser.instantiate_classes(config)[name]
    arguments = {key: value for key, value in vars(init).items() if key != "config"}
    if tool.cli_parser_argument is not None:
        arguments[tool.cli_parser_argument] = raising(parser)
    tool.function(**arguments)
    return config
