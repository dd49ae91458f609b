"""The probes as the CLI's callback sections: ``--knn.*``, ``--linear_probe.*``, ... ."""

from __future__ import annotations

import lightning.pytorch as pl

from ssl_biases.probes.embeddings import EmbeddingWriter
from ssl_biases.probes.fewshot import FewShotProbe
from ssl_biases.probes.knn import KNNProbe
from ssl_biases.probes.layerwise import LayerwiseKNNProbe
from ssl_biases.probes.linear import LinearProbe
from ssl_biases.probes.rankme import RankMeProbe

CALLBACK_SECTIONS: dict[str, type[pl.Callback]] = {
    "knn": KNNProbe,  # every validation
    "linear_probe": LinearProbe,  # the online probe and the offline L-BFGS probe
    "fewshot": FewShotProbe,  # every 10 epochs
    "rankme": RankMeProbe,  # every validation: collapse monitor, from the kNN bank's features
    "layerwise": LayerwiseKNNProbe,  # opt-in
    "embeddings": EmbeddingWriter,  # predict
}
"""The probe callbacks every trainer gets, by their CLI section."""
