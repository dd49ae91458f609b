"""Self-supervised methods: one file each, sharing `SSLMethod`."""

from ssl_biases.methods.base import SSLMethod
from ssl_biases.methods.simclr import SimCLR

__all__ = ["SSLMethod", "SimCLR"]
