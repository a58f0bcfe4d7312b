"""SIGGRAPH17 and hints: the release's layout and forward, hint files, simulated hints, and the hint pathways of
colorize.py and evaluate.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from skimage import color

import data
import hints
import losses
import models
import weights
from conftest import make_clip, synthetic_rgb, varied_generator

# The release's layout (richzhang/colorization colorizers/siggraph17.py), written out independently of models.py:
# block -> layers in order: ("c", cin, cout, dilation) a 3x3 conv, ("t", cin, cout) a 4x4 stride-2 transposed conv,
# ("1", cin, cout) a 1x1 conv, ("bn", n), and "relu" / "lrelu" / "tanh" (no weights, but they take an index).
C3 = [("c", 512, 512, 1), "relu"] * 3
SIGGRAPH = {
    "model1": [("c", 4, 64, 1), "relu", ("c", 64, 64, 1), "relu", ("bn", 64)],
    "model2": [("c", 64, 128, 1), "relu", ("c", 128, 128, 1), "relu", ("bn", 128)],
    "model3": [("c", 128, 256, 1), "relu", ("c", 256, 256, 1), "relu", ("c", 256, 256, 1), "relu", ("bn", 256)],
    "model4": [("c", 256, 512, 1), "relu"] + C3[2:] + [("bn", 512)],
    "model5": [("c", 512, 512, 2), "relu"] * 3 + [("bn", 512)],
    "model6": [("c", 512, 512, 2), "relu"] * 3 + [("bn", 512)],
    "model7": C3 + [("bn", 512)],
    "model8up": [("t", 512, 256)],
    "model3short8": [("c", 256, 256, 1)],
    "model8": ["relu", ("c", 256, 256, 1), "relu", ("c", 256, 256, 1), "relu", ("bn", 256)],
    "model9up": [("t", 256, 128)],
    "model2short9": [("c", 128, 128, 1)],
    "model9": ["relu", ("c", 128, 128, 1), "relu", ("bn", 128)],
    "model10up": [("t", 128, 128)],
    "model1short10": [("c", 64, 128, 1)],
    "model10": ["relu", ("c", 128, 128, 1), "lrelu"],
    "model_class": [("1", 256, 529)],
    "model_out": [("1", 128, 2), "tanh"],
}


def siggraph_keys() -> dict[str, tuple]:
    """Keys and shapes of the release's state dict."""
    keys = {}
    for name, layers in SIGGRAPH.items():
        for i, layer in enumerate(layers):
            if isinstance(layer, str):
                continue
            p = f"{name}.{i}."
            if layer[0] == "bn":
                keys |= {p + k: (layer[1],) for k in ("weight", "bias", "running_mean", "running_var")}
                keys[p + "num_batches_tracked"] = ()
            else:
                k = {"c": 3, "t": 4, "1": 1}[layer[0]]
                shape = (layer[1], layer[2], k, k) if layer[0] == "t" else (layer[2], layer[1], k, k)
                keys[p + "weight"], keys[p + "bias"] = shape, (layer[2],)
    return keys


def block(state: dict, name: str, x: torch.Tensor) -> torch.Tensor:
    """One of the release's blocks, functionally."""
    for i, layer in enumerate(SIGGRAPH[name]):
        p = f"{name}.{i}."
        if layer == "relu":
            x = F.relu(x)
        elif layer == "lrelu":
            x = F.leaky_relu(x, 0.2)
        elif layer == "tanh":
            x = torch.tanh(x)
        elif layer[0] == "bn":
            x = F.batch_norm(x, state[p + "running_mean"], state[p + "running_var"], state[p + "weight"], state[p + "bias"],
                             False, 0.0, 1e-5)
        elif layer[0] == "t":
            x = F.conv_transpose2d(x, state[p + "weight"], state[p + "bias"], stride=2, padding=1)
        elif layer[0] == "1":
            x = F.conv2d(x, state[p + "weight"], state[p + "bias"])
        else:
            x = F.conv2d(x, state[p + "weight"], state[p + "bias"], padding=layer[3], dilation=layer[3])
    return x


def siggraph_forward(state: dict, L: torch.Tensor, ab: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The release's SIGGRAPHGenerator.forward, functionally: (L-50)/100, ab/110 and the mask as given."""
    c1 = block(state, "model1", torch.cat([(L - 50) / 100, ab / 110, mask], 1))
    c2 = block(state, "model2", c1[:, :, ::2, ::2])
    c3 = block(state, "model3", c2[:, :, ::2, ::2])
    c7 = block(state, "model7", block(state, "model6", block(state, "model5", block(state, "model4", c3[:, :, ::2, ::2]))))
    c8 = block(state, "model8", block(state, "model8up", c7) + block(state, "model3short8", c3))
    c9 = block(state, "model9", block(state, "model9up", c8) + block(state, "model2short9", c2))
    c10 = block(state, "model10", block(state, "model10up", c9) + block(state, "model1short10", c1))
    return block(state, "model_out", c10) * 110


@pytest.fixture(scope="module")
def sig():
    """A SIGGRAPH17 model with real BatchNorm statistics and input-dependent colour (conftest.varied_generator)."""
    return varied_generator(0, "siggraph17")


def test_siggraph17_is_the_releases_layout_and_forward(sig):
    state = sig.state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == siggraph_keys()
    assert sum(v.numel() for k, v in state.items() if k.endswith(("weight", "bias")) and "running" not in k
               and not k.startswith("model_class")) == 34_051_074  # the 34.05 M
    fresh = models.SIGGRAPH17Generator()
    fresh.load_state_dict(state, strict=True)
    for size in [(256, 256), (48, 72)]:
        rgb = torch.from_numpy(synthetic_rgb(3, *size)).permute(2, 0, 1)[None]
        L, ab = data.uint8_to_lab(rgb)
        given = hints.sweep(ab, 10, [7])
        for h in (None, given):
            with torch.no_grad():
                ours = fresh.eval()(L, h)
                ref = siggraph_forward(state, L, *(torch.zeros(1, 2, *size), torch.zeros(1, 1, *size)) if h is None
                                       else (h[:, :2], h[:, 2:]))
            assert ours.shape == (1, 2, *size)
            assert (ours - ref).abs().max() < 1e-3
        assert (fresh(L, given) - fresh(L)).abs().max() > 1  # the hints reach the output
    with pytest.raises(ValueError, match="multiples of 8"):
        fresh(torch.zeros(1, 1, 60, 64))


def test_every_spec_kind_tells_the_architecture(tmp_path, sig, release_weights):
    torch.save(sig.state_dict(), tmp_path / "s.pth")
    torch.save({"generator": sig.state_dict(), "step": 3}, tmp_path / "ckpt.pt")
    from safetensors.torch import save_file

    (tmp_path / "export").mkdir()
    save_file(sig.state_dict(), str(tmp_path / "export" / "model.safetensors"))
    for spec in (tmp_path / "s.pth", tmp_path / "ckpt.pt", tmp_path / "export"):
        G = models.load_generator(str(spec))
        assert isinstance(G, models.SIGGRAPH17Generator) and G.takes_hints
        assert torch.equal(G.model_out[0].weight, sig.model_out[0].weight)
    assert isinstance(models.load_generator(release_weights), models.ECCV16Generator)
    assert isinstance(models.load_generator("scratch", arch="siggraph17"), models.SIGGRAPH17Generator)
    with pytest.raises(ValueError, match="no hint input"):
        models.load_generator(release_weights)(torch.zeros(1, 1, 8, 8), torch.zeros(1, 3, 8, 8))


def test_siggraph17_weights_download_like_eccv16s(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(weights, "RELEASES", {**weights.RELEASES, "siggraph17": ("http://127.0.0.1:9/siggraph17-df00044c.pth",)})
    with pytest.raises(models.ModelError, match=r"cannot download siggraph17-df00044c.pth .*offline, put that file at"):
        models.load_generator("siggraph17")


# ----------------------------------------------------------------------------- hint files


def lab_of(rgb: tuple[int, int, int]) -> np.ndarray:
    """ab of an sRGB colour by scikit-image."""
    return color.rgb2lab(np.array(rgb, float).reshape(1, 1, 3) / 255)[0, 0, 1:]


def test_json_points_are_placed_at_the_models_scale_with_their_colours_ab():
    h = hints.parse_json(json.dumps({"points": [{"x": 10, "y": 20, "color": "#2a5caa"},
                                                {"x": 150, "y": 70, "color": "#f80", "size": 40}]}), "h.json")
    t = hints.place(h, 200, 100, 64)
    m = t[2].bool()
    # the default square: DEFAULT_SIZE at the model's scale around (10.5 * 64/200, 20.5 * 64/100) = (3.36, 13.1)
    first = m[:, :20]
    ys, xs = first.nonzero(as_tuple=True)
    assert first.sum() == hints.DEFAULT_SIZE ** 2 and xs.min() == 1 and ys.min() == 11
    assert np.allclose(t[:2, 12, 3].numpy(), lab_of((0x2a, 0x5c, 0xaa)), atol=1e-3)
    # 40 photo pixels: 13 wide (40 * 64/200 = 12.8) and 26 high (40 * 64/100 = 25.6), at (48.2, 45.1)
    second = m[:, 20:]
    ys, xs = second.nonzero(as_tuple=True)
    assert (xs.max() - xs.min() + 1, ys.max() - ys.min() + 1) == (13, 26) and second.sum() == 13 * 26
    assert np.allclose(t[:2, 45, 48].numpy(), lab_of((255, 0x88, 0)), atol=1e-3)
    assert t[:2][:, ~m].abs().max() == 0


def test_a_painted_layer_gives_hints_where_it_is_opaque(tmp_path):
    layer = np.zeros((300, 400, 4), np.uint8)
    layer[30:120, 40:200] = (200, 30, 40, 255)
    Image.fromarray(layer).save(tmp_path / "layer.png")
    t = hints.place(hints.read(tmp_path / "layer.png"), 123, 77, 64)  # any photo size: the layer is stretched over it
    expect = torch.zeros(64, 64, dtype=torch.bool)
    expect[round(30 * 64 / 300):round(120 * 64 / 300), round(40 * 64 / 400):round(200 * 64 / 400)] = True
    assert (t[2].bool() != expect).sum() <= 64  # only the edges' half-covered pixels may differ
    assert np.allclose(t[:2, 15, 20].numpy(), lab_of((200, 30, 40)), atol=0.5)


@pytest.mark.parametrize("text, message", [
    ("{\"points\": [", "not valid JSON"),
    ("[1, 2]", "expected {\"points\""),
    ("{\"points\": [{\"x\": 1, \"y\": 2, \"color\": \"#12345g\"}]}", "is not a colour"),
    ("{\"points\": [{\"x\": 1, \"y\": 2, \"color\": 7}]}", "color must be a string"),
    ("{\"points\": [{\"x\": \"1\", \"y\": 2, \"color\": \"red\"}]}", "x must be a number"),
    ("{\"points\": [{\"x\": 1, \"y\": 2, \"color\": \"red\", \"size\": 0}]}", "size must be a positive number"),
    ("{\"points\": [{\"x\": 1, \"y\": 2, \"colour\": \"red\"}]}", "unknown key 'colour'"),
])
def test_bad_hint_files_are_one_line(tmp_path, text, message):
    (tmp_path / "h.json").write_text(text)
    with pytest.raises(hints.HintError, match=message):
        hints.read(tmp_path / "h.json")


def test_points_outside_the_photo_and_layers_without_hints_are_refused(tmp_path):
    h = hints.parse_json('{"points": [{"x": 120, "y": 5, "color": "red"}]}', "h.json")
    hints.check(h, 121, 10)
    with pytest.raises(hints.HintError, match=r"point 1 \(120, 5\) is outside the 120x10 photo"):
        hints.check(h, 120, 10)
    Image.new("RGB", (8, 8)).save(tmp_path / "rgb.png")
    Image.new("RGBA", (8, 8)).save(tmp_path / "clear.png")
    with pytest.raises(hints.HintError, match="no alpha channel"):
        hints.read(tmp_path / "rgb.png")
    with pytest.raises(hints.HintError, match="fully transparent"):
        hints.read(tmp_path / "clear.png")


@pytest.mark.parametrize("text, message", [
    ('{"points": [{"x": 1, "y": 1, "color": "red", "size": 1e308}]}', "size 1e\\+308 is larger than the 40x30 photo"),
    ('{"points": [{"x": 1%s, "y": 1, "color": "red"}]}' % ("0" * 400), "x must be a number, not 1000"),
    ('{"points": %s%s}' % ("[" * 100_000, "]" * 100_000), "nested too deeply"),
    ('{"points": [{"x": 1, "y": 1, "color": "#ff000000"}]}', "'#ff000000' is 0% opaque"),
])
def test_hostile_hint_files_are_one_line(tmp_path, text, message):
    (tmp_path / "h.json").write_text(text)
    with pytest.raises(hints.HintError, match=message):
        hints.check(hints.read(tmp_path / "h.json"), 40, 30)


def test_hint_files_that_never_end_or_block_are_refused_unopened(tmp_path, monkeypatch):
    import os

    os.mkfifo(tmp_path / "fifo.json")  # opened, it would wait for a writer forever
    (tmp_path / "zero.json").symlink_to("/dev/zero")  # read, it would never end
    for name in ("fifo.json", "zero.json"):
        with pytest.raises(hints.HintError, match="not a regular file"):
            hints.read(tmp_path / name)
    monkeypatch.setattr(hints, "MAX_BYTES", 100)
    (tmp_path / "big.json").write_text('{"points": []}' + " " * 200)
    with pytest.raises(hints.HintError, match="more than a hint file's"):
        hints.read(tmp_path / "big.json")


def test_a_faint_or_thin_layer_is_refused_rather_than_silently_no_hint(tmp_path):
    layer = np.zeros((512, 512, 4), np.uint8)
    layer[100:200, 100:200] = (255, 0, 0, 102)  # 40% opaque everywhere it is painted
    Image.fromarray(layer).save(tmp_path / "faint.png")
    with pytest.raises(hints.HintError, match="at most 40% opaque"):
        hints.check(hints.read(tmp_path / "faint.png"), 512, 512)
    layer = np.zeros((1024, 1024, 4), np.uint8)
    layer[300, 200:400] = (255, 0, 0, 255)  # a 1-pixel line on a 1024 layer: a quarter of a model pixel at 256
    Image.fromarray(layer).save(tmp_path / "thin.png")
    with pytest.raises(hints.HintError, match="at most 25% opaque there"):
        hints.check(hints.read(tmp_path / "thin.png"), 1024, 1024)
    layer[600:604, 200:400] = (0, 0, 255, 255)  # a 4-pixel line: one row of model pixels, opaque
    Image.fromarray(layer).save(tmp_path / "lines.png")
    h = hints.read(tmp_path / "lines.png")
    hints.check(h, 1024, 1024)
    assert hints.place(h, 1024, 1024)[2].sum() == 50  # the 4-pixel line only


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".tif"])
@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_displayed_size_follows_the_orientation_as_loading_does(tmp_path, suffix, orientation):
    img = Image.new("RGB", (40, 20))
    exif = img.getexif()
    exif[0x0112] = orientation  # 6 and 8: turned 90 degrees, displayed 20 wide and 40 high
    img.save(tmp_path / f"r{suffix}", exif=exif)  # a TIFF keeps it as its own orientation tag
    expected = (20, 40) if orientation in (6, 8) else (40, 20)
    assert hints.displayed_size(tmp_path / f"r{suffix}") == expected == data.load_image(tmp_path / f"r{suffix}").size


# ----------------------------------------------------------------------------- simulated hints


def test_simulated_hints_are_the_truths_mean_over_their_squares():
    rgb = torch.from_numpy(np.stack([synthetic_rgb(i, 64, 64) for i in range(8)])).permute(0, 3, 1, 2)
    _, ab = data.uint8_to_lab(rgb)
    single = hints.sweep(ab, 1, list(range(8)))
    for i in range(8):
        m = single[i, 2].bool()
        assert m.sum() == hints.SWEEP_SIZE ** 2
        assert torch.allclose(single[i, :2, m], ab[i, :, m].mean(1, keepdim=True).expand(2, int(m.sum())), atol=1e-4)
        assert single[i, :2, ~m].abs().max() == 0
    pixels = hints.simulate(ab, torch.Generator().manual_seed(0), p_stop=0.05, sizes=(1, 1))  # 1x1 squares: the truth
    m = pixels[:, 2:].bool().expand(-1, 2, -1, -1)
    assert m.any() and torch.allclose(pixels[:, :2][m], ab[m]) and pixels[:, :2][~m].abs().max() == 0
    assert torch.equal(hints.simulate(ab, torch.Generator().manual_seed(3)), hints.simulate(ab, torch.Generator().manual_seed(3)))
    assert torch.equal(hints.sweep(ab[1:4], 5, [1, 2, 3]), hints.sweep(ab, 5, list(range(8)))[1:4])  # seeded per image


def test_simulated_hint_counts_are_geometric_with_p_one_eighth():
    ab = torch.zeros(3000, 2, 96, 96)  # 1x1 uniform squares on 9216 pixels: the count is the pixels marked, bar collisions
    counts = hints.simulate(ab, torch.Generator().manual_seed(0), sizes=(1, 1), gaussian=False)[:, 2].flatten(1).sum(1)
    assert abs((counts == 0).float().mean() - 1 / 8) < 0.02  # one in eight with none
    assert abs(counts.mean() - 7) < 0.4  # mean (1 - p) / p = 7
    sides = []  # of the images whose hints are one square
    for m in hints.simulate(ab[:400], torch.Generator().manual_seed(1), p_stop=0.5, gaussian=False)[:, 2]:
        ys, xs = m.nonzero(as_tuple=True)
        if len(ys) and (h := int(ys.max() - ys.min() + 1)) == int(xs.max() - xs.min() + 1) and h * h == len(ys):
            sides.append(h)
    assert set(sides) == set(range(1, 10))  # sides uniform in 1-9


def test_the_class_head_loss_uses_the_releases_529_grid():
    ab = torch.tensor([[-110.0, -110.0], [0.0, 0.0], [4.9, -5.1], [110.0, 110.0], [33.0, -71.0]]).T.reshape(1, 2, 1, 5)
    assert models.ab_class(ab).tolist() == [[[0, 11 * 23 + 11, 11 * 23 + 10, 528, 14 * 23 + 4]]]
    assert models.AB_CLASSES[14 * 23 + 4] == (30, -70)
    logits = torch.full((1, 529, 1, 5), -30.0)
    for j, c in enumerate(models.ab_class(ab)[0, 0].tolist()):
        logits[0, c, 0, j] = 30
    assert losses.ab_class_loss(logits, ab) < 1e-6
    assert losses.ab_class_loss(torch.zeros(1, 529, 1, 5), ab).item() == pytest.approx(np.log(529), rel=1e-5)


# ----------------------------------------------------------------------------- colorize.py and evaluate.py


@pytest.fixture
def photo(tmp_path):
    Image.fromarray(synthetic_rgb(2, 96, 128)).save(tmp_path / "p.png")
    return tmp_path / "p.png"


def ab_of(path) -> torch.Tensor:
    return data.uint8_to_lab(data.to_uint8_tensor(Image.open(path).convert("RGB"))[None])[1][0]


def test_colorize_hints_change_the_colour_where_they_are(script, siggraph_weights, photo, tmp_path):
    ck = f"--ckpt={siggraph_weights}"
    assert script("colorize.py", str(photo), str(tmp_path / "plain.png"), ck, "--runtime=torch", "--size=64")[0] == 0
    (tmp_path / "h.json").write_text(json.dumps({"points": [{"x": 100, "y": 30, "color": "#00c000", "size": 24}]}))
    assert script("colorize.py", str(photo), str(tmp_path / "json.png"), ck, "--runtime=torch", "--size=64", f"--hints={tmp_path / 'h.json'}")[0] == 0
    layer = np.zeros((96, 128, 4), np.uint8)
    layer[18:42, 88:112] = (0, 192, 0, 255)
    Image.fromarray(layer).save(tmp_path / "layer.png")
    assert script("colorize.py", str(photo), str(tmp_path / "png.png"), ck, "--runtime=torch", "--size=64", f"--hints={tmp_path / 'layer.png'}")[0] == 0
    plain = ab_of(tmp_path / "plain.png")
    for name in ("json.png", "png.png"):
        change = (ab_of(tmp_path / name) - plain).norm(dim=0)
        assert change[18:42, 88:112].mean() > 2  # where the hint is
    # a folder job: the sidecar changes its own photo, and only it
    src = tmp_path / "in"
    src.mkdir()
    photo.rename(src / "a.png")
    Image.open(src / "a.png").save(src / "b.png")
    (tmp_path / "h.json").rename(src / "a.hints.json")
    assert script("colorize.py", str(src), str(tmp_path / "out"), ck, "--runtime=torch", "--size=64", "--batch_size=1")[0] == 0  # as the single runs
    assert torch.equal(ab_of(tmp_path / "out" / "b.png"), plain)
    assert torch.equal(ab_of(tmp_path / "out" / "a.png"), ab_of(tmp_path / "json.png"))


def test_hints_are_refused_in_one_line_before_the_weights_load(script, release_weights, photo, tmp_path, monkeypatch):
    monkeypatch.setattr(models, "load_generator", lambda *a, **k: pytest.fail("the weights loaded"))
    (tmp_path / "ok.json").write_text('{"points": [{"x": 1, "y": 1, "color": "red"}]}')
    (tmp_path / "far.json").write_text('{"points": [{"x": 500, "y": 1, "color": "red"}]}')
    (tmp_path / "bad.json").write_text('{"points": [{"x": 1, "y": 1, "color": "rouge"}]}')
    make_clip(tmp_path / "clip.mp4", frames=2, audio=False)
    cases = [((photo, tmp_path / "o.png", f"--hints={tmp_path / 'far.json'}", "--ckpt=x.pth"), "outside the 128x96 photo"),
             ((photo, tmp_path / "o.png", f"--hints={tmp_path / 'bad.json'}", "--ckpt=x.pth"), "'rouge' is not a colour"),
             ((photo, tmp_path / "o.png", f"--hints={tmp_path / 'ok.json'}", "--ckpt=eccv16"), "eccv16 is an ECCV16 model, which has no hint input; use --ckpt=siggraph17"),
             ((tmp_path / "clip.mp4", tmp_path / "o.mp4", f"--hints={tmp_path / 'ok.json'}", "--ckpt=x.pth"), "lists keyframes"),
             ((tmp_path, tmp_path / "out", f"--hints={tmp_path / 'ok.json'}", "--ckpt=x.pth"), "hints are for one photo")]
    for args, message in cases:
        code, err = script("colorize.py", *map(str, args))
        assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o.png").exists() and not (tmp_path / "out").exists()


def test_a_broken_sidecar_skips_its_photo_named_and_counted_as_a_bad_photo_does(script, siggraph_weights, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        Image.fromarray(synthetic_rgb(i, 48, 64)).save(src / f"{i}.png")
    (src / "1.hints.json").write_text('{"points": [{"x": 1, "y": 1, "color": "red", "size": 1e308}]}')
    code, err = script("colorize.py", str(src), str(tmp_path / "out"), f"--ckpt={siggraph_weights}", "--size=64", "--runtime=torch")
    assert code == 1 and f"skipped {src / '1.png'}: " in err and "size 1e+308" in err
    assert err.strip().splitlines()[-1].endswith("1 of 3 files failed (named above); the other 2 written")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0.png", "2.png"]


def test_an_eccv16_model_given_hints_says_which_model_takes_them(script, release_weights, photo, tmp_path):
    (tmp_path / "ok.json").write_text('{"points": [{"x": 1, "y": 1, "color": "red"}]}')
    code, err = script("colorize.py", str(photo), str(tmp_path / "o.png"), f"--ckpt={release_weights}", f"--hints={tmp_path / 'ok.json'}", "--runtime=torch")
    assert code == 1 and "is an ECCV16 model, which has no hint input; use --ckpt=siggraph17" in err
    assert not (tmp_path / "o.png").exists()


def test_evaluate_sweeps_hint_counts_with_the_same_points_for_every_model(script, siggraph_weights, release_weights, tmp_path):
    d = tmp_path / "val"
    d.mkdir()
    for i in range(4):
        Image.fromarray(synthetic_rgb(i, 64, 64)).save(d / f"{i}.png")
    other = tmp_path / "other.pth"
    torch.save(varied_generator(1, "siggraph17").state_dict(), other)
    code, err = script("evaluate.py", f"--ckpt={siggraph_weights}", f"--ckpt={other}", f"--ckpt={release_weights}",
                       f"--dataset={d}", "--hints=0,5,20", "--image_size=64", "--fid=none", "--lpips_weights=none",
                       "--vgg_weights=none", "--device=cpu", "--num_workers=0", f"--out={tmp_path / 'r.json'}")
    assert code == 0, err
    assert "has no hint input (ECCV16): one column" in err
    rows = json.loads((tmp_path / "r.json").read_text())["models"]
    assert [r["hints"] for r in rows] == [0, 5, 20, 0, 5, 20, None]
    assert [r["ckpt"] for r in rows] == [siggraph_weights] * 3 + [str(other)] * 3 + [release_weights]
    # each row is the model given exactly hints.sweep's hints for that count
    G = models.load_generator(siggraph_weights)
    rgb = torch.stack([data.to_uint8_tensor(data.resize_square(data.load_image(d / f"{i}.png"), 64)) for i in range(4)])
    L, ab = data.uint8_to_lab(rgb)
    for r in rows[:3]:
        with torch.no_grad():
            pred = G(L, hints.sweep(ab, r["hints"], [0, 1, 2, 3]) if r["hints"] else None)
        assert r["l1_ab"] == pytest.approx(losses.l1_ab(pred, ab).item(), abs=1e-4)
    assert rows[0]["l1_ab"] != rows[2]["l1_ab"] and rows[0]["l1_ab"] != rows[3]["l1_ab"]
    assert "random-siggraph17.pth@5" in script.stdout


def test_a_hint_file_holds_at_most_ten_thousand_points_or_keyframes(tmp_path):
    import json

    point = {"x": 1, "y": 1, "color": "red"}
    keyframe = {"frame": 1, "points": [point]}
    for key, item in (("points", point), ("keyframes", keyframe)):
        hints.parse_json(json.dumps({key: [item] * hints.MAX_POINTS}), "ok.json")  # the bound itself is taken
        with pytest.raises(hints.HintError, match=f"10001 {key}, more than 10,000"):
            hints.parse_json(json.dumps({key: [item] * (hints.MAX_POINTS + 1)}), "big.json")
