"""A backbone as an ONNX graph: ``ssl-biases export --format onnx`` writes ``backbone.onnx``.

The graph maps ``images [batch, C, H, W]`` (float32, ``H = W = image_size``) to
``embedding [batch, num_features]``; the batch axis is dynamic. It is written by PyTorch's
``torch.export``-based exporter (``torch.onnx.export(..., dynamo=True)``, the default since
torch 2.9; it needs ``onnxscript``) rather than the legacy TorchScript tracer, which torch
deprecates and which warns on every export: the dynamo exporter exports every token mixer,
the ResNets and timm models here with the same outputs, and it states the dynamic batch axis
as a ``torch.export.Dim`` that fails the export if the model bakes the batch size in.
Needs the ``onnx`` extra (``pip install 'ssl-biases[onnx]'``; ``make install`` includes it).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import torch
from torch import nn

ONNX_FILE = "backbone.onnx"
DEFAULT_OPSET = 18
"""The exporter's native opset (torchlib's): no version conversion, runs on onnxruntime >= 1.14."""
INPUT_NAME = "images"
OUTPUT_NAME = "embedding"
TOLERANCE = 1e-4
"""The largest absolute difference from PyTorch that :func:`check_onnx` accepts, for
embeddings of magnitude up to 1 (scaled by the largest magnitude above that: float32 rounding
grows with it, e.g. 6e-5 for a random-init ResNet-50's embeddings of up to 170)."""


def _require(module: str) -> Any:
    """Imports ``module`` of the ``onnx`` extra, or says how to install it."""
    try:
        return __import__(module)
    except ImportError as err:
        raise ValueError(
            f"--format onnx needs the {module!r} package: pip install 'ssl-biases[onnx]' "
            "(or `make install`, which includes the onnx extra)"
        ) from err


def describe(backbone: nn.Module) -> str:
    """The backbone's class, with its token mixer for an ``IsotropicNet``."""
    mixer = getattr(backbone, "mixer_factory", None)
    if mixer is not None:
        return f"{type(backbone).__name__} with token_mixer={mixer!r}"
    name = getattr(backbone, "model_name", None)
    return f"{type(backbone).__name__}({name!r})" if name else type(backbone).__name__


def _cannot_export(backbone: nn.Module, opset: int, err: Exception) -> ValueError:
    """The user error for a backbone the exporter cannot convert (which part, what to do)."""
    from ssl_biases.backbones.mixers import TOKEN_MIXERS

    reason = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
    mixer = getattr(backbone, "mixer_factory", None)
    if mixer is not None:
        others = ", ".join(name for name in TOKEN_MIXERS if name != mixer.name)
        advice = (
            f"the token mixer {type(mixer).__name__} (token_mixer={mixer.name or mixer!r}) has an "
            f"operation ONNX opset {opset} cannot express; these mixers export: {others}. "
        )
    else:
        advice = f"{describe(backbone)} has an operation ONNX opset {opset} cannot express. "
    return ValueError(
        f"cannot export {describe(backbone)} to ONNX: {advice}Export its weights with "
        f"--format safetensors instead (load them with ssl_biases.load_backbone). "
        f"Exporter said: {reason}"
    )


def export_onnx(
    backbone: nn.Module,
    path: str | Path,
    image_size: int,
    in_chans: int = 3,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Write ``backbone`` (in eval mode, on CPU) as an ONNX graph with a dynamic batch axis.

    Args:
        backbone: A backbone (``forward: [B, C, H, W] -> [B, num_features]``).
        path: The ``.onnx`` file to write.
        image_size: The square input side the graph is exported for (the run's).
        in_chans: Input channels.
        opset: ONNX opset, at least :data:`DEFAULT_OPSET` (the exporter's own).

    Raises:
        ValueError: for an opset the exporter cannot write, a missing ``onnx`` extra, or a
            backbone with an operation ONNX cannot express (naming it, and what to use).
    """
    onnx = _require("onnx")
    _require("onnxscript")
    newest = onnx.defs.onnx_opset_version()
    if not DEFAULT_OPSET <= opset <= newest:
        raise ValueError(
            f"--opset {opset} is not supported: the exporter writes opsets {DEFAULT_OPSET} to "
            f"{newest} (onnx {onnx.__version__}); the default {DEFAULT_OPSET} runs on "
            "onnxruntime >= 1.14"
        )
    backbone = backbone.cpu().eval()
    example = torch.randn(2, in_chans, image_size, image_size)  # [2, C, H, W]
    batch = torch.export.Dim("batch")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the exporter's progress lines
            program = torch.onnx.export(
                backbone,
                (example,),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: batch},),
                opset_version=opset,
                verbose=False,
            )
    except Exception as err:  # torch.export or ONNX conversion: many error types
        raise _cannot_export(backbone, opset, err) from err
    path = Path(path)
    program.save(str(path), external_data=False)
    return path


def check_onnx(
    path: str | Path, backbone: nn.Module, image_size: int, in_chans: int = 3, batch_size: int = 3
) -> float:
    """Max absolute difference between onnxruntime (CPU) and PyTorch on random images.

    ``batch_size`` differs from the export's example batch (2), so this also checks the
    dynamic batch axis.

    Raises:
        ValueError: when the difference exceeds :data:`TOLERANCE` (times the embedding's
            largest magnitude, when that is above 1).
    """
    ort = _require("onnxruntime")
    images = torch.randn(batch_size, in_chans, image_size, image_size)  # [B, C, H, W]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})  # [B, F]
    with torch.no_grad():
        expected = backbone.cpu().eval()(images)  # [B, F]
    diff = float((torch.from_numpy(onnx_out) - expected).abs().max())
    allowed = TOLERANCE * max(1.0, float(expected.abs().max()))
    if not diff <= allowed:
        raise ValueError(
            f"{path}: onnxruntime's embedding differs from PyTorch's by {diff:.2e} (more than "
            f"{allowed:.1e}) for {describe(backbone)}; use --format safetensors, or try "
            "another --opset"
        )
    return diff
