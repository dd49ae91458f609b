"""`SSLDataModule`: (views, label) batches for pretraining, (image, label) batches for probes."""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader, Dataset, Subset

from ssl_biases.data.augment_choice import Augment, choose_augment, choose_cache, image_sizes
from ssl_biases.data.datasets import (
    IMAGENET_NORMALIZE,
    NORMALIZE,
    DatasetName,
    build_dataset,
    decode_to_memory,
)
from ssl_biases.data.device_cache import CacheKeys, DeviceCache, KeyDataset, RawBatch, RawImages
from ssl_biases.data.device_views import DeviceViews
from ssl_biases.data.sampler import ResumableSampler, SeededViews
from ssl_biases.data.shapes import ShapesDataset
from ssl_biases.data.shuffle import (
    PatchShuffle,
    ShuffledViews,
    ShuffleKind,
    fixed_input_shuffle,
    shuffle_tensors,
)
from ssl_biases.data.transforms import Normalization, channel_statistics, probe_transform

ViewTransform = Callable[[Any], Any]

AUGMENT_CHOICES = ("auto", "workers", "device")
CACHE_CHOICES = ("auto", "none", "memory", "device")

# `normalization: data` reads a fixed random sample of this many pretraining images
NORMALIZATION_SAMPLES = 1000
# the online probe's width when there are no labels (it then sees only label -1, never trains)
UNLABELLED_NUM_CLASSES = 2


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


def methods_with_recipe(module: Any) -> list[str]:
    """Names of the loaded subclasses of ``module``'s base class that override ``view_recipe``."""
    bases = [c for c in type(module).__mro__ if "view_recipe" in vars(c)]
    if not bases:
        return []
    found, todo = [], list(bases[-1].__subclasses__())
    while todo:
        cls = todo.pop(0)
        todo.extend(cls.__subclasses__())
        if any("view_recipe" in vars(c) for c in cls.__mro__[: cls.__mro__.index(bases[-1])]):
            found.append(cls.__name__)
    return sorted(set(found))


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

    Without a labelled probe set (``folder`` with no ``probe_root``) there are no validation
    and test loaders: Lightning skips validation, the probes are off, and checkpoints are
    ``last.ckpt`` (and every ``--checkpoint.every_n_train_steps``).

    Args:
        dataset: One of ``shapes``, ``cifar10``, ``cifar100``, ``stl10``, ``imagefolder``, or
            ``folder`` (your own images: ``train_root`` and optionally ``probe_root``).
        root: Folder holding the dataset files (not needed for ``shapes`` and ``folder``).
        train_root: ``folder`` only: pretrain on every image under this folder, in any
            subfolder and of any common format (unlabelled: label -1).
        probe_root: ``folder`` only: a labelled ``<dir>/{train,test}/<class>/`` tree (``test``
            may be ``val``) for the probes: bank from ``train``, queries from ``test``. Unset:
            the probes are off.
        normalization: ``auto``: the published statistics of a named dataset (ImageNet's
            for ``imagefolder``), computed from the data for ``folder``; ``data``: the
            per-channel mean and std of a fixed random sample of 1000 pretraining images
            (:func:`~ssl_biases.data.transforms.channel_statistics`); ``imagenet``:
            ImageNet's. The values used are logged as ``normalization_mean``/``_std`` in the
            run's ``hparams.yaml``.
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
        cache: ``auto`` (default): ``device`` when the views are made on the device and the
            decoded training set takes at most 1 GiB (CIFAR-10: 147 MiB), ``none`` otherwise,
            said in one log line at the start of a fit
            (:func:`~ssl_biases.data.augment_choice.choose_cache`; recorded as ``cache_used``
            in ``hparams.yaml``). ``none``: each step's images are read by the loader workers;
            ``memory``: decode every image file once into an in-memory uint8
            array (for small datasets of same-size images such as the CIFAR-10 JPEG tree;
            see docs/performance.md; datasets read from arrays, cifar and stl10, are in
            memory already); ``device``: the decoded uint8 train set sits on the training
            device (each DDP rank holds all of it) and batches are gathered there, with no
            loader workers (the views are made on the device: ``augment`` ``auto`` or
            ``device``). ``false``/``true`` are the old spellings of ``none``/``memory``.
        augment: Where the training views are made: ``workers`` (per image, lightly's
            transforms in DataLoader workers), ``device`` (batched per-sample transforms
            on the training device after the uint8 batch is moved there, from the method's
            ``view_recipe``; see :mod:`ssl_biases.data.device_views`), or ``auto``
            (default): ``device`` when the method states a recipe and the training images
            have one size, ``workers`` otherwise, said in one log line at the start of a fit
            (:func:`~ssl_biases.data.augment_choice.choose_augment`). The choice is
            :attr:`views_made_on` and ``views_made_on`` in ``hparams.yaml``.
        predict_split: What ``ssl-biases predict`` embeds, unaugmented: ``test`` (the probe
            queries, ``max_val_samples`` of them) or ``probe_train`` (the probe bank,
            ``max_probe_train_samples`` of the train split; ``null`` for all of it). Without a
            probe set: the ``train_root`` images (``max_val_samples`` of them), labels -1.
        shuffle: Train *and* test on images rearranged by one fixed permutation (MLP-Mixer,
            arXiv 2105.01601, Sec. 3.4): ``none``, ``patch`` (patch order),
            ``within_patch`` (pixels inside each patch), ``patch_and_within_patch`` (both:
            the paper's "patch + pixel shuffling") or ``pixel`` (pixels over the whole image:
            its "global shuffling"). Applied to every pretraining view after augmentation (on
            both ``augment`` paths), to the probe bank and queries and to ``predict``; see
            :mod:`ssl_biases.data.shuffle`.
        shuffle_patch_size: Patch side of the patch kinds of ``shuffle``: set it to the
            backbone's ``patch_size`` (it is not linked; a mismatch is warned about at fit).
        shuffle_seed: Seed of the fixed permutation (the same in every split, epoch and run).
        compile_views: With device views, ``torch.compile`` them (one CUDA graph a batch on a
            GPU; minutes of compiling on a CPU): see docs/performance.md section 7.5.
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
        cache: bool | Literal["auto", "none", "memory", "device"] = "auto",
        augment: Literal["auto", "workers", "device"] = "auto",
        predict_split: Literal["test", "probe_train"] = "test",
        train_root: str | None = None,
        probe_root: str | None = None,
        normalization: Literal["auto", "data", "imagenet"] = "auto",
        shuffle: ShuffleKind = "none",
        shuffle_patch_size: int = 4,
        shuffle_seed: int = 0,
        compile_views: bool = False,
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
        self.cache_setting = {False: "none", True: "memory"}.get(cache, cache)  # old spellings
        if self.cache_setting not in CACHE_CHOICES or augment not in AUGMENT_CHOICES:
            raise ValueError(
                f"cache must be auto, none, memory or device and augment auto, workers or "
                f"device; got cache={cache!r}, augment={augment!r}"
            )
        # what is in use: `auto` is `none` until setup("fit") chooses (_resolve_auto)
        self.cache = "none" if self.cache_setting == "auto" else self.cache_setting
        if self.cache == "device" and augment == "auto":
            augment = "device"  # the images wait on the device: the views are made there
        if self.cache == "device" and augment != "device":
            raise ValueError(
                "--data.cache device serves uint8 images on the device, so the views must be "
                "made there too: use --data.augment device or auto (or --data.cache memory)."
            )
        self.augment = augment
        self._views_made_on: Augment | None = None  # `auto` resolved at setup("fit")
        self._cache_chosen = False  # `cache: auto` resolved at setup("fit")
        self.device_views: DeviceViews | None = None
        self._device_cache: DeviceCache | None = None
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
            "train_root": train_root,
            "probe_root": probe_root,
        }
        # the training order and augmentations are drawn from this seed (the run's
        # seed_everything, else data.seed) and (epoch, index) alone, so a resume is exact.
        self.order_seed = int(os.environ.get("PL_GLOBAL_SEED", seed))
        self._train_sampler: ResumableSampler | None = None
        self._resume_position: tuple[int, int] | None = None
        self._check_folder_options(dataset, train_root, probe_root, normalization)
        self.train_root = train_root
        self.probe_root = probe_root
        self.normalization = normalization
        self._norm: Normalization | None = None
        self.train_views: ViewTransform | None = None
        self._datasets: dict[str, Dataset] = {}
        self.input_shuffle = fixed_input_shuffle(shuffle, shuffle_patch_size, shuffle_seed)
        self.compile_views = compile_views
        if shuffle not in ("none", "pixel") and image_size % shuffle_patch_size:
            raise ValueError(
                f"--data.shuffle {shuffle} cuts {image_size} px images into "
                f"{shuffle_patch_size} px patches, which does not divide them: set "
                "--data.shuffle_patch_size to a divisor of --data.image_size (the backbone's "
                "patch size)."
            )
        self.save_hyperparameters()  # hparams.yaml; `norm` adds the values it resolves to

    @staticmethod
    def _check_folder_options(
        dataset: str, train_root: str | None, probe_root: str | None, normalization: str
    ) -> None:
        if dataset != "folder" and (train_root is not None or probe_root is not None):
            raise ValueError(
                "--data.train_root and --data.probe_root belong to --data.dataset folder "
                f"(your own images), not {dataset!r}: add --data.dataset folder "
                "(configs/data/folder.yaml), or use --data.root for a named dataset."
            )
        if dataset == "folder" and train_root is None:
            raise ValueError(
                "--data.dataset folder pretrains on your own images: set --data.train_root DIR "
                "(every image under DIR, any subfolder)."
            )
        if normalization not in ("auto", "data", "imagenet"):
            raise ValueError(
                f"normalization must be 'auto', 'data' or 'imagenet', got {normalization!r}"
            )

    @property
    def norm(self) -> Normalization:
        """The run's normalisation (see ``normalization``), resolved once and recorded."""
        if self._norm is None:
            if self.normalization == "imagenet":
                self._norm = Normalization(*IMAGENET_NORMALIZE)
            elif self.normalization == "auto" and self.dataset_name != "folder":
                self._norm = Normalization(*NORMALIZE[self.dataset_name])
            else:  # from a fixed sample of the pretraining images
                sample = fixed_subset(self.raw_dataset("train"), NORMALIZATION_SAMPLES, self.seed)
                self._norm = channel_statistics(sample, self.image_size, self.num_workers)
            self.save_hyperparameters(
                {
                    "normalization_mean": list(self._norm.mean),
                    "normalization_std": list(self._norm.std),
                }
            )
        return self._norm

    @property
    def _probe_root(self) -> str | None:
        return self.probe_root if self.dataset_name == "folder" else self.root

    @property
    def has_probe_set(self) -> bool:
        """Whether there are labelled probe images (every dataset but ``folder`` alone)."""
        return self.dataset_name != "folder" or self.probe_root is not None

    def raw_dataset(self, split: str) -> Dataset:
        """The untransformed ``(PIL image, label)`` dataset of a split, built once."""
        if split not in self._datasets:
            dataset = build_dataset(self.dataset_name, split, **self._build_kwargs)
            if self.cache != "none":  # decode once, index an array afterwards
                dataset = decode_to_memory(dataset, self.num_workers)
            self._datasets[split] = dataset
        return self._datasets[split]

    @property
    def num_classes(self) -> int:
        """Number of classes of the probe split (read from the data on disk).

        Without a probe set: :data:`UNLABELLED_NUM_CLASSES`, the width of an online probe
        that never trains (every label is -1).

        Raises:
            ValueError: if the probe split has a single class.
        """
        if not self.has_probe_set:
            return UNLABELLED_NUM_CLASSES
        classes = list(self.raw_dataset("test").classes)
        if len(classes) < 2:
            root = self._probe_root
            if self.dataset_name == "folder":
                without = "leave out --data.probe_root"
            else:
                without = f"use --data.dataset folder --data.train_root {root}/train"
            raise ValueError(
                f"the probe set under '{root}' has {len(classes)} class ({classes}): "
                "self-supervised training needs no labels, but the probes need two or more "
                f"classes. To pretrain on these images without probes, {without} "
                "(configs/data/folder.yaml); to probe, put each class in its own folder under "
                "train/ and test/."
            )
        return len(classes)

    @property
    def views_made_on(self) -> Augment:
        """Where the training views are made: ``augment``, or what ``auto`` chose at
        ``setup("fit")`` (before it: ``device`` if ``device_views`` is set, else ``workers``)."""
        if self.augment != "auto":
            return self.augment  # type: ignore[return-value]
        if self._views_made_on is not None:
            return self._views_made_on
        return "device" if self.device_views is not None else "workers"

    def _resolve_auto(self, module: Any) -> None:
        """``auto``: chooses the views' path and the cache once per fit and says which and why
        (rank 0)."""
        views_open = self.augment == "auto" and self._views_made_on is None
        if not views_open and (self.cache_setting != "auto" or self._cache_chosen):
            return
        train = fixed_subset(self.raw_dataset("train"), self.max_train_samples, self.seed)
        sizes = functools.cache(lambda: image_sizes(train, self.num_workers))  # one scan
        if self.augment == "auto" and self._views_made_on is None:
            if self.device_views is not None or self.train_views is not None:  # set by hand
                given = "device_views" if self.device_views is not None else "train_views"
                choice: Augment = "device" if given == "device_views" else "workers"
                reason = f"`datamodule.{given}` is set"
            else:
                choice, reason = choose_augment(
                    module, train, self.image_size, self.num_workers, sizes
                )
            self._views_made_on = choice
            self.save_hyperparameters({"views_made_on": choice})
            rank_zero_info(
                f"--data.augment auto: {choice} views, because {reason}. Set --data.augment "
                "workers or device to choose."
            )
        if self.cache_setting == "auto" and not self._cache_chosen:
            self.cache, reason = choose_cache(train, self.views_made_on, sizes)
            self._cache_chosen = True
            self.save_hyperparameters({"cache_used": self.cache})
            rank_zero_info(
                f"--data.cache auto: {self.cache}, because {reason}. Set --data.cache none, "
                "memory or device to choose."
            )

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self._resolve_auto(self.trainer.lightning_module if self.trainer is not None else None)
        if stage == "fit" and self.train_views is None and self.views_made_on == "workers":
            module = self.trainer.lightning_module if self.trainer is not None else None
            if module is None or not hasattr(module, "train_views"):
                raise ValueError(
                    "SSLDataModule needs the views of the method: set `datamodule.train_views` "
                    "or train an SSLMethod, whose `train_views` is used."
                )
            self.train_views = module.train_views(self.image_size, self.norm)
        if stage == "fit" and self.views_made_on == "device" and self.device_views is None:
            module = self.trainer.lightning_module if self.trainer is not None else None
            recipe_of = getattr(module, "view_recipe", None)
            recipe = recipe_of(self.image_size) if recipe_of is not None else None
            if recipe is None:
                raise ValueError(
                    f"--data.augment device builds the views from the method's view_recipe, "
                    f"and {type(module).__name__} states none. Methods with a recipe: "
                    f"{', '.join(methods_with_recipe(module))}. Use --data.augment workers, or "
                    "set `datamodule.device_views`."
                )
            self.device_views = DeviceViews(
                recipe, self.norm, self.order_seed, compile=self.compile_views
            )
        if stage == "fit" and isinstance(self.input_shuffle, PatchShuffle):
            self._check_shuffle_patch_size(self.trainer.lightning_module if self.trainer else None)
        _ = self.norm  # resolved (and recorded) before Lightning logs the hyperparameters
        if stage in ("fit", "validate", "test") and not self.has_probe_set:
            rank_zero_warn(
                "no labelled probe set (--data.probe_root): the probes are off and checkpoints "
                "are last.ckpt (and --checkpoint.every_n_train_steps); set --data.probe_root "
                "to a '<dir>/{train,test}/<class>/' tree to probe."
            )

    def _check_shuffle_patch_size(self, module: Any) -> None:
        """Every view side must be a multiple of ``shuffle_patch_size``; warn if it is not the
        backbone's patch size."""
        p = self.input_shuffle.patch_size
        recipe_of = getattr(module, "view_recipe", None)
        recipe = recipe_of(self.image_size) if recipe_of is not None else None
        sizes = sorted({spec.size for spec in recipe.views}) if recipe is not None else []
        if any(size % p for size in sizes):
            raise ValueError(
                f"--data.shuffle cuts views into {p} px patches, but the method's views are "
                f"{sizes} px: set --data.shuffle_patch_size to a divisor of all of them."
            )
        patch_size = getattr(getattr(module, "backbone", None), "patch_size", None)
        if patch_size not in (None, p):
            rank_zero_warn(
                f"--data.shuffle_patch_size {p} differs from the backbone's patch_size "
                f"{patch_size}: the fixed permutation does not move the network's own patches."
            )

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
        if self.cache == "device":  # the images wait on the device; the loader yields keys
            self._device_cache = DeviceCache(decode_to_memory(dataset, self.num_workers))
            return KeyDataset(len(dataset))
        if self.views_made_on == "device":  # uint8 images; the views are made after the transfer
            return RawImages(dataset)
        views = self.train_views
        if self.input_shuffle is not None and views is not None:  # each final view
            views = ShuffledViews(views, self.input_shuffle)
        return SeededViews(dataset, views, self.order_seed)

    def _probe_transform(self) -> Callable[[Any], Any]:
        """Unaugmented probe images, shuffled by ``shuffle`` like the training views."""
        transform = probe_transform(self.image_size, self.norm)
        shuffle = self.input_shuffle
        return transform if shuffle is None else ShuffledViews(transform, shuffle)

    def probe_dataset(self, split: str) -> Dataset:
        """Unaugmented ``(tensor, label)`` images for probes: ``probe_train`` or ``test``."""
        if split == "probe_train":  # stl10 and folder: the bank is a labelled split of its own
            own_split = self.dataset_name in ("stl10", "folder")
            base = self.raw_dataset("probe_train" if own_split else "train")
            query_classes = list(self.raw_dataset("test").classes)
            if self.dataset_name in ("imagefolder", "folder") and base.classes != query_classes:
                raise ValueError(  # labels are indices of the sorted class folders of a split
                    f"the train and test splits under '{self._probe_root}' have different class "
                    f"folders ({base.classes} vs {query_classes}), so their labels would not "
                    "match: give both splits the same <class> folders."
                )
            base = fixed_subset(base, self.max_probe_train_samples, self.seed + 1)
        else:
            base = fixed_subset(self.raw_dataset("test"), self.max_val_samples, self.seed + 2)
        return TransformedDataset(base, self._probe_transform())

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
        workers = 0 if self.cache == "device" else self.num_workers  # keys need no workers
        if self.cache == "device":  # Lightning's advice to add workers does not apply to keys
            warnings.filterwarnings("ignore", message="The 'train_dataloader' does not have many")
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=True,
            num_workers=workers,
            pin_memory=self.pin_memory and self.cache != "device",
            persistent_workers=workers > 0,
            collate_fn=getattr(dataset, "collate", None),
            generator=torch.Generator().manual_seed(self.order_seed),  # leaves the global RNG
        )

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """With ``augment: device``: the views of a uint8 training batch, made on its device."""
        if isinstance(batch, CacheKeys):  # --data.cache device: gather the images there
            assert self._device_cache is not None
            batch = self._device_cache.gather(batch.keys)
        if isinstance(batch, RawBatch):
            if self.device_views is None:
                raise ValueError("uint8 training batches need `device_views` (augment: device)")
            views = self.device_views(batch.images, batch.keys)
            if self.input_shuffle is not None:  # each final view, as on the workers path
                views = shuffle_tensors(views, self.input_shuffle)
            return views, batch.labels
        return batch

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
        """``[bank loader, query loader]`` of unaugmented images (none without a probe set)."""
        if not self.has_probe_set:
            return []
        return [
            self._loader(self.probe_dataset(split), self.probe_batch_size, train=False)
            for split in ("probe_train", "test")
        ]

    def val_dataloader(self) -> list[DataLoader]:
        return self.probe_dataloaders()

    def test_dataloader(self) -> list[DataLoader]:
        return self.probe_dataloaders()

    def predict_dataloader(self) -> DataLoader:
        if not self.has_probe_set:  # embed the pretraining images themselves (labels -1)
            raw = fixed_subset(self.raw_dataset("train"), self.max_val_samples, self.seed + 2)
            dataset = TransformedDataset(raw, self._probe_transform())
            return self._loader(dataset, self.probe_batch_size, train=False)
        dataset = self.probe_dataset(self.predict_split)
        return self._loader(dataset, self.probe_batch_size, train=False)
