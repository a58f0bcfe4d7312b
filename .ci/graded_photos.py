"""An archive with a colour look the shipped model never saw: every photo's ab turned by the same angle.

    python .ci/held_out.py ../shared/data/imagenet-sample/images held-out tuning
    python .ci/graded_photos.py tuning graded/train
    python .ci/graded_photos.py held-out graded/held-out
    python train_finetune.py --init=colorgan --dataset=graded/train --out_dir=runs/graded --cache_views=2 --mixed_precision=bf16 --max_steps=600
    python evaluate.py --ckpt=colorgan --ckpt=runs/graded/ckpt.pt --dataset=graded/held-out --fid=none

A film stock, a toned print or a faded dye layer shifts every hue of an archive alike; turning ab by 50° in CIELAB (L
and chroma kept) is that shift made exact, so that what fine-tuning learns is measurable (docs/training.md).
"""

import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import color

ANGLE = 50  # degrees

if len(sys.argv) != 3:
    sys.exit("usage: python .ci/graded_photos.py PHOTOS OUT")
photos, out = Path(sys.argv[1]), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
c, s = math.cos(math.radians(ANGLE)), math.sin(math.radians(ANGLE))
files = sorted(p for p in photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
for f in files:
    lab = color.rgb2lab(np.asarray(Image.open(f).convert("RGB")))
    a, b = lab[..., 1].copy(), lab[..., 2].copy()
    lab[..., 1], lab[..., 2] = c * a - s * b, s * a + c * b
    Image.fromarray((np.clip(color.lab2rgb(lab), 0, 1) * 255).round().astype(np.uint8)).save(out / f"{f.stem}.png")
print(f"graded_photos.py: {len(files)} photos turned by {ANGLE}° in ab, in {out}")
