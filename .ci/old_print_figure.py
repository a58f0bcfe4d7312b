"""docs/restoration.md's figure: python .ci/old_print_figure.py OUT.jpg PRINT [PRINT ...] [--threshold=T]

One row per print: as scanned | the filled pixels (restore.py --save_mask) | restored | restored, then coloured by
colorgan (colorize.py --restore=True) | coloured as it is (colorize.py). Rows 300 pixels high.
"""

import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import data  # noqa: E402
import models  # noqa: E402
import restoration  # noqa: E402

args = [a for a in sys.argv[1:] if not a.startswith("--threshold=")]
threshold = float(next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--threshold=")), restoration.THRESHOLD))
if len(args) < 2:
    sys.exit(__doc__.strip().splitlines()[0])
out, prints = Path(args[0]), args[1:]
net, G = restoration.load_detector(), models.load_generator("colorgan")
rows = []
for path in prints:
    photo = data.load_image(path)
    fixed_img, fixed = restoration.restore_image(photo, net, threshold=threshold)
    mask = Image.fromarray(np.where(fixed.mask, 255, 0).astype(np.uint8)).convert("RGB")
    cells = [photo, mask, fixed_img.convert("RGB"), models.colorize(G, fixed_img), models.colorize(G, photo)]
    height = 300
    rows.append([c.resize((round(c.width * height / c.height), height), Image.LANCZOS) for c in cells])
    print(f"{path}: {'; '.join(fixed.steps)}", file=sys.stderr)
width = max(sum(c.width for c in row) for row in rows)
grid = Image.new("RGB", (width, 300 * len(rows)), "white")
for r, row in enumerate(rows):
    x = 0
    for c in row:
        grid.paste(c, (x, 300 * r))
        x += c.width
grid.save(out, quality=85)
print(f"wrote {out}", file=sys.stderr)
