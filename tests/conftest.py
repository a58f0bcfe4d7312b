"""Shared fixtures: synthetic photos, folders of them, release-format weights with random values."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

import models

if os.environ.get("PYTEST_XDIST_WORKER"):  # two workers on two cores: one thread each (small tensors scale poorly)
    torch.set_num_threads(1)


def synthetic_rgb(seed: int, h: int = 48, w: int = 64) -> np.ndarray:
    """A smooth colourful uint8 image (gradients and a disc) with real chroma."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    phase = rng.uniform(0, 2 * np.pi, 3)
    img = np.stack([0.5 + 0.45 * np.sin(6 * x + 3 * y * (c + 1) + phase[c]) for c in range(3)], -1)
    cy, cx, r = rng.uniform(0.2, 0.6), rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.25)
    img[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = rng.uniform(0, 1, 3)
    return (img * 255).round().astype(np.uint8)


@pytest.fixture
def photo_dir(tmp_path):
    """Eight synthetic photos in two class folders."""
    root = tmp_path / "photos"
    for i in range(8):
        d = root / ("cat" if i % 2 else "dog")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(synthetic_rgb(i)).save(d / f"img{i}.png")
    return root


@pytest.fixture(scope="session")
def release_weights(tmp_path_factory) -> str:
    """A release-format state dict (82 keys) with random weights, as a .pth file."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "random-release.pth"
    torch.save(models.ECCV16Generator().state_dict(), path)
    return str(path)
