"""Deprecated alias of :mod:`ssl_biases.run.sync_batchnorm`.

Kept because ``config.yaml`` files of earlier DDP runs name
``ssl_biases.experiments.sync_batchnorm.AnyDeviceSyncBatchNorm`` as a ``trainer.plugins``
class_path; new configs use ``ssl_biases.run.sync_batchnorm.AnyDeviceSyncBatchNorm``.
"""

import warnings

from ssl_biases.run.sync_batchnorm import AnyDeviceSyncBatchNorm, CPUSyncBatchNorm

__all__ = ["AnyDeviceSyncBatchNorm", "CPUSyncBatchNorm"]

warnings.warn(
    "ssl_biases.experiments.sync_batchnorm moved to ssl_biases.run.sync_batchnorm; "
    "write trainer.plugins: [{class_path: ssl_biases.run.sync_batchnorm.AnyDeviceSyncBatchNorm}]",
    DeprecationWarning,
    stacklevel=2,
)
