"""A training order that a resumed run continues exactly.

The order of an epoch is a permutation drawn from ``(seed, epoch)`` alone (torch's
:class:`~torch.utils.data.DistributedSampler` permutation, sharded over processes), and the
random augmentation of a sample is drawn from ``(seed, epoch, index)`` alone. Neither depends
on the global random state, on the number of DataLoader workers or on how far the loader ran
ahead of training, so a run restarted from a mid-epoch checkpoint can skip exactly the batches
it had already trained on and see the same views as the uninterrupted run.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sized
from contextlib import contextmanager
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler, get_worker_info


class EpochIndex(NamedTuple):
    """A dataset index together with the epoch that draws it (seeds its augmentation)."""

    epoch: int
    index: int


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for the augmentation of sample ``index`` in ``epoch`` (SeedSequence mix)."""
    words = np.random.SeedSequence([seed, epoch, index]).generate_state(2, dtype=np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


@contextmanager
def seeded_rng(seed: int) -> Iterator[None]:
    """Seeds torch (CPU), numpy and python ``random`` for a block and restores them after.

    In a DataLoader worker the generators serve the data alone, so they are only seeded
    (saving and restoring numpy's and python's states costs ~100 us per sample).
    """
    if get_worker_info() is not None:
        torch.default_generator.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        yield
        return
    torch_state = torch.get_rng_state()
    numpy_state = np.random.get_state()
    python_state = random.getstate()
    torch.default_generator.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(torch_state)
        np.random.set_state(numpy_state)
        random.setstate(python_state)


class SeededViews(Dataset):
    """``(transform(image), label)`` with the transform's randomness seeded per sample.

    Indexed by :class:`EpochIndex` (what :class:`ResumableSampler` yields) or by a plain int
    (epoch 0).

    Args:
        dataset: ``(image, label)`` pairs.
        transform: The (random) view transform of the method.
        seed: Base seed of the augmentations.
    """

    def __init__(self, dataset: Dataset, transform: Callable[[Any], Any], seed: int) -> None:
        self.dataset = dataset
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: EpochIndex | int) -> tuple[Any, int]:
        epoch, index = key if isinstance(key, tuple) else (0, int(key))
        image, label = self.dataset[index]
        with seeded_rng(sample_seed(self.seed, epoch, index)):
            views = self.transform(image)
        return views, label


class ResumableSampler(DistributedSampler):
    """Shuffled ``EpochIndex`` items whose order depends on ``(seed, epoch)`` only.

    A ``DistributedSampler`` (so Lightning leaves it in place under DDP) that can start an
    epoch part-way: :meth:`resume` sets the epoch and how many of this process's samples were
    already consumed, and the next iteration skips them. ``len()`` stays the full per-epoch
    length, as Lightning's loops expect of a resumed loader.

    Args:
        dataset: The dataset to sample (only its length is used).
        seed: Seed of the permutation.
        num_replicas: Processes sharing the epoch; ``None`` reads the process group (1 without).
        rank: This process's rank; ``None`` reads the process group (0 without).
    """

    def __init__(
        self,
        dataset: Sized,
        seed: int,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if num_replicas is None:
            num_replicas = torch.distributed.get_world_size() if distributed else 1
        if rank is None:
            rank = torch.distributed.get_rank() if distributed else 0
        super().__init__(
            dataset,  # type: ignore[arg-type]
            num_replicas=num_replicas,
            rank=rank,
            shuffle=True,
            seed=seed,
            drop_last=True,
        )
        self.start = 0

    def resume(self, epoch: int, consumed: int) -> None:
        """Continue ``epoch`` after the first ``consumed`` samples of this process."""
        if not 0 <= consumed <= self.num_samples:
            raise ValueError(f"consumed must be in [0, {self.num_samples}], got {consumed}")
        self.epoch = epoch
        self.start = consumed

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.start = 0
        super().set_epoch(epoch)

    def __iter__(self) -> Iterator[EpochIndex]:  # type: ignore[override]
        indices = list(super().__iter__())  # this rank's share of the (seed, epoch) permutation
        start, self.start = self.start, 0
        return iter([EpochIndex(self.epoch, index) for index in indices[start:]])
