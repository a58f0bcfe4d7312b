"""colorize.py as a user runs it: every kind of input file, folders, and each way it must refuse."""

from __future__ import annotations

import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import synthetic_rgb

ROOT = Path(__file__).resolve().parents[1]


def colorize(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "colorize.py"), *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})


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


def test_every_kind_of_input_gives_an_output_of_its_displayed_size(inputs, release_weights, tmp_path):
    p = colorize(*[str(f) for f, _ in inputs.values()], str(tmp_path / "out"), f"--ckpt={release_weights}")
    assert p.returncode == 0, p.stderr
    for name, (_, size) in inputs.items():
        out = tmp_path / "out" / (Path(name).stem + (".png" if name.endswith(".gif") else Path(name).suffix))
        assert Image.open(out).size == size, name
    assert Image.open(tmp_path / "out" / "rgba.png").mode == "RGBA"
    L_in = np.asarray(Image.open(inputs["gray16.png"][0]).convert("I")) / 257
    L_out = np.asarray(Image.open(tmp_path / "out" / "gray16.png").convert("L"))
    assert np.abs(L_out.astype(float) - L_in).mean() < 3  # the gray ramp keeps its full 0..255 range


def test_folder_in_folder_out(release_weights, tmp_path):
    (tmp_path / "in").mkdir()
    for i in range(3):
        Image.fromarray(synthetic_rgb(i)).save(tmp_path / "in" / f"p{i}.jpg")
    p = colorize(str(tmp_path / "in"), str(tmp_path / "out"), f"--ckpt={release_weights}")
    assert p.returncode == 0, p.stderr
    assert sorted(f.name for f in (tmp_path / "out").iterdir()) == ["p0.jpg", "p1.jpg", "p2.jpg"]


def refused(p: subprocess.CompletedProcess, out: Path, message: str, lines: int = 1) -> None:
    assert p.returncode != 0 and "Traceback" not in p.stderr, p.stderr
    assert message in p.stderr.strip().splitlines()[-1] and len(p.stderr.strip().splitlines()) == lines, p.stderr
    assert not out.exists() and not list(out.parent.glob(".*tmp*"))


def test_bad_inputs_are_refused_in_one_line_without_output(release_weights, tmp_path):
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
    w = f"--ckpt={release_weights}"
    for name, message in (("empty.jpg", "not an image"), ("text.jpg", "not an image"), ("truncated.jpg", "cannot decode"),
                          ("bomb.png", "over the limit"), ("missing.jpg", "no such file")):
        refused(colorize(str(tmp_path / name), str(out), w), out, message)
    refused(colorize(str(jpeg), str(out), f"--ckpt={tmp_path / 'corrupt.pt'}"), out, "not a readable checkpoint")
    refused(colorize(str(jpeg), str(jpeg), w), jpeg.with_name("never"), "refusing to overwrite")
    assert jpeg.read_bytes() == raw


def test_offline_default_weights_say_where_to_put_the_file(tmp_path):
    jpeg = tmp_path / "ok.jpg"
    Image.fromarray(synthetic_rgb(0)).save(jpeg)
    env = {"TORCH_HOME": str(tmp_path / "th"), "COLORGAN_ECCV16_URL": "http://127.0.0.1:9/colorization_release_v2-9b330a0b.pth"}
    p = colorize(str(jpeg), str(tmp_path / "out.png"), env=env)
    where = str(tmp_path / "th" / "hub" / "checkpoints" / "colorization_release_v2-9b330a0b.pth")
    refused(p, tmp_path / "out.png", f"put that file at {where}", lines=2)  # after the "downloading ..." notice


def test_the_readme_sample_photo_colorizes(release_weights, tmp_path):
    p = colorize(str(ROOT / "assets" / "camera.png"), str(tmp_path / "camera-color.png"), f"--ckpt={release_weights}")
    assert p.returncode == 0, p.stderr
    out = np.asarray(Image.open(tmp_path / "camera-color.png"))
    assert out.shape == (512, 512, 3) and np.ptp(out.astype(int), axis=2).max() > 0  # colour where there was none
