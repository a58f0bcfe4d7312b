"""Models: the ECCV16 generator (release-compatible), the PatchGAN discriminator, weights and checkpoints.

Every script gets its generator from load_generator(spec) and writes checkpoints with save_checkpoint.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import re
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

import data

ECCV16_URL = "https://colorizers.s3.us-east-2.amazonaws.com/colorization_release_v2-9b330a0b.pth"

# Zhang et al.'s 313 in-gamut ab bins (grid 10): for each a, the range of b. In this order (a, then b)
# they are the release's pts_in_hull.npy; the release's model_out holds them / 110.
AB_BIN_RANGES = {
    -90: (50, 90), -80: (20, 90), -70: (0, 90), -60: (-20, 90), -50: (-30, 100), -40: (-40, 100),
    -30: (-50, 100), -20: (-50, 100), -10: (-60, 100), 0: (-70, 100), 10: (-80, 90), 20: (-80, 90),
    30: (-90, 90), 40: (-100, 90), 50: (-100, 80), 60: (-110, 80), 70: (-110, 80), 80: (-110, 70),
    90: (-110, 70), 100: (-90, 0),
}


class ModelError(ValueError):
    """A model spec, weights file or checkpoint that cannot be used; the message is one line."""


def ab_bins() -> torch.Tensor:
    """The 313 ab bin centres (313, 2) int64, in the release's order."""
    return torch.tensor([(a, b) for a, (lo, hi) in AB_BIN_RANGES.items() for b in range(lo, hi + 1, 10)])


# ----------------------------------------------------------------------------- networks


def _convs(cin: int, cout: int, strides: list[int], dilation: int = 1) -> list[nn.Module]:
    """3x3 conv + ReLU per stride, the release's building block."""
    layers: list[nn.Module] = []
    for s in strides:
        layers += [nn.Conv2d(cin, cout, 3, s, dilation, dilation), nn.ReLU(True)]
        cin = cout
    return layers


class ECCV16Generator(nn.Module):
    """Zhang et al. 2016: L in [0,100] (N,1,H,W) -> ab in Lab units (N,2,H,W); the release's state dict."""

    def __init__(self):
        super().__init__()
        self.model1 = nn.Sequential(*_convs(1, 64, [1, 2]), nn.BatchNorm2d(64))
        self.model2 = nn.Sequential(*_convs(64, 128, [1, 2]), nn.BatchNorm2d(128))
        self.model3 = nn.Sequential(*_convs(128, 256, [1, 1, 2]), nn.BatchNorm2d(256))
        self.model4 = nn.Sequential(*_convs(256, 512, [1, 1, 1]), nn.BatchNorm2d(512))
        self.model5 = nn.Sequential(*_convs(512, 512, [1, 1, 1], dilation=2), nn.BatchNorm2d(512))
        self.model6 = nn.Sequential(*_convs(512, 512, [1, 1, 1], dilation=2), nn.BatchNorm2d(512))
        self.model7 = nn.Sequential(*_convs(512, 512, [1, 1, 1]), nn.BatchNorm2d(512))
        self.model8 = nn.Sequential(nn.ConvTranspose2d(512, 256, 4, 2, 1), nn.ReLU(True),
                                    *_convs(256, 256, [1, 1]), nn.Conv2d(256, 313, 1))
        self.model_out = nn.Conv2d(313, 2, 1, bias=False)
        with torch.no_grad():  # from scratch, the output layer starts as what it means: the bin centres
            self.model_out.weight.copy_(ab_bins().float().t()[:, :, None, None] / 110)

    def logits(self, L: torch.Tensor) -> torch.Tensor:
        """The 313 bin logits at 1/4 resolution."""
        x = (L - 50) / 100
        for block in (self.model1, self.model2, self.model3, self.model4, self.model5, self.model6, self.model7, self.model8):
            x = block(x)
        return x

    def forward(self, L: torch.Tensor, temperature: float = 1.0, logits: bool = False) -> torch.Tensor:
        """ab at full resolution (or, with logits=True, the bin logits); temperature < 1 is Zhang's annealed mean."""
        if logits:  # through forward, so that DDP sees the classification loss's pass
            return self.logits(L)
        ab = self.model_out(torch.softmax(self.logits(L) / temperature, 1))
        return F.interpolate(ab, scale_factor=4, mode="bilinear") * 110


class PatchDiscriminator(nn.Module):
    """pix2pix 70x70 PatchGAN on [L, ab] (normalised inside): (N,1,H,W),(N,2,H,W) -> logits (N,1,30,30) at 256.

    Spectral norm instead of BatchNorm: it has no batch statistics, so real and fake batches do not
    leak into each other, DDP has no running stats to broadcast between forwards, and each logit
    depends on exactly its 70x70 window. It also bounds D's Lipschitz constant, which steadies training.
    """

    def __init__(self, channels: int = 64):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        widths = [3, channels, channels * 2, channels * 4, channels * 8]
        layers: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(widths, widths[1:])):
            layers += [sn(nn.Conv2d(cin, cout, 4, 2 if i < 3 else 1, 1)), nn.LeakyReLU(0.2, True)]
        layers.append(sn(nn.Conv2d(widths[-1], 1, 4, 1, 1)))
        self.model = nn.Sequential(*layers)

    def forward(self, L: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
        """Patch logits, no sigmoid."""
        return self.model(torch.cat([(L - 50) / 100, ab / 110], 1))


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model for parameters; buffers (BN statistics) are copied."""
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)


# ----------------------------------------------------------------------------- weights and checkpoints


def fetch_weights(url: str) -> Path:
    """The file at url in torch.hub's cache, downloaded once; its sha256 must start with the hash in its name."""
    name = url.rsplit("/", 1)[-1]
    dst = Path(torch.hub.get_dir()) / "checkpoints" / name
    prefix = re.search(r"-([a-f0-9]{6,})\.", name)
    if not dst.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        print(f"downloading {url} to {dst}", file=sys.stderr)
        try:
            torch.hub.download_url_to_file(url, str(dst), hash_prefix=None, progress=sys.stderr.isatty())
        except Exception as e:  # urllib raises URLError, HTTPError, socket errors...
            raise ModelError(f"cannot download {url} ({e}); offline, put that file at {dst}") from None
    if prefix:
        with open(dst, "rb") as f:  # streamed: never 130 MB in memory at once
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        if not digest.startswith(prefix.group(1)):
            dst.unlink()
            raise ModelError(f"{dst}: sha256 {digest[:8]}... does not match {prefix.group(1)}; removed it, download again")
    return dst


def save_checkpoint(ckpt: dict, path: str | os.PathLike) -> None:
    """torch.save to a temp file beside path, then rename: a kill never leaves a half-written path."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(ckpt, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A checkpoint or state dict, on the CPU, without unpickling code."""
    try:
        try:  # mapped, not read into a buffer: a 130 MB file costs no extra copy
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):  # files from torch < 1.6 cannot be mapped
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelError(f"{path}: no such file") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise ModelError(f"{path}: not a readable checkpoint ({str(e).splitlines()[0][:200]})") from None
    if not isinstance(obj, dict):
        raise ModelError(f"{path}: holds a {type(obj).__name__}, not a state dict or checkpoint")
    return obj


def _release_state(state: dict) -> dict:
    """A generator state dict in release keys, with num_batches_tracked filled where it is missing."""
    state = {re.sub(r"^(module\.|_orig_mod\.)+", "", k): v for k, v in state.items()}
    for key in [k for k in state if k.endswith(".running_mean")]:
        state.setdefault(key.replace("running_mean", "num_batches_tracked"), torch.tensor(0))
    return state


@contextlib.contextmanager
def _no_init():
    """Skip the random init of conv weights that strict loading replaces anyway (0.3 s of CPU per model)."""
    reset = nn.modules.conv._ConvNd.reset_parameters
    nn.modules.conv._ConvNd.reset_parameters = lambda self: None
    try:
        yield
    finally:
        nn.modules.conv._ConvNd.reset_parameters = reset


def load_generator(spec: str, device: str | torch.device = "cpu") -> ECCV16Generator:
    """A ready generator (eval mode) from 'eccv16', 'scratch', release-format weights or a ckpt.pt (EMA first)."""
    if spec == "scratch":
        return ECCV16Generator().to(device).eval()
    if spec == "eccv16":
        path = fetch_weights(os.environ.get("COLORGAN_ECCV16_URL", ECCV16_URL))
    elif Path(spec).is_file():
        path = Path(spec)
    else:
        raise ModelError(f"{spec}: no such file (a model is 'eccv16', 'scratch', release weights or a ckpt.pt)")
    state = load_checkpoint(path)
    if "generator" in state:
        state = state.get("generator_ema") or state["generator"]
    with _no_init():
        G = ECCV16Generator()
    try:
        G.load_state_dict(_release_state(state), strict=True, assign=True)  # adopt the loaded tensors: no second copy
    except (RuntimeError, AttributeError, TypeError) as e:
        raise ModelError(f"{spec}: not ECCV16 generator weights ({str(e).splitlines()[0][:200]})") from None
    return G.to(device).eval()


@torch.no_grad()
def fingerprint(*modules: nn.Module) -> torch.Tensor:
    """A float64 summary of every parameter, to check that processes hold the same weights."""
    return torch.stack([(p.double() * (i + 1)).sum() for m in modules for i, p in enumerate(m.parameters())]).sum()


def rng_state() -> dict:
    """Torch's CPU and CUDA generator states, for exact resume."""
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict) -> None:
    """Restore what rng_state saved."""
    torch.set_rng_state(state["cpu"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- inference


@torch.no_grad()
def colorize(G: ECCV16Generator, img: Image.Image, size: int = 256, temperature: float = 1.0,
             chunk_pixels: int = 1 << 17) -> Image.Image:
    """The release pipeline: L of a size x size bicubic copy -> ab, upsampled onto the full-resolution L."""
    device = next(G.parameters()).device
    img_rgb = img if img.mode == "RGB" else img.convert("RGB")
    small = data.to_uint8_tensor(data.resize_square(img_rgb, size))[None].to(device)
    ab_small = G(data.uint8_to_l(small), temperature).float()
    W, H = img_rgb.size
    # bilinear (align_corners=False) is separable: widen once, then blend two source rows per output row,
    # so no full-resolution ab tensor is ever held
    ab_wide = F.interpolate(ab_small, size=(ab_small.shape[2], W), mode="bilinear")[0]
    src = ((torch.arange(H, device=device) + 0.5) * (ab_small.shape[2] / H) - 0.5).clamp_min(0)
    y0 = src.floor().long().clamp_max(ab_small.shape[2] - 1)
    y1, frac = (y0 + 1).clamp_max(ab_small.shape[2] - 1), (src - y0).view(-1, 1)
    out = np.empty((H, W, 3), np.uint8)
    rows = max(1, chunk_pixels // W)  # bands small enough that the float32 temporaries stay in cache
    for r in range(0, H, rows):
        band = torch.from_numpy(np.array(img_rgb.crop((0, r, W, min(H, r + rows))))).to(device).permute(2, 0, 1)[None]
        ab = torch.lerp(ab_wide[:, y0[r:r + rows]], ab_wide[:, y1[r:r + rows]], frac[r:r + rows])[None]
        lab = torch.cat([data.uint8_to_l(band), ab], 1)
        rgb = (data.lab_to_rgb(lab)[0] * 255).round_().cpu()
        torch.from_numpy(out[r:r + rows]).permute(2, 0, 1).copy_(rgb)  # cast and interleave in one pass
    result = Image.frombuffer("RGB", (W, H), out, "raw", "RGB", 0, 1)  # shares out's memory: no copy
    if img.mode == "RGBA":
        result.putalpha(img.getchannel("A"))
    return result
