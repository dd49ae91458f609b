import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from ssl_biases.probes.layerwise import (
    LayerwiseKNNProbe,
    block_features,
    layerwise_knn_top1,
    pool_block_output,
)

from helpers import FrozenModule

NUM_CLASSES = 4


class LabelInThirdBlock(nn.Module):
    """Five blocks of tokens ``[B, 2, 8]`` (class token first); only block 2 carries the label.

    The label is written in pixel (0, 0, 0) of every image, the rest of the image is noise.
    Blocks 0, 1 and 4 are slices of that noise, block 3 mixes a weak label signal into strong
    noise, block 2 holds a clean one-hot label in its class token.
    """

    num_prefix_tokens = 1
    num_features = 8

    def forward_intermediates(self, x: torch.Tensor) -> list[torch.Tensor]:
        label = x[:, 0, 0, 0].round().long()
        noise = x[:, :, 1:, :].flatten(1)  # [B, 36]
        onehot = F.one_hot(label, NUM_CLASSES).float()
        cls_tokens = [
            noise[:, 0:8],
            noise[:, 8:16],
            torch.cat([5 * onehot, 0.1 * noise[:, :4]], dim=1),
            torch.cat([0.3 * onehot, 3 * noise[:, 16:20]], dim=1),
            noise[:, 20:28],
        ]
        # A second, label-free token that must not be pooled.
        return [torch.stack([c, noise[:, 28:36]], dim=1) for c in cls_tokens]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_intermediates(x)[-1][:, 0]


def labelled_images(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % NUM_CLASSES
    images = torch.randn(n, 3, 4, 4, generator=g)
    images[:, 0, 0, 0] = labels.float()
    return TensorDataset(images, labels)


def probe_loaders() -> list[DataLoader]:
    return [DataLoader(labelled_images(160, 0), 32), DataLoader(labelled_images(80, 1), 32)]


def quiet_trainer() -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def test_pooling_reads_class_token_mean_tokens_or_spatial_mean():
    tokens = torch.arange(24.0).view(1, 3, 8)
    assert torch.equal(pool_block_output(tokens, 1), tokens[:, 0])
    assert torch.equal(pool_block_output(tokens, 0), torch.full((1, 8), 8.0) + torch.arange(8.0))
    maps = torch.arange(8.0).view(1, 2, 2, 2)
    assert pool_block_output(maps, 1).tolist() == [[1.5, 5.5]]
    with pytest.raises(ValueError, match="tokens"):
        pool_block_output(torch.zeros(2, 3), 0)


def test_block_that_carries_the_label_is_the_best():
    net = LabelInThirdBlock()
    bank, query = labelled_images(160, 0), labelled_images(80, 1)
    top1 = layerwise_knn_top1(
        block_features(net, bank.tensors[0]),
        bank.tensors[1],
        block_features(net, query.tensors[0]),
        query.tensors[1],
    )
    assert top1.shape == (5,)
    assert top1[2] == 1.0
    assert int(top1.argmax()) == 2
    assert max(top1[0], top1[1], top1[4]) < 0.6  # noise blocks are near chance (0.25)


def test_callback_logs_every_block_and_the_best_in_validate_and_test():
    trainer = quiet_trainer()
    probe = LayerwiseKNNProbe(every_n_epochs=5)
    trainer.callbacks.append(probe)
    trainer.validate(FrozenModule(LabelInThirdBlock()), dataloaders=probe_loaders(), verbose=False)
    metrics = trainer.callback_metrics
    assert {f"val/layerwise_knn_top1_block{i}" for i in range(5)} <= set(metrics)
    assert float(metrics["val/layerwise_best_block"]) == 2.0
    assert float(metrics["val/layerwise_knn_top1_block2"]) == 1.0
    trainer.test(FrozenModule(LabelInThirdBlock()), dataloaders=probe_loaders(), verbose=False)
    assert float(trainer.callback_metrics["test/layerwise_best_block"]) == 2.0


def test_callback_is_off_by_default():
    trainer = quiet_trainer()
    trainer.callbacks.append(LayerwiseKNNProbe())
    trainer.validate(FrozenModule(LabelInThirdBlock()), dataloaders=probe_loaders(), verbose=False)
    assert not any("layerwise" in key for key in trainer.callback_metrics)
