"""The `ssl-biases` command: one LightningCLI parser for fit/validate/test/predict and the tool
commands analyze/export/sweep/backbones (``ssl_biases.cli.tools``).

Configs stack (``--config`` several times) and any knob can be overridden on the command line.
What a run writes and how it resumes is the run room's (``ssl_biases.run``); a user error exits
2 with its message (``ssl_biases.cli.errors``).
"""

from __future__ import annotations

import sys
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from ssl_biases.analysis.tensorboard import TensorBoardSummaries
from ssl_biases.cli.errors import DEBUG_ENV, exit_on_user_error
from ssl_biases.cli.parser import SSLBiasesArgumentParser
from ssl_biases.cli.tools import add_tool_commands, raising, run_tool_command, tool_command_line
from ssl_biases.data.datamodule import SSLDataModule
from ssl_biases.methods.base import SSLMethod
from ssl_biases.probes import callbacks as probes
from ssl_biases.run import callbacks as lifecycle
from ssl_biases.run.resume import check_ckpt_path, check_resume_checkpoint, place_run_dir

__all__ = ["DEBUG_ENV", "SSLBiasesCLI", "cli_main", "cli_parser", "main"]

CALLBACK_SECTIONS = {  # the checkpoints after the probes whose metric they rank by
    **probes.CALLBACK_SECTIONS,
    "tensorboard": TensorBoardSummaries,
    **lifecycle.CALLBACK_SECTIONS,
}


class _CommandDone(Exception):  # noqa: N818 (a signal, not an error)
    """Ends LightningCLI's __init__ from its public parse_arguments hook: a tool command ran
    (LightningCLI would seed, build a model and trainer and run a Trainer method)."""


class SSLBiasesCLI(LightningCLI):
    """LightningCLI with the project's defaults: probes, checkpoints, TensorBoard + CSV, and
    the run's life (``ssl_biases.run``: status, resume, faults) on every trainer."""

    def __init__(self, args: list[str] | None = None, run: bool = True) -> None:
        try:
            super().__init__(
                SSLMethod,
                SSLDataModule,
                subclass_mode_model=True,
                seed_everything_default=0,
                parser_class=SSLBiasesArgumentParser,
                trainer_defaults=lifecycle.trainer_defaults(),
                args=args,
                run=run,
            )
        except _CommandDone:  # LightningCLI has nothing left to run
            pass

    def setup_parser(
        self, add_subcommands: bool, main_kwargs: dict[str, Any], subparser_kwargs: dict[str, Any]
    ) -> None:
        """Lightning's parser, plus the tool commands as subcommands beside fit/.../predict."""
        super().setup_parser(add_subcommands, main_kwargs, subparser_kwargs)
        self.tool_parsers = add_tool_commands(self.parser.subcommands_action)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for section, callback in CALLBACK_SECTIONS.items():
            parser.add_lightning_class_args(callback, section)
        parser.set_defaults(lifecycle.SECTION_DEFAULTS)
        # The image size is stated once, in the data config.
        parser.link_arguments("data.image_size", "model.init_args.backbone.init_args.image_size")
        parser.link_arguments(
            "data.num_classes", "model.init_args.training.num_classes", apply_on="instantiate"
        )

    def _subcommand_config(self) -> Any:
        return self.config[self.subcommand] if self.subcommand else self.config

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Runs a tool command here (no seed, model or trainer: LightningCLI stops); else parses
        and fails clearly on a ``--ckpt_path`` that is missing or no checkpoint (before
        LightningCLI reads the file's hyperparameters with a bare ``torch.load``)."""
        tool_command = tool_command_line(args, sys.argv[1:])
        if tool_command is not None:
            self.subcommand = tool_command[0]
            self.config = run_tool_command(parser, self.tool_parsers, tool_command)
            raise _CommandDone
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        check_ckpt_path(self.config[subcommand].get("ckpt_path") if subcommand else None)

    def before_instantiate_classes(self) -> None:
        """Where the run writes: the loggers' ``save_dir`` and, for ``fit --ckpt_path last``,
        the run directory to continue, which keeps its first ``config.yaml``."""
        filename = place_run_dir(self._subcommand_config(), self.subcommand)
        if filename is not None:
            self.save_config_kwargs = {**self.save_config_kwargs, "config_filename": filename}

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        """The trainer with a progress bar, atomic checkpoint files, the time-budget epoch
        bound, ``metrics.csv`` and a noted run directory (``ssl_biases.run.callbacks``)."""
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        trainer_arguments = lifecycle.trainer_arguments(config.get("trainer"))
        trainer = super().instantiate_trainer(**{**trainer_arguments, **kwargs})
        lifecycle.equip_trainer(trainer, metrics_csv=self.subcommand in ("fit", "validate", "test"))
        return trainer

    def after_instantiate_classes(self) -> None:
        """Remembers the backbone's config (for checkpoints); refuses a ``--ckpt_path`` of
        another architecture, naming the shapes that differ."""
        config = self._subcommand_config()
        lifecycle.remember_backbone_config(self.model, config.get("model.init_args.backbone"))
        if self.subcommand is not None:
            check_resume_checkpoint(self.model, config.get("ckpt_path"), self.trainer)

    def after_fit(self) -> None:
        lifecycle.finish_fit(self.trainer, self.model, self.datamodule)


class _ParserOnly(SSLBiasesCLI):
    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        raise _CommandDone  # the parser is built: nothing to parse or run


def cli_parser() -> LightningArgumentParser:
    """The ``ssl-biases`` parser, built without parsing or running; errors raise
    ``jsonargparse.ArgumentError`` instead of exiting."""
    return raising(_ParserOnly(args=[]).parser)


def cli_main(args: list[str] | None = None) -> SSLBiasesCLI:
    """Runs a subcommand (``fit``, ..., ``predict``, or a tool command such as ``analyze``)."""
    return SSLBiasesCLI(args=args)


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``ssl-biases`` console script (user errors: ``cli.errors``)."""
    with exit_on_user_error():
        cli_main(args)  # None: LightningCLI reads sys.argv itself
        lifecycle.release_process_group()


if __name__ == "__main__":
    main()
