"""The project's own backbone registry: named presets of typed backbone classes.

A preset is a class plus keyword arguments. ``create_backbone(name, **overrides)`` builds
it; ``backbone_config(name)`` gives the same thing as a jsonargparse/LightningCLI
``class_path`` + ``init_args`` dict (what ``configs/backbone/<name>.yaml`` holds). Names
starting with ``timm:`` build a :class:`~ssl_biases.backbones.TimmBackbone` of that timm
model. Nothing here touches timm's own global registry.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from typing import Any

from torch import nn

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


def create_backbone(name: str, **overrides: Any) -> nn.Module:
    """Build the backbone ``name`` with its preset arguments updated by ``overrides``.

    Raises:
        ValueError: for an unknown name (the message lists the known ones) or an override
            the backbone's constructor does not take (the message lists the valid ones).
    """
    constructor, kwargs = _resolve(name)
    _check_keys(name, constructor, overrides)
    kwargs.update(overrides)
    return constructor(**kwargs)


def _class_path(constructor: type[nn.Module]) -> str:
    package = importlib.import_module("ssl_biases.backbones")
    if getattr(package, constructor.__name__, None) is constructor:
        return f"ssl_biases.backbones.{constructor.__name__}"
    return f"{constructor.__module__}.{constructor.__qualname__}"


def backbone_config(name: str) -> dict[str, Any]:
    """The preset as ``{"class_path": ..., "init_args": {...}}`` with every argument explicit.

    ``init_args`` lists all constructor arguments (preset values, else the defaults), so a
    config file made from it states the whole architecture.
    """
    constructor, kwargs = _resolve(name)
    init_args = {
        key: kwargs.get(key, param.default)
        for key, param in _parameters(constructor).items()
        if key in kwargs or param.default is not inspect.Parameter.empty
    }
    return {"class_path": _class_path(constructor), "init_args": init_args}
