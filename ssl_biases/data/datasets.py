"""Datasets read from their real on-disk formats; nothing is ever downloaded.

Every dataset yields ``(PIL.Image RGB, label)`` and has ``classes`` and ``targets``; label -1
means unlabelled (STL-10's ``unlabeled`` part, every image of ``folder``).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

from ssl_biases.data.shapes import ShapesDataset

DatasetName = Literal["shapes", "cifar10", "cifar100", "stl10", "imagefolder", "folder"]
DATASETS: tuple[str, ...] = ("shapes", "cifar10", "cifar100", "stl10", "imagefolder", "folder")

# Image files read from folders (``imagefolder``, ``folder``), matched case-insensitively.
IMAGE_EXTENSIONS: tuple[str, ...] = (*IMG_EXTENSIONS, ".gif")

IMAGENET_NORMALIZE = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

# Published per-dataset channel statistics (RGB, [0, 1] scale); `folder` computes its own.
NORMALIZE: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "stl10": ((0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713)),
    "imagefolder": IMAGENET_NORMALIZE,
    "shapes": ((0.5, 0.5, 0.5), (0.29, 0.29, 0.29)),
}

_CIFAR_FILES = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]),
    "cifar100": ("cifar-100-python", ["train"], ["test"]),
}


class ArrayDataset(Dataset):
    """Images held in memory as a uint8 array ``[N, H, W, 3]`` with integer labels."""

    def __init__(self, images: np.ndarray, labels: Sequence[int], classes: Sequence[str]) -> None:
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(
                f"expected uint8 images [N, H, W, 3], got {images.dtype} {images.shape}"
            )
        self.images = images
        self.targets = [int(y) for y in labels]
        self.classes = list(classes)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.images[index]), self.targets[index]


def _missing(path: Path, what: str, option: str = "--data.root") -> FileNotFoundError:
    return FileNotFoundError(
        f"dataset not found at '{path}'. {what} Nothing is downloaded at run time: put the files "
        f"there, or point {option} at the folder that holds them."
    )


def load_cifar(root: str | Path, split: str, variant: str = "cifar10") -> ArrayDataset:
    """CIFAR-10/100 from the standard python-pickle folder (``cifar-10-batches-py``).

    ``root`` may be the pickle folder itself or its parent.
    """
    folder_name, train_files, test_files = _CIFAR_FILES[variant]
    root = Path(root)
    folder = root if (root / (train_files[0])).exists() else root / folder_name
    files = train_files if split == "train" else test_files
    if not all((folder / f).is_file() for f in files):
        raise _missing(folder, f"{variant} needs the python version '{folder_name}/' with {files}.")
    images, labels = [], []
    for name in files:
        with open(folder / name, "rb") as handle:
            entry = pickle.load(handle, encoding="latin1")
        images.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(entry["labels"] if "labels" in entry else entry["fine_labels"])
    meta_name = "batches.meta" if variant == "cifar10" else "meta"
    meta_key = "label_names" if variant == "cifar10" else "fine_label_names"
    if (folder / meta_name).is_file():
        with open(folder / meta_name, "rb") as handle:
            classes = pickle.load(handle, encoding="latin1")[meta_key]
    else:
        classes = [str(c) for c in range(max(labels) + 1)]
    array = np.concatenate(images).transpose(0, 2, 3, 1)  # [N, 32, 32, 3]
    return ArrayDataset(np.ascontiguousarray(array), labels, classes)


def load_stl10(root: str | Path, split: str) -> ArrayDataset:
    """STL-10 from its binary release (``stl10_binary/{train,test,unlabeled}_X.bin``).

    Split ``"train"`` is ``unlabeled`` + ``train`` (unlabeled images get label -1), as used for
    pretraining; ``"probe_train"`` is the labelled ``train`` part alone; ``"test"`` the test set.
    """
    root = Path(root)
    folder = root if (root / "test_X.bin").exists() else root / "stl10_binary"
    parts = {"train": ["unlabeled", "train"], "probe_train": ["train"], "test": ["test"]}[split]
    images, labels = [], []
    for part in parts:
        x_path = folder / f"{part}_X.bin"
        if not x_path.is_file():
            raise _missing(folder, f"stl10 needs 'stl10_binary/{part}_X.bin' (the binary release).")
        raw = np.fromfile(x_path, dtype=np.uint8).reshape(-1, 3, 96, 96)
        images.append(raw.transpose(0, 3, 2, 1))  # column-major on disk -> [N, 96, 96, 3]
        y_path = folder / f"{part}_y.bin"
        if y_path.is_file():
            labels.extend((np.fromfile(y_path, dtype=np.uint8).astype(np.int64) - 1).tolist())
        else:
            labels.extend([-1] * len(raw))
    names = folder / "class_names.txt"
    classes = names.read_text().split() if names.is_file() else [str(c) for c in range(10)]
    return ArrayDataset(np.ascontiguousarray(np.concatenate(images)), labels, classes)


def is_image_file(path: str) -> bool:
    """Whether ``path`` ends with one of :data:`IMAGE_EXTENSIONS` (any case)."""
    return path.lower().endswith(IMAGE_EXTENSIONS)


SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I")


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB of any PIL mode: greyscale, palette, RGBA/LA (alpha dropped, as
    torchvision's loader does), CMYK; 16-bit greyscale is scaled to 8 bits (not clipped)."""
    if image.mode in SIXTEEN_BIT_MODES:  # 16-bit PNG/TIFF: 0..65535 -> 0..255
        pixels = np.asarray(image, dtype=np.float64) / 257.0  # [H, W]
        image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), mode="L")
    elif image.mode == "P" and "transparency" in image.info:  # via RGBA, as PIL asks
        image = image.convert("RGBA")
    return image.convert("RGB")


def rgb_loader(path: str) -> Image.Image:
    """Opens an image file as RGB (:func:`to_rgb`; the first frame of an animation).

    Raises:
        ValueError: naming the file, if it cannot be decoded.
    """
    try:
        with Image.open(path) as image:
            return to_rgb(image)
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(
            f"cannot read image '{path}' ({error}). Remove or replace the file, or set "
            "--data.skip_corrupt true to skip unreadable images."
        ) from error


# unreadable images fail naming the file, or are skipped
log = logging.getLogger(__name__)


class CheckedImageFolder(ImageFolder):
    """``ImageFolder`` whose unreadable images raise naming the file, or are skipped.

    With ``skip_corrupt`` an unreadable image is replaced by the next readable one of the
    folder (so batches keep their size), a warning names the file, and the replacement is
    counted in :attr:`skipped` (a process-shared counter, so DataLoader workers add to it).
    """

    def __init__(self, root: str, skip_corrupt: bool = False) -> None:
        super().__init__(root, loader=rgb_loader, is_valid_file=is_image_file)
        self.skip_corrupt = skip_corrupt
        self.skipped = multiprocessing.Value("l", 0)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        if index >= len(self):  # ends iteration (the replacement below wraps around)
            raise IndexError(f"index {index} out of range for {len(self)} images")
        for offset in range(len(self)):
            try:
                return super().__getitem__((index + offset) % len(self))
            except ValueError as error:  # rgb_loader's message names the file
                if not self.skip_corrupt:
                    raise
                with self.skipped.get_lock():
                    self.skipped.value += 1
                log.warning("skipped an unreadable image (data.skip_corrupt=true): %s", error)
        raise ValueError(f"no readable image under '{self.root}': check the files")


def load_imagefolder(
    root: str | Path, split: str, skip_corrupt: bool = False, option: str = "--data.root"
) -> ImageFolder:
    """Any ``root/<split>/<class>/*.jpg`` tree; ``test`` falls back to ``val``.

    ``option`` is the command-line option an error message names (``--data.probe_root``).
    """
    root = Path(root)
    candidates = [root / split] + ([root / "val"] if split == "test" else [])
    folder = next((c for c in candidates if c.is_dir()), None)
    if folder is None:
        raise _missing(
            candidates[0], f"imagefolder needs '{root}/{split}/<class>/<image files>'.", option
        )
    try:
        return CheckedImageFolder(str(folder), skip_corrupt=skip_corrupt)
    except FileNotFoundError as error:
        raise FileNotFoundError(
            f"no images under '{folder}' ({error}). Put images in '{folder}/<class>/'."
        ) from error


# a folder of unlabelled images, read recursively
class UnlabelledImageFolder(CheckedImageFolder):
    """Every image file under ``root``, in any subfolder, each with label -1 (no classes).

    Files are matched by :data:`IMAGE_EXTENSIONS` and listed in sorted path order; hidden
    files and folders (names starting with ``.``, e.g. macOS ``._x.jpg``) are left out.
    Unreadable images fail or are skipped as in :class:`CheckedImageFolder`.
    """

    def find_classes(self, directory: str | Path) -> tuple[list[str], dict[str, int]]:
        return [], {}

    @staticmethod
    def make_dataset(
        directory: str | Path,
        class_to_idx: dict[str, int],
        extensions: tuple[str, ...] | None = None,
        is_valid_file: Callable[[str], bool] | None = None,
        allow_empty: bool = False,
    ) -> list[tuple[str, int]]:
        samples = []
        for folder, subfolders, files in os.walk(directory, followlinks=True):
            subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
            for name in sorted(files):
                if not name.startswith(".") and is_image_file(name):
                    samples.append((os.path.join(folder, name), -1))
        return sorted(samples)


def load_image_files(root: str | Path, skip_corrupt: bool = False) -> UnlabelledImageFolder:
    """All images under ``root`` (recursively, unlabelled) for pretraining.

    Raises:
        FileNotFoundError: naming ``root`` and the extensions looked for, if it holds none.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"--data.train_root '{root}' is not a folder: point it at the folder that holds "
            "your images (any depth of subfolders)."
        )
    dataset = UnlabelledImageFolder(str(root), skip_corrupt=skip_corrupt)
    if len(dataset) == 0:
        raise FileNotFoundError(
            f"no images under '{root}' (looked for {', '.join(IMAGE_EXTENSIONS)} in every "
            "subfolder, any case): put image files there or point --data.train_root elsewhere."
        )
    return dataset


# decode a small dataset once into an in-memory uint8 array
def _stack_uint8(batch: list[tuple[Image.Image, int]]) -> tuple[np.ndarray, list[int]]:
    """Collates ``(PIL image, label)`` pairs into ``uint8 [b, H, W, 3]`` and labels."""
    arrays = [np.asarray(image.convert("RGB"), dtype=np.uint8) for image, _ in batch]
    if len({a.shape for a in arrays}) != 1:
        raise ValueError(
            f"--data.cache needs images of one size, found {sorted({a.shape for a in arrays})}: "
            "set --data.cache none (or resize the images on disk)."
        )
    return np.stack(arrays), [int(label) for _, label in batch]  # [b, H, W, 3]


def decode_to_memory(dataset: Dataset, num_workers: int = 0, batch_size: int = 256) -> ArrayDataset:
    """Decodes every image of ``dataset`` once into an :class:`ArrayDataset` (``uint8``).

    For datasets of small images stored as files (CIFAR-10 JPEGs: 50,000 images, 147 MiB as
    uint8): later epochs index an array instead of opening and decoding a file per image.
    Decoding runs in ``num_workers`` processes. ``ArrayDataset`` inputs are returned as they are.

    Raises:
        ValueError: if the images do not all have the same size.
    """
    if isinstance(dataset, ArrayDataset):
        return dataset
    loader = DataLoader(
        dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=_stack_uint8
    )
    images: np.ndarray | None = None
    labels: list[int] = []
    for batch, batch_labels in loader:
        if images is None:
            images = np.empty((len(dataset), *batch.shape[1:]), dtype=np.uint8)  # [N, H, W, 3]
        elif batch.shape[1:] != images.shape[1:]:
            raise ValueError(
                f"--data.cache needs images of one size, found {images.shape[1:3]} and "
                f"{batch.shape[1:3]}: set --data.cache none (or resize the images on disk)."
            )
        images[len(labels) : len(labels) + len(batch)] = batch
        labels.extend(batch_labels)
    if images is None:
        raise ValueError("cannot cache an empty dataset: check --data.root")
    cached = ArrayDataset(images, labels, getattr(dataset, "classes", sorted(set(labels))))
    if hasattr(dataset, "skipped"):  # keep the skip_corrupt counter of the files it came from
        cached.skipped = dataset.skipped
    return cached


def build_dataset(
    name: str,
    split: str,
    root: str | Path | None = None,
    image_size: int = 32,
    shapes_size: int = 2000,
    shapes_num_classes: int = 4,
    seed: int = 0,
    skip_corrupt: bool = False,
    train_root: str | Path | None = None,
    probe_root: str | Path | None = None,
) -> Dataset:
    """Builds the ``split`` (``train`` / ``probe_train`` / ``test``) of a dataset by name.

    ``folder`` pretrains on every image under ``train_root`` (unlabelled) and probes on the
    labelled ``probe_root/{train,test}/<class>/`` tree.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    if name == "folder":
        if split == "train":
            if train_root is None:
                raise ValueError(
                    "dataset 'folder' pretrains on --data.train_root: set it to your image folder"
                )
            return load_image_files(train_root, skip_corrupt)
        if probe_root is None:
            raise ValueError(
                "dataset 'folder' has no probe set: set --data.probe_root to a labelled "
                "'<dir>/{train,test}/<class>/' tree"
            )
        split = "test" if split == "test" else "train"
        return load_imagefolder(probe_root, split, skip_corrupt, "--data.probe_root")
    if name == "shapes":
        shapes_split = "test" if split == "test" else "train"
        size = shapes_size if split != "test" else max(1, shapes_size // 4)
        return ShapesDataset(shapes_split, size, image_size, shapes_num_classes, seed)
    if root is None:
        raise ValueError(f"dataset {name!r} needs --data.root pointing at its files on disk")
    if name in ("cifar10", "cifar100"):
        return load_cifar(root, "test" if split == "test" else "train", name)
    if name == "stl10":
        return load_stl10(root, split)
    return load_imagefolder(root, "test" if split == "test" else "train", skip_corrupt)
