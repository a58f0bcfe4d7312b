"""Shared fixtures: synthetic photos, folders of them, release-format weights with random values."""

from __future__ import annotations

import ctypes
import gc
import os
import runpy
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import data
import models

ROOT = Path(__file__).resolve().parents[1]

os.environ["COLORGAN_BACKBONE"] = "random"  # no test downloads: the hypercolumn model's VGG16 is seeded random weights
if os.environ.get("PYTEST_XDIST_WORKER"):  # two workers on two cores: one thread each (small tensors scale poorly)
    torch.set_num_threads(1)
# tmp_path in RAM where Linux has a tmpfs: the training tests write and fsync ~20 checkpoints of up to 549 MB (1.5 s each
# on this disk, 0.2 s in RAM); pytest.ini's tmp_path_retention_policy = failed deletes a passed test's folder at once
if Path("/dev/shm").is_dir() and os.access("/dev/shm", os.W_OK) and shutil.disk_usage("/dev/shm").free > 8 * 2**30:
    tempfile.tempdir = "/dev/shm"


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


def varied_generator(seed: int, arch: str = "eccv16") -> models.Generator:
    """A release-format generator with random weights whose colour depends strongly on the input and varies across the
    image (std ~7 Lab units within a photo): BatchNorm's statistics taken from synthetic photos (SIGGRAPH17: with
    simulated hints), and ECCV16's 313 logits sharpened 100x (SIGGRAPH17's output doubled). Plain random weights give an
    almost constant ab, which no "same pixels" test can tell apart."""
    import hints

    torch.manual_seed(seed)
    G = models.ARCHS[arch]()
    for m in G.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the calibration batch
    photos = torch.stack([torch.from_numpy(synthetic_rgb(i, 64, 64)).permute(2, 0, 1) for i in range(8)])
    L, ab = data.uint8_to_lab(photos)
    with torch.no_grad():
        if G.takes_hints:
            G.train()(L, hints.simulate(ab, torch.Generator().manual_seed(seed)))
            G.model_out[0].weight.mul_(2)
            G.model_out[0].bias.zero_()
        else:
            G.train()(L)
            G.model8[-1].weight.mul_(100)
            G.model8[-1].bias.zero_()
    for m in G.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.1
    return G.eval()


def varied_hypercolumn(seed: int) -> models.HypercolumnGenerator:
    """A hypercolumn model (random VGG16, random head) whose colour depends on the input and varies across the image: its
    projection scaled to the random backbone's feature sizes, its 313 logits sharpened."""
    torch.manual_seed(seed)
    G = models.HypercolumnGenerator("random").eval()
    photos = torch.stack([torch.from_numpy(synthetic_rgb(i, 64, 64)).permute(2, 0, 1) for i in range(4)])
    with torch.no_grad():
        columns, scene = G.features(data.uint8_to_l(photos))
        std, mean = columns.std((0, 2, 3)).clamp_min(1e-3), columns.mean((0, 2, 3))
        G.project.weight.div_(std[None, :, None, None] * 2)  # each channel standardised over photos and positions
        G.project.bias.copy_(-(G.project.weight[:, :, 0, 0] @ mean))
        G.scene.weight.div_(scene.std(0).clamp_min(1e-3)[None] * 40)
        G.head[-1].weight.mul_(30)
    return G


@pytest.fixture(scope="session")
def hypercolumn_weights(tmp_path_factory) -> str:
    """A hypercolumn model's head (a random VGG16 beneath: COLORGAN_BACKBONE=random) as a .safetensors file."""
    from safetensors.torch import save_file

    path = tmp_path_factory.mktemp("weights") / "hypercolumn.safetensors"
    save_file(varied_hypercolumn(0).state_dict(), str(path))
    return str(path)


@pytest.fixture(scope="session")
def release_weights(tmp_path_factory) -> str:
    """A release-format state dict (82 keys) with random weights and input-dependent colour, as a .pth file."""
    path = tmp_path_factory.mktemp("weights") / "random-release.pth"
    torch.save(varied_generator(0).state_dict(), path)
    return str(path)


@pytest.fixture(scope="session")
def other_weights(tmp_path_factory) -> str:
    """A second such model (another seed): wherever two models or two runs are compared."""
    path = tmp_path_factory.mktemp("weights") / "other-release.pth"
    torch.save(varied_generator(1).state_dict(), path)
    return str(path)


@pytest.fixture(scope="session")
def siggraph_weights(tmp_path_factory) -> str:
    """A SIGGRAPH17 release-format state dict (107 keys) with random weights and input-dependent colour, as a .pth file."""
    path = tmp_path_factory.mktemp("weights") / "random-siggraph17.pth"
    torch.save(varied_generator(0, "siggraph17").state_dict(), path)
    return str(path)


@pytest.fixture
def script(monkeypatch, capsys):
    """run(name, *args) -> (exit code, stderr), run.stdout: the script run in this process, as `python name args` would
    (run_name is not __main__, so that a script's os._exit fast path is not taken inside pytest)."""
    from accelerate.state import AcceleratorState

    monkeypatch.setenv("ACCELERATE_USE_CPU", "1")

    def run(name: str, *args: str) -> tuple[int, str]:
        """(exit code, stderr); run.stdout holds what the script printed."""
        AcceleratorState._reset_state(True)
        monkeypatch.setattr(sys, "argv", [name, *args])
        handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            runpy.run_path(str(ROOT / name), run_name="__script__")
            code = 0
        except SystemExit as e:
            code = e.code
        except BaseException:  # an error that escapes (a test's planted one): this process keeps its own handlers
            for s, h in handlers.items():
                signal.signal(s, h)
            raise
        finally:
            # colorize.py freezes every live object at its start (gc.freeze: a CLI run's speed-up); in this process that
            # made each earlier test's garbage permanent (a worker grew to 11.9 GB and was killed): thawed and collected,
            # and the freed memory given back to the system
            gc.unfreeze()
            gc.collect()
            if hasattr(ctypes.CDLL(None), "malloc_trim"):
                ctypes.CDLL(None).malloc_trim(0)
        captured = capsys.readouterr()
        err, run.stdout = captured.err, captured.out
        if isinstance(code, str):  # SystemExit("message"): Python prints it and exits 1
            code, err = 1, err + code + "\n"
        assert {s: signal.getsignal(s) for s in handlers} == handlers, f"{name} kept its signal handlers after exiting {code}"
        return code, err

    return run


def make_clip(path, frames: int = 8, h: int = 48, w: int = 64, audio: bool = True, cut_at: int | None = None,
              grain: float = 4.0, rate: int = 12, codec: str = "libx264", start: float = 0.0, toned: bool = False) -> None:
    """A small video made with PyAV: a still synthetic scene with film grain (a second scene from cut_at on), and a
    440 Hz AAC tone as its sound track; its first frame at `start` seconds (a clip cut from a longer recording), and
    with toned=True a sepia print's picture (its lightness in one warm tint)."""
    from fractions import Fraction

    import av

    rng = np.random.default_rng(0)
    scenes = [synthetic_rgb(1, h, w).astype(float), synthetic_rgb(7, h, w).astype(float)]
    if toned:
        scenes = [s.mean(-1, keepdims=True) * np.array([1.0, 0.86, 0.68]) for s in scenes]
    with av.open(str(path), "w") as c:
        c.metadata["title"] = "a test clip"
        v = c.add_stream(codec, rate=rate)
        v.width, v.height, v.pix_fmt = w, h, "yuv420p" if codec != "ffv1" else "yuv444p"
        a = c.add_stream("aac", rate=8000, layout="mono") if audio else None
        for i in range(frames):
            base = scenes[int(cut_at is not None and i >= cut_at)]
            img = np.clip(base + rng.normal(0, grain, base.shape), 0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = round(start * rate) + i, Fraction(1, rate)
            c.mux(v.encode(frame))
        c.mux(v.encode())
        if a:
            tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(8000 * frames // rate) / 8000)).astype(np.float32)[None]
            for k in range(0, tone.shape[1], 1024):
                f = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[:, k:k + 1024]), format="flt", layout="mono")
                f.sample_rate, f.pts = 8000, k + round(start * 8000)
                c.mux(a.encode(f))
            c.mux(a.encode())
