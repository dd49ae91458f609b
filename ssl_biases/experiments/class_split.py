"""Split an image-folder dataset by class: pretrain on some classes, probe transfer on the rest.

Bordes et al. (arXiv 2304.05369) measure how a representation *transfers*: pretrain on one
set of classes, probe on classes the pretraining never saw. From a ``root/{train,test}/<class>/``
tree (the CIFAR-10 JPEGs of ``../shared/data/cifar10``), :func:`make_class_split` writes two
trees of symbolic links to the class folders (no image is copied)::

    out/in/{train,test}/<class>/        the pretraining classes: pretrain and in-distribution probe
    out/transfer/{train,test}/<class>/  every other class: the transfer probe

Each is an ordinary ``imagefolder`` root (``--data.root out/in``; or ``--data.probe_root`` of
the ``folder`` dataset), so a grid pretrains and probes on ``out/in`` and a ``validate`` grid
probes the same checkpoints on ``out/transfer``. Classes are numbered as ``ImageFolder``
numbers them, in sorted folder-name order (for CIFAR-10: airplane 0 ... truck 9)::

    python -m ssl_biases.experiments.class_split ../shared/data/cifar10 runs/cifar10_classes_0-4 \\
        --pretrain-classes 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

SPLITS = ("train", "test")


def class_names(root: Path) -> list[str]:
    """The class folders of ``root/train``, sorted (``ImageFolder``'s label order)."""
    train = root / "train"
    if not train.is_dir():
        raise FileNotFoundError(f"{train} not found: give a root with train/<class>/ folders")
    names = sorted(p.name for p in train.iterdir() if p.is_dir())
    if len(names) < 2:
        raise ValueError(f"{train} has {len(names)} class folders; a split needs at least 2")
    return names


def make_class_split(
    root: str | Path, out: str | Path, pretrain_classes: Sequence[int]
) -> dict[str, list[str]]:
    """Writes ``out/in`` and ``out/transfer`` (see the module docstring); idempotent.

    Args:
        root: a ``root/{train,test}/<class>/`` tree.
        out: where the two trees of links go.
        pretrain_classes: indices (in sorted class-name order) of the pretraining classes.

    Returns:
        ``{"in": [class names], "transfer": [class names]}``.

    Raises:
        FileNotFoundError: ``root`` lacks ``train/`` (or a split lacks a class folder).
        ValueError: an index is out of range, or no class is left for either side.
    """
    root, out = Path(root).resolve(), Path(out)
    names = class_names(root)
    wanted = sorted(set(pretrain_classes))
    bad = [i for i in wanted if not 0 <= i < len(names)]
    if bad or not wanted or len(wanted) == len(names):
        raise ValueError(
            f"pretrain classes {list(pretrain_classes)} must be 1 to {len(names) - 1} distinct "
            f"indices in 0..{len(names) - 1} (classes {names})"
        )
    sides = {
        "in": [names[i] for i in wanted],
        "transfer": [n for i, n in enumerate(names) if i not in wanted],
    }
    for side, classes in sides.items():
        for split in SPLITS:
            for name in classes:
                source = root / split / name
                if not source.is_dir():
                    raise FileNotFoundError(f"{source} not found: every split needs every class")
                link = out / side / split / name
                link.parent.mkdir(parents=True, exist_ok=True)
                if link.is_symlink() and Path(os.readlink(link)) == source:
                    continue
                if link.exists() or link.is_symlink():
                    raise ValueError(f"{link} exists and is no link to {source}; remove it")
                link.symlink_to(source, target_is_directory=True)
    return sides


def main(argv: list[str] | None = None) -> int:
    """Command line of :func:`make_class_split`."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="a root/{train,test}/<class>/ tree")
    parser.add_argument("out", type=Path, help="where out/in and out/transfer go")
    parser.add_argument("--pretrain-classes", type=int, nargs="+", required=True)
    args = parser.parse_args(argv)
    sides = make_class_split(args.root, args.out, args.pretrain_classes)
    for side, classes in sides.items():
        print(f"{args.out / side}: {', '.join(classes)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
