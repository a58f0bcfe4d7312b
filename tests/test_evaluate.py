"""evaluate.py end to end: two models side by side, every number against an independent scikit-image computation."""

from __future__ import annotations

import json
import os
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


def ground_truth(f: Path, size: int, crop: bool = False) -> np.ndarray:
    """The protocol's ground truth by hand: PIL bicubic to size x size, of the central square when crop."""
    img = Image.open(f).convert("RGB")
    if crop:
        w, h = img.size
        s = min(w, h)
        img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    return np.asarray(img.resize((size, size), Image.BICUBIC))


def reference(spec: str, files: list[Path], size: int, crop: bool = False) -> dict[str, float]:
    """The README's protocol in plain numpy and scikit-image, one image at a time; the learned metrics from their own
    packages' networks (the same seeded weights) on those images."""
    import metrics

    G = models.load_generator(spec)
    vgg = models.VGGFeatures("random", models.VGG16_RELU4_3, "vgg16")  # evaluate.py's default perceptual network
    lpips_net = metrics.lpips_network("alex", "random", "cpu")
    acc: dict[str, list[float]] = {k: [] for k in ("l1_ab", "mse_ab", "auc", "psnr", "ssim", "cf", "cf_true", "cf_dd", "cf_dd_true",
                                                   "perceptual", "lpips")}
    for f in files:
        gt = ground_truth(f, size, crop) / 255.0
        lab = color.rgb2lab(gt)
        with torch.no_grad():
            ab = G(torch.from_numpy(lab[..., 0]).float()[None, None])[0].permute(1, 2, 0).double().numpy()
        pred = np.clip(color.lab2rgb(np.concatenate([lab[..., :1], ab], -1)), 0, 1)
        d = np.sqrt(((ab - lab[..., 1:]) ** 2).sum(-1)).ravel()
        acc["auc"].append(np.trapezoid([(d <= t).mean() for t in range(151)]) / 150)
        acc["l1_ab"].append(np.abs(ab - lab[..., 1:]).mean())
        acc["mse_ab"].append(((ab - lab[..., 1:]) ** 2).mean())
        acc["psnr"].append(peak_signal_noise_ratio(gt, pred, data_range=1))
        acc["ssim"].append(structural_similarity(gt, pred, channel_axis=-1, data_range=1.0))
        for key, img in (("cf", pred), ("cf_true", gt)):
            r, g, b = (img * 255).transpose(2, 0, 1)
            rg, yb = r - g, 0.5 * (r + g) - b
            acc[key].append(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))
            rg, yb = np.absolute(rg), np.absolute(yb)  # DDColor's colorfulness.py
            acc[key.replace("cf", "cf_dd")].append(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))
        p, t = (torch.from_numpy(x).permute(2, 0, 1)[None].float() for x in (pred, gt))
        with torch.no_grad():
            acc["perceptual"].append((vgg(p) - vgg(t)).abs().mean().item())
            acc["lpips"].append(lpips_net(p * 2 - 1, t * 2 - 1).item())  # lpips' own convention: [-1, 1]
    m = {k: float(np.mean(v)) for k, v in acc.items()}
    return {**m, "colorfulness": m["cf"], "delta_cf": abs(m["cf"] - m["cf_true"]),
            "colorfulness_ddcolor": m["cf_dd"], "delta_cf_ddcolor": abs(m["cf_dd"] - m["cf_dd_true"])}


# what each metric may differ from the scikit-image reference, as the README states (measured: at most 8e-6, colorfulness
# 2e-5, mse_ab 9e-4 of 2362). AUC counts pixels under 151 thresholds: one pixel crossing one threshold moves it by
# 1/(151 x 20480) = 3e-7, and a batch of another size or another CPU's kernels (AVX2: 1.3e-6) moves a few pixels across
TOLERANCE = {"l1_ab": 2e-5, "mse_ab": 2e-3, "auc": 1e-5, "psnr": 1e-5, "ssim": 1e-6, "colorfulness": 5e-5, "delta_cf": 5e-5,
             "colorfulness_ddcolor": 5e-5, "delta_cf_ddcolor": 5e-5, "perceptual": 1e-6, "lpips": 1e-6}
# colourfulness (~34) is a float32 sum over every pixel: its last bits differ with the CPU class's summation order
# (AVX2 against AVX-512: 1.6e-6 of it), so it is held relatively
RELATIVE = {"colorfulness": 1e-5, "delta_cf": 1e-5, "colorfulness_ddcolor": 1e-5, "delta_cf_ddcolor": 1e-5}


def test_two_models_side_by_side_match_scikit_image_on_one_process_or_two(tmp_path, release_weights, script):
    gray = {k: v.clone() for k, v in torch.load(release_weights, weights_only=True).items()}
    gray["model_out.weight"].zero_()  # predicts ab = 0: a gray colorizer
    for run, state in (("finetune", gray), ("gan", torch.load(release_weights, weights_only=True))):
        (tmp_path / "runs" / run).mkdir(parents=True)
        torch.save(state, tmp_path / "runs" / run / "ckpt.pt")  # two ckpt.pt: the columns still need two names
    (tmp_path / "photos" / "a").mkdir(parents=True)
    (tmp_path / "photos" / "b").mkdir()
    for i in range(5):
        Image.fromarray(synthetic_rgb(i, 70, 90)).save(tmp_path / "photos" / ("a" if i < 3 else "b") / f"{i}.jpg")
    specs = [str(tmp_path / "runs" / run / "ckpt.pt") for run in ("finetune", "gan")]
    common = [f"--dataset={tmp_path / 'photos'}", "--image_size=64", "--num_workers=0", "--vgg_weights=random", "--per_class",
              "--fid=both", "--fid_weights=random", "--lpips_weights=random"]
    code, err = script("evaluate.py", *[f"--ckpt={s}" for s in specs], *common, "--batch_size=2", f"--out={tmp_path / 'r.json'}",
                       f"--grid={tmp_path / 'grid.png'}", "--grid_images=3", f"--save_outputs={tmp_path / 'saved'}")
    assert code == 0, err
    stdout = script.stdout
    assert "finetune/ckpt.pt" in stdout and "gan/ckpt.pt" in stdout and "[all of it: no 'validation' split]" in stdout
    assert "FID over 5 images; too few to be split in halves (from 32)" in err and "biased upward below 2,048" in err, err
    result = json.loads((tmp_path / "r.json").read_text())
    rows, protocol = result["models"], result["protocol"]
    files = sorted((tmp_path / "photos").rglob("*.jpg"))
    for spec, row, label in zip(specs, rows, ["finetune/ckpt.pt", "gan/ckpt.pt"]):
        ref = reference(spec, files, 64)
        assert row["n_images"] == 5 and row["ckpt"] == spec and row["label"] == label
        for k, tol in TOLERANCE.items():
            assert row[k] == pytest.approx(ref[k], abs=tol, rel=RELATIVE.get(k, 1e-6)), (label, k, row[k], ref[k])
        assert row["fid_paired_tv"] > 0 and row["fid"] > 0
        assert set(row["per_class"]) == {"a", "b"} and row["per_class"]["b"]["n_images"] == 2 and "lpips" in row["per_class"]["b"]
        for f in files:  # every prediction and ground truth as PNG, under the input's name
            truth = np.asarray(Image.open(tmp_path / "saved" / "ground_truth" / f.relative_to(tmp_path / "photos").with_suffix(".png")))
            assert np.array_equal(truth, np.asarray(Image.open(f).convert("RGB").resize((64, 64), Image.BICUBIC)))
            assert (tmp_path / "saved" / label.replace("/", "_") / f.relative_to(tmp_path / "photos").with_suffix(".png")).is_file()
    assert rows[0]["colorfulness"] < 0.5 < rows[0]["delta_cf"] and rows[1]["colorfulness"] > 5  # the gray model is gray
    assert protocol["resize"].endswith("(stretch)") and protocol["fid_paired_tv"]["weights"] == "random"
    assert protocol["fid"]["n_images"] == 5 and "fid_halves" not in rows[1]
    assert protocol["lpips"]["backbone"] == "alex" and protocol["split"] is None and protocol["n_images"] == 5
    assert Image.open(tmp_path / "grid.png").size == (4 * 64, 24 + 3 * 64)

    # the second model again, under accelerate launch with two processes and another batch size: the same numbers (FID's
    # sums reduced across processes; per-image rows gathered, as LPIPS and the perceptual term would be: left out, 2 s each)
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes=2", "--num_machines=1", "--mixed_precision=no",
                "--dynamo_backend=no", "--multi_gpu"]
    p = subprocess.run(launcher + [str(ROOT / "evaluate.py"), f"--ckpt={specs[1]}", *common, "--batch_size=3", f"--out={tmp_path / 'two.json'}",
                                   "--vgg_weights=none", "--lpips_weights=none"],
                       capture_output=True, text=True, timeout=300, cwd=ROOT,
                       env={**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-3000:]
    assert "2 processes" in p.stdout and p.stdout.count("n_images") == 1  # one table, from the main process
    two = json.loads((tmp_path / "two.json").read_text())
    assert two["protocol"]["processes"] == 2 and two["protocol"]["n_images"] == 5
    def flat(row: dict, prefix: str = "") -> dict:
        return {k: v for key, value in row.items() if key not in ("label", "ckpt")
                for k, v in (flat(value, f"{key}.").items() if isinstance(value, dict) else
                             flat({str(i): x for i, x in enumerate(value)}, f"{key}.").items() if isinstance(value, list) else [(prefix + key, value)])}

    one, many = ({k: v for k, v in flat(row).items() if "lpips" not in k and "perceptual" not in k} for row in (rows[1], two["models"][0]))
    assert len(many) == 32 and many == pytest.approx(one, rel=1e-4, abs=1e-6)


def test_center_crop_end_to_end(tmp_path, release_weights, script):
    (tmp_path / "photos").mkdir()
    for i, (h, w) in enumerate(((48, 90), (100, 60))):  # wide and tall
        Image.fromarray(synthetic_rgb(i, h, w)).save(tmp_path / "photos" / f"{i}.png")
    code, err = script("evaluate.py", f"--ckpt={release_weights}", f"--dataset={tmp_path / 'photos'}", "--image_size=32",
                       "--num_workers=0", "--resize=center_crop", "--fid=none", "--vgg_weights=none", "--lpips_weights=none",
                       f"--out={tmp_path / 'r.json'}", f"--save_outputs={tmp_path / 'saved'}")
    assert code == 0, err
    result = json.loads((tmp_path / "r.json").read_text())
    files = sorted((tmp_path / "photos").glob("*.png"))
    for f in files:
        assert np.array_equal(np.asarray(Image.open(tmp_path / "saved" / "ground_truth" / f.name)), ground_truth(f, 32, crop=True))
    ref, row = reference(release_weights, files, 32, crop=True), result["models"][0]
    assert row["l1_ab"] == pytest.approx(ref["l1_ab"], abs=TOLERANCE["l1_ab"]) and row["psnr"] == pytest.approx(ref["psnr"], abs=1e-5)
    assert result["protocol"]["resize"].endswith("(center_crop)")


@pytest.mark.parametrize("args, message", [
    (["--fid=fast"], "--fid must be auto, standard, tv, both or none, not 'fast'"),
    (["--fid_weights=nope.pth"], "--fid_weights must be default, random or a weights file"),
    (["--lpips_weights=nope.pth"], "--lpips_weights must be default, random or a weights file"),
    (["--resize=crop"], "--resize must be stretch or center_crop"),
    (["--lpips_net=squeeze"], "--lpips_net must be alex or vgg"),
    (["--image_size=60"], "--image_size must be a multiple of 8"),
    (["--fid=both", "--fid_weights=PATH_FILE"], "--fid_weights=PATH fits one network"),
    (["--save_outputs=FULL_DIR"], "exists and is not empty"),
    (["--hints=0,100000"], "at most 1764 hints (6x6 squares tiling a 256x256 image)"),
])
def test_mistakes_are_one_line_before_anything_loads(tmp_path, script, monkeypatch, args, message):
    monkeypatch.setattr(models, "load_generator", lambda *a, **k: pytest.fail("weights loaded before the refusal"))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.png").write_bytes(b"")
    (tmp_path / "w.pth").write_bytes(b"")
    args = [a.replace("PATH_FILE", str(tmp_path / "w.pth")).replace("FULL_DIR", str(tmp_path / "full")) for a in args]
    code, err = script("evaluate.py", f"--dataset={tmp_path / 'none'}", *args)
    assert code == 1 and message in err and err.count("\n") == 1 and "Traceback" not in err


def test_a_fid_weights_file_with_auto_is_said_to_be_the_standard_networks(tmp_path, script, monkeypatch):
    monkeypatch.setattr(models, "load_generator", lambda *a, **k: pytest.fail("weights loaded before the refusal"))
    (tmp_path / "w.pth").write_bytes(b"")
    code, err = script("evaluate.py", f"--dataset={tmp_path / 'none'}", f"--fid_weights={tmp_path / 'w.pth'}")
    assert code == 1 and "is taken as the standard FID network's; DDColor's FID is left out" in err, err


def test_bad_model_is_one_line(tmp_path, script):
    (tmp_path / "x").mkdir()
    Image.fromarray(synthetic_rgb(0)).save(tmp_path / "x" / "0.png")
    code, err = script("evaluate.py", f"--ckpt={tmp_path / 'nope.pt'}", f"--dataset={tmp_path / 'x'}", "--fid=none", "--lpips_weights=none")
    assert code == 1 and "no such file" in err and "Traceback" not in err


def test_a_folder_of_references_is_checked_before_the_models_load_for_the_images_evaluated(script, release_weights, tmp_path,
                                                                                            monkeypatch):
    (tmp_path / "photos").mkdir()
    (tmp_path / "refs").mkdir()
    for i in range(3):
        Image.fromarray(synthetic_rgb(i)).save(tmp_path / "photos" / f"{i}.png")
    for i in range(2):  # the third photo has none
        Image.fromarray(synthetic_rgb(10 + i)).save(tmp_path / "refs" / f"{i}.png")
    common = [f"--ckpt={release_weights}", f"--dataset={tmp_path / 'photos'}", "--image_size=64", "--num_workers=0",
              "--vgg_weights=none", "--fid=none", "--lpips_weights=none", f"--reference={tmp_path / 'refs'}"]
    code, err = script("evaluate.py", *common, "--max_images=2")  # only the evaluated images need a reference
    assert code == 0, err
    load = models.load_generator
    monkeypatch.setattr(models, "load_generator", lambda *a, **k: pytest.fail("a model loaded"))
    (tmp_path / "refs" / "1.png").write_bytes(b"")
    code, err = script("evaluate.py", *common, "--max_images=2")
    assert code == 1 and "1.png" in err and "not an image" in err and len(err.strip().splitlines()) == 1, err
    Image.new("RGB", (32, 32), (90, 90, 90)).save(tmp_path / "refs" / "1.png")
    code, err = script("evaluate.py", *common, "--max_images=2")
    assert code == 1 and "it has no colour" in err, err
    monkeypatch.setattr(models, "load_generator", load)
