"""Photo files for colorize.py: where each output goes, what it keeps of its input, and the pipelined folder job.

plan() maps inputs to outputs (mirrored folders, no two inputs on one output), save() writes atomically with the
input's EXIF, ICC and text, and colorize_files() decodes and encodes in threads while the model runs batches.
"""

from __future__ import annotations

import os
import zlib
from collections import deque
from dataclasses import dataclass
from concurrent.futures import Future, ThreadPoolExecutor
from functools import cache
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from PIL import Image, ImageCms

import data
import guidance
import hints
import models
import reference
import sampling
import weights

SAVE_FORMATS = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"}  # photo outputs PIL writes
FORMATS = {"png": ".png", "jpg": ".jpg", "webp": ".webp", "tiff": ".tif"}  # --format for folders
OUTPUT_SUFFIXES = SAVE_FORMATS | data.VIDEO_SUFFIXES  # what a single output's name may end in
ALPHA_FORMATS = {".png", ".webp", ".tif", ".tiff"}
DEEP_FORMATS = {".png", ".tif", ".tiff"}  # what a 16-bit scan's colorization is written to in 16 bits
SAVE_OPTIONS = {".jpg": {"quality": 95}, ".jpeg": {"quality": 95}, ".webp": {"quality": 95}}


class PlanError(ValueError):
    """The inputs and output cannot make a job (a user mistake): one line says why."""


def _inputs(src: Path, exclude: Path) -> list[Path]:
    """The photos and videos under a folder, sorted, leaving out the output folder when it lies inside; symlinked
    folders are followed, each real folder once (a link back up the tree is no loop)."""
    suffixes = data.IMAGE_SUFFIXES | data.VIDEO_SUFFIXES
    found, seen = [], set()
    for root, dirs, files in os.walk(src, followlinks=True):
        real = Path(root).resolve()
        if real in seen or real == exclude or exclude in real.parents:  # resolved: relative paths too
            dirs.clear()
            continue
        seen.add(real)
        found += [Path(root) / f for f in files if Path(f).suffix.lower() in suffixes and not f.startswith(".")
                  and (Path(root) / f).is_file()]
    return sorted(found)


def _suffix(src: Path, fmt: str) -> str:
    """The output suffix for a file in a folder job: --format, else the input's own where writable, else .png/.mp4."""
    own = src.suffix.lower()
    if own in data.VIDEO_SUFFIXES:
        return src.suffix if own in data.WRITE_SUFFIXES else ".mp4"
    return FORMATS[fmt] if fmt else src.suffix if own in SAVE_FORMATS else ".png"


@dataclass(frozen=True)
class Job:
    """One input's work: its output, and beside it (NAME-sampleK.SUFFIX) as many sampled colourings as asked."""
    src: Path
    dst: Path
    samples: int = 0
    replace: bool = False  # --overwrite: write every output, even those there

    @property
    def outputs(self) -> list[Path]:
        """Every file this job writes: the colorization, then its samples in order."""
        width = len(str(self.samples))
        return [self.dst] + [self.dst.with_name(f"{self.dst.stem}-sample{k:0{width}d}{self.dst.suffix}")
                             for k in range(1, self.samples + 1)]

    def exists(self, redo_empty: bool = False) -> bool:
        """Every output is there (redo_empty: a zero-byte one, left by a crash of another tool, is not)."""
        return all(p.exists() and not (redo_empty and p.is_file() and p.stat().st_size == 0) for p in self.outputs)

    def todo(self) -> list[Path]:
        """The outputs still to write (an interrupted job may have written some)."""
        return [p for p in self.outputs if not p.exists() or (p.is_file() and p.stat().st_size == 0)]


def plan(paths: list[str], fmt: str = "", samples: int = 0, script: str = "colorize.py") -> tuple[list[Job], list[str]]:
    """The jobs (input, output, samples) and notes on renamed outputs: file -> file, folder -> mirrored folder, several ->
    folder.

    A folder's files keep their relative paths under the output folder (several inputs: under their own names).
    When two inputs would share an output, the one whose suffix is unchanged keeps the name, then the first in
    sorted order; each other gets its own suffix kept before the new one (x.gif -> x.gif.png) and a note says so.
    """
    if len(paths) < 2:
        raise PlanError(f"usage: python {script} IN [IN ...] OUT  (see --help)")
    *inputs, out = map(Path, paths)
    for p in inputs:
        if p.is_dir() and p.resolve() == out.resolve():
            raise PlanError(f"{out}: the output folder is the input folder; choose another (outputs never replace inputs)")
    if len(inputs) == 1 and not inputs[0].is_dir() and not out.is_dir() and out.suffix:
        if out.suffix.lower() not in OUTPUT_SUFFIXES:
            raise PlanError(f"{out}: unknown output format (use one of {', '.join(sorted(OUTPUT_SUFFIXES))})")
        wanted = [(inputs[0], out)]
    else:
        wanted = _mirrored(inputs, out, fmt)
    for src, dst in wanted:
        if dst.exists() and src.resolve() == dst.resolve():
            raise PlanError(f"{dst}: refusing to overwrite the input")
    pairs, notes = distinct(wanted)
    jobs = [Job(src, dst, 0 if src.suffix.lower() in data.VIDEO_SUFFIXES else samples) for src, dst in pairs]
    owner: dict[str, Path] = {}
    inputs_seen = {str(src.resolve()).lower() for src, _ in pairs}
    for job in jobs:  # a sample's name is no other file's: no input and no other output
        for p in job.outputs:
            if str(p).lower() in owner or str(p.resolve()).lower() in inputs_seen:
                other = owner.get(str(p).lower(), p)
                raise PlanError(f"{p}: a sample of {job.src} would take the name of {other} (rename that file, or choose "
                                "another output folder)")
            owner[str(p).lower()] = job.src
    return jobs, notes


def check_writable(jobs: list[Job]) -> None:
    """An output folder that cannot be written is found now, not after the work: PlanError."""
    for folder in sorted({job.dst.parent for job in jobs}):
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not (folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)):
            raise PlanError(f"{folder}: cannot write {'there' if folder.is_dir() else 'under it (not a folder)'}: nothing was done")


def _mirrored(inputs: list[Path], out: Path, fmt: str) -> list[tuple[Path, Path]]:
    """Every photo and video under the inputs, at its relative path under out."""
    if out.suffix.lower() in OUTPUT_SUFFIXES and not out.is_dir():
        raise PlanError(f"{out}: several inputs need an output folder, not a file name")
    wanted: list[tuple[Path, Path]] = []
    for p in inputs:
        if p.is_dir():
            base = out if len(inputs) == 1 else out / p.resolve().name
            wanted += [(f, base / f.relative_to(p).with_suffix(_suffix(f, fmt))) for f in _inputs(p, out.resolve())]
        else:
            wanted.append((p, out / p.with_suffix(_suffix(p, fmt)).name))
    if not wanted:
        raise PlanError(f"{' '.join(map(str, inputs))}: no photos or videos found")
    return wanted


def distinct(wanted: list[tuple[Path, Path]]) -> tuple[list[tuple[Path, Path]], list[str]]:
    """The outputs made distinct (case-insensitively), with a note for each renamed one."""
    # the unrenamed first, then in input order: who keeps a contested name never depends on the file system
    order = sorted(range(len(wanted)), key=lambda i: (wanted[i][0].suffix.lower() != wanted[i][1].suffix.lower(), i))
    taken: set[str] = set()
    jobs: list[tuple[Path, Path] | None] = [None] * len(wanted)
    notes = []
    for i in order:
        src, dst = wanted[i]
        candidate, n = dst, 1
        while str(candidate).lower() in taken:  # lower: x.JPG and x.jpg are one file on macOS and Windows
            n += 1
            stem = f"{src.stem}{src.suffix}" if n == 2 else f"{src.stem}{src.suffix}-{n - 1}"
            candidate = dst.with_name(stem + dst.suffix)
        if candidate != dst:
            notes.append(f"{src} -> {candidate} ({dst.name} is another input's output)")
        taken.add(str(candidate).lower())
        jobs[i] = (src, candidate)
    return jobs, notes


# ----------------------------------------------------------------------------- metadata


@cache
def srgb_profile() -> bytes:
    """An sRGB ICC profile, for outputs whose input carried a profile."""
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def metadata(img: Image.Image) -> dict:
    """What an output keeps of its input: EXIF (load_image turned the pixels upright and dropped the orientation tag,
    so no viewer turns them again), an sRGB ICC profile when the input had
    one (data.load_image converts the pixels to sRGB), PNG text, the JPEG comment and the DPI (a scan's print size)."""
    meta = {"exif": img.info.get("exif"), "icc": srgb_profile() if img.info.get("icc_profile") else None,
            "comment": img.info.get("comment"), "dpi": img.info.get("dpi")}
    text = getattr(img, "text", None) or {k: v for k, v in img.info.items() if isinstance(v, str) and k[:1].isupper()}
    meta["text"] = dict(text)
    return meta


def _png_chunks(meta: dict) -> list[tuple[bytes, bytes]]:
    """PNG chunks for the metadata: iCCP, eXIf, pHYs (the DPI), tEXt (iTXt where the text is not Latin-1)."""
    chunks = []
    if meta.get("icc"):
        chunks.append((b"iCCP", b"sRGB\0\0" + zlib.compress(meta["icc"])))
    if meta.get("exif"):
        chunks.append((b"eXIf", meta["exif"].removeprefix(b"Exif\0\0")))
    if meta.get("dpi"):  # pixels per metre, unit 1
        chunks.append((b"pHYs", b"".join(round(float(d) / 0.0254).to_bytes(4, "big") for d in meta["dpi"]) + b"\1"))
    text = dict(meta.get("text") or {})
    if meta.get("comment") and "Comment" not in text:
        text["Comment"] = meta["comment"].decode("latin-1") if isinstance(meta["comment"], bytes) else meta["comment"]
    for key, value in text.items():
        try:
            chunks.append((b"tEXt", key.encode("latin-1") + b"\0" + value.encode("latin-1")))
        except UnicodeEncodeError:
            chunks.append((b"iTXt", key.encode("latin-1", "replace") + b"\0\0\0\0\0" + value.encode("utf-8")))
    return chunks


def save(img: Image.Image | np.ndarray, path: Path, meta: dict | None = None) -> None:
    """Write via a temp file and rename (its folder made if needed), the format from the suffix, with the metadata:
    no half-written output. A uint16 RGB array (a 16-bit scan's colorization) is written in 16 bits as PNG or TIFF, and
    brought to 8 bits for the formats that hold no more (JPEG, WebP, BMP)."""
    meta = meta or {}
    suffix = path.suffix.lower()
    if isinstance(img, np.ndarray) and suffix not in DEEP_FORMATS:
        img = Image.fromarray(((img.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8), "RGB")  # rounded
    if isinstance(img, Image.Image) and img.mode == "RGBA" and suffix not in ALPHA_FORMATS:
        img = img.convert("RGB")
    tmp = weights.temp_beside(path)  # it keeps the suffix: PIL picks the format from it
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if suffix == ".png":
            tmp.write_bytes(data.png_bytes(img, chunks=_png_chunks(meta)))
        elif isinstance(img, np.ndarray):  # 16-bit TIFF (PIL writes no 16-bit RGB): zlib, the DPI, the ICC profile
            import tifffile

            dpi = meta.get("dpi")
            tifffile.imwrite(tmp, img, photometric="rgb", compression="zlib", iccprofile=meta.get("icc"),
                             resolution=tuple(float(d) for d in dpi) if dpi else None, resolutionunit=2 if dpi else None,
                             description=meta.get("text", {}).get("ImageDescription"))
        else:
            options = dict(SAVE_OPTIONS.get(suffix, {}))
            if meta.get("exif") and suffix != ".bmp":
                options["exif"] = meta["exif"]
            if meta.get("icc") and suffix != ".bmp":
                options["icc_profile"] = meta["icc"]
            if meta.get("comment") and suffix in (".jpg", ".jpeg"):
                options["comment"] = meta["comment"]
            if meta.get("dpi") and suffix in (".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp"):
                options["dpi"] = tuple(round(float(d)) for d in meta["dpi"])
            img.save(tmp, **options)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- the folder job


def colorize_files(G: models.Generator, jobs: list[Job], size: int = 256, temperature: float = 1.0, batch_size: int = 4,
                   workers: int = 2, max_pixels: int = data.MAX_PIXELS, hints_for: dict[Path, hints.Hints] | None = None,
                   guide: reference.Guide | None = None, vividness: float = 1.0, samples: int = 0, seed: int = 0,
                   restore: Callable[[Image.Image], Image.Image] | None = None) -> Iterator[tuple[Job, str | None]]:
    """Colorize photos, yielding (job, error or None) as each finishes; each job writes its missing outputs (all of
    them with job.replace): the colorization and its samples (sampling.py, from the same forward).

    Worker threads decode (and make the model's small copy) and paint and encode (PIL and torch let go of the GIL),
    while this thread runs the model on batches. At most 2 x batch_size + workers photos are in flight, whatever
    their number or size. workers=0 does everything in this thread, one stage after another. hints_for gives a
    photo's hints; the guide turns a reference photo into what the model takes (guidance.takes_reference: hints,
    matched in this thread with the model's threads, or a global transfer). restore, when given, repairs each photo
    as it is decoded (restoration.py): the model sees, and the output keeps, the restored gray.
    """
    hints_for = hints_for or {}
    by_hints = guidance.takes_reference(G) == "hints"
    matched = {src for src, h in hints_for.items() if h.reference is not None and guide is not None}

    def decode(src: Path) -> tuple[Image.Image, torch.Tensor, torch.Tensor | None]:
        img = data.load_image(src, keep_alpha=True, max_pixels=max_pixels, keep_16bit=True)
        img = restore(img) if restore else img
        placed = src in hints_for and src not in matched and by_hints
        return img, models.small_copy(img, size), hints.place(hints_for[src], *img.size, size) if placed else None

    def encode(img: Image.Image, abs_: list[torch.Tensor], job: Job) -> None:
        meta = metadata(img)
        for path, ab in zip(job.outputs, abs_):
            if job.replace or path in job.todo():
                save(models.paint(img, ab), path, meta)

    pool = ThreadPoolExecutor(workers) if workers else None

    def submit(fn, *args) -> Future:
        if pool:
            return pool.submit(fn, *args)
        f = Future()
        try:
            f.set_result(fn(*args))
        except (data.ImageError, OSError, ValueError) as e:
            f.set_exception(e)
        return f

    limit = 2 * batch_size + workers
    todo = iter(jobs)
    decoding: deque[tuple[Job, Future]] = deque()
    encoding: deque[tuple[Job, Future]] = deque()

    def finished(job: Job, f: Future) -> tuple[Job, str | None]:
        try:
            f.result()
            return job, None
        except (data.ImageError, OSError, ValueError) as e:  # a bad photo or an unwritable output: the job goes on
            return job, str(e) if isinstance(e, data.ImageError) else f"{job.dst}: cannot write ({e})"

    try:
        while True:
            while len(decoding) + len(encoding) < limit and (job := next(todo, None)):
                decoding.append((job, submit(decode, job.src)))
            if not decoding:
                break
            batch = []
            while decoding and len(batch) < batch_size:
                job, f = decoding.popleft()
                if f.exception() is None:
                    batch.append((job, *f.result()))
                else:
                    yield finished(job, f)
            if batch:
                if by_hints:  # a reference's hints: its matching runs here, beside the model
                    batch = [(job, img, small, hints.place(guide.with_points(hints_for[job.src], data.uint8_to_l(small[None]),
                                                                              *img.size), *img.size, size))
                             if job.src in matched else (job, img, small, h) for job, img, small, h in batch]
                h = hints.batch([h for *_, h in batch], size)
                small = torch.stack([small for _, _, small, _ in batch])
                ab = models.predict_ab(G, small, temperature, h, vividness)[:, None]
                if samples:
                    ab = torch.cat([ab, sampling.sample_ab(G, small, samples, seed, h, vividness).to(ab.device)], 1)
                for i, (job, *_) in enumerate(batch):
                    if job.src in matched and not by_hints:
                        ab[i] = guide.transfer(ab[i], hints_for[job.src])
                encoding += [(job, submit(encode, img, list(ab[i]), job)) for i, (job, img, *_) in enumerate(batch)]
            while encoding and (encoding[0][1].done() or len(decoding) + len(encoding) >= limit):
                yield finished(*encoding.popleft())
        while encoding:
            yield finished(*encoding.popleft())
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
