"""uint8 training batches for ``--data.augment device``, and the train set held on the device.

With ``augment: device`` the loader hands over :class:`RawBatch` (uint8 images, labels and the
``(epoch, index)`` keys the views are drawn from); with ``cache: device`` it hands over only
:class:`CacheKeys` and :class:`DeviceCache` gathers the images from a uint8 tensor that sits
on the training device (no worker processes, no host-to-device copy of images).
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, default_collate

from ssl_biases.data.datasets import ArrayDataset
from ssl_biases.data.sampler import EpochIndex


class RawBatch(NamedTuple):
    """``images`` uint8 ``[B, 3, H, W]``, ``labels`` ``[B]``, ``keys`` int64 ``[B, 2]``."""

    images: Tensor
    labels: Tensor
    keys: Tensor


class CacheKeys(NamedTuple):
    """``keys`` int64 ``[B, 2]``: the ``(epoch, index)`` of each sample of a cached batch."""

    keys: Tensor


def _key(key: EpochIndex | int) -> tuple[int, int]:
    epoch, index = key if isinstance(key, tuple) else (0, int(key))
    return int(epoch), int(index)


class RawImages(Dataset):
    """``RawBatch`` items of a ``(PIL image, label)`` dataset: the image as uint8 ``[3, H, W]``."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: EpochIndex | int) -> RawBatch:
        epoch, index = _key(key)
        image, label = self.dataset[index]
        pixels = torch.from_numpy(np.array(image.convert("RGB"), dtype=np.uint8))  # [H, W, 3]
        return RawBatch(pixels.permute(2, 0, 1), torch.tensor(label), torch.tensor([epoch, index]))

    @staticmethod
    def collate(items: list[RawBatch]) -> RawBatch:
        """Stacks the items; images of different sizes are a user error."""
        sizes = sorted({tuple(item.images.shape[1:]) for item in items})
        if len(sizes) > 1:
            raise ValueError(
                f"--data.augment device batches whole images, so they must have one size; "
                f"found {sizes}. Resize the images on disk or use --data.augment workers."
            )
        return default_collate(items)


class KeyDataset(Dataset):
    """The ``(epoch, index)`` keys of ``size`` samples (what the device cache gathers)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key: EpochIndex | int) -> Tensor:
        return torch.tensor(_key(key))  # [2]

    @staticmethod
    def collate(items: list[Tensor]) -> CacheKeys:
        return CacheKeys(torch.stack(items))  # [B, 2]


def available_bytes(device: torch.device) -> int | None:
    """Free memory of ``device`` in bytes (host memory for the CPU; ``None`` if unknown)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        if not os.path.exists("/proc/meminfo"):
            return None
        with open("/proc/meminfo") as handle:
            fields = dict(line.split(":", 1) for line in handle)
        return int(fields["MemAvailable"].split()[0]) * 1024


class DeviceCache:
    """The decoded train set as uint8 ``[N, 3, H, W]``, moved to the device on first use.

    Args:
        dataset: The decoded train set (``decode_to_memory``).
    """

    def __init__(self, dataset: ArrayDataset) -> None:
        channels_first = np.ascontiguousarray(dataset.images.transpose(0, 3, 1, 2))
        self.images = torch.from_numpy(channels_first)  # [N, 3, H, W]
        self.labels = torch.as_tensor(dataset.targets, dtype=torch.int64)  # [N]

    @property
    def nbytes(self) -> int:
        return self.images.numel() * self.images.element_size()

    def to(self, device: torch.device) -> None:
        """Moves the set to ``device``; too large a set fails naming both sizes."""
        if self.images.device == device:
            return
        free = available_bytes(device)
        if free is not None and self.nbytes > free:
            raise ValueError(
                f"--data.cache device needs {self.nbytes / 2**20:.1f} MiB for the train set, "
                f"but {device} has {free / 2**20:.1f} MiB free: use --data.cache memory, "
                "fewer images (--data.max_train_samples) or a smaller image size."
            )
        self.images = self.images.to(device)
        self.labels = self.labels.to(device)

    def gather(self, keys: Tensor) -> RawBatch:
        """The batch of samples ``keys`` ``[B, 2]``, gathered on the keys' device."""
        self.to(keys.device)
        index = keys[:, 1]  # [B]
        return RawBatch(self.images[index], self.labels[index], keys)
