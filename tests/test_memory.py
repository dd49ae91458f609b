"""Issue 7: a run's memory does not grow from epoch to epoch (no tensors kept across epochs)."""

from __future__ import annotations

import gc
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from ssl_biases.cli import SSLBiasesCLI

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY_BACKBONE = (
    "model: {init_args: {backbone: {class_path: ssl_biases.backbones.IsotropicNet, "
    "init_args: {width: 32, depth: 2, num_heads: 2, patch_size: 4}}}}\n"
)


def resident_mib() -> float:
    """Current resident set size of this process (``/proc/self/statm``)."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * 4096 / 2**20


def live_tensors() -> tuple[int, int]:
    """(number of live tensors, bytes of their distinct storages)."""
    gc.collect()
    count, storages = 0, {}
    for obj in gc.get_objects():
        if isinstance(obj, torch.Tensor) and obj.device.type == "cpu":
            storage = obj.untyped_storage()
            try:
                pointer = storage.data_ptr()
            except RuntimeError:  # a fake tensor left by another test's torch.compile trace
                continue
            count += 1
            storages[pointer] = storage.nbytes()
    return count, sum(storages.values())


class MemoryRecorder(pl.Callback):
    """Records RSS and live tensors after every training epoch (after its validation)."""

    def __init__(self) -> None:
        self.rss: list[float] = []
        self.tensors: list[tuple[int, int]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.tensors.append(live_tensors())
        self.rss.append(resident_mib())


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux /proc")
def test_memory_does_not_grow_across_epochs(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bb.yaml").write_text(TINY_BACKBONE)
    recorder = MemoryRecorder()

    class RecordingCLI(SSLBiasesCLI):
        def _instantiate_trainer(self, config, callbacks):  # noqa: ANN001, ANN202
            return super()._instantiate_trainer(config, [*callbacks, recorder])

    RecordingCLI(
        args=[
            "fit",
            "--config", str(CONFIGS / "method/simclr.yaml"),
            "--config", str(tmp_path / "bb.yaml"),
            "--config", str(CONFIGS / "data/shapes.yaml"),
            "--data.image_size", "16",
            "--data.shapes_size", "64",
            "--data.batch_size", "16",
            "--data.num_workers", "0",
            "--trainer.max_epochs", "5",
            "--trainer.enable_progress_bar", "false",
        ]
    )  # fmt: skip
    assert len(recorder.rss) == 5
    # Epoch 1 allocates the optimizer state and the loggers' buffers; from then on nothing may
    # accumulate: the same tensors are alive after every epoch (the last is left out: probes
    # that run every n epochs also run there and log new metric names), and RSS stays flat.
    counts = [count for count, _ in recorder.tensors[1:-1]]
    sizes = [size for _, size in recorder.tensors[1:-1]]
    assert max(counts) == min(counts), recorder.tensors
    assert max(sizes) - min(sizes) <= 64 * 1024, recorder.tensors
    assert recorder.rss[-1] - recorder.rss[1] < 16.0, recorder.rss
