import numpy as np
import pytest

from ssl_biases.data.shapes import SHAPE_NAMES, ShapesDataset


def _array(dataset, i):
    return np.asarray(dataset[i][0])


def test_shapes_is_deterministic_by_seed_and_index():
    a, b = ShapesDataset(size=20, seed=3), ShapesDataset(size=20, seed=3)
    assert all(np.array_equal(_array(a, i), _array(b, i)) for i in (0, 7, 19))
    other = ShapesDataset(size=20, seed=4)
    assert not np.array_equal(_array(a, 5), _array(other, 5))


def test_shapes_splits_differ_and_labels_are_balanced():
    train = ShapesDataset("train", size=40, num_classes=4)
    test = ShapesDataset("test", size=40, num_classes=4)
    assert not np.array_equal(_array(train, 0), _array(test, 0))
    assert np.bincount(train.targets).tolist() == [10, 10, 10, 10]
    image, label = train[6]
    assert image.size == (32, 32) and image.mode == "RGB" and label == 2
    assert train.classes == list(SHAPE_NAMES[:4])


@pytest.mark.parametrize(
    "kwargs", [{"num_classes": 1}, {"num_classes": 9}, {"size": 0}, {"split": "val"}]
)
def test_shapes_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        ShapesDataset(**kwargs)


def test_shapes_label_is_the_shape_not_the_colour():
    """Within a class, images differ (nuisances vary); every class draws its own shape."""
    dataset = ShapesDataset(size=16, num_classes=8, image_size=32)
    same_class = [_array(dataset, i) for i in (0, 8)]
    assert not np.array_equal(*same_class)
    for i in range(8):
        image = _array(dataset, i).astype(int)
        assert image.std() > 10  # a shape is drawn on the background
