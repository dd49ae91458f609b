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


# ------------------------------------------------------------------ --data.augment auto
def _fitted(dm: SSLDataModule, module: object) -> SSLDataModule:
    from types import SimpleNamespace

    dm.trainer = SimpleNamespace(lightning_module=module, current_epoch=0)
    dm.setup("fit")
    return dm


def _tiny_backbone():
    from ssl_biases.backbones import IsotropicNet

    return IsotropicNet(image_size=16, patch_size=4, width=32, depth=1, num_heads=2)


AUTO_DATA = dict(image_size=16, batch_size=8, num_workers=0, shapes_size=16)


def test_auto_is_the_default_and_makes_a_recipes_views_on_the_device(caplog) -> None:
    import logging

    from ssl_biases.data.device_cache import CacheKeys
    from ssl_biases.methods import SimCLR

    with caplog.at_level(logging.INFO):
        dm = _fitted(SSLDataModule(**AUTO_DATA), SimCLR(_tiny_backbone()))
    assert dm.augment == "auto" and dm.views_made_on == "device"
    assert dm.hparams["views_made_on"] == "device"
    lines = [r.getMessage() for r in caplog.records if "--data.augment auto" in r.getMessage()]
    assert len(lines) == 1 and "device views, because SimCLR states a view_recipe" in lines[0]
    # and cache auto: 16 images of 16x16 (12 KiB) decoded once onto the device, no workers
    assert (dm.cache_setting, dm.cache, dm.hparams["cache_used"]) == ("auto", "device", "device")
    lines = [r.getMessage() for r in caplog.records if "--data.cache auto" in r.getMessage()]
    assert len(lines) == 1 and "16 decoded training images take 0.0 MiB" in lines[0]
    loader = dm.train_dataloader()
    assert loader.num_workers == 0 and isinstance(next(iter(loader)), CacheKeys)
    views, labels = dm.on_after_batch_transfer(next(iter(loader)), 0)
    assert views[0].shape == (8, 3, 16, 16) and views[0].dtype == torch.float32
    dm.setup("fit")  # a second setup decides nothing again
    assert sum("--data.augment auto" in r.getMessage() for r in caplog.records) == 1
    assert sum("--data.cache auto" in r.getMessage() for r in caplog.records) == 1


def test_cache_auto_keeps_files_when_too_large_or_on_the_worker_path(monkeypatch, caplog) -> None:
    """Above AUTO_CACHE_BYTES, or with worker views, ``cache: auto`` reads files per step."""
    import logging

    from ssl_biases.data import augment_choice
    from ssl_biases.data.device_cache import RawBatch
    from ssl_biases.methods import SimCLR

    monkeypatch.setattr(augment_choice, "AUTO_CACHE_BYTES", 16 * 16 * 16 * 3 - 1)  # 1 B short
    with caplog.at_level(logging.INFO):
        dm = _fitted(SSLDataModule(**AUTO_DATA), SimCLR(_tiny_backbone()))
    assert (dm.views_made_on, dm.cache, dm.hparams["cache_used"]) == ("device", "none", "none")
    assert "would take 0.0 GiB, more than auto's" in caplog.text
    assert isinstance(next(iter(dm.train_dataloader())), RawBatch)
    worker = _fitted(SSLDataModule(**AUTO_DATA, augment="workers"), SimCLR(_tiny_backbone()))
    assert (worker.cache, worker.hparams["cache_used"]) == ("none", "none")
    assert "made per image in the loader workers" in caplog.text
    explicit = _fitted(SSLDataModule(**AUTO_DATA, cache="none"), SimCLR(_tiny_backbone()))
    assert explicit.cache == "none" and "cache_used" not in explicit.hparams


def test_auto_falls_back_to_worker_views(tmp_path, caplog) -> None:
    import logging

    from PIL import Image

    from ssl_biases.methods import SimCLR, SSLMethod

    class NoRecipe(SSLMethod):
        def train_views(self, image_size, norm):  # noqa: ANN001, ANN201
            return _two_views

    dm = _fitted(SSLDataModule(**AUTO_DATA), NoRecipe(_tiny_backbone()))
    views, _ = next(iter(dm.train_dataloader()))
    assert dm.views_made_on == "workers" and views[0].shape == (8, 3, 16, 16)
    for i, side in enumerate([16, 12] * 4):  # images of two sizes: device views cannot batch
        (tmp_path / "train" / "a").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (side, side)).save(tmp_path / "train" / "a" / f"{i}.png")
    folder = SSLDataModule(dataset="imagefolder", root=str(tmp_path), image_size=16,
                           batch_size=4, num_workers=0)  # fmt: skip
    with caplog.at_level(logging.INFO):
        folder = _fitted(folder, SimCLR(_tiny_backbone()))
    assert folder.views_made_on == "workers" and "2 sizes (12x12, 16x16)" in caplog.text
    views, _ = next(iter(folder.train_dataloader()))  # lightly's views: any size
    assert len(views) == 2 and views[0].shape == (4, 3, 16, 16)
    explicit = _fitted(SSLDataModule(**AUTO_DATA, augment="workers"), SimCLR(_tiny_backbone()))
    assert explicit.views_made_on == "workers" and "views_made_on" not in explicit.hparams
