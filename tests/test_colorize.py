"""colorize.py as a user runs it: every kind of input file, folder trees, kept metadata, and each way it must refuse."""

from __future__ import annotations

import dataclasses

import zlib
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms, PngImagePlugin

import data
import media
import models
import weights
from conftest import ROOT, synthetic_rgb

SMALL = "--size=64"  # a 64x64 model input: 16x less compute than 256, the same code


@pytest.fixture
def colorize(script, release_weights):
    """colorize(*args) -> (exit code, stderr), with the random release-format weights unless --ckpt is given."""
    def run(*args: str) -> tuple[int, str]:
        args = tuple(map(str, args))
        extra = [] if any(a.startswith("--ckpt") for a in args) else [f"--ckpt={release_weights}"]
        extra += [] if any(a.startswith("--runtime") for a in args) else ["--runtime=torch"]  # the exact path
        return script("colorize.py", *args, *extra)

    return run


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, tuple[Path, tuple[int, int]]]:
    """One file per awkward kind of input, with the size it displays at."""
    d = tmp_path_factory.mktemp("inputs")
    rgb = Image.fromarray(synthetic_rgb(0, 90, 120))
    files = {}

    def add(name, img, size, **kw):
        img.save(d / name, **kw)
        files[name] = (d / name, size)

    rgba = rgb.copy()
    rgba.putalpha(Image.fromarray(np.tile(np.arange(120, dtype=np.uint8) * 2, (90, 1))))
    add("rgba.png", rgba, (120, 90))
    add("la.png", rgb.convert("LA"), (120, 90))
    add("palette.gif", rgb.convert("P"), (120, 90))
    add("cmyk.jpg", rgb.convert("CMYK"), (120, 90))
    add("gray16.png", Image.fromarray((np.linspace(0, 65535, 90 * 120).reshape(90, 120)).astype(np.uint16)), (120, 90))
    add("tiny.png", Image.new("RGB", (1, 1), (30, 60, 90)), (1, 1))
    add("photo.webp", rgb, (120, 90))
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated by 90 degrees
    add("rotated.jpg", rgb, (90, 120), exif=exif)
    big = np.asarray(Image.fromarray(synthetic_rgb(1, 300, 400)).resize((4000, 3000), Image.BILINEAR))
    add("twelve_mp.jpg", Image.fromarray(big), (4000, 3000), quality=85)
    return files


def test_every_kind_of_input_gives_an_output_of_its_displayed_size(inputs, colorize, tmp_path):
    code, err = colorize(*[f for f, _ in inputs.values()], tmp_path / "out", SMALL)
    assert code == 0, err
    for name, (_, size) in inputs.items():
        out = tmp_path / "out" / (Path(name).stem + (".png" if name.endswith(".gif") else Path(name).suffix))
        assert Image.open(out).size == size, name
    assert Image.open(tmp_path / "out" / "rgba.png").mode == "RGBA"
    L_in = np.asarray(Image.open(inputs["gray16.png"][0]).convert("I")) / 257
    L_out = np.asarray(Image.open(tmp_path / "out" / "gray16.png").convert("L"))
    assert np.abs(L_out.astype(float) - L_in).mean() < 3  # the gray ramp keeps its full 0..255 range


def exif_with(date: str, orientation: int = 1) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "colorgan test camera"
    exif.get_ifd(0x8769)[0x9003] = date  # DateTimeOriginal, in the Exif sub-IFD as cameras write it
    return exif


def test_a_folder_tree_is_mirrored_never_overwritten_and_resumable(colorize, tmp_path):
    src, out = tmp_path / "archive", tmp_path / "colored"
    (src / "a").mkdir(parents=True)
    (src / "b").mkdir()
    photo = Image.fromarray(synthetic_rgb(0, 60, 80))
    photo.save(src / "a" / "x.jpg", exif=exif_with("1957:06:01 12:00:00", orientation=6), icc_profile=media.srgb_profile())
    photo.save(src / "b" / "x.jpg", comment=b"roll 2, Aunt May")
    photo.convert("P").save(src / "x.gif")
    text = PngImagePlugin.PngInfo()
    text.add_text("Description", "the harbour, 1962")
    text.add_itxt("Title", "Hafen \u2013 1962")
    photo.save(src / "x.png", pnginfo=text)
    (src / "b" / "corrupt.jpg").write_bytes((src / "b" / "x.jpg").read_bytes()[:300])

    code, err = colorize(src, out, SMALL, "--batch_size=3")
    assert code == 1 and "corrupt.jpg" in err and "1 of 5 files failed" in err.splitlines()[-1], err
    written = sorted(str(f.relative_to(out)) for f in out.rglob("*"))
    assert written == ["a", "a/x.jpg", "b", "b/x.jpg", "x.gif.png", "x.png"], written  # none lost, nothing half-written
    assert "x.gif -> " in err and "x.gif.png (x.png is another input's output)" in err

    a = Image.open(out / "a" / "x.jpg")
    assert a.size == (60, 80)  # turned upright, so the orientation tag says 1
    exif = a.getexif()
    assert exif.get_ifd(0x8769)[0x9003] == "1957:06:01 12:00:00" and exif.get(0x0112, 1) == 1 and exif[0x010F] == "colorgan test camera"
    assert "srgb" in ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(__import__("io").BytesIO(a.info["icc_profile"]))).lower()
    assert Image.open(out / "b" / "x.jpg").info["comment"] == b"roll 2, Aunt May"
    png = Image.open(out / "x.png")
    assert png.text == {"Description": "the harbour, 1962", "Title": "Hafen \u2013 1962"}

    stamps = {f: f.stat().st_mtime_ns for f in out.rglob("*.*")}
    code, err = colorize(src, out, SMALL)
    assert code == 1 and "already exist: --skip_existing=True does the rest" in err.splitlines()[-1], err
    code, err = colorize(src, out, SMALL, "--skip_existing=True")
    assert "4 outputs exist, 1 to do" in err and code == 1, err  # only the corrupt photo is tried again
    assert {f: f.stat().st_mtime_ns for f in out.rglob("*.*")} == stamps
    code, err = colorize(src / "a", out / "a", SMALL, "--overwrite=True")
    assert code == 0 and (out / "a" / "x.jpg").stat().st_mtime_ns != stamps[out / "a" / "x.jpg"], err


def test_output_folder_inside_the_input_is_not_read_back(colorize, tmp_path, monkeypatch):
    Image.fromarray(synthetic_rgb(0)).save(tmp_path / "p.png")
    assert colorize(tmp_path, tmp_path / "out", SMALL)[0] == 0
    assert colorize(tmp_path, tmp_path / "out", SMALL, "--skip_existing=True")[0] == 0
    assert sorted(str(f.relative_to(tmp_path)) for f in tmp_path.rglob("*.png")) == ["out/p.png", "p.png"]
    (tmp_path / "archive").mkdir()
    Image.fromarray(synthetic_rgb(1)).save(tmp_path / "archive" / "q.png")
    monkeypatch.chdir(tmp_path)  # the same with relative paths, as a user types them
    for _ in range(2):
        assert colorize("archive", "archive/out", SMALL, "--skip_existing=True")[0] == 0
    assert sorted(str(f.relative_to(tmp_path)) for f in (tmp_path / "archive").rglob("*.png")) == ["archive/out/q.png", "archive/q.png"]


def test_temp_names_are_unique_and_never_a_users_file(tmp_path):
    (tmp_path / ".p.tmp.png").write_bytes(b"a user's file of the old fixed temp name")
    names = {weights.temp_beside(tmp_path / "p.png") for _ in range(100)}
    assert len(names) == 100 and all(n.suffix == ".png" and n.parent == tmp_path for n in names)
    media.save(Image.fromarray(synthetic_rgb(0)), tmp_path / "p.png")
    assert (tmp_path / ".p.tmp.png").read_bytes() == b"a user's file of the old fixed temp name"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".p.tmp.png", "p.png"]


def test_processes_share_the_files_without_overlap(colorize, tmp_path, monkeypatch):
    for i in range(5):
        Image.fromarray(synthetic_rgb(i)).save(tmp_path / f"p{i}.png")
    seen = []
    for rank in (0, 1):  # one after the other here; at once under accelerate launch: each checks only its own files
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        before = set((tmp_path / "out").rglob("*.png"))
        assert colorize(tmp_path, tmp_path / "out", SMALL)[0] == 0
        seen.append(set((tmp_path / "out").rglob("*.png")) - before)
    assert len(seen[0]) == 3 and len(seen[1]) == 2 and not seen[0] & seen[1]


def test_the_pipeline_gives_the_serial_loops_pixels_with_bounded_memory(release_weights, tmp_path, monkeypatch):
    G = models.load_generator(release_weights)
    jobs = []
    for i in range(7):
        Image.fromarray(synthetic_rgb(i, 40 + 8 * i, 90 - 6 * i)).save(tmp_path / f"p{i}.png")
        jobs.append(media.Job(tmp_path / f"p{i}.png", tmp_path / "out" / f"p{i}.png"))
    (tmp_path / "p3.png").write_bytes(b"broken")
    live, most = [0], [0]
    load, save = data.load_image, media.save

    def counted_load(*a, **k):
        live[0] += 1
        most[0] = max(most[0], live[0])
        return load(*a, **k)

    def counted_save(*a, **k):
        save(*a, **k)
        live[0] -= 1

    monkeypatch.setattr(data, "load_image", counted_load)
    monkeypatch.setattr(media, "save", counted_save)
    results = list(media.colorize_files(G, jobs, size=64, batch_size=2, workers=2))
    assert sorted((job.src, e is None) for job, e in results) == [(job.src, i != 3) for i, job in enumerate(jobs)]
    assert most[0] <= 2 * 2 + 2  # photos decoded and not yet written, whatever the folder's length
    for src, dst, *_ in (dataclasses.astuple(job) for job in jobs[:3] + jobs[4:]):
        expected = np.asarray(models.colorize(G, load(src), size=64), dtype=int)
        # a batch of 2 and a batch of 1 differ by float rounding (ab within 2e-3), so a pixel may round one level apart
        diff = np.abs(np.asarray(Image.open(dst), dtype=int) - expected)
        assert diff.max() <= 1 and diff.mean() < 0.01, (src, diff.max(), diff.mean())


def refused(result: tuple[int, str], out: Path, message: str) -> None:
    code, err = result
    assert code != 0 and "Traceback" not in err, err
    assert message in err.strip().splitlines()[-1], err
    assert not out.exists() and not list(out.parent.glob(".*tmp*"))


def test_bad_inputs_are_refused_in_one_line_without_output(colorize, tmp_path):
    jpeg = tmp_path / "ok.jpg"
    Image.fromarray(synthetic_rgb(0, 200, 200)).save(jpeg)
    raw = jpeg.read_bytes()
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello")
    (tmp_path / "truncated.jpg").write_bytes(raw[: len(raw) // 2])
    png = (tmp_path / "one.png")
    Image.new("L", (1, 1)).save(png)
    data = png.read_bytes()
    ihdr = b"IHDR" + (60000).to_bytes(4, "big") * 2 + data[24:29]
    (tmp_path / "bomb.png").write_bytes(data[:12] + ihdr + zlib.crc32(ihdr).to_bytes(4, "big") + data[33:])
    (tmp_path / "corrupt.pt").write_bytes(b"\x00" * 100)
    out = tmp_path / "out.png"
    for name, message in (("empty.jpg", "not an image"), ("text.jpg", "not an image"), ("truncated.jpg", "cannot decode"),
                          ("bomb.png", "over the limit"), ("missing.jpg", "no such file")):
        refused(colorize(tmp_path / name, out, SMALL), out, message)
    refused(colorize(jpeg, out, f"--ckpt={tmp_path / 'corrupt.pt'}"), out, "not a readable checkpoint")
    refused(colorize(jpeg, jpeg), jpeg.with_name("never"), "refusing to overwrite")
    assert jpeg.read_bytes() == raw
    Image.new("RGB", (4, 4)).save(out)
    refused(colorize(jpeg, out), tmp_path / "never", "already exist")  # a photo is never replaced unasked


def test_files_that_are_no_photo_are_refused_before_any_weights_load(colorize, tmp_path, monkeypatch):
    (tmp_path / "text.png").write_text("not a photo")
    Image.fromarray(synthetic_rgb(0)).save(tmp_path / "ok.png")
    monkeypatch.setattr(models, "load_generator", lambda *a: pytest.fail("weights loaded before the check"))
    refused(colorize(tmp_path / "text.png", tmp_path / "out.png"), tmp_path / "out.png", "text.png: not an image file")
    refused(colorize(tmp_path / "missing.png", tmp_path / "out.png"), tmp_path / "out.png", "missing.png: no such file")
    (tmp_path / "out").mkdir()
    Image.fromarray(synthetic_rgb(0)).save(tmp_path / "out" / "ok.png")
    code, err = colorize(tmp_path / "ok.png", tmp_path / "out" / "ok.png", "--skip_existing=True")  # done: no model needed
    assert code == 0 and "nothing to do" in err, err


@pytest.mark.parametrize("args, message", [
    (["--temperature=0"], "--temperature=0.0: must be in (0, 1]"),
    (["--temperature=1.5"], "must be in (0, 1]"),
    (["--device=cuda"], "torch sees 0 CUDA GPUs here"),
    (["--device=tpu9"], "not a device"),
    (["--format=gif"], "--format=gif: use one of png, jpg, webp, tiff"),
    (["--skip_existing=True", "--overwrite=True"], "contradict"),
    (["EXTRA"], "several inputs need an output folder, not a file name"),
    (["--vividness=1e30"], "--vividness=1e+30: must be from 0 (gray) to 4"),
    (["--vividness=-1"], "--vividness=-1: must be from 0 (gray) to 4"),
    (["--vividness=nan"], "--vividness takes a finite number, not 'nan'"),
    (["--samples=abc"], "--samples takes a whole number, not 'abc'"),
    (["--sample=4"], "unknown option --sample: did you mean --samples?"),
    (["--seed=18446744073709551616", "--samples=2"], "--seed=18446744073709551616: must be from 0 to 4294967295"),
    (["--ckpt=gray", "--samples=2"], "the gray model (ab = 0) has no colour distribution to sample"),
    (["--batch_size=0"], "--batch_size=0: must be at least 1"),
])
def test_options_are_checked_before_weights_load(colorize, tmp_path, monkeypatch, args, message):
    if torch.cuda.is_available() and "cuda" in args[0]:
        pytest.skip("this machine has a GPU")
    jpeg = tmp_path / "in.jpg"
    Image.fromarray(synthetic_rgb(0)).save(jpeg)
    monkeypatch.setattr(models, "load_generator", lambda *a: pytest.fail("weights loaded before the check"))
    options = [a for a in args if a.startswith("--")]
    inputs = [jpeg, jpeg] if "EXTRA" in args else [jpeg]
    refused(colorize(*inputs, tmp_path / "out.png", *options), tmp_path / "out.png", message)


def test_offline_default_weights_say_where_to_put_the_file(colorize, tmp_path, monkeypatch):
    jpeg = tmp_path / "ok.jpg"
    Image.fromarray(synthetic_rgb(0)).save(jpeg)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    monkeypatch.setenv("COLORGAN_ECCV16_URL", "http://127.0.0.1:9/colorization_release_v2-9b330a0b.pth")
    where = str(tmp_path / "th" / "hub" / "checkpoints" / "colorization_release_v2-9b330a0b.pth")
    refused(colorize(jpeg, tmp_path / "out.png", "--ckpt=eccv16"), tmp_path / "out.png", f"put that file at {where}")


def test_the_readme_sample_photo_colorizes(colorize, tmp_path):
    code, err = colorize(ROOT / "assets" / "camera.png", tmp_path / "camera-color.png")
    assert code == 0, err
    out = np.asarray(Image.open(tmp_path / "camera-color.png"))
    assert out.shape == (512, 512, 3) and np.ptp(out.astype(int), axis=2).max() > 0  # colour where there was none


def test_newcomers_mistakes_are_one_line_that_says_what_to_do(colorize, tmp_path, release_weights):
    (tmp_path / "dir").mkdir()
    Image.fromarray(synthetic_rgb(0)).save(tmp_path / "dir" / "p.png")
    frames = [Image.fromarray(synthetic_rgb(i)) for i in range(3)]
    frames[0].save(tmp_path / "pages.tif", save_all=True, append_images=frames[1:])
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    cases = [((tmp_path / "dir", tmp_path / "dir"), "the output folder is the input folder"),
             ((tmp_path / "dir" / "p.png", tmp_path / "o.png", "--ckpt", release_weights), "--ckpt needs a value: --ckpt=VALUE"),
             ((tmp_path / "dir" / "p.png", tmp_path / "o.png", f"--ckpt={tmp_path / 'model.onnx'}"), "give the folder export.py wrote"),
             ((tmp_path / "pages.tif", tmp_path / "o.tif"), "holds 3 pages or frames"),
             ((tmp_path / "anim.gif", tmp_path / "o.png"), "holds 3 pages or frames")]
    for args, message in cases:
        code, err = colorize(*args)
        assert code != 0 and "Traceback" not in err and message in err.strip().splitlines()[-1], (args, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["anim.gif", "dir", "model.onnx", "pages.tif"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_folder_job_says_how_far_it_got_and_how_to_finish(colorize, tmp_path, monkeypatch, signum):
    for i in range(5):
        Image.fromarray(synthetic_rgb(i)).save(tmp_path / f"p{i}.png")
    save, saved = media.save, []

    def save_then_signal(*a, **k):
        save(*a, **k)
        saved.append(a[1])
        if len(saved) == 2:
            os.kill(os.getpid(), signum)

    monkeypatch.setattr(media, "save", save_then_signal)
    code, err = colorize(tmp_path, tmp_path / "out", SMALL, "--workers=0", "--batch_size=1")
    last = err.strip().splitlines()[-1]
    assert code == 128 + signum and "Traceback" not in err and err.count("colorize.py: stopped") == 1, err
    assert err.count("colorize.py:") == 2 and "colorize.py: colorizing with" in err  # and the line naming the model
    assert f"stopped by {signal.Signals(signum).name}: 2 of 5 outputs written" in last and "--skip_existing=True" in last, last
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["p0.png", "p1.png"]  # no temp file left
    saved.clear()  # stopped again while resuming: the count is of the whole job, not of this run's 3
    code, err = colorize(tmp_path, tmp_path / "out", SMALL, "--workers=0", "--batch_size=1", "--skip_existing=True")
    assert code == 128 + signum and "4 of 5 outputs written" in err.strip().splitlines()[-1], err
    monkeypatch.setattr(media, "save", save)
    assert colorize(tmp_path, tmp_path / "out", SMALL, "--skip_existing=True")[0] == 0
    assert len(list((tmp_path / "out").iterdir())) == 5


def test_symlinked_folders_are_followed_once_and_dpi_is_kept(colorize, tmp_path):
    (tmp_path / "archive" / "roll1").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    Image.fromarray(synthetic_rgb(0)).save(tmp_path / "archive" / "roll1" / "a.jpg", dpi=(600, 600))
    Image.fromarray(synthetic_rgb(1)).save(tmp_path / "elsewhere" / "b.png", dpi=(300, 300))
    (tmp_path / "archive" / "linked").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "archive" / "roll1" / "loop").symlink_to(tmp_path / "archive")  # a link back up: no endless walk
    assert colorize(tmp_path / "archive", tmp_path / "out", SMALL)[0] == 0
    written = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert written == ["linked/b.png", "roll1/a.jpg"], written
    assert Image.open(tmp_path / "out" / "roll1" / "a.jpg").info["dpi"] == (600, 600)
    assert [round(d) for d in Image.open(tmp_path / "out" / "linked" / "b.png").info["dpi"]] == [300, 300]


def read_png16(path) -> np.ndarray:
    """A 16-bit RGB PNG's pixels, decoded here (zlib, then PNG's per-row filters 0 and 2): PIL reads them as 8 bits."""
    raw, pos, idat = Path(path).read_bytes(), 8, b""
    while pos < len(raw):
        n, kind = int.from_bytes(raw[pos:pos + 4], "big"), raw[pos + 4:pos + 8]
        body = raw[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, ctype = int.from_bytes(body[:4], "big"), int.from_bytes(body[4:8], "big"), body[8], body[9]
            assert (depth, ctype) == (16, 2)
        idat += body if kind == b"IDAT" else b""
        pos += 12 + n
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + w * 6)
    assert set(rows[:, 0]) <= {0, 2}
    out = rows[:, 1:].copy()
    for y in range(1, h):
        if rows[y, 0] == 2:
            out[y] += out[y - 1]  # uint8 arithmetic wraps as the filter does
    return out.view(">u2").reshape(h, w, 3).astype(np.uint16)


def test_a_16_bit_scan_comes_back_in_16_bits_with_its_full_precision_l(colorize, tmp_path):
    import tifffile
    from skimage import color

    gray = (np.linspace(0, 65535, 160)[None, :] * np.linspace(0.3, 1, 120)[:, None]).round().astype(np.uint16)
    Image.fromarray(gray).save(tmp_path / "scan.tif")
    Image.fromarray(gray).save(tmp_path / "scan.png")
    for name, out in (("scan.tif", "out.tif"), ("scan.png", "out.png"), ("scan.png", "out.jpg")):
        code, err = colorize(tmp_path / name, tmp_path / out, SMALL)
        assert code == 0, err
    tif, png = tifffile.imread(tmp_path / "out.tif"), read_png16(tmp_path / "out.png")
    assert tif.dtype == np.uint16 and tif.shape == (120, 160, 3) and np.array_equal(tif, png)
    assert len(np.unique(tif[..., 1])) > 1000  # 16 bits, not 256 levels
    L_in = color.rgb2lab(np.repeat(gray[..., None] / 65535, 3, -1))[..., 0]
    L_out = color.rgb2lab(tif / 65535)[..., 0]
    inside = (tif > 0).all(-1) & (tif < 65535).all(-1)  # where no channel clipped (clipping moves L)
    assert inside.mean() > 0.5
    assert np.abs(L_out - L_in)[inside].mean() < 0.02  # an 8-bit L would be off by ~0.1 on average
    assert np.abs(L_out - L_in)[inside].mean() > 0 and np.abs(tif.astype(int)[..., 0] - tif[..., 2]).max() > 256  # coloured
    eight = np.asarray(Image.open(tmp_path / "out.jpg"))
    assert eight.dtype == np.uint8 and np.abs(eight.astype(int) - (tif / 257).round()).mean() < 3  # JPEG holds 8 bits


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_a_16_bit_rgb_tiff_comes_back_in_16_bits_upright(colorize, tmp_path, orientation):
    import tifffile
    from skimage import color

    y, x = np.mgrid[0:60, 0:80] / 80
    rgb = np.stack([0.2 + 0.6 * x, 0.25 + 0.5 * y, 0.3 + 0.4 * x * y], -1)  # smooth: thousands of 16-bit levels
    tifffile.imwrite(tmp_path / "scan.tif", (rgb * 65535).round().astype(np.uint16), photometric="rgb",
                     extratags=[(274, "H", 1, orientation, False)])  # the TIFF's own orientation tag
    upright = np.asarray(data.load_image(tmp_path / "scan.tif"))  # PIL's upright 8-bit reading
    code, err = colorize(tmp_path / "scan.tif", tmp_path / "out.tif", SMALL)
    assert code == 0, err
    out = tifffile.imread(tmp_path / "out.tif")
    assert out.dtype == np.uint16 and out.shape[:2] == upright.shape[:2] and len(np.unique(out[..., 0])) > 1000
    L_in = color.rgb2lab(upright / 255)[..., 0]
    L_out = color.rgb2lab(out / 65535)[..., 0]
    inside = (out > 0).all(-1) & (out < 65535).all(-1)
    assert inside.mean() > 0.5 and np.abs(L_out - L_in)[inside].mean() < 0.3  # the same picture, the same way up
    deep = np.rot90(rgb, {1: 0, 3: 2, 6: -1, 8: 1}[orientation])  # the 16-bit original, turned as its tag says
    assert np.abs(L_out - color.rgb2lab(deep)[..., 0])[inside].mean() < 0.02  # and its L from all 16 bits


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]  # x0 y0 dx dy


def png16(rgb: np.ndarray, interlace: bool, orientation: int) -> bytes:
    """A 16-bit RGB PNG encoded here, not by data.png_bytes: rows cycle through all five of PNG's filters, Adam7
    interlacing if asked, the orientation in an eXIf chunk."""
    def rows(a: np.ndarray) -> bytes:
        a = a.astype(">u2").view(np.uint8).reshape(a.shape[0], -1).astype(int)
        out = []
        for y, raw in enumerate(a):
            up = a[y - 1] if y else np.zeros_like(raw)
            left, up_left = (np.concatenate([np.zeros(6, int), v[:-6]]) for v in (raw, up))  # 6 bytes a pixel
            p = left + up - up_left
            paeth = np.where((abs(p - left) <= abs(p - up)) & (abs(p - left) <= abs(p - up_left)), left,
                             np.where(abs(p - up) <= abs(p - up_left), up, up_left))
            kind = y % 5
            predicted = [0, left, up, (left + up) // 2, paeth][kind]
            out.append(bytes([kind]) + ((raw - predicted) % 256).astype(np.uint8).tobytes())
        return b"".join(out)

    passes = [rgb[y0::dy, x0::dx] for x0, y0, dx, dy in ADAM7] if interlace else [rgb]
    pixels = b"".join(rows(p) for p in passes if p.size)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    exif = Image.Exif()
    exif[274] = orientation
    header = rgb.shape[1].to_bytes(4, "big") + rgb.shape[0].to_bytes(4, "big") + bytes([16, 2, 0, 0, int(interlace)])
    return b"".join([b"\x89PNG\r\n\x1a\n", chunk(b"IHDR", header), chunk(b"eXIf", exif.tobytes().removeprefix(b"Exif\0\0")),
                     chunk(b"IDAT", zlib.compress(pixels)), chunk(b"IEND", b"")])


@pytest.mark.parametrize("interlace,orientation", [(False, 1), (True, 6)])
def test_a_16_bit_rgb_png_is_read_in_all_its_bits_and_comes_back_in_16(colorize, tmp_path, interlace, orientation):
    from skimage import color

    y, x = np.mgrid[0:45, 0:70] / 70
    smooth = np.stack([0.2 + 0.6 * x, 0.25 + 0.5 * y, 0.3 + 0.4 * x * y], -1) * 65535
    rgb = (smooth + np.random.default_rng(0).integers(0, 256, smooth.shape)).round().astype(np.uint16)  # every low bit
    (tmp_path / "scan.png").write_bytes(png16(rgb, interlace, orientation))
    upright = np.rot90(rgb, {1: 0, 6: -1}[orientation])
    img = data.load_image(tmp_path / "scan.png", keep_16bit=True)
    assert np.array_equal(np.asarray(img), upright >> 8)  # PIL's own 8-bit reading: the encoder above is a PNG
    assert np.array_equal(data.deep16(img), upright)  # all 16 bits, the same way up
    code, err = colorize(tmp_path / "scan.png", tmp_path / "out.png", SMALL)
    assert code == 0, err
    out = read_png16(tmp_path / "out.png")
    assert out.shape == upright.shape and len(np.unique(out[..., 0])) > 1000
    inside = (out > 0).all(-1) & (out < 65535).all(-1)
    L_in, L_out = color.rgb2lab(upright / 65535)[..., 0], color.rgb2lab(out / 65535)[..., 0]
    assert inside.mean() > 0.5 and np.abs(L_out - L_in)[inside].mean() < 0.02  # L from all 16 bits


def test_an_output_folder_that_cannot_be_written_is_found_before_any_work(colorize, tmp_path, monkeypatch):
    import models

    for i in range(2):
        Image.fromarray(synthetic_rgb(i)).save(tmp_path / f"p{i}.png")
    (tmp_path / "file").write_text("")
    monkeypatch.setattr(models, "load_generator", lambda *a, **k: pytest.fail("the weights loaded"))
    code, err = colorize(tmp_path / "p0.png", tmp_path / "p1.png", tmp_path / "file" / "out")
    assert code == 1 and "file: cannot write under it (not a folder)" in err and len(err.strip().splitlines()) == 1, err
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == tmp_path / "ro" else real_access(p, mode))
    (tmp_path / "ro").mkdir()  # read-only (root ignores the mode bits, so the test says it through os.access)
    code, err = colorize(tmp_path / "p0.png", tmp_path / "p1.png", tmp_path / "ro" / "out")
    assert code == 1 and "ro: cannot write there: nothing was done" in err, err
