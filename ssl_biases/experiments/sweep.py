"""``ssl-biases sweep EXPERIMENT.yaml``: run a grid of ``fit`` runs, resumably, then collect.

Every cell (see :mod:`ssl_biases.experiments.grid`) is an ordinary ``ssl-biases fit`` in its own
process, so one cell that crashes does not take the sweep with it. A cell's directory is
``<output_dir>/<cell id>/`` and holds ``cell.yaml`` (the cell and its command), ``fit.log``,
Lightning's ``version_<n>/`` run directories (resolved ``config.yaml``, ``checkpoints/``,
TensorBoard events, ``metrics.csv``) and, written only after the fit exited cleanly,
``status.json`` with ``"status": "completed"`` (the completion marker of runs too:
:mod:`ssl_biases.run.status`; a cell finished before it has ``done.json``, which counts as
well). On a re-run, completed cells are skipped and a cell with a ``last.ckpt`` but no
completed status resumes from it (``--ckpt_path``).

A cell is keyed by its settings, not only by its labels: ``cell.yaml`` records the command
line and a SHA-256 of every config file it stacks, and a re-run (or ``--collect-only``) whose
grid now gives a cell other arguments or changed config files refuses, naming the changes,
rather than mixing two settings in one table. Before the first cell starts, the whole file is
checked: the ``report`` section, ``--only`` labels, and every cell's arguments through the
CLI's own parser (types, unknown keys, unknown classes), without building anything.

Launchers: ``local`` runs the cells one after another in this process (the default);
``submitit`` submits them as one Slurm job array through submitit's ``AutoExecutor``
(``--cluster local`` / ``debug`` run that path on one machine). With ``tasks_per_node`` =
``gpus_per_node`` > 1 every cell is a multi-GPU DDP run: Lightning reads the Slurm task
environment that each task's fit inherits.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Literal

import yaml
from jsonargparse import ActionConfigFile, ArgumentError, ArgumentParser

from ssl_biases.experiments.grid import (
    Cell,
    Experiment,
    check_configs,
    format_cli_value,
    load_experiment,
    select_cells,
)
from ssl_biases.experiments.results import check_report, collect_results, write_report
from ssl_biases.run.status import (
    COMPLETED,
    STATUS_FILE,
    is_completed,
    read_run_status,
    running_pid,
    write_run_status,
)

CELL_FILE = "cell.yaml"
"""A cell's record: its id, labels, command line and config digests (see ``cell_settings``)."""

LOGGER_FILE = "logger.yaml"
"""The logger config a cell's command stacks last (it points into the cell directory)."""


def last_checkpoint(run_dir: Path) -> Path | None:
    """The newest ``version_*/checkpoints/last.ckpt`` under a cell directory, if any."""
    checkpoints = list(run_dir.glob("version_*/checkpoints/last.ckpt"))
    return max(checkpoints, key=lambda p: p.stat().st_mtime) if checkpoints else None


def logger_config(run_dir: Path, version: int | None = None) -> dict[str, Any]:
    """Trainer logger config that puts Lightning's ``version_<n>/`` inside the cell directory
    (``version``: continue that one, as a resume does, instead of a new one)."""
    init_args: dict[str, Any] = {"save_dir": str(run_dir), "name": "", "default_hp_metric": False}
    if version is not None:
        init_args["version"] = version
    return {
        "trainer": {
            "logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": init_args,
            }
        }
    }


def fit_command(
    cell: Cell,
    run_dir: Path,
    extra_args: list[str],
    ckpt_path: Path | str | None = None,
    subcommand: str = "fit",
) -> list[str]:
    """The ``python -m ssl_biases fit ...`` command line of a cell."""
    command = [sys.executable, "-m", "ssl_biases", subcommand]
    for config in cell.configs:
        command += ["--config", config]
    command += ["--config", str(run_dir / LOGGER_FILE)]
    for key, value in cell.args:
        command += [f"--{key}", format_cli_value(value)]
    command += extra_args
    if ckpt_path is not None:
        command += ["--ckpt_path", str(ckpt_path)]
    return command


def cell_settings(command: list[str]) -> list[str]:
    """What decides a cell's result in its command line: the subcommand, configs and args.

    Leaves out the interpreter, the ``-m ssl_biases`` prefix, the cell's own logger config and
    ``--ckpt_path`` (a resume), which differ between runs of the same settings.
    """
    tokens = command[3:]
    kept, i = [], 0
    while i < len(tokens):
        value = tokens[i + 1] if i + 1 < len(tokens) else ""
        logger = tokens[i] == "--config" and Path(value).name == LOGGER_FILE
        if tokens[i] == "--ckpt_path" or logger:
            i += 2
            continue
        kept.append(tokens[i])
        i += 1
    return kept


def config_digests(configs: tuple[str, ...] | list[str]) -> dict[str, str]:
    """SHA-256 of each config file's bytes, by path."""
    return {c: hashlib.sha256(Path(c).read_bytes()).hexdigest() for c in configs}


def _options(settings: list[str]) -> tuple[list[str], dict[str, str]]:
    """``--config`` files in order and the last value of every other ``--key`` of settings."""
    configs, values, i = [], {}, 1  # settings[0] is the subcommand
    while i < len(settings):
        key, value = settings[i], settings[i + 1] if i + 1 < len(settings) else ""
        if value.startswith("--"):  # a flag without a value
            value, i = "", i - 1
        if key == "--config":
            configs.append(value)
        else:
            values[key.removeprefix("--")] = value
        i += 2
    return configs, values


def setting_changes(
    recorded: dict[str, Any], settings: list[str], digests: dict[str, str], exact: bool = True
) -> list[str]:
    """How a cell's recorded run differs from its current settings (empty: the same).

    Args:
        recorded: The cell's ``cell.yaml``: ``command`` and (in newer records) ``config_sha256``.
        settings: ``cell_settings`` of the cell's command now.
        digests: ``config_digests`` of the cell's configs now.
        exact: False when the arguments after ``--`` are not known (``--collect-only``): the
            recorded command may then carry any of them after the grid's own.
    """
    old = cell_settings(recorded.get("command") or [])
    changes = []
    if old != settings and (exact or old[: len(settings)] != settings):
        (old_configs, old_values), (configs, values) = _options(old), _options(settings)
        if old[:1] != settings[:1]:
            changes.append(f"command {old[:1]} -> {settings[:1]}")
        if old_configs != configs:
            changes.append(f"configs {old_configs} -> {configs}")
        for key in dict.fromkeys([*old_values, *values]):
            before, after = old_values.get(key, "(unset)"), values.get(key, "(unset)")
            if before != after:
                changes.append(f"{key}: {before} -> {after}")
        changes = changes or ["the order of the arguments"]
    for path, digest in (recorded.get("config_sha256") or {}).items():
        if path in digests and digests[path] != digest:
            changes.append(f"{path}: contents changed")
    return changes


def check_unchanged(
    experiment: Experiment, extra_args: list[str] | None, exact: bool = True
) -> None:
    """Raises ``ValueError`` when a cell directory holds a run of other settings than the grid's.

    Every cell of the grid with a ``cell.yaml`` is compared (not only ``--only``'s: the report
    collects them all), the arguments after ``--`` included when ``exact``.
    """
    changed: dict[tuple[str, ...], list[str]] = {}
    digests: dict[str, str] = {}
    for cell in experiment.cells():
        run_dir = experiment.output_dir / cell.cell_id
        if not (run_dir / CELL_FILE).is_file():
            continue
        recorded = yaml.safe_load((run_dir / CELL_FILE).read_text()) or {}
        missing = [c for c in cell.configs if c not in digests and Path(c).is_file()]
        digests.update(config_digests(missing))
        settings = cell_settings(
            fit_command(cell, run_dir, list(extra_args or []), None, experiment.command)
        )
        changes = setting_changes(recorded, settings, digests, exact)
        if changes:
            changed.setdefault(tuple(changes), []).append(cell.cell_id)
    if changed:
        lines = [
            f"  {'; '.join(changes)}  ({len(ids)} cells: {', '.join(ids)})"
            for changes, ids in changed.items()
        ]
        raise ValueError(
            f"{experiment.output_dir} holds cells run with other settings than the experiment "
            "file (and the arguments after --) give them now:\n" + "\n".join(lines) + "\n"
            "Their results would mix two settings: delete those cell directories to rerun them, "
            "use another --output-dir, or undo the change."
        )


def check_cell_arguments(
    cells: list[Cell], extra_args: list[str], subcommand: str, cli_parser: ArgumentParser
) -> None:
    """Parses every cell's command line with the CLI's parser; nothing is instantiated.

    Args:
        cli_parser: The ``ssl-biases`` parser, raising ``ArgumentError`` instead of exiting
            (``ssl_biases.cli.tools.cli_parser()``).

    Raises:
        ValueError: naming the cells whose arguments the CLI refuses (an unknown key, a
            value of the wrong type or choice, an unknown class), with the first error.
    """
    failed: dict[str, str] = {}
    verdicts: dict[tuple[str, ...], str | None] = {}  # by settings up to an integer seed
    for cell in cells:
        command = fit_command(cell, Path(cell.cell_id), extra_args, subcommand=subcommand)
        settings = cell_settings(command)
        shape = _seed_blind(settings)
        if shape not in verdicts:
            try:
                cli_parser.parse_args(settings)  # without the cell's logger config
                verdicts[shape] = None
            except ArgumentError as error:
                verdicts[shape] = str(error)
        if verdicts[shape] is not None:
            failed[cell.cell_id] = verdicts[shape]
    if failed:
        first, message = next(iter(failed.items()))
        raise ValueError(
            f"{len(failed)} of {len(cells)} cells have arguments that `ssl-biases "
            f"{subcommand}` refuses: {list(failed)}; fix the experiment file (a typo in "
            f"`args` or an axis `key`?). The error of {first}:\n{message}"
        )


def _seed_blind(settings: list[str]) -> tuple[str, ...]:
    """``settings`` with an integer ``--seed_everything`` value masked.

    Any integer is a valid seed, so cells that differ only in it are accepted or refused
    together: one parse stands for all (a 60-seed floor grid parses its command lines once per
    other setting, not 60 times). A value that is no integer stays, and is parsed on its own.
    """
    masked = list(settings)
    for i, token in enumerate(masked[:-1]):
        if token == "--seed_everything" and re.fullmatch(r"-?\d+", masked[i + 1]):
            masked[i + 1] = "<seed>"
    return tuple(masked)


def _task_rank() -> int:
    """Rank of this task in a multi-task (multi-GPU) Slurm cell; 0 elsewhere."""
    return int(os.environ.get("SLURM_PROCID", os.environ.get("RANK", "0")))


def run_cell(
    cell: Cell,
    run_dir: str | Path,
    extra_args: list[str] | None = None,
    subcommand: str = "fit",
) -> dict[str, Any]:
    """Runs one cell unless it is done; a ``fit`` resumes from the cell's ``last.ckpt``.

    Returns:
        ``{"cell_id", "status"}`` with status ``done`` (already finished), ``finished``,
        or ``failed`` (then ``returncode`` and ``log``).
    """
    run_dir = Path(run_dir)
    if is_completed(run_dir):
        return {"cell_id": cell.cell_id, "status": "done"}
    rank = _task_rank()
    holder = running_pid(run_dir) if rank == 0 else None
    if holder is not None:  # e.g. the cell of a SIGKILLed sweep, still training
        return {
            "cell_id": cell.cell_id,
            "status": "failed",
            "error": f"process {holder} is still training this cell ({run_dir / STATUS_FILE}): "
            f"wait for it to end, or stop it (kill {holder}), then run the sweep again",
        }
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt = last_checkpoint(run_dir) if subcommand == "fit" else None
    version = int(ckpt.parent.parent.name.removeprefix("version_")) if ckpt is not None else None
    (run_dir / LOGGER_FILE).write_text(yaml.safe_dump(logger_config(run_dir, version)))
    # a resume continues the checkpoint's version_<n> in place (--ckpt_path last there)
    resume = "last" if ckpt is not None else None
    command = fit_command(cell, run_dir, list(extra_args or []), resume, subcommand)
    record = {"cell_id": cell.cell_id, "values": cell.values, "command": command}
    record["config_sha256"] = config_digests(cell.configs)
    (run_dir / CELL_FILE).write_text(yaml.safe_dump(record, sort_keys=False))
    start = time.time()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log_path = run_dir / ("fit.log" if rank == 0 else f"fit.rank{rank}.log")
    with open(log_path, "a") as log:
        log.write(f"\n$ {' '.join(command)}\n")
        log.flush()
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        if rank == 0:  # the cell's lock: its training process, until it ends
            write_run_status(run_dir, "running", pid=process.pid, cell_id=cell.cell_id)
        returncode = process.wait()
    wall = time.time() - start
    if returncode != 0:
        record = read_run_status(run_dir) if rank == 0 else None
        if record is not None and record.get("pid") == process.pid:
            (run_dir / STATUS_FILE).unlink()  # the lock goes with its process
        return {
            "cell_id": cell.cell_id,
            "status": "failed",
            "returncode": returncode,
            "log": str(log_path),
        }
    if rank == 0:  # the completion marker, as a run's (``ssl_biases.run.status``)
        resumed_from = str(ckpt) if ckpt is not None else None
        write_run_status(
            run_dir,
            COMPLETED,
            cell_id=cell.cell_id,
            values=cell.values,
            wall_s=wall,
            resumed_from=resumed_from,
        )
    return {"cell_id": cell.cell_id, "status": "finished", "wall_s": wall}


def run_local(
    experiment: Experiment, cells: list[Cell], extra_args: list[str]
) -> list[dict[str, Any]]:
    """Runs the cells one after another in this process."""
    outcomes = []
    for index, cell in enumerate(cells):
        run_dir = experiment.output_dir / cell.cell_id
        outcome = run_cell(cell, run_dir, extra_args, experiment.command)
        outcomes.append(outcome)
        detail = f"{outcome.get('wall_s', 0):.0f}s" if "wall_s" in outcome else ""
        if outcome["status"] == "failed":
            detail = outcome.get("error") or f"exit {outcome['returncode']}, see {outcome['log']}"
        print(
            f"[{index + 1}/{len(cells)}] {cell.cell_id}: {outcome['status']} {detail}", flush=True
        )
    return outcomes


def run_submitit(
    experiment: Experiment,
    cells: list[Cell],
    extra_args: list[str],
    cluster: str | None,
    parameters: dict[str, Any],
) -> list[dict[str, Any]]:
    """Submits the cells as one job array with ``submitit.AutoExecutor`` and waits for them.

    Args:
        cluster: ``slurm``, ``local`` (subprocesses on this machine), ``debug`` (in this
            process) or ``None`` (submitit picks Slurm when available).
        parameters: ``AutoExecutor.update_parameters`` keywords, e.g. ``timeout_min``,
            ``gpus_per_node``, ``tasks_per_node``, ``nodes``, ``slurm_partition``,
            ``slurm_array_parallelism``.
    """
    import submitit

    todo = [c for c in cells if not is_completed(experiment.output_dir / c.cell_id)]
    outcomes = [{"cell_id": c.cell_id, "status": "done"} for c in cells if c not in todo]
    if not todo:
        return outcomes
    executor = submitit.AutoExecutor(folder=experiment.output_dir / "submitit", cluster=cluster)
    executor.update_parameters(**{"name": experiment.name, **parameters})
    jobs = executor.map_array(
        run_cell,
        todo,
        [experiment.output_dir / c.cell_id for c in todo],
        [extra_args] * len(todo),
        [experiment.command] * len(todo),
    )
    print(f"submitted {len(jobs)} cells ({jobs[0].job_id} ...)", flush=True)
    for cell, job in zip(todo, jobs):
        try:
            result = job.result()
            outcome = result[0] if isinstance(result, list) else result  # one per task
        except Exception as error:  # a job that died (timeout, node failure): report, go on
            outcome = {"cell_id": cell.cell_id, "status": "failed", "error": repr(error)}
        outcomes.append(outcome)
        print(f"{cell.cell_id}: {outcome['status']}", flush=True)
    return outcomes


def sweep(
    grid: str,
    output_dir: str | None = None,
    only: list[str] | None = None,
    launcher: Literal["local", "submitit"] = "local",
    cluster: Literal["slurm", "local", "debug"] | None = None,
    dry_run: bool = False,
    collect_only: bool = False,
    extra_args: list[str] | None = None,
    *,
    cli_parser: ArgumentParser | None = None,
) -> None:
    """Run the grid of an experiment YAML (resumable) and collect its results.

    Args:
        grid: Experiment YAML, e.g. configs/experiment/bias_cifar10_small.yaml.
        output_dir: Override the experiment's output_dir.
        only: Run only matching cells, each ``AXIS=LABEL[,LABEL]`` (all must match).
        launcher: ``local`` (one cell after another here) or ``submitit`` (a job array).
        cluster: The submitit cluster (default: the experiment's launcher.cluster, else auto).
        dry_run: Print the cells' commands only.
        collect_only: Only rebuild the results from the finished cells.
        extra_args: Arguments appended to every cell's command line (on the command line:
            everything after ``--``).
        cli_parser: The ``ssl-biases`` parser (raising, not exiting) that checks every cell's
            arguments before the first cell runs; the ``sweep`` command passes its own.
            ``None`` skips the check (a cell with a typo then fails when it runs).

    Raises:
        SystemExit: with the failed cells' ids (exit status 1) once the results are
            collected, when any cell failed.
    """
    extra_args = list(extra_args or [])
    experiment = load_experiment(grid, output_dir)
    check_report(experiment)
    cells = select_cells(experiment.cells(), list(only or []))
    check_unchanged(experiment, extra_args, exact=not collect_only or bool(extra_args))
    if not collect_only:
        check_configs(cells)
        if cli_parser is not None:
            check_cell_arguments(cells, extra_args, experiment.command, cli_parser)
        if dry_run:
            for cell in cells:
                run_dir = experiment.output_dir / cell.cell_id
                command = fit_command(cell, run_dir, extra_args, subcommand=experiment.command)
                print(cell.cell_id, " ".join(command))
            return
        print(f"{experiment.name}: {len(cells)} cells -> {experiment.output_dir}", flush=True)
        if launcher == "local":
            outcomes = run_local(experiment, cells, extra_args)
        else:
            parameters = dict(experiment.launcher)
            cluster = cluster or parameters.pop("cluster", None)
            parameters.pop("cluster", None)
            outcomes = run_submitit(experiment, cells, extra_args, cluster, parameters)
    rows = collect_results(experiment)
    paths = write_report(experiment, rows)
    print(f"collected {len(rows)} finished cells: " + ", ".join(str(p) for p in paths), flush=True)
    print(f"compare the cells (HParams tab): tensorboard --logdir {experiment.output_dir}")
    if not collect_only and any(o["status"] == "failed" for o in outcomes):
        failed = [o["cell_id"] for o in outcomes if o["status"] == "failed"]
        raise SystemExit(f"{len(failed)} cells failed: {failed}")


def build_parser() -> ArgumentParser:
    """``sweep``'s jsonargparse parser, with ``--config`` and the grid as a positional."""
    parser = ArgumentParser(
        prog="ssl-biases sweep",
        description="Run the grid of an experiment YAML (resumable) and collect its results. "
        "Arguments after `--` are appended to every cell's fit command line.",
    )
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_function_arguments(sweep, as_group=False, as_positional=True, skip={"cli_parser"})
    return parser
