"""restoration.py, restore.py, train_restore.py and colorize.py --restore=True: each repair against a picture of known
damage, the clean-photo guarantee, masks written and read back, the shipped finder, bad options in one line."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from scipy.ndimage import binary_dilation

import damage
import restoration

ROOT = Path(__file__).resolve().parents[1]


def textured(h: int = 320, w: int = 400, seed: int = 0) -> np.ndarray:
    """A clean gray photo stand-in: smooth shading, hard-edged shapes and fine texture, in [0.05, 0.95]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    g = 0.5 + 0.25 * np.sin(5 * x + 2 * y) + 0.05 * np.sin(60 * x) * np.sin(45 * y)
    img = Image.fromarray((np.clip(g, 0, 1) * 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = rng.integers(0, w - 60), rng.integers(0, h - 60)
        draw.rectangle([int(x0), int(y0), int(x0 + rng.integers(20, 60)), int(y0 + rng.integers(20, 60))], fill=int(rng.integers(40, 220)))
    return np.clip(np.asarray(img, np.float32) / 255, 0.05, 0.95)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1 / np.mean((a.astype(np.float64) - b) ** 2)))


@pytest.fixture(scope="module")
def finder() -> restoration.Detector:
    return restoration.load_detector()


def test_damage_mask_is_what_the_strokes_changed():
    clean = textured()
    hurt = damage.damage(clean, np.random.default_rng(3), scratches=(3, 3), cracks=(1, 1), specks=1.0, grain=(0, 0), fading=0)
    changed = np.abs(hurt.gray - clean)
    assert hurt.mask.mean() > 0.005
    assert changed[hurt.mask].min() >= damage.VISIBLE - 1e-6 and changed[~hurt.mask].max() < damage.VISIBLE
    again = damage.damage(clean, np.random.default_rng(3), scratches=(3, 3), cracks=(1, 1), specks=1.0, grain=(0, 0), fading=0)
    assert np.array_equal(again.gray, hurt.gray)  # reproducible from its seed


def test_fill_restores_a_smooth_picture_under_a_line():
    y, x = np.mgrid[0:200, 0:300].astype(np.float32)
    clean = 0.2 + 0.6 * (x / 300) * (0.5 + 0.5 * y / 200)  # smooth: inpainting's reference is the formula itself
    mask = np.zeros(clean.shape, bool)
    mask[:, 148:151] = True  # across several tiles' width when TILE is small
    mask[90:93, :] = True
    hurt = np.where(mask, 1.0, clean).astype(np.float32)
    filled = restoration.fill(hurt, mask)
    assert np.abs(filled - clean)[mask].max() < 2 / 255
    assert np.array_equal(filled[~mask], hurt[~mask])  # only the mask is touched


def test_only_pieces_that_stand_out_one_way_and_are_not_tiny_are_filled():
    gray = np.full((40, 40), 0.5, np.float32)
    filled = gray.copy()  # what the filling put there
    gray[5, 5:30] = 0.9  # a bright line: 0.4 above its filling
    gray[20:24, 20:24] += 0.2 * (np.indices((4, 4)).sum(0) % 2 * 2 - 1)  # texture: 0.2 above and below, 0 on average
    gray[30:35, 30:35] = 0.5 + 6 / 255  # a patch too faint to matter
    gray[10:13, 35:38] = 0.0  # a dark speck of 9 pixels: below SMALLEST
    mask = np.zeros(gray.shape, bool)
    mask[5, 5:30] = mask[20:24, 20:24] = mask[30:35, 30:35] = mask[10:13, 35:38] = True
    kept = restoration.worth_filling(gray, filled, mask, step=8 / 255, smallest=16)
    assert kept[5, 5:30].all() and kept.sum() == 25
    assert restoration.worth_filling(gray, filled, mask, step=8 / 255, smallest=1)[10:13, 35:38].all()


def test_tiles_give_what_one_pass_gives(finder, monkeypatch):
    gray = textured(300, 380)
    monkeypatch.setattr(restoration, "TILE", 128)  # several tiles and their margins
    tiled = restoration.damage_probability(gray, finder)
    with torch.no_grad():
        whole = torch.sigmoid(finder(torch.from_numpy(gray)[None, None]))[0, 0].numpy()
    assert np.abs(tiled - whole).max() < 1e-4


def test_grain_is_measured_and_a_clean_picture_reads_below_the_floor():
    clean = textured()
    assert restoration.noise_sigma(clean) < restoration.GRAIN_FLOOR
    assert restoration.restore(clean, None).steps == ["nothing to repair"]  # and it is left as it is
    for sigma in (5, 10):
        noisy = np.clip(clean + np.random.default_rng(sigma).normal(0, sigma / 255, clean.shape), 0, 1).astype(np.float32)
        assert abs(restoration.noise_sigma(noisy) * 255 - sigma) < 0.2 * sigma
        fixed = restoration.restore(noisy, None)
        assert psnr(fixed.gray, clean) > psnr(noisy, clean) + 2


def test_fading_is_undone_to_the_clean_levels():
    clean = np.tile(np.linspace(restoration.TARGET[0], restoration.TARGET[1], 400, dtype=np.float32), (100, 1))
    # the ramp's ENDS quantiles sit a little inside its ends: the clean picture's own ends as restore() measures them
    black, white = restoration.ends(clean)
    faded = damage.fade(clean, 0.25, 0.8, 1.0)
    assert restoration.restore(faded, None).levels is None  # asked for only: a low-key photo looks faded too
    fixed = restoration.restore(faded, None, levels="auto")
    assert fixed.levels is not None
    expected = restoration.stretch(clean, black, white)  # linear levels map the faded ramp onto the clean one's stretch
    assert np.abs(fixed.gray - expected).max() < 1 / 255
    assert restoration.restore(clean, None, levels="auto").levels is None  # a print at a clean photo's ends is left alone


def test_the_shipped_finder_finds_known_damage(finder):
    clean = textured(384, 512, seed=1)
    hurt = damage.damage(clean, np.random.default_rng(7), scratches=(4, 4), cracks=(1, 1), specks=1.0, grain=(0, 0), fading=0)
    found = restoration.find_damage(hurt.gray, finder, grow=0)
    near = binary_dilation(hurt.mask, iterations=1)
    precision = (found & near).sum() / max(found.sum(), 1)
    recall = (hurt.mask & binary_dilation(found, iterations=1)).sum() / hurt.mask.sum()
    assert precision > 0.8 and recall > 0.7, (precision, recall)
    fixed = restoration.restore(hurt.gray, finder)
    assert psnr(fixed.gray, clean) > psnr(hurt.gray, clean) + 3


def test_a_large_photo_is_searched_shrunk_and_its_mask_is_full_size(finder, monkeypatch):
    clean = textured(384, 512, seed=4)
    hurt = clean.copy()
    hurt[100:104, 40:470] = 0.97  # a wide scratch, as a large scan's are
    hurt[150:360, 300:304] = 0.03
    truth = np.abs(hurt - clean) >= damage.VISIBLE
    monkeypatch.setattr(restoration, "SEARCH_PIXELS", 60_000)  # searched at half size
    found = restoration.find_damage(hurt, finder)
    assert found.shape == clean.shape
    assert (truth & found).sum() > 0.8 * truth.sum() and (found & ~binary_dilation(truth, iterations=3)).sum() < 0.2 * truth.sum()


def test_a_clean_photo_passes_through(finder):
    camera = restoration.gray_of(Image.open(ROOT / "assets" / "camera.png"))
    fixed = restoration.restore(camera, finder)
    assert psnr(fixed.gray, camera) >= 40
    assert fixed.levels is None and fixed.sigma < restoration.GRAIN_FLOOR


def test_a_damage_finder_that_is_no_finder_is_one_line(tmp_path):
    with pytest.raises(restoration.RestoreError, match="no damage finder there"):
        restoration.load_detector(tmp_path / "none.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"not weights")
    with pytest.raises(restoration.RestoreError, match="not a damage finder's weights"):
        restoration.load_detector(tmp_path / "bad.safetensors")


def scratched_print(path: Path, seed: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """A sepia print with known scratches written to path: (clean gray, mask)."""
    clean = textured(256, 320, seed)
    hurt = damage.damage(clean, np.random.default_rng(seed), scratches=(3, 3), cracks=(0, 0), specks=1.0, grain=(0, 0), fading=0)
    Image.fromarray(damage.sepia(hurt.gray)).save(path)
    return clean, hurt.mask


def test_restore_script_writes_the_photo_its_mask_and_what_it_did(script, tmp_path):
    clean, mask = scratched_print(tmp_path / "old.png")
    code, err = script("restore.py", str(tmp_path / "old.png"), str(tmp_path / "fixed.png"), "--save_mask=True")
    assert code == 0, err
    assert "finding damage with" in err and "of the pixels filled" in err
    fixed = Image.open(tmp_path / "fixed.png")
    assert fixed.mode == "L" and "filled" in fixed.text["colorgan-restore"]
    a, b = (float(v.split("=")[1]) for v in fixed.text["colorgan-tone"].split())
    assert a > 0 and b > 5  # sepia: warm (yellow-brown)
    written = np.asarray(Image.open(tmp_path / "fixed-mask.png")) > 0
    assert (written & mask).sum() > 0.6 * mask.sum()
    restored = np.asarray(fixed, np.float32) / 255
    assert np.abs(restored - clean)[mask].mean() < 0.5 * np.abs(restoration.gray_of(Image.open(tmp_path / "old.png")) - clean)[mask].mean()

    code, err = script("restore.py", str(tmp_path / "old.png"), str(tmp_path / "fixed.png"))
    assert code == 1 and "already exists" in err  # never replaced unasked
    (tmp_path / "fixed-mask.png").unlink()  # a job stopped between the photo and its mask
    code, err = script("restore.py", str(tmp_path / "old.png"), str(tmp_path / "fixed.png"), "--save_mask=True",
                       "--skip_existing=True")
    assert code == 0 and np.array_equal(np.asarray(Image.open(tmp_path / "fixed-mask.png")) > 0, written), err
    code, err = script("restore.py", str(tmp_path / "old.png"), str(tmp_path / "toned.png"), "--keep_tone=True")
    toned = np.asarray(Image.open(tmp_path / "toned.png").convert("RGB"), np.float32)
    assert code == 0 and (toned[..., 0] - toned[..., 2]).mean() > 10  # the tone is back


@pytest.mark.parametrize("args, message", [
    (["--grain=maybe"], "--grain=maybe: use auto, on or off"),
    (["--threshold=1.5"], "--threshold=1.5: must be in (0, 1)"),
    (["--detector=/nonexistent.safetensors"], "no damage finder there"),
])
def test_restore_script_refuses_mistakes_in_one_line(script, tmp_path, args, message):
    scratched_print(tmp_path / "old.png")
    code, err = script("restore.py", str(tmp_path / "old.png"), str(tmp_path / "fixed.png"), *args)
    assert code == 1 and message in err and len(err.strip().splitlines()) <= 2 and not (tmp_path / "fixed.png").exists()


def test_colorize_restores_before_colour(script, tmp_path, hypercolumn_weights):
    clean, mask = scratched_print(tmp_path / "old.png")
    code, err = script("colorize.py", str(tmp_path / "old.png"), str(tmp_path / "plain.png"), f"--ckpt={hypercolumn_weights}")
    assert code == 0, err
    code, err = script("colorize.py", str(tmp_path / "old.png"), str(tmp_path / "fixed.png"), f"--ckpt={hypercolumn_weights}",
                       "--restore=True")
    assert code == 0 and "repairing first (restore.py's steps) with the damage finder" in err, err
    plain, fixed = (restoration.gray_of(Image.open(tmp_path / f"{n}.png")) for n in ("plain", "fixed"))
    assert np.abs(fixed - clean)[mask].mean() < 0.5 * np.abs(plain - clean)[mask].mean()


def test_the_finder_trains_and_resumes_exactly(script, photo_dir, tmp_path):
    common = [f"--dataset={photo_dir}", "--image_size=32", "--batch_size=2", "--num_workers=0", "--val_images=2",
              "--log_every=1"]
    code, err = script("train_restore.py", *common, f"--out_dir={tmp_path / 'a'}", "--max_steps=4")
    assert code == 0, err
    code, err = script("train_restore.py", *common, f"--out_dir={tmp_path / 'b'}", "--max_steps=2")
    halfway = restoration.load_detector(tmp_path / "b" / "detector.safetensors").state_dict()
    code, err = script("train_restore.py", *common, f"--out_dir={tmp_path / 'b'}", "--max_steps=4", "--resume=True")
    assert code == 0, err
    a, b = (restoration.load_detector(tmp_path / r / "detector.safetensors").state_dict() for r in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit for bit: the damage drawn from (seed, step), the RNG restored
    assert not all(torch.equal(a[k], halfway[k]) for k in a)


def test_a_films_frames_are_repaired_one_by_one(script, tmp_path, release_weights):
    import av

    import video

    clean = textured(96, 128, seed=3)
    frames = []
    for i in range(4):  # a scratch on frame 2 only: a film's typical damage
        hurt = damage.damage(clean, np.random.default_rng(40 + i), scratches=(2, 2), cracks=(0, 0), specks=0.0, grain=(0, 0),
                             fading=0) if i == 2 else damage.Damaged(clean, np.zeros(clean.shape, bool), 0.0, (0, 1, 1))
        frames.append(hurt)
    with av.open(str(tmp_path / "film.mkv"), "w") as c:
        v = c.add_stream("ffv1", rate=12)
        v.width, v.height, v.pix_fmt = 128, 96, "yuv444p"
        for i, f in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.repeat((f.gray * 255).round().astype(np.uint8)[..., None], 3, -1), format="rgb24")
            frame.pts = i
            c.mux(v.encode(frame))
        c.mux(v.encode())
    common = [f"--ckpt={release_weights}", "--size=64", "--runtime=torch", "--temporal=0"]
    for name, extra in (("plain", []), ("fixed", ["--restore=True"])):
        code, err = script("colorize.py", str(tmp_path / "film.mkv"), str(tmp_path / f"{name}.mkv"), *common, *extra)
        assert code == 0, err
    plain, fixed = (video.read_frames(tmp_path / f"{n}.mkv")[0] for n in ("plain", "fixed"))
    mask = frames[2].mask
    gray = lambda rgb: restoration.gray_of(Image.fromarray(rgb))  # noqa: E731
    assert np.abs(gray(fixed[2]) - clean)[mask].mean() < 0.5 * np.abs(gray(plain[2]) - clean)[mask].mean()
    assert np.abs(gray(fixed[0]) - gray(plain[0])).mean() < 1 / 255  # an undamaged frame is left as it was
