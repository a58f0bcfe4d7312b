"""data.py: Lab conversion against scikit-image, the image loader, the datasets."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import color

import data
from conftest import synthetic_rgb


def as_batch(colors: np.ndarray) -> torch.Tensor:
    """(K,3) -> (1,3,K,1) tensor."""
    return torch.from_numpy(colors).T.reshape(1, 3, -1, 1)


def from_batch(t: torch.Tensor) -> np.ndarray:
    return t[0, :, :, 0].T.double().numpy()


def test_rgb_to_lab_matches_skimage_on_a_million_colours_and_the_gray_ramp():
    rng = np.random.default_rng(0)
    colors = np.concatenate([rng.integers(0, 256, (1_000_000, 3)), np.repeat(np.arange(256)[:, None], 3, 1)]).astype(np.uint8)
    ref = color.rgb2lab(colors[None] / 255.0)[0]
    lab = from_batch(data.rgb_to_lab(as_batch(colors).float() / 255))
    # the README's figures (measured: 1.8e-5 and 7.5e-5); the white point off in its fourth digit moves ab by ~1e-2
    assert np.abs(lab[:, 0] - ref[:, 0]).max() <= 2e-5
    assert np.abs(lab[:, 1:] - ref[:, 1:]).max() <= 8e-5
    L8, ab8 = data.uint8_to_lab(as_batch(colors))
    assert np.abs(from_batch(torch.cat([L8, ab8], 1)) - ref).max() <= 8e-5
    assert np.abs(from_batch(data.uint8_to_l(as_batch(colors)))[:, 0] - ref[:, 0]).max() <= 2e-5
    gray = lab[-256:]
    assert np.abs(gray[:, 1:]).max() < 0.01  # neutral stays neutral


def test_lab_to_rgb_matches_skimage_and_round_trips():
    rng = np.random.default_rng(1)
    rgb = rng.uniform(0, 1, (200_000, 3))
    lab = color.rgb2lab(rgb[None])[0]
    back = from_batch(data.lab_to_rgb(as_batch(lab.astype(np.float32))))
    assert np.abs(back - color.lab2rgb(lab[None])[0]).max() <= 1e-5  # measured 5e-6
    assert np.abs(back - rgb).max() <= 1e-5


def test_out_of_gamut_lab_is_finite_clipped_and_matches_skimage():
    lab = np.array([[100, 127, 127], [0, -128, -128], [50, 200, -200], [-10, 0, 0], [120, 0, 0], [30, 0, 300]], np.float64)
    rgb = data.lab_to_rgb(as_batch(lab.astype(np.float32)))
    assert torch.isfinite(rgb).all() and rgb.min() >= 0 and rgb.max() <= 1
    with pytest.warns(UserWarning):  # skimage warns about negative Z
        ref = color.lab2rgb(lab[None])[0]
    assert np.abs(from_batch(rgb) - ref).max() <= 0.002


def test_conversions_are_differentiable_with_finite_gradients_everywhere():
    rgb = torch.tensor([0.0, 0.001, 0.04045, 0.5, 1.0]).repeat(3, 1).T.reshape(1, 3, -1, 1).requires_grad_()
    data.rgb_to_lab(rgb).sum().backward()
    assert torch.isfinite(rgb.grad).all()
    lab = torch.tensor([[0.0, 0, 0], [50, 20, -30], [100, 0, 0], [10, 300, 300]]).T.reshape(1, 3, -1, 1).requires_grad_()
    data.lab_to_rgb(lab).sum().backward()
    assert torch.isfinite(lab.grad).all() and lab.grad.abs().sum() > 0


def test_has_chroma_flags_gray_images():
    gray = torch.full((1, 3, 8, 8), 128, dtype=torch.uint8)
    colour = torch.from_numpy(synthetic_rgb(0, 8, 8)).permute(2, 0, 1)[None]
    _, ab = data.uint8_to_lab(torch.cat([gray, colour]))
    assert data.has_chroma(ab).tolist() == [False, True]


# ----------------------------------------------------------------------------- loader


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def test_loader_reads_every_mode_as_upright_uint8_rgb():
    rgb = Image.fromarray(synthetic_rgb(0, 40, 60))
    rgba = rgb.copy()
    rgba.putalpha(128)
    gray16 = Image.fromarray((np.linspace(0, 65535, 40 * 60).reshape(40, 60)).astype(np.uint16))
    cases = {
        "rgba": encode(rgba, "PNG"), "la": encode(rgb.convert("LA"), "PNG"), "p": encode(rgb.convert("P"), "GIF"),
        "cmyk": encode(rgb.convert("CMYK"), "JPEG"), "webp": encode(rgb, "WEBP"), "gray16": encode(gray16, "PNG"),
    }
    for name, raw in cases.items():
        img = data.load_image(raw)
        assert img.mode == "RGB" and img.size == (60, 40), name
    assert data.load_image(cases["rgba"], keep_alpha=True).mode == "RGBA"
    ramp = np.asarray(data.load_image(cases["gray16"]))[..., 0]
    assert ramp.min() == 0 and ramp.max() == 255  # scaled from 16 bits, not clipped at 255
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    assert data.load_image(encode(rgb, "JPEG", exif=exif)).size == (40, 60)


@pytest.mark.parametrize("raw, message", [
    (b"", "not an image"), (b"hello, I am text", "not an image"),
])
def test_loader_refuses_non_images(raw, message):
    with pytest.raises(data.ImageError, match=message):
        data.load_image(raw)


def test_an_eps_named_png_never_reaches_ghostscript(tmp_path, monkeypatch):
    from PIL import EpsImagePlugin

    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n0 0 moveto 8 8 lineto stroke\nshowpage\n%%EOF\n"
    assert Image.open(io.BytesIO(eps)).format == "EPS"  # what PIL makes of it when nothing restricts it
    called = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: called.append(a))
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", lambda self: called.append(self))
    (tmp_path / "x.png").write_bytes(eps)
    for src in (tmp_path / "x.png", eps):
        with pytest.raises(data.ImageError, match="not an image file"):
            data.load_image(src)
    assert not called


def test_loader_refuses_truncated_missing_and_huge(tmp_path):
    jpeg = encode(Image.fromarray(synthetic_rgb(0, 200, 200)), "JPEG")
    with pytest.raises(data.ImageError, match="cannot decode"):
        data.load_image(jpeg[: len(jpeg) // 2])
    with pytest.raises(data.ImageError, match="no such file"):
        data.load_image(tmp_path / "missing.png")
    png = encode(Image.new("L", (1, 1)), "PNG")
    ihdr = b"IHDR" + (60000).to_bytes(4, "big") * 2 + png[24:29]  # claims 60000 x 60000 = 3.6 gigapixels
    big = png[:12] + ihdr + zlib.crc32(ihdr).to_bytes(4, "big") + png[33:]
    with pytest.raises(data.ImageError, match="over the limit"):
        data.load_image(big)


def png_chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """(type, body) of each chunk, every CRC checked."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, i = [], 8
    while i < len(png):
        n, kind = int.from_bytes(png[i:i + 4], "big"), png[i + 4:i + 8]
        body = png[i + 8:i + 8 + n]
        assert int.from_bytes(png[i + 8 + n:i + 12 + n], "big") == zlib.crc32(kind + body)
        chunks.append((kind, body))
        i += 12 + n
    return chunks


@pytest.mark.parametrize("mode, shape", [("RGB", (1100, 700, 3)), ("RGBA", (7, 5, 4)), ("L", (1, 1)), ("LA", (33, 2, 2))])
def test_png_bytes_decode_to_the_same_pixels(mode, shape):
    pixels = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    png = data.png_bytes(Image.fromarray(pixels, mode))
    back = Image.open(io.BytesIO(png))
    assert back.mode == mode and np.array_equal(np.asarray(back), pixels)
    chunks = png_chunks(png)
    assert [k for k, _ in chunks][0] == b"IHDR" and chunks[-1] == (b"IEND", b"")
    # the parallel bands form one valid zlib stream (zlib checks the Adler-32) of filtered rows
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    assert len(raw) == shape[0] * (1 + pixels[0].size)
    if mode == "RGB":  # 2 MB of rows: deflated in several bands
        assert sum(kind == b"IDAT" for kind, _ in chunks) > 1


def test_png_bytes_are_no_larger_than_pils_on_a_photo():
    photo = Image.fromarray(synthetic_rgb(0, 600, 800))
    buf = io.BytesIO()
    photo.save(buf, "PNG", compress_level=3)
    assert len(data.png_bytes(photo)) <= 1.05 * buf.tell()


# ----------------------------------------------------------------------------- datasets


def test_folder_dataset_uses_parent_folders_as_classes(photo_dir):
    ds = data.make_dataset(str(photo_dir), "validation", 32, train=False)
    assert len(ds) == 8 and ds.classes == ["cat", "dog"]
    x, label, bad = ds[0]  # sorted: cat/img1.png first
    assert x.dtype == torch.uint8 and x.shape == (3, 32, 32) and ds.classes[label] == "cat"
    expected = np.asarray(Image.open(photo_dir / "cat" / "img1.png").convert("RGB").resize((32, 32), Image.BICUBIC))
    assert torch.equal(x, torch.from_numpy(expected).permute(2, 0, 1))


def test_train_augmentation_depends_only_on_seed_epoch_and_index(photo_dir):
    ds = data.make_dataset(str(photo_dir), "train", 32, train=True, seed=3)
    a, b = ds[0][0], ds[0][0]
    ds.epoch = 1
    c = ds[0][0]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_split_folders_and_local_hf_datasets(tmp_path, photo_dir):
    import datasets

    split_root = tmp_path / "split"
    split_root.mkdir()
    for split in ("train", "val"):
        (split_root / split).symlink_to(photo_dir, target_is_directory=True)
    assert len(data.make_dataset(str(split_root), "validation", 16, train=False)) == 8

    files = sorted(photo_dir.rglob("*.png"))
    hf = datasets.Dataset.from_dict({"image": [str(p) for p in files], "label": [i % 2 for i in range(8)]},
                                    features=datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])}))
    hf.to_parquet(tmp_path / "train.parquet")
    datasets.DatasetDict({"validation": hf}).save_to_disk(tmp_path / "saved")
    for source in (tmp_path / "train.parquet", tmp_path / "saved"):
        ds = data.make_dataset(str(source), "validation", 16, train=False)
        x, label, _ = ds[3]
        assert len(ds) == 8 and x.shape == (3, 16, 16) and label == 1


def test_bad_data_paths_are_one_line_errors(tmp_path, monkeypatch):
    import datasets
    import huggingface_hub

    # both libraries read the variable at import: offline is set where they look, so the Hub is never asked
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(data.DataError, match="no images"):
        data.make_dataset(str(tmp_path / "empty"), "train", 16, train=True)
    with pytest.raises(data.DataError, match="no such file"):
        data.make_dataset(str(tmp_path / "nothing"), "train", 16, train=True)
    with pytest.raises(data.DataError, match="cannot load"):
        data.make_dataset("nobody/no-such-dataset", "train", 16, train=True)


def test_center_crop_is_the_central_square_resized():
    img = Image.fromarray(synthetic_rgb(3, 40, 70))
    want = img.crop((15, 0, 55, 40)).resize((16, 16), Image.BICUBIC)
    assert np.array_equal(np.asarray(data.resize_square(img, 16, "center_crop")), np.asarray(want))
    tall = img.transpose(Image.Transpose.ROTATE_90)  # 40 wide, 70 high
    assert np.array_equal(np.asarray(data.resize_square(tall, 16, "center_crop")),
                          np.asarray(tall.crop((0, 15, 40, 55)).resize((16, 16), Image.BICUBIC)))


def test_zoomed_training_crops_keep_the_photos_own_scale(tmp_path):
    stripes = np.zeros((512, 512, 3), np.uint8)
    stripes[:, ::2] = 255  # one-pixel stripes: only a crop near the photo's own scale keeps them
    Image.fromarray(stripes).save(tmp_path / "stripes.png")
    ds = data.make_dataset(str(tmp_path), "train", 32, train=True)
    whole = ds[0][0].float()  # half to all of the photo in 32 pixels: the stripes average to gray
    ds.zoom = (1.0, 1.0)
    near = ds[0][0].float()
    assert whole.std() < 30 and near.std() > 80
