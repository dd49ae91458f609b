import pytest
import torch

from ssl_biases.data.datamodule import SSLDataModule, fixed_subset
from ssl_biases.data.shapes import ShapesDataset


def _two_views(image):
    from torchvision.transforms.functional import to_tensor

    tensor = to_tensor(image)
    return [tensor, tensor.flip(-1)]


def test_fixed_subset_is_the_same_for_the_same_seed():
    dataset = ShapesDataset(size=100)
    a, b = fixed_subset(dataset, 10, seed=1), fixed_subset(dataset, 10, seed=1)
    assert a.indices == b.indices and len(a) == 10
    assert fixed_subset(dataset, 10, seed=2).indices != a.indices
    assert fixed_subset(dataset, None, seed=1) is dataset


def test_train_batches_are_views_and_labels():
    dm = SSLDataModule(image_size=16, batch_size=8, num_workers=0, shapes_size=32)
    dm.train_views = _two_views
    views, labels = next(iter(dm.train_dataloader()))
    assert len(views) == 2 and views[0].shape == (8, 3, 16, 16) and labels.shape == (8,)
    assert torch.equal(views[1], views[0].flip(-1))


def test_probe_loaders_bank_then_queries():
    dm = SSLDataModule(
        image_size=16,
        num_workers=0,
        shapes_size=40,
        max_probe_train_samples=12,
        probe_batch_size=100,
    )
    bank, queries = dm.val_dataloader()
    x_bank, _ = next(iter(bank))
    x_query, _ = next(iter(queries))
    assert x_bank.shape == (12, 3, 16, 16) and x_query.shape == (10, 3, 16, 16)
    assert dm.num_classes == 4


def test_image_size_retargets_the_data():
    dm = SSLDataModule(image_size=24, num_workers=0, shapes_size=8)
    image, _ = dm.probe_dataset("test")[0]
    assert image.shape == (3, 24, 24)


def test_batch_larger_than_dataset_is_a_clear_error():
    dm = SSLDataModule(batch_size=64, num_workers=0, shapes_size=16)
    dm.train_views = _two_views
    with pytest.raises(ValueError, match="batch_size 64 is larger"):
        dm.train_dataloader()
