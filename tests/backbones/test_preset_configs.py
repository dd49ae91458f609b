"""configs/backbone/*.yaml: generated from the registry, minimal, and building the preset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonargparse import ArgumentParser
from torch import nn

from ssl_biases.backbones import backbone_config, create_backbone, list_backbones
from ssl_biases.backbones.legacy import migrate_backbone_config
from ssl_biases.backbones.preset_configs import preset_yaml, write_preset_configs

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "backbone"


def _keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _keys(v)}
    return set()


@pytest.mark.parametrize("name", list_backbones())
def test_yaml_is_the_generated_minimal_preset(name):
    path = CONFIG_DIR / f"{name}.yaml"
    assert path.exists(), f"run `make backbone-configs` to write {path}"
    assert path.read_text() == preset_yaml(name), f"run `make backbone-configs` ({path})"
    data = yaml.safe_load(path.read_text())
    assert data == {"model": {"init_args": {"backbone": backbone_config(name, explicit=False)}}}
    assert "image_size" not in _keys(data)  # the data config states it once
    flat = set(data["model"]["init_args"]["backbone"]["init_args"])
    assert not flat & {"kernel_size", "window_radius", "token_mlp_ratio", "qkv_bias"}


def test_no_yaml_without_preset():
    assert sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")) == list_backbones()


def test_minimal_yaml_states_only_what_differs():
    args = yaml.safe_load((CONFIG_DIR / "convmixer_tiny.yaml").read_text())["model"]["init_args"]
    assert args["backbone"]["init_args"] == {
        "token_mixer": {
            "class_path": "ssl_biases.backbones.mixers.ConvMixer",
            "init_args": {"kernel_size": 5},
        },
        "pool": "gap",
    }
    vit = yaml.safe_load((CONFIG_DIR / "vit_tiny.yaml").read_text())["model"]["init_args"]
    assert vit["backbone"]["init_args"] == {}  # vit_tiny is the IsotropicNet defaults
    ident = yaml.safe_load((CONFIG_DIR / "identity_tiny.yaml").read_text())["model"]["init_args"]
    assert ident["backbone"]["init_args"]["token_mixer"] == "identity"  # defaults: the name


@pytest.mark.parametrize(
    "name", ["vit_tiny", "localvit_tiny_64", "mixer_tiny", "convmixer_tiny", "resnet18_cifar"]
)
def test_yaml_parsed_as_the_cli_does_builds_the_preset(name):
    """jsonargparse (as under LightningCLI) + the data's image size gives the registry's net."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--backbone", type=nn.Module)
    section = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())
    reference = create_backbone(name)
    size = reference.image_size
    config = parser.parse_object({"backbone": section["model"]["init_args"]["backbone"]})
    config.backbone.init_args.image_size = size  # what the CLI's data link does
    # what the CLI stores (checkpoint's backbone_config), migrated: the canonical preset
    stored = config.backbone.as_dict()
    assert migrate_backbone_config(stored) == backbone_config(name)
    built = parser.instantiate_classes(config).backbone
    shapes = {k: tuple(v.shape) for k, v in built.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert getattr(built, "token_mixer", None) == getattr(reference, "token_mixer", None)


def test_write_preset_configs_writes_every_preset(tmp_path):
    paths = write_preset_configs(tmp_path)
    assert sorted(p.stem for p in paths) == list_backbones()
    assert (tmp_path / "vit_s16.yaml").read_text() == preset_yaml("vit_s16")
    assert "(this preset: 224 px)" in preset_yaml("vit_s16")
