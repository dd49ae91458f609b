"""`shapes`: a procedurally generated, labelled image dataset that needs no download.

The label is the shape; colour, position, scale, rotation and background are nuisances an
SSL method has to become invariant to. Every image is a pure function of
``(seed, split, index)``, so the dataset is identical on every machine and in every worker.
"""

from __future__ import annotations

import math
import random

import numpy as np
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

SHAPE_NAMES = ("circle", "square", "triangle", "cross", "star", "ring", "diamond", "bar")

_SPLIT_OFFSETS = {"train": 0, "test": 1_000_003}

# Shortcut cue (Minderer et al. arXiv 2002.08822)
SHORTCUT_AMPLITUDE = 90.0  # grating amplitude, in 0-255 grey levels
SHORTCUT_PERIOD = (0.08, 0.16)  # grating period range, as a fraction of the image side


def shortcut_grating(image_size: int, rng: random.Random) -> np.ndarray:
    """A per-image sinusoidal grating: the planted shortcut of ``shapes(shortcut=True)``.

    Orientation, period and phase are drawn per image. The grating covers the whole image, so
    every random-resized crop holds it; it is a luminance pattern (equal in R, G and B), so it
    survives greyscale and hue jitter; its orientation survives rescaling. Two views of one
    image can therefore be matched by the grating alone, without the shape.

    Returns:
        ``[H, W]`` float offsets in ``[-SHORTCUT_AMPLITUDE, SHORTCUT_AMPLITUDE]`` grey levels.
    """
    theta = rng.uniform(0.0, math.pi)
    period = image_size * rng.uniform(*SHORTCUT_PERIOD)
    phase = rng.uniform(0.0, 2 * math.pi)
    y, x = np.mgrid[0:image_size, 0:image_size].astype(np.float64)  # [H, W] each
    along = x * math.cos(theta) + y * math.sin(theta)  # [H, W]
    return SHORTCUT_AMPLITUDE * np.sin(2 * math.pi * along / period + phase)


# --- end shortcut cue -------------------------------------------------------------------------


def _polygon(
    cx: float, cy: float, radius: float, n: int, angle: float, inner: float | None = None
) -> list[tuple[float, float]]:
    """Vertices of a regular polygon (or a star when ``inner`` is the inner radius)."""
    points = []
    steps = 2 * n if inner is not None else n
    for k in range(steps):
        r = radius if inner is None or k % 2 == 0 else inner
        theta = angle + 2 * math.pi * k / steps
        points.append((cx + r * math.cos(theta), cy + r * math.sin(theta)))
    return points


def _rotated_rect(
    cx: float, cy: float, half_w: float, half_h: float, angle: float
) -> list[tuple[float, float]]:
    cos, sin = math.cos(angle), math.sin(angle)
    corners = [(-half_w, -half_h), (half_w, -half_h), (half_w, half_h), (-half_w, half_h)]
    return [(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in corners]


def draw_shape(
    draw: ImageDraw.ImageDraw,
    name: str,
    cx: float,
    cy: float,
    radius: float,
    angle: float,
    colour: tuple[int, int, int],
) -> None:
    """Draws one filled shape of the given name centred at ``(cx, cy)``."""
    if name == "circle":
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=colour)
    elif name == "ring":
        width = max(1, round(radius * 0.35))
        draw.ellipse(
            (cx - radius, cy - radius, cx + radius, cy + radius), outline=colour, width=width
        )
    elif name == "square":
        draw.polygon(_polygon(cx, cy, radius, 4, angle), fill=colour)
    elif name == "diamond":
        draw.polygon(_rotated_rect(cx, cy, radius * 0.45, radius, angle), fill=colour)
    elif name == "triangle":
        draw.polygon(_polygon(cx, cy, radius, 3, angle), fill=colour)
    elif name == "star":
        draw.polygon(_polygon(cx, cy, radius, 5, angle, inner=radius * 0.45), fill=colour)
    elif name == "cross":
        draw.polygon(_rotated_rect(cx, cy, radius, radius * 0.3, angle), fill=colour)
        draw.polygon(_rotated_rect(cx, cy, radius * 0.3, radius, angle), fill=colour)
    elif name == "bar":
        draw.polygon(_rotated_rect(cx, cy, radius, radius * 0.25, angle), fill=colour)
    else:
        raise ValueError(f"unknown shape {name!r}; known shapes: {', '.join(SHAPE_NAMES)}")


class ShapesDataset(Dataset):
    """Labelled procedural shapes; ``dataset[i] -> (PIL.Image, label)``.

    Args:
        split: ``"train"`` or ``"test"``; the splits draw from disjoint random streams.
        size: Number of images in the split.
        image_size: Side of the square RGB images, in pixels.
        num_classes: Number of shape classes (2 to 8), taken from :data:`SHAPE_NAMES` in order.
        seed: Seed of the whole dataset; the same seed gives the same images everywhere.
        shortcut: Add a per-image grating (:func:`shortcut_grating`) that lets SSL views be
            matched without the shape; the shapes are those of the clean dataset.
    """

    def __init__(
        self,
        split: str = "train",
        size: int = 2000,
        image_size: int = 32,
        num_classes: int = 4,
        seed: int = 0,
        shortcut: bool = False,
    ) -> None:
        if split not in _SPLIT_OFFSETS:
            raise ValueError(f"shapes split must be 'train' or 'test', got {split!r}")
        if not 2 <= num_classes <= len(SHAPE_NAMES):
            raise ValueError(
                f"shapes num_classes must be in [2, {len(SHAPE_NAMES)}], got {num_classes}"
            )
        if size < 1:
            raise ValueError(f"shapes size must be positive, got {size}")
        self.split = split
        self.size = size
        self.image_size = image_size
        self.num_classes = num_classes
        self.seed = seed
        self.shortcut = shortcut
        self.classes = list(SHAPE_NAMES[:num_classes])

    def with_shortcut(self, shortcut: bool = True) -> ShapesDataset:
        """The same images (same shapes and nuisances) with or without the shortcut cue."""
        return ShapesDataset(
            self.split, self.size, self.image_size, self.num_classes, self.seed, shortcut
        )

    def __len__(self) -> int:
        return self.size

    def label(self, index: int) -> int:
        """Label of image ``index`` without drawing it (classes are balanced and interleaved)."""
        return index % self.num_classes

    @property
    def targets(self) -> list[int]:
        return [self.label(i) for i in range(self.size)]

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        if not 0 <= index < self.size:
            raise IndexError(index)
        label = self.label(index)
        rng = random.Random(self.seed * 2_000_003 + _SPLIT_OFFSETS[self.split] + index)
        scale = 4  # draw at 4x and downsample: anti-aliased edges
        side = self.image_size * scale
        background = tuple(rng.randint(0, 255) for _ in range(3))
        colour = tuple(rng.randint(0, 255) for _ in range(3))
        # keep the shape visible against its background
        while sum(abs(a - b) for a, b in zip(colour, background)) < 200:
            colour = tuple(rng.randint(0, 255) for _ in range(3))
        image = Image.new("RGB", (side, side), background)
        radius = side * rng.uniform(0.18, 0.32)
        cx = rng.uniform(radius, side - radius)
        cy = rng.uniform(radius, side - radius)
        angle = rng.uniform(0, 2 * math.pi)
        draw_shape(ImageDraw.Draw(image), self.classes[label], cx, cy, radius, angle, colour)
        image = image.resize((self.image_size, self.image_size), Image.BILINEAR)
        if self.shortcut:
            cue_rng = random.Random(rng.getrandbits(64))  # after the shape: clean image unchanged
            grating = shortcut_grating(self.image_size, cue_rng)  # [H, W]
            pixels = np.asarray(image, dtype=np.float64) + grating[..., None]  # [H, W, 3]
            image = Image.fromarray(pixels.round().clip(0, 255).astype(np.uint8))
        return image, label
