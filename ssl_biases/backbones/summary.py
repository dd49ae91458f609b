"""Table of backbone presets: parameters, FLOPs, tokens, embedding width.

``ssl-biases backbones --image-size 32 --names vit_tiny mixer_tiny`` prints a markdown table.
"""

from __future__ import annotations

from typing import Any

import torch
from jsonargparse import ActionConfigFile, ArgumentParser
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from ssl_biases.backbones.registry import create_backbone, list_backbones

COLUMNS = ("name", "class", "image_size", "tokens", "num_features", "params_M", "gflops")


@torch.no_grad()
def count_flops(model: torch.nn.Module, image_size: int) -> int:
    """FLOPs of one forward pass on one ``image_size`` image.

    Counted by ``torch.utils.flop_counter.FlopCounterMode``: matrix multiplications and
    convolutions at 2 FLOPs per multiply-add (attention included: it is run with the math
    SDPA backend, whose matmuls are counted); norms, activations and softmax are not counted.
    """
    x = torch.zeros(1, 3, image_size, image_size)
    was_training = model.training
    model.eval()
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return int(counter.get_total_flops())


@torch.no_grad()
def summarize(names: list[str], image_size: int | None = None) -> list[dict[str, Any]]:
    """One row per backbone name: params, FLOPs per image, tokens and ``num_features``.

    Args:
        names: registered preset names (or ``timm:<model>``).
        image_size: build every backbone at this size; ``None`` keeps each preset's own.

    Returns:
        Dicts with keys :data:`COLUMNS`; ``tokens`` is the number of output tokens (prefix
        tokens included) or of feature-map positions for CNNs.
    """
    rows = []
    for name in names:
        overrides = {} if image_size is None else {"image_size": image_size}
        model = create_backbone(name, **overrides).eval()
        size = model.image_size
        feats = model.forward_features(torch.zeros(1, 3, size, size))
        tokens = feats.shape[1] if feats.ndim == 3 else feats.shape[2] * feats.shape[3]
        rows.append(
            {
                "name": name,
                "class": type(model).__name__,
                "image_size": size,
                "tokens": int(tokens),
                "num_features": int(model.num_features),
                "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
                "gflops": count_flops(model, size) / 1e9,
            }
        )
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """Rows as a markdown table."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = [
            f"{row[c]:.2f}" if c == "params_M" else f"{row[c]:.3f}" if c == "gflops" else row[c]
            for c in COLUMNS
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def backbones(names: list[str] | None = None, image_size: int | None = None) -> None:
    """List backbone presets with params and FLOPs: prints a markdown table.

    Args:
        names: Presets to list (registry names or ``timm:<model>``; default: all registered).
        image_size: Input size (default: each preset's own).
    """
    print(format_table(summarize(names if names is not None else list_backbones(), image_size)))


def build_parser() -> ArgumentParser:
    """``backbones``'s jsonargparse parser, with ``--config``."""
    parser = ArgumentParser(
        prog="ssl-biases backbones", description="List backbone presets with params and FLOPs."
    )
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_function_arguments(backbones, as_group=False)
    return parser
