"""``ssl-biases analyze``: the report and figures of one or more trained backbones, on disk.

``ssl-biases analyze --ckpt RUN/checkpoints/last.ckpt [--ckpt OTHER.ckpt] --config
configs/data/cifar10.yaml [--data.root PATH ...] --output DIR [--tensorboard RUN]`` computes
the report (:func:`ssl_biases.analysis.report.build_report`) on the data module the data
options give (without ``--config``, the data section of the first run's ``config.yaml``, with
any ``--data.*`` on top), writes ``DIR/report.json`` and the PNG figures
(:data:`ssl_biases.analysis.figures.FIGURES`) and, with ``--tensorboard RUN``, the same
figures as TensorBoard events in ``RUN`` at the checkpoint's global step.

:func:`analyze` is the command as a typed function (jsonargparse reads its signature and
docstring: ``--config``, ``--help`` and typo errors as for ``fit``); :func:`run_defaults` gives
the run's data. The earlier spelling (``--ckpt A --ckpt B``, ``--shots 1 5``) still reads:
``ssl_biases.cli.tools``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import ActionConfigFile, ArgumentParser, Namespace

from ssl_biases.analysis.figures import make_figures
from ssl_biases.analysis.report import REPORT_FILE, build_report
from ssl_biases.data.datamodule import SSLDataModule


def run_config_data(ckpt: str | Path) -> dict[str, Any]:
    """The ``data`` section of the ``config.yaml`` of the run that wrote ``ckpt``.

    Raises:
        FileNotFoundError: the checkpoint is not inside a run directory with a ``config.yaml``.
    """
    run_config = Path(ckpt).resolve().parent.parent / "config.yaml"
    if not run_config.is_file():
        raise FileNotFoundError(
            f"no --config given and no {run_config}: pass the data config, e.g. "
            "--config configs/data/cifar10.yaml --data.root PATH"
        )
    return (yaml.safe_load(run_config.read_text()) or {}).get("data") or {}


def run_data(ckpt: str | Path) -> SSLDataModule:
    """The data module of the run that wrote ``ckpt``, through ``SSLDataModule``'s signature."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--data", type=SSLDataModule)
    config = parser.parse_object({"data": run_config_data(ckpt)})
    return parser.instantiate(config).data


def run_analysis(
    ckpts: list[str],
    data: SSLDataModule | dict[str, Any],
    output: str | Path,
    labels: list[str] | None = None,
    tensorboard: str | Path | None = None,
    shots: tuple[int, ...] = (1, 5, 10, 25),
    seeds: tuple[int, ...] = (0, 1, 2),
) -> dict[str, Any]:
    """Analyse checkpoints on ``data``'s probe loaders; write the report and figures.

    Args:
        ckpts: checkpoints written by ``ssl-biases fit``.
        data: the data module, or its ``SSLDataModule`` arguments.
        output: folder for ``report.json`` and the PNG figures.
        labels: one name per checkpoint (default: the method's class name, else the file stem).
        tensorboard: folder for TensorBoard events of the figures (none when ``None``).
        shots: few-shot K values.
        seeds: few-shot seeds.

    Returns:
        The report (also written to ``output/report.json``).
    """
    data = SSLDataModule(**data) if isinstance(data, dict) else data
    report, arrays = build_report(ckpts, data, labels, tuple(shots), tuple(seeds))
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    (output / REPORT_FILE).write_text(json.dumps(report, indent=1) + "\n")
    figures = make_figures(report, arrays)
    writer = None
    if tensorboard is not None:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(tensorboard))
    step = max(m["global_step"] for m in report["models"].values())
    for name, fig in figures.items():
        fig.savefig(output / name, dpi=110)
        if writer is not None:
            writer.add_figure(f"analysis/{name.removesuffix('.png')}", fig, step, close=False)
    if writer is not None:
        writer.close()
    return report


def analyze(
    ckpt: list[str],
    output: str,
    label: list[str] | None = None,
    tensorboard: str | None = None,
    shots: tuple[int, ...] = (1, 5, 10, 25),
    seeds: tuple[int, ...] = (0, 1, 2),
    data: SSLDataModule | None = None,
) -> None:
    """Probes and analyses of trained backbones: report.json + PNG figures.

    Prints one line of headline numbers per model and the report's path.

    Args:
        ckpt: Checkpoints written by ``ssl-biases fit`` (one or more).
        output: Folder for report.json and the PNG figures.
        label: Name of each checkpoint in the report (default: the method's class name).
        tensorboard: Also write the figures as TensorBoard events in this folder.
        shots: Few-shot K values (skipped beyond the rarest bank class).
        seeds: Few-shot support draws.
        data: Data options, those of ``ssl-biases fit`` (a data config, ``--data.KEY VALUE``);
            default: the data section of the first run's config.yaml.
    """
    data = run_data(ckpt[0]) if data is None else data
    report = run_analysis(ckpt, data, output, label, tensorboard, shots, seeds)
    for name, m in report["models"].items():
        shuffle = m["shuffle"]
        print(
            f"{name}: knn_top1 {m['knn_top1']:.4f}  offline_linear "
            f"{m['offline_linear_top1']:.4f}  best block {m['layerwise_best_block']}  "
            f"patch-shuffle drop {shuffle['patch']['drop']:.4f}  "
            f"pixel-shuffle drop {shuffle['pixel']['drop']:.4f}"
        )
    print(f"Report: {Path(output) / REPORT_FILE}")


def build_parser() -> ArgumentParser:
    """``analyze``'s jsonargparse parser, with ``--config``."""
    parser = ArgumentParser(
        prog="ssl-biases analyze",
        description="Probes and analyses of trained backbones: report.json + PNG figures. "
        "Data options (--config DATA.yaml, --data.KEY VALUE) are those of `ssl-biases fit`; "
        "without --config the first run's config.yaml gives the data.",
    )
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_function_arguments(analyze, as_group=False)
    return parser


def run_defaults(config: Namespace) -> dict[str, Any]:
    """Defaults for a command line without ``--config``: the data section of the first run's
    ``config.yaml``, which ``--data.*`` options override."""
    return {"data": run_config_data(config.ckpt[0])}
