"""Take a pretrained backbone out of the framework: ``ssl-biases export`` and ``load_backbone``.

``ssl-biases export --ckpt RUN/checkpoints/last.ckpt --output DIR`` writes

- ``DIR/backbone.safetensors``: the backbone's weights (for a ``timm:`` backbone, the weights of
  the timm model itself, so they load into ``timm.create_model`` directly);
- ``DIR/backbone.json``: how to rebuild it: ``class_path`` + ``init_args`` (the backbone's
  constructor knobs), the registry name where one matches, ``num_features``, and for timm
  models the ``timm.create_model`` arguments.

With ``--format onnx`` (the ``onnx`` extra) it also writes ``DIR/backbone.onnx``: ``images
[batch, C, H, W] -> embedding [batch, num_features]`` with a dynamic batch axis, checked
against PyTorch under onnxruntime (:mod:`ssl_biases.run.onnx_export`) and recorded under
``"onnx"`` in ``backbone.json``.

``ssl_biases.load_backbone(DIR)`` rebuilds the backbone from these two files in any process,
without Lightning. A timm backbone also loads without ssl-biases at all::

    model = timm.create_model(meta["timm"]["model_name"], pretrained=True,
                              pretrained_cfg_overlay={"file": "DIR/backbone.safetensors"},
                              **meta["timm"]["kwargs"])

The checkpoint is read by :func:`ssl_biases.run.checkpoint.read_checkpoint` (the backbone's
config from the checkpoint, else from the run's ``config.yaml`` beside ``checkpoints/``).
This module imports neither Lightning nor the methods, so it stays cheap to import.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, Literal

import torch
from jsonargparse import ActionConfigFile, ArgumentParser
from safetensors.torch import load_file, save_file
from torch import nn

from ssl_biases.run.checkpoint import build_backbone, load_weights, read_checkpoint
from ssl_biases.run.onnx_export import (
    DEFAULT_OPSET,
    INPUT_NAME,
    ONNX_FILE,
    OUTPUT_NAME,
    check_onnx,
    export_onnx,
)

FORMAT = "ssl-biases-backbone"
FORMAT_VERSION = 1
WEIGHTS_FILE = "backbone.safetensors"
META_FILE = "backbone.json"
TIMM_CLASS_PATHS = (
    "ssl_biases.backbones.TimmBackbone",
    "ssl_biases.backbones.timm_models.TimmBackbone",
)


def registry_name(config: dict[str, Any]) -> str | None:
    """The registry name whose preset equals ``config`` (``timm:<model>`` for timm), or None."""
    from ssl_biases.backbones import backbone_config, list_backbones

    init_args = config.get("init_args", {})
    if config.get("class_path") in TIMM_CLASS_PATHS:
        return f"timm:{init_args['model_name']}"
    for name in list_backbones():
        preset = backbone_config(name)
        if preset["class_path"] == config.get("class_path") and preset["init_args"] == init_args:
            return name
    return None


def export_backbone(
    backbone: nn.Module | dict[str, torch.Tensor],
    output: str | Path,
    config: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``backbone.safetensors`` and ``backbone.json`` into ``output``.

    Args:
        backbone: The backbone module, or its ``state_dict``.
        output: Folder to write to (created).
        config: ``{"class_path": ..., "init_args": {...}}`` that rebuilds the backbone.
        extra: More JSON-serialisable fields for ``backbone.json`` (e.g. the source run).

    Returns:
        The output folder.
    """
    state = backbone.state_dict() if isinstance(backbone, nn.Module) else dict(backbone)
    config = {"class_path": config["class_path"], "init_args": dict(config.get("init_args", {}))}
    model = build_backbone(config)  # fails early, with a clear message, on a bad config
    timm_meta = None
    if config["class_path"] in TIMM_CLASS_PATHS:  # store the timm model's own keys
        state = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
        init_args = config["init_args"]
        kwargs: dict[str, Any] = {"num_classes": 0, "in_chans": init_args.get("in_chans", 3)}
        if _takes_img_size(model):
            kwargs["img_size"] = init_args.get("image_size", 224)
        timm_meta = {"model_name": init_args["model_name"], "kwargs": kwargs}
    load_weights(model.model if timm_meta else model, state, config)  # the weights must fit
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    # clone: safetensors refuses tensors that share memory (tied weights, views)
    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in state.items()}
    save_file(tensors, str(output / WEIGHTS_FILE), metadata={"format": FORMAT})
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **config,
        "registry_name": registry_name(config),
        "num_features": int(model.num_features),
        "weights": WEIGHTS_FILE,
        **({"timm": timm_meta} if timm_meta else {}),
        **(extra or {}),
    }
    (output / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=False) + "\n")
    return output


def _takes_img_size(model: nn.Module) -> bool:
    """Whether the wrapped timm model takes ``img_size`` (ViT/Mixer-like models; not CNNs)."""
    return "img_size" in inspect.signature(type(model.model).__init__).parameters


def export_checkpoint(ckpt: str | Path, output: str | Path) -> Path:
    """Export the backbone of a training checkpoint (see the module docstring)."""
    checkpoint = read_checkpoint(ckpt)
    return export_backbone(
        checkpoint.backbone_weights(),
        output,
        checkpoint.backbone_config(),
        extra={"source_checkpoint": str(ckpt), "global_step": checkpoint.global_step},
    )


def read_meta(directory: str | Path) -> dict[str, Any]:
    """The ``backbone.json`` of an export folder (checked)."""
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found; create it with `ssl-biases export --ckpt RUN/checkpoints/"
            f"last.ckpt --output {directory}`"
        )
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT or meta.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"{path} is not an ssl-biases backbone export of version <= {FORMAT_VERSION}"
        )
    return meta


def load_backbone(directory: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild an exported backbone (in eval mode) from ``DIR/backbone.{json,safetensors}``.

    Needs only torch, safetensors and the backbone's own package (not Lightning).

    Raises:
        FileNotFoundError: when the folder lacks the export files.
        ValueError: when the weights do not fit the described architecture.
    """
    meta = read_meta(directory)
    backbone = build_backbone(meta)
    state = load_file(str(Path(directory) / meta.get("weights", WEIGHTS_FILE)), device="cpu")
    load_weights(backbone.model if "timm" in meta else backbone, state, meta)
    return backbone.to(map_location).eval()


def write_onnx(directory: str | Path, opset: int = DEFAULT_OPSET) -> tuple[Path, float]:
    """Adds ``backbone.onnx`` to an export folder and records it in ``backbone.json``.

    The graph (:func:`~ssl_biases.run.onnx_export.export_onnx`: ``images [batch, C, H, W]`` ->
    ``embedding [batch, num_features]``, dynamic batch) is checked against the PyTorch
    backbone under onnxruntime on CPU (:func:`~ssl_biases.run.onnx_export.check_onnx`).

    Returns:
        The ``.onnx`` file and its max absolute difference from PyTorch.
    """
    meta = read_meta(directory)
    backbone = load_backbone(directory)
    image_size = int(getattr(backbone, "image_size", meta["init_args"].get("image_size", 224)))
    in_chans = int(meta["init_args"].get("in_chans", 3))
    path = export_onnx(backbone, Path(directory) / ONNX_FILE, image_size, in_chans, opset)
    diff = check_onnx(path, backbone, image_size, in_chans)
    meta["onnx"] = {
        "file": ONNX_FILE,
        "opset": opset,
        "input": {"name": INPUT_NAME, "shape": ["batch", in_chans, image_size, image_size]},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", meta["num_features"]]},
        "max_abs_diff_vs_pytorch": diff,
    }
    (Path(directory) / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=False) + "\n")
    return path, diff


def export(
    ckpt: str,
    output: str,
    format: Literal["safetensors", "onnx"] = "safetensors",
    opset: int = DEFAULT_OPSET,
) -> None:
    """Write a checkpoint's backbone as safetensors + backbone.json (load: ``load_backbone``).

    Prints the exported backbone's name and width.

    Args:
        ckpt: A checkpoint written by ``ssl-biases fit``.
        output: Folder to write the export into (created).
        format: ``safetensors``: weights + backbone.json. ``onnx``: those and backbone.onnx
            (images [batch, 3, H, W] -> embedding [batch, num_features], dynamic batch),
            checked against PyTorch under onnxruntime (needs the onnx extra).
        opset: ONNX opset of ``--format onnx`` (18, the exporter's own, up to onnx's newest).
    """
    from ssl_biases.run.faults import check_writable_folder  # (load_backbone: no Lightning)

    check_writable_folder(output, f"--output {output}")  # before reading anything
    written = export_checkpoint(ckpt, output)
    meta = read_meta(written)
    name = meta["registry_name"] or meta["class_path"]
    print(f"Exported {name} (num_features={meta['num_features']}) to {written}")
    if format == "onnx":
        path, diff = write_onnx(written, opset)
        print(f"ONNX (opset {opset}, dynamic batch): {path}; onnxruntime vs PyTorch {diff:.1e}")


def build_parser() -> ArgumentParser:
    """``export``'s jsonargparse parser, with ``--config``."""
    parser = ArgumentParser(
        prog="ssl-biases export",
        description="Write a checkpoint's backbone as safetensors + backbone.json "
        "(load it with ssl_biases.load_backbone(DIR)); --format onnx adds backbone.onnx.",
    )
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_function_arguments(export, as_group=False)
    return parser
