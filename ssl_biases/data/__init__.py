"""Data: datasets on disk or generated, the datamodule, shared transforms."""

from ssl_biases.data.datamodule import SSLDataModule
from ssl_biases.data.datasets import DATASETS, build_dataset
from ssl_biases.data.shapes import ShapesDataset
from ssl_biases.data.transforms import Normalization, probe_transform

__all__ = [
    "DATASETS",
    "Normalization",
    "SSLDataModule",
    "ShapesDataset",
    "build_dataset",
    "probe_transform",
]
