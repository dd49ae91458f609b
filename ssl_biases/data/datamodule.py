"""`SSLDataModule`: (views, label) batches for pretraining, (image, label) batches for probes."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from ssl_biases.data.datasets import NORMALIZE, DatasetName, build_dataset, decode_to_memory
from ssl_biases.data.sampler import ResumableSampler, SeededViews
from ssl_biases.data.shapes import ShapesDataset
from ssl_biases.data.transforms import Normalization, probe_transform

ViewTransform = Callable[[Any], Any]


class TransformedDataset(Dataset):
    """Applies ``transform`` to the image of every ``(image, label)`` pair of ``dataset``."""

    def __init__(self, dataset: Dataset, transform: Callable[[Any], Any]) -> None:
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, label = self.dataset[index]
        return self.transform(image), label


def fixed_subset(dataset: Dataset, max_samples: int | None, seed: int) -> Dataset:
    """A fixed random subset of at most ``max_samples`` items (the same for every run)."""
    if max_samples is None or max_samples >= len(dataset):
        return dataset
    generator = torch.Generator().manual_seed(seed)
    indices = torch.randperm(len(dataset), generator=generator)[:max_samples].sort().values
    return Subset(dataset, indices.tolist())


class SSLDataModule(pl.LightningDataModule):
    """Serves pretraining views and probe images for one dataset.

    Training batches are ``(views, labels)`` where ``views`` is what the method's
    ``train_views`` transform returns per image (a list of tensors), collated per view.
    Validation and test use two loaders: index 0 is the probe *bank* (unaugmented train
    images, ``max_probe_train_samples`` of them) and index 1 the probe *queries* (the test
    split).

    Args:
        dataset: One of ``shapes``, ``cifar10``, ``cifar100``, ``stl10``, ``imagefolder``.
        root: Folder holding the dataset files (not needed for ``shapes``).
        image_size: The run's image side in pixels; the CLI links it to the backbone.
        batch_size: Pretraining batch size per process.
        probe_batch_size: Batch size of the probe loaders.
        num_workers: DataLoader worker processes.
        pin_memory: Pin host memory (useful with a GPU).
        max_train_samples: Pretrain on a fixed random subset of this size.
        max_probe_train_samples: Size of the probe bank (a fixed subset of the train split).
        max_val_samples: Evaluate probes on a fixed subset of the test split.
        shapes_size: Train-split size of ``shapes`` (its test split is a quarter of it).
        shapes_num_classes: Number of shape classes in ``shapes``.
        shapes_shortcut: Plant a per-image shortcut cue (a grating, see
            :func:`~ssl_biases.data.shapes.shortcut_grating`) in the *pretraining* images of
            ``shapes``; the probe bank and queries stay clean (Minderer et al. arXiv 2002.08822).
        seed: Seed of the subsets and of ``shapes``.
        skip_corrupt: Skip (replace by the next readable image, warn and count in
            ``data/skipped_images``) unreadable image files instead of failing on them.
        cache: Decode every image file once into an in-memory uint8 array (for
            small datasets of same-size images such as the CIFAR-10 JPEG tree; see
            docs/performance.md). Datasets read from arrays (cifar, stl10, shapes) are in
            memory already.
        predict_split: What ``ssl-biases predict`` embeds, unaugmented: ``test`` (the probe
            queries, ``max_val_samples`` of them) or ``probe_train`` (the probe bank,
            ``max_probe_train_samples`` of the train split; ``null`` for all of it).
    """

    def __init__(
        self,
        dataset: DatasetName = "shapes",
        root: str | None = None,
        image_size: int = 32,
        batch_size: int = 256,
        probe_batch_size: int = 512,
        num_workers: int = 2,
        pin_memory: bool = False,
        max_train_samples: int | None = None,
        max_probe_train_samples: int | None = 10000,
        max_val_samples: int | None = None,
        shapes_size: int = 2000,
        shapes_num_classes: int = 4,
        shapes_shortcut: bool = False,
        seed: int = 0,
        skip_corrupt: bool = False,
        cache: bool = False,
        predict_split: Literal["test", "probe_train"] = "test",
    ) -> None:
        super().__init__()
        if image_size < 8:
            raise ValueError(f"image_size must be at least 8 pixels, got {image_size}")
        for flag, size in (("batch_size", batch_size), ("probe_batch_size", probe_batch_size)):
            if size < 1:
                raise ValueError(f"--data.{flag} must be 1 or more, got {size}")
        if shapes_shortcut and dataset != "shapes":
            raise ValueError(
                f"shapes_shortcut plants its cue in `shapes` only, not in {dataset!r}: "
                "set --data.dataset shapes or --data.shapes_shortcut false."
            )
        self.shapes_shortcut = shapes_shortcut
        self.dataset_name = dataset
        self.root = root
        self.image_size = image_size
        self.batch_size = batch_size
        self.probe_batch_size = probe_batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.cache = cache
        if predict_split not in ("test", "probe_train"):
            raise ValueError(
                f"predict_split must be 'test' or 'probe_train', got {predict_split!r}"
            )
        self.predict_split = predict_split
        self.max_train_samples = max_train_samples
        self.max_probe_train_samples = max_probe_train_samples
        self.max_val_samples = max_val_samples
        self.seed = seed
        self._build_kwargs = {
            "root": root,
            "image_size": image_size,
            "shapes_size": shapes_size,
            "shapes_num_classes": shapes_num_classes,
            "seed": seed,
            "skip_corrupt": skip_corrupt,
        }
        # the training order and augmentations are drawn from this seed (the run's
        # seed_everything, else data.seed) and (epoch, index) alone, so a resume is exact.
        self.order_seed = int(os.environ.get("PL_GLOBAL_SEED", seed))
        self._train_sampler: ResumableSampler | None = None
        self._resume_position: tuple[int, int] | None = None
        self.norm = Normalization(*NORMALIZE[dataset])
        self.train_views: ViewTransform | None = None
        self._datasets: dict[str, Dataset] = {}

    def raw_dataset(self, split: str) -> Dataset:
        """The untransformed ``(PIL image, label)`` dataset of a split, built once."""
        if split not in self._datasets:
            dataset = build_dataset(self.dataset_name, split, **self._build_kwargs)
            if self.cache:  # decode once, index an array afterwards
                dataset = decode_to_memory(dataset, self.num_workers)
            self._datasets[split] = dataset
        return self._datasets[split]

    @property
    def num_classes(self) -> int:
        """Number of classes of the probe split (read from the data on disk)."""
        return len(self.raw_dataset("test").classes)

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.train_views is None:
            module = self.trainer.lightning_module if self.trainer is not None else None
            if module is None or not hasattr(module, "train_views"):
                raise ValueError(
                    "SSLDataModule needs the views of the method: set `datamodule.train_views` "
                    "or train an SSLMethod, whose `train_views` is used."
                )
            self.train_views = module.train_views(self.image_size, self.norm)

    def train_dataset(self) -> Dataset:
        """The pretraining dataset (a fixed subset when ``max_train_samples`` is set)."""
        if self.shapes_shortcut:  # the cue is planted in the pretraining images only
            shapes = build_dataset("shapes", "train", **self._build_kwargs)
            assert isinstance(shapes, ShapesDataset)
            raw = shapes.with_shortcut()
        else:
            raw = self.raw_dataset("train")
        dataset = fixed_subset(raw, self.max_train_samples, self.seed)
        if len(dataset) < self.batch_size:
            raise ValueError(
                f"batch_size {self.batch_size} is larger than the training set ({len(dataset)} "
                "images): lower --data.batch_size or use more data."
            )
        return SeededViews(dataset, self.train_views, self.order_seed)

    def probe_dataset(self, split: str) -> Dataset:
        """Unaugmented ``(tensor, label)`` images for probes: ``probe_train`` or ``test``."""
        if split == "probe_train":
            base = self.raw_dataset("probe_train" if self.dataset_name == "stl10" else "train")
            base = fixed_subset(base, self.max_probe_train_samples, self.seed + 1)
        else:
            base = fixed_subset(self.raw_dataset("test"), self.max_val_samples, self.seed + 2)
        return TransformedDataset(base, probe_transform(self.image_size, self.norm))

    def _loader(self, dataset: Dataset, batch_size: int, train: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=train,
            drop_last=train,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        dataset = self.train_dataset()
        sampler = ResumableSampler(dataset, seed=self.order_seed)
        if self.trainer is not None:  # a reloaded loader starts at the current epoch
            sampler.set_epoch(self.trainer.current_epoch)
        if self._resume_position is not None:  # continue the checkpoint's epoch
            epoch, batches_done = self._resume_position
            sampler.resume(epoch, min(batches_done * self.batch_size, sampler.num_samples))
            self._resume_position = None
        self._train_sampler = sampler
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=True,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(self.order_seed),  # leaves the global RNG
        )

    # exact resume of the data order; skipped images
    def state_dict(self) -> dict[str, Any]:
        """The training order's position, saved in every checkpoint for an exact resume."""
        state: dict[str, Any] = {"order_seed": self.order_seed}
        trainer = self.trainer
        if self._train_sampler is not None and trainer is not None:
            # batches handed to training in this epoch (not those the loader fetched ahead)
            done = trainer.fit_loop.epoch_loop.batch_progress.current.ready
            if done >= trainer.num_training_batches:  # the epoch is over: resume at the next
                state["epoch"], state["batches_done"] = self._train_sampler.epoch + 1, 0
            else:
                state["epoch"], state["batches_done"] = self._train_sampler.epoch, done
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.order_seed = int(state_dict.get("order_seed", self.order_seed))
        if "epoch" in state_dict:
            self._resume_position = (int(state_dict["epoch"]), int(state_dict["batches_done"]))

    @property
    def skipped_images(self) -> int:
        """Unreadable images skipped so far (``skip_corrupt``), over all loader workers."""
        counters = [getattr(d, "skipped", None) for d in self._datasets.values()]
        return sum(c.value for c in counters if c is not None)

    def probe_dataloaders(self) -> list[DataLoader]:
        """``[bank loader, query loader]`` of unaugmented images."""
        return [
            self._loader(self.probe_dataset(split), self.probe_batch_size, train=False)
            for split in ("probe_train", "test")
        ]

    def val_dataloader(self) -> list[DataLoader]:
        return self.probe_dataloaders()

    def test_dataloader(self) -> list[DataLoader]:
        return self.probe_dataloaders()

    def predict_dataloader(self) -> DataLoader:
        dataset = self.probe_dataset(self.predict_split)
        return self._loader(dataset, self.probe_batch_size, train=False)
