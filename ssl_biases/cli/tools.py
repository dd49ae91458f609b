"""The tool commands beside Lightning's fit/validate/test/predict: ``analyze``, ``export``,
``sweep``, ``backbones``.

Each is a typed function (jsonargparse reads its signature and docstring, so ``--config``,
``--print_config``, ``--help`` and typo errors work as for ``fit``) with its module's
``build_parser()``, and, where today's spelling differs from jsonargparse's (``--ckpt A --ckpt
B``, ``--shots 1 5``, ``--output-dir``, ``--names a b``, arguments after ``--``), a
``jsonargparse_args(argv)`` converter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jsonargparse import ActionSubCommands, ArgumentParser, Namespace

from ssl_biases.analysis import command as analyze_command
from ssl_biases.backbones import summary
from ssl_biases.experiments import sweep
from ssl_biases.run import export


@dataclass(frozen=True)
class ToolCommand:
    """One tool command: its function, parser and today's spelling.

    Attributes:
        function: The command as a typed function.
        build_parser: Its jsonargparse parser (``--config`` + the function's arguments).
        legacy_args: Today's command line -> jsonargparse's.
        run_defaults: Defaults taken from the parsed config when no ``--config`` is given
            (``analyze``: the data section of the first run's config.yaml).
    """

    function: Callable[..., Any]
    build_parser: Callable[[], ArgumentParser]
    legacy_args: Callable[[list[str]], list[str]] = list
    run_defaults: Callable[[Namespace], dict[str, Any]] | None = None

    @property
    def help(self) -> str:
        """The first line of the function's docstring."""
        return ((self.function.__doc__ or "").strip().splitlines() or [""])[0]


TOOL_COMMANDS: dict[str, ToolCommand] = {
    "analyze": ToolCommand(
        analyze_command.analyze,
        analyze_command.build_parser,
        analyze_command.jsonargparse_args,
        analyze_command.run_defaults,
    ),
    "export": ToolCommand(export.export, export.build_parser),
    "sweep": ToolCommand(sweep.sweep, sweep.build_parser, sweep.jsonargparse_args),
    "backbones": ToolCommand(summary.backbones, summary.build_parser, summary.jsonargparse_args),
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


def legacy_args(argv: list[str]) -> list[str]:
    """``argv`` with a tool command's arguments in jsonargparse's spelling."""
    if argv and argv[0] in TOOL_COMMANDS:
        return [argv[0], *TOOL_COMMANDS[argv[0]].legacy_args(argv[1:])]
    return argv


def gives_config(argv: list[str]) -> bool:
    """Whether a command line passes ``--config``."""
    return any(a in ("-c", "--config") or a.startswith("--config=") for a in argv)


def run_tool_command(
    parser: ArgumentParser, tool_parsers: dict[str, ArgumentParser], argv: list[str]
) -> Namespace:
    """Parses ``argv`` (a tool command, today's spelling) with the CLI's parser; runs it.

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
    tool.function(**{key: value for key, value in vars(init).items() if key != "config"})
    return config
