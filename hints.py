"""User hints for SIGGRAPH17 models: read them (JSON points or a painted PNG layer), place them at the model's scale,
and simulate them from the ground truth for training and evaluation.

A hint tensor is (3,s,s) (or (N,3,s,s)): ab in Lab units where there is a hint (0 elsewhere), then a 0/1 mask.

    {"points": [{"x": 412, "y": 230, "color": "#2a5caa", "size": 9}, ...], "reference": "ref.jpg"}

x, y are pixels of the photo as displayed (after its EXIF orientation), color any CSS colour (#rgb, #rrggbb,
#rrggbbaa, a name), size the side of the hint's square in the photo's pixels (default: DEFAULT_SIZE pixels at the
model's scale). "reference" (optional; a path relative to the JSON file) is a colour photo whose colours are matched
onto the photo (reference.py); the points win where they overlap its hints. A PNG layer is an RGBA image of any size
stretched over the photo: its opaque pixels are hints.
"""

from __future__ import annotations

import json
import math
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageColor, UnidentifiedImageError

import data
import models

DEFAULT_SIZE = 5  # a point's square at the model's 256 scale when the JSON gives no size
SIDECAR = ".hints.json"  # photo.jpg's hints in a folder job: photo.hints.json beside it
P_STOP = 1 / 8  # the paper's geometric number of simulated points: P(none) = 1/8, mean 7
SIM_SIZES = (1, 9)  # simulated squares: sides uniform in this range (pixels at the model's scale)
SWEEP_SIZE = 6  # evaluate.py --hints: 6x6 patches, the paper's sweep
MAX_POINTS = 10_000  # more points than this in one file is not a hint file
MAX_BYTES = 16 << 20  # a hint file larger than this is not one (10,000 points take ~0.7 MB)


class HintError(ValueError):
    """A hint file that cannot be used; the message is one line."""


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    rgb: tuple[int, int, int]
    size: float | None  # the square's side in the photo's pixels (None: DEFAULT_SIZE at the model's scale)


@dataclass(frozen=True)
class Hints:
    """What a hint file says: points (and a reference photo), or a painted RGBA layer; a video's, its keyframes."""
    source: str
    points: tuple[Point, ...] = ()
    layer: Image.Image | None = None
    reference: Path | None = None
    keyframes: tuple[Keyframe, ...] = ()


@dataclass(frozen=True)
class Keyframe:
    """A video's keyframe: its frame (an index) or time (seconds), and the hints its scene follows from there."""
    frame: int | None
    time: float | None
    hints: Hints


def sidecar(photo: Path) -> Path:
    """Where a folder job looks for a photo's hints."""
    return photo.with_name(photo.stem + SIDECAR)


def parse_color(value: object, where: str) -> tuple[int, int, int]:
    """A CSS colour -> RGB; one line when it is not one."""
    if not isinstance(value, str):
        raise HintError(f"{where}: color must be a string like \"#2a5caa\", not {_short(value)}")
    try:
        rgba = ImageColor.getrgb(value.strip())
    except ValueError:
        raise HintError(f"{where}: {value[:40]!r} is not a colour (use #rgb, #rrggbb or a CSS name)") from None
    if len(rgba) == 4 and rgba[3] != 255:
        raise HintError(f"{where}: {value!r} is {rgba[3] / 2.55:.0f}% opaque: a hint's colour is opaque (use #rrggbb)")
    return rgba[:3]


def _short(value: object) -> str:
    """value as JSON, cut to a readable length."""
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _number(point: dict, key: str, where: str, positive: bool = False) -> float:
    """point[key] as a finite number; one line when it is not."""
    v = point.get(key)
    try:
        ok = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) and not (positive and v <= 0)
    except OverflowError:  # an integer of hundreds of digits
        ok = False
    if not ok:
        raise HintError(f"{where}: {key} must be a {'positive ' if positive else ''}number, not {_short(v)}")
    return float(v)


def _time(value: object, where: str) -> float:
    """A keyframe's time: seconds, or "HH:MM:SS.mmm" (or "MM:SS.mmm"); one line when it is neither."""
    if isinstance(value, str):
        parts = value.strip().split(":")
        try:
            if 1 < len(parts) <= 3 and all(parts) and not any(p.strip().startswith(("-", "+")) for p in parts):
                seconds = sum(float(p) * 60 ** i for i, p in enumerate(reversed(parts)))
                if math.isfinite(seconds) and seconds >= 0:
                    return seconds
        except ValueError:
            pass
        raise HintError(f"{where}: time {value[:30]!r} is not seconds or HH:MM:SS.mmm")
    seconds = _number({"time": value}, "time", where)
    if seconds < 0:
        raise HintError(f"{where}: time {seconds:g} is before the start")
    return seconds


def _keyframes(doc: dict, source: str) -> tuple[Keyframe, ...]:
    """A video's {"keyframes": [{"time" or "frame", "points"?, "reference"?}, ...]}."""
    if not isinstance(doc["keyframes"], list) or not doc["keyframes"]:
        raise HintError(f"{source}: keyframes must be a list like [{{\"time\": 12.5, \"reference\": \"still.jpg\"}}]")
    if len(doc["keyframes"]) > MAX_POINTS:
        raise HintError(f"{source}: {len(doc['keyframes'])} keyframes, more than {MAX_POINTS:,}")
    found = []
    for i, k in enumerate(doc["keyframes"]):
        where = f"{source}: keyframe {i + 1}"
        if not isinstance(k, dict) or ("time" in k) == ("frame" in k):
            raise HintError(f"{where}: give its \"time\" (seconds or HH:MM:SS.mmm) or its \"frame\" (from 0), one of them")
        unknown = set(k) - {"time", "frame", "points", "reference"}
        if unknown:
            raise HintError(f"{where}: unknown key {sorted(unknown)[0]!r} (a keyframe has time or frame, points, reference)")
        if "frame" in k and (isinstance(k["frame"], bool) or not isinstance(k["frame"], int) or not 0 <= k["frame"] < 2**31):
            raise HintError(f"{where}: frame must be a frame number from 0, not {_short(k['frame'])}")
        if not k.get("points") and not k.get("reference"):
            raise HintError(f"{where}: has neither points nor a reference: nothing to follow")
        h = parse_json(json.dumps({key: k[key] for key in ("points", "reference") if key in k}), source)
        found.append(Keyframe(k.get("frame"), _time(k["time"], where) if "time" in k else None, h))
    return tuple(found)


def parse_json(text: str, source: str) -> Hints:
    """{"points": [{"x", "y", "color", "size"?}, ...], "reference"?} (a video's: {"keyframes": [...]}) -> Hints; one
    line naming the first fault."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise HintError(f"{source}: not valid JSON ({e})") from None
    except RecursionError:
        raise HintError(f"{source}: nested too deeply to be a hint file") from None
    if isinstance(doc, dict) and "keyframes" in doc:
        return Hints(source, keyframes=_keyframes(doc, source))
    if not isinstance(doc, dict) or not isinstance(doc.get("points", []), list) or not ("points" in doc or "reference" in doc):
        raise HintError(f"{source}: expected {{\"points\": [{{\"x\": ..., \"y\": ..., \"color\": \"#rrggbb\"}}, ...]}} "
                        "and/or {\"reference\": \"photo.jpg\"}")
    ref = doc.get("reference")
    if ref is not None and not (isinstance(ref, str) and ref):
        raise HintError(f"{source}: reference must be a photo's path (relative to the JSON file), not {_short(ref)}")
    doc.setdefault("points", [])
    if len(doc["points"]) > MAX_POINTS:
        raise HintError(f"{source}: {len(doc['points'])} points, more than {MAX_POINTS:,}")
    points = []
    for i, p in enumerate(doc["points"]):
        where = f"{source}: point {i + 1}"
        if not isinstance(p, dict):
            raise HintError(f"{where}: expected an object with x, y and color")
        unknown = set(p) - {"x", "y", "color", "size"}
        if unknown:
            raise HintError(f"{where}: unknown key {sorted(unknown)[0]!r} (a point has x, y, color and size)")
        size = _number(p, "size", where, positive=True) if "size" in p else None
        points.append(Point(_number(p, "x", where), _number(p, "y", where), parse_color(p.get("color"), where), size))
    return Hints(source, tuple(points), reference=(Path(source).parent / Path(ref).expanduser()) if ref else None)


def read(path: str | Path) -> Hints:
    """A hint file: .json points or a painted RGBA image (.png, .webp, .tif); one line when it cannot be used."""
    path = Path(path)
    try:
        st = path.stat()  # a FIFO or a device (/dev/zero) is never opened: it would hang or never end
    except FileNotFoundError:
        raise HintError(f"{path}: no such file") from None
    except OSError as e:
        raise HintError(f"{path}: cannot read it ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise HintError(f"{path}: not a regular file")
    if path.suffix.lower() == ".json":
        if st.st_size > MAX_BYTES:
            raise HintError(f"{path}: {st.st_size / 2**20:.0f} MB, more than a hint file's {MAX_BYTES >> 20} MB")
        try:
            with open(path, "rb") as f:
                return parse_json(f.read(MAX_BYTES + 1).decode("utf-8"), str(path))
        except (OSError, UnicodeDecodeError) as e:
            raise HintError(f"{path}: cannot read it ({e})") from None
    try:
        layer = data.load_image(path, keep_alpha=True)
    except data.ImageError as e:
        raise HintError(f"{e} (a hint file is .json points or a painted RGBA image)") from None
    if layer.mode != "RGBA":
        raise HintError(f"{path}: has no alpha channel: paint hints on a transparent layer (RGBA PNG)")
    if not layer.getchannel("A").getbbox():
        raise HintError(f"{path}: fully transparent: no hints painted")
    return Hints(str(path), layer=layer)


def check(h: Hints, width: int, height: int, size: int = 256) -> None:
    """Refuse, in one line, points outside a width x height photo or larger than it, and a layer that gives the model
    (at size x size) no hint: nothing at least half opaque there (faint or too thin strokes)."""
    for i, p in enumerate(h.points):
        if not (0 <= p.x < width and 0 <= p.y < height):
            raise HintError(f"{h.source}: point {i + 1} ({p.x:g}, {p.y:g}) is outside the {width}x{height} photo")
        if p.size is not None and p.size > max(width, height):
            raise HintError(f"{h.source}: point {i + 1}: size {p.size:g} is larger than the {width}x{height} photo")
    if h.layer is not None:
        peak = h.layer.resize((size, size), Image.Resampling.BOX).getchannel("A").getextrema()[1]  # as place() sees it
        if peak < 128:
            raise HintError(f"{h.source}: no hint: a hint is where the layer is at least half opaque at the model's "
                            f"{size}x{size} scale, and this one is at most {peak / 2.55:.0f}% opaque there (paint "
                            "opaque, with wider strokes)")


def displayed_size(photo: Path) -> tuple[int, int]:
    """A photo's width and height as displayed (EXIF orientation applied), from its header only."""
    try:
        return data.displayed_size(photo)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise HintError(f"{photo}: cannot read its size ({e})") from None


def place(h: Hints, width: int, height: int, size: int = 256) -> torch.Tensor:
    """The model's hint input (3,size,size) for a width x height photo: each point's ab over its square at the model's
    scale (the photo's own L is kept by the pipeline); a layer's mean ab where it is at least half opaque."""
    out = torch.zeros(3, size, size)
    for p in h.points:
        ab = data.rgb_to_lab(torch.tensor(p.rgb, dtype=torch.float32).view(1, 3, 1, 1) / 255)[0, 1:, 0, 0]
        side_x = max(1, round(p.size * size / width)) if p.size else DEFAULT_SIZE
        side_y = max(1, round(p.size * size / height)) if p.size else DEFAULT_SIZE
        x0 = min(max(0, math.floor((p.x + 0.5) * size / width - side_x / 2 + 0.5)), size - side_x)
        y0 = min(max(0, math.floor((p.y + 0.5) * size / height - side_y / 2 + 0.5)), size - side_y)
        out[:2, y0:y0 + side_y, x0:x0 + side_x] = ab.view(2, 1, 1)
        out[2, y0:y0 + side_y, x0:x0 + side_x] = 1
    if h.layer is not None:  # over any points (a reference's): what the user painted wins
        small = h.layer.resize((size, size), Image.Resampling.BOX)  # PIL premultiplies RGBA: colours weighted by alpha
        alpha = torch.from_numpy(np.array(small.getchannel("A"))).float() / 255
        rgb = data.to_uint8_tensor(small.convert("RGB")).float() / 255
        mask = alpha >= 0.5
        out[:2] = torch.where(mask, data.rgb_to_lab(rgb[None])[0, 1:], out[:2])
        out[2] = torch.maximum(out[2], mask.float())
    return out


def batch(given: list[torch.Tensor | None], size: int) -> torch.Tensor | None:
    """A batch's hint input (N,3,size,size) from each image's own (None: no hints, zeros), or None when none has any."""
    if all(h is None for h in given):
        return None
    return torch.stack([torch.zeros(3, size, size) if h is None else h for h in given])


def points_from(ab: torch.Tensor, L: torch.Tensor, width: int, height: int, grid: int = 4) -> tuple[Point, ...]:
    """A colouring (ab (2,s,s) at the model's scale, over its L (1,s,s)) as hint points: each of grid x grid cells' mean
    colour at its centre, in the photo's pixels (the app's "keep editing" of a choice)."""
    s = L.shape[-1]
    side = s // grid
    found = []
    for r in range(grid):
        for c in range(grid):
            cell = (slice(r * side, (r + 1) * side), slice(c * side, (c + 1) * side))
            lab = torch.cat([L[0][cell].mean().view(1), ab[0][cell].mean().view(1), ab[1][cell].mean().view(1)])
            rgb = data.lab_to_rgb(lab.view(1, 3, 1, 1))[0, :, 0, 0]
            found.append(Point((c + 0.5) * side * width / s - 0.5, (r + 0.5) * side * height / s - 0.5,
                               tuple(int(v) for v in (rgb * 255).round().tolist()), None))
    return tuple(found)


def to_json(points: list[dict], reference: str = "") -> str:
    """Points [{"x", "y", "color", "size"}] as the hint file colorize.py --hints reads; the name of the reference photo
    they came from, for the record ("from_reference": the points are its hints, so a hint deleted from them stays so)."""
    return json.dumps({"points": points, **({"from_reference": reference} if reference else {})}, indent=1)


# ----------------------------------------------------------------------------- simulated hints


def _put(out: torch.Tensor, ab: torch.Tensor, i: int, y0: int, x0: int, side: int) -> None:
    """Hint i of out at the square (y0, x0, side): the ground truth's mean ab over it, mask 1."""
    out[i, :2, y0:y0 + side, x0:x0 + side] = ab[i, :, y0:y0 + side, x0:x0 + side].mean((1, 2), keepdim=True)
    out[i, 2, y0:y0 + side, x0:x0 + side] = 1


def _corner(g: torch.Generator, n: int, side: int, gaussian: bool) -> int:
    """A square's top-left coordinate along an axis of n: centre from N(n/2, n/4) (clipped) or uniform."""
    c = n / 2 + n / 4 * torch.randn((), generator=g).item() if gaussian else torch.rand((), generator=g).item() * n
    return min(max(0, round(c - side / 2)), n - side)


def simulate(ab: torch.Tensor, g: torch.Generator, p_stop: float = P_STOP, sizes: tuple[int, int] = SIM_SIZES,
             gaussian: bool = True) -> torch.Tensor:
    """Training hints (N,3,H,W) from the ground truth ab (N,2,H,W), as the paper draws them: per image a geometric number
    of points (P(k) = (1-p)^k p), square sides uniform in sizes, centres around the image centre (sigma a quarter of the
    side) or uniform, each the mean ab of its square."""
    N, _, H, W = ab.shape
    ab_cpu = ab.detach().float().cpu()
    out = torch.zeros(N, 3, H, W)
    for i in range(N):
        while torch.rand((), generator=g).item() >= p_stop:
            side = int(torch.randint(sizes[0], sizes[1] + 1, (), generator=g))
            side = min(side, H, W)
            _put(out, ab_cpu, i, _corner(g, H, side, gaussian), _corner(g, W, side, gaussian), side)
    return out.to(ab.device)


def sweep(ab: torch.Tensor, n: int, seeds: list[int], side: int = SWEEP_SIZE) -> torch.Tensor:
    """evaluate.py's hints: n squares of side per image (the ground truth's mean ab), centres around the image centre,
    drawn from each image's own seed (its index): the same points for every model in every run."""
    N, _, H, W = ab.shape
    ab_cpu = ab.detach().float().cpu()
    out = torch.zeros(N, 3, H, W)
    for i, seed in enumerate(seeds):
        g = torch.Generator().manual_seed(seed * 1000 + n)
        for _ in range(n):
            _put(out, ab_cpu, i, _corner(g, H, min(side, H), True), _corner(g, W, min(side, W), True), min(side, H, W))
    return out.to(ab.device)


# ----------------------------------------------------------------------------- suggestions


@torch.no_grad()
def suggestions(G: models.SIGGRAPH17Generator, L: torch.Tensor, h: torch.Tensor, x: int, y: int, k: int = 6
                ) -> list[tuple[tuple[int, int], float]]:
    """The model's k most likely ab classes (and their probabilities) at pixel (x, y) of its input L (1,1,s,s) with
    hints h (1,3,s,s), from its 529-class head: colours to offer where a user clicks."""
    _, logits = G(L, h, logits=True)
    prob = torch.softmax(logits[0, :, min(y // 4, logits.shape[2] - 1), min(x // 4, logits.shape[3] - 1)].float(), 0)
    top = prob.topk(k)
    return [(models.AB_CLASSES[i], p) for i, p in zip(top.indices.tolist(), top.values.tolist())]
