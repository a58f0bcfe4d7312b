"""Video files for colorize.py (PyAV, FFmpeg's libraries): every frame colorized, scene by scene; sound, subtitles,
timestamps, rotation and metadata kept.

A render decodes in a thread, colorizes frames in batches that never cross a scene cut, steadies the colour with a
temporal filter that starts afresh at each cut (and at each keyframe), and encodes each scene into a piece of its own
in a folder beside the output (.NAME.parts/), renamed into place once the scene is whole. A render that stops (a
crash, a reboot, SIGTERM) keeps its finished scenes, and the same command goes on from the first unfinished one:
scenes are independent, so the film is the same, frame for frame. Once every scene is there the pieces are joined,
with the input's sound and subtitles, into the output (a temp name, then renamed), and the folder is removed. Under
`accelerate launch` (or torchrun) the processes share a film's scenes, and the first one joins them.

A film's clock starts at its first frame: every time colorgan shows or reads (progress, keyframe names, a keyframe's
"time") is seconds since then, whatever timestamp the stream starts at.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import data
import models
import weights

CUT_THRESHOLD = 12.0  # mean |L change| (0-100) of 32x32-pooled frames above which a scene cut resets the filter
MOTION_SCALE = 6.0  # |L change| (0-100, after a 4x4 blur that drowns film grain) at which the filter lets go fully
MAX_PIXELS = 40_000_000  # refuse larger frames (8K is 33 MP): memory grows with the frame, ~50 bytes a pixel in flight
QUEUE_FRAMES = 8  # decoded and painted frames waiting between the threads: memory is flat whatever the film's length
IMAGE_DEMUXERS = ("image2", "_pipe")  # FFmpeg reads a lone picture through these: a JPEG named .mp4 is no video
# muxer options that keep the input's timestamps exact: MP4's edit list in the track's own timescale (its default, ms,
# moves a stream that does not start at 0), and Matroska's negative timestamps (AAC's priming) left unshifted
EXACT_TIMES = {".mp4": "mov", ".mov": "mov", ".m4v": "mov", ".mkv": "mkv", ".webm": "mkv"}
WAIT_S = 1.0  # the joining process looks for the other processes' scenes this often
BEAT_S = 5.0  # each rendering process says it is alive this often (a file's modification time in the parts folder)
STALL_S = 300.0  # a process silent this long while a scene of its is missing is taken for dead: the join stops


class VideoError(ValueError):
    """A video that cannot be read or written: one line names the file and why."""


# ----------------------------------------------------------------------------- reading


def open_video(src: Path):
    """The input container and its first video stream; VideoError when FFmpeg cannot read one."""
    import av

    try:
        container = av.open(str(src))
    except FileNotFoundError:
        raise VideoError(f"{src}: no such file") from None
    except (av.error.FFmpegError, OSError) as e:
        raise VideoError(f"{src}: not a video FFmpeg can read ({e})") from None
    if container.format.name.endswith(IMAGE_DEMUXERS):
        container.close()
        raise VideoError(f"{src}: a picture ({container.format.name.removesuffix('_pipe')}), not a video, whatever its name says")
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


def expected_frames(inp, in_v) -> tuple[int | None, bool]:
    """(frames, exact): the stream's own count (MP4), else its duration times its rate (MKV and TS state no count)."""
    if in_v.frames:
        return in_v.frames, True
    rate = in_v.average_rate or in_v.guessed_rate
    seconds = duration(inp, in_v)
    return (round(seconds * rate), False) if seconds and rate else (None, False)


def duration(inp, in_v) -> float | None:
    """The video stream's length in seconds, as its header says (None when it says nothing)."""
    if in_v.duration:
        return float(in_v.duration * in_v.time_base)
    return inp.duration / 1e6 if inp.duration else None


def check(src: Path, max_pixels: int = MAX_PIXELS) -> dict:
    """What the container's header tells, checked before anything heavy loads (readable, a video stream, a decoder, the
    frame size): {"width", "height", "rate", "seconds", "frames", "exact"}; VideoError otherwise."""
    inp, in_v = open_video(src)
    try:
        _check_size(src, in_v, max_pixels)
        frames, exact = expected_frames(inp, in_v)
        return {"width": in_v.codec_context.width, "height": in_v.codec_context.height,
                "rate": float(in_v.average_rate or in_v.guessed_rate or 25), "seconds": duration(inp, in_v),
                "frames": frames, "exact": exact}
    finally:
        inp.close()


@dataclass
class Frame:
    """Where a frame is on the film: its index, its time on the film's clock, and the time of the frame before it (-1
    for the first)."""
    index: int
    time: float
    before: float


class Clock:
    """A film's clock: each decoded frame's time in seconds since its first frame (its index over the rate where a
    frame has no timestamp)."""

    def __init__(self, in_v):
        self.rate = float(in_v.average_rate or in_v.guessed_rate or 25)
        self.first: Fraction | None = None

    def time(self, frame, index: int) -> float:
        """The frame's time on the film's clock."""
        if frame.pts is None or frame.time_base is None:
            return index / self.rate
        t = frame.pts * frame.time_base
        if self.first is None:
            self.first = t
        return float(t - self.first)


def decoded(src: Path, max_pixels: int = MAX_PIXELS):
    """(index, time on the film's clock, frame) of every frame, in order; VideoError when the file cannot be read."""
    import av

    inp, in_v = open_video(src)
    try:
        _check_size(src, in_v, max_pixels)
        in_v.thread_type = "AUTO"
        clock = Clock(in_v)
        for index, frame in enumerate(inp.decode(in_v)):
            yield index, clock.time(frame, index), frame
    except av.error.FFmpegError as e:
        raise VideoError(f"{src}: {e}") from None
    finally:
        inp.close()


# ----------------------------------------------------------------------------- scenes and the temporal filter


def cut(L_prev: torch.Tensor, L: torch.Tensor) -> bool:
    """A scene cut between two gray frames (1,1,h,w): the coarse picture (32x32, 8x8 pixels each at 256) changed a lot,
    the same at any model size."""
    return (F.adaptive_avg_pool2d(L, 32) - F.adaptive_avg_pool2d(L_prev, 32)).abs().mean().item() > CUT_THRESHOLD


def temporal_filter(ab: torch.Tensor, L: torch.Tensor, state: tuple | None, strength: float,
                    fresh: list[bool] | None = None) -> tuple[torch.Tensor, tuple | None]:
    """Steady a run of predicted ab (N,2,h,w) given their gray frames L (N,1,h,w): each frame's colour leans on the
    last output by `strength` where the (blurred) gray picture did not change, not at all where it did, after a cut
    or at a fresh frame (a keyframe: the restorer's decision holds in full). state carries (last L, last ab) from the
    previous batch; strength 0 returns ab unchanged."""
    if strength == 0:
        return ab, None
    out = torch.empty_like(ab)
    for i in range(len(ab)):
        if state is None or (fresh and fresh[i]) or cut(state[0], L[i:i + 1]):
            out[i] = ab[i]
        else:
            change = (F.avg_pool2d(L[i:i + 1], 5, 1, 2, count_include_pad=False)
                      - F.avg_pool2d(state[0], 5, 1, 2, count_include_pad=False)).abs()
            weight = strength * (1 - change / MOTION_SCALE).clamp_min(0)
            out[i] = torch.lerp(ab[i], state[1][0], weight[0])
        state = (L[i:i + 1], out[i:i + 1])
    return out, state


# ----------------------------------------------------------------------------- the render


def parts_folder(dst: Path) -> Path:
    """Where a render keeps its finished scenes until they are joined."""
    return dst.with_name(f".{dst.name}.parts")


def render_key(src: Path, settings: dict) -> str:
    """What makes two renders the same: the input file (path, size, modification time) and every setting that changes
    a frame (the model's weights among them); a piece of another render is never taken."""
    st = src.stat()
    return hashlib.sha256(repr((str(src.resolve()), st.st_size, st.st_mtime_ns, sorted(settings.items()))).encode()).hexdigest()[:16]


class Pieces:
    """The finished scenes of one render: PARTS/KEY-SCENE.SUFFIX, each renamed into place whole."""

    def __init__(self, dst: Path, key: str):
        self.folder, self.key, self.suffix = parts_folder(dst), key, dst.suffix.lower()

    def path(self, scene: int) -> Path:
        return self.folder / f"{self.key}-{scene:06d}{self.suffix}"

    def done(self, scene: int) -> bool:
        return self.path(scene).is_file()

    def finished(self) -> int:
        """How many of this render's scenes are finished."""
        return len(list(self.folder.glob(f"{self.key}-*{self.suffix}"))) if self.folder.is_dir() else 0

    def alive(self, rank: int) -> Path:
        """Process rank's heartbeat: touched while it decodes and renders."""
        return self.folder / f"{self.key}-alive-{rank}"

    def silent(self, rank: int, since: float) -> float:
        """Seconds since process rank last said it was alive (since `since`, time.time(), if it never did)."""
        try:
            return time.time() - max(self.alive(rank).stat().st_mtime, since)
        except FileNotFoundError:
            return time.time() - since

    def remove(self) -> None:
        """This render's own files (its pieces, heartbeats, temp pieces), then the folder if nothing else is in it."""
        for p in self.folder.glob(f"*{self.key}-*"):
            p.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.folder.rmdir()


class _Encoder:
    """The encoding thread: frames to the current scene's piece (a temp name, renamed when the scene ends)."""

    def __init__(self, pieces: Pieces, codec: str, crf: int, stream: tuple, rate):
        self.pieces, self.codec, self.crf, self.rate = pieces, codec, crf, rate
        self.width, self.height, self.time_base = stream  # the input's (width, height, time_base)
        self.inbox: queue.Queue = queue.Queue(QUEUE_FRAMES)
        self.errors: list[Exception] = []
        self.rotation = 0
        self.thread = threading.Thread(target=self._work, daemon=True)
        self.thread.start()

    def _open(self, scene: int):
        import av

        tmp = weights.temp_beside(self.pieces.path(scene))
        options = exact_times(self.pieces.suffix, self.time_base)
        out = av.open(str(tmp), "w", options=options)
        try:
            stream = out.add_stream(self.codec, rate=self.rate)
        except (av.error.FFmpegError, ValueError) as e:
            out.close()
            tmp.unlink(missing_ok=True)
            raise VideoError(f"cannot encode with {self.codec} ({e})") from None
        stream.width, stream.height = self.width, self.height
        stream.codec_context.time_base = stream.time_base = self.time_base  # the input's timestamps, unchanged
        stream.pix_fmt = "yuv420p" if self.codec in ("libx264", "libvpx-vp9") else "yuv444p" if self.codec == "ffv1" else stream.pix_fmt
        stream.thread_type = "AUTO"
        if self.codec in ("libx264", "libvpx-vp9"):
            stream.options = {"crf": str(self.crf), **({"b": "0"} if self.codec == "libvpx-vp9" else {})}
        return out, stream, tmp

    def _work(self) -> None:
        import av

        out = stream = tmp = None
        while (item := self.inbox.get())[0] != "end":
            if self.errors:
                continue  # drained, so the model's thread never waits on a dead encoder
            kind, *args = item
            try:
                if kind == "start":
                    out, stream, tmp = self._open(args[0])
                elif kind == "frame":
                    rgb, pts, rotation = args
                    self.rotation = rotation or self.rotation
                    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                    frame.pts, frame.time_base = pts, self.time_base
                    out.mux(stream.encode(frame))
                elif kind == "finish":
                    out.mux(stream.encode())
                    out.close()
                    with open(tmp, "rb") as f:  # on disk before its name says finished: a reboot keeps it whole
                        os.fsync(f.fileno())
                    tmp.replace(self.pieces.path(args[0]))
                    out = tmp = None
            except (av.error.FFmpegError, VideoError, OSError) as e:
                self.errors.append(e)
        if out is not None:  # a stop: the unfinished scene's piece goes
            out.close()
        if tmp is not None:
            tmp.unlink(missing_ok=True)

    def put(self, *item) -> None:
        if self.errors:
            raise self.errors[0]
        self.inbox.put(item)

    def close(self) -> None:
        self.inbox.put(("end",))
        self.thread.join()


def exact_times(suffix: str, time_base: Fraction) -> dict:
    """The muxer options that keep timestamps as the input has them (EXACT_TIMES)."""
    kind = EXACT_TIMES.get(suffix.lower())
    if kind == "mov":
        return {"movie_timescale": str(time_base.denominator)} if time_base.numerator == 1 else {}
    return {"avoid_negative_ts": "disabled"} if kind == "mkv" else {}


def render(G, src: Path, dst: Path, size: int = 256, temperature: float = 1.0, temporal: float = 0.6, batch_size: int = 4,
           crf: int = 18, codec: str = "", progress: bool = True, max_pixels: int = MAX_PIXELS, follow=None,
           share: tuple[int, int] = (0, 1), settings: dict | None = None, restore=None) -> int:
    """Colorize src into dst (codec from dst's suffix unless given), scene by scene (see the module's docstring);
    returns the frames this process colorized. follow: keyframes the scenes follow (keyframes.Follow). share: (this
    process, processes): process r renders the scenes s with s % processes == r; process 0 joins them all. settings:
    what else makes a frame (the model), for the render's key. restore: repairs each frame before colour
    (restoration.py, frame by frame). VideoError for files that cannot be read or written."""
    from tqdm import tqdm

    codec = codec or data.WRITE_SUFFIXES.get(dst.suffix.lower(), "")
    if not codec:
        raise VideoError(f"{dst}: cannot write video to {dst.suffix!r} (use .mp4, .mkv, .webm, .mov or --codec)")
    header = check(src, max_pixels)
    key = render_key(src, {**(settings or {}), "size": size, "temperature": temperature, "temporal": temporal,
                           "batch": batch_size, "crf": crf, "codec": codec, "follow": follow.key if follow else "",
                           "restore": restore is not None})
    pieces = Pieces(dst, key)
    pieces.folder.mkdir(parents=True, exist_ok=True)
    rank, world = share
    reused = pieces.finished()
    if reused and rank == 0:
        print(f"colorize.py: {src}: {reused} scenes of an earlier render are finished in {pieces.folder}: going on from them",
              file=sys.stderr)
    inp, in_v = open_video(src)
    try:  # read while open: PyAV 18 refuses a closed container's stream
        rate = in_v.average_rate or in_v.guessed_rate or 25
        stream = (in_v.codec_context.width, in_v.codec_context.height, in_v.time_base)
    finally:
        inp.close()
    encoder = _Encoder(pieces, codec, crf, stream, rate)
    bar = tqdm(total=header["frames"], unit="frame", disable=not progress, leave=False, desc=src.name,
               mininterval=0.1 if sys.stderr.isatty() else 30)  # a log: a line every 30 s
    frames = colorized = 0
    scene, rendering, last_L, state, batch, before = -1, False, None, None, [], -1.0
    error = None

    def flush() -> None:
        nonlocal state, batch
        if batch:
            state = _colorize_batch(G, batch, size, temperature, temporal, state, encoder, follow)
            batch = []

    try:
        stream = _prefetch(decoded(src, max_pixels))
        beat = 0.0
        for index, t, frame in stream:
            if time.monotonic() - beat > BEAT_S:
                pieces.alive(rank).touch()
                beat = time.monotonic()
            img = frame.to_image()
            small = models.small_copy(img, size)
            L = data.uint8_to_l(small[None])
            if last_L is None or cut(last_L, L):
                flush()
                if rendering:
                    encoder.put("finish", scene)
                scene += 1
                rendering = scene % world == rank and not pieces.done(scene)
                state = None
                if follow:
                    follow.new_scene()
                if rendering:
                    encoder.put("start", scene)
            frames += 1
            bar.update()
            if rendering:
                if restore:  # only frames this render colours: the cut was found on the frame as it is
                    img = restore(img).convert("RGB")
                    small = models.small_copy(img, size)
                batch.append((frame, img, small, Frame(index, t, before)))
                colorized += 1
                if len(batch) == batch_size:
                    flush()
            last_L, before = L, t
        error = stream.error
        flush()
        if rendering:
            encoder.put("finish", scene)
    finally:
        encoder.close()
        bar.close()
    if encoder.errors:
        raise VideoError(f"{dst}: {encoder.errors[0]}")
    if frames == 0:
        raise VideoError(f"{src}: no frame decodes ({error or 'empty video stream'})")
    total, exact = header["frames"], header["exact"]
    if rank == 0 and (error or (total and frames < (total if exact else total - max(2, total // 50)))):
        of = f" of {'' if exact else 'about '}{total}" if total else ""
        print(f"colorize.py: {src}: decoding stopped after {frames}{of} frames ({error or 'the file ends early'}); "
              "wrote those", file=sys.stderr)
    if rank == 0:
        _wait_for(pieces, scene + 1, world, dst, progress)
        join(src, dst, [pieces.path(s) for s in range(scene + 1)], encoder.rotation)
        pieces.remove()
    return colorized


class _prefetch:
    """A generator run in a thread (FFmpeg decodes while the model runs), at most QUEUE_FRAMES ahead; .error is what
    stopped it early (None at the end of the stream)."""

    def __init__(self, items):
        self.items, self.error, self.stop = items, None, threading.Event()
        self.queue: queue.Queue = queue.Queue(QUEUE_FRAMES)
        self.thread = threading.Thread(target=self._work, daemon=True)
        self.thread.start()

    def _work(self) -> None:
        try:
            for item in self.items:
                if not self._put(("item", item)):
                    return
            self._put(("end", None))
        except VideoError as e:
            self._put(("end", e))

    def _put(self, message) -> bool:
        """Queue a message unless the consumer stopped first (False then)."""
        while not self.stop.is_set():
            try:
                self.queue.put(message, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def __iter__(self):
        try:
            while (got := self.queue.get())[0] == "item":
                yield got[1]
            self.error = got[1]
        finally:
            self.stop.set()
            self.thread.join()


def _colorize_batch(G, batch: list, size: int, temperature: float, temporal: float, state, encoder: _Encoder, follow=None):
    """Model (following keyframes), filter and full-resolution colour for a batch of one scene's frames, to the encoder
    in order."""
    imgs = [img for _, img, *_ in batch]
    small = torch.stack([s for _, _, s, *_ in batch])
    fresh = None
    if follow:
        ab, fresh = follow.colorize(G, imgs, small, temperature, [f for *_, f in batch])
    else:
        ab = models.predict_ab(G, small, temperature)
    ab, state = temporal_filter(ab, data.uint8_to_l(small.to(ab.device)), state, temporal, fresh)
    for (frame, img, *_), a in zip(batch, ab):
        encoder.put("frame", np.asarray(models.paint(img, a)), frame.pts, frame.rotation)
    return state


def _wait_for(pieces: Pieces, scenes: int, world: int, dst: Path, progress: bool) -> None:
    """Until every scene's piece is there (other processes render theirs); VideoError when a scene's process has been
    silent for STALL_S (it died, or its piece was lost), naming the scenes and the command that renders them."""
    since = time.time()
    missing = [s for s in range(scenes) if not pieces.done(s)]
    if missing and progress:
        print(f"colorize.py: waiting for {len(missing)} scenes from the other processes", file=sys.stderr)
    while missing:
        time.sleep(WAIT_S)
        missing = [s for s in missing if not pieces.done(s)]
        dead = sorted({s % world for s in missing if pieces.silent(s % world, since) > STALL_S})
        if dead:
            raise VideoError(f"{dst}: scenes {', '.join(str(s + 1) for s in missing)} never came (process "
                             f"{', '.join(map(str, dead))} silent for over {STALL_S:g} s: stopped, or its pieces were lost); "
                             f"the finished scenes are kept in {pieces.folder}: the same command with --skip_existing=True "
                             "renders the rest")


def join(src: Path, dst: Path, parts: list[Path], rotation: int = 0) -> None:
    """The pieces' video and the input's sound and subtitles (copied, not re-encoded), with the input's metadata,
    into dst: written under a temp name and renamed."""
    import av

    inp, in_v = open_video(src)
    tmp = weights.temp_beside(dst)  # it keeps the suffix: FFmpeg picks the container from it
    first = av.open(str(parts[0]))
    try:
        out = av.open(str(tmp), "w", options=exact_times(dst.suffix, in_v.time_base))
        others = [s for s in inp.streams if s.type in ("audio", "subtitle")]
        for s in others:
            if s.codec.name not in out.supported_codecs:
                raise VideoError(f"{src}: its {s.type} ({s.codec.name}) cannot be copied into {dst.suffix} "
                                 "without re-encoding; choose .mkv (takes every codec) or .mp4")
        out_v = out.add_stream_from_template(first.streams.video[0])
        if rotation:
            out_v.set_display_rotation(rotation)
        copies = {s.index: out.add_stream_from_template(s) for s in others}
        for s in others:
            copies[s.index].metadata.update(s.metadata)
        out.metadata.update(inp.metadata)
        out_v.metadata.update(in_v.metadata)

        def video_packets():
            last = None
            for path in parts:
                with av.open(str(path)) as piece:
                    for packet in piece.demux(piece.streams.video[0]):
                        if packet.dts is None:
                            continue
                        if last is not None and packet.dts <= last:  # a variable rate's reordering across a join
                            packet.dts = last + 1
                        last = packet.dts
                        yield float(packet.dts * packet.time_base), 0, packet, out_v

        def other_packets():
            if not others:
                return
            for packet in inp.demux(*others):
                if packet.dts is not None:  # the demuxer's flush packets carry nothing
                    yield float(packet.dts * packet.time_base), 1, packet, copies[packet.stream.index]

        for *_, packet, stream in heapq.merge(video_packets(), other_packets(), key=lambda x: x[:2]):
            packet.stream = stream
            out.mux(packet)
        out.close()
        tmp.replace(dst)
    except av.error.FFmpegError as e:
        raise VideoError(f"{dst}: {e}") from None
    finally:
        first.close()
        inp.close()
        tmp.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- measures, for tests and bench


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
