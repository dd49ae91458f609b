"""Configs from before typed token mixers (flat mixer knobs) build the very same net."""

from __future__ import annotations

import pytest
import torch

from ssl_biases.backbones import IsotropicNet
from ssl_biases.backbones.legacy import migrate_backbone_config, mixer_from_legacy
from ssl_biases.backbones.mixers import ConvMixer, LocalAttentionMixer, PoolMixer

# A stored backbone config as the old code wrote it (configs/backbone/convmixer_tiny.yaml at
# width 32, depth 1, 16 px): every flat mixer knob explicit, whatever the mixer.
OLD_FLAT = {
    "image_size": 16, "patch_size": 4, "in_chans": 3, "width": 32, "depth": 1, "num_heads": 2,
    "mlp_ratio": 4.0, "stem": "patch", "pos_embed": "learned", "token_mixer": "conv",
    "pool": "gap", "window_radius": 1, "kernel_size": 5, "token_mlp_ratio": 2.0,
    "drop_path": 0.0, "last_dim": None, "qkv_bias": True,
}  # fmt: skip
COMMON_KEYS = [
    "blocks.0.mlp.fc1.bias", "blocks.0.mlp.fc1.weight", "blocks.0.mlp.fc2.bias",
    "blocks.0.mlp.fc2.weight", "blocks.0.norm1.bias", "blocks.0.norm1.weight",
    "blocks.0.norm2.bias", "blocks.0.norm2.weight", "norm.bias", "norm.weight",
    "pos_embed.weight", "stem.proj.bias", "stem.proj.weight",
]  # fmt: skip
ATTENTION_KEYS = [
    "blocks.0.mixer.proj.bias", "blocks.0.mixer.proj.weight", "blocks.0.mixer.qkv.bias",
    "blocks.0.mixer.qkv.weight",
]  # fmt: skip
# Old code, IsotropicNet(image_size=16, width=32, depth=1, num_heads=2, token_mixer=NAME,
# **KNOBS) after torch.manual_seed(0): its extra state-dict keys and, after
# torch.manual_seed(1), model(torch.randn(2, 3, 16, 16)).abs().sum().
OLD_NETS = {
    "attention": ({}, ATTENTION_KEYS + ["cls_token"], 47.7769660949707),
    "local_attention": (
        {"window_radius": 1, "pool": "gap"}, ATTENTION_KEYS, 15.545166969299316,
    ),
    "mlp": (
        {"pool": "gap", "token_mlp_ratio": 1.5},
        ["blocks.0.mixer.mlp.fc1.bias", "blocks.0.mixer.mlp.fc1.weight",
         "blocks.0.mixer.mlp.fc2.bias", "blocks.0.mixer.mlp.fc2.weight"],
        15.753372192382812,
    ),
    "conv": (
        {"pool": "gap", "kernel_size": 5},
        ["blocks.0.mixer.conv.bias", "blocks.0.mixer.conv.weight"],
        15.939382553100586,
    ),
    "pool": ({"pool": "gap", "kernel_size": 3}, [], 20.14254379272461),
    "attention_no_qkv_bias": (
        {"qkv_bias": False},
        [k for k in ATTENTION_KEYS if k != "blocks.0.mixer.qkv.bias"] + ["cls_token"],
        46.991355895996094,
    ),
}  # fmt: skip


def _build(init_args: dict) -> IsotropicNet:
    torch.manual_seed(0)
    return IsotropicNet(**init_args).eval()


def _answer(model: IsotropicNet) -> float:
    torch.manual_seed(1)
    with torch.no_grad():
        return model(torch.randn(2, 3, 16, 16)).abs().sum().item()


@pytest.mark.parametrize("tag", list(OLD_NETS))
def test_old_flat_and_migrated_configs_build_the_old_net(tag):
    knobs, extra_keys, answer = OLD_NETS[tag]
    old = {
        "image_size": 16, "width": 32, "depth": 1, "num_heads": 2,
        "token_mixer": tag.removesuffix("_no_qkv_bias"), **knobs,
    }  # fmt: skip
    flat = _build(old)
    assert sorted(flat.state_dict()) == sorted(COMMON_KEYS + extra_keys)
    assert _answer(flat) == pytest.approx(answer, rel=1e-6)
    config = {"class_path": "ssl_biases.backbones.IsotropicNet", "init_args": old}
    migrated = migrate_backbone_config(config)["init_args"]
    assert isinstance(migrated["token_mixer"], dict)
    assert not {"kernel_size", "window_radius", "token_mlp_ratio", "qkv_bias"} & set(migrated)
    new = _build(migrated)
    assert new.token_mixer == flat.token_mixer
    new.load_state_dict(flat.state_dict(), strict=True)
    assert _answer(new) == pytest.approx(answer, rel=1e-6)


def test_migrate_moves_flat_knobs_into_the_mixer():
    config = {"class_path": "ssl_biases.backbones.IsotropicNet", "init_args": OLD_FLAT}
    migrated = migrate_backbone_config(config)
    assert migrated["init_args"]["token_mixer"] == {
        "class_path": "ssl_biases.backbones.mixers.ConvMixer",
        "init_args": {"kernel_size": 5},
    }
    assert set(migrated["init_args"]) == set(OLD_FLAT) - {
        "kernel_size", "window_radius", "token_mlp_ratio", "qkv_bias",
    }  # fmt: skip
    assert config["init_args"]["kernel_size"] == 5  # the input is left as it was
    assert migrate_backbone_config(migrated) == migrated  # idempotent
    resnet = {"class_path": "ssl_biases.backbones.ResNet", "init_args": {"arch": "resnet18"}}
    assert migrate_backbone_config(resnet) == resnet


def test_flat_knobs_of_another_mixer_are_ignored_as_before():
    assert mixer_from_legacy("conv", {"window_radius": 4, "kernel_size": 7}) == ConvMixer(7)
    assert mixer_from_legacy("local_attention", {"window_radius": 4, "kernel_size": 7}) == (
        LocalAttentionMixer(window_radius=4)
    )
    assert mixer_from_legacy(PoolMixer(5), {"kernel_size": None}) == PoolMixer(5)


def test_a_knob_set_twice_to_different_values_is_an_error():
    assert mixer_from_legacy(ConvMixer(5), {"kernel_size": 5}) == ConvMixer(5)  # agrees: fine
    with pytest.raises(ValueError, match="only in token_mixer.init_args"):
        IsotropicNet(token_mixer=ConvMixer(5), kernel_size=3, pool="gap", width=32, depth=1)
    with pytest.raises(ValueError, match="no legacy mixer knob"):
        mixer_from_legacy("conv", {"kernel": 3})


def test_a_stored_last_dim_config_without_last_block_act_keeps_its_old_block():
    stored = {
        "class_path": "ssl_biases.backbones.IsotropicNet",
        "init_args": {"width": 48, "depth": 2, "patch_size": 8, "image_size": 32, "last_dim": 96},
    }
    migrated = migrate_backbone_config(stored)
    assert migrated["init_args"]["last_block_act"] == "none"
    current = {**stored, "init_args": {**stored["init_args"], "last_block_act": "relu"}}
    assert migrate_backbone_config(current)["init_args"]["last_block_act"] == "relu"
    no_last_dim = {**stored, "init_args": {**stored["init_args"], "last_dim": None}}
    assert "last_block_act" not in migrate_backbone_config(no_last_dim)["init_args"]
    # the migrated config builds the old block (no activation after the last sum)
    net = IsotropicNet(**migrated["init_args"])
    assert isinstance(net.blocks[-1].out_act, torch.nn.Identity)
