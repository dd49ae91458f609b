"""The project's own backbone registry: named presets of typed backbone classes.

A preset is a class plus keyword arguments. ``create_backbone(name, **overrides)`` builds
it; ``backbone_config(name)`` gives the same thing as a jsonargparse/LightningCLI
``class_path`` + ``init_args`` dict, every argument explicit; ``backbone_config(name,
explicit=False)`` only what differs from the class defaults, without ``image_size`` (the
data config states it): what ``configs/backbone/<name>.yaml`` holds. Names
starting with ``timm:`` build a :class:`~ssl_biases.backbones.TimmBackbone` of that timm
model. Nothing here touches timm's own global registry.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from typing import Any

from torch import nn

from ssl_biases.backbones.legacy import LEGACY_MIXER_KNOBS, migrate_backbone_config
from ssl_biases.backbones.mixers import TokenMixer

TIMM_PREFIX = "timm:"
_PRESETS: dict[str, tuple[type[nn.Module], dict[str, Any]]] = {}


def _parameters(constructor: type[nn.Module]) -> dict[str, inspect.Parameter]:
    params = dict(inspect.signature(constructor).parameters)
    params.pop("self", None)
    return params


def _check_keys(name: str, constructor: type[nn.Module], kwargs: dict[str, Any]) -> None:
    valid = _parameters(constructor)
    for key in kwargs:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"backbone {name!r} ({constructor.__name__}) takes no argument {key!r}{hint}; "
                f"valid arguments: {sorted(valid)}"
            )


def register_backbone(name: str, constructor: type[nn.Module], **preset_kwargs: Any) -> None:
    """Register ``constructor(**preset_kwargs)`` under ``name``.

    Args:
        name: the preset's name; must be new and must not start with ``timm:``.
        constructor: a backbone class with typed keyword arguments (no ``**kwargs``).
        **preset_kwargs: the preset's arguments; each must be a constructor argument.

    Raises:
        ValueError: on a duplicate or reserved name, or an argument the class does not take.
    """
    if name in _PRESETS:
        raise ValueError(f"backbone {name!r} is already registered")
    if name.startswith(TIMM_PREFIX):
        raise ValueError(f"names starting with {TIMM_PREFIX!r} are reserved for timm models")
    _check_keys(name, constructor, preset_kwargs)
    _PRESETS[name] = (constructor, dict(preset_kwargs))


def list_backbones() -> list[str]:
    """Sorted names of the registered presets (``timm:<model>`` names are not listed)."""
    return sorted(_PRESETS)


def _resolve(name: str) -> tuple[type[nn.Module], dict[str, Any]]:
    if name.startswith(TIMM_PREFIX):
        from ssl_biases.backbones.timm_models import TimmBackbone

        return TimmBackbone, {"model_name": name[len(TIMM_PREFIX) :]}
    if name not in _PRESETS:
        raise ValueError(
            f"unknown backbone {name!r}; known backbones: {list_backbones()} "
            f"(or '{TIMM_PREFIX}<timm model name>')"
        )
    constructor, kwargs = _PRESETS[name]
    return constructor, dict(kwargs)


MIN_IMAGE_SIZE = 8  # as the data module's check


def create_backbone(name: str, **overrides: Any) -> nn.Module:
    """Build the backbone ``name`` with its preset arguments updated by ``overrides``.

    Raises:
        ValueError: for an unknown name (the message lists the known ones) or an override
            the backbone's constructor does not take (the message lists the valid ones).
    """
    constructor, kwargs = _resolve(name)
    _check_keys(name, constructor, overrides)
    kwargs.update(overrides)
    size = kwargs.get("image_size")
    if isinstance(size, int) and size < MIN_IMAGE_SIZE:  # a conv would fail, unclearly
        raise ValueError(
            f"image_size must be at least {MIN_IMAGE_SIZE} pixels, got {size} "
            "(--image-size / --data.image_size)"
        )
    return constructor(**kwargs)


def _class_path(constructor: type[nn.Module]) -> str:
    package = importlib.import_module("ssl_biases.backbones")
    if getattr(package, constructor.__name__, None) is constructor:
        return f"ssl_biases.backbones.{constructor.__name__}"
    return f"{constructor.__module__}.{constructor.__qualname__}"


def backbone_config(name: str, explicit: bool = True) -> dict[str, Any]:
    """The preset as ``{"class_path": ..., "init_args": {...}}``.

    Args:
        name: a registry name (or ``timm:<model>``).
        explicit: ``True``: ``init_args`` lists every constructor argument (preset values,
            else the defaults; a token mixer as ``{class_path, init_args}`` with every knob),
            the canonical form that :func:`~.legacy.migrate_backbone_config` also gives.
            ``False``: only the arguments that differ from the constructor's defaults,
            without ``image_size`` (the data config states it once; the CLI links it); a
            token mixer with default knobs is written as its name.
    """
    constructor, kwargs = _resolve(name)
    params = {k: p for k, p in _parameters(constructor).items() if k not in LEGACY_MIXER_KNOBS}
    if explicit:
        init_args = {
            key: kwargs.get(key, param.default)
            for key, param in params.items()
            if key in kwargs or param.default is not inspect.Parameter.empty
        }
        return migrate_backbone_config(
            {"class_path": _class_path(constructor), "init_args": init_args}
        )
    init_args = {
        key: _minimal_value(value)
        for key, value in kwargs.items()
        if key != "image_size" and value != params[key].default
    }
    return {"class_path": _class_path(constructor), "init_args": init_args}


def _minimal_value(value: Any) -> Any:
    """A preset value for a config file: a mixer as its name, or class_path + changed knobs."""
    if not isinstance(value, TokenMixer):
        return value
    defaults = type(value)()
    if value == defaults:
        return value.name
    changed = {k: v for k, v in value.init_args.items() if v != defaults.init_args[k]}
    cls = type(value)
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": changed}
