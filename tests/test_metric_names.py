"""The metric-name constants: the names of earlier runs, and every name a fit logs is one."""

from __future__ import annotations

from pathlib import Path

import ssl_biases.metric_names as names
from ssl_biases.cli import cli_main

from helpers import CONFIGS, read_metrics, tiny_args


def test_the_names_are_those_of_earlier_runs() -> None:
    assert names.VAL_KNN_TOP1 == "val/knn_top1" and names.VAL_KNN_TOP5 == "val/knn_top5"
    assert names.VAL_LINEAR_TOP1 == "val/linear_top1"
    assert names.VAL_OFFLINE_LINEAR_TOP1 == "val/offline_linear_top1"
    assert names.VAL_MASKED_MSE == "val/masked_mse" and names.TRAIN_LOSS == "train/loss"
    assert names.VAL_RANKME == "val/rankme"
    assert names.fewshot_metric(5) == "test/fewshot_5shot"
    assert names.staged("val", names.fewshot_std_name(10)) == "val/fewshot_10shot_std"
    assert names.staged("val", names.knn_top1_name("knn200")) == "val/knn200_top1"
    assert names.staged("val", names.knn_top1_name(), "lensed") == "val/knn_top1_lensed"
    layerwise = names.staged("test", names.layerwise_knn_top1_name(3))
    assert layerwise == "test/layerwise_knn_top1_block3"


def module_names(depth: int, shots: tuple[int, ...]) -> set[str]:
    """Every name the module gives for a run of ``depth`` blocks and few-shot ``shots``."""
    fixed = {v for k, v in vars(names).items() if k.isupper() and isinstance(v, str)}
    per_stage = {names.LINEAR_TOP1, names.MASKED_MSE, names.OFFLINE_LINEAR_TOP1,
                 names.knn_top1_name(), names.knn_top5_name(), names.LAYERWISE_BEST_BLOCK,
                 names.RANKME,
                 *(names.layerwise_knn_top1_name(i) for i in range(depth)),
                 *(names.fewshot_name(k) for k in shots),
                 *(names.fewshot_std_name(k) for k in shots)}  # fmt: skip
    staged = {
        names.staged(stage, name, feature_set)
        for stage in (names.VAL, names.TEST)
        for name in per_stage
        for feature_set in ("", "lensed", "concat")  # the lens's feature sets
    }
    return fixed | staged


def test_every_name_a_tiny_fit_and_test_log_is_a_name_of_the_module(
    tmp_path, monkeypatch, tiny_backbone_config
) -> None:
    monkeypatch.chdir(tmp_path)
    args = tiny_args(
        tiny_backbone_config,
        "--config", str(CONFIGS / "method/lens.yaml"),
        "--model.init_args.lens.init_args.width", "4",
        "--model.projection_hidden_dim", "32",
        "--data.image_size", "16",
        "--data.shapes_size", "64",
        "--data.batch_size", "16",
        "--trainer.max_epochs", "1",
        "--fewshot.shots", "[1, 2]",
        "--fewshot.every_n_validations", "1",
        "--layerwise.every_n_epochs", "1",
    )  # fmt: skip
    cli = cli_main(["fit", *args])
    logged = set(read_metrics(Path(cli.trainer.log_dir))[0])
    cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    logged |= set(cli.trainer.callback_metrics)
    ours = {name for name in logged if name.split("/")[0] in names.STAGES}
    assert {"train/loss", "train/lens_rec_loss", "val/knn_top1_lensed", "val/linear_top1",
            "val/fewshot_1shot", "val/layerwise_best_block", "test/knn_top1"} <= ours  # fmt: skip
    assert ours <= module_names(depth=2, shots=(1, 2)), ours - module_names(2, (1, 2))
