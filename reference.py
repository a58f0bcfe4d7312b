"""Colour from a reference photo ("colour this like that"): VGG16 features of the gray photo and of the reference's
gray are matched, the reference's ab is warped where they match, and UniColor's rule (Huang et al. 2022) turns the
warp into hint points for a SIGGRAPH17 model; an ECCV16 model (no hint input) gets a global transfer instead: its ab
matched to the reference's ab histogram (scikit-image's match_histograms).

Matching (as Deep Exemplar-based Colorization, He et al. 2018, which uses VGG19's relu3_2, relu4_2 and relu5_2): ImageNet
VGG16 on the gray renderings of both L channels, so brightness and texture decide, never colour. VGG16 has the same
layers at the same scales (a quarter, an eighth, a sixteenth of the input), and its ImageNet weights come with pip
(weights.py), where VGG19's are a 548 MB download. relu3_2 and relu4_2 (optionally relu5_2) resampled to a
quarter of the model's input, each channel centred per image and each position's vector L2-normalised; cosine
similarity; the warped ab is the softmax(similarity / temperature)-weighted mean of the reference's ab, and a
position's confidence its best similarity. Hints: one candidate per CELL x CELL cell of the model's input, kept where
the cell's mean confidence reaches the threshold or it is among the top_k most confident, coloured by the cell's mean
warped ab (as RGB at the photo's own L there), a DEFAULT_SIZE square at the cell's centre.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import data
import hints
import models

LAYERS = {"relu3_2": 13, "relu4_2": 20, "relu5_2": 27}  # indices in torchvision's vgg16().features
DEFAULT_LAYERS = ("relu3_2", "relu4_2")
TEMPERATURE = 0.01  # softmax temperature on cosine similarity (Deep Exemplar, UniColor)
THRESHOLD = 0.23  # a cell whose mean confidence reaches this becomes a hint (UniColor's)
TOP_K = 8  # and the k most confident cells always do
CELL = 16  # one candidate hint per 16x16 cell of the 256 input (UniColor's)
GRID = 4  # features matched at a quarter of the model's input (relu3_2's own scale)
# a reference position is trusted by its structure: how far its features are from the mean of the picture's inner
# positions, squared and against half of the photo's median (ImageNet VGG16 on 40 photos: 99 % of positions above that),
# where a flat picture's inner positions are alike (at most 0.24 of a photo's median from 5 positions in); and not at
# all in the outer ring of RING positions, where zero padding gives even a flat picture structure
ENERGY = 0.5
RING = 4


OWN_L = 3.0  # a reference whose L is within this of a frame's (Lab units, model scale) at most positions is that frame


class ReferenceError(ValueError):
    """A reference photo that cannot be used; the message is one line."""


@dataclass
class Reference:
    """A reference photo at the model's scale: its L and ab (1,1|2,s,s), its source, and its features once computed."""
    source: str
    L: torch.Tensor
    ab: torch.Tensor
    features: tuple[torch.Tensor, torch.Tensor] | None = None  # Matcher.features' (features, structure)


def load(src: str | Path | bytes, size: int = 256, max_pixels: int = data.MAX_PIXELS, name: str = "") -> Reference:
    """A reference photo (a file, or its bytes and name) read and checked (an image, not a bomb, with colour); one line
    when it cannot be used."""
    path = Path(name) if isinstance(src, bytes) else Path(src)
    try:
        img = data.load_image(src, max_pixels=max_pixels)
    except data.ImageError as e:
        raise ReferenceError(f"reference {path}: {str(e).split(': ', 1)[-1]}" if isinstance(src, bytes) else f"reference {e}") from None
    L, ab = data.uint8_to_lab(models.small_copy(img, size)[None])
    if not data.has_chroma(ab).item():
        raise ReferenceError(f"reference {path}: it has no colour (no |a| or |b| above {data.CHROMA_THRESHOLD:g}): a "
                             "reference gives the colours a gray photo lacks")
    return Reference(str(path), L, ab)


class Matcher(nn.Module):
    """VGG16 features of gray photos, matched: features(L), warp(photo's, reference's, reference's ab)."""

    def __init__(self, source: str = "imagenet", layers: tuple[str, ...] = DEFAULT_LAYERS, temperature: float = TEMPERATURE):
        super().__init__()
        unknown = [name for name in layers if name not in LAYERS]
        if unknown or not layers:
            raise ReferenceError(f"--reference_layers: use some of {', '.join(LAYERS)}, not {','.join(unknown) or 'none'}")
        self.taps = sorted(LAYERS[name] for name in layers)
        self.vgg = models.VGGFeatures(source, self.taps[-1], "vgg16", "reference_weights")
        self.temperature = temperature

    @torch.no_grad()
    def features(self, L: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features (N,C,s/4,s/4), structure (N,s/4,s/4)) of L (N,1,s,s): the layers at one scale, each centred per
        channel and L2-normalised per position, concatenated so that a dot product is the mean of the layers' cosines;
        and each position's structure, the mean norm of its layers' difference from their mean over the inner positions
        (a flat picture has none)."""
        grid = (L.shape[2] // GRID, L.shape[3] // GRID)
        x, out, norms = self.vgg.normalize(data.gray_rgb(L)), [], []
        for i, layer in enumerate(self.vgg.features):
            x = layer(x)
            if i in self.taps:
                f = F.interpolate(x, size=grid, mode="bilinear", align_corners=False) if x.shape[2] < grid[0] else \
                    F.adaptive_avg_pool2d(x, grid)
                f = f.float()
                inner = f[:, :, RING:f.shape[2] - RING, RING:f.shape[3] - RING]  # away from zero padding's reach
                norms.append((f - inner.mean((2, 3), keepdim=True)).norm(dim=1))
                f = f - f.mean((2, 3), keepdim=True)
                out.append(F.normalize(f, dim=1) / len(self.taps) ** 0.5)
        return torch.cat(out, 1), torch.stack(norms).mean(0)

    @torch.no_grad()
    def warp(self, photo: tuple[torch.Tensor, torch.Tensor], ref: tuple[torch.Tensor, torch.Tensor], ref_ab: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference's ab warped onto the photo at the features' scale (N,2,h,w), and each position's confidence
        (N,h,w): its best cosine similarity, each reference position's weighed by its trust (ENERGY, RING); from the
        photo's features (N,C,h,w) and the reference's (1,C,h',w'), each with its structure."""
        (photo, photo_structure), (ref, ref_structure) = photo, ref
        N, _, h, w = photo.shape
        sim = photo.flatten(2).transpose(1, 2) @ ref.flatten(2)  # (N, h*w, h'*w')
        weight = torch.softmax(sim / self.temperature, -1)
        ab = F.adaptive_avg_pool2d(ref_ab.to(photo), ref.shape[2:]).flatten(2).transpose(1, 2)  # (1, h'*w', 2)
        warped = (weight @ ab).transpose(1, 2).reshape(N, 2, h, w)
        typical = photo_structure.flatten(1).median(1).values.clamp_min(1e-6)  # (N,)
        trust = (ref_structure[0][None] / (ENERGY * typical[:, None, None])).clamp(max=1).square()  # (N,h',w')
        ring = torch.zeros_like(trust)
        ring[:, RING:trust.shape[1] - RING, RING:trust.shape[2] - RING] = 1
        confidence = (sim * (trust * ring).flatten(1)[:, None, :]).amax(-1)
        return warped, confidence.reshape(N, h, w)


def cells(warped: torch.Tensor, confidence: torch.Tensor, threshold: float = THRESHOLD, top_k: int = TOP_K,
          cell: int = CELL // GRID) -> list[tuple[int, int, torch.Tensor]]:
    """UniColor's rule on one photo's warp (2,h,w) and confidence (h,w) at the features' scale: (row, column, mean ab)
    of each cell x cell cell kept, where its mean confidence reaches threshold or it is among the top_k most confident
    with at least half of it."""
    conf = F.avg_pool2d(confidence[None, None], cell)[0, 0]
    ab = F.avg_pool2d(warped[None], cell)[0]
    keep = conf >= threshold
    top = conf.flatten().topk(min(top_k, conf.numel()))
    keep.view(-1)[top.indices[top.values >= threshold / 2]] = True  # the most confident, where they match at all
    kept = sorted(keep.nonzero().tolist(), key=lambda rc: -conf[rc[0], rc[1]].item())  # the most confident first
    return [(r, c, ab[:, r, c]) for r, c in kept]


def points(matcher: Matcher, refs: Reference | Sequence[Reference], L: torch.Tensor, width: int, height: int,
           threshold: float = THRESHOLD, top_k: int = TOP_K, handicaps: Sequence[float] = ()) -> tuple[hints.Point, ...]:
    """The hint points a reference (or several: each position takes the most confident one's colour, as a film's frame
    takes its keyframe's or the previous frame's) gives a width x height photo whose model input is L (1,1,s,s): each
    kept cell's colour (its ab at the photo's mean L there, as RGB) at its centre, in the photo's pixels; the most
    confident first."""
    own = matcher.features(L)
    warped = confidence = score = None
    for j, ref in enumerate([refs] if isinstance(refs, Reference) else refs):
        if ref.features is None:  # once per reference: a folder job matches every photo against the same features
            ref.features = matcher.features(ref.L)
        w, c = matcher.warp(own, ref.features, ref.ab)
        s = c - (handicaps[j] if j < len(handicaps) else 0)  # a handicapped reference wins only by that much more
        if warped is None:
            warped, confidence, score = w, c, s
        else:
            take = s > score
            warped, confidence, score = torch.where(take[:, None], w, warped), torch.where(take, c, confidence), torch.maximum(s, score)
    size = L.shape[-1]
    side = CELL * size // 256
    found = []
    for r, c, ab in cells(warped[0], confidence[0], threshold, top_k, side // GRID):
        cell_L = L[0, 0, r * side:(r + 1) * side, c * side:(c + 1) * side].mean()
        rgb = data.lab_to_rgb(torch.cat([cell_L.view(1), ab.float()]).view(1, 3, 1, 1))[0, :, 0, 0]
        x, y = (c + 0.5) * side * width / size - 0.5, (r + 0.5) * side * height / size - 0.5
        found.append(hints.Point(x, y, tuple(int(v) for v in (rgb * 255).round().tolist()), None))
    return tuple(found)


def own_colour(ref: Reference, L: torch.Tensor) -> torch.Tensor | None:
    """Where a frame's model input L (1,1,s,s) is the reference itself (a restorer's coloured copy of this very frame):
    a mask (1,1,s,s) of the positions whose L matches within OWN_L; None when the reference is another picture."""
    if ref.L.shape != L.shape:
        return None
    same = (ref.L - L).abs() < OWN_L
    return same if same.float().mean() > 0.5 else None


SELF_TRANSFORM = "mirrored, cropped to a random 70-90 % square (shifted anywhere inside), bicubic back to size; seeded by the image's index"


def self_reference(rgb: torch.Tensor, seed: int) -> torch.Tensor:
    """evaluate.py --reference=self: an image's own truth (3,s,s uint8) mirrored, cropped and shifted, as a reference
    that shows the same content elsewhere (SELF_TRANSFORM): matching tested apart from taste."""
    g = torch.Generator().manual_seed(seed)
    s = rgb.shape[-1]
    side = round(s * (0.7 + 0.2 * torch.rand((), generator=g).item()))
    y, x = (int(torch.randint(0, s - side + 1, (), generator=g)) for _ in range(2))
    crop = rgb.flip(-1)[:, y:y + side, x:x + side]
    return F.interpolate(crop[None].float(), size=(s, s), mode="bicubic", align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)


def transfer(ab: torch.Tensor, ref: Reference) -> torch.Tensor:
    """ECCV16's reference: each prediction's ab (N,2,s,s) matched to the reference's ab histogram, channel by channel
    (scikit-image's match_histograms): global, so it moves colour everywhere alike."""
    from skimage.exposure import match_histograms

    target = ref.ab[0].permute(1, 2, 0).double().numpy()
    out = [match_histograms(a.permute(1, 2, 0).double().cpu().numpy(), target, channel_axis=-1) for a in ab]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).to(ab)


def histogram_intersection(ab: torch.Tensor, ref_ab: torch.Tensor, bins: int = 32) -> torch.Tensor:
    """How much of the reference's colour an output took (N,): the intersection of the two normalised 2-D ab histograms
    (bins x bins over [-110, 110]), 1 when they are alike."""
    def hist(x: torch.Tensor) -> torch.Tensor:
        idx = ((x.clamp(-110, 109.999) + 110) * bins / 220).long()
        flat = idx[:, 0] * bins + idx[:, 1]
        h = torch.zeros(len(x), bins * bins).scatter_add_(1, flat.flatten(1).cpu(), torch.ones(flat.flatten(1).shape))
        return h / h.sum(1, keepdim=True)

    return torch.minimum(hist(ab.float()), hist(ref_ab.float())).sum(1)


class Transfer:
    """A film's frames from a model without a hint input, each given a reference's colour globally (transfer); what a
    render calls in place of keyframes.Follow."""

    def __init__(self, ref: Reference, source: str):
        self.ref, self.key = ref, source

    def new_scene(self) -> None:
        """Scenes change nothing: every frame takes the reference alike."""

    def colorize(self, G, imgs: list, small: torch.Tensor, temperature: float, frames: list) -> tuple[torch.Tensor, None]:
        """The model's ab for a batch of frames, matched to the reference's histogram."""
        return transfer(models.predict_ab(G, small, temperature).cpu(), self.ref), None


class Guide:
    """A job's references: each photo read and checked once (its features computed once), the matcher (None for an
    ECCV16 model: global transfer) and the hint rule."""

    def __init__(self, matcher: Matcher | None = None, threshold: float = THRESHOLD, top_k: int = TOP_K, size: int = 256,
                 max_pixels: int = data.MAX_PIXELS):
        self.matcher, self.threshold, self.top_k, self.size, self.max_pixels = matcher, threshold, top_k, size, max_pixels
        self.photos: dict[Path, Reference] = {}
        self.unmatched: set[Path] = set()  # references that gave a photo no hint: said once each

    def photo(self, path: Path) -> Reference:
        """The reference at path, read once; ReferenceError when it cannot be used."""
        if path not in self.photos:
            self.photos[path] = load(path, self.size, self.max_pixels)
        return self.photos[path]

    def with_points(self, h: hints.Hints, L: torch.Tensor, width: int, height: int) -> hints.Hints:
        """h with its reference's hint points before its own (which win where they overlap)."""
        found = points(self.matcher, self.photo(h.reference), L, width, height, self.threshold, self.top_k)
        if not found and h.reference not in self.unmatched:
            self.unmatched.add(h.reference)
            print(f"colorgan: the reference {h.reference} matched nothing in {h.source or 'the photo'} (a flat or tiny picture "
                  "has no structure to match): coloured without its colours", file=sys.stderr)
        return hints.Hints(h.source, found + h.points, h.layer)

    def transfer(self, ab: torch.Tensor, h: hints.Hints) -> torch.Tensor:
        """An ECCV16 prediction (N,2,s,s) given its reference's colour globally."""
        return transfer(ab, self.photo(h.reference))
