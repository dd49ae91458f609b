import json
from pathlib import Path

import pytest
import torch

from ssl_biases.analysis.report import block_matrix, load_checkpoint_backbone, load_report, main
from ssl_biases.backbones import IsotropicNet
from ssl_biases.run.checkpoint import BACKBONE_CONFIG_KEY as CHECKPOINT_KEY

SHAPES = Path(__file__).parents[2] / "configs" / "data" / "shapes.yaml"
DATA = [
    "--config", str(SHAPES), "--data.shapes_size", "64", "--data.num_workers", "0",
    "--data.max_probe_train_samples", "64",
    "--data.probe_batch_size", "16",
]  # fmt: skip


def write_checkpoint(path: Path, seed: int, **init_args) -> Path:
    """A checkpoint as `ssl-biases fit` writes it: backbone.* weights + the backbone config."""
    init_args = {"image_size": 32, "patch_size": 8, "width": 32, "depth": 2, "num_heads": 2,
                 **init_args}  # fmt: skip
    torch.manual_seed(seed)
    backbone = IsotropicNet(**init_args)
    state = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    config = {"class_path": "ssl_biases.backbones.IsotropicNet", "init_args": init_args}
    torch.save({"state_dict": state, CHECKPOINT_KEY: config, "global_step": 7}, path)
    return path


def test_analyze_end_to_end_writes_report_figures_and_tensorboard(tmp_path):
    vit = write_checkpoint(tmp_path / "vit.ckpt", 0)
    # No position embedding, mean pooling: a permutation of whole patches permutes the tokens
    # and leaves the embedding unchanged, so the patch-shuffle drop is 0 (arXiv 2105.01601).
    bag = write_checkpoint(tmp_path / "bag.ckpt", 1, pos_embed="none", pool="gap")
    out, tb = tmp_path / "out", tmp_path / "tb"
    main(["--ckpt", str(vit), "--ckpt", str(bag), "--label", "vit", "--label", "bag",
          "--output", str(out), "--tensorboard", str(tb), "--shots", "1", "5", "25",
          "--seeds", "0", "1", *DATA])  # fmt: skip
    report = load_report(out)
    assert set(report["models"]) == {"vit", "bag"}
    vit_r, bag_r = report["models"]["vit"], report["models"]["bag"]
    # Keyed by block and head; 2 blocks of 2 heads; distances within the unit square.
    distance = block_matrix(vit_r["attention"]["mean_distance"])
    assert list(vit_r["attention"]["mean_distance"]) == ["block0", "block1"]
    assert distance.shape == (2, 2) and bool(((distance > 0) & (distance < 1.5)).all())
    offset = block_matrix(vit_r["attention"]["offset"])
    assert bool((offset <= distance + 1e-9).all())  # Jensen: offset <= distance
    assert isinstance(vit_r["attention"]["offset_local_heads"], list)
    rule = {"max_distance": 0.3, "min_offset": 0.05, "min_directionality": 0.5}
    assert vit_r["attention"]["offset_local_rule"] == rule
    # CKA of a model with itself: ones on the diagonal; between two models: [2, 2] in [0, 1].
    ones = torch.ones(2, dtype=torch.float64)
    torch.testing.assert_close(block_matrix(vit_r["cka"]).diag(), ones)
    cross = block_matrix(report["cka_between"]["vit vs bag"])
    assert cross.shape == (2, 2) and bool(((cross > -0.2) & (cross < 1.0 + 1e-9)).all())
    assert list(vit_r["layerwise_knn_top1"]) == ["block0", "block1"]
    assert vit_r["layerwise_best_block"] in (0, 1)
    # 64 bank images of 4 classes: 25 shots cannot be drawn for every class and are skipped.
    assert set(vit_r["fewshot"]) == {"fewshot_1shot", "fewshot_1shot_std", "fewshot_5shot",
                                     "fewshot_5shot_std"}  # fmt: skip
    assert 0.0 <= vit_r["offline_linear_top1"] <= 1.0 and vit_r["global_step"] == 7
    assert bag_r["shuffle"]["patch"]["drop"] == pytest.approx(0.0, abs=1e-9)
    assert bag_r["shuffle"]["patch"]["relative"] == pytest.approx(1.0)
    assert report["data"]["init_args"]["shapes_size"] == 64
    del report["data"]["init_args"]
    assert report["data"] == {"dataset": "shapes", "root": None, "image_size": 32,
                              "bank_size": 64, "query_size": 16}  # fmt: skip
    pngs = {p.name for p in out.glob("*.png")}
    assert pngs == {
        "attention_distance.png", "layerwise_knn.png", "fewshot.png", "shuffle.png",
        "offset_heads_vit.png", "offset_heads_bag.png", "cka_vit.png", "cka_bag.png",
        "cka_vit_vs_bag.png",
    }  # fmt: skip
    assert all((out / name).stat().st_size > 1000 for name in pngs)
    assert json.loads((out / "report.json").read_text())["models"] == report["models"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tb))
    events.Reload()
    assert "analysis/cka_vit_vs_bag" in events.Tags()["images"]
    assert events.Images("analysis/fewshot")[0].step == 7


@pytest.mark.parametrize("depth", [3, 1])  # one block: 1x1 CKA matrices
def test_same_checkpoint_twice_gives_cross_cka_equal_to_self_cka(tmp_path, depth):
    ckpt = write_checkpoint(tmp_path / "a.ckpt", 0, depth=depth)
    main(["--ckpt", str(ckpt), "--ckpt", str(ckpt), "--output", str(tmp_path / "o"),
          "--shots", "1", "--seeds", "0", *DATA])  # fmt: skip
    report = load_report(tmp_path / "o" / "report.json")
    (first, second), (pair, cross) = report["models"], *report["cka_between"].items()
    assert pair == f"{first} vs {second}"  # labels made unique
    torch.testing.assert_close(block_matrix(cross), block_matrix(report["models"][first]["cka"]))
    assert block_matrix(cross).shape == (depth, depth)
    assert report["models"][first]["cka"]["block0"]["block0"] == pytest.approx(1.0)


def test_user_errors_say_what_to_do(tmp_path):
    ckpt = write_checkpoint(tmp_path / "a.ckpt", 0)
    with pytest.raises(ValueError, match="--data.image_size 32"):
        main(["--ckpt", str(ckpt), "--output", str(tmp_path), *DATA, "--data.image_size", "64"])
    with pytest.raises(FileNotFoundError, match="--config"):
        main(["--ckpt", str(ckpt), "--output", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        load_checkpoint_backbone(tmp_path / "missing.ckpt")
