"""Registry: names, overrides, errors, and the canonical config of a preset."""

from __future__ import annotations

import pytest

from ssl_biases.backbones import (
    IsotropicNet,
    ResNet,
    TimmBackbone,
    backbone_config,
    create_backbone,
    list_backbones,
    register_backbone,
    registry,
)


def test_list_contains_required_presets():
    names = list_backbones()
    assert names == sorted(names)
    required = {"vit_tiny", "vit_small", "mixer_tiny", "convmixer_tiny", "localvit_tiny",
                "vit_tiny_64", "vit_s16", "vit_ti16", "mixer_s16", "resnet18_cifar",
                "resnet18", "resnet50"}  # fmt: skip
    assert required <= set(names)


def test_create_applies_preset_and_overrides():
    model = create_backbone("vit_tiny", width=32, depth=2, num_heads=2)
    assert isinstance(model, IsotropicNet)
    assert (model.num_features, len(model.blocks), model.image_size) == (32, 2, 32)
    assert model.patch_size == 4


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="unknown backbone 'vit_huge'") as err:
        create_backbone("vit_huge")
    assert "vit_tiny" in str(err.value) and "resnet18" in str(err.value)


def test_typo_override_names_key_and_valid_keys():
    with pytest.raises(ValueError, match="'widht'") as err:
        create_backbone("vit_tiny", widht=32)
    assert "'width'" in str(err.value) and "token_mixer" in str(err.value)


def test_register_rejects_duplicates_reserved_and_bad_keys(monkeypatch):
    monkeypatch.setattr(registry, "_PRESETS", dict(registry._PRESETS))
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("vit_tiny", IsotropicNet)
    with pytest.raises(ValueError, match="reserved"):
        register_backbone("timm:foo", IsotropicNet)
    with pytest.raises(ValueError, match="'depht'"):
        register_backbone("x", IsotropicNet, depht=2)
    register_backbone("my_net", IsotropicNet, width=32, depth=1, num_heads=1)
    assert "my_net" in list_backbones()
    assert create_backbone("my_net").num_features == 32


def test_backbone_config_is_class_path_with_all_args():
    cfg = backbone_config("vit_tiny")
    assert cfg["class_path"] == "ssl_biases.backbones.IsotropicNet"
    args = cfg["init_args"]
    assert (args["image_size"], args["patch_size"], args["width"], args["depth"]) == (32, 4, 192, 6)
    assert args["pool"] == "cls" and args["last_dim"] is None
    assert args["token_mixer"] == {
        "class_path": "ssl_biases.backbones.mixers.AttentionMixer",
        "init_args": {"qkv_bias": True},
    }
    assert not {"kernel_size", "window_radius", "token_mlp_ratio", "qkv_bias"} & set(args)
    assert backbone_config("resnet18_cifar")["class_path"] == "ssl_biases.backbones.ResNet"
    assert backbone_config("timm:resnet18")["init_args"]["model_name"] == "resnet18"


def test_config_builds_same_model_as_registry():
    cfg = backbone_config("convmixer_tiny")
    model = IsotropicNet(**{**cfg["init_args"], "width": 32, "depth": 2, "num_heads": 2})
    ref = create_backbone("convmixer_tiny", width=32, depth=2, num_heads=2)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in ref.parameters())


def test_timm_prefix_builds_timm_backbone():
    model = create_backbone("timm:resnet18", image_size=32)
    assert isinstance(model, TimmBackbone) and model.num_features == 512
    with pytest.raises(ValueError, match="unknown timm model"):
        create_backbone("timm:not_a_model_xyz")


def test_resnet_preset_class():
    assert isinstance(create_backbone("resnet18_cifar"), ResNet)
