"""Every module belongs to a room, and no room reaches around another (DESIGN.md, "The house").

A room imports only from rooms to its left in :data:`ROOM_ORDER`, from itself, and from
``backbones/`` (importable by all). The import graph is read from the source (``ast``, every
``import``/``from ... import`` of ``ssl_biases``, function-level imports included), so the
check costs no imports. A backward import that is known and not yet fixed is listed in
:data:`KNOWN_BACKWARD` with its reason; the list may only shrink.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ssl_biases"

ROOM_ORDER: tuple[tuple[str, ...], ...] = (
    ("data",),
    ("methods",),
    ("run",),
    ("probes", "analysis"),
    ("experiments",),
    ("cli",),
)
"""DESIGN.md's flow, left to right: data -> methods -> probes/analysis -> experiments, with
``run/`` (a run's life: status, checkpoint I/O, faults; it needs only the backbones and the
metric names) under everything that reads a run, and ``cli/`` on top (it wires every room and
registers the tool commands). Rooms in one tuple stand side by side."""

EVERYWHERE = {"backbones", "metric_names"}  # importable by every room; they import none
"""Leaf rooms: the backbones, and the metric vocabulary (``ssl_biases/metric_names.py``) that
methods, probes, run, analysis and experiments share."""
PACKAGE_ROOT = {"__init__", "__main__"}  # ssl_biases itself: the entry points, above all rooms

KNOWN_BACKWARD: dict[tuple[str, str], str] = {}
"""(module, room it imports) -> why; backward by :data:`ROOM_ORDER`, left for a later fix."""


def rank(room: str) -> int:
    """The room's place in :data:`ROOM_ORDER` (0 = leftmost)."""
    for place, rooms in enumerate(ROOM_ORDER):
        if room in rooms:
            return place
    raise ValueError(f"room {room!r} is in no place of ROOM_ORDER; add it to the house")


def room_of(module: str) -> str:
    """``ssl_biases.<room>[.<file>]`` -> ``<room>`` (``cli`` for ``ssl_biases.cli``)."""
    return module.split(".")[1]


def ssl_biases_imports(source: str) -> set[str]:
    """The ``ssl_biases`` modules a source file imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.split(".")[0] == "ssl_biases" and "." in name}


def backward_imports(modules: dict[str, str]) -> set[tuple[str, str]]:
    """``(module, imported room)`` for every import that points right in the house.

    Args:
        modules: dotted module name -> its source.
    """
    backward = set()
    for module, source in modules.items():
        room = room_of(module)
        if room in PACKAGE_ROOT:
            continue
        for imported in ssl_biases_imports(source):
            target = room_of(imported)
            if target == room or (target in EVERYWHERE and room not in EVERYWHERE):
                continue
            if room in EVERYWHERE or target in PACKAGE_ROOT or rank(target) > rank(room):
                backward.add((module, target))  # backbones/ stands below every room
    return backward


def package_sources() -> dict[str, str]:
    """Every module of ``ssl_biases/`` by dotted name."""
    return {
        ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts): path.read_text()
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def test_every_module_belongs_to_a_room():
    rooms = {room_of(module) for module in package_sources()}
    for room in rooms - PACKAGE_ROOT - EVERYWHERE:
        rank(room)  # a ValueError for a room the house does not know


def test_no_room_reaches_to_its_right():
    found = backward_imports(package_sources())
    new = sorted(found - set(KNOWN_BACKWARD))
    assert not new, f"backward imports (DESIGN.md room order {ROOM_ORDER}): {new}"
    fixed = sorted(set(KNOWN_BACKWARD) - found)
    assert not fixed, f"fixed, so remove them from KNOWN_BACKWARD: {fixed}"


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("ssl_biases.data.views", "from ssl_biases.methods.base import SSLMethod", "methods"),
        ("ssl_biases.methods.simclr", "def f():\n    import ssl_biases.probes.knn", "probes"),
        ("ssl_biases.probes.knn", "from ssl_biases.experiments import grid", "experiments"),
        ("ssl_biases.analysis.cka", "from ssl_biases.cli import main", "cli"),
        ("ssl_biases.backbones.isotropic", "from ssl_biases.data import shapes", "data"),
    ],
)
def test_a_backward_import_is_flagged(module, source, expected):
    assert backward_imports({module: source}) == {(module, expected)}


def test_imports_to_the_left_and_of_backbones_pass():
    sources = {
        "ssl_biases.methods.simclr": "from ssl_biases.data.views import ViewRecipe\n"
        "from ssl_biases.backbones import IsotropicNet",
        "ssl_biases.analysis.report": "from ssl_biases.probes.knn import KNNProbe",
        "ssl_biases.cli": "from ssl_biases.run.faults import NonFiniteLossGuard",
        "ssl_biases.backbones.isotropic": "from ssl_biases.backbones.mixers import TOKEN_MIXERS",
    }
    assert backward_imports(sources) == set()


SHARED_BY_METHODS = ("ssl_biases.methods.metric_names", "ssl_biases.methods.budget")
"""Modules that once lived in ``methods/`` for everyone (issue 33): the metric vocabulary is
``ssl_biases.metric_names``, the time budget ``ssl_biases.run.budget``."""


def imports_of_methods_for_shared_parts(modules: dict[str, str]) -> set[tuple[str, str]]:
    """``(module, imported)`` for a module outside ``methods/`` that imports the metric names
    or the time budget from ``methods/`` (or imports a name of them from the package)."""
    found = set()
    for module, source in modules.items():
        if room_of(module) == "methods":
            continue
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = {f"{node.module}.{alias.name}" for alias in node.names}
                imported = {node.module} | names
            elif isinstance(node, ast.Import):
                imported = {alias.name for alias in node.names}
            else:
                continue
            found.update((module, name) for name in imported if name in SHARED_BY_METHODS)
    return found


def test_no_room_reads_metric_names_or_the_budget_from_methods():
    assert imports_of_methods_for_shared_parts(package_sources()) == set()


@pytest.mark.parametrize(
    "source",
    [
        "from ssl_biases.methods.metric_names import VAL_KNN_TOP1",
        "from ssl_biases.methods import metric_names",
        "import ssl_biases.methods.budget",
        "from ssl_biases.methods.budget import TimeBudget",
    ],
)
def test_reading_shared_parts_from_methods_is_flagged(source):
    assert len(imports_of_methods_for_shared_parts({"ssl_biases.probes.knn": source})) == 1


def test_the_metric_names_are_a_leaf_room():
    sources = {
        "ssl_biases.probes.knn": "from ssl_biases.metric_names import KNN",
        "ssl_biases.data.views": "from ssl_biases.metric_names import VAL",
    }
    assert backward_imports(sources) == set()
    leaf = {"ssl_biases.metric_names": "from ssl_biases.methods.base import SSLMethod"}
    assert backward_imports(leaf) == {("ssl_biases.metric_names", "methods")}
