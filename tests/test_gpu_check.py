"""benchmarks/gpu_bundle.py, fit_timer.py, gpu_check.py and gpu_check.sh, on CPU."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_biases.data.datasets import load_cifar

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bundle():
    return _load("gpu_bundle")


@pytest.fixture(scope="module")
def gpu_check():
    return _load("gpu_check")


@pytest.fixture(scope="module")
def fit_timer():
    return _load("fit_timer")


def test_missing_requirements_walk_the_closure_and_stop_at_the_image(bundle):
    requires = {
        "a": ["c>=1", "d; extra == 'x'", "e; python_version < '3.11'", "Image_Pkg"],
        "c": ["image-pkg", "f"],
        "d": [],
        "f": None,
    }
    found = bundle.missing_requirements(
        ["a[x]>=1", "image_pkg"],
        {"image-pkg"},
        requires=lambda name: requires[name],
        version=lambda name: f"{name}-1.0",
    )
    # e only for Python < 3.11 (the image has 3.12); the image's package is not entered
    assert found == {"a": "a-1.0", "c": "c-1.0", "d": "d-1.0", "f": "f-1.0"}


def test_the_bundle_holds_what_the_gpu_image_lacks(bundle):
    image = bundle.read_image_packages()
    assert {"torch", "lightning", "timm", "typing-extensions"} <= image
    missing = bundle.missing_requirements(bundle.setup_cfg_requirements(), image)
    # issue 28's list, hydra-core's (lightly's) and submitit (setup.cfg)
    assert {
        "lightly",
        "kornia",
        "kornia-rs",
        "jsonargparse",
        "docstring-parser",
        "typeshed-client",
        "hydra-core",
        "submitit",
    } <= set(missing)
    assert not set(missing) & image


def test_wheels_the_image_would_refuse_are_named(bundle, tmp_path):
    def wheel(name: str, *lines: str) -> None:
        with zipfile.ZipFile(tmp_path / f"{name}-1.0-py3-none-any.whl", "w") as archive:
            archive.writestr(f"{name}-1.0.dist-info/METADATA", "\n".join(lines) + "\n")

    wheel("fine", "Name: fine", "Requires-Python: >=3.10", "Requires-Dist: torch>=2.5.1")
    wheel(
        "newer",
        "Name: newer",
        "Requires-Python: >=3.13",
        "Requires-Dist: torch>=2.12",
        'Requires-Dist: numpy<2; extra == "old"',  # an extra nobody asks for
        "Requires-Dist: lightning>=9",  # a version the image list does not give
    )
    image = {"torch": "2.11.0", "numpy": "2.5.2", "lightning": None}
    assert bundle.wheel_conflicts(tmp_path, image) == [
        "newer-1.0-py3-none-any.whl: Requires-Python >=3.13",
        "newer-1.0-py3-none-any.whl: needs torch>=2.12, the image has 2.11.0",
    ]
    versions = bundle.read_image_versions()
    assert versions["torch"] == "2.11.0" and versions["timm"] is None


def _jpeg_tree(root: Path, per_class: int) -> None:
    for split in ("train", "test"):
        for label in (0, 1):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (32, 32), (i * 20, 100, 255 * label)).save(folder / f"{i:04d}.png")


def test_the_cifar_subset_reads_back_as_the_cifar10_dataset(bundle, tmp_path):
    _jpeg_tree(tmp_path / "jpeg", per_class=4)
    counts = bundle.make_cifar_subset(tmp_path / "jpeg", tmp_path / "subset.npz", 3, 2)
    assert counts == {"train": 6, "test": 4}
    root = bundle.write_cifar_batches(tmp_path / "subset.npz", tmp_path / "data")
    train, test = load_cifar(root, "train"), load_cifar(root, "test")
    assert len(train) == 6 and len(test) == 4
    assert train.classes == ["class0", "class1"] and train.targets == [0, 0, 0, 1, 1, 1]
    pixel = np.asarray(Image.open(tmp_path / "jpeg/train/class1/0002.png"))
    assert np.array_equal(train.images[5], pixel)  # the third image of class 1, exactly
    with pytest.raises(FileNotFoundError, match="class folders"):
        bundle.make_cifar_subset(tmp_path / "jpeg/train", tmp_path / "x.npz", 1, 1)
    with pytest.raises(FileNotFoundError, match="gpu_bundle.sh"):
        bundle.write_cifar_batches(tmp_path / "none.npz", tmp_path / "data")


def test_check_imports_names_the_missing_module(bundle, capsys):
    assert bundle.check_imports({"json": "", "no_such_module_28": ""}) == [
        "no_such_module_28: not found"  # found missing before anything is imported
    ]
    assert bundle.check_imports({"json": "", "email.utils": ""}) == []
    assert "email.utils" in capsys.readouterr().out


def test_fit_step_timer_times_the_steps_after_the_warmup_and_stops(fit_timer, tmp_path):
    timer = fit_timer.FitStepTimer(str(tmp_path / "t.json"), warmup=2, steps=3)
    trainer = SimpleNamespace(should_stop=False)
    module = SimpleNamespace(device=torch.device("cpu"))
    batch = ([torch.zeros(4, 3, 8, 8), torch.zeros(4, 3, 8, 8)], torch.zeros(4))
    for step in range(5):
        timer.on_train_batch_start(trainer, module, batch, step)
        if step == 0:
            torch.randn(8, 16) @ torch.randn(16, 32)  # 2 * 8 * 16 * 32 FLOPs, counted
        time.sleep(0.03 if step >= 2 else 0.0)
        timer.on_train_batch_end(trainer, module, None, batch, step)
        assert trainer.should_stop == (step == 4)
    result = json.loads((tmp_path / "t.json").read_text())
    assert result["flops_per_step"] == 2 * 8 * 16 * 32
    assert result["images_per_step"] == 8  # both views
    assert result["step_ms_median"] == pytest.approx(30, abs=25)
    assert result["images_per_s"] == pytest.approx(8 / (result["step_ms_median"] / 1000))
    with pytest.raises(ValueError, match="warmup"):
        fit_timer.FitStepTimer("x.json", warmup=0)


def test_ready_views_make_the_views_once(fit_timer):
    calls = []
    ready = fit_timer.ReadyViews(lambda images, keys: calls.append(1) or [images * 2])
    first = ready(torch.ones(2), torch.zeros(2, 2))
    assert ready(torch.zeros(2), torch.ones(2, 2)) is first and len(calls) == 1


def test_every_measurement_is_saved_with_the_ratios_and_a_failure_recorded(gpu_check, tmp_path):
    results = {"meta": {"start": time.perf_counter()}, "fit": {}, "ratios": {}}
    row = {"images_per_s": 1000.0, "step_ms_median": 2.0, "step_ms_mean": 2.1, "mfu_pct": 41.0}
    fit = results["fit"]
    gpu_check.guarded(results, fit, "vit_tiny/a_ready", tmp_path, lambda: row)
    gpu_check.guarded(
        results, fit, "vit_tiny/b_workers", tmp_path, lambda: {**row, "images_per_s": 500.0}
    )

    def broken():
        raise RuntimeError("CUDA out of memory")

    gpu_check.guarded(results, fit, "vit_tiny/c_device", tmp_path, broken)
    results["ratios"]["vit_tiny"] = gpu_check.ratios(fit, "vit_tiny")
    assert results["ratios"]["vit_tiny"] == {"b/a": 0.5}  # no c/a without (c)
    gpu_check.save(results, tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["fit"]["vit_tiny/a_ready"]["images_per_s"] == 1000.0
    assert "CUDA out of memory" in saved["fit"]["vit_tiny/c_device"]["error"]
    table = (tmp_path / "results.md").read_text()
    assert "| vit_tiny | a_ready | 1000 | 2.0 | 2.1 | 41.0 |" in table
    assert "| vit_tiny | c_device | error: RuntimeError: CUDA out of memory" in table
    assert "vit_tiny: b/a images/s = 0.50" in table
    fit["vit_tiny/c_device"] = {**row, "images_per_s": 950.0}
    assert gpu_check.ratios(fit, "vit_tiny")["c/a"] == pytest.approx(0.95)
    assert gpu_check.mfu_percent(100e12, 0.5, 400.0) == pytest.approx(50.0)
    assert gpu_check.mfu_percent(1e12, 1.0, None) is None  # no known peak (a CPU)


def test_the_timed_fit_is_the_cli_with_the_timer_appended(gpu_check, tmp_path):
    sizes = gpu_check.GPU
    argv = gpu_check.fit_command(sizes, "vit_tiny", "data", tmp_path, "--x=1")
    assert argv[1:4] == ["-m", "ssl_biases", "fit"]
    assert "--config=configs/trainer/gpu.yaml" in argv and argv[-1] == "--x=1"
    assert "--data.batch_size=512" in argv and "--config=configs/data/cifar10.yaml" in argv


@pytest.mark.slow
def test_gpu_check_sh_prepends_the_bundle_to_pythonpath_and_checks_imports(tmp_path):
    bundle = tmp_path / "bundle"
    (bundle / "wheels").mkdir(parents=True)
    (bundle / "requirements.txt").write_text("")
    site = tmp_path / "site"
    env = {**os.environ, "PY": sys.executable, "PYTHONPATH": "/kept/path", "GPU_SITE": str(site)}
    done = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", "--bundle", str(bundle), str(tmp_path / "out")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert f"PYTHONPATH={ROOT}:{site}:/kept/path" in done.stdout
    assert "lightly" in done.stdout and "jsonargparse" in done.stdout  # versions printed
    assert done.returncode != 0 and "cifar10_subset.npz not found" in done.stdout
    missing = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", "--bundle", str(tmp_path / "no"), str(tmp_path / "o")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert missing.returncode == 3 and "gpu_bundle.sh" in missing.stdout  # (stderr in the log)


@pytest.mark.slow
def test_a_timed_fit_runs_the_cli_and_stops_after_the_timed_steps(gpu_check, tmp_path):
    sizes = gpu_check.replace(
        gpu_check.CPU_SMOKE,
        batch_size=8,
        warmup=1,
        steps=2,
        extra=(*gpu_check.CPU_SMOKE.extra[:5], "--data.num_workers=0", "--data.shapes_size=64"),
    )
    row = gpu_check.timed_fit(sizes, "vit_tiny", "a_ready", None, tmp_path, tmp_path / "work")
    assert row["images_per_step"] == 2 * 8  # both views of 8 images
    assert row["steps"] == 2 and row["flops_per_step"] > 0
    log = (tmp_path / "fit_vit_tiny_a_ready.log").read_text()
    done = [int(n) for n in re.findall(r"\| *(\d+)/\d+ \[", log)]  # tqdm's "| 3/8 ["
    assert max(done) == 3  # warm-up + timed steps, then the timer stopped the fit


@pytest.mark.slow
def test_every_gpu_command_parses_before_a_loan_is_spent(gpu_check, tmp_path, monkeypatch):
    from ssl_biases.cli import cli_parser

    monkeypatch.chdir(ROOT)
    parser = cli_parser()
    sizes = gpu_check.GPU
    for backbone in sizes.backbones:
        for setting in gpu_check.SETTINGS:
            argv = gpu_check.timed_fit_command(sizes, backbone, setting, "data", tmp_path)
            config = parser.parse_args(argv[3:]).fit
            assert config.trainer.precision == "bf16-mixed" and config.data.batch_size == 512
            assert config.data.augment == ("workers" if setting == "b_workers" else "device")
            timer = config.trainer.callbacks[-1]
            assert timer.class_path == "fit_timer.FitStepTimer"
            assert timer.init_args.ready_views == (setting == "a_ready")
            assert config.trainer.max_steps == sizes.warmup + sizes.steps + 5
    commands = gpu_check.correctness_commands(sizes, "data", tmp_path)
    assert commands["random"][3] == "validate"
    for argv in commands.values():
        config = parser.parse_args(argv[3:])[argv[3]]
        assert (config.data.augment, config.data.cache) == ("device", "device")
        assert config.trainer.precision == "bf16-mixed"
    assert parser.parse_args(commands["trained"][3:]).fit.trainer.max_steps == 300
