"""A trained cell starts from exactly the weights its floor cell (same seed) evaluates.

This is what lets ``gain/<metric>`` subtract the same seed's floor: LightningCLI seeds
(``seed_everything``, applied before any class is built) and then builds the backbone first,
so a ``fit`` cell of a method and the ``validate`` floor cell (another method's config, other
probe settings) hold equal backbone weights when training starts.
"""

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from ssl_biases.cli import SSLBiasesCLI
from ssl_biases.experiments.grid import load_experiment
from ssl_biases.experiments.sweep import cell_settings, fit_command

ROOT = Path(__file__).resolve().parents[2]
PAIRS = [  # (trained grid, its floor): the floor's axes are the trained grid's
    ("configs/experiment/conv_vs_attention_cifar10.yaml", "conv_vs_attention_cifar10_random"),
    ("configs/experiment/last_dim_cifar10.yaml", "last_dim_cifar10_random"),
]
SMALL = [  # no files read, a tiny shapes set: only the model is built
    "--data.dataset", "shapes", "--data.shapes_size", "32", "--data.num_workers", "0",
]  # fmt: skip


def initial_backbone(command: list[str], monkeypatch: pytest.MonkeyPatch) -> dict:
    """The backbone's state_dict at the moment the CLI hands the model to the trainer."""
    captured = {}

    def capture(self, model, *args, **kwargs):
        captured.update({k: v.clone() for k, v in model.backbone.state_dict().items()})

    monkeypatch.setattr(pl.Trainer, "fit", capture)
    monkeypatch.setattr(pl.Trainer, "validate", capture)
    SSLBiasesCLI(args=cell_settings(command) + SMALL)
    return captured


@pytest.mark.parametrize(("trained_path", "floor_name"), PAIRS)
def test_a_fit_cell_starts_from_its_floor_cells_weights(
    trained_path, floor_name, monkeypatch, tmp_path
):
    monkeypatch.chdir(ROOT)  # config paths are relative to the repository root
    trained = load_experiment(trained_path, output_dir=tmp_path / "trained")
    floor = load_experiment(trained.report["baseline"], output_dir=tmp_path / "floor")
    assert floor.name == floor_name and floor.command == "validate"
    floor_cells = {tuple(c.values.items()): c for c in floor.cells()}
    checked, starts = 0, {}  # starts: floor cell -> its weights (trained cells share floors)
    seen = []  # the seeds checked: every seed-0 cell and the last seed-1 one
    last_seed_1 = [c.cell_id for c in trained.cells() if c.values["seed"] == "1"][-1]
    for cell in trained.cells():
        if cell.values["seed"] != "0" and cell.cell_id != last_seed_1:
            continue
        seen.append(cell.values["seed"])
        key = tuple((a, cell.values[a]) for a in floor.axis_names)
        if key not in starts:
            base = fit_command(floor_cells[key], tmp_path, [], subcommand="validate")
            starts[key] = initial_backbone(base, monkeypatch)
        start = starts[key]
        ran = initial_backbone(fit_command(cell, tmp_path, [], subcommand="fit"), monkeypatch)
        assert ran.keys() == start.keys() and len(ran) > 0
        for name in ran:
            assert torch.equal(ran[name], start[name]), (cell.cell_id, name)
        checked += 1
    assert checked >= 4 and seen.count("1") == 1
    # and the seed matters: seed 0 and seed 1 of the same floor cell differ
    seeds = floor.cells()  # the seed axis varies fastest: cells 0 and 1 are seeds 0 and 1
    weights = [initial_backbone(fit_command(c, tmp_path, [], subcommand="validate"), monkeypatch)
               for c in seeds[:2]]  # fmt: skip
    assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_every_family_cell_builds_and_starts_from_its_floor_cells_weights(monkeypatch, tmp_path):
    """The newer families and MAE (issue 18): each pairs with its floor, one mixer in turn."""
    monkeypatch.chdir(ROOT)
    grid = load_experiment("configs/experiment/families_cifar10_quick.yaml", output_dir=tmp_path)
    floor = load_experiment(grid.report["baseline"], output_dir=tmp_path / "floor")
    cells = grid.cells()
    assert len(cells) == 8 * 4 * 2 + 2  # MAE: global attention only
    methods = {"mocov3", "vicreg", "barlow_twins", "ijepa", "ibot", "mae"}
    methods |= {"swav", "lejepa", "emp_ssl"}  # issue 31
    assert {c.values["method"] for c in cells} == methods
    floor_cells = {tuple(c.values.items()): c for c in floor.cells()}
    offered = {}  # method -> the mixers the grid gives it (MAE: attention only)
    for cell in cells:
        offered.setdefault(cell.values["method"], {})[cell.values["token_mixer"]] = None
    turns = {m: list(mixers)[i % len(mixers)] for i, (m, mixers) in enumerate(offered.items())}
    starts, checked = {}, set()
    for cell in cells:
        method = cell.values["method"]
        if cell.values["seed"] != "0" or cell.values["token_mixer"] != turns[method]:
            continue
        key = tuple((a, cell.values[a]) for a in floor.axis_names)
        mixer = cell.values["token_mixer"]
        if mixer not in starts:
            base = fit_command(floor_cells[key], tmp_path, [], subcommand="validate")
            starts[mixer] = initial_backbone(base, monkeypatch)
        ran = initial_backbone(fit_command(cell, tmp_path, [], subcommand="fit"), monkeypatch)
        assert ran.keys() == starts[mixer].keys() and len(ran) > 0, cell.cell_id
        for name in ran:
            assert torch.equal(ran[name], starts[mixer][name]), (cell.cell_id, name)
        checked.add(method)
    assert checked == methods and len(starts) == 4  # every method, every mixer once
