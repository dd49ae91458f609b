"""Experiment grids: an experiment YAML -> the list of cells, each an ordinary ``fit`` run.

An experiment file names the configs every cell stacks, fixed overrides, and the axes of the
grid; the cells are the Cartesian product of the axes (the first axis varies slowest)::

    name: bias_cifar10_small            # runs land in <output_dir>/<cell id>/
    command: fit                        # or validate / test (no training: random init)
    output_dir: runs/bias_cifar10_small # optional; default <trainer.default_root_dir>/<name>
    configs: [configs/trainer/cpu.yaml, "{axes}", configs/backbone/vit_tiny.yaml]
    args: {data.root: ../shared/data/cifar10, trainer.max_epochs: 2}
    axes:
      - name: method                    # a mapping: label -> {configs: [...], args: {...}}
        values:
          simclr: {configs: [configs/method/simclr.yaml]}
      - name: token_mixer               # a list of scalars, each set at `key`
        key: model.init_args.backbone.init_args.token_mixer
        values: [attention, mlp]
      - name: seed
        key: seed_everything
        values: [0, 1]
    exclude:                            # optional: cells left out (every label must match)
      - {method: simclr, token_mixer: mlp}
    report: {metric: val/knn_top1, rows: token_mixer, columns: [method], panel: method, hue: null}
    launcher: {cluster: slurm, gpus_per_node: 4, timeout_min: 240}

``configs`` are stacked in order with the axes' configs (in axis order) in place of
``"{axes}"`` (at the end without it): a method config must come before a backbone config.
Then come ``args``, then each axis' args. Config paths and relative paths in ``args`` are
read from the directory the sweep is started in (the repository root), as for ``fit``. A
string arg may refer to the cell's labels as ``${axis}`` (filesystem-safe, as in cell ids),
e.g. to validate another grid's checkpoints (:func:`fill_labels`).
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ssl_biases.run.legacy import migrate_key

AXES_PLACEHOLDER = "{axes}"
"""Where in ``configs`` the axes' configs are stacked (default: after all of them)."""

SEED_AXIS = "seed"
"""The axis that results are averaged over (mean and spread)."""


@dataclass(frozen=True)
class AxisValue:
    """One value of an axis: a label and what it adds to the command line."""

    label: str
    configs: tuple[str, ...] = ()
    args: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Cell:
    """One run of the grid.

    Attributes:
        cell_id: Deterministic directory name, ``<axis>-<label>_<axis>-<label>...``.
        values: Axis name -> value label, in axis order.
        configs: ``--config`` files in stacking order (base configs, then axis configs).
        args: ``(key, value)`` overrides in order (fixed args, then axis args).
    """

    cell_id: str
    values: dict[str, str]
    configs: tuple[str, ...]
    args: tuple[tuple[str, Any], ...]


@dataclass
class Experiment:
    """A parsed experiment file (see the module docstring for the format)."""

    name: str
    output_dir: Path
    configs: list[str]
    args: dict[str, Any]
    axes: list[tuple[str, list[AxisValue]]]
    report: dict[str, Any] = field(default_factory=dict)
    launcher: dict[str, Any] = field(default_factory=dict)
    command: str = "fit"
    exclude: list[dict[str, list[str]]] = field(default_factory=list)

    @property
    def axis_names(self) -> list[str]:
        return [name for name, _ in self.axes]

    def cells(self) -> list[Cell]:
        """All cells of the grid but the excluded ones, the first axis varying slowest."""
        cells = []
        for combo in itertools.product(*(values for _, values in self.axes)):
            values = {name: value.label for (name, _), value in zip(self.axes, combo)}
            if any(all(values[a] in labels for a, labels in rule.items()) for rule in self.exclude):
                continue
            axis_configs = [c for value in combo for c in value.configs]
            configs = list(self.configs)
            if AXES_PLACEHOLDER not in configs:
                configs.append(AXES_PLACEHOLDER)
            at = configs.index(AXES_PLACEHOLDER)
            configs[at : at + 1] = axis_configs
            args = list(self.args.items())
            for value in combo:
                args.extend(value.args)
            args = [(migrate_key(key), fill_labels(v, values)) for key, v in args]  # old keys too
            cells.append(Cell(cell_id(values), values, tuple(configs), tuple(args)))
        return cells


_LABEL_OK = re.compile(r"[^A-Za-z0-9.+-]+")


def cell_id(values: dict[str, str]) -> str:
    """``{"method": "simclr", "seed": "0"} -> "method-simclr_seed-0"`` (filesystem safe)."""
    return "_".join(f"{name}-{_LABEL_OK.sub('.', label)}" for name, label in values.items())


_LABEL_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def fill_labels(value: Any, labels: dict[str, str]) -> Any:
    """A string arg with ``${axis}`` references filled with the cell's labels (``${cell_id}``:
    the id of the cell with those labels); any other value as it is.

    Lets one grid point at another grid's cells, e.g. a transfer probe that validates each
    trained cell's checkpoint: ``ckpt_path: runs/train/last_dim-${last_dim}_seed-${seed}/...``.

    Raises:
        ValueError: a reference names no axis.
    """
    if not isinstance(value, str) or "${" not in value:
        return value

    def label(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "cell_id":
            return cell_id(labels)
        if name not in labels:
            raise ValueError(f"{value!r} refers to ${{{name}}}, which is no axis: {list(labels)}")
        return _LABEL_OK.sub(".", labels[name])

    return _LABEL_REF.sub(label, value)


def format_cli_value(value: Any) -> str:
    """A YAML value as one command-line token: strings as they are, the rest as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def _parse_axis(index: int, spec: Any) -> tuple[str, list[AxisValue]]:
    if not isinstance(spec, dict) or "name" not in spec or "values" not in spec:
        raise ValueError(f"axes[{index}] must be a mapping with `name` and `values`, got {spec!r}")
    name, key, raw = spec["name"], spec.get("key"), spec["values"]
    values: list[AxisValue] = []
    if isinstance(raw, list):
        if key is None:
            raise ValueError(
                f"axis {name!r} lists scalar values: give it a `key` (e.g. "
                "model.init_args.backbone.init_args.token_mixer) to set them at"
            )
        values = [AxisValue(str(v), args=((key, v),)) for v in raw]
    elif isinstance(raw, dict):
        for label, item in raw.items():
            item = item or {}
            if not isinstance(item, dict) or set(item) - {"configs", "args", "value"}:
                raise ValueError(
                    f"axis {name!r} value {label!r} must be a mapping with `configs`, `args` "
                    f"and/or `value` (set at the axis key), got {item!r}"
                )
            args = list((item.get("args") or {}).items())
            if "value" in item:
                if key is None:
                    raise ValueError(f"axis {name!r} value {label!r} has `value` but no axis `key`")
                args.insert(0, (key, item["value"]))
            values.append(AxisValue(str(label), tuple(item.get("configs") or ()), tuple(args)))
    else:
        raise ValueError(f"axis {name!r}: `values` must be a list or a mapping, got {raw!r}")
    if not values:
        raise ValueError(f"axis {name!r} has no values")
    labels = [v.label for v in values]
    if len(set(labels)) != len(labels):
        raise ValueError(f"axis {name!r} has repeated values: {labels}")
    return str(name), values


def _parse_exclude(
    path: Path, spec: Any, axes: list[tuple[str, list[AxisValue]]]
) -> list[dict[str, list[str]]]:
    """``exclude``: a list of ``{axis: label or [labels]}``; a cell matching every entry of
    one of them is left out (e.g. a combination a method refuses)."""
    labels = {name: [value.label for value in values] for name, values in axes}
    if not isinstance(spec, list):
        raise ValueError(f"{path}: `exclude` must be a list of {{axis: label}} mappings")
    rules = []
    for i, rule in enumerate(spec):
        if not isinstance(rule, dict) or not rule:
            raise ValueError(f"{path}: exclude[{i}] must be a non-empty {{axis: label}} mapping")
        parsed = {}
        for axis, wanted in rule.items():
            if axis not in labels:
                raise ValueError(
                    f"{path}: exclude[{i}] names unknown axis {axis!r}; axes: {list(labels)}"
                )
            wanted = [str(w) for w in (wanted if isinstance(wanted, list) else [wanted])]
            unknown = [w for w in wanted if w not in labels[axis]]
            if unknown:
                raise ValueError(
                    f"{path}: exclude[{i}] {axis}={unknown} is no label of the "
                    f"axis; labels: {labels[axis]}"
                )
            parsed[str(axis)] = wanted
        rules.append(parsed)
    return rules


def load_experiment(path: str | Path, output_dir: str | Path | None = None) -> Experiment:
    """Reads an experiment YAML.

    Args:
        path: The experiment file.
        output_dir: Overrides the file's ``output_dir`` (default ``<root>/<name>``, the root
            being ``args``' ``trainer.default_root_dir`` or ``runs``).

    Raises:
        FileNotFoundError: The file or one of the configs it names does not exist.
        ValueError: The file is not a valid experiment.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"experiment file {path} not found (see configs/experiment/)")
    spec = yaml.safe_load(path.read_text()) or {}
    known = {"name", "output_dir", "command", "configs", "args", "axes", "report", "launcher"}
    known.add("exclude")
    unknown = set(spec) - known
    if unknown:
        raise ValueError(f"{path}: unknown top-level keys {sorted(unknown)}")
    if not spec.get("axes"):
        raise ValueError(f"{path}: an experiment needs `axes` (a list of grid axes)")
    name = str(spec.get("name", path.stem))
    axes = [_parse_axis(i, axis) for i, axis in enumerate(spec["axes"])]
    names = [n for n, _ in axes]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: repeated axis names {names}")
    args = dict(spec.get("args") or {})
    root = args.get("trainer.default_root_dir") or "runs"
    experiment = Experiment(
        name=name,
        output_dir=Path(output_dir or spec.get("output_dir") or Path(root) / name),
        configs=[str(c) for c in spec.get("configs") or []],
        args=args,
        axes=axes,
        report=dict(spec.get("report") or {}),
        launcher=dict(spec.get("launcher") or {}),
        command=str(spec.get("command", "fit")),
        exclude=_parse_exclude(path, spec.get("exclude") or [], axes),
    )
    if experiment.command not in ("fit", "validate", "test"):
        raise ValueError(
            f"{path}: command must be fit, validate or test, got {experiment.command!r} "
            "(validate without a checkpoint evaluates the randomly initialised backbone)"
        )
    return experiment


def check_configs(cells: list[Cell]) -> None:
    """Raises ``FileNotFoundError`` when a cell stacks a config file that does not exist."""
    missing = sorted({c for cell in cells for c in cell.configs if not Path(c).is_file()})
    if missing:
        raise FileNotFoundError(
            f"the experiment names configs that do not exist: {missing} (paths are relative "
            "to the directory the sweep runs in, normally the repository root)"
        )


def select_cells(cells: list[Cell], only: list[str]) -> list[Cell]:
    """Cells matching every ``axis=label[,label...]`` filter of ``only``."""
    wanted: dict[str, set[str]] = {}
    for item in only:
        axis, sep, labels = item.partition("=")
        if not sep or not labels:
            raise ValueError(f"--only takes axis=label[,label...], got {item!r}")
        wanted.setdefault(axis, set()).update(labels.split(","))
    if cells:
        unknown = set(wanted) - set(cells[0].values)
        if unknown:
            raise ValueError(
                f"--only names unknown axes {sorted(unknown)}; axes: {list(cells[0].values)}"
            )
    for axis, labels in wanted.items():
        valid = list(dict.fromkeys(c.values[axis] for c in cells))
        if labels - set(valid):
            raise ValueError(
                f"--only {axis}={','.join(sorted(labels - set(valid)))} matches no cell; "
                f"the labels of {axis} are {valid}"
            )
    return [c for c in cells if all(c.values[a] in labels for a, labels in wanted.items())]
