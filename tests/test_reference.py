"""reference.py: the warp (a shifted photo warps back to its own colours), UniColor's hint rule, the routes that take
a reference (command line, hint file, sidecar, folder, app) agreeing, the ECCV16 global transfer against
scikit-image, and the refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from skimage import color
from skimage.exposure import match_histograms

import data
import hints
import models
import reference
from test_app import served  # noqa: F401 (a fixture: the bytes behind the page's downloads)


def textured(seed: int, size: int = 128) -> np.ndarray:
    """A photo whose every place is told apart by its texture (L) and whose colour varies smoothly across it (ab)."""
    rng = np.random.default_rng(seed)
    L = 35 + 40 * F.avg_pool2d(torch.from_numpy(rng.random((1, size + 2, size + 2))), 3, 1).numpy()[0]
    y, x = np.mgrid[0:size, 0:size] / size
    lab = np.stack([L, 40 * np.sin(4 * x + 1), 40 * np.cos(3 * y + 2 * x)], -1)
    return (np.clip(color.lab2rgb(lab), 0, 1) * 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def matcher():
    return reference.Matcher("random")


def lab_of(rgb: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return data.uint8_to_lab(torch.from_numpy(rgb).permute(2, 0, 1)[None])


def test_a_shifted_photo_warps_back_to_its_own_colours(matcher):
    photo = textured(0)
    shifted = np.roll(photo, (12, 20), (0, 1))  # the same content 12 rows down, 20 columns right (wrapped round)
    L, ab = lab_of(photo)
    L_ref, ab_ref = lab_of(shifted)
    warped, confidence = matcher.warp(matcher.features(L), matcher.features(L_ref), ab_ref)
    own = torch.from_numpy(color.rgb2lab(photo)[..., 1:]).permute(2, 0, 1).float()  # scikit-image's ab, pooled to the grid
    own = F.avg_pool2d(own[None], reference.GRID)[0]
    # where the content matches: a position, and its place in the reference, 4 grid cells (16 pixels) or more from the
    # borders (zero padding changes relu4_2's features that far in) and from the wrapped seam
    g = torch.arange(32)
    inside = (g >= 4) & (g <= 27)
    rows, cols = inside & inside.roll(-3), inside & inside.roll(-5)  # shifted by 12/4 rows and 20/4 columns
    matched = rows[:, None] & cols[None, :]
    err = (warped[0] - own).norm(dim=0)[matched]
    assert matched.sum() > 350 and err.median() < 0.5 and (err < 2).float().mean() > 0.95, (err.median(), err.max())
    other = lab_of(textured(1))  # the same kind of photo, none of its content: less confident everywhere
    _, unrelated = matcher.warp(matcher.features(L), matcher.features(other[0]), other[1])
    assert confidence[0][matched].median() > unrelated[0][matched].median() + 0.2, (confidence[0][matched].median(),
                                                                                   unrelated[0][matched].median())


def test_the_hint_rule_keeps_confident_cells_and_the_top_k_with_their_mean_colour():
    g = torch.Generator().manual_seed(0)
    warped, conf = torch.randn(2, 32, 32, generator=g) * 30, torch.rand(32, 32, generator=g) * 0.4
    kept = reference.cells(warped, conf, threshold=0.21, top_k=5, cell=4)
    c, a = conf.numpy().reshape(8, 4, 8, 4), warped.numpy().reshape(2, 8, 4, 8, 4)  # by hand: 8x8 cells of 4x4
    means = c.mean((1, 3))
    want = set(zip(*np.nonzero(means >= 0.21))) | {divmod(int(i), 8) for i in np.argsort(-means, axis=None)[:5]}
    assert {(r, col) for r, col, _ in kept} == want and len(want) > 5
    for r, col, ab in kept:
        assert np.allclose(ab.numpy(), a[:, r, :, col, :].mean((1, 2)), atol=1e-4)
    assert means.max() < 0.3 and len(reference.cells(warped, conf, threshold=0.3, top_k=3, cell=4)) == 3  # the top 3,
    assert not reference.cells(warped, conf, threshold=2, top_k=3, cell=4)  # where they match at all (half the threshold)


def test_points_sit_at_cell_centres_with_the_warped_colour(matcher):
    photo = textured(2, 128)
    L, ab = lab_of(photo)
    ref = reference.Reference("self", L, ab)  # the photo itself: every cell matches, with its own colour
    found = reference.points(matcher, ref, L, 192, 128, threshold=-1)  # every cell, for a 192x128 photo
    assert len(found) == 256 and ref.features is not None  # 16x16 cells at any model size (8 pixels at 128)
    placed = hints.place(hints.Hints("r", found), 192, 128, 128)
    assert placed[2].sum() == 256 * hints.DEFAULT_SIZE ** 2
    near = 0
    for y in range(4, 128, 8):  # each square centred in its 8x8 cell, its ab the cell's mean
        for x in range(4, 128, 8):
            assert placed[2, y - 2:y + 3, x - 2:x + 3].all()
            near += (placed[:2, y, x] - ab[0, :, y - 4:y + 4, x - 4:x + 4].mean((1, 2))).norm() < 3
    assert near >= 240  # through RGB at the cell's L and an 8-bit colour, and the warp's few misses


def test_explicit_points_win_where_they_overlap_a_references(matcher):
    photo = textured(3, 64)
    L, ab = lab_of(photo)
    guide = reference.Guide(matcher, threshold=-1, size=64)
    guide.photos["ref.png"] = reference.Reference("ref.png", L, ab)
    mine = hints.Point(7.5, 7.5, (0, 255, 0), None)  # over the reference's hints at (6, 6) and (10, 10)
    h = guide.with_points(hints.Hints("h.json", (mine,), reference="ref.png"), L, 64, 64)
    placed = hints.place(h, 64, 64, 64)
    green = data.rgb_to_lab(torch.tensor([0.0, 1.0, 0.0]).view(1, 3, 1, 1))[0, 1:, 0, 0]
    assert torch.allclose(placed[:2, 8, 8], green, atol=1e-4) and len(h.points) == 257  # 16x16 cells, then mine


@pytest.fixture
def files(tmp_path):
    """A photo, a folder of three, and a colour reference (a shifted crop of the first)."""
    (tmp_path / "in").mkdir()
    for i in range(3):
        Image.fromarray(textured(10 + i, 96)[:, :80]).save(tmp_path / "in" / f"{i}.png")
    Image.fromarray(np.roll(textured(10, 96), 8, 1)).save(tmp_path / "ref.png")
    return tmp_path


def test_the_cli_route_equals_the_json_and_sidecar_routes(script, siggraph_weights, files):
    common = [f"--ckpt={siggraph_weights}", "--size=64", "--runtime=torch", "--reference_weights=random"]
    photo, ref = files / "in" / "0.png", files / "ref.png"
    assert script("colorize.py", str(photo), str(files / "plain.png"), *common)[0] == 0
    code, err = script("colorize.py", str(photo), str(files / "cli.png"), *common, f"--reference={ref}")
    assert code == 0, err
    (files / "sub").mkdir()
    (files / "sub" / "h.json").write_text(json.dumps({"reference": "../ref.png"}))  # relative to the JSON file
    assert script("colorize.py", str(photo), str(files / "json.png"), *common, f"--hints={files / 'sub' / 'h.json'}")[0] == 0
    cli, plain = np.asarray(Image.open(files / "cli.png"), int), np.asarray(Image.open(files / "plain.png"), int)
    assert np.array_equal(cli, np.asarray(Image.open(files / "json.png"), int))
    assert np.abs(cli - plain).mean() > 2  # the reference changed the colour
    (files / "in" / "0.hints.json").write_text(json.dumps({"reference": str(ref)}))
    assert script("colorize.py", str(files / "in"), str(files / "out"), *common, "--batch_size=1")[0] == 0  # as the single runs
    assert np.array_equal(np.asarray(Image.open(files / "out" / "0.png"), int), cli)  # the sidecar's, in a folder job
    assert np.array_equal(np.asarray(Image.open(files / "out" / "1.png"), int),  # and no other photo's
                          np.asarray(models.colorize(models.load_generator(siggraph_weights), Image.open(files / "in" / "1.png"), 64)))


def test_a_folder_job_matches_every_photo_against_one_reference_computed_once(script, siggraph_weights, files, monkeypatch):
    calls = []
    features = reference.Matcher.features
    monkeypatch.setattr(reference.Matcher, "features", lambda self, L: calls.append(len(L)) or features(self, L))
    code, err = script("colorize.py", str(files / "in"), str(files / "out"), f"--ckpt={siggraph_weights}", "--size=64",
                       "--runtime=torch", "--reference_weights=random", f"--reference={files / 'ref.png'}")
    assert code == 0, err
    assert len(calls) == 4  # the reference once, then each of the three photos


def test_an_eccv16_model_takes_the_references_colour_globally_as_scikit_image_does(script, release_weights, files):
    photo, ref = files / "in" / "0.png", files / "ref.png"
    code, err = script("colorize.py", str(photo), str(files / "o.png"), f"--ckpt={release_weights}", "--size=64",
                       "--runtime=torch", f"--reference={ref}")
    assert code == 0 and "transferred globally" in err, err
    G = models.load_generator(release_weights)
    img = data.load_image(photo)
    ab = models.predict_ab(G, models.small_copy(img, 64)[None])[0].permute(1, 2, 0).double().numpy()
    ref_ab = data.uint8_to_lab(models.small_copy(data.load_image(ref), 64)[None])[1][0].permute(1, 2, 0).double().numpy()
    expected = torch.from_numpy(match_histograms(ab, ref_ab, channel_axis=-1)).permute(2, 0, 1).float()
    assert np.array_equal(np.asarray(Image.open(files / "o.png")), np.asarray(models.paint(img, expected)))


def test_bad_references_are_one_line_before_the_weights_load(script, siggraph_weights, files, monkeypatch):
    monkeypatch.setattr(models, "load_generator", lambda *a, **k: pytest.fail("the weights loaded"))
    Image.fromarray(np.full((32, 32, 3), 120, np.uint8)).save(files / "gray.png")
    (files / "text.png").write_text("not an image")
    photo = str(files / "in" / "0.png")
    cases = [((photo, "--reference=" + str(files / "missing.jpg")), "missing.jpg"),
             ((photo, "--reference=" + str(files / "text.png")), "not an image"),
             ((photo, "--reference=" + str(files / "gray.png")), "it has no colour"),
             ((photo, "--reference=" + str(files / "ref.png"), "--max_pixels=1000"), "pixels"),
             ((str(files / "in"), "--reference=" + str(files / "gray.png")), "it has no colour")]
    for (src, *args), message in cases:
        out = files / ("out" if src.endswith("in") else "o.png")
        code, err = script("colorize.py", src, str(out), f"--ckpt={siggraph_weights}", *args)
        assert code == 1 and message in err and len(err.strip().splitlines()) == 1, (args, err)
        assert not out.exists()


def test_evaluate_self_reference_columns(script, siggraph_weights, release_weights, files):
    code, err = script("evaluate.py", f"--ckpt={siggraph_weights}", f"--ckpt={release_weights}", f"--dataset={files / 'in'}",
                       "--image_size=64", "--num_workers=0", "--reference_weights=random", "--fid=none", "--lpips_weights=none",
                       "--reference=self", "--reference_threshold=-1", f"--out={files / 'r.json'}")
    assert code == 0, err
    result = json.loads((files / "r.json").read_text())
    rows = {(r["ckpt"], r["reference"]): r for r in result["models"]}
    assert set(rows) == {(siggraph_weights, "none"), (siggraph_weights, "global"), (siggraph_weights, "local"),
                         (release_weights, "none"), (release_weights, "global")}  # ECCV16: no local column
    assert "mirrored" in result["protocol"]["reference"]["source"]
    for spec in (siggraph_weights, release_weights):  # the global transfer takes the reference's colour
        assert rows[spec, "global"]["reference_colour"] > rows[spec, "none"]["reference_colour"]
    assert rows[siggraph_weights, "local"]["l1_ab"] != rows[siggraph_weights, "none"]["l1_ab"]


def test_the_self_reference_is_the_truth_mirrored_cropped_and_shifted():
    x = torch.arange(100).view(1, 1, 100).expand(3, 100, 100).to(torch.uint8)  # brightness = column
    refs = [reference.self_reference(x, seed) for seed in range(20)]
    for ref in refs:
        row = ref[0, 50].float()
        assert row[0] > row[-1]  # mirrored: the right side's columns on the left
        span = row[0] - row[-1]
        assert 65 <= span <= 92  # a 70-90 % crop stretched to the whole side
    assert len({(int(r[0, 50, 0]), int(r[0, 50, -1])) for r in refs}) > 10  # seeded: crops differ
    assert torch.equal(reference.self_reference(x, 3), refs[3])


def test_the_apps_reference_hints_are_colorize_pys(monkeypatch, siggraph_weights, files, served, script):
    import sys

    from streamlit.testing.v1 import AppTest

    from test_app import APP, upload

    monkeypatch.setattr(sys, "argv", ["app.py", "--runtime=torch", "--baseline=", f"--ckpt={siggraph_weights}",
                                      "--reference_weights=random"])
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    odd = files / "odd.png"  # 93 x 71: the hints' photo coordinates have many decimals, which the JSON must keep
    Image.fromarray(textured(10, 96)[:71, :93]).save(odd)
    upload(at, "odd.png", odd.read_bytes())
    at.sidebar.number_input(key="ref_most").set_value(256)  # every hint colorize.py places (the app shows 24 unless told)
    uploader = next(u for u in at.sidebar.get("file_uploader") if u.proto.label.startswith("A reference photo"))
    uploader.set_value(("ref.png", (files / "ref.png").read_bytes(), "image/png"))
    at.run()
    assert not at.exception and not at.error
    photo = data.load_image(odd)
    ref = reference.load(files / "ref.png")
    expected = reference.points(reference.Matcher("random"), ref, data.uint8_to_l(models.small_copy(photo)[None]), *photo.size)
    got = [(h["x"], h["y"], h["color"]) for h in at.session_state.hints]
    assert got == [(p.x, p.y, "#%02x%02x%02x" % p.rgb) for p in expected] and len(got) >= reference.TOP_K
    download = next(b for b in at.sidebar.get("download_button") if "JSON" in b.label)
    saved = json.loads(served[download.proto.url])  # the reference's hints as points, and its name for the record
    assert saved["from_reference"] == "ref.png" and len(saved["points"]) == len(expected)
    (files / "h.json").write_bytes(served[download.proto.url])
    assert hints.read(files / "h.json").reference is None  # colorize.py takes the points, not the reference again
    shown = np.asarray(at.session_state.result)  # and makes the app's picture from them, exactly
    code, err = script("colorize.py", str(odd), str(files / "app.png"), f"--ckpt={siggraph_weights}",
                       "--runtime=torch", f"--hints={files / 'h.json'}")
    assert code == 0 and np.array_equal(np.asarray(Image.open(files / "app.png").convert("RGB")), shown), err


def test_evaluate_pairs_a_folder_of_references_by_file_name(script, release_weights, files):
    (files / "refs").mkdir()
    for i in range(3):  # each photo's reference: the photo itself, as JPEG: the global transfer takes its colour
        Image.open(files / "in" / f"{i}.png").save(files / "refs" / f"{i}.jpg", quality=95)
    common = [f"--ckpt={release_weights}", f"--dataset={files / 'in'}", "--image_size=64", "--num_workers=0", "--vgg_weights=none",
              "--fid=none", "--lpips_weights=none"]
    code, err = script("evaluate.py", *common, f"--reference={files / 'refs'}", f"--out={files / 'r.json'}")
    assert code == 0, err
    rows = {r["reference"]: r for r in json.loads((files / "r.json").read_text())["models"]}
    assert set(rows) == {"none", "global"} and rows["global"]["reference_colour"] > 0.5 > rows["none"]["reference_colour"]
    (files / "refs" / "2.jpg").unlink()
    code, err = script("evaluate.py", *common, f"--reference={files / 'refs'}")
    assert code == 1 and "no reference named 2" in err and len(err.strip().splitlines()) == 1, err


def test_a_reference_with_nothing_to_match_gives_no_confident_hint(matcher, tmp_path):
    photo = textured(7, 256)
    L, ab = lab_of(photo)
    Image.new("RGB", (1, 1), (200, 80, 40)).save(tmp_path / "flat.png")  # one colour, no structure: nothing to match
    flat = reference.load(tmp_path / "flat.png", 256)
    flat_points = reference.points(matcher, flat, L, 256, 256)
    _, confidence = matcher.warp(matcher.features(L), matcher.features(flat.L), flat.ab)
    assert len(flat_points) == 0 and confidence.max() < reference.THRESHOLD / 2, (len(flat_points), confidence.max())
    own = reference.Reference("self", *lab_of(np.roll(photo, 8, 1)))  # the same photo, shifted: its content everywhere
    assert len(reference.points(matcher, own, L, 256, 256)) > 40


def test_a_reference_that_matches_nothing_is_said_in_one_line(script, siggraph_weights, files):
    Image.new("RGB", (1, 1), (200, 80, 40)).save(files / "tiny.png")
    code, err = script("colorize.py", str(files / "in"), str(files / "out"), f"--ckpt={siggraph_weights}", "--size=64",
                       "--runtime=torch", "--reference_weights=random", f"--reference={files / 'tiny.png'}")
    assert code == 0 and err.count("the reference") == 1 and "tiny.png matched nothing" in err, err  # once for the job
