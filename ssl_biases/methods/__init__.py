"""Self-supervised methods: one file each, sharing `SSLMethod`."""

from ssl_biases.methods.barlow_twins import BarlowTwins
from ssl_biases.methods.base import SSLMethod
from ssl_biases.methods.byol import BYOL
from ssl_biases.methods.dino import DINO
from ssl_biases.methods.emp_ssl import EMPSSL
from ssl_biases.methods.ibot import IBOT
from ssl_biases.methods.ijepa import IJEPA
from ssl_biases.methods.lejepa import LeJEPA
from ssl_biases.methods.mae import MAE
from ssl_biases.methods.masked import MaskedModeling
from ssl_biases.methods.mocov3 import MoCoV3
from ssl_biases.methods.reconstruction import MaskedReconstruction
from ssl_biases.methods.simclr import SimCLR
from ssl_biases.methods.swav import SwAV
from ssl_biases.methods.vicreg import VICReg

__all__ = [
    "BarlowTwins",
    "BYOL",
    "DINO",
    "EMPSSL",
    "IBOT",
    "IJEPA",
    "LeJEPA",
    "MAE",
    "MaskedModeling",
    "MaskedReconstruction",
    "MoCoV3",
    "SSLMethod",
    "SimCLR",
    "SwAV",
    "VICReg",
]
