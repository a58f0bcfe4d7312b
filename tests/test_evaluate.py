"""evaluate.py end to end: two models side by side, every number against an independent scikit-image computation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import color
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

import models
from conftest import synthetic_rgb

ROOT = Path(__file__).resolve().parents[1]


def reference(spec: str, files: list[Path], size: int) -> dict[str, float]:
    """The README's protocol in plain numpy and scikit-image, one image at a time."""
    G = models.load_generator(spec)
    acc: dict[str, list[float]] = {k: [] for k in ("l1_ab", "auc", "psnr", "ssim", "cf", "cf_true")}
    for f in files:
        gt = np.asarray(Image.open(f).convert("RGB").resize((size, size), Image.BICUBIC)) / 255.0
        lab = color.rgb2lab(gt)
        with torch.no_grad():
            ab = G(torch.from_numpy(lab[..., 0]).float()[None, None])[0].permute(1, 2, 0).double().numpy()
        pred = np.clip(color.lab2rgb(np.concatenate([lab[..., :1], ab], -1)), 0, 1)
        d = np.sqrt(((ab - lab[..., 1:]) ** 2).sum(-1)).ravel()
        acc["auc"].append(np.trapezoid([(d <= t).mean() for t in range(151)]) / 150)
        acc["l1_ab"].append(np.abs(ab - lab[..., 1:]).mean())
        acc["psnr"].append(peak_signal_noise_ratio(gt, pred, data_range=1))
        acc["ssim"].append(structural_similarity(gt, pred, channel_axis=-1, data_range=1.0))
        for key, img in (("cf", pred), ("cf_true", gt)):
            r, g, b = (img * 255).transpose(2, 0, 1)
            rg, yb = r - g, 0.5 * (r + g) - b
            acc[key].append(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))
    m = {k: float(np.mean(v)) for k, v in acc.items()}
    return {**m, "colorfulness": m["cf"], "delta_cf": abs(m["cf"] - m["cf_true"])}


def test_two_models_side_by_side_match_scikit_image(tmp_path, release_weights):
    gray = {k: v.clone() for k, v in torch.load(release_weights, weights_only=True).items()}
    gray["model_out.weight"].zero_()  # predicts ab = 0: a gray colorizer
    torch.save(gray, tmp_path / "gray.pth")
    (tmp_path / "photos" / "a").mkdir(parents=True)
    (tmp_path / "photos" / "b").mkdir()
    for i in range(5):
        Image.fromarray(synthetic_rgb(i, 70, 90)).save(tmp_path / "photos" / ("a" if i < 3 else "b") / f"{i}.jpg")
    specs = [str(tmp_path / "gray.pth"), release_weights]
    p = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), *[f"--ckpt={s}" for s in specs], f"--dataset={tmp_path / 'photos'}",
                        "--image_size=64", "--batch_size=2", "--num_workers=0", "--vgg_weights=random", "--per_class",
                        f"--out={tmp_path / 'r.json'}", f"--grid={tmp_path / 'grid.png'}", "--grid_images=3"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "psnr" in p.stdout and "gray.pth" in p.stdout
    rows = json.loads((tmp_path / "r.json").read_text())["models"]
    files = sorted((tmp_path / "photos").rglob("*.jpg"))
    for spec, row in zip(specs, rows):
        ref = reference(spec, files, 64)
        assert row["n_images"] == 5 and row["ckpt"] == spec
        assert row["psnr"] == pytest.approx(ref["psnr"], abs=0.05)
        assert row["ssim"] == pytest.approx(ref["ssim"], abs=0.003)
        assert row["auc"] == pytest.approx(ref["auc"], abs=0.003)
        assert row["l1_ab"] == pytest.approx(ref["l1_ab"], abs=0.1)
        assert row["colorfulness"] == pytest.approx(ref["colorfulness"], abs=0.3)
        assert row["delta_cf"] == pytest.approx(ref["delta_cf"], abs=0.3)
        assert row["perceptual"] > 0 and set(row["per_class"]) == {"a", "b"}
        assert row["per_class"]["b"]["n_images"] == 2
    assert rows[0]["colorfulness"] < 0.5 < rows[0]["delta_cf"]  # the gray model is gray
    assert Image.open(tmp_path / "grid.png").size == (4 * 64, 24 + 3 * 64)


def test_bad_model_is_one_line(tmp_path):
    (tmp_path / "x").mkdir()
    Image.fromarray(synthetic_rgb(0)).save(tmp_path / "x" / "0.png")
    p = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), f"--ckpt={tmp_path / 'nope.pt'}", f"--dataset={tmp_path / 'x'}"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "no such file" in p.stderr and "Traceback" not in p.stderr
