"""``--data.augment auto``: where a run's training views are made, and why.

Device views (:mod:`ssl_biases.data.device_views`) batch whole uint8 images, so they need the
method's ``view_recipe`` and training images of one size; lightly's per-image views in the
loader workers need neither. ``auto`` takes the device path when both hold and says why in one
log line; it never guesses: a size it cannot know cheaply means worker views.

How the sizes are known: datasets read into arrays (``cifar10``, ``cifar100``, ``stl10``, any
dataset with ``--data.cache memory``) have one shape; ``shapes`` is drawn at
``--data.image_size``; image files (``imagefolder``, ``folder``) have their headers read (the
size, not the pixels: 2.5 s per 50,000 CIFAR-10 JPEGs from the page cache, 12 s from a cold
disk, on 2 cores), up to :data:`AUTO_SCAN_LIMIT` files.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset

from ssl_biases.data.datasets import ArrayDataset
from ssl_biases.data.shapes import ShapesDataset

Augment = Literal["workers", "device"]

AUTO_SCAN_LIMIT = 200_000
"""The most image files whose headers ``auto`` reads at the start of a fit (~10-50 s)."""

AUTO_CACHE_BYTES = 2**30
"""The largest decoded training set ``--data.cache auto`` puts on the device (1 GiB; CIFAR-10's
50,000 images take 147 MiB)."""

Size = tuple[int, int]  # (height, width)


class _HeaderSizes(Dataset):
    """``(H, W)`` of image files from their headers (``None`` for an unreadable file)."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Size | None:
        try:
            with Image.open(self.paths[index]) as image:  # reads the header only
                return image.height, image.width
        except (OSError, SyntaxError, ValueError):  # the loader fails or skips it later
            return None


def _size_set(items: list[Size | None]) -> set[Size]:
    return {item for item in items if item is not None}


def image_sizes(
    dataset: Dataset, num_workers: int = 0, limit: int = AUTO_SCAN_LIMIT
) -> set[Size] | None:
    """The ``(H, W)`` sizes of a ``(PIL image, label)`` dataset's images, when cheap to know.

    Args:
        dataset: An :class:`ArrayDataset`, a :class:`ShapesDataset`, a dataset of files with
            torchvision's ``samples`` list (``imagefolder``, ``folder``), or a ``Subset`` of one.
        num_workers: Processes that read file headers.
        limit: Read the headers of at most this many files.

    Returns:
        The set of sizes, or ``None`` when they are unknown: another kind of dataset, or more
        than ``limit`` files.
    """
    indices = None
    while isinstance(dataset, Subset):  # fixed_subset: the images it keeps
        inner = dataset.indices
        indices = list(inner) if indices is None else [inner[i] for i in indices]
        dataset = dataset.dataset
    if isinstance(dataset, ArrayDataset):
        return {tuple(dataset.images.shape[1:3])}  # [N, H, W, 3]
    if isinstance(dataset, ShapesDataset):
        return {(dataset.image_size, dataset.image_size)}
    samples = getattr(dataset, "samples", None)
    if not isinstance(samples, list):
        return None
    paths = [samples[i][0] for i in indices] if indices is not None else [p for p, _ in samples]
    if len(paths) > limit:
        return None
    loader = DataLoader(
        _HeaderSizes(paths), batch_size=1024, num_workers=num_workers, collate_fn=_size_set
    )
    return set().union(*loader)


def choose_augment(
    module: Any,
    dataset: Dataset,
    image_size: int,
    num_workers: int = 0,
    sizes: Callable[[], set[Size] | None] | None = None,
) -> tuple[Augment, str]:
    """``auto``'s choice for ``module`` (the method) and ``dataset`` (its training images).

    ``device`` when the method states a ``view_recipe`` that its ``train_views`` are built
    from and the images have one size (:func:`image_sizes`, or ``sizes()`` when given);
    ``workers`` otherwise.

    Returns:
        ``(choice, reason)``: the reason is one clause for the log line.
    """
    name = type(module).__name__
    recipe_of = getattr(module, "view_recipe", None)
    if recipe_of is None or recipe_of(image_size) is None:
        return "workers", f"{name} states no view_recipe (its train_views are per-image)"
    mro = type(module).__mro__
    owner = {m: next(c for c in mro if m in vars(c)) for m in ("view_recipe", "train_views")}
    if mro.index(owner["train_views"]) <= mro.index(owner["view_recipe"]):
        return "workers", f"{owner['train_views'].__name__} overrides train_views"
    sizes_of = sizes or (lambda: image_sizes(dataset, num_workers, AUTO_SCAN_LIMIT))
    known = sizes_of()
    if known is None:
        count = len(dataset)  # type: ignore[arg-type]
        return "workers", (
            f"the sizes of the {count:,} training images are not known without reading them "
            f"(more than {AUTO_SCAN_LIMIT:,} files); if they have one size, --data.augment "
            "device (or --data.cache memory, which decodes them once)"
        )
    if not known:
        return "workers", "no training image could be read (the loader says which file fails)"
    if len(known) > 1:
        shown = ", ".join(f"{h}x{w}" for h, w in sorted(known)[:4])
        more = ", ..." if len(known) > 4 else ""
        return "workers", (
            f"the training images have {len(known)} sizes ({shown}{more}) and device views "
            "batch whole images"
        )
    ((height, width),) = known
    return "device", (
        f"{name} states a view_recipe and the training images are decoded to one size "
        f"({height}x{width})"
    )


def choose_cache(
    dataset: Dataset, views_made_on: Augment, sizes: Callable[[], set[Size] | None]
) -> tuple[Literal["device", "none"], str]:
    """``--data.cache auto``'s choice for ``dataset`` (the training images).

    ``device`` when the views are made on the device and the decoded images (one size,
    ``sizes()``) take at most :data:`AUTO_CACHE_BYTES`; ``none`` otherwise. On the device
    path the loader then only yields indices: on a 2-core CPU its workers no longer take cores
    from the training step (docs/performance.md section 1.1), on a GPU no worker decodes.

    Returns:
        ``(choice, reason)``: the reason is one clause for the log line.
    """
    if views_made_on != "device":
        return "none", "the views are made per image in the loader workers"
    known = sizes()
    if known is None or len(known) != 1:
        return "none", "the training images do not have one known size"
    ((height, width),) = known
    count = len(dataset)  # type: ignore[arg-type]
    nbytes = count * height * width * 3
    if nbytes > AUTO_CACHE_BYTES:
        return "none", (
            f"the {count:,} decoded training images would take {nbytes / 2**30:.1f} GiB, more "
            f"than auto's {AUTO_CACHE_BYTES / 2**30:.0f} GiB"
        )
    return "device", (
        f"the {count:,} decoded training images take {nbytes / 2**20:.1f} MiB: they are decoded "
        "once and wait on the training device, and the loader needs no workers"
    )
