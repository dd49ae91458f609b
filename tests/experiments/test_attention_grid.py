"""Attention statistics of a grid's cells: read from each cell's checkpoint, on its queries."""

import csv

import pytest
import torch
import yaml

from ssl_biases.analysis.attention import (
    aligned_attention_map,
    attention_offset,
    mean_attention_distance,
    offset_local_heads,
)
from ssl_biases.analysis.command import run_data
from ssl_biases.analysis.report import load_checkpoint_backbone
from ssl_biases.cli import cli_main
from ssl_biases.experiments.attention_grid import attention_table, collect_attention, main
from ssl_biases.experiments.grid import load_experiment
from ssl_biases.experiments.sweep import last_checkpoint

from helpers import CONFIGS


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """Two cells (seeds 0 and 1) of SimCLR on shapes, attention at 5 x 5 tokens, 2 steps."""
    tmp = tmp_path_factory.mktemp("attention_grid")
    spec = {
        "name": "tiny_attention",
        "configs": [str(CONFIGS / "method/simclr.yaml"), str(CONFIGS / "data/shapes.yaml")],
        "args": {
            "model.init_args.backbone.class_path": "ssl_biases.backbones.IsotropicNet",
            "model.init_args.backbone.init_args.width": 32,
            "model.init_args.backbone.init_args.depth": 2,
            "model.init_args.backbone.init_args.num_heads": 2,
            "model.init_args.backbone.init_args.patch_size": 4,
            "model.init_args.projection_hidden_dim": 64,
            "model.init_args.projection_dim": 32,
            "data.image_size": 20,
            "data.shapes_size": 64,  # its test split: 16 images
            "data.batch_size": 16,
            "data.num_workers": 0,
            "data.max_probe_train_samples": 16,
            "data.max_val_samples": 12,
            "trainer.accelerator": "cpu",
            "trainer.max_steps": 2,
            "trainer.limit_val_batches": 0,
            "trainer.num_sanity_val_steps": 0,
            "trainer.enable_progress_bar": False,
            "trainer.enable_model_summary": False,
        },
        "axes": [{"name": "seed", "key": "seed_everything", "values": [0, 1]}],
        "report": {"metric": "val/knn_top1"},
    }
    path = tmp / "tiny_attention.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp / "out"
    cli_main(["sweep", str(path), "--output-dir", str(out)])
    return load_experiment(path, output_dir=out)


def test_every_block_and_head_of_every_cell_matches_a_direct_computation(grid):
    rows = collect_attention(grid)
    assert len(rows) == 2 * 2 * 2  # cells x blocks x heads
    assert {r["seed"] for r in rows} == {"0", "1"} and {r["global_step"] for r in rows} == {2}
    for seed in ("0", "1"):
        ckpt = last_checkpoint(grid.output_dir / f"seed-{seed}")
        backbone, _, _ = load_checkpoint_backbone(ckpt)
        images = torch.cat([x for x, _ in run_data(ckpt).probe_dataloaders()[1]])
        assert len(images) == 12  # the cell's own queries (max_val_samples of 16)
        with torch.no_grad():
            maps = backbone.attention_maps(images)  # all queries at once, not streamed
        prefix = backbone.num_prefix_tokens  # the class token (pool: cls, the default)
        assert prefix == 1
        distance = torch.stack([mean_attention_distance(m, (5, 5), prefix) for m in maps])
        aligned = [aligned_attention_map(m, (5, 5), prefix) for m in maps]
        offset = attention_offset(torch.stack(aligned))
        local = set(offset_local_heads(distance, offset, grid_size=(5, 5)))
        for r in (r for r in rows if r["seed"] == seed):
            b, h = r["block"], r["head"]
            assert r["distance"] == pytest.approx(float(distance[b, h]), abs=1e-9)
            assert r["offset"] == pytest.approx(float(offset[b, h]), abs=1e-9)
            assert r["offset_local"] == float((b, h) in local)
            assert 0.0 < r["distance"] < 2**0.5  # the diagonal of the unit square


def test_the_table_averages_heads_then_seeds_and_counts_offset_local_heads(grid):
    rows = [
        {"seed": s, "block": b, "head": h, "distance": d, "offset_local": loc}
        for s, b, h, d, loc in [
            ("0", 0, 0, 0.2, 1), ("0", 0, 1, 0.4, 0), ("1", 0, 0, 0.4, 0), ("1", 0, 1, 0.6, 0),
        ]
    ]  # fmt: skip
    table = attention_table(rows, grid)
    # seed means 0.3 and 0.5: mean 0.4, t(1) half-width 12.706 * 0.1 = 1.271
    assert "| 2 | 0.400 ± 1.271 | 1 / 4 |" in table


def test_the_command_writes_the_csv_and_refuses_a_grid_that_has_not_run(grid, tmp_path, capsys):
    out = tmp_path / "attention.csv"
    experiment = grid.output_dir.parent / "tiny_attention.yaml"  # the fixture's grid file
    assert main([str(experiment), "--output-dir", str(grid.output_dir), "--out", str(out)]) == 0
    with open(out, newline="") as handle:
        written = list(csv.DictReader(handle))
    assert len(written) == 8 and "offset-local heads" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="run `ssl-biases sweep`"):
        main([str(experiment), "--output-dir", str(tmp_path / "empty"), "--out", str(out)])


def test_the_change_from_the_first_step_level_is_paired_by_seed():
    walmer = load_experiment("configs/experiment/walmer_cifar10.yaml")  # report.x: max_steps
    distance = {("1", "0"): (0.5, 0.5), ("1", "1"): (0.6, 0.6),  # (head 0, head 1) of block 0
                ("625", "0"): (0.3, 0.4), ("625", "1"): (0.4, 0.5)}  # fmt: skip
    rows = [
        {"method": "simclr", "max_steps": steps, "seed": seed, "block": 0, "head": head,
         "distance": d, "offset_local": int(steps == "625" and head == 0)}
        for (steps, seed), pair in distance.items() for head, d in enumerate(pair)
    ]  # fmt: skip
    levels, change = attention_table(rows, walmer).split("\n\n*Change")
    assert "| simclr | 1 | 2 | 0.550 ± 0.635 | 0 / 4 |" in levels  # seeds 0.5, 0.6
    assert "| simclr | 625 | 2 | 0.400 ± 0.635 | 2 / 4 |" in levels  # seeds 0.35, 0.45
    # per seed: 0.35 - 0.5 and 0.45 - 0.6, both -0.15: the paired interval has width 0
    assert "| simclr | 625 | 2 | **-0.150 ± 0.000** |" in change
    assert "| simclr | 1 |" not in change  # the first level is the reference
