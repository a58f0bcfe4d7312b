"""A task only hints can solve: gray photos each tinted with one random colour.

    python .ci/tinted_photos.py PHOTOS OUT [--size=64] [--held_out=64]

Each photo's L is kept and every pixel gets one ab drawn per photo (a in [-40, 40], b in [-40, 40]), so nothing in
L tells the colour: a model can only learn it from hints. Writes OUT/train/*.png and OUT/validation/*.png.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import torch  # noqa: E402

import configurator  # noqa: E402
import data  # noqa: E402

size = 64  # side of each written photo
held_out = 64  # photos written to validation/
seed = 0
config, paths = configurator.configure(globals(), positional=True)
if len(paths) != 2:
    sys.exit("usage: python .ci/tinted_photos.py PHOTOS OUT [--size=64] [--held_out=64]")
photos = sorted(p for p in Path(paths[0]).rglob("*") if p.suffix.lower() in data.IMAGE_SUFFIXES)
if len(photos) <= held_out:
    sys.exit(f"tinted_photos.py: {paths[0]}: {len(photos)} photos, not more than --held_out={held_out}")
g = torch.Generator().manual_seed(seed)
for i, src in enumerate(photos):
    rgb = data.to_uint8_tensor(data.resize_square(data.load_image(src), size))[None]
    L = data.uint8_to_l(rgb)
    ab = (torch.rand(2, generator=g) * 80 - 40).view(1, 2, 1, 1).expand(1, 2, size, size)
    split = "validation" if i < held_out else "train"
    out = Path(paths[1]) / split / f"{i:04d}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    data.to_pil(data.lab_to_rgb(torch.cat([L, ab], 1))[0]).save(out)
print(f"{len(photos)} tinted photos in {paths[1]} ({held_out} held out)")
