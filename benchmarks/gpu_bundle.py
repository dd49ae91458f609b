"""What the GPU machine lacks, for ``benchmarks/gpu_bundle.sh``: the wheel list and the data.

The GPU machines' image (``benchmarks/gpu_image_packages.txt``) has torch, lightning, timm, ...
but not lightly, kornia or jsonargparse, and nothing can be installed there from the network.
:func:`missing_requirements` walks ``setup.cfg``'s ``install_requires`` through the installed
packages' own requirements (markers evaluated for the image's Python), stops at every package
the image has (its version brings its own requirements), and pins what is left at the
versions installed here. :func:`make_cifar_subset` turns the first images of each class of the
CIFAR-10 JPEG tree into uint8 arrays (one ``.npz``); :func:`write_cifar_batches` unpacks that
on the GPU machine into the python-pickle folder ``--data.dataset cifar10`` reads.

Usage (``gpu_bundle.sh`` runs both)::

    python benchmarks/gpu_bundle.py requirements            # name==version, one a line
    python benchmarks/gpu_bundle.py subset ../shared/data/cifar10 gpu_bundle/cifar10_subset.npz
    python benchmarks/gpu_bundle.py wheels gpu_bundle/wheels  # fit to the image's versions
    python benchmarks/gpu_bundle.py check                   # gpu_check.sh: imports, versions
"""

from __future__ import annotations

import argparse
import configparser
import importlib
import importlib.metadata as metadata
import importlib.util
import pickle
import re
import sys
import zipfile
from collections.abc import Iterable
from email.parser import Parser
from pathlib import Path

import numpy as np
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
IMAGE_PACKAGES = ROOT / "benchmarks" / "gpu_image_packages.txt"
TARGET_ENVIRONMENT = {  # the image: CPython 3.12 on x86_64 Linux
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}
CHECKED_IMPORTS = {  # module: distribution whose version is printed ("" for none)
    "torch": "torch",
    "torchvision": "torchvision",
    "lightning": "lightning",
    "torchmetrics": "torchmetrics",
    "timm": "timm",
    "numpy": "numpy",
    "lightly": "lightly",
    "kornia": "kornia",
    "kornia_rs": "kornia-rs",
    "jsonargparse": "jsonargparse",
    "docstring_parser": "docstring-parser",
    "typeshed_client": "typeshed-client",
    "hydra": "hydra-core",
    "tensorboard": "tensorboard",
    "safetensors": "safetensors",
    "matplotlib": "matplotlib",
    "PIL": "pillow",
    "rich": "rich",
    "yaml": "pyyaml",
    "ssl_biases.cli": "",  # the project itself: every import it makes
}
CIFAR10_TRAIN_BATCHES = 5  # data_batch_1 .. data_batch_5, as the original folder


def normalise(name: str) -> str:
    """A distribution name as PEP 503 compares them (``Typing_Ext`` is ``typing-ext``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_image_versions(path: Path = IMAGE_PACKAGES) -> dict[str, str | None]:
    """The image's packages (normalised names), one a line as ``name`` or ``name==version``
    (where the version is known), ``#`` comments skipped."""
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    pairs = (line.partition("==") for line in lines if line)
    return {normalise(name): version or None for name, _, version in pairs}


def read_image_packages(path: Path = IMAGE_PACKAGES) -> set[str]:
    """The image's package names (normalised)."""
    return set(read_image_versions(path))


def wheel_conflicts(wheels: Path, image: dict[str, str | None]) -> list[str]:
    """What in the wheels' metadata the image would refuse: ``Requires-Python`` against the
    image's Python, and every requirement on an image package of known version."""
    conflicts = []
    for wheel in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
            meta = Parser().parsestr(archive.read(name).decode())
        python = meta.get("Requires-Python")
        if python and not SpecifierSet(python).contains(TARGET_ENVIRONMENT["python_full_version"]):
            conflicts.append(f"{wheel.name}: Requires-Python {python}")
        for line in meta.get_all("Requires-Dist") or []:
            requirement = Requirement(line)
            have = image.get(normalise(requirement.name))
            if have and _applies(requirement, ()) and not requirement.specifier.contains(have):
                conflicts.append(f"{wheel.name}: needs {requirement}, the image has {have}")
    return conflicts


def setup_cfg_requirements(path: Path = ROOT / "setup.cfg") -> list[str]:
    """``[options] install_requires`` of ``setup.cfg``."""
    config = configparser.ConfigParser()
    config.read(path)
    lines = config["options"]["install_requires"].splitlines()
    return [line.strip() for line in lines if line.strip()]


def _applies(requirement: Requirement, extras: Iterable[str]) -> bool:
    if requirement.marker is None:
        return True
    return any(
        requirement.marker.evaluate({**TARGET_ENVIRONMENT, "extra": extra})
        for extra in ("", *extras)
    )


def missing_requirements(
    roots: Iterable[str], image: set[str], requires=metadata.requires, version=metadata.version
) -> dict[str, str]:
    """``{name: installed version}`` of every package in the closure of ``roots`` the image lacks.

    Args:
        roots: Requirement strings (``"jsonargparse[signatures]>=4.30"``).
        image: Normalised names of the image's packages; the walk does not enter them.
        requires: A distribution's requirement strings (``importlib.metadata.requires``).
        version: A distribution's installed version (``importlib.metadata.version``).

    Raises:
        metadata.PackageNotFoundError: A package of the closure is not installed here (its
            version could not be pinned): install the project (``pip install -e .``) first.
    """
    found: dict[str, str] = {}
    todo = [Requirement(root) for root in roots]
    extras_seen: dict[str, set[str]] = {}
    while todo:
        requirement = todo.pop()
        name = normalise(requirement.name)
        if name in image:
            continue
        new_extras = set(requirement.extras) - extras_seen.get(name, set())
        if name in found and not new_extras:
            continue
        extras_seen.setdefault(name, set()).update(requirement.extras)
        found[name] = version(requirement.name)
        for line in requires(requirement.name) or []:
            child = Requirement(line)
            if _applies(child, extras_seen[name]):
                todo.append(child)
    return dict(sorted(found.items()))


def _class_folders(split_dir: Path) -> list[Path]:
    folders = sorted(p for p in split_dir.iterdir() if p.is_dir()) if split_dir.is_dir() else []
    if not folders:
        raise FileNotFoundError(
            f"{split_dir} has no class folders: point at a CIFAR-10 JPEG tree "
            "root/{train,test}/<class>/*.jpg (e.g. ../shared/data/cifar10)"
        )
    return folders


def make_cifar_subset(
    source: Path, target: Path, train_per_class: int, test_per_class: int
) -> dict[str, int]:
    """Saves the first images of each class of ``source/{train,test}`` as uint8 arrays.

    ``target`` (an ``.npz``) holds ``train_images``/``test_images`` uint8 ``[N, 32, 32, 3]``,
    ``train_labels``/``test_labels`` int64 ``[N]`` and ``classes`` (the folder names, sorted).
    Returns the number of images per split.
    """
    arrays: dict[str, np.ndarray] = {}
    classes: list[str] = []
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        folders = _class_folders(source / split)
        classes = [folder.name for folder in folders]
        images, labels = [], []
        for label, folder in enumerate(folders):
            for path in sorted(folder.iterdir())[:count]:
                with Image.open(path) as image:
                    images.append(np.asarray(image.convert("RGB"), dtype=np.uint8))  # [H, W, 3]
                labels.append(label)
        arrays[f"{split}_images"] = np.stack(images)  # [N, H, W, 3]
        arrays[f"{split}_labels"] = np.asarray(labels, dtype=np.int64)  # [N]
    target.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(target, classes=np.asarray(classes), **arrays)
    return {split: len(arrays[f"{split}_labels"]) for split in ("train", "test")}


def write_cifar_batches(subset: Path, folder: Path) -> Path:
    """Unpacks a :func:`make_cifar_subset` ``.npz`` into CIFAR-10's python-pickle folder.

    Writes ``folder/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`` (the
    format ``--data.dataset cifar10`` reads) and returns ``folder``, the ``--data.root``.
    """
    if not subset.is_file():
        raise FileNotFoundError(
            f"{subset} not found: build the bundle first (bash benchmarks/gpu_bundle.sh DIR)"
        )
    arrays = np.load(subset)
    out = folder / "cifar-10-batches-py"
    out.mkdir(parents=True, exist_ok=True)

    def dump(name: str, images: np.ndarray, labels: np.ndarray) -> None:
        rows = images.transpose(0, 3, 1, 2).reshape(len(images), -1)  # [N, 3 * 32 * 32]
        with open(out / name, "wb") as handle:
            pickle.dump({"data": rows, "labels": labels.tolist()}, handle)

    train_parts = np.array_split(np.arange(len(arrays["train_labels"])), CIFAR10_TRAIN_BATCHES)
    for i, part in enumerate(train_parts, start=1):
        dump(f"data_batch_{i}", arrays["train_images"][part], arrays["train_labels"][part])
    dump("test_batch", arrays["test_images"], arrays["test_labels"])
    with open(out / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": [str(c) for c in arrays["classes"]]}, handle)
    return folder


def check_imports(modules: dict[str, str] = CHECKED_IMPORTS) -> list[str]:
    """Finds every module, then imports it, printing the versions it runs with.

    Finding (no module code runs) takes a second, so a missing package is named at once;
    importing then catches a wheel that breaks on this torch. Returns the failures.
    """
    print(f"python {sys.version.split()[0]} ({sys.executable})", flush=True)
    missing = [
        f"{module}: not found"
        for module in modules
        if importlib.util.find_spec(module.split(".")[0]) is None
    ]
    if missing:
        return missing
    failures = []
    for module, distribution in modules.items():
        try:
            imported = importlib.import_module(module)
        except Exception as error:  # an ImportError, or a wheel that breaks on this torch
            failures.append(f"{module}: {type(error).__name__}: {error}")
            continue
        where = Path(getattr(imported, "__file__", None) or "?").parent
        version = metadata.version(distribution) if distribution else ""
        print(f"  {module:18s} {version:14s} {where}", flush=True)
    return failures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("requirements", help="print name==version of what the image lacks")
    subset = commands.add_parser("subset", help="a CIFAR-10 JPEG tree's first images as .npz")
    subset.add_argument("source", type=Path)
    subset.add_argument("target", type=Path)
    subset.add_argument("--train-per-class", type=int, default=1000)
    subset.add_argument("--test-per-class", type=int, default=200)
    commands.add_parser("check", help="import what gpu_check needs, print versions")
    wheels = commands.add_parser("wheels", help="check the wheels against the image's versions")
    wheels.add_argument("folder", type=Path)
    unpack = commands.add_parser("unpack", help="a subset .npz as cifar-10-batches-py")
    unpack.add_argument("subset", type=Path)
    unpack.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    if args.command == "requirements":
        missing = missing_requirements(setup_cfg_requirements(), read_image_packages())
        print("\n".join(f"{name}=={version}" for name, version in missing.items()))
    elif args.command == "subset":
        counts = make_cifar_subset(
            args.source, args.target, args.train_per_class, args.test_per_class
        )
        print(f"{args.target}: {counts['train']} train + {counts['test']} test images")
    elif args.command == "check":
        failures = check_imports()
        if failures:
            raise SystemExit(
                "missing imports:\n  " + "\n  ".join(failures) + "\nBuild the bundle where PyPI "
                "is reachable (bash benchmarks/gpu_bundle.sh gpu_bundle), carry gpu_bundle to "
                "the GPU machine and run bash benchmarks/gpu_check.sh --bundle gpu_bundle OUTDIR."
            )
    elif args.command == "wheels":
        conflicts = wheel_conflicts(args.folder, read_image_versions())
        if conflicts:
            raise SystemExit("wheels the GPU image would refuse:\n  " + "\n  ".join(conflicts))
        print(f"{args.folder}: every wheel accepts the image's Python and versions")
    else:
        print(write_cifar_batches(args.subset, args.folder))


if __name__ == "__main__":
    main()
