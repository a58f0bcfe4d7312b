"""app.py through Streamlit's AppTest, as a user uses it: upload, three images, downloads, errors in the page."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import synthetic_rgb

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture
def app(monkeypatch, release_weights, tmp_path):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setattr(sys, "argv", ["app.py", f"--baseline={release_weights}", f"--ckpt={release_weights}", "--max_upload_mb=1"])
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    return at


def upload(at, name: str, raw: bytes, mime: str = "image/png"):
    at.file_uploader[0].set_value((name, raw, mime))
    at.run()
    assert not at.exception, at.exception
    return at


def test_upload_shows_three_images_with_downloads(app):
    buf = io.BytesIO()
    Image.fromarray(synthetic_rgb(0, 60, 80)).save(buf, "PNG")
    at = upload(app, "photo.png", buf.getvalue())
    captions = [c for img in at.image for c in img.captions]
    assert len(at.image) == 3 and captions[0] == "Input (gray)" and captions[1].startswith("Baseline")
    assert len(at.download_button) == 3 and not at.error


@pytest.mark.parametrize("raw, message", [(b"not an image at all", "not an image"), (b"", "not an image")])
def test_bad_files_are_a_message_not_a_trace(app, raw, message):
    at = upload(app, "bad.png", raw)
    assert at.error and message in at.error[0].value and len(at.image) == 0


def test_oversized_uploads_are_refused(app):
    at = upload(app, "big.png", np.random.default_rng(0).bytes(2 * 2**20))
    assert at.error and "limit is 1 MB" in at.error[0].value
