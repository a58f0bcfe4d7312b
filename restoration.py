"""Old prints repaired before colour: scratches, cracks and dust found and filled, grain removed, fading undone.
restore.py is its script; colorize.py (--restore=True) and the app use it on each photo before the model sees it.

    net = load_detector()                       # the damage finder trained by train_restore.py, shipped in assets/
    fixed = restore(gray, net)                  # gray: float32 (H,W) in [0, 1]; fixed.gray, fixed.mask, fixed.sigma ...

Each step is measured (docs/restoration.md) and spares a clean photo: a piece is filled only where the finder is sure
and the piece stands out, grain removed only when the photo has more than a clean photo's, levels stretched only when
asked (and then, with 'auto', only when the print's ends are closer together than nearly every clean photo's). Memory
stays bounded at any size: the finder and the filling work in tiles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

import data

DETECTOR = Path(__file__).resolve().parent / "assets" / "restore" / "detector.safetensors"
DILATIONS = (1, 2, 4, 8, 16, 1)  # each 3x3: the finder sees 65 x 65 pixels around each one
WIDTH = 32
THRESHOLD = 0.9  # a pixel is damage when the finder's probability reaches this (chosen on tuning photos: docs/restoration.md)
STEP = 8 / 255  # a piece of the mask is filled only if it differs from its filling by this much on average, one way
SMALLEST = 16  # and only if it has this many pixels (its widening included)
GROW = 1  # the mask is widened by this many pixels before filling: a line's soft edge goes with it
SEARCH_PIXELS = 4_000_000  # larger photos are searched at a whole-factor reduction (a 12 MP scan's lines are wide)
TILE = 512  # the finder's and the filling's tile side (plus MARGIN of context on each side)
MARGIN = 40  # context each tile sees beyond its own pixels: more than the finder's reach (32)
GRAIN_FLOOR = 3 / 255  # grain below this sigma is a clean photo's (95 % of tuning photos read less): left alone
GRAIN_BIAS = 1.5  # the flattest blocks read low: true sigma / their estimate, on tuning photos with grain of 3-10/255
TV_WEIGHT = 0.5  # total-variation weight per unit of sigma (0.5 gained most on tuning photos: +2 to +4.7 dB)
ENDS = (0.005, 0.995)  # the quantiles taken as a print's black and white points
LEVELS = "off"  # the default: a low-key photo (night, murky water) has a faded print's ends, so stretching is asked for
FADED_RANGE = 0.6  # a print whose ENDS span less than this is faded: 2.6 % of clean tuning photos, 63 % of faded ones
TARGET = (0.04, 0.94)  # where a faded print's black and white points go: a clean photo's median ends (tuning photos)


LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2: PIL's convert("L"), the gray every route restores


def luma(rgb: torch.Tensor) -> torch.Tensor:
    """uint8 RGB (N,3,H,W) -> gray float32 (N,H,W) in [0, 1]."""
    return torch.einsum("nchw,c->nhw", rgb.float(), torch.tensor(LUMA)) / 255


class RestoreError(ValueError):
    """The restoration cannot run (a missing or wrong finder file): one line says why."""


class Detector(nn.Sequential):
    """A small dilated CNN: gray (N,1,H,W) in [0, 1] -> damage logits (N,1,H,W), at any size."""

    def __init__(self):
        layers: list[nn.Module] = []
        channels = 1
        for i, d in enumerate(DILATIONS):
            last = i == len(DILATIONS) - 1
            layers.append(nn.Conv2d(channels, 1 if last else WIDTH, 3, padding=d, dilation=d))
            if not last:
                layers.append(nn.ReLU(inplace=True))
            channels = WIDTH
        super().__init__(*layers)
        for conv in layers[::2]:  # He's initialisation: PyTorch's default shrinks the signal through six layers to nothing
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            nn.init.zeros_(conv.bias)
        self.to(memory_format=torch.channels_last)  # twice as fast for these convolutions on CPUs (bench.py)

    def forward(self, gray: torch.Tensor) -> torch.Tensor:
        return super().forward(gray * 2 - 1)


def load_detector(path: str | Path = DETECTOR) -> Detector:
    """The damage finder's weights (safetensors) in a Detector, in eval mode; RestoreError when they cannot be read."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    net = Detector()
    try:
        net.load_state_dict(load_file(str(path)))
    except FileNotFoundError:
        raise RestoreError(f"{path}: no damage finder there (train one with train_restore.py)") from None
    except (SafetensorError, RuntimeError, OSError) as e:
        raise RestoreError(f"{path}: not a damage finder's weights ({str(e).splitlines()[0][:200]})") from None
    return net.eval()


def _tiles(h: int, w: int):
    """(core, padded) slices covering (h, w): each TILE-sided core tile with MARGIN of context, clipped to the picture."""
    tile, margin = TILE, MARGIN
    for y in range(0, h, tile):
        for x in range(0, w, tile):
            core = (slice(y, min(y + tile, h)), slice(x, min(x + tile, w)))
            padded = (slice(max(0, y - margin), min(y + tile + margin, h)), slice(max(0, x - margin), min(x + tile + margin, w)))
            yield core, padded


def _inside(core: tuple[slice, slice], padded: tuple[slice, slice]) -> tuple[slice, slice]:
    """The core tile's place within its padded tile."""
    y0, x0 = core[0].start - padded[0].start, core[1].start - padded[1].start
    return slice(y0, y0 + core[0].stop - core[0].start), slice(x0, x0 + core[1].stop - core[1].start)


@torch.no_grad()
def damage_probability(gray: np.ndarray, net: Detector) -> np.ndarray:
    """The finder's probability (H,W) float32 that each pixel is a scratch, crack or speck, tile by tile."""
    out = np.empty(gray.shape, np.float32)
    for core, padded in _tiles(*gray.shape):
        logits = net(torch.from_numpy(np.ascontiguousarray(gray[padded]))[None, None])[0, 0]
        out[core] = torch.sigmoid(logits[_inside(core, padded)]).numpy()
    return out


def find_damage(gray: np.ndarray, net: Detector, threshold: float = THRESHOLD, grow: int = GROW) -> np.ndarray:
    """The damage mask (H,W) bool: the finder's sure pixels, widened by grow pixels. A photo over SEARCH_PIXELS is
    searched in a copy shrunk by a whole factor, and the mask brought back to full size."""
    from scipy.ndimage import binary_dilation

    h, w = gray.shape
    factor = math.ceil(math.sqrt(h * w / SEARCH_PIXELS))
    if factor > 1:
        small = Image.fromarray(gray, "F").resize((max(1, w // factor), max(1, h // factor)), Image.BOX)
        found = Image.fromarray(damage_probability(np.array(small), net) >= threshold)
        mask = np.asarray(found.resize((w, h), Image.NEAREST))
    else:
        mask = damage_probability(gray, net) >= threshold
    return binary_dilation(mask, iterations=grow) if grow and mask.any() else mask


def fill(gray: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The masked pixels filled from their surroundings (scikit-image's biharmonic inpainting), tile by tile."""
    from skimage.restoration import inpaint_biharmonic

    out = gray.copy()
    for core, padded in _tiles(*gray.shape):
        if not mask[core].any():
            continue
        m = mask[padded]
        if m.all():  # nothing to fill from: left as it is
            continue
        filled = inpaint_biharmonic(gray[padded], m)
        out[core] = np.where(mask[core], filled[_inside(core, padded)], gray[core])
    return np.clip(out, 0, 1, out=out)


def worth_filling(gray: np.ndarray, filled: np.ndarray, mask: np.ndarray, step: float = STEP, smallest: int = SMALLEST
                  ) -> np.ndarray:
    """The mask's pieces (8-connected) worth filling: at least smallest pixels, and standing out from their filling by
    step or more on average, one way. A scratch or speck is brighter or darker than what it hides; a textured patch the
    finder mistook is both, and the finder's smallest pieces are more often a photo's own (drops, glints) than dust."""
    from scipy.ndimage import label, mean

    pieces, n = label(mask, structure=np.ones((3, 3)))
    offsets = np.abs(np.asarray(mean(gray - filled, pieces, np.arange(1, n + 1))))
    sizes = np.bincount(pieces.ravel(), minlength=n + 1)[1:]
    return np.concatenate([[False], (offsets >= step) & (sizes >= smallest)])[pieces]


def noise_sigma(gray: np.ndarray, block: int = 8, share: float = 0.01) -> float:
    """The grain's standard deviation, in [0, 1] units: Immerkaer's Laplacian-difference estimate on the flattest
    share of blocks (texture would read as noise elsewhere)."""
    from scipy.ndimage import convolve

    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
    r = np.abs(convolve(gray.astype(np.float32), kernel, mode="reflect"))[1:-1, 1:-1]
    h, w = (r.shape[0] // block) * block, (r.shape[1] // block) * block
    if not h or not w:
        return float(np.sqrt(np.pi / 2) * r.mean() / 6) if r.size else 0.0
    per_block = r[:h, :w].reshape(h // block, block, w // block, block).mean(axis=(1, 3)).ravel()
    flattest = np.sort(per_block)[: max(1, int(share * per_block.size))]
    return float(GRAIN_BIAS * np.sqrt(np.pi / 2) * np.median(flattest) / 6)


def denoise(gray: np.ndarray, sigma: float) -> np.ndarray:
    """Grain of standard deviation sigma removed (scikit-image's total-variation denoising, weight from sigma), tile by
    tile."""
    from skimage.restoration import denoise_tv_chambolle

    out = np.empty_like(gray, dtype=np.float32)
    for core, padded in _tiles(*gray.shape):
        smooth = denoise_tv_chambolle(gray[padded], weight=TV_WEIGHT * sigma)
        out[core] = smooth[_inside(core, padded)]
    return np.clip(out, 0, 1, out=out)


def ends(gray: np.ndarray) -> tuple[float, float]:
    """A print's black and white points: the ENDS quantiles of its gray values."""
    lo, hi = np.quantile(gray[:: max(1, gray.shape[0] // 512), :: max(1, gray.shape[1] // 512)], ENDS)
    return float(lo), float(hi)


def stretch(gray: np.ndarray, black: float, white: float) -> np.ndarray:
    """Levels: black -> TARGET[0], white -> TARGET[1], linear between."""
    scale = (TARGET[1] - TARGET[0]) / max(white - black, 1e-3)
    return np.clip((gray - black) * scale + TARGET[0], 0, 1).astype(np.float32)


@dataclass
class Restored:
    """A restored gray picture and what was done."""
    gray: np.ndarray  # float32 (H,W) in [0, 1]
    mask: np.ndarray  # bool (H,W): the pixels filled
    sigma: float  # the grain found (removed when over GRAIN_FLOOR)
    levels: tuple[float, float] | None  # the black and white points stretched to TARGET (None: not faded)
    steps: list[str] = field(default_factory=list)  # what was done, in words


def restore(gray: np.ndarray, net: Detector | None, scratches: bool = True, grain: str = "auto", levels: str = LEVELS,
            threshold: float = THRESHOLD) -> Restored:
    """Scratches, cracks and dust filled (net's mask), grain removed, fading undone: each only where found.
    grain and levels: 'auto' (when found), 'on' or 'off'; levels is off unless asked (LEVELS)."""
    out = gray.astype(np.float32)
    steps = []
    mask = find_damage(out, net, threshold) if scratches and net is not None else np.zeros(out.shape, bool)
    if mask.any():
        filled = fill(out, mask)
        mask = worth_filling(out, filled, mask)
        out = np.where(mask, filled, out)
        steps.append(f"{mask.mean():.2%} of the pixels filled")
    sigma = noise_sigma(out)
    if grain == "on" or (grain == "auto" and sigma > GRAIN_FLOOR):
        out = denoise(out, sigma)
        steps.append(f"grain of sigma {sigma * 255:.1f}/255 removed")
    black, white = ends(out)
    stretched = None
    if levels == "on" or (levels == "auto" and white - black < FADED_RANGE):
        out, stretched = stretch(out, black, white), (black, white)
        steps.append(f"levels {black * 255:.0f}..{white * 255:.0f} stretched to {TARGET[0] * 255:.0f}..{TARGET[1] * 255:.0f}")
    return Restored(out, mask, sigma, stretched, steps or ["nothing to repair"])


def gray_of(img: Image.Image) -> np.ndarray:
    """A photo's gray values (H,W) float32 in [0, 1]: PIL's ITU-R 601 luma of its 8-bit RGB picture."""
    return np.asarray(data.as_rgb8(img).convert("L"), np.float32) / 255


def tone(img: Image.Image) -> tuple[float, float]:
    """A print's tone: the median a and b (CIELAB) of its pixels; (0, 0) for a gray photo."""
    small = data.as_rgb8(img).copy()
    small.thumbnail((256, 256))
    lab = data.rgb_to_lab(data.to_uint8_tensor(small)[None].float() / 255)[0]
    return float(lab[1].median()), float(lab[2].median())


def as_image(gray: np.ndarray, toned: tuple[float, float] = (0.0, 0.0)) -> Image.Image:
    """The restored gray as an 8-bit picture: gray ('L'), or with a tone put back (RGB: its L, the tone's a and b)."""
    pixels = (gray * 255).round().astype(np.uint8)
    if toned == (0.0, 0.0):
        return Image.fromarray(pixels, "L")
    L = data.uint8_to_l(torch.from_numpy(pixels)[None, None].expand(1, 3, *pixels.shape))
    ab = torch.tensor(toned, dtype=torch.float32).view(1, 2, 1, 1).expand(1, 2, *pixels.shape)
    rgb = (data.lab_to_rgb(torch.cat([L, ab], 1))[0] * 255).round().byte().permute(1, 2, 0)
    return Image.fromarray(rgb.numpy(), "RGB")


def restore_image(img: Image.Image, net: Detector | None, **steps) -> tuple[Image.Image, Restored]:
    """A photo restored (restore()'s steps) as an 8-bit gray picture keeping its metadata, and what was done."""
    fixed = restore(gray_of(img), net, **steps)
    out = as_image(fixed.gray)
    out.info = {k: v for k, v in img.info.items() if k != data.RGB16}  # a 16-bit scan's pixels are the unrestored ones
    return out, fixed
