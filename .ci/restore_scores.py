"""restore.py measured on synthetic damage of photos it never trained on: python .ci/restore_scores.py HELD_OUT [--write=DIR]

Photo i of HELD_OUT (sorted) is damaged with damage.damage(gray, default_rng(i)) and toned sepia: scratches, crack
networks, dust (known masks), grain of known sigma, fading of known curve. For each: the mask's precision, recall and F1
(pixel for pixel, and within 1 px), the gray's PSNR against the clean gray before and after restoration, the clean
photo restored (PSNR against itself), the fading's error before and after --levels=auto (mean |gray - clean| over faded photos), and
colorgan's colour of the damaged and the restored photo against the truth's ab. --write=DIR keeps the damaged photos
(NAME.png) and their masks (NAME-mask.png) to look at.
"""

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.ndimage import binary_dilation
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import damage  # noqa: E402
import data  # noqa: E402
import models  # noqa: E402
import restoration  # noqa: E402

args = [a for a in sys.argv[1:] if not a.startswith("--")]
opts = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--"))
if len(args) != 1 or not Path(args[0]).is_dir():
    sys.exit("usage: python .ci/restore_scores.py HELD_OUT_FOLDER [--write=DIR] [--detector=FILE] [--limit=N]")
files = sorted(p for p in Path(args[0]).iterdir() if p.suffix.lower() in data.IMAGE_SUFFIXES)[: int(opts.get("limit", 10**9))]
out = Path(opts["write"]) if "write" in opts else None
net = restoration.load_detector(opts.get("detector", restoration.DETECTOR))
G = models.load_generator("colorgan")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1 / max(np.mean((a.astype(np.float64) - b) ** 2), 1e-12)))


def ab_error(img: Image.Image, truth_ab: torch.Tensor) -> float:
    """Mean Euclidean ab distance of colorgan's colour of img to the truth's."""
    rgb = data.to_uint8_tensor(models.colorize(G, img))[None]
    return float((data.uint8_to_lab(rgb)[1][0] - truth_ab).norm(dim=0).mean())


counts = {"the finder's (before widening)": np.zeros(5), "the filled pixels' (--save_mask)": np.zeros(5)}


def count(tally: np.ndarray, found: np.ndarray, truth: np.ndarray) -> None:
    """Pixel matches, found, true; and within 1 px: found near the truth, true pixels with nothing found near."""
    tally += [(found & truth).sum(), found.sum(), truth.sum(), (found & binary_dilation(truth)).sum(),
              (truth & ~binary_dilation(found)).sum()]


rows = []
for i, path in enumerate(tqdm(files, file=sys.stderr)):
    photo = data.load_image(path)
    clean = restoration.gray_of(photo)
    hurt = damage.damage(clean, np.random.default_rng(i))
    toned = Image.fromarray(damage.sepia(hurt.gray, strength=float(np.random.default_rng(i + 10**6).uniform(0.5, 1))))
    gray = restoration.gray_of(toned)  # what restore.py reads of the toned print
    fixed = restoration.restore(gray, net)
    truth = hurt.mask
    count(counts["the finder's (before widening)"], restoration.find_damage(gray, net, grow=0), truth)
    count(counts["the filled pixels' (--save_mask)"], fixed.mask, truth)
    passed = restoration.restore(clean, net).gray
    truth_ab = data.uint8_to_lab(data.to_uint8_tensor(photo)[None])[1][0]
    faded = hurt.fade != (0.0, 1.0, 1.0)
    stretched = restoration.restore(gray, net, levels="auto").gray if faded else fixed.gray
    rows.append([psnr(gray, clean), psnr(fixed.gray, clean), psnr(passed, clean), faded,
                 np.abs(gray - clean).mean() * 255, np.abs(stretched - clean).mean() * 255,
                 ab_error(toned, truth_ab), ab_error(restoration.as_image(fixed.gray), truth_ab), fixed.mask.mean()])
    if out:
        out.mkdir(parents=True, exist_ok=True)
        toned.save(out / f"{path.stem}.png")
        Image.fromarray(truth.astype(np.uint8) * 255).save(out / f"{path.stem}-mask.png")
rows = np.array(rows, np.float64)
faded = rows[:, 3] > 0
print(f"{len(files)} photos from {args[0]}, damaged as damage.damage(gray, default_rng(i)) and toned sepia")
for name, (tp, found, true, near, missed) in counts.items():
    p, r, p1, r1 = tp / max(found, 1), tp / max(true, 1), near / max(found, 1), 1 - missed / max(true, 1)
    print(f"{name} mask: precision {p:.3f} recall {r:.3f} F1 {2 * p * r / max(p + r, 1e-9):.3f}; within 1 px: precision "
          f"{p1:.3f} recall {r1:.3f} F1 {2 * p1 * r1 / max(p1 + r1, 1e-9):.3f}")
print(f"gray PSNR vs clean: damaged {rows[:, 0].mean():.2f} dB, restored {rows[:, 1].mean():.2f} dB "
      f"(+{(rows[:, 1] - rows[:, 0]).mean():.2f} dB; worse on {(rows[:, 1] < rows[:, 0]).sum()} photos)")
print(f"clean photos restored: PSNR vs themselves mean {rows[:, 2].mean():.2f} dB, min {rows[:, 2].min():.2f} dB "
      f"({(rows[:, 2] < 40).sum()} below 40 dB)")
print(f"fading ({faded.sum()} faded photos, --levels=auto): mean |gray - clean| {rows[faded, 4].mean():.1f}/255 damaged, "
      f"{rows[faded, 5].mean():.1f}/255 restored")
print(f"colour (colorgan) ab error vs truth: damaged {rows[:, 6].mean():.2f}, restored {rows[:, 7].mean():.2f}")
print(f"pixels filled: mean {rows[:, 8].mean():.2%}")
