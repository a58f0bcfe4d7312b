"""app.py through Streamlit's AppTest, as a user uses it: upload, three images, downloads, errors in the page."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import synthetic_rgb

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture
def app(monkeypatch, release_weights, other_weights):
    from streamlit.testing.v1 import AppTest

    from streamlit import config

    # two different models: a column showing the other's colour would show
    monkeypatch.setattr(sys, "argv", ["app.py", "--runtime=torch", f"--baseline={other_weights}", f"--ckpt={release_weights}"])
    limit = config.get_option("server.maxUploadSize")
    config.set_option("server.maxUploadSize", 1)  # what the uploader states is what app.py enforces
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    yield at
    config.set_option("server.maxUploadSize", limit)


def png(img: Image.Image) -> bytes:
    """A picture as the bytes of a PNG file."""
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def upload(at, name: str, raw: bytes, mime: str = "image/png"):
    at.file_uploader[0].set_value((name, raw, mime))
    at.run()
    assert not at.exception, at.exception
    return at


@pytest.fixture
def served(monkeypatch) -> dict[str, bytes]:
    """The bytes behind every media URL the page serves, by URL."""
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    files: dict[str, bytes] = {}
    original = MemoryMediaFileStorage.load_and_get_id

    def keep(self, path_or_data, mimetype, kind, filename=None):
        file_id = original(self, path_or_data, mimetype, kind, filename)
        files[self.get_url(file_id)] = path_or_data
        return file_id

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", keep)
    return files


def test_upload_shows_three_images_with_downloads(app, served, release_weights, other_weights):
    import models

    photo = Image.fromarray(synthetic_rgb(0, 60, 80))
    at = upload(app, "photo.png", png(photo))
    captions = [c for img in at.image for c in img.captions]
    assert len(at.image) == 3 and captions[0] == "Input (gray)" and captions[1].startswith("Baseline")
    assert len(at.download_button) == 3 and not at.error
    shown = [np.asarray(Image.open(io.BytesIO(served[img.value[0]])).convert("RGB")) for img in at.image]
    expected = [np.asarray(models.colorize(models.load_generator(spec), photo)) for spec in (other_weights, release_weights)]
    assert all(a.shape == (60, 80, 3) for a in shown)
    assert np.array_equal(shown[1], expected[0]) and np.array_equal(shown[2], expected[1])  # each column is its model's output
    assert np.abs(expected[0].astype(int) - expected[1]).mean() > 5  # and the two models differ
    assert np.ptp(shown[0].astype(int), axis=2).max() <= 1  # the input column is gray


@pytest.mark.parametrize("raw, message", [(b"not an image at all", "bad.png: not a JPEG, PNG or WebP picture"),
                                          (b"", "bad.png: not a JPEG, PNG or WebP picture")])
def test_bad_files_are_a_message_not_a_trace(app, raw, message):
    at = upload(app, "bad.png", raw)
    assert at.error and message in at.error[0].value and len(at.image) == 0


def test_oversized_uploads_are_refused(app):
    at = upload(app, "big.png", np.random.default_rng(0).bytes(2 * 2**20))
    assert at.error and "limit is 1 MB" in at.error[0].value


def test_temperature_slider_recolours(app, served, release_weights, monkeypatch):
    import models

    monkeypatch.setattr(sys, "argv", ["app.py", "--runtime=torch", "--baseline=", f"--ckpt={release_weights}"])  # each run reads it: no baseline column
    photo = Image.fromarray(synthetic_rgb(1, 48, 64))
    at = upload(app, "photo.png", png(photo))
    assert len(at.image) == 2
    before = np.asarray(Image.open(io.BytesIO(served[at.image[1].value[0]])))
    at.slider[0].set_value(0.38).run()
    after = np.asarray(Image.open(io.BytesIO(served[at.image[1].value[0]])).convert("RGB"))
    expected = np.asarray(models.colorize(models.load_generator(release_weights), photo, temperature=0.38))
    assert np.array_equal(after, expected) and not np.array_equal(before[..., :3], after)


def test_a_bad_option_is_one_line_in_the_page_and_the_terminal(monkeypatch, capsys):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setattr(sys, "argv", ["app.py", "--device=tpu"])
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception and len(at.error) == 1 and "--device must be auto, cpu or cuda" in at.error[0].value
    assert "--device must be auto, cpu or cuda" in capsys.readouterr().err


def test_two_models_with_one_file_name_get_two_captions_and_download_names(monkeypatch, release_weights, tmp_path):
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
    from streamlit.testing.v1 import AppTest

    downloads: list[str] = []
    original = MemoryMediaFileStorage.load_and_get_id

    def keep_name(self, path_or_data, mimetype, kind, filename=None):
        downloads.extend([filename] if filename else [])
        return original(self, path_or_data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", keep_name)
    for run in ("finetune", "gan"):
        (tmp_path / run).mkdir()
        (tmp_path / run / "ckpt.pt").write_bytes(Path(release_weights).read_bytes())
    monkeypatch.setattr(sys, "argv", ["app.py", "--runtime=torch", f"--baseline={tmp_path / 'finetune' / 'ckpt.pt'}", f"--ckpt={tmp_path / 'gan' / 'ckpt.pt'}"])
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at = upload(at, "photo.png", png(Image.fromarray(synthetic_rgb(2, 24, 32))))
    captions = [c for img in at.image for c in img.captions]
    assert captions == ["Input (gray)", "Baseline: finetune/ckpt.pt", "Model: gan/ckpt.pt"]
    assert downloads == ["photo-gray.png", "photo-finetune_ckpt.png", "photo-gan_ckpt.png"]


def test_transparency_is_kept_as_on_the_command_line(app, served, release_weights):
    import models

    rgba = np.dstack([synthetic_rgb(3, 40, 56), np.tile(np.linspace(0, 255, 56).astype(np.uint8), (40, 1))])
    at = upload(app, "logo.png", png(Image.fromarray(rgba, "RGBA")))
    shown = [Image.open(io.BytesIO(served[img.value[0]])) for img in at.image]
    downloads = [Image.open(io.BytesIO(served[b.proto.url])) for b in at.download_button]
    expected = models.colorize(models.load_generator(release_weights), Image.fromarray(rgba, "RGBA"))
    assert all(im.mode == "RGBA" and np.array_equal(np.asarray(im)[..., 3], rgba[..., 3]) for im in shown + downloads)
    assert np.array_equal(np.asarray(shown[2]), np.asarray(expected)) and np.array_equal(np.asarray(downloads[2]), np.asarray(expected))


def test_a_missing_model_is_said_at_start_and_the_gray_panel_is_l_alone(monkeypatch, served, release_weights, tmp_path):
    from streamlit.testing.v1 import AppTest
    from skimage import color

    import models

    monkeypatch.setattr(sys, "argv", ["app.py", "--runtime=torch", f"--baseline={tmp_path / 'missing.pt'}", f"--ckpt={release_weights}"])
    tried = []
    load = models.load_generator
    monkeypatch.setattr(models, "load_generator", lambda spec, *a, **k: tried.append(spec) or load(spec, *a, **k))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert at.error and "missing.pt: no such file" in at.error[0].value  # before any upload
    rgb = synthetic_rgb(4, 50, 70)
    at = upload(at, "photo.png", png(Image.fromarray(rgb)))
    assert [w.value for w in at.warning] == [f"Baseline: missing.pt is not shown: {tmp_path / 'missing.pt'}: no such file (a model "
                                             "is colorgan, eccv16, siggraph17, scratch, a .pth/.pt/.safetensors file, an exported "
                                             "folder or hf:OWNER/NAME)"]  # in place of its column
    gray = np.asarray(Image.open(io.BytesIO(served[at.image[0].value[0]])).convert("RGB"))
    assert len(at.image) == 2 and np.ptp(gray.astype(int), axis=2).max() <= 1  # the baseline column is left out
    assert np.abs(color.rgb2lab(gray)[..., 0] - color.rgb2lab(rgb)[..., 0]).max() < 0.6  # the photo's own L
    assert tried.count(str(tmp_path / "missing.pt")) == 1  # not tried again at every rerun (offline: 30 s timeouts each)
    at.toggle(key="show_original").set_value(True).run()  # a colour upload can be seen as it is too
    original = np.asarray(Image.open(io.BytesIO(served[at.image[0].value[0]])).convert("RGB"))
    assert np.array_equal(original, rgb) and at.image[0].captions == ["The original"]


def test_hints_are_placed_edited_suggested_and_downloaded(monkeypatch, release_weights, siggraph_weights, script, tmp_path, served):
    from streamlit.testing.v1 import AppTest

    import hints
    import models

    monkeypatch.setattr(sys, "argv", ["app.py", "--runtime=torch", f"--baseline={release_weights}", f"--ckpt={siggraph_weights}"])
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    photo = Image.fromarray(synthetic_rgb(0, 60, 80))
    raw = png(photo)
    upload(at, "photo.png", raw)
    G = models.load_generator(siggraph_weights)
    automatic = models.colorize(G, photo)
    assert np.array_equal(np.asarray(at.session_state.result), np.asarray(automatic)) and not at.session_state.hints
    # a hint by its pixel: its colour starts as the model's colour there
    at.number_input(key="hint_x").set_value(20)
    at.number_input(key="hint_y").set_value(15)
    at.sidebar.button[0].click()
    at.run()
    assert [e.label for e in at.sidebar.expander] == ["1 hint"]  # not "1 hints"
    assert at.session_state.hints[0]["x"] == 20 and at.sidebar.color_picker[0].value == "#%02x%02x%02x" % automatic.getpixel((20, 15))
    at.sidebar.color_picker[0].set_value("#00c000")
    at.run()
    # a click on the picture (displayed at 160 wide): photo pixels (60, 45)
    at.session_state["click"] = {"x": 120, "y": 90, "width": 160, "height": 120, "unix_time": 1}
    at.run()
    assert [(h["x"], h["y"]) for h in at.session_state.hints] == [(20, 15), (60, 45)]
    suggest = [b for b in at.sidebar.button if (b.key or "").startswith("s1-")]  # the second hint's suggested colours
    assert len(suggest) >= 2 and not at.exception
    suggestion = suggest[0].help.split()[-1]
    suggest[0].click()
    at.run()
    assert at.sidebar.color_picker[1].value == suggestion
    shown = at.session_state.result
    size = round(80 * hints.DEFAULT_SIZE / 256)
    expected = models.colorize(G, photo, hints=hints.place(hints.parse_json(
        '{"points": [{"x": 20, "y": 15, "color": "#00c000", "size": %d}, {"x": 60, "y": 45, "color": "%s", "size": %d}]}'
        % (size, suggestion, size), "t"), 80, 60))
    assert np.array_equal(np.asarray(shown), np.asarray(expected))
    assert np.abs(np.asarray(shown, int) - np.asarray(automatic, int))[10:20, 15:25].mean() > 3  # the colour moved there
    # the downloaded JSON makes the same picture with colorize.py
    # a click in "move" mode moves the newest hint, its colour kept
    at.sidebar.radio[0].set_value("moves the newest hint")
    at.session_state["click"] = {"x": 100, "y": 20, "width": 160, "height": 120, "unix_time": 2}
    at.run()
    assert [(h["x"], h["y"]) for h in at.session_state.hints] == [(20, 15), (50, 10)] and at.sidebar.color_picker[1].value == suggestion
    at.session_state["click"] = {"x": 120, "y": 90, "width": 160, "height": 120, "unix_time": 3}  # and back
    at.run()
    assert np.array_equal(np.asarray(at.session_state.result), np.asarray(shown))
    download = next(b for b in at.sidebar.get("download_button") if "JSON" in b.label)
    (tmp_path / "p.png").write_bytes(raw)
    (tmp_path / "h.json").write_bytes(served[download.proto.url])  # colorize.py runs last: it sets sys.argv
    next(b for b in at.sidebar.button if b.key == "del1").click()
    at.run()
    assert len(at.session_state.hints) == 1
    next(b for b in at.sidebar.button if b.label == "Clear hints").click()
    at.run()
    assert not at.session_state.hints and np.array_equal(np.asarray(at.session_state.result), np.asarray(automatic))
    clear = Image.fromarray(synthetic_rgb(1, 60, 80)).convert("RGBA")
    clear.putalpha(Image.linear_gradient("L").resize((80, 60)))  # a transparent PNG on the clickable picture (JPEG)
    upload(at, "clear.png", png(clear))  # no exception
    at.sidebar.button[0].click()
    at.run()
    assert not at.exception and at.session_state.result.mode == "RGBA", at.exception
    assert len(at.session_state.hints) == 1, (at.session_state.hints, [b.label for b in at.sidebar.button])
    assert script("colorize.py", str(tmp_path / "p.png"), str(tmp_path / "o.png"), f"--ckpt={siggraph_weights}",
                  f"--hints={tmp_path / 'h.json'}", "--runtime=torch")[0] == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o.png").convert("RGB")), np.asarray(shown))


def test_choices_are_the_samples_each_downloadable_and_one_can_be_kept_editing_as_hints(monkeypatch, hypercolumn_weights,
                                                                                       siggraph_weights, served):
    from streamlit.testing.v1 import AppTest

    import models
    import sampling

    monkeypatch.setattr(sys, "argv", ["app.py", "--runtime=torch", f"--baseline={hypercolumn_weights}", f"--ckpt={siggraph_weights}"])
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    photo = Image.fromarray(synthetic_rgb(2, 60, 80))
    upload(at, "photo.png", png(photo))
    at.number_input(key="n_choices").set_value(3)
    at.number_input(key="choice_seed").set_value(4)
    at.run()
    assert not at.exception and not at.error
    choices = [img for img in at.image if any(c.startswith("Choice") for c in img.captions)]
    assert [img.captions[0] for img in choices] == ["Choice 1", "Choice 2", "Choice 3"]
    drawn = sampling.sample_ab(models.load_generator(siggraph_weights), models.small_copy(photo)[None], 3, 4)[0]
    for img, ab in zip(choices, drawn):  # the last model's samples, painted at the photo's size
        shown = np.asarray(Image.open(io.BytesIO(served[img.value[0]])).convert("RGB"))
        assert np.array_equal(shown, np.asarray(models.paint(photo, ab)))
    assert len({served[img.value[0]] for img in choices}) == 3
    upload(at, "other.png", png(Image.fromarray(synthetic_rgb(3, 60, 80))))  # a new photo keeps how many choices
    assert at.number_input(key="n_choices").value == 3 and sum(c.startswith("Choice") for img in at.image for c in img.captions) == 3
    upload(at, "photo.png", png(photo))
    next(b for b in at.button if b.key == "choice-keep1").click()  # the second choice, to edit further
    at.run()
    import data
    import hints

    hints_now = at.session_state.hints
    expected = hints.points_from(drawn[1], data.uint8_to_l(models.small_copy(photo)[None])[0], 80, 60)
    assert [(h["x"], h["y"], h["color"]) for h in hints_now] == [(p.x, p.y, "#%02x%02x%02x" % p.rgb) for p in expected]
    assert len(hints_now) == 16 and all(h.get("from_choice") for h in hints_now)
    lab = data.rgb_to_lab(torch.tensor(expected[5].rgb, dtype=torch.float32).view(1, 3, 1, 1) / 255)[0, 1:, 0, 0]
    assert (lab - drawn[1][:, 64:128, 64:128].mean((1, 2))).abs().max() < 1.5  # cell 5's colour: the choice's mean there


def test_vividness_scales_every_columns_colour(app, served, release_weights):
    import models

    photo = Image.fromarray(synthetic_rgb(0, 60, 80))
    at = upload(app, "photo.png", png(photo))
    next(s for s in at.slider if s.label.startswith("Vividness")).set_value(0.5)
    at.run()
    shown = np.asarray(Image.open(io.BytesIO(served[at.image[2].value[0]])).convert("RGB"))
    G, small = models.load_generator(release_weights), models.small_copy(photo)[None]
    assert np.array_equal(shown, np.asarray(models.colorize(G, photo, vividness=0.5)))
    assert torch.equal(models.predict_ab(G, small, vividness=0.5), 0.5 * models.predict_ab(G, small))  # a chroma gain


def test_old_prints_are_repaired_before_colour_and_the_mask_shown(app, served, release_weights):
    import damage
    import models
    import restoration

    clean = np.tile(np.linspace(0.2, 0.8, 96, dtype=np.float32), (72, 1))
    hurt = damage.damage(clean, np.random.default_rng(1), scratches=(3, 3), cracks=(0, 0), specks=0, grain=(0, 0), fading=0)
    photo = Image.fromarray(damage.sepia(hurt.gray))
    at = upload(app, "old.png", png(photo))
    model_column = lambda: next(img for img in at.image if img.captions[0].startswith("Model"))  # noqa: E731
    plain = np.asarray(Image.open(io.BytesIO(served[model_column().value[0]])).convert("RGB"))
    at.toggle(key="repair").set_value(True).run()
    assert not at.exception and "Repaired:" in " ".join(c.value for c in at.sidebar.caption)
    mask_shown = next(img for img in at.sidebar.image if "filled pixels" in img.captions[0])
    fixed_img, fixed = restoration.restore_image(photo, restoration.load_detector())
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(served[mask_shown.value[0]]))) > 0, fixed.mask)
    shown = np.asarray(Image.open(io.BytesIO(served[model_column().value[0]])).convert("RGB"))
    assert np.array_equal(shown, np.asarray(models.colorize(models.load_generator(release_weights), fixed_img)))
    assert not np.array_equal(shown, plain)
