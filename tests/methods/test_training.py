"""The `Training` object on the command line: the new shape parses and prints, a typo or an old
flat knob is an error, and the saved hyperparameters load with ``weights_only=True``."""

from __future__ import annotations

import io

import pytest
import torch
import yaml
from jsonargparse import ArgumentError

from ssl_biases.cli import cli_parser
from ssl_biases.methods import SimCLR
from ssl_biases.methods.training import Training

from helpers import CONFIGS

STACK = [
    f"--config={CONFIGS / 'method/simclr.yaml'}",
    f"--config={CONFIGS / 'backbone/vit_tiny.yaml'}",
    f"--config={CONFIGS / 'data/shapes.yaml'}",
]


def test_the_config_shows_the_training_object_with_every_knob() -> None:
    parser = cli_parser()
    config = parser.parse_args(["fit", *STACK, "--model.init_args.training.warmup_fraction=0.1"])
    dumped = yaml.safe_load(parser.dump(config, skip_none=False))["fit"]  # as --print_config
    method = dumped["model"]["init_args"]
    assert method["training"]["warmup_fraction"] == 0.1
    assert method["training"]["optimizer"]["init_args"]["lr"] == pytest.approx(1e-3)
    assert set(method["training"]) >= {"optimizer", "scheduler", "scale_lr", "compile"}
    assert not {"optimizer", "warmup_fraction", "num_classes"} & set(method)


@pytest.mark.parametrize(
    "flag",
    ["--model.init_args.training.warmup_fractoin=0.1", "--model.init_args.warmup_fraction=0.1"],
)
def test_a_typo_or_an_old_flat_flag_is_an_error(flag) -> None:
    with pytest.raises(ArgumentError, match="warmup_fract"):
        cli_parser().parse_args(["fit", *STACK, flag])


def test_saved_hyperparameters_are_plain_data(tiny_net) -> None:
    model = SimCLR(tiny_net(), training=Training(optimizer=torch.optim.SGD, num_classes=3))
    buffer = io.BytesIO()
    torch.save(dict(model.hparams), buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)  # as `fit --ckpt_path` reads them
    assert loaded["training"]["num_classes"] == 3 and "optimizer" not in loaded["training"]
