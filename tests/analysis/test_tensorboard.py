"""TensorBoard summaries: views, attention maps, reconstructions, HPARAMS and the projector."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from torch import Tensor, nn

from ssl_biases.analysis.tensorboard import (
    TensorBoardSummaries,
    attention_heatmaps,
    denormalize,
    views_grid,
)
from ssl_biases.backbones import create_backbone
from ssl_biases.cli import cli_main

from helpers import tiny_args, write_tiny_backbone

GUIDANCE = {"images": 0, "scalars": 0, "tensors": 0}


def events(log_dir: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(log_dir), size_guidance=GUIDANCE)
    accumulator.Reload()
    return accumulator


def hparams_of(accumulator: EventAccumulator) -> tuple[dict, list[str]]:
    """(hparams of the session, its metric columns: the run's scalars) read from the events."""
    content = accumulator.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    assert "_hparams_/experiment" not in content  # TensorBoard: the union of the runs' knobs
    values = {
        key: value.string_value or value.number_value
        for key, value in start.session_start_info.hparams.items()
    }
    return values, accumulator.Tags()["scalars"]  # without an experiment: the metric columns


def grid_side(tiles: int, size: int, padding: int = 2) -> int:
    """Side of ``torchvision.utils.make_grid`` for ``tiles`` tiles of ``size`` pixels."""
    return tiles * (size + padding) + padding


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """2 epochs x 2 steps of SimCLR with a tiny attention IsotropicNet (class token)."""
    root = tmp_path_factory.mktemp("tb_run")
    args = [
        "fit",
        *tiny_args(write_tiny_backbone(root)),
        "--data.image_size", "16",
        "--data.shapes_size", "64",
        "--data.max_probe_train_samples", "32",
        "--trainer.max_epochs", "2",
        "--trainer.logger.save_dir", str(root / "runs"),
        "--tensorboard.num_images", "4",
        "--tensorboard.projector_samples", "10",
    ]  # fmt: skip
    return Path(cli_main(args).trainer.log_dir)


def test_tiny_run_logs_views_and_attention_of_every_block(tiny_run):
    accumulator = events(tiny_run)
    (views,) = accumulator.Images("views/train")  # once, at the start of training
    assert views.step == 0
    assert (views.width, views.height) == (grid_side(2, 16), grid_side(4, 16))  # 2 views x 4
    for block in (0, 1):
        maps = accumulator.Images(f"attention/block_{block}")
        assert [m.step for m in maps] == [2, 4]  # every validation
        assert (maps[0].width, maps[0].height) == (grid_side(1 + 2, 16), grid_side(4, 16))
    assert "attention/block_2" not in accumulator.Tags()["images"]
    assert "reconstruction/preview" not in accumulator.Tags()["images"]  # SimCLR has none


def test_tiny_run_shows_final_probe_metrics_with_the_knobs_in_hparams(tiny_run):
    accumulator = events(tiny_run)
    hparams, metric_tags = hparams_of(accumulator)
    assert hparams["method"] == "SimCLR" and hparams["backbone"] == "IsotropicNet"
    assert hparams["backbone/token_mixer"] == "attention" and hparams["backbone/pool"] == "cls"
    assert hparams["backbone/width"] == 32 and hparams["backbone/image_size"] == 16
    assert hparams["method/temperature"] == pytest.approx(0.2)
    assert hparams["data/dataset"] == "shapes" and hparams["trainer/max_epochs"] == 2
    assert {"val/knn_top1", "val/linear_top1", "val/offline_linear_top1"} <= set(metric_tags)
    with open(tiny_run / "metrics.csv") as handle:
        final = [float(r["val/knn_top1"]) for r in csv.DictReader(handle) if r["val/knn_top1"]][-1]
    assert accumulator.Scalars("val/knn_top1")[-1].value == pytest.approx(final)
    assert [s.step for s in accumulator.Scalars("val/knn_top1")] == [1, 3]  # once per validation


def test_tiny_run_writes_a_labelled_projector_view(tiny_run):
    config = (tiny_run / "projector_config.pbtxt").read_text()
    assert config.count("tensor_name") == 2  # one per validation
    folder = tiny_run / "00004/probe_queries"
    rows = (folder / "tensors.tsv").read_text().splitlines()
    assert len(rows) == 10 and len(rows[0].split("\t")) == 32
    names = (folder / "metadata.tsv").read_text().split()
    assert len(names) == 10 and set(names) <= {"circle", "square", "triangle", "cross"}
    assert (folder / "sprite.png").is_file()


def test_attention_heatmaps_read_the_class_token_row_or_the_received_mean():
    attention = torch.zeros(1, 2, 5, 5)  # [B, heads, 1 + 4, 1 + 4]
    attention[0, 0, 0, 1 + 3] = 1.0  # head 0: the class token looks at patch 3
    attention[0, 1, 0, 1 + 0] = 1.0  # head 1: at patch 0
    maps = attention_heatmaps(attention, num_prefix_tokens=1)  # [1, 2, 2, 2]
    assert maps[0, 0].tolist() == [[0.0, 0.0], [0.0, 1.0]]
    assert maps[0, 1].tolist() == [[1.0, 0.0], [0.0, 0.0]]
    uniform_to_first = torch.zeros(1, 1, 4, 4)
    uniform_to_first[..., 0] = 0.75
    uniform_to_first[..., 1:] = 0.25 / 3
    maps = attention_heatmaps(uniform_to_first, num_prefix_tokens=0)
    assert maps.flatten().tolist() == [1.0, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="square grid"):
        attention_heatmaps(torch.rand(1, 1, 6, 6), num_prefix_tokens=1)


def test_denormalize_inverts_the_normalisation_and_views_grid_upsamples_small_crops():
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.1)
    pixels = torch.rand(2, 3, 4, 4)
    normalised = (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(denormalize(normalised, mean, std), pixels)
    grid = views_grid([torch.rand(3, 3, 8, 8), torch.rand(3, 3, 4, 4)], num_images=2)
    assert grid.shape == (3, grid_side(2, 8), grid_side(2, 8))


class MaskedToy(pl.LightningModule):
    """A stand-in masked-modelling method with a known ``reconstruction_preview``."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = create_backbone("vit_tiny", image_size=16, width=32, depth=1, num_heads=2)

    def reconstruction_preview(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return images, torch.zeros_like(images), images.flip(-1)


def test_reconstructions_are_logged_and_every_part_has_a_switch(tmp_path):
    images = torch.rand(3, 3, 16, 16)
    for name, kwargs in [("on", {}), ("off", {"attention": False, "reconstructions": False})]:
        logger = TensorBoardLogger(str(tmp_path), name=name, version=0)
        trainer = pl.Trainer(logger=logger, accelerator="cpu", enable_progress_bar=False)
        module = MaskedToy().eval()
        callback = TensorBoardSummaries(projector=False, num_images=2, **kwargs)
        callback.on_validation_batch_end(trainer, module, None, (images, torch.zeros(3)), 0, 1)
        callback.on_validation_epoch_end(trainer, module)
        logger.experiment.flush()
        tags = events(Path(logger.log_dir)).Tags()["images"]
        if name == "on":
            assert sorted(tags) == ["attention/block_0", "reconstruction/preview"]
            preview = events(Path(logger.log_dir)).Images("reconstruction/preview")[0]
            assert (preview.width, preview.height) == (grid_side(3, 16), grid_side(2, 16))
        else:
            assert tags == []
    with pytest.raises(ValueError, match=">= 1"):
        TensorBoardSummaries(num_images=0)


def test_a_failing_summary_warns_and_switches_itself_off_instead_of_stopping_training(tmp_path):
    class Broken(MaskedToy):
        def reconstruction_preview(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            raise RuntimeError("decoder exploded")

    logger = TensorBoardLogger(str(tmp_path), name="broken", version=0)
    trainer = pl.Trainer(logger=logger, accelerator="cpu", enable_progress_bar=False)
    callback = TensorBoardSummaries(projector=False, attention=False, num_images=2)
    callback.on_validation_batch_end(
        trainer, Broken(), None, (torch.rand(2, 3, 16, 16), None), 0, 1
    )
    with pytest.warns(UserWarning, match="reconstructions summary failed.*decoder exploded"):
        callback.on_validation_epoch_end(trainer, Broken())
    assert callback.reconstructions is False


def test_no_tensorboard_logger_means_no_work():
    trainer = pl.Trainer(logger=False, accelerator="cpu", enable_progress_bar=False)
    callback = TensorBoardSummaries()
    callback.on_train_batch_start(trainer, nn.Module(), ([torch.rand(2, 3, 8, 8)], None), 0)
    assert callback._views_logged is False
