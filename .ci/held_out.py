"""The photos every quality figure is measured on, and the ones tuning may look at: a split of a folder by sorted name.

    python .ci/held_out.py ../shared/data/imagenet-sample/images held-out tuning

Every 4th photo in sorted order (index % 4 == 3: 195 of imagenet-sample's 782) goes to HELD_OUT, the rest to TUNING, as
symbolic links. No model colorgan ships trained on either; the decoding was chosen on TUNING only.
"""

import sys
from pathlib import Path

if len(sys.argv) != 4:
    sys.exit("usage: python .ci/held_out.py PHOTOS HELD_OUT TUNING")
photos, held_out, tuning = (Path(a) for a in sys.argv[1:])
files = sorted(p for p in photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png") and p.is_file())
if len(files) < 4:
    sys.exit(f"held_out.py: {photos} holds {len(files)} photos; a split needs at least 4")
for folder in (held_out, tuning):
    folder.mkdir(parents=True, exist_ok=True)
for i, f in enumerate(files):
    link = (held_out if i % 4 == 3 else tuning) / f.name
    if not link.exists():
        link.symlink_to(f.resolve())
print(f"held_out.py: {sum(i % 4 == 3 for i in range(len(files)))} photos in {held_out}, the rest in {tuning}")
