"""Evaluate colorizers side by side: python evaluate.py --ckpt=eccv16 --ckpt=runs/gan/ckpt.pt

Every model sees the same images in the same run. Protocol (also written into --out):
each image -> uint8 RGB -> PIL bicubic resize (stretch) to image_size -> ground truth in [0,1];
L, ab from rgb_to_lab; prediction = lab_to_rgb(L, model(L)) clipped to [0,1]. Metrics are per image,
then averaged: l1_ab, mse_ab (Lab units), auc (share of pixels with ab error <= t, t = 0..150, area / 150),
psnr (RGB, data range 1; identical images count 100 dB), ssim (skimage's defaults), perceptual
(L1 of VGG19 relu4_3 features), colorfulness (Hasler & Suesstrunk) and delta_cf = |mean colorfulness of
predictions - mean colorfulness of ground truths|.
"""

import json
import sys
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from tqdm import tqdm

import configurator
import losses
import models
from data import DEFAULT_DATA, DataError, colorization_grid, make_dataset, uint8_to_lab

# -----------------------------------------------------------------------------
ckpt = ["eccv16"]  # models to compare, one column each (repeat --ckpt=...): eccv16, release weights, a ckpt.pt
dataset = DEFAULT_DATA  # HF dataset OWNER/NAME, local HF dataset / parquet, or an image folder
split = "validation"  # dataset split (folders: the train/ or validation/ subfolder when there is one)
max_images = 0  # evaluate the first N images only (0 = all)
image_size = 256  # evaluation resolution
batch_size = 32
num_workers = 4  # DataLoader workers decoding images
temperature = 1.0  # annealed-mean temperature for every model (1 = the release's mean)
vgg_weights = "imagenet"  # perceptual metric: imagenet, random, none, or a vgg19 .pth
device = "auto"  # auto, cpu or cuda
out = ""  # write the results as JSON here
grid = ""  # write a comparison figure (gray | each model | ground truth) here
grid_images = 6  # rows of the figure
per_class = False  # also report every metric per class
# -----------------------------------------------------------------------------
config, _ = configurator.configure(globals())
METRICS = ["l1_ab", "mse_ab", "auc", "psnr", "ssim", "perceptual", "colorfulness", "delta_cf"]


def fail(message: str) -> None:
    print(f"evaluate.py: {message}", file=sys.stderr)
    sys.exit(1)


def summarize(per_image: dict[str, torch.Tensor], mask: torch.Tensor) -> dict:
    """Mean of each metric over the images in mask, plus delta_cf and the image count."""
    row = {k: per_image[k][mask].double().mean().item() if k in per_image else None for k in METRICS[:-1]}
    row["delta_cf"] = abs(row["colorfulness"] - per_image["colorfulness_true"][mask].double().mean().item())
    return {"n_images": int(mask.sum()), **row}


def figure(grid: torch.Tensor, labels: list[str]) -> Image.Image:
    """The colorization grid (3,H,W) under a header naming its columns."""
    head, cell = 24, grid.shape[-1] // len(labels)
    body = Image.fromarray((grid * 255).round().byte().permute(1, 2, 0).cpu().numpy())
    fig = Image.new("RGB", (body.width, body.height + head), "white")
    fig.paste(body, (0, head))
    draw = ImageDraw.Draw(fig)
    for j, label in enumerate(labels):
        draw.text((j * cell + 4, 6), label[-40:], fill="black")
    return fig


device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
try:
    images = make_dataset(dataset, split, image_size, train=False)
    generators = [models.load_generator(spec, device) for spec in ckpt]
    vgg = None if vgg_weights == "none" else losses.VGGFeatures(vgg_weights).to(device)
except (DataError, models.ModelError, losses.VGGError) as e:
    fail(str(e))
if max_images:
    images = torch.utils.data.Subset(images, range(min(max_images, len(images))))
loader = torch.utils.data.DataLoader(images, batch_size, num_workers=num_workers, pin_memory=device == "cuda")

results = [{} for _ in generators]  # per model: metric -> list of (N,) tensors
labels, shown, skipped = [], [], []  # shown: (L, ab, [pred per model]) of the figure's images
with torch.no_grad():
    for rgb, label, bad in tqdm(loader, unit="batch", desc="evaluate", file=sys.stderr):
        for name in filter(None, bad):  # a photo that cannot be decoded is named and left out of every metric
            tqdm.write(f"evaluate.py: skipped {name}", file=sys.stderr)
        keep = torch.tensor([not b for b in bad])
        skipped += [b for b in bad if b]
        if not keep.any():
            continue
        L, ab = uint8_to_lab(rgb[keep].to(device, non_blocking=True))
        labels.append(label[keep])
        preds = []
        for G, acc in zip(generators, results):
            preds.append(G(L, temperature))
            for k, v in losses.image_metrics(L, ab, preds[-1], vgg).items():
                acc.setdefault(k, []).append(v.cpu())
        k = grid_images - sum(len(x[0]) for x in shown)
        if k > 0:
            shown.append((L[:k], ab[:k], [p[:k] for p in preds]))
if not labels:
    fail(f"{dataset}: none of the {len(images)} images could be decoded")

per_image = [{k: torch.cat(v) for k, v in acc.items()} for acc in results]
labels = torch.cat(labels)
everything = torch.ones_like(labels, dtype=torch.bool)
rows = [{"ckpt": spec, **summarize(m, everything)} for spec, m in zip(ckpt, per_image)]
classes = getattr(images, "classes", None) or getattr(getattr(images, "dataset", None), "classes", [])
if per_class:
    for spec, row, m in zip(ckpt, rows, per_image):
        row["per_class"] = {(classes[c] if 0 <= c < len(classes) else str(c)) or "(root)": summarize(m, labels == c)
                            for c in labels.unique().tolist()}

width = max(12, *(len(Path(s).name) for s in ckpt))
print(f"\n{len(labels)} images, {dataset} [{split}], {image_size}x{image_size}" + (f"; {len(skipped)} skipped" if skipped else ""))
print(f"{'metric':<14}" + "".join(f"{Path(s).name[-width:]:>{width + 2}}" for s in ckpt))
for k in ["n_images"] + METRICS:
    print(f"{k:<14}" + "".join(f"{'-' if r[k] is None else format(r[k], '.4f' if k != 'n_images' else 'd'):>{width + 2}}" for r in rows))
if out:
    protocol = {"dataset": dataset, "skipped": skipped, "split": split, "image_size": image_size, "resize": "PIL bicubic, stretched",
                "temperature": temperature, "auc_thresholds": "0..150 step 1", "psnr_identical_db": 100.0,
                "ssim": "skimage defaults (7x7 uniform, sample covariance), channel mean, data_range 1",
                "perceptual": None if vgg_weights == "none" else f"L1 of VGG19 relu4_3 features ({vgg_weights})",
                "colorfulness": "Hasler & Suesstrunk 2003 on 0-255 RGB"}
    Path(out).write_text(json.dumps({"models": rows, "protocol": protocol}, indent=1))
if grid:
    L, ab = torch.cat([x[0] for x in shown]), torch.cat([x[1] for x in shown])
    preds = [torch.cat([x[2][m] for x in shown]) for m in range(len(ckpt))]
    figure(colorization_grid(L, preds, ab), ["gray input", *[Path(s).name for s in ckpt], "ground truth"]).save(grid)
