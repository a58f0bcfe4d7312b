"""Colorize photos at full resolution: python colorize.py in.png out.png [--ckpt=SPEC]

Also a folder in -> a folder out (same base names), or several inputs -> one output folder.
The model sees a 256x256 copy; its ab is upsampled onto the photo's own full-resolution L.
"""

import gc
import os
import sys
from pathlib import Path

gc.disable()  # importing torch makes ~180,000 objects that live until exit: collecting them is wasted time
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

import configurator  # noqa: E402
import data  # noqa: E402
import models  # noqa: E402

gc.freeze()  # and later collections skip them
gc.enable()

# -----------------------------------------------------------------------------
ckpt = "eccv16"  # model: eccv16 (official weights, downloaded once), release weights .pth, or a ckpt.pt
size = 256  # the model's input size (the release uses 256)
temperature = 1.0  # annealed-mean temperature: 1 is the release's mean, 0.38 is the paper's (more saturated)
device = "auto"  # auto, cpu or cuda
max_pixels = data.MAX_PIXELS  # refuse larger images (decompression bombs)
# -----------------------------------------------------------------------------
config, paths = configurator.configure(globals(), positional=True)
SAVE_FORMATS = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"}
ALPHA_FORMATS = {".png", ".webp", ".tif", ".tiff"}
SAVE_OPTIONS = {".jpg": {"quality": 95}, ".jpeg": {"quality": 95}, ".webp": {"quality": 95}}


def fail(message: str) -> None:
    print(f"colorize.py: {message}", file=sys.stderr)
    sys.exit(1)


def plan(paths: list[str]) -> list[tuple[Path, Path]]:
    """(input, output) pairs: file -> file, folder -> folder, several -> folder."""
    if len(paths) < 2:
        fail("usage: python colorize.py IN [IN ...] OUT  (see --help)")
    *inputs, out = map(Path, paths)
    if len(inputs) == 1 and not inputs[0].is_dir() and out.suffix:
        return [(inputs[0], out)]
    files = []
    for p in inputs:
        files += sorted(f for f in p.rglob("*") if f.suffix.lower() in data.IMAGE_SUFFIXES) if p.is_dir() else [p]
    return [(f, out / (f.stem + (f.suffix if f.suffix.lower() in SAVE_FORMATS else ".png"))) for f in files]


def save(img, path: Path) -> None:
    """Write via a temp file and rename: no half-written output, the format from the extension."""
    if img.mode == "RGBA" and path.suffix.lower() not in ALPHA_FORMATS:
        img = img.convert("RGB")
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")  # PIL picks the format from the suffix
    try:
        if path.suffix.lower() == ".png":
            tmp.write_bytes(data.png_bytes(img))
        else:
            img.save(tmp, **SAVE_OPTIONS.get(path.suffix.lower(), {}))
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


jobs = plan(paths)
for src, dst in jobs:
    if dst.suffix.lower() not in SAVE_FORMATS:
        fail(f"{dst}: unknown output format (use one of {', '.join(sorted(SAVE_FORMATS))})")
    if dst.exists() and src.exists() and dst.resolve() == src.resolve():
        fail(f"{dst}: refusing to overwrite the input")
if not jobs:
    fail(f"{paths[0]}: no images found")
device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
try:
    G = models.load_generator(ckpt, device)
except models.ModelError as e:
    fail(str(e))
failed = 0
for src, dst in tqdm(jobs, disable=len(jobs) == 1, unit="img"):
    try:
        img = data.load_image(src, keep_alpha=True, max_pixels=max_pixels)
        dst.parent.mkdir(parents=True, exist_ok=True)
        save(models.colorize(G, img, size, temperature), dst)
    except (data.ImageError, OSError, ValueError) as e:
        if len(jobs) == 1:
            fail(str(e))
        print(f"colorize.py: skipped {e}", file=sys.stderr)
        failed += 1
if failed:
    fail(f"{failed} of {len(jobs)} images failed")
sys.stdout.flush(), sys.stderr.flush()
os._exit(0)  # every output is written and renamed: skip 0.3 s of tearing down torch's modules
