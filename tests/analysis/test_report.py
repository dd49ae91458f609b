"""The report computation: checkpoints and a data module -> report dict and arrays."""

import pytest
import torch

from ssl_biases.analysis.report import block_matrix, build_report, load_checkpoint_backbone
from ssl_biases.data.datamodule import SSLDataModule

TINY_DATA = {"dataset": "shapes", "shapes_size": 64, "num_workers": 0,
             "max_probe_train_samples": 64, "probe_batch_size": 16}  # fmt: skip


@pytest.mark.parametrize("depth", [3, 1])  # one block: 1x1 CKA matrices
def test_same_checkpoint_twice_gives_cross_cka_equal_to_self_cka(tmp_path, write_checkpoint, depth):
    ckpt = str(write_checkpoint(tmp_path / "a.ckpt", 0, depth=depth))
    report, arrays = build_report([ckpt, ckpt], SSLDataModule(**TINY_DATA), None, (1,), (0,))
    (first, second), (pair, cross) = report["models"], *report["cka_between"].items()
    assert (first, second) == ("a", "a-1") and pair == f"{first} vs {second}"  # made unique
    torch.testing.assert_close(block_matrix(cross), block_matrix(report["models"][first]["cka"]))
    assert block_matrix(cross).shape == (depth, depth)
    assert report["models"][first]["cka"]["block0"]["block0"] == pytest.approx(1.0)
    assert arrays["a/aligned_maps"].shape == (depth, 2, 7, 7)  # [L, H, 2K-1, 2K-1], K = 4
    # The data module's init arguments, defaults included, are recorded.
    assert report["data"]["init_args"] == {**SSLDataModule(**TINY_DATA).hparams}
    assert report["data"]["init_args"]["shapes_size"] == 64 and report["data"]["bank_size"] == 64
    assert report["models"]["a"]["global_step"] == 7
    assert report["protocol"]["fewshot"].startswith(
        "big_vision fewshot_lsr, all classes, shots [1],"
    )


def test_user_errors_say_what_to_do(tmp_path, write_checkpoint):
    ckpt = str(write_checkpoint(tmp_path / "a.ckpt", 0))
    with pytest.raises(ValueError, match="--data.image_size 32"):
        build_report([ckpt], SSLDataModule(**{**TINY_DATA, "image_size": 64}))
    with pytest.raises(ValueError, match="give one --label per --ckpt, got 2 for 1"):
        build_report([ckpt], SSLDataModule(**TINY_DATA), ["a", "b"])
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        load_checkpoint_backbone(tmp_path / "missing.ckpt")
