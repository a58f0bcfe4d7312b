"""Colorize a photo in the browser: streamlit run app.py -- --baseline=eccv16 --ckpt=runs/gan/ckpt.pt

Three columns: the photo as the models see it (gray), the baseline's colorization, the GAN's.
"""

import sys
from pathlib import Path

import streamlit as st
import torch

import configurator
import models
from data import ImageError, load_image, png_bytes

# -----------------------------------------------------------------------------
baseline = "eccv16"  # middle column's model spec ("" hides it)
ckpt = "runs/gan/ckpt.pt"  # right column's model spec ("" hides it)
max_pixels = 50_000_000  # refuse larger images (decompression bombs)
device = "auto"  # auto, cpu or cuda
# -----------------------------------------------------------------------------
st.set_page_config(page_title="colorgan", layout="wide")
try:
    config, _ = configurator.configure(globals())
    if device not in ("auto", "cpu", "cuda"):
        raise SystemExit(f"app.py: --device must be auto, cpu or cuda, not {device!r}")
except SystemExit as e:  # a bad option: one line in the terminal and in the page, not a blank page
    print(e, file=sys.stderr)
    st.error(str(e))
    st.stop()
device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
max_upload_mb = st.get_option("server.maxUploadSize")  # the limit the uploader states (.streamlit/config.toml)


@st.cache_resource
def generator(spec: str, device: str) -> models.ECCV16Generator:
    """Each model is loaded once per server."""
    return models.load_generator(spec, device)


def as_gray(img):
    """The photo's CIELAB L alone, as RGB (alpha kept): what the models see; painted in bands, as the colour is, so a
    large upload costs no full-size float copy."""
    return models.paint(img, torch.zeros(2, 1, 1))


st.title("colorgan: automatic colorization")
broken = {}  # each model is checked (and loaded, once per server) at start, not after the first upload
for spec in dict.fromkeys(s for s in (baseline, ckpt) if s):
    try:
        generator(spec, device)
    except models.ModelError as e:
        broken[spec] = str(e)
        st.error(str(e))
upload = st.file_uploader("A photo (JPEG, PNG or WebP); colour photos are shown as the gray input the models see",
                          type=["jpg", "jpeg", "png", "webp"])
temperature = st.slider("Temperature: 1 is the release's mean colour, lower is more saturated (the paper uses 0.38)",
                        0.2, 1.0, 1.0, 0.02)
if upload is None:
    st.stop()
if upload.size > max_upload_mb * 2**20:
    st.error(f"{upload.name} is {upload.size / 2**20:.0f} MB; the limit is {max_upload_mb} MB.")
    st.stop()
try:
    photo = load_image(upload.getvalue(), keep_alpha=True, max_pixels=max_pixels)  # transparency kept, as colorize.py keeps it
except ImageError as e:
    st.error(f"{upload.name}: {str(e).split(': ', 1)[-1]}")
    st.stop()

stem = Path(upload.name).stem
names = models.spec_labels([baseline, ckpt])  # two models called ckpt.pt get two captions and two file names
panels = [("Input (gray)", None, "gray"), (f"Baseline: {names[0]}", baseline, names[0]), (f"GAN: {names[1]}", ckpt, names[1])]
for column, (title, spec, name) in zip(st.columns(3), panels):
    with column:
        if spec == "" or spec in broken:
            continue
        with st.spinner("colorizing..."):
            img = as_gray(photo) if spec is None else models.colorize(generator(spec, device), photo, temperature=temperature)
        st.image(img, caption=title, width="stretch", output_format="PNG")  # exactly the downloaded pixels
        download = f"{stem}-{Path(name.replace('/', '_')).stem if spec else name}.png"
        st.download_button("Download PNG", png_bytes(img), download, "image/png", key=title)
