"""`EmbeddingWriter`: ``ssl-biases predict`` writes frozen embeddings for scikit-learn or UMAP.

``ssl-biases predict --config RUN/config.yaml --ckpt_path RUN/checkpoints/last.ckpt`` runs
the backbone over the data module's ``predict_dataloader`` (unaugmented; the test split, or the
probe bank with ``--data.predict_split probe_train``) and
writes into ``--embeddings.output_dir`` (default: ``<run dir of the predict>/embeddings``)

- ``embeddings.npy``: float32 ``[N, D]``, row ``i`` is dataset item ``i``;
- ``labels.npy``: int64 ``[N]``;
- ``paths.txt``: one image path per row, when the dataset is made of files (imagefolder).

Under DDP every rank's predictions are gathered and put back in dataset order on rank 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import Dataset, Subset

EMBEDDINGS_FILE = "embeddings.npy"
LABELS_FILE = "labels.npy"
PATHS_FILE = "paths.txt"


def dataset_paths(dataset: Dataset) -> list[str] | None:
    """File path of every item of ``dataset``, or None when its images are not files.

    Looks through wrappers that keep their base in ``.dataset`` (``Subset`` also remaps the
    indices) down to a dataset with ``samples`` of ``(path, label)`` (torchvision's
    ``ImageFolder``/``DatasetFolder``).
    """
    indices: list[int] | None = None
    while True:
        if isinstance(dataset, Subset):
            sub = [int(i) for i in dataset.indices]
            indices = sub if indices is None else [sub[i] for i in indices]
            dataset = dataset.dataset
        elif hasattr(dataset, "samples"):
            paths = [str(sample[0]) for sample in dataset.samples]
            return paths if indices is None else [paths[i] for i in indices]
        elif isinstance(getattr(dataset, "dataset", None), Dataset):
            dataset = dataset.dataset
        else:
            return None


class EmbeddingWriter(BasePredictionWriter):
    """Writes ``embeddings.npy`` ``[N, D]``, ``labels.npy`` ``[N]`` and ``paths.txt``.

    Reads the ``{"embeddings", "labels"}`` dicts of ``SSLMethod.predict_step``.

    Args:
        output_dir: Folder to write to; None: ``<trainer.log_dir>/embeddings``.
        enabled: Set False to run ``predict`` without writing files.
    """

    def __init__(self, output_dir: str | None = None, enabled: bool = True) -> None:
        super().__init__(write_interval="epoch")
        self.output_dir = output_dir
        self.enabled = enabled
        self.written_to: Path | None = None

    def _directory(self, trainer: pl.Trainer) -> Path:
        if self.output_dir is not None:
            return Path(self.output_dir)
        return Path(trainer.log_dir or trainer.default_root_dir) / "embeddings"

    def write_on_epoch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        predictions: Sequence[Any],
        batch_indices: Sequence[Any],
    ) -> None:
        if not self.enabled:
            return
        # Lightning unwraps the predictions of a single loader, never its batch indices.
        if len(batch_indices) > 1:
            raise ValueError("EmbeddingWriter writes one predict dataloader; got several")
        batch_indices = batch_indices[0] if batch_indices else []
        embeddings = torch.cat([p["embeddings"].detach().float().cpu() for p in predictions])
        labels = torch.cat([p["labels"].detach().long().cpu() for p in predictions])  # [N]
        index = torch.as_tensor([i for batch in batch_indices for i in batch], dtype=torch.long)
        if trainer.world_size > 1:  # DistributedSampler pads every rank to the same length
            embeddings = pl_module.all_gather(embeddings.to(pl_module.device)).flatten(0, 1)
            labels = pl_module.all_gather(labels.to(pl_module.device)).flatten(0, 1)
            index = pl_module.all_gather(index.to(pl_module.device)).flatten(0, 1)
            embeddings, labels, index = embeddings.cpu(), labels.cpu(), index.cpu()
        if not trainer.is_global_zero:
            return
        if index.numel() == embeddings.shape[0]:  # dataset order, padding duplicates dropped
            order, first = np.unique(index.numpy(), return_index=True)
            embeddings, labels = embeddings[first], labels[first]
        else:
            order = None
        directory = self._directory(trainer)
        directory.mkdir(parents=True, exist_ok=True)
        np.save(directory / EMBEDDINGS_FILE, embeddings.numpy().astype(np.float32))  # [N, D]
        np.save(directory / LABELS_FILE, labels.numpy())  # [N]
        loader = trainer.predict_dataloaders
        loader = loader[0] if isinstance(loader, Sequence) else loader
        paths = dataset_paths(loader.dataset) if loader is not None else None
        if paths is not None:
            rows = [paths[i] for i in order] if order is not None else paths
            (directory / PATHS_FILE).write_text("\n".join(rows) + "\n")
        self.written_to = directory
        print(f"Embeddings {tuple(embeddings.shape)} written to {directory}")
