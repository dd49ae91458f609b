"""The class split of the transfer probe, on a tiny generated image tree."""

import pytest
from PIL import Image

from ssl_biases.data.datasets import load_imagefolder
from ssl_biases.experiments.class_split import make_class_split

CLASSES = ["airplane", "bird", "cat", "dog"]


@pytest.fixture
def tree(tmp_path):
    for split, count in (("train", 3), ("test", 2)):
        for label, name in enumerate(CLASSES):
            folder = tmp_path / "data" / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (8, 8), (60 * label, i, 0)).save(folder / f"{i}.jpg")
    return tmp_path / "data"


def test_pretrain_and_transfer_trees_hold_disjoint_classes(tree, tmp_path):
    sides = make_class_split(tree, tmp_path / "split", [0, 2])
    assert sides == {"in": ["airplane", "cat"], "transfer": ["bird", "dog"]}
    pretrain = load_imagefolder(tmp_path / "split/in", "train")
    transfer = load_imagefolder(tmp_path / "split/transfer", "test")
    assert pretrain.classes == ["airplane", "cat"] and len(pretrain) == 6
    assert transfer.classes == ["bird", "dog"] and len(transfer) == 4
    image, label = transfer[3]
    assert label == 1 and image.getpixel((0, 0))[0] > 150  # dog, the fourth class (red 180)
    assert make_class_split(tree, tmp_path / "split", [2, 0]) == sides  # idempotent


@pytest.mark.parametrize("classes", [[4], [0, 1, 2, 3], []])
def test_a_split_needs_classes_on_both_sides(tree, tmp_path, classes):
    with pytest.raises(ValueError, match="pretrain classes"):
        make_class_split(tree, tmp_path / "split", classes)


def test_a_root_without_train_says_what_it_needs(tmp_path):
    with pytest.raises(FileNotFoundError, match="train/<class>"):
        make_class_split(tmp_path, tmp_path / "split", [0])
