"""benchmarks/gpu_check.py: the timing, the guarded sections and the data paths, on CPU."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpu_check():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks/gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_time_loop_splits_the_step_into_data_wait_and_compute(gpu_check):
    calls = []

    def next_views():
        time.sleep(0.04)  # the loader
        return torch.zeros(1)

    def step(views):
        calls.append(views)
        time.sleep(0.02)  # the model

    timing = gpu_check.time_loop(step, next_views, torch.device("cpu"), warmup=1, steps=3)
    assert len(calls) == 1 + 3 + 3  # warm-up, free-running pass, synchronised pass
    assert timing["data_wait_pct"] == pytest.approx(100 * 4 / 6, abs=8)
    assert timing["seconds_per_step"] == pytest.approx(0.06, abs=0.03)
    assert gpu_check.images_per_second(512, 0.1) == 10240  # both views counted
    assert gpu_check.mfu_percent(100e12, 0.5, 400.0) == pytest.approx(50.0)
    assert gpu_check.mfu_percent(1e12, 1.0, None) is None  # no known peak (a CPU)


def test_a_failing_section_is_recorded_and_the_others_still_written(gpu_check, tmp_path):
    results = {"meta": {"start": time.perf_counter()}, "throughput": {}, "device_ratio": {}}

    def broken():
        raise RuntimeError("CUDA out of memory")

    row = {"images_per_s": 900.0, "step_ms": 1.0, "data_wait_pct": 5.0, "mfu_pct": 41.0}
    row["tflop_per_step"] = 0.1
    gpu_check.guarded(results, results["throughput"], "vit_tiny/a_model", tmp_path, lambda: row)
    gpu_check.guarded(results, results["throughput"], "vit_tiny/c_device", tmp_path, broken)
    results["device_ratio"] = {"vit_tiny": 0.95, "resnet18_cifar": 0.5}
    gpu_check.guarded(results, results, "vit_s16", tmp_path, lambda: {**row, "batch_size": 128})
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["throughput"]["vit_tiny/a_model"]["images_per_s"] == 900.0
    assert "CUDA out of memory" in saved["throughput"]["vit_tiny/c_device"]["error"]
    table = (tmp_path / "results.md").read_text()
    assert "| vit_tiny | a_model | 900 | 5.0 | 41.0 |" in table
    assert "| vit_tiny | c_device | error: RuntimeError: CUDA out of memory" in table
    assert "vit_tiny: c_device / a_model images/s = 0.95 (meets" in table
    assert "resnet18_cifar: c_device / a_model images/s = 0.50 (misses" in table
    assert "MFU 41.0% (meets the goal >= 40%)" in table


def _jpeg_tree(root: Path, per_class: int) -> None:
    for split in ("train", "test"):
        for label, colour in enumerate(("red", "blue")):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (32, 32), colour).save(folder / f"{i:04d}.jpg")


def test_make_subset_copies_the_first_images_of_each_class(gpu_check, tmp_path):
    _jpeg_tree(tmp_path / "full", per_class=5)
    copied = gpu_check.make_subset(tmp_path / "full", tmp_path / "sub", 3, 2)
    assert copied == 2 * 3 + 2 * 2
    assert sorted(p.name for p in (tmp_path / "sub/train/class1").iterdir()) == [
        "0000.jpg",
        "0001.jpg",
        "0002.jpg",
    ]
    with pytest.raises(FileNotFoundError, match="class folders"):
        gpu_check.make_subset(tmp_path / "sub/train", tmp_path / "x", 1, 1)


def test_both_view_paths_give_normalised_pairs_of_views_from_a_jpeg_tree(gpu_check, tmp_path):
    _jpeg_tree(tmp_path / "data", per_class=8)
    sizes = replace(gpu_check.CPU_SMOKE, batch_size=4)
    for next_views in (
        gpu_check.worker_batches(sizes, str(tmp_path / "data"), workers=0),
        gpu_check.device_batches(sizes, str(tmp_path / "data")),
    ):
        views = next_views()
        assert views.shape == (8, 3, 32, 32) and views.dtype == torch.float32
        assert views.abs().max() < 3  # normalised (ImageNet statistics), not 0..255
        assert next_views().shape == (8, 3, 32, 32)  # the next batch, epoch after epoch
    datamodule = gpu_check.datamodule(sizes, None)
    assert datamodule.dataset_name == "shapes"  # no root: the generated fallback
