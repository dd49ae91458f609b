"""The ``ssl-biases`` parser: error hints, and the subcommands action kept for the tool commands.

Every config it reads (a ``--config`` file, a checkpoint's hyperparameters) passes through
:func:`ssl_biases.run.legacy.migrate_config`, so a run written by an earlier version still fits.

An unknown method or backbone class gets the list of known ones; a ``--config`` file that is no
valid YAML is named.
"""

from __future__ import annotations

import os
from typing import Any, NoReturn

import yaml
from jsonargparse import ActionSubCommands, get_loader
from lightning.pytorch.cli import LightningArgumentParser

from ssl_biases.run.legacy import migrate_config


def known_names_hint(message: str) -> str:
    """The known backbone classes or methods, for a parser error about an unknown class."""
    unknown = ("has no attribute", "Expected a dot import path", "No module named")
    if not any(key in message for key in unknown):
        return ""
    if "backbone" in message:
        import ssl_biases.backbones as package

        kind, extra = "backbones", " (registry presets: `ssl-biases backbones`)"
    elif "model" in message or "ssl_biases.methods" in message:
        import ssl_biases.methods as package

        kind, extra = "methods", ""
    else:
        return ""
    names = [
        f"{package.__name__}.{name}"
        for name in package.__all__
        if isinstance(getattr(package, name), type) and name != "SSLMethod"
    ]
    return f"\nKnown {kind}: {', '.join(names)}{extra}."


class SSLBiasesArgumentParser(LightningArgumentParser):
    """The CLI's parser: error hints, and ``subcommands_action`` (the action that
    LightningCLI adds fit/validate/test/predict to) for adding the tool commands beside them."""

    config_file: str | None = None  # the --config file being parsed
    subcommands_action: ActionSubCommands | None = None

    def add_subcommands(self, *args: Any, **kwargs: Any) -> ActionSubCommands:
        self.subcommands_action = super().add_subcommands(*args, **kwargs)
        return self.subcommands_action

    def parse_path(self, path: Any, *args: Any, **kwargs: Any) -> Any:
        previous, self.config_file = self.config_file, os.path.abspath(os.fspath(path))
        try:
            return super().parse_path(path, *args, **kwargs)
        finally:
            self.config_file = previous

    def parse_string(self, content: str, *args: Any, **kwargs: Any) -> Any:
        """A config file; one written by an earlier version is read in the current shape."""
        try:
            loaded = get_loader(self.parser_mode)(content)
        except Exception:  # not valid YAML: the parser's own error names the file
            loaded = None
        if isinstance(loaded, dict) and (migrated := migrate_config(loaded)) != loaded:
            content = yaml.safe_dump(migrated, sort_keys=False)
        return super().parse_string(content, *args, **kwargs)

    def parse_object(self, obj: Any, *args: Any, **kwargs: Any) -> Any:
        """A config object (a checkpoint's hyperparameters, on ``--ckpt_path``), migrated."""
        obj = migrate_config(obj) if isinstance(obj, dict) else obj
        return super().parse_object(obj, *args, **kwargs)

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if self.config_file and message.startswith("Problems parsing config"):
            message = f"config file {self.config_file} is not valid YAML: {message}"
        super().error(message + known_names_hint(message), ex)
