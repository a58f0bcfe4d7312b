"""Synthetic damage of an old print, with its truth: what train_restore.py learns to find and .ci/damaged_photos.py
measures restore.py on. Gray pictures are float32 (H,W) in [0, 1].

    out = damage(gray, np.random.default_rng(seed))   # out.gray, out.mask (what the damage changed), out.sigma ...

Scratches are long thin lines, cracks branching networks of short segments, dust small blobs; each stroke bright or
dark and more or less opaque. The mask holds the pixels a stroke changed by at least VISIBLE: a white scratch across
a white sky cannot be found, nor needs filling. Grain is Gaussian of known sigma, fading a known curve.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

VISIBLE = 12 / 255  # a stroke that moved a pixel less than this is not part of the mask


@dataclass
class Damaged:
    """A damaged gray picture and what was done to it."""
    gray: np.ndarray  # float32 (H,W) in [0, 1]
    mask: np.ndarray  # bool (H,W): scratches, cracks and dust
    sigma: float  # the grain's standard deviation, in [0, 1] units
    fade: tuple[float, float, float]  # (black, white, gamma): faded = black + (white - black) * clean ** gamma


def _stroke_layer(shape: tuple[int, int]) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    layer = Image.new("L", (shape[1], shape[0]), 0)
    return layer, ImageDraw.Draw(layer)


def scratch(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """One long thin line across much of the picture, gently curved: coverage (H,W) float32 in [0, 1]."""
    h, w = shape
    layer, draw = _stroke_layer(shape)
    vertical = rng.random() < 0.6  # film and print scratches run mostly along one direction
    n = 8
    t = np.linspace(0, 1, n)
    length = rng.uniform(0.3, 1.2)
    start = rng.uniform(-0.1, 1.0 - length * 0.5)
    along = (start + length * t) * (h if vertical else w)
    across = rng.uniform(0, w if vertical else h) + np.cumsum(rng.normal(0, 0.01 * (w if vertical else h), n))
    across += rng.normal(0, 0.08) * along  # a slant
    points = list(zip(across, along)) if vertical else list(zip(along, across))
    draw.line([(float(x), float(y)) for x, y in points], fill=255, width=int(rng.integers(1, 4)))
    return np.asarray(layer, np.float32) / 255


def crack(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A branching network of short jagged segments (cracked emulsion): coverage (H,W)."""
    h, w = shape
    layer, draw = _stroke_layer(shape)
    step = max(3.0, 0.015 * max(h, w))
    tips = [(rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0, 2 * np.pi))]
    segments = int(rng.integers(20, 120))
    width = int(rng.integers(1, 3))
    for _ in range(segments):
        i = int(rng.integers(len(tips)))
        x, y, angle = tips[i]
        angle += rng.normal(0, 0.5)
        nx, ny = x + step * np.cos(angle), y + step * np.sin(angle)
        draw.line([(float(x), float(y)), (float(nx), float(ny))], fill=255, width=width)
        tips[i] = (nx, ny, angle)
        if rng.random() < 0.12:  # a branch
            tips.append((nx, ny, angle + rng.choice([-1, 1]) * rng.uniform(0.6, 1.4)))
    return np.asarray(layer, np.float32) / 255


def dust(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A few dozen small blobs and specks: coverage (H,W)."""
    h, w = shape
    layer, draw = _stroke_layer(shape)
    for _ in range(int(rng.integers(5, 60))):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        rx, ry = rng.uniform(0.5, 4, 2)
        draw.ellipse([float(x - rx), float(y - ry), float(x + rx), float(y + ry)], fill=255)
    return np.asarray(layer, np.float32) / 255


def fade(gray: np.ndarray, black: float, white: float, gamma: float) -> np.ndarray:
    """A faded print's tone curve: black + (white - black) * gray ** gamma."""
    return (black + (white - black) * np.power(gray, gamma)).astype(np.float32)


def damage(gray: np.ndarray, rng: np.random.Generator, scratches: tuple[int, int] = (0, 4), cracks: tuple[int, int] = (0, 2),
           specks: float = 0.7, grain: tuple[float, float] = (0.0, 10 / 255), fading: float = 0.5) -> Damaged:
    """A gray picture damaged at random (counts drawn from the ranges; dust and fading with these chances)."""
    out = gray.astype(np.float32, copy=True)
    strokes = [scratch] * int(rng.integers(scratches[0], scratches[1] + 1)) + [crack] * int(rng.integers(cracks[0], cracks[1] + 1))
    strokes += [dust] if rng.random() < specks else []
    mask = np.zeros(gray.shape, bool)
    for draw in strokes:
        cover = draw(gray.shape, rng) * rng.uniform(0.6, 1.0)  # opacity
        value = rng.uniform(0.8, 1.0) if rng.random() < 0.6 else rng.uniform(0.0, 0.2)  # a bright line, or a dark one
        before = out.copy()
        out += cover * (value - out)
        mask |= np.abs(out - before) >= VISIBLE
    black, white, gamma = 0.0, 1.0, 1.0
    if rng.random() < fading:
        black, white, gamma = rng.uniform(0.05, 0.3), rng.uniform(0.7, 0.95), rng.uniform(0.8, 1.25)
        out = fade(out, black, white, gamma)
    sigma = float(rng.uniform(*grain))
    if sigma:
        out += rng.normal(0, sigma, out.shape).astype(np.float32)
    return Damaged(np.clip(out, 0, 1), mask, sigma, (black, white, gamma))


def sepia(gray: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """A toned print: gray (H,W) -> uint8 RGB (H,W,3), warm brown in the mid-tones (a classic sepia matrix's hue)."""
    tone = np.array([1.07, 0.98, 0.82], np.float32)  # the sepia matrix applied to mid gray, divided by it
    rgb = gray[..., None] * (1 + strength * (tone - 1))
    return (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)
