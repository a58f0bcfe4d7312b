"""Video files for colorize.py (PyAV, FFmpeg's libraries): every frame colorized, sound and subtitles copied.

Frames are decoded in a thread, colorized in batches, steadied by a temporal filter on the predicted colour
(reset at scene cuts) and encoded in another thread, while the model runs. The output is written under a temp
name and renamed.
"""

from __future__ import annotations

import queue
import sys
import threading
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import data
import hints
import models
import reference

VIDEO_SUFFIXES = {".mp4", ".mov", ".m4v", ".mkv", ".avi", ".webm", ".mpeg", ".mpg", ".ts", ".wmv", ".flv"}
WRITE_SUFFIXES = {".mp4": "libx264", ".mov": "libx264", ".m4v": "libx264", ".mkv": "ffv1", ".webm": "libvpx-vp9",
                  ".avi": "ffv1"}
CUT_THRESHOLD = 12.0  # mean |L change| (0-100) of 8x8-pooled frames above which a scene cut resets the filter
MOTION_SCALE = 6.0  # |L change| (0-100, after a 4x4 blur that drowns film grain) at which the filter lets go fully
MAX_PIXELS = 40_000_000  # refuse larger frames (8K is 33 MP): memory grows with the frame, ~50 bytes a pixel in flight
QUEUE_FRAMES = 8  # decoded and painted frames waiting between the threads: memory is flat whatever the clip's length


class VideoError(ValueError):
    """A video that cannot be read or written: one line names the file and why."""


# the previous frame's colour is the model's own, so it is taken only where it matches clearly better than the
# keyframe's (content the keyframe did not show): at 0 the model's bias compounds frame after frame (a 48-frame pan:
# 24.1 dB at the first frame, 16.2 at the last), at 0.15 the colour holds (24.2 at the last)
PREVIOUS_HANDICAP = 0.15
KEYFRAME_NAME = "{h:02d}-{m:02d}-{s:06.3f}.png"  # --keyframes=DIR: a scene's first frame, named by its time (HH-MM-SS.mmm)


class Follow:
    """Keyframes followed through a film (a SIGGRAPH17 model): a keyframe's frame takes its own hints (points, a
    reference photo's); each later frame of its scene takes hints matched from the keyframe's reference photo and the
    keyframe as coloured (both always kept, as ColorMNet keeps its exemplar) and from the previous batch's last coloured
    frame, each position from the most confident of them, until the next keyframe or scene cut. due maps frame
    indices to keyframes (video.keyframe_frames)."""

    def __init__(self, due: dict[int, hints.Keyframe], guide: reference.Guide):
        self.due, self.guide = due, guide
        self.index, self.last_L = 0, None
        self.kept: list[reference.Reference] = []  # the scene's keyframe: its reference photo, and it as coloured
        self.previous: reference.Reference | None = None  # the last coloured frame before this batch

    def colorize(self, G, imgs: list, small: torch.Tensor, temperature: float) -> torch.Tensor:
        """The model's ab for a batch of frames, each with its hints; a keyframe splits the batch, since the frames
        after it follow its colour."""
        L = data.uint8_to_l(small)
        ab = torch.zeros(len(imgs), 2, *small.shape[2:])
        pending: list[tuple[int, torch.Tensor | None]] = []

        def run() -> None:
            if pending:
                rows = [i for i, _ in pending]
                ab[rows] = models.predict_ab(G, small[rows], temperature, hints.batch([h for _, h in pending], small.shape[-1])).cpu()
                pending.clear()

        for i, img in enumerate(imgs):
            if self.last_L is not None and cut(self.last_L, L[i:i + 1]):
                self.kept, self.previous = [], None  # a new scene: as today, until its own keyframe
            self.last_L = L[i:i + 1]
            k = self.due.get(self.index)
            self.index += 1
            if k is not None:
                h = self.guide.with_points(k.hints, L[i:i + 1], *img.size) if k.hints.reference else k.hints
                pending.append((i, hints.place(h, *img.size, small.shape[-1])))
                run()
                self.kept = [self.guide.photo(k.hints.reference)] if k.hints.reference else []
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
        return ab


def keyframe_frames(src: Path, keyframes: tuple[hints.Keyframe, ...]) -> dict[int, hints.Keyframe]:
    """Each keyframe's frame index (a time goes by the stream's average rate), checked against the video's header
    before any work: VideoError for one past the end or two on one frame."""
    inp, in_v = _open(src)
    try:
        rate = in_v.average_rate or in_v.guessed_rate or 25
        total, _ = expected_frames(inp, in_v)
        width, height = in_v.codec_context.width, in_v.codec_context.height
    finally:
        inp.close()
    due: dict[int, hints.Keyframe] = {}
    for n, k in enumerate(keyframes, 1):
        try:
            hints.check(k.hints, width, height)
        except hints.HintError as e:
            raise VideoError(f"keyframe {n}: {e}") from None
        index = k.frame if k.frame is not None else round(k.time * float(rate))
        said = f"frame {k.frame}" if k.frame is not None else f"time {k.time:g} s (frame {index} at {float(rate):g} fps)"
        if total is not None and index >= total:
            raise VideoError(f"{src}: keyframe {n} at {said} is past the end ({total} frames, {total / float(rate):.3f} s)")
        if index in due:
            raise VideoError(f"{src}: keyframes {list(due.values()).index(due[index]) + 1} and {n} are both on frame {index}")
        due[index] = k
    return due


def dump_keyframes(src: Path, folder: Path, size: int = 256, max_pixels: int = MAX_PIXELS) -> list[Path]:
    """The first frame of each scene (scene cuts as the temporal filter finds them) written to folder as a PNG named by
    its time (KEYFRAME_NAME), for a user to colour and hand back (--keyframes=DIR); returns the files written."""
    import av

    inp, in_v = _open(src)
    written, last_L = [], None
    try:
        _check_size(src, in_v, max_pixels)
        folder.mkdir(parents=True, exist_ok=True)
        for n, frame in enumerate(inp.decode(in_v)):
            img = frame.to_image()
            L = data.uint8_to_l(models.small_copy(img, size)[None])
            if last_L is None or cut(last_L, L):
                t = float(frame.time) if frame.time is not None else n / float(in_v.average_rate or 25)
                path = folder / KEYFRAME_NAME.format(h=int(t // 3600), m=int(t % 3600 // 60), s=t % 60)
                tmp = models.temp_beside(path)
                try:
                    tmp.write_bytes(data.png_bytes(img))
                    tmp.replace(path)
                finally:
                    tmp.unlink(missing_ok=True)
                written.append(path)
            last_L = L
    except av.error.FFmpegError as e:
        raise VideoError(f"{src}: {e}") from None
    finally:
        inp.close()
    return written


def keyframes_from(folder: Path) -> tuple[tuple[hints.Keyframe, ...], list[Path]]:
    """--keyframes=DIR handed back: each PNG named by its time (KEYFRAME_NAME) that has colour is a keyframe whose
    reference it is; (the keyframes, the files still gray)."""
    found, gray = [], []
    for path in sorted(folder.glob("*.png")):
        try:
            h, m, sec = path.stem.split("-")
            t = int(h) * 3600 + int(m) * 60 + float(sec)
        except ValueError:
            continue
        try:
            reference.load(path, 64)
        except reference.ReferenceError:
            gray.append(path)
            continue
        found.append(hints.Keyframe(None, t, hints.Hints(str(path), reference=path)))
    return tuple(found), gray


def cut(L_prev: torch.Tensor, L: torch.Tensor) -> bool:
    """A scene cut between two gray frames (1,1,h,w): the coarse picture (32x32, 8x8 pixels each at 256) changed a lot,
    the same at any model size."""
    return (F.adaptive_avg_pool2d(L, 32) - F.adaptive_avg_pool2d(L_prev, 32)).abs().mean().item() > CUT_THRESHOLD


def temporal_filter(ab: torch.Tensor, L: torch.Tensor, state: tuple | None, strength: float
                    ) -> tuple[torch.Tensor, tuple | None]:
    """Steady a run of predicted ab (N,2,h,w) given their gray frames L (N,1,h,w): each frame's colour leans on the
    last output by `strength` where the (blurred) gray picture did not change, not at all where it did or after a
    cut. state carries (last L, last ab) from the previous batch; strength 0 returns ab unchanged."""
    if strength == 0:
        return ab, None
    out = torch.empty_like(ab)
    for i in range(len(ab)):
        if state is None or cut(state[0], L[i:i + 1]):
            out[i] = ab[i]
        else:
            change = (F.avg_pool2d(L[i:i + 1], 5, 1, 2, count_include_pad=False)
                      - F.avg_pool2d(state[0], 5, 1, 2, count_include_pad=False)).abs()
            weight = strength * (1 - change / MOTION_SCALE).clamp_min(0)
            out[i] = torch.lerp(ab[i], state[1][0], weight[0])
        state = (L[i:i + 1], out[i:i + 1])
    return out, state


def _open(src: Path):
    """The input container and its first video stream; VideoError when FFmpeg cannot read one."""
    import av

    try:
        container = av.open(str(src))
    except FileNotFoundError:
        raise VideoError(f"{src}: no such file") from None
    except (av.error.FFmpegError, OSError) as e:
        raise VideoError(f"{src}: not a video FFmpeg can read ({e})") from None
    streams = container.streams.video
    if not streams:
        container.close()
        raise VideoError(f"{src}: has no video stream")
    if streams[0].codec_context is None:
        container.close()
        raise VideoError(f"{src}: no decoder for its video codec {streams[0].codec.name if streams[0].codec else '?'}")
    return container, streams[0]


def _check_size(src: Path, in_v, max_pixels: int) -> None:
    """VideoError when the stream's frames are over max_pixels."""
    width, height = in_v.codec_context.width, in_v.codec_context.height
    if width * height > max_pixels:
        raise VideoError(f"{src}: {width}x{height} frames, over the limit of {max_pixels:,} pixels (--max_video_pixels)")


def check(src: Path, max_pixels: int = MAX_PIXELS) -> None:
    """What the container's header alone tells against src (readable, a video stream, a decoder, the frame size), before
    anything heavy loads; VideoError otherwise."""
    inp, in_v = _open(src)
    try:
        _check_size(src, in_v, max_pixels)
    finally:
        inp.close()


def expected_frames(inp, in_v) -> tuple[int | None, bool]:
    """(frames, exact): the stream's own count (MP4), else its duration times its rate (MKV and TS state no count)."""
    if in_v.frames:
        return in_v.frames, True
    rate = in_v.average_rate or in_v.guessed_rate
    seconds = float(in_v.duration * in_v.time_base) if in_v.duration else inp.duration / 1e6 if inp.duration else None
    return (round(seconds * rate), False) if seconds and rate else (None, False)


def colorize_video(G: models.ECCV16Generator, src: Path, dst: Path, size: int = 256, temperature: float = 1.0,
                   temporal: float = 0.6, batch_size: int = 4, crf: int = 18, codec: str = "",
                   progress: bool = True, max_pixels: int = MAX_PIXELS, follow: Follow | None = None) -> int:
    """Colorize src into dst (codec from dst's suffix unless given), keeping size, timestamps, rotation, audio,
    subtitles and metadata; returns the frames written. follow: keyframes the scenes follow (a SIGGRAPH17 model).
    VideoError for files that cannot be read or written."""
    import av
    from tqdm import tqdm

    codec = codec or WRITE_SUFFIXES.get(dst.suffix.lower(), "")
    if not codec:
        raise VideoError(f"{dst}: cannot write video to {dst.suffix!r} (use .mp4, .mkv, .webm, .mov or --codec)")
    inp, in_v = _open(src)
    try:
        _check_size(src, in_v, max_pixels)
    except VideoError:
        inp.close()
        raise
    tmp = models.temp_beside(dst)  # it keeps the suffix: FFmpeg picks the container from it
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        out = av.open(str(tmp), "w")
        others = [s for s in inp.streams if s.type in ("audio", "subtitle")]
        for s in others:
            if s.codec.name not in out.supported_codecs:
                raise VideoError(f"{src}: its {s.type} ({s.codec.name}) cannot be copied into {dst.suffix} "
                                 "without re-encoding; choose .mkv (takes every codec) or .mp4")
        try:
            out_v = out.add_stream(codec, rate=in_v.average_rate or in_v.guessed_rate or 25)
        except (av.error.FFmpegError, ValueError) as e:
            raise VideoError(f"{dst}: cannot encode with {codec} ({e})") from None
        out_v.width, out_v.height = in_v.codec_context.width, in_v.codec_context.height
        out_v.codec_context.time_base = out_v.time_base = in_v.time_base  # the input's timestamps, unchanged: variable frame rates stay as they were
        out_v.pix_fmt = "yuv420p" if codec in ("libx264", "libvpx-vp9") else "yuv444p" if codec == "ffv1" else out_v.pix_fmt
        out_v.thread_type = "AUTO"
        if codec in ("libx264", "libvpx-vp9"):
            out_v.options = {"crf": str(crf), **({"b": "0"} if codec == "libvpx-vp9" else {})}
        copies = {s.index: out.add_stream_from_template(s) for s in others}
        for s in others:
            copies[s.index].metadata.update(s.metadata)
        out.metadata.update(inp.metadata)
        out_v.metadata.update(in_v.metadata)
        in_v.thread_type = "AUTO"  # FFmpeg's own decoding threads
        total, exact = expected_frames(inp, in_v)
        frames, error = _run(G, inp, in_v, out, out_v, copies, size, temperature, temporal, batch_size,
                             tqdm(total=total, unit="frame", disable=not progress, leave=False, desc=src.name,
                                  mininterval=0.1 if sys.stderr.isatty() else 30), follow)  # a log: a line every 30 s
        if frames == 0:
            raise VideoError(f"{src}: no frame decodes ({error or 'empty video stream'})")
        out.close()
        # a truncated file: the frames that decode are kept, and said so (a count from the duration is an estimate)
        if error or (total and frames < (total if exact else total - max(2, total // 50))):
            of = f" of {'' if exact else 'about '}{total}" if total else ""
            print(f"colorize.py: {src}: decoding stopped after {frames}{of} frames ({error or 'the file ends early'}); "
                  "wrote those", file=sys.stderr)
        tmp.replace(dst)
        return frames
    except av.error.FFmpegError as e:
        raise VideoError(f"{src}: {e}") from None
    finally:
        inp.close()
        tmp.unlink(missing_ok=True)


def _run(G, inp, in_v, out, out_v, copies: dict, size: int, temperature: float, temporal: float, batch_size: int,
         bar, follow: Follow | None = None) -> tuple[int, Exception | None]:
    """The pipeline: a decoding thread -> batches through the model and filter here -> an encoding thread.
    Returns the frames written and the error that stopped decoding early (None at the end of the stream)."""
    import av

    decoded: queue.Queue = queue.Queue(QUEUE_FRAMES)  # ("frame", VideoFrame) / ("packet", Packet) / ("end", error)
    painted: queue.Queue = queue.Queue(QUEUE_FRAMES)
    stop = threading.Event()

    def decode() -> None:
        try:
            for packet in inp.demux(in_v, *[inp.streams[i] for i in copies]):
                if stop.is_set():
                    return
                if packet.stream.index == in_v.index:
                    for frame in packet.decode():
                        decoded.put(("frame", frame))
                elif packet.dts is not None:  # the demuxer's flush packets carry nothing
                    decoded.put(("packet", packet))
            decoded.put(("end", None))
        except av.error.FFmpegError as e:
            decoded.put(("end", e))

    errors: list[Exception] = []

    def encode() -> None:
        rotation_set = False
        while (item := painted.get())[0] != "end":
            if errors:
                continue  # drained, so the model's thread never waits on a dead encoder
            kind, thing = item
            try:
                if kind == "frame":
                    rgb, template = thing
                    if not rotation_set and template.rotation:
                        out_v.set_display_rotation(template.rotation)
                    rotation_set = True
                    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                    frame.pts, frame.time_base = template.pts, template.time_base
                    out.mux(out_v.encode(frame))
                else:
                    thing.stream = copies[thing.stream.index]
                    out.mux(thing)
            except av.error.FFmpegError as e:
                errors.append(e)
        if not errors:
            try:
                out.mux(out_v.encode())
            except av.error.FFmpegError as e:
                errors.append(e)

    threads = [threading.Thread(target=decode, daemon=True), threading.Thread(target=encode, daemon=True)]
    for t in threads:
        t.start()
    state, frames, error = None, 0, None
    try:
        batch: list = []
        while not errors:
            kind, thing = decoded.get()
            if kind == "packet":
                (batch.append if batch else painted.put)(("packet", thing))  # kept in order with the frames
                continue
            if kind == "frame":
                batch.append(("frame", thing))
            in_batch = sum(k == "frame" for k, _ in batch)
            if batch and (kind == "end" or in_batch == batch_size):
                state = _colorize_batch(G, batch, size, temperature, temporal, state, painted, follow)
                frames += in_batch
                bar.update(in_batch)
                batch = []
            if kind == "end":
                error = thing
                break
    finally:
        stop.set()
        while threads[0].is_alive():  # the decoder may wait on a full queue: empty it until it sees stop
            try:
                decoded.get(timeout=0.05)
            except queue.Empty:
                pass
        painted.put(("end", None))
        threads[1].join()
        bar.close()
    if errors:
        raise errors[0]
    return frames, error


def _colorize_batch(G, batch: list, size: int, temperature: float, temporal: float, state, painted: queue.Queue,
                    follow: Follow | None = None):
    """Model (following keyframes), filter and full-resolution colour for a batch of frames; results (and packets
    between them) in order."""
    frames = [thing for kind, thing in batch if kind == "frame"]
    if not frames:
        for item in batch:
            painted.put(item)
        return state
    imgs = [f.to_image() for f in frames]
    small = torch.stack([models.small_copy(img, size) for img in imgs])
    ab = follow.colorize(G, imgs, small, temperature) if follow else models.predict_ab(G, small, temperature)
    ab, state = temporal_filter(ab, data.uint8_to_l(small.to(ab.device)), state, temporal)
    i = 0
    for kind, thing in batch:
        if kind == "frame":
            painted.put(("frame", (np.asarray(models.paint(imgs[i], ab[i])), thing)))
            i += 1
        else:
            painted.put(("packet", thing))
    return state


def flicker(frames: list[np.ndarray], still: float = 1.0) -> tuple[float, float]:
    """(mean |ab_t - ab_t-1| over all pixels, over pixels whose L moved less than `still`) of RGB uint8 frames, in Lab units."""
    lab = [data.rgb_to_lab(torch.from_numpy(f).permute(2, 0, 1)[None].float() / 255)[0] for f in frames]
    moves = [(b[1:] - a[1:]).abs().mean(0) for a, b in zip(lab, lab[1:])]
    still_px = [(b[0] - a[0]).abs() < still for a, b in zip(lab, lab[1:])]
    everywhere = torch.stack(moves).mean().item()
    where_still = torch.cat([m[s] for m, s in zip(moves, still_px)])
    return everywhere, where_still.mean().item() if len(where_still) else float("nan")


def read_frames(path: Path) -> tuple[list[np.ndarray], Fraction, list]:
    """Every frame of a video as RGB uint8, its time base and its frames' timestamps (for tests and bench)."""
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = [(f.to_ndarray(format="rgb24"), f.pts) for f in c.decode(s)]
        return [f for f, _ in frames], s.time_base, [p for _, p in frames]
