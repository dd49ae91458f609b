"""Experiment files -> grid cells."""

import math
from pathlib import Path

import pytest

from ssl_biases.experiments.grid import (
    cell_id,
    check_configs,
    format_cli_value,
    load_experiment,
    select_cells,
)

ROOT = Path(__file__).resolve().parents[2]

EXPERIMENT = """
name: toy
configs: [base.yaml, "{axes}", backbone.yaml]
args: {data.batch_size: 32, trainer.max_epochs: 1}
axes:
  - name: method
    values:
      simclr: {configs: [simclr.yaml]}
      byol: {configs: [byol.yaml], args: {model.init_args.momentum_start: 0.9}}
  - name: token_mixer
    key: model.init_args.backbone.init_args.token_mixer
    values: [attention, mlp, conv]
  - name: seed
    key: seed_everything
    values: [0, 1]
"""


@pytest.fixture
def toy(tmp_path):
    path = tmp_path / "toy.yaml"
    path.write_text(EXPERIMENT)
    return load_experiment(path)


def test_cells_are_the_product_of_the_axes_first_axis_slowest(toy):
    cells = toy.cells()
    assert len(cells) == 2 * 3 * 2
    assert [c.values["method"] for c in cells[:6]] == ["simclr"] * 6
    assert cells[0].cell_id == "method-simclr_token_mixer-attention_seed-0"
    assert cells[1].cell_id == "method-simclr_token_mixer-attention_seed-1"
    assert len({c.cell_id for c in cells}) == 12
    assert toy.output_dir == Path("runs/toy")


def test_axis_configs_stack_at_the_placeholder_and_args_follow_fixed_args(toy):
    cell = toy.cells()[-1]  # byol, conv, seed 1
    assert cell.configs == ("base.yaml", "byol.yaml", "backbone.yaml")
    assert cell.args == (
        ("data.batch_size", 32),
        ("trainer.max_epochs", 1),
        ("model.init_args.momentum_start", 0.9),
        ("model.init_args.backbone.init_args.token_mixer", "conv"),
        ("seed_everything", 1),
    )


def test_select_cells_filters_by_axis_labels(toy):
    chosen = select_cells(toy.cells(), ["method=byol", "token_mixer=mlp,conv"])
    assert [c.cell_id for c in chosen] == [
        "method-byol_token_mixer-mlp_seed-0",
        "method-byol_token_mixer-mlp_seed-1",
        "method-byol_token_mixer-conv_seed-0",
        "method-byol_token_mixer-conv_seed-1",
    ]
    with pytest.raises(ValueError, match="unknown axes"):
        select_cells(toy.cells(), ["mixer=mlp"])
    with pytest.raises(ValueError, match="axis=label"):
        select_cells(toy.cells(), ["method"])
    with pytest.raises(
        ValueError, match=r"method=simclrr matches no cell; .* \['simclr', 'byol'\]"
    ):
        select_cells(toy.cells(), ["method=simclrr"])
    with pytest.raises(ValueError, match="token_mixer=mpl matches no cell"):  # one of two labels
        select_cells(toy.cells(), ["token_mixer=mlp,mpl"])


def test_output_dir_follows_the_grids_default_root_dir(tmp_path):
    path = tmp_path / "exp.yaml"
    root = "args: {trainer.default_root_dir: /scratch/me}"
    path.write_text(f"name: e\n{root}\naxes: [{{name: a, key: k, values: [1]}}]")
    assert load_experiment(path).output_dir == Path("/scratch/me/e")
    assert load_experiment(path, output_dir="elsewhere").output_dir == Path("elsewhere")


def test_cell_ids_and_cli_values_are_safe():
    assert cell_id({"lr": "1e-3", "crop": "[0.4, 1.0]"}) == "lr-1e-3_crop-.0.4.1.0."
    assert [format_cli_value(v) for v in ["gap", 2, 0.5, None, True, [1, 2]]] == [
        "gap", "2", "0.5", "null", "true", "[1, 2]",
    ]  # fmt: skip


def test_exclude_leaves_out_the_cells_matching_every_label(tmp_path):
    path = tmp_path / "toy.yaml"
    path.write_text(EXPERIMENT + "exclude:\n  - {method: byol, token_mixer: [mlp, conv]}\n")
    cells = load_experiment(path).cells()
    assert len(cells) == 12 - 2 * 2  # byol x {mlp, conv} x 2 seeds
    assert not any(c.values["method"] == "byol" and c.values["token_mixer"] != "attention"
                   for c in cells)  # fmt: skip
    assert sum(c.values["method"] == "simclr" for c in cells) == 6


@pytest.mark.parametrize(
    ("exclude", "match"),
    [
        ("[{mixer: mlp}]", "unknown axis 'mixer'"),
        ("[{token_mixer: pool}]", r"token_mixer=\['pool'\] is no label"),
        ("{method: byol}", "must be a list"),
        ("[{}]", "non-empty"),
    ],
)
def test_exclude_with_a_typo_is_an_error(tmp_path, exclude, match):
    path = tmp_path / "toy.yaml"
    path.write_text(EXPERIMENT + f"exclude: {exclude}\n")
    with pytest.raises(ValueError, match=match):
        load_experiment(path)


def test_invalid_experiments_raise_with_a_hint(tmp_path, toy):
    with pytest.raises(FileNotFoundError, match="configs/experiment"):
        load_experiment(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("axes: [{name: mixer, values: [mlp]}]")
    with pytest.raises(ValueError, match="give it a `key`"):
        load_experiment(bad)
    bad.write_text("axes: [{name: a, key: k, values: [1]}]\nseeds: [0]")
    with pytest.raises(ValueError, match="unknown top-level keys"):
        load_experiment(bad)
    with pytest.raises(FileNotFoundError, match="simclr.yaml"):
        check_configs(toy.cells())


@pytest.mark.parametrize("name", ["bias_cifar10_small", "bias_cifar10_quick", "bias_cifar10_gpu"])
def test_shipped_study_configs_have_the_full_grid(name, monkeypatch):
    monkeypatch.chdir(ROOT)
    experiment = load_experiment(ROOT / f"configs/experiment/{name}.yaml")
    cells = experiment.cells()
    check_configs(cells)
    assert experiment.axis_names[:3] == ["method", "token_mixer", "pos_embed"]
    assert {c.values["token_mixer"] for c in cells} == {
        "attention",
        "local_attention",
        "mlp",
        "conv",
    }
    assert {c.values["method"] for c in cells} == {"simclr", "byol", "dino", "masked"}
    assert len({c.cell_id for c in cells}) == len(cells) >= 31
    degenerate = {"method": "masked", "token_mixer": "attention", "pos_embed": "none"}
    assert not any(
        degenerate.items() <= c.values.items() for c in cells
    )  # MaskedModeling refuses it


def test_command_defaults_to_fit_and_accepts_validate_only_among_lightning_commands(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("axes: [{name: a, key: k, values: [1]}]")
    assert load_experiment(path).command == "fit"
    path.write_text("command: validate\naxes: [{name: a, key: k, values: [1]}]")
    assert load_experiment(path).command == "validate"
    path.write_text("command: predict\naxes: [{name: a, key: k, values: [1]}]")
    with pytest.raises(ValueError, match="fit, validate or test"):
        load_experiment(path)


@pytest.mark.parametrize(
    ("name", "floor_name"),
    [
        ("bias_cifar10_small", "bias_cifar10_small_random"),
        ("bias_cifar10_quick", "bias_cifar10_small_random"),
        ("bias_cifar10_gpu", "bias_cifar10_gpu_random"),
    ],
)
def test_random_init_floor_has_the_study_backbones_and_probe_data(name, floor_name, monkeypatch):
    monkeypatch.chdir(ROOT)
    floor_path = f"configs/experiment/{floor_name}.yaml"
    floor = load_experiment(ROOT / floor_path)
    study = load_experiment(ROOT / f"configs/experiment/{name}.yaml")
    check_configs(floor.cells())
    assert study.report["baseline"] == floor_path
    assert floor.command == "validate"
    assert set(floor.axis_names) == set(study.axis_names) - {"method"}
    untrained = {tuple(v for k, v in c.values.items() if k != "seed") for c in floor.cells()}
    full_grid = math.prod(len(values) for _, values in study.axes)  # before `exclude`
    assert len(untrained) * 4 * len(dict(study.axes)["seed"]) == full_grid  # 4 methods
    shared = {  # all but the pretraining subset, which a validate run never reads
        k: v
        for k, v in study.args.items()
        if ("backbone" in k or k.startswith("data.")) and k != "data.max_train_samples"
    }
    assert shared == {k: v for k, v in floor.args.items() if k in shared}
    study_data = dict(study.axes).get("data")
    if study_data is not None:  # the same data configs and roots per dataset
        assert [(v.label, v.configs, v.args) for v in study_data] == [
            (v.label, v.configs, v.args) for v in dict(floor.axes)["data"]
        ]


# --- issue 14 (real scale): the anchor grid of lightly's CIFAR-10 benchmark --------------------
def test_anchor_grid_parses_every_cell_with_lightlys_hyperparameters(monkeypatch):
    from ssl_biases.cli import cli_parser
    from ssl_biases.experiments.results import check_report
    from ssl_biases.experiments.sweep import cell_settings, check_cell_arguments, fit_command

    monkeypatch.chdir(ROOT)
    experiment = load_experiment(ROOT / "configs/experiment/anchor_lightly_cifar10.yaml")
    cells = experiment.cells()
    check_configs(cells)
    check_report(experiment)
    parser = cli_parser()
    check_cell_arguments(cells, [], "fit", parser)  # what `sweep --dry-run` checks
    assert [c.values["method"] for c in cells] == ["simclr", "byol", "dino"]
    lrs = {}
    for cell in cells:
        command = fit_command(cell, ROOT / cell.cell_id, [])
        config = parser.parse_args(cell_settings(command)).fit
        callbacks = [c.class_path.rpartition(".")[2] for c in config.trainer.callbacks]
        assert callbacks == ["LearningRateMonitor", "KNNProbe"]
        knn = config.trainer.callbacks[1].init_args
        assert (knn.k, knn.temperature, knn.name) == (200, 0.1, "knn200")
        optimizer = config.model.init_args.training.optimizer
        assert optimizer.class_path == "torch.optim.SGD"
        lrs[cell.values["method"]] = optimizer.init_args.lr
        assert config.model.init_args.training.reference_batch_size == 128
        assert config.model.init_args.training.warmup_fraction == 0.0
        assert config.data.batch_size == 512 and config.trainer.max_epochs == 200
        assert config.data.max_probe_train_samples is None
        assert config.model.init_args.backbone.init_args.cifar_stem is True
    # BYOL's loss is twice lightly's: half the LR gives the same SGD step
    assert lrs == {"simclr": 0.06, "byol": 0.03, "dino": 0.06}
    assert experiment.report["metric"] == "val/knn200_top1"


# --- end issue 14 ------------------------------------------------------------------------------


def test_the_long_conv_vs_attention_grid_changes_only_the_budget(monkeypatch):
    """Issue 15: cells left at their floor get a longer budget, not another claim or setting.

    Only the steps change, and where the views are made (device views: the same distributions,
    faster on the CPU), for every cell alike.
    """
    monkeypatch.chdir(ROOT)
    short = load_experiment(ROOT / "configs/experiment/conv_vs_attention_cifar10.yaml")
    long = load_experiment(ROOT / "configs/experiment/conv_vs_attention_long_cifar10.yaml")
    check_configs(long.cells())
    assert long.report == short.report  # the same metrics, contrasts and floor
    changed = {"trainer.max_epochs", "data.augment", "data.num_workers"}
    assert {k: v for k, v in long.args.items() if k not in changed} == {
        k: v for k, v in short.args.items() if k not in changed
    }
    assert long.args["trainer.max_epochs"] == 4 * short.args["trainer.max_epochs"]
    assert long.args["data.augment"] == "device" and "data.augment" not in short.args
    by_values = {tuple(sorted(c.values.items())): c for c in short.cells()}
    cells = long.cells()
    assert [c.values["method"] for c in cells[:8]] == ["masked"] * 8  # the cheaper half first
    assert {c.values["method"] for c in cells} == {"masked", "byol"} and len(cells) == 16
    for cell in cells:  # each is a cell of the short grid with only the budget changed
        twin = by_values[tuple(sorted(cell.values.items()))]
        assert cell.cell_id == twin.cell_id and cell.configs == twin.configs
        assert [a for a in cell.args if a[0] not in changed] == [
            a for a in twin.args if a[0] not in changed
        ]


def test_the_shuffle_grid_probes_its_floor_on_the_same_fixed_permutation(monkeypatch):
    """MLP-Mixer's protocol: the untrained floor sees the same shuffled inputs as the study."""
    monkeypatch.chdir(ROOT)
    study = load_experiment(ROOT / "configs/experiment/shuffle_cifar10.yaml")
    floor = load_experiment(ROOT / study.report["baseline"])
    check_configs(study.cells() + floor.cells())
    assert floor.command == "validate" and floor.axes == study.axes
    views = {"data.augment", "data.num_workers"}  # how training views are made, not what
    shared = {
        k: v for k, v in study.args.items() if k.startswith(("data.", "model.")) and k not in views
    }
    assert shared == {k: v for k, v in floor.args.items() if k in shared}
    assert (
        shared["data.shuffle_patch_size"] == shared["model.init_args.backbone.init_args.patch_size"]
    )
    assert [v.label for v in dict(study.axes)["shuffle"]] == ["none", "patch", "pixel"]
    assert study.report["contrasts"] == [
        {"axis": "shuffle", "levels": ["patch", "none"]},
        {"axis": "shuffle", "levels": ["pixel", "none"]},
    ]
    assert [v.label for v in dict(study.axes)["seed"]] == ["0", "1", "2", "3"]
    assert study.report["primary"]["estimator"] == "paired"


def test_args_refer_to_the_cells_labels(tmp_path):
    path = tmp_path / "transfer.yaml"
    path.write_text(
        "name: transfer\ncommand: validate\n"
        "args: {ckpt_path: 'runs/t/last_dim-${last_dim}_seed-${seed}/last.ckpt',\n"
        "       tag: '${cell_id}'}\n"
        "axes:\n  - {name: last_dim, key: d, values: [64, 1024]}\n"
        "  - {name: seed, key: seed_everything, values: [0, 1]}\n"
    )
    cells = load_experiment(path).cells()
    args = dict(cells[3].args)
    assert args["ckpt_path"] == "runs/t/last_dim-1024_seed-1/last.ckpt"
    assert args["tag"] == "last_dim-1024_seed-1"
    assert dict(cells[0].args)["d"] == 64  # a non-string value is left as it is
    path.write_text(path.read_text().replace("${seed}", "${sed}"))
    with pytest.raises(ValueError, match=r"\$\{sed\}, which is no axis"):
        load_experiment(path).cells()
