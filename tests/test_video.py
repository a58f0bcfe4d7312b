"""Videos through colorize.py: clips the tests make with PyAV (no files committed, no network)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

import models
import video
import weights
from conftest import make_clip

SMALL = "--size=64"


@pytest.fixture
def colorize(script, release_weights):
    def run(*args) -> tuple[int, str]:
        return script("colorize.py", *map(str, args), f"--ckpt={release_weights}", SMALL, "--runtime=torch")

    return run


def packets(path, kind: str) -> list[tuple[int, bytes]]:
    with av.open(str(path)) as c:
        return [(p.pts, bytes(p)) for p in c.demux(getattr(c.streams, kind)[0]) if p.size]


def test_a_clip_keeps_every_frame_its_timestamps_sound_and_metadata(colorize, release_weights, tmp_path):
    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=9)
    code, err = colorize(clip, tmp_path / "out.mp4", "--temporal=0")
    assert code == 0, err
    frames, time_base, pts = video.read_frames(tmp_path / "out.mp4")
    src_frames, src_time_base, src_pts = video.read_frames(clip)
    assert len(frames) == 9 and frames[0].shape == (48, 64, 3) and pts == src_pts and time_base == src_time_base
    assert packets(tmp_path / "out.mp4", "audio") == packets(clip, "audio")  # copied, not re-encoded
    with av.open(str(tmp_path / "out.mp4")) as c:
        assert c.metadata.get("title") == "a test clip" and c.streams.video[0].codec.name == "h264"
        assert c.streams.video[0].average_rate == 12
    G = models.load_generator(release_weights)
    for got, src in zip(frames, src_frames):  # --temporal=0: each frame as the photo path colorizes it
        expected = np.asarray(models.colorize(G, Image.fromarray(src), size=64)).astype(int)
        assert np.abs(got.astype(int) - expected).mean() < 3.5  # H.264 at crf 18 on a 64x48 frame of strong colour
    assert not list(tmp_path.glob(".*tmp*"))


def test_mkv_is_lossless_ffv1_and_the_filter_is_on_by_default(colorize, tmp_path):
    clip = tmp_path / "clip.mkv"
    make_clip(clip, frames=6, audio=False, codec="ffv1")
    assert colorize(clip, tmp_path / "out.mkv")[0] == 0
    assert colorize(clip, tmp_path / "raw.mkv", "--temporal=0")[0] == 0
    with av.open(str(tmp_path / "out.mkv")) as c:
        assert c.streams.video[0].codec.name == "ffv1"
    filtered, raw = video.read_frames(tmp_path / "out.mkv")[0], video.read_frames(tmp_path / "raw.mkv")[0]
    assert np.array_equal(filtered[0], raw[0])  # nothing to lean on at the first frame
    # on by default: the grain's flicker is calmed
    assert video.flicker(filtered)[0] < 0.8 * video.flicker(raw)[0], (video.flicker(filtered), video.flicker(raw))


def grainy_run(frames: int, cut_at: int | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Gray frames L (N,1,32,32) of a still scene with grain, and an ab prediction that follows the grain
    (as an undertrained model's does), with a different scene from cut_at on."""
    g = torch.Generator().manual_seed(seed)
    scenes = [torch.linspace(20, 80, 32).expand(32, 32), torch.linspace(90, 10, 32).expand(32, 32).t()]
    L = torch.stack([scenes[int(cut_at is not None and i >= cut_at)] + 2 * torch.randn(32, 32, generator=g)
                     for i in range(frames)])[:, None]
    ab = torch.cat([(L - 50) * 0.8, (50 - L) * 0.5], 1) + 3 * torch.randn(frames, 2, 32, 32, generator=g)
    return L, ab


def flicker(ab: torch.Tensor) -> float:
    return (ab[1:] - ab[:-1]).abs().mean().item()


def test_the_filter_calms_a_still_scene_and_starts_afresh_at_a_cut():
    L, ab = grainy_run(12)
    calm, _ = video.temporal_filter(ab, L, None, strength=0.6)
    assert flicker(calm) <= 0.7 * flicker(ab) and torch.equal(calm[0], ab[0])
    assert video.temporal_filter(ab, L, None, strength=0)[0] is ab
    L, ab = grainy_run(12, cut_at=6)
    out, _ = video.temporal_filter(ab, L, None, strength=0.6)
    assert torch.equal(out[6], ab[6]) and not torch.equal(out[7], ab[7])  # the first frame of the new scene is its own
    # batches: the state carries across calls, giving what one call gives
    a, state = video.temporal_filter(ab[:5], L[:5], None, 0.6)
    b, _ = video.temporal_filter(ab[5:], L[5:], state, 0.6)
    assert torch.equal(torch.cat([a, b]), out)


def test_the_filter_follows_motion_without_ghosting():
    L, ab = grainy_run(2)
    L[1, :, 8:24, 16:] += 30  # a bright thing moves into a quarter of the frame (too little for a cut)
    ab[1, :, 8:24, 16:] += 40
    out, _ = video.temporal_filter(ab, L, None, strength=0.9)
    assert torch.equal(out[1, :, 11:21, 19:], ab[1, :, 11:21, 19:])  # changed pixels take their new colour, all of it
    assert (out[1, :, :, :12] - ab[1, :, :, :12]).abs().mean() > 0.5  # still pixels lean on the last frame


def test_broken_videos_are_refused_in_one_line_without_output(colorize, tmp_path):
    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=4)
    (tmp_path / "text.mp4").write_text("not a video")
    (tmp_path / "truncated.mp4").write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    with av.open(str(tmp_path / "sound.mp4"), "w") as c:  # a sound track only
        a = c.add_stream("aac", rate=8000, layout="mono")
        f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="flt", layout="mono")
        f.sample_rate, f.pts = 8000, 0
        c.mux(a.encode(f))
        c.mux(a.encode())
    cases = [("text.mp4", "out.mp4", [], "not a video FFmpeg can read"),
             ("truncated.mp4", "out.mp4", [], "not a video FFmpeg can read"),  # MP4's index is at its end: refused
             ("sound.mp4", "out.mp4", [], "has no video stream"),
             ("clip.mp4", "out.webm", [], "its audio (aac) cannot be copied into .webm"),
             ("clip.mp4", "out.mp4", ["--codec=nonesuch"], "cannot encode with nonesuch"),
             ("missing.mp4", "out.mp4", [], "no such file"),
             ("clip.mp4", "out.mp4", ["--max_video_pixels=3000"], "64x48 frames, over the limit of 3,000 pixels")]
    for name, out, args, message in cases:
        code, err = colorize(tmp_path / name, tmp_path / out, *args)
        assert code == 1 and "Traceback" not in err and message in err.strip().splitlines()[-1], (name, err)
        assert not (tmp_path / out).exists() and not list(tmp_path.glob(".*tmp*")), name


def test_the_filter_lets_go_at_6_l_units_and_a_cut_is_a_mean_change_over_12():
    L = torch.full((2, 1, 32, 32), 50.0)
    ab = torch.zeros(2, 2, 32, 32)
    ab[1] = 10.0
    for change, expected in ((0.0, 5.0), (3.0, 7.5), (6.0, 10.0), (9.0, 10.0)):  # weight = strength * (1 - change / 6)
        L[1] = 50.0 + change
        torch.testing.assert_close(video.temporal_filter(ab, L, None, 0.5)[0][1], torch.full((2, 32, 32), expected))
    for jump, is_cut in ((22.0, False), (26.0, True)):  # half the frame jumps: a mean change of 11, then 13
        L[1] = 50.0
        L[1, :, :, 16:] += jump
        still = video.temporal_filter(ab, L, None, 0.5)[0][1, :, :, :8]  # far from the jump: unchanged gray
        assert torch.allclose(still, torch.full_like(still, 10.0 if is_cut else 5.0)), (jump, still.mean())


def test_webm_is_vp9_and_crf_sets_the_quality(colorize, tmp_path):
    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=4, audio=False, grain=20)
    assert colorize(clip, tmp_path / "out.webm")[0] == 0
    with av.open(str(tmp_path / "out.webm")) as c:
        assert c.streams.video[0].codec.name == "vp9" and c.streams.video[0].frames in (0, 4)
    assert len(video.read_frames(tmp_path / "out.webm")[0]) == 4
    for crf in (10, 40):
        assert colorize(clip, tmp_path / f"crf{crf}.mp4", f"--crf={crf}")[0] == 0
    assert (tmp_path / "crf40.mp4").stat().st_size < 0.7 * (tmp_path / "crf10.mp4").stat().st_size


@pytest.mark.parametrize("suffix", [".mkv", ".ts"])
def test_a_truncated_mkv_or_ts_says_where_decoding_stopped(colorize, tmp_path, suffix):
    clip = tmp_path / f"clip{suffix}"
    make_clip(clip, frames=48, audio=False)
    (tmp_path / f"cut{suffix}").write_bytes(clip.read_bytes()[: clip.stat().st_size * 6 // 10])
    code, err = colorize(tmp_path / f"cut{suffix}", tmp_path / "out.mkv")
    written = len(video.read_frames(tmp_path / "out.mkv")[0])
    assert code == 0 and f"decoding stopped after {written} of about" in err and written < 40, err
    code, err = colorize(clip, tmp_path / "whole.mkv")  # a whole file says nothing of the kind
    assert code == 0 and "decoding stopped" not in err, err


def test_a_single_video_shows_progress_with_a_total_without_a_terminal(colorize, tmp_path):
    clip = tmp_path / "clip.mkv"
    make_clip(clip, frames=6, audio=False, codec="ffv1")
    code, err = colorize(clip, tmp_path / "out.mkv")  # stderr is captured here: not a terminal
    assert code == 0 and "clip.mkv:" in err and "/6 [" in err, err  # tqdm's count out of the total from the duration


def test_a_video_the_header_refuses_is_refused_before_the_weights_load(script, tmp_path, monkeypatch):
    make_clip(tmp_path / "clip.mp4", frames=2)
    (tmp_path / "text.mp4").write_text("not a video")
    monkeypatch.setattr(models, "load_generator", lambda *a, **k: pytest.fail("the weights loaded"))
    for name, args, message in (("clip.mp4", ["--max_video_pixels=3000"], "64x48 frames, over the limit of 3,000 pixels"),
                                ("text.mp4", [], "not a video FFmpeg can read")):
        code, err = script("colorize.py", str(tmp_path / name), str(tmp_path / "out.mp4"), "--ckpt=x.pth", *args)
        assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err


# ----------------------------------------------------------------------------- keyframes


def spy_hints(monkeypatch) -> list:
    """Every frame's hint mask sum as the model is given it (0: no hints), in order."""
    given = []
    predict = models.predict_ab

    def spy(G, small, temperature=1.0, hints=None, vividness=1.0):
        given.extend([0.0] * len(small) if hints is None else hints[:, 2].flatten(1).sum(1).tolist())
        return predict(G, small, temperature, hints, vividness)

    monkeypatch.setattr(models, "predict_ab", spy)
    return given


def test_a_keyframe_reaches_exactly_its_scenes_frames_and_holds_in_full_at_its_own(script, siggraph_weights, tmp_path,
                                                                                      monkeypatch):
    import json

    make_clip(tmp_path / "clip.mp4", frames=12, cut_at=6, audio=False)  # two scenes: a cut at frame 6
    (tmp_path / "k.json").write_text(json.dumps({"keyframes": [{"frame": 2, "points": [{"x": 30, "y": 30, "color": "#00c800",
                                                                                        "size": 6}]}]}))
    given = spy_hints(monkeypatch)
    code, err = script("colorize.py", str(tmp_path / "clip.mp4"), str(tmp_path / "out.mkv"), f"--ckpt={siggraph_weights}",
                       SMALL, "--runtime=torch", "--reference_weights=random", f"--hints={tmp_path / 'k.json'}", "--batch_size=4")
    assert code == 0, err
    assert [g > 0 for g in given] == [False, False, True, True, True, True] + [False] * 6, given
    assert given[2] == 6 * 8  # the keyframe: its own point, 6 pixels square on a 64x48 frame, at 64x64
    # the keyframe's own frame is the model's output with its hints in full, not blended with the frame before it
    G = models.load_generator(siggraph_weights)
    frames = video.read_frames(tmp_path / "out.mkv")[0]
    src = video.read_frames(tmp_path / "clip.mp4")[0]
    import hints

    h = hints.place(hints.Hints("k", (hints.Point(30, 30, (0, 200, 0), 6),)), 64, 48, 64)
    own = np.asarray(models.colorize(G, Image.fromarray(src[2]), size=64, hints=h)).astype(int)
    diff = np.abs(frames[2].astype(int) - own)  # FFV1 in yuv444p: a level or two of rounding
    assert diff.max() <= 3 and diff.mean() < 0.6, (diff.max(), diff.mean())


def frames_of(rgb: np.ndarray, n: int, step: int = 2, size: int = 64) -> list[Image.Image]:
    """n frames of a size x size window panning across rgb, step pixels a frame."""
    return [Image.fromarray(rgb[:size, i * step:i * step + size]) for i in range(n)]


def test_a_keyframes_colour_is_carried_to_the_last_frame_of_a_panning_shot(monkeypatch, tmp_path):
    import torch.nn.functional as F

    import data
    import hints
    import keyframes
    import reference
    from test_reference import textured

    imgs = frames_of(textured(5, 256), 16, step=3, size=128)  # one photo panned 3 pixels a frame: 45 by the last
    Image.fromarray(np.asarray(imgs[0])).save(tmp_path / "first.png")  # the truth's first frame as the reference
    guide = reference.Guide(reference.Matcher("random"), size=128)
    follow = keyframes.Follow((hints.Keyframe(0, None, hints.Hints("k", reference=tmp_path / "first.png")),), guide)
    seen = []

    def follows_hints(G, small, t=1.0, h=None, vividness=1.0):  # a model that spreads each hint's colour over its cell,
        seen.append(h)                                          # but fails the keyframe itself (gray): the reference
        if h is None or len(seen) == 1:                         # photo, kept, must carry it
            return torch.zeros(len(small), 2, 128, 128)
        return F.interpolate(F.avg_pool2d(h[:, :2], 8) / F.avg_pool2d(h[:, 2:], 8).clamp_min(1e-6), scale_factor=8)

    monkeypatch.setattr(models, "predict_ab", follows_hints)
    # the reference is the keyframe's own picture: painted on it as it is (a handed-back keyframe), the keyframe alone
    # would carry its colour; this test is about the reference kept for the scene, so that painting is left out
    monkeypatch.setattr(reference, "own_colour", lambda ref, L: None)
    for i in range(0, 16, 4):
        frames = [video.Frame(k, k / 24, (k - 1) / 24 if k else -1) for k in range(i, i + 4)]
        follow.colorize(None, imgs[i:i + 4], torch.stack([models.small_copy(img, 128) for img in imgs[i:i + 4]]), 1.0, frames)
    last = torch.cat(seen)[-1]  # the last frame's hints, where it shows what the first frame showed (its left 83 columns)
    truth = data.uint8_to_lab(models.small_copy(imgs[-1], 128)[None])[1][0]
    mask = last[2] > 0
    mask[:, 128 - 45:] = False
    err = (last[:2] - truth)[:, mask].norm(dim=0)
    # the reference photo's colours (cell means), still
    assert mask.sum() > 100 * 25 and err.median() < 3, (int(mask.sum()), err.median())
    assert len(seen) == 5  # 4 batches, the first split after its keyframe


def test_the_previous_frames_colour_is_handicapped_or_the_models_bias_compounds(monkeypatch, tmp_path):
    """The README's claim: unhandicapped, the previous frame's colour (the model's own) wins where the keyframe's
    matches as well, and a bias of the model compounds frame after frame; PREVIOUS_HANDICAP holds the keyframe's."""
    import data
    import hints
    import keyframes
    import reference
    from test_reference import textured

    imgs = frames_of(textured(6, 256), 12, step=2, size=128)
    Image.fromarray(np.asarray(imgs[0])).save(tmp_path / "first.png")
    truth = data.uint8_to_lab(models.small_copy(imgs[-1], 128)[None])[1][0]

    def drift(handicap: float) -> float:
        monkeypatch.setattr(keyframes, "PREVIOUS_HANDICAP", handicap)
        guide = reference.Guide(reference.Matcher("random"), size=128)
        follow = keyframes.Follow((hints.Keyframe(0, None, hints.Hints("k", reference=tmp_path / "first.png")),), guide)

        def biased(G, small, t=1.0, h=None, vividness=1.0):  # copies its hints' colour and adds its own bias of +6 in a
            ab = torch.zeros(len(small), 2, 128, 128)
            if h is not None:
                spread = torch.nn.functional.avg_pool2d(h[:, :2], 8) / torch.nn.functional.avg_pool2d(h[:, 2:], 8).clamp_min(1e-6)
                ab = torch.nn.functional.interpolate(spread, scale_factor=8)
            ab[:, 0] += 6
            return ab

        monkeypatch.setattr(models, "predict_ab", biased)
        out = None
        for i in range(12):
            frame = [video.Frame(i, i / 24, (i - 1) / 24 if i else -1)]
            out = follow.colorize(None, imgs[i:i + 1], models.small_copy(imgs[i], 128)[None], 1.0, frame)[0]
        return (out[0, 0] - truth[0]).mean().item()  # the last frame's bias in a

    held, compounded = drift(keyframes.PREVIOUS_HANDICAP), drift(0.0)
    assert compounded > held + 7, (held, compounded)  # docs: 8 Lab units further off without it


def test_keyframes_dumped_coloured_and_handed_back(script, siggraph_weights, tmp_path, monkeypatch):
    make_clip(tmp_path / "clip.mp4", frames=12, cut_at=6, audio=False)
    code, err = script("colorize.py", str(tmp_path / "clip.mp4"), f"--keyframes={tmp_path / 'keys'}")
    assert code == 0 and "2 scenes" in err, err
    keys = sorted(p for p in (tmp_path / "keys").iterdir() if not p.name.startswith("."))
    assert [k.name for k in keys] == ["00-00-00.000.png", "00-00-00.500.png"]  # frame 6 of 12 a second
    first = np.asarray(Image.open(keys[0]))
    assert np.abs(first.astype(int) - video.read_frames(tmp_path / "clip.mp4")[0][0]).mean() < 1  # the frame itself
    from conftest import synthetic_rgb

    Image.fromarray(synthetic_rgb(3, 48, 64)).save(keys[0])  # the restorer colours the first scene's frame
    Image.open(keys[1]).convert("L").convert("RGB").save(keys[1])  # the second scene's still gray: not coloured yet
    code, err = script("colorize.py", str(tmp_path / "clip.mp4"), f"--keyframes={tmp_path / 'keys'}")
    assert code == 0 and "0 new pictures" in err  # the same film again: nothing replaced, nothing missing
    given = spy_hints(monkeypatch)
    code, err = script("colorize.py", str(tmp_path / "clip.mp4"), str(tmp_path / "out.mp4"), f"--ckpt={siggraph_weights}",
                       SMALL, "--runtime=torch", "--reference_weights=random", f"--keyframes={tmp_path / 'keys'}", "--batch_size=4")
    assert code == 0 and "00-00-00.500.png: still gray" in err, err
    assert [g > 0 for g in given] == [True] * 6 + [False] * 6, given  # the first scene follows its keyframe; not the second
    assert len(video.read_frames(tmp_path / "out.mp4")[0]) == 12
    (tmp_path / "other").mkdir()
    Image.new("RGB", (8, 8), "red").save(tmp_path / "other" / "holiday.png")
    code, err = script("colorize.py", str(tmp_path / "clip.mp4"), f"--keyframes={tmp_path / 'other'}")
    assert code == 1 and "already holds pictures colorgan did not dump" in err, err


def test_a_handed_back_keyframe_colours_its_own_frame_as_the_restorer_did(script, siggraph_weights, tmp_path):
    from skimage import color

    make_clip(tmp_path / "clip.mkv", frames=8, cut_at=4, audio=False, codec="ffv1")
    assert script("colorize.py", str(tmp_path / "clip.mkv"), f"--keyframes={tmp_path / 'keys'}")[0] == 0
    key = sorted((tmp_path / "keys").glob("*.png"))[0]
    lab = color.rgb2lab(np.asarray(Image.open(key)))
    h, w = lab.shape[:2]
    y, x = np.mgrid[0:h, 0:w]
    lab[..., 1], lab[..., 2] = 40 * x / w - 20, 30 - 50 * y / h  # the restorer's colour: smooth, their L kept
    Image.fromarray((color.lab2rgb(lab) * 255).round().astype(np.uint8)).save(key)
    coloured = color.rgb2lab(np.asarray(Image.open(key)))
    code, err = script("colorize.py", str(tmp_path / "clip.mkv"), str(tmp_path / "out.mkv"), f"--ckpt={siggraph_weights}", SMALL,
                       "--runtime=torch", "--reference_weights=random", f"--keyframes={tmp_path / 'keys'}", "--temporal=0")
    assert code == 0, err
    out = color.rgb2lab(video.read_frames(tmp_path / "out.mkv")[0][0])
    off = np.abs(out[..., 1:] - coloured[..., 1:]).max(-1)
    assert np.mean(off < 5) > 0.95, np.mean(off < 5)  # (painted back from the 64x64 model scale: the edges of a 48x64 frame)


@pytest.mark.parametrize("container, start", [(".mp4", 10.0), (".ts", 0.0)])
def test_a_clip_that_starts_at_any_time_round_trips_its_keyframes(script, siggraph_weights, tmp_path, monkeypatch, container, start):
    """A clip cut from a recording (its first frame at 10 s) and a TS capture (whose first frame FFmpeg places at
    0.083 s or so): the dump names times from the film's first frame, and each handed-back keyframe lands on its cut."""
    clip = tmp_path / f"clip{container}"
    make_clip(clip, frames=24, cut_at=13, audio=False, start=start)
    assert script("colorize.py", str(clip), f"--keyframes={tmp_path / 'keys'}")[0] == 0
    names = sorted(p.name for p in (tmp_path / "keys").glob("*.png"))
    assert names == ["00-00-00.000.png", "00-00-01.083.png"], names  # frame 13 of 12 a second
    for name in names:  # the restorer colours both (a colour photo stands in for their work)
        from conftest import synthetic_rgb

        Image.fromarray(synthetic_rgb(3, 48, 64)).save(tmp_path / "keys" / name)
    given = spy_hints(monkeypatch)
    code, err = script("colorize.py", str(clip), str(tmp_path / "out.mkv"), f"--ckpt={siggraph_weights}", SMALL,
                       "--runtime=torch", "--reference_weights=random", f"--keyframes={tmp_path / 'keys'}", "--batch_size=4")
    assert code == 0, err
    assert all(g > 0 for g in given) and len(given) == 24  # every frame of both scenes follows its own keyframe
    src_pts, out_pts = video.read_frames(clip)[2], video.read_frames(tmp_path / "out.mkv")[2]
    with av.open(str(clip)) as a, av.open(str(tmp_path / "out.mkv")) as b:
        times = [[round(float(p * c.streams.video[0].time_base), 3) for p in pts] for c, pts in ((a, src_pts), (b, out_pts))]
    assert times[0] == times[1] and (start == 0 or times[0][0] == start), times  # the input's own times, kept


def test_keyframes_coloured_in_the_app_or_an_editor_are_taken_and_untouched_toned_frames_are_not(tmp_path, script):
    import keyframes

    clip = tmp_path / "sepia.mp4"
    make_clip(clip, frames=24, cut_at=12, audio=False, toned=True)  # a sepia print: its frames have colour, the tint
    assert script("colorize.py", str(clip), f"--keyframes={tmp_path / 'keys'}")[0] == 0
    from conftest import synthetic_rgb

    coloured = Image.fromarray(synthetic_rgb(4, 48, 64))
    coloured.save(tmp_path / "keys" / "00-00-00.000-s17.png")  # the app's download, beside the untouched dump
    coloured.save(tmp_path / "keys" / "00-00-01.000.tif")  # an editor's export of the second scene's frame
    (tmp_path / "keys" / "00-00-01.000.png").unlink()
    (tmp_path / "keys" / "notes.jpg").write_bytes(b"not a picture")
    found, skipped = keyframes.handed_back(tmp_path / "keys")
    assert [(k.time, Path(k.hints.reference).name) for k in found] == [(0.0, "00-00-00.000-s17.png"), (1.0, "00-00-01.000.tif")]
    why = {p.name: reason for p, reason in skipped}
    assert "as dumped" in why["00-00-00.000.png"] and "not named by a time" in why["notes.jpg"], why


def test_a_film_render_stopped_anywhere_resumes_to_the_same_frames(colorize, tmp_path, monkeypatch):
    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=30, cut_at=10, audio=True)  # scenes of 10 and 20 frames (each a piece)
    lossless = ["--batch_size=4", "--crf=0"]  # H.264 at qp 0: each decoded frame is the colorized frame (as yuv420p)
    assert colorize(clip, tmp_path / "whole.mp4", *lossless)[0] == 0
    whole = video.read_frames(tmp_path / "whole.mp4")[0]
    predict, colorized = models.predict_ab, []
    for stop_after in (3, 14, 27):  # in the first scene, early in the second, late in the second
        out = tmp_path / f"stopped{stop_after}.mp4"

        def stopping(G, small, *a, **k):
            colorized.append(len(small))
            if sum(colorized) > stop_after:
                os.kill(os.getpid(), signal.SIGTERM)
            return predict(G, small, *a, **k)

        colorized.clear()
        monkeypatch.setattr(models, "predict_ab", stopping)
        code, err = colorize(clip, out, *lossless)
        assert code == 128 + signal.SIGTERM and "keeps the finished scenes" in err.strip().splitlines()[-1], err
        assert not out.exists() and video.parts_folder(out).is_dir()
        key = next(video.parts_folder(out).glob("*.mp4"), None)
        if key is not None:  # what a kill -9 leaves besides: a half-written piece under its temp name
            weights.temp_beside(key.with_name(key.name.replace("-000000", "-000001"))).write_bytes(b"\0" * 1000)
        again = []
        monkeypatch.setattr(models, "predict_ab", lambda G, small, *a, **k: again.append(len(small)) or predict(G, small, *a, **k))
        code, err = colorize(clip, out, *lossless, "--skip_existing=True")
        assert code == 0 and ("scenes of an earlier render are finished" in err) == (stop_after > 10), err
        assert sum(again) == (20 if stop_after > 10 else 30), again  # the finished scene is not colorized again
        frames = video.read_frames(out)[0]
        off = {i: (int(np.abs(a.astype(int) - b).max()), int((a != b).any(-1).sum()))  # frame: largest difference, pixels
               for i, (a, b) in enumerate(zip(frames, whole)) if not np.array_equal(a, b)}
        assert len(frames) == 30 and not off, (stop_after, off)
        assert not video.parts_folder(out).exists()  # the pieces are removed once joined
        assert packets(out, "audio") == packets(clip, "audio")


def test_two_processes_share_a_films_scenes_and_the_first_joins_them(release_weights, tmp_path, monkeypatch):
    clip = tmp_path / "clip.mkv"
    make_clip(clip, frames=24, cut_at=8, audio=False, codec="ffv1")
    G = models.load_generator(release_weights)
    video.render(G, clip, tmp_path / "one.mkv", size=64, progress=False)
    colorized = [video.render(G, clip, tmp_path / "two.mkv", size=64, progress=False, share=(1, 2))]  # the second's
    assert not (tmp_path / "two.mkv").exists()  # only the first process joins
    colorized.append(video.render(G, clip, tmp_path / "two.mkv", size=64, progress=False, share=(0, 2)))
    assert colorized == [16, 8]  # scene 2 (16 frames) on the second process, scene 1 (8) on the first
    one, two = video.read_frames(tmp_path / "one.mkv")[0], video.read_frames(tmp_path / "two.mkv")[0]
    assert len(two) == 24 and all(np.array_equal(a, b) for a, b in zip(one, two))


def test_a_join_whose_other_process_never_comes_stops_in_one_line_and_the_rest_resumes(release_weights, tmp_path, monkeypatch):
    clip = tmp_path / "clip.mkv"
    make_clip(clip, frames=24, cut_at=8, audio=False, codec="ffv1")
    (tmp_path / ".two.mkv.parts").mkdir()
    (tmp_path / ".two.mkv.parts" / "notes.txt").write_text("the user's")  # never removed: not the render's own
    G = models.load_generator(release_weights)
    monkeypatch.setattr(video, "STALL_S", 1.5)
    monkeypatch.setattr(video, "WAIT_S", 0.1)
    with pytest.raises(video.VideoError, match=r"scenes 2 never came \(process 1 silent for over 1.5 s.*--skip_existing=True"):
        video.render(G, clip, tmp_path / "two.mkv", size=64, progress=False, share=(0, 2))  # process 1 never started
    assert video.Pieces(tmp_path / "two.mkv", "").folder.is_dir() and not (tmp_path / "two.mkv").exists()
    monkeypatch.setattr(video.Pieces, "done", lambda self, scene: False)  # a broken check: a line, never a hang
    with pytest.raises(video.VideoError, match="never came"):
        video.render(G, clip, tmp_path / "three.mkv", size=64, progress=False)
    monkeypatch.undo()
    assert video.render(G, clip, tmp_path / "two.mkv", size=64, progress=False) == 16  # scene 1 was kept: only scene 2
    assert sorted(p.name for p in (tmp_path / ".two.mkv.parts").iterdir()) == ["notes.txt"]


def test_mkv_keeps_the_inputs_timestamps_despite_the_sounds_priming(colorize, tmp_path):
    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=12, audio=True)  # AAC: its first packet 1024 samples before 0
    assert colorize(clip, tmp_path / "out.mkv")[0] == 0
    with av.open(str(clip)) as a, av.open(str(tmp_path / "out.mkv")) as b:
        times = [[round(float(f.pts * f.time_base), 3) for f in c.decode(video=0)] for c in (a, b)]
    assert times[0] == times[1], times


@pytest.mark.parametrize("keyframes, message", [
    ([{"time": 5.0, "reference": "ref.png"}], "keyframe 1 at time 5 s (frame 60 at 12 fps) is past the end (8 frames"),
    ([{"frame": 2, "reference": "ref.png"}, {"time": "00:00:00.167", "reference": "ref.png"}], "keyframes 1 and 2 are both on frame 2"),
    ([{"frame": 1, "reference": "missing.png"}], "missing.png"),
    ([{"frame": 1}], "has neither points nor a reference"),
    ([{"time": "soon", "reference": "ref.png"}], "is not seconds or HH:MM:SS.mmm"),
])
def test_bad_keyframes_are_one_line_before_the_weights_load(script, tmp_path, monkeypatch, keyframes, message):
    import json

    from conftest import synthetic_rgb

    make_clip(tmp_path / "clip.mp4", frames=8, audio=False)
    Image.fromarray(synthetic_rgb(0)).save(tmp_path / "ref.png")
    (tmp_path / "k.json").write_text(json.dumps({"keyframes": keyframes}))
    monkeypatch.setattr(models, "load_generator", lambda *a, **k: pytest.fail("the weights loaded"))
    code, err = script("colorize.py", str(tmp_path / "clip.mp4"), str(tmp_path / "o.mp4"), "--ckpt=x.pth", f"--hints={tmp_path / 'k.json'}")
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o.mp4").exists()


# ----------------------------------------------------------------------------- a restorer's mistakes and material


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("case", ["reference is an output", "reference is a fifo", "hint file's reference is a fifo", "nan temperature",
                                  "a jpeg named mp4", "keyframes for a photo", "a negative time", "keyframes for an eccv16 model"])
def test_a_restorers_mistakes_are_one_line_before_the_weights_load(script, tmp_path, monkeypatch, release_weights, case):
    import json

    from conftest import synthetic_rgb

    Image.fromarray(synthetic_rgb(0)).save(tmp_path / "gray.png")
    make_clip(tmp_path / "clip.mp4", frames=4, audio=False)
    (tmp_path / "out").mkdir()
    Image.fromarray(synthetic_rgb(1)).save(tmp_path / "out" / "myref.png")
    monkeypatch.setattr(models, "load_generator", lambda *a, **k: pytest.fail("the weights loaded"))
    photo = [str(tmp_path / "gray.png"), str(tmp_path / "o.png")]
    film = [str(tmp_path / "clip.mp4"), str(tmp_path / "o.mp4")]
    args, message = {
        "reference is an output": ([str(tmp_path / "gray.png"), str(tmp_path / "out" / "myref.png"),
                                    f"--reference={tmp_path / 'out' / 'myref.png'}", "--overwrite=True"], "it is one of this job's outputs"),
        "reference is a fifo": ([*photo, f"--reference={tmp_path / 'pipe.png'}"], "not a regular file"),
        "hint file's reference is a fifo": ([*photo, f"--hints={tmp_path / 'h.json'}", "--ckpt=siggraph17"], "not a regular file"),
        "nan temperature": ([*photo, "--reference_temperature=nan"], "--reference_temperature takes a finite number, not 'nan'"),
        "a jpeg named mp4": ([str(tmp_path / "photo.mp4"), str(tmp_path / "o.mp4")], "a picture (jpeg), not a video"),
        "keyframes for a photo": ([*photo, f"--hints={tmp_path / 'k.json'}"], "lists keyframes, which are a film's"),
        "a negative time": ([*film, f"--hints={tmp_path / 'neg.json'}", "--ckpt=siggraph17"], "is not seconds or HH:MM:SS.mmm"),
        "keyframes for an eccv16 model": ([*film, f"--hints={tmp_path / 'k.json'}", f"--ckpt={release_weights}"],
                                          "is an ECCV16 model, which has no hint input: keyframes need"),
    }[case]
    if "fifo" in case:
        fifo(tmp_path / "pipe.png")
        (tmp_path / "h.json").write_text(json.dumps({"reference": "pipe.png"}))
    if case == "a jpeg named mp4":
        Image.fromarray(synthetic_rgb(0)).save(tmp_path / "photo.mp4", "JPEG")
    (tmp_path / "k.json").write_text(json.dumps({"keyframes": [{"frame": 1, "reference": "gray.png"}]}))
    (tmp_path / "neg.json").write_text(json.dumps({"keyframes": [{"time": "-00:00:01", "reference": "gray.png"}]}))
    code, err = script("colorize.py", *args)
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (case, err)
    assert not (tmp_path / "o.png").exists() and Image.open(tmp_path / "out" / "myref.png").size == (64, 48)


def test_a_stopped_dump_is_one_line_and_the_same_command_writes_the_rest(script, tmp_path, monkeypatch):
    make_clip(tmp_path / "clip.mp4", frames=24, cut_at=12, audio=False)
    decoded = video.decoded

    def stop_in_the_second_scene(*a, **k):
        for item in decoded(*a, **k):
            if item[0] == 14:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(video, "decoded", stop_in_the_second_scene)
    code, err = script("colorize.py", str(tmp_path / "clip.mp4"), f"--keyframes={tmp_path / 'keys'}")
    assert code == 128 + signal.SIGINT and "Traceback" not in err and "2 scenes' first frames are in" in err, err
    monkeypatch.setattr(video, "decoded", decoded)
    (tmp_path / "keys" / "00-00-01.000.png").unlink()  # as if the stop had come before it
    code, err = script("colorize.py", str(tmp_path / "clip.mp4"), f"--keyframes={tmp_path / 'keys'}")
    assert code == 0 and "2 scenes (1 new pictures)" in err and "scenes of clip.mp4" in err, err  # its progress shown


def test_a_reference_for_a_film_guides_every_scene(script, siggraph_weights, tmp_path, monkeypatch):
    from conftest import synthetic_rgb

    make_clip(tmp_path / "clip.mp4", frames=12, cut_at=6, audio=False)
    Image.fromarray(synthetic_rgb(7, 48, 64)).save(tmp_path / "ref.png")
    given = spy_hints(monkeypatch)
    code, err = script("colorize.py", str(tmp_path / "clip.mp4"), str(tmp_path / "out.mp4"), f"--ckpt={siggraph_weights}", SMALL,
                       "--runtime=torch", "--reference_weights=random", f"--reference={tmp_path / 'ref.png'}", "--batch_size=4")
    assert code == 0, err
    assert given[0] > 0 and given[6] > 0 and sum(g > 0 for g in given) == 12, given  # each scene's first frame, and on


def test_a_hint_file_with_only_a_reference_is_a_global_transfer_for_any_model_without_hints(script, release_weights, tmp_path):
    import json

    from conftest import synthetic_rgb

    Image.fromarray(synthetic_rgb(0)).save(tmp_path / "gray.png")
    Image.fromarray(synthetic_rgb(5)).save(tmp_path / "ref.png")
    (tmp_path / "h.json").write_text(json.dumps({"reference": "ref.png"}))
    code, err = script("colorize.py", str(tmp_path / "gray.png"), str(tmp_path / "a.png"), f"--ckpt={release_weights}", SMALL,
                       "--runtime=torch", f"--hints={tmp_path / 'h.json'}")
    assert code == 0 and "transferred globally" in err, err
    code, err = script("colorize.py", str(tmp_path / "gray.png"), str(tmp_path / "b.png"), f"--ckpt={release_weights}", SMALL,
                       "--runtime=torch", f"--reference={tmp_path / 'ref.png'}")
    assert code == 0 and np.array_equal(np.asarray(Image.open(tmp_path / "a.png")), np.asarray(Image.open(tmp_path / "b.png")))
