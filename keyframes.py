"""A film's keyframes (a SIGGRAPH17 model): the restorer colours a scene's frame, and the scene follows it.

    colorize.py film.mp4 --keyframes=keys/            each scene's first frame as keys/HH-MM-SS.mmm.png (dump)
    colorize.py film.mp4 out.mp4 --keyframes=keys/    the coloured ones handed back (handed_back), followed (Follow)
    colorize.py film.mp4 out.mp4 --hints=keys.json    {"keyframes": [{"time": 12.5 | "HH:MM:SS.mmm", "frame": N,
                                                      "points": [...], "reference": "still.jpg"}, ...]}
    colorize.py film.mp4 out.mp4 --reference=ref.jpg  every scene's first frame takes the reference's colours, and follows

Times are seconds on the film's clock (video.Clock: 0 at its first frame); a keyframe at a time holds from the first
frame at or after it (to the millisecond), so a dumped name handed back lands on its own frame exactly.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

import torch

import data
import hints
import models
import reference
import video
import weights

# the previous frame's colour is the model's own, so it is taken only where it matches clearly better than the
# keyframe's (content the keyframe did not show): at 0 the model's bias compounds frame after frame (a 48-frame pan:
# 24.1 dB at the first frame, 16.2 at the last), at 0.15 the colour holds (24.2 at the last)
PREVIOUS_HANDICAP = 0.15
NAME = "{h:02d}-{m:02d}-{s:06.3f}"  # a scene's first frame, named by its time (HH-MM-SS.mmm)
TIME_NAME = re.compile(r"^(\d{2,})-(\d{2})-(\d{2}\.\d{3})(?!\d)")  # and what follows it (the app's "-s17", an editor's)
MARKER = ".colorgan-keyframes"  # in a dump folder: which film it is from, and the frames as dumped
UNCHANGED = 2.0  # mean |ab change| (Lab units, at 64x64) below which a handed-back frame is the dumped one untouched
SLACK = 0.0005  # a keyframe's time is read to the millisecond


class KeyframeError(ValueError):
    """Keyframes that cannot be used; the message is one line."""


def name(t: float) -> str:
    """A time on the film's clock as a keyframe's file stem, HH-MM-SS.mmm."""
    ms = round(t * 1000)
    return NAME.format(h=ms // 3_600_000, m=ms // 60_000 % 60, s=ms % 60_000 / 1000)


def time_of(stem: str) -> float | None:
    """The time a keyframe's file name starts with (None: not one)."""
    m = TIME_NAME.match(stem)
    return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3)) if m else None


# ----------------------------------------------------------------------------- checks, before the weights load


def check(found: tuple[hints.Keyframe, ...], src: Path, header: dict) -> None:
    """Refuse, in one line, keyframes past the film's end, two on one frame, or points outside its frames (header:
    video.check's)."""
    rate, seconds, frames = header["rate"], header["seconds"], header["frames"]
    seen: dict[int, int] = {}
    for n, k in enumerate(found, 1):
        what = "--reference" if k.hints.source == "--reference" else f"keyframe {n}"
        try:
            hints.check(k.hints, header["width"], header["height"])
        except hints.HintError as e:
            raise KeyframeError(f"{what}: {e}") from None
        index = k.frame if k.frame is not None else round(k.time * rate)
        said = f"frame {k.frame}" if k.frame is not None else f"time {k.time:g} s (frame {index} at {rate:g} fps)"
        past = (k.frame is not None and frames is not None and k.frame >= frames) or \
            (k.time is not None and seconds is not None and k.time > seconds)
        if past:
            length = ", ".join(([f"{frames} frames"] if frames else []) + ([f"{seconds:.3f} s"] if seconds else []))
            raise KeyframeError(f"{src}: {what} at {said} is past the end ({length})")
        if index in seen:
            raise KeyframeError(f"{src}: keyframes {seen[index]} and {n} are both on frame {index}")
        seen[index] = n


# ----------------------------------------------------------------------------- following


class Follow:
    """Keyframes followed through a film (a SIGGRAPH17 model). A keyframe's frame takes its own hints (points, a
    reference photo's) and holds in full; each later frame of its scene takes hints matched from the keyframe's
    reference photo and the keyframe as coloured (both always kept, as ColorMNet keeps its exemplar) and from the
    previous batch's last coloured frame, each position from the most confident of them, until the next keyframe or
    cut. every_scene: hints (a reference) that each scene's first frame takes unless a keyframe of its own is there."""

    def __init__(self, found: tuple[hints.Keyframe, ...], guide: reference.Guide, every_scene: hints.Hints | None = None):
        self.keyframes, self.guide, self.every_scene = list(found), guide, every_scene
        self.kept: list[reference.Reference] = []  # the scene's keyframe: its reference photo, and it as coloured
        self.previous: reference.Reference | None = None  # the last coloured frame before this batch
        self.scene_start = True

    @property
    def key(self) -> str:
        """What the keyframes are, for a render's key: their places, points and reference photos' contents."""
        parts = [repr((k.frame, k.time, k.hints.points, k.hints.layer is not None)) for k in self.keyframes]
        refs = [k.hints.reference for k in self.keyframes] + [self.every_scene.reference if self.every_scene else None]
        parts += [hashlib.sha256(Path(r).read_bytes()).hexdigest() for r in refs if r]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]

    def new_scene(self) -> None:
        """A cut: nothing is followed until the scene's own keyframe (or every_scene's hints at its first frame)."""
        self.kept, self.previous, self.scene_start = [], None, True

    def due(self, f: video.Frame) -> hints.Keyframe | None:
        """The keyframe on this frame: its index, or its time reached first here."""
        for k in self.keyframes:
            if k.frame == f.index or (k.time is not None and f.before < k.time - SLACK <= f.time):
                return k
        if self.scene_start and self.every_scene is not None:
            return hints.Keyframe(f.index, None, self.every_scene)
        return None

    def colorize(self, G, imgs: list, small: torch.Tensor, temperature: float, frames: list[video.Frame]
                 ) -> tuple[torch.Tensor, list[bool]]:
        """The model's ab for a batch of one scene's frames, each with its hints, and which frames are keyframes (the
        temporal filter starts afresh there); a keyframe splits the batch, since the frames after it follow its colour."""
        L = data.uint8_to_l(small)
        ab = torch.zeros(len(imgs), 2, *small.shape[2:])
        pending: list[tuple[int, torch.Tensor | None]] = []
        fresh = []

        def run() -> None:
            if pending:
                rows = [i for i, _ in pending]
                ab[rows] = models.predict_ab(G, small[rows], temperature, hints.batch([h for _, h in pending], small.shape[-1])).cpu()
                pending.clear()

        for i, (img, f) in enumerate(zip(imgs, frames)):
            k = self.due(f)
            self.scene_start = False
            fresh.append(k is not None)
            if k is not None:
                h = self.guide.with_points(k.hints, L[i:i + 1], *img.size) if k.hints.reference else k.hints
                pending.append((i, hints.place(h, *img.size, small.shape[-1])))
                run()
                ref = self.guide.photo(k.hints.reference) if k.hints.reference else None
                own = reference.own_colour(ref, L[i:i + 1]) if ref is not None else None
                if own is not None:  # the frame the restorer coloured comes out as they coloured it, wherever its L is theirs
                    ab[i:i + 1] = torch.where(own, ref.ab.to(ab), ab[i:i + 1])
                self.kept = [ref] if ref is not None else []
                self.kept.append(reference.Reference("keyframe", L[i:i + 1], ab[i:i + 1]))
                self.previous = None
            elif self.kept:
                refs = self.kept + ([self.previous] if self.previous is not None else [])
                found = reference.points(self.guide.matcher, refs, L[i:i + 1], *img.size, self.guide.threshold, self.guide.top_k,
                                         [0.0] * len(self.kept) + [PREVIOUS_HANDICAP])
                pending.append((i, hints.place(hints.Hints("follow", found), *img.size, small.shape[-1])))
            else:
                pending.append((i, None))
        run()
        if self.kept:
            self.previous = reference.Reference("previous", L[-1:], ab[-1:])
        return ab, fresh


# ----------------------------------------------------------------------------- the dump and the hand-back


def _marker(src: Path) -> dict:
    """What a dump folder records of its film."""
    st = src.stat()
    return {"film": str(src.resolve()), "bytes": st.st_size, "modified_ns": st.st_mtime_ns}


def _pictures(folder: Path) -> list[Path]:
    """The pictures in a folder (not hidden), sorted."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in data.IMAGE_SUFFIXES and not p.name.startswith(".")
                  and p.is_file()) if folder.is_dir() else []


def dump(src: Path, folder: Path, size: int = 256, max_pixels: int = video.MAX_PIXELS, progress: bool = True) -> tuple[int, int]:
    """The first frame of each scene (cuts as the render finds them) as folder/HH-MM-SS.mmm.png, for a restorer to
    colour and hand back; a copy of each as dumped is kept in folder/.colorgan-keyframes (to tell an untouched frame of
    a toned print from a coloured one). An earlier dump of the same film stopped part-way is completed (nothing is
    replaced); a folder with other pictures is refused. Returns (scenes, files written)."""
    from tqdm import tqdm

    header = video.check(src, max_pixels)
    hidden = folder / MARKER
    record = hidden / "film.json"
    try:
        earlier = json.loads(record.read_text())
    except (OSError, ValueError):
        earlier = None
    if _pictures(folder) and earlier != _marker(src):
        raise KeyframeError(f"--keyframes={folder}: already holds pictures {'of another film' if earlier else 'colorgan did not dump'}"
                            " (give a new folder; nothing is replaced)")
    hidden.mkdir(parents=True, exist_ok=True)
    weights.write_atomic(record, lambda f: f.write(json.dumps(_marker(src)).encode()))
    scenes = written = 0
    last_L = None
    with tqdm(total=header["frames"], unit="frame", desc=f"scenes of {src.name}", disable=not progress, leave=False,
              file=sys.stderr) as bar:
        for _, t, frame in video.decoded(src, max_pixels):
            img = frame.to_image()
            L = data.uint8_to_l(models.small_copy(img, size)[None])
            if last_L is None or video.cut(last_L, L):
                scenes += 1
                path = folder / f"{name(t)}.png"
                if not path.exists():
                    weights.write_atomic(hidden / path.name, lambda f: f.write(data.png_bytes(img.resize((64, 64)))))
                    weights.write_atomic(path, lambda f: f.write(data.png_bytes(img)))
                    written += 1
            last_L = L
            bar.update()
    return scenes, written


def _unchanged(path: Path, dumped: Path) -> bool:
    """A handed-back frame whose colour is the dumped frame's (a toned print left as it was)."""
    try:
        ab = [data.uint8_to_lab(data.to_uint8_tensor(data.load_image(p).resize((64, 64)))[None])[1] for p in (path, dumped)]
    except data.ImageError:
        return False
    return (ab[0] - ab[1]).abs().mean().item() < UNCHANGED


def handed_back(folder: Path) -> tuple[tuple[hints.Keyframe, ...], list[tuple[Path, str]]]:
    """The keyframes a dump folder holds once coloured: each picture named by a time (HH-MM-SS.mmm, then anything: the
    app's -MODEL.png, an editor's .jpg or .tif) whose colour is not the dumped frame's; (the keyframes, each picture
    skipped and why)."""
    found, skipped = {}, []
    for path in _pictures(folder):
        t = time_of(path.stem)
        if t is None:
            skipped.append((path, "not named by a time (HH-MM-SS.mmm)"))
            continue
        dumped = folder / MARKER / f"{name(t)}.png"
        try:
            reference.load(path, 64)
        except reference.ReferenceError as e:
            skipped.append((path, "still gray" if "no colour" in str(e) else str(e).split(": ", 1)[-1]))
            continue
        if dumped.is_file() and _unchanged(path, dumped):
            skipped.append((path, "as dumped (its tint is the film's): colour it first"))
            continue
        if t in found:  # two coloured files for one time: the newer counts
            older, newer = sorted([found[t], path], key=lambda p: p.stat().st_mtime_ns)
            skipped.append((older, f"{newer.name} is a newer colouring of the same frame"))
            path = newer
        found[t] = path
    keyframes = tuple(hints.Keyframe(None, t, hints.Hints(str(p), reference=p)) for t, p in sorted(found.items()))
    return keyframes, skipped
