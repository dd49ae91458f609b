"""TensorBoard HParams: a fit writes its knobs and final metrics; a sweep's cells share a root."""

from __future__ import annotations

from pathlib import Path

import yaml
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
from tensorboard.plugins.hparams import metadata

from ssl_biases.analysis.tensorboard import _flat
from ssl_biases.cli import cli_main
from ssl_biases.experiments.sweep import logger_config
from ssl_biases.metric_names import VAL_KNN_TOP1, VAL_LINEAR_TOP1
from ssl_biases.run.hparams import HP_METRIC, primary_metric, session_hparams, write_hparams

from helpers import tiny_args, write_tiny_backbone


def read_events(run_dir: Path) -> EventAccumulator:
    """Every event file of a run directory, all values kept."""
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events


def knobs_of(events: EventAccumulator) -> dict[str, object]:
    """The knobs of a run's HParams session (and no per-run experiment summary)."""
    content = events.PluginTagToContent(metadata.PLUGIN_NAME)
    assert metadata.EXPERIMENT_TAG not in content  # TensorBoard then unions every run's knobs
    return session_hparams(content)


def test_the_primary_metric_is_the_monitor_then_knn_then_linear():
    metrics = {VAL_KNN_TOP1: 0.5, VAL_LINEAR_TOP1: 0.4, "val/knn_top5": 0.9}
    assert primary_metric(metrics) == VAL_KNN_TOP1
    assert primary_metric(metrics, monitor="val/knn_top5") == "val/knn_top5"
    assert primary_metric({VAL_LINEAR_TOP1: 0.4}, monitor="val/missing") == VAL_LINEAR_TOP1
    assert primary_metric({"val/masked_mse": 0.1}) is None


def test_hp_metric_is_the_primary_probe_and_the_other_metrics_are_not_logged_again(tmp_path):
    logger = TensorBoardLogger(str(tmp_path), name="", version=0)
    logger.log_metrics({VAL_KNN_TOP1: 0.25, VAL_LINEAR_TOP1: 0.5}, step=3)
    final = {VAL_KNN_TOP1: 0.25, VAL_LINEAR_TOP1: 0.5}
    written = write_hparams(logger, {"method": "SimCLR", "backbone/width": 32}, final, step=3)
    assert written == {HP_METRIC: 0.25, **final}
    write_hparams(logger, {"method": "SimCLR"}, final, step=4, monitor=VAL_LINEAR_TOP1)
    events = read_events(Path(logger.log_dir))
    assert knobs_of(events) == {"method": "SimCLR", "backbone/width": 32.0}  # the first session
    assert [(s.step, s.value) for s in events.Scalars(HP_METRIC)] == [(3, 0.25), (4, 0.5)]
    assert len(events.Scalars(VAL_KNN_TOP1)) == 1  # logged once, by the run itself


def test_nested_method_knobs_are_flattened_into_their_own_columns():
    values = {"temperature": 0.2, "training": {"warmup_fraction": 0.05, "_private": 1}, "_x": 2}
    assert _flat("method", values) == {
        "method/temperature": 0.2,
        "method/training/warmup_fraction": 0.05,
    }


def fit_cell(tmp_path: Path, run_dir: Path, mixer: str, *extra: str):
    """A tiny 2-epoch SimCLR fit logging where a sweep's cell would (its ``logger.yaml``)."""
    logger = tmp_path / f"logger_{mixer}.yaml"
    logger.write_text(yaml.safe_dump(logger_config(run_dir)))
    args = [
        "fit",
        *tiny_args(write_tiny_backbone(tmp_path)),
        "--config", str(logger),
        "--model.init_args.backbone.init_args.token_mixer", mixer,
        "--model.init_args.backbone.init_args.pool", "cls" if "attention" in mixer else "gap",
        "--data.image_size", "16",
        "--data.shapes_size", "64",
        "--data.max_probe_train_samples", "32",
        "--trainer.max_epochs", "2",
        "--tensorboard.attention", "false",
        "--tensorboard.projector", "false",
        "--tensorboard.views", "false",
        *extra,
    ]  # fmt: skip
    return cli_main(args)


def test_a_sweeps_cells_are_sessions_under_one_log_root(tmp_path):
    """Two cells logging as ``ssl-biases sweep`` places them (``sweep.logger_config``):
    ``tensorboard --logdir SWEEP_DIR`` finds both sessions, each with its own knobs and
    ``hp_metric`` equal to its final ``val/knn_top1``."""
    root = tmp_path / "sweep"
    for mixer in ("conv", "pool"):
        steps = fit_cell(tmp_path, root / f"token_mixer-{mixer}", mixer).trainer.global_step
    multiplexer = EventMultiplexer().AddRunsFromDirectory(str(root))
    multiplexer.Reload()
    content = multiplexer.PluginRunToTagToContent(metadata.PLUGIN_NAME)
    assert sorted(content) == ["token_mixer-conv/version_0", "token_mixer-pool/version_0"]
    for run, tags in content.items():
        assert metadata.EXPERIMENT_TAG not in tags  # TensorBoard: the union of the cells' knobs
        knobs = session_hparams(tags)
        assert knobs["backbone/token_mixer"] == run.split("/")[0].split("-")[1]
        assert knobs["method"] == "SimCLR" and knobs["backbone/width"] == 32
        assert knobs["data/batch_size"] == 32
        knn, hp_metric = (multiplexer.Scalars(run, tag) for tag in (VAL_KNN_TOP1, HP_METRIC))
        assert len(knn) == 2 and len(hp_metric) == 1  # two validations; hp_metric the last's
        assert hp_metric[0].value == knn[-1].value and hp_metric[0].step == steps == 4
