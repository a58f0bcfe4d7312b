"""Colorize a photo in the browser: streamlit run app.py -- --baseline=eccv16 --ckpt=runs/gan/ckpt.pt

Three columns: the photo as the models see it (gray), the baseline's colorization (colorgan's own model unless told),
the GAN's. The sidebar's vividness applies to every column. "Choices" shows other plausible colourings of the last
model (sampling.py), each to download, or with a hint model to keep editing as hints. When one of the models takes
hints (SIGGRAPH17: --ckpt=siggraph17), click its picture to place a hint; the sidebar edits them (colour, with the
model's own suggestions; size; delete), takes a reference photo's, and downloads them as the JSON that colorize.py
--hints reads. "Old prints" in the sidebar repairs scratches, dust, grain and fading before colour (restore.py's
steps) and shows the filled pixels.
"""

import sys
from pathlib import Path

import numpy as np
import streamlit as st
import torch
from PIL import Image, ImageDraw

import configurator
import hints as hint_files
import models
import reference as references
import restoration
import runtime as runtimes
import sampling
from data import ImageError, has_chroma, lab_to_rgb, load_image, png_bytes, uint8_to_l, uint8_to_lab

# -----------------------------------------------------------------------------
baseline = "colorgan"  # middle column's model spec: colorgan (shipped), eccv16, a file... ("" hides it)
ckpt = ""  # right column's model spec, e.g. runs/gan/ckpt.pt or siggraph17 ("" hides it)
max_pixels = 50_000_000  # refuse larger images (decompression bombs)
device = "auto"  # auto, cpu or cuda
runtime = "auto"  # auto (the fastest on this CPU, as colorize.py), torch (exact) or openvino (CPU; the README's Speed)
precision = "auto"  # auto, fp32, bf16 or int8 (openvino; with --calibration=FOLDER of photos; no hints)
calibration = ""  # int8: a folder of photos to calibrate on (once per model: the result is cached)
reference_weights = "imagenet"  # a reference photo's matching (reference.py): its VGG16, imagenet (from pip), random or a file
# -----------------------------------------------------------------------------
st.set_page_config(page_title="colorgan", layout="wide")
try:
    config, _ = configurator.configure(globals())
    if reference_weights not in ("imagenet", "random") and not Path(reference_weights).is_file():
        raise SystemExit(f"app.py: --reference_weights={reference_weights}: use imagenet, random or a VGG16 weights file")
    if device not in ("auto", "cpu", "cuda"):
        raise SystemExit(f"app.py: --device must be auto, cpu or cuda, not {device!r}")
    runtime, precision, chosen = runtimes.choose(runtime, precision, device)
    try:
        precision = runtimes.check(runtime, precision, device=device)
    except runtimes.RuntimeChoiceError as e:
        raise SystemExit(f"app.py: {e}") from None
    if precision == "int8" and not (calibration and Path(calibration).is_dir()) and not all(runtimes.shipped(s, "int8", 256) for s in (baseline, ckpt) if s):
        raise SystemExit("app.py: --precision=int8 needs --calibration=FOLDER (photos to calibrate on, once per model) "
                         "or models exported with --openvino=int8")
except SystemExit as e:  # a bad option: one line in the terminal and in the page, not a blank page
    print(e, file=sys.stderr)
    st.error(str(e))
    st.stop()
device = ("cuda" if torch.cuda.is_available() and runtime == "torch" else "cpu") if device == "auto" else device
max_upload_mb = st.get_option("server.maxUploadSize")  # the limit the uploader states (.streamlit/config.toml)
FORMATS = "JPEG, PNG or WebP"  # what the uploaders take


@st.cache_resource
def say_once(line: str) -> None:
    """A line in the terminal once per server, not at every rerun of the page."""
    print(line, file=sys.stderr)


if chosen:
    say_once(chosen.replace("colorgan:", "app.py:"))


@st.cache_resource(show_spinner="Loading the models (OpenVINO converts a new model once: about a minute on a small CPU)...")
def loaded(spec: str, device: str) -> tuple[object, str | None]:
    """(the model, None) or (None, the one-line error), once per server: a model that cannot load (offline eccv16) is
    not tried again, with its download timeouts, at every click."""
    try:
        G = models.load_generator(spec, device)
        print(f"app.py: {models.describe(spec, G)}", file=sys.stderr)
        if precision == "int8" and G.takes_hints:
            return None, f"{spec}: --precision=int8 loses hints (the README's Speed): run the app with --precision=bf16 or fp32"
        return runtimes.prepare(G, runtime, precision, 256, runtimes.calibration_photos(calibration), spec=spec), None
    except (models.ModelError, runtimes.RuntimeChoiceError) as e:
        return None, str(e)


def generator(spec: str, device: str):
    """A model that loaded (see broken below)."""
    return loaded(spec, device)[0]


@st.cache_data(max_entries=8, show_spinner=False)
def unguided(spec: str, raw: bytes, repair: bool, temperature: float, vividness: float, _photo: Image.Image) -> Image.Image:
    """A model's colour of the uploaded photo (raw: its bytes; repaired or not) without hints, computed once per photo and
    setting: a click that places a hint recolours the hint model's column alone."""
    return models.colorize(generator(spec, device), _photo, temperature=temperature, vividness=vividness)


@st.cache_resource
def damage_finder() -> restoration.Detector:
    """restore.py's damage finder, loaded at the first repair."""
    return restoration.load_detector()


@st.cache_data(max_entries=4, show_spinner=False)
def repaired(raw: bytes, _photo: Image.Image) -> tuple[Image.Image, Image.Image, str]:
    """The uploaded photo (raw: its bytes) repaired as restore.py repairs it, its mask (filled pixels white), and what
    was done."""
    img, fixed = restoration.restore_image(_photo, damage_finder())
    return img, Image.fromarray(np.where(fixed.mask, 255, 0).astype(np.uint8), "L"), "; ".join(fixed.steps)


def to_hex(rgb) -> str:
    """An RGB triple (0-255) as #rrggbb."""
    return "#" + "".join(f"{int(c):02x}" for c in rgb[:3])


def as_hints(session_hints: list[dict]) -> hint_files.Hints:
    """The app's hints (x, y, colour; one size for all) as hints.py reads a file."""
    return hint_files.Hints("app", tuple(hint_files.Point(h["x"], h["y"], hint_files.parse_color(h["color"], "hint"), hint_size)
                                         for h in session_hints))


def placed(photo) -> torch.Tensor | None:
    """The hints of this session at the model's scale, or None."""
    return hint_files.place(as_hints(st.session_state.hints), *photo.size) if st.session_state.hints else None


def suggested(G, photo, h: dict) -> list[str]:
    """The model's most likely colours at a hint's point (its 529-class head, given the other hints), as #rrggbb."""
    small = models.small_copy(photo)[None].to(device)
    L = uint8_to_l(small)
    given = hint_files.place(as_hints([o for o in st.session_state.hints if o is not h]), *photo.size)
    x, y = int(h["x"] * 256 / photo.width), int(h["y"] * 256 / photo.height)
    tops = hint_files.suggestions(G, L, given[None].to(device), x, y, k=4)
    lab = torch.tensor([[L[0, 0, y, x].item(), a, b] for (a, b), _ in tops]).T[None, :, None, :]
    return list(dict.fromkeys(to_hex((rgb * 255).round().tolist()) for rgb in lab_to_rgb(lab)[0, :, 0].T))  # out of gamut: some alike


def with_markers(img):
    """The picture to click on: RGB (JPEG holds no alpha), a ring at each hint, filled with its colour."""
    shown = img.convert("RGB")
    draw = ImageDraw.Draw(shown)
    r = max(4, max(shown.size) // 80)
    for h in st.session_state.hints:
        box = (h["x"] - r, h["y"] - r, h["x"] + r, h["y"] + r)
        draw.ellipse(box, fill=h["color"], outline="white", width=max(1, r // 3))
        draw.ellipse((box[0] - 1, box[1] - 1, box[2] + 1, box[3] + 1), outline="black")
    return shown


@st.cache_resource
def matcher(weights: str):
    """The reference matching's VGG16, loaded at the first reference photo."""
    return references.Matcher(weights).to(device)


def add_reference(raw: bytes, name: str) -> None:
    """A reference photo's hints (reference.py's matching and rule, as colorize.py --reference), at most the sidebar's
    count of the most confident, as this session's hints in place of an earlier reference's; each can then be moved,
    recoloured or deleted."""
    ref = references.load(raw, max_pixels=max_pixels, name=name)
    L = uint8_to_l(models.small_copy(photo)[None])
    found = references.points(matcher(reference_weights), ref, L.cpu(), *photo.size, st.session_state.ref_threshold,
                              st.session_state.ref_most)[:st.session_state.ref_most]
    st.session_state.hints = [h for h in st.session_state.hints if not h.get("from_reference")]
    for p in found:
        add_hint(p.x, p.y, to_hex(p.rgb), from_reference=True)


def keep_choice(k: int) -> None:
    """Choice k's colours as this session's hints (a cell's mean colour at its centre), to edit further."""
    small = models.small_copy(photo)[None]
    found = hint_files.points_from(st.session_state.choices[k], uint8_to_l(small)[0], *photo.size)
    st.session_state.hints = []
    for p in found:
        add_hint(p.x, p.y, to_hex(p.rgb), from_choice=True)


def as_gray(img):
    """The photo's CIELAB L alone, as RGB (alpha kept): what the models see; painted in bands, as the colour is, so a
    large upload costs no full-size float copy."""
    return models.paint(img, torch.zeros(2, 1, 1))


st.title("colorgan: colorization")
broken = {}  # each model is checked (and loaded, once per server) at start, not after the first upload
for spec in dict.fromkeys(s for s in (baseline, ckpt) if s):
    if error := loaded(spec, device)[1]:
        broken[spec] = error
        st.error(error)
upload = st.file_uploader(f"A photo ({FORMATS}); a colour photo is coloured from its gray, shown beside the original",
                          type=["jpg", "jpeg", "png", "webp"])
temperature = 1.0 if runtime == "openvino" else st.slider(
    "Temperature: 1 is the model's mean colour, lower is more saturated (Zhang et al. use 0.38)", 0.2, 1.0, 1.0, 0.02)
vividness = st.slider("Vividness: the colour's strength, 0 gray, 1 the model's own (colorize.py --vividness)", 0.0, 2.0, 1.0, 0.05)
with st.sidebar:  # drawn before any upload: a widget left undrawn by a run loses its value (a new photo reset it to 0)
    st.header("Choices")
    st.number_input("How many other colourings to draw (coherent samples of the model's colour distribution; sampling.py)",
                    0, 12, 0, key="n_choices")
    st.number_input("Seed (the same seed gives the same choices)", 0, 2**31 - 1, 0, key="choice_seed")
    st.header("Old prints")
    st.toggle("Repair scratches, dust, grain and fading before colour (restore.py)", key="repair")
if upload is None:
    st.stop()
if upload.size > max_upload_mb * 2**20:
    st.error(f"{upload.name} is {upload.size / 2**20:.0f} MB; the limit is {max_upload_mb} MB.")
    st.stop()
try:
    photo = load_image(upload.getvalue(), keep_alpha=True, max_pixels=max_pixels)  # transparency kept, as colorize.py keeps it
except ImageError as e:
    why = str(e).split(": ", 1)[-1]
    st.error(f"{upload.name}: {f'not a {FORMATS} picture' if why.startswith('not an image file') else why}")
    st.stop()
if st.session_state.repair:
    try:
        with st.spinner("repairing..."):
            photo, mask_picture, steps = repaired(upload.getvalue(), photo)
    except restoration.RestoreError as e:
        st.error(str(e))
        st.stop()
    with st.sidebar:
        st.caption(f"Repaired: {steps}")
        st.image(mask_picture, caption="The filled pixels (white)", width="stretch", output_format="PNG")

stem = Path(upload.name).stem
hint_spec = next((s for s in (ckpt, baseline) if s and s not in broken and generator(s, device).takes_hints), None)
photo_id = f"{upload.name}:{upload.size}"
if st.session_state.get("photo") != photo_id:  # a new photo starts without hints
    st.session_state.update(photo=photo_id, hints=[], next_id=0, clicked=st.session_state.get("click"),  # the last photo's click is no hint
                            reference=None)
hint_size = max(1, round(max(photo.size) * hint_files.DEFAULT_SIZE / 256))


def add_hint(x: float, y: float, color: str = "", **marks) -> None:
    """A hint at (x, y), coloured color or as the model colours it there now."""
    color = color or (to_hex(st.session_state.result.getpixel((int(x), int(y)))) if "result" in st.session_state else "#808080")
    st.session_state.hints.append({"id": st.session_state.next_id, "x": x, "y": y, "color": color, **marks})
    st.session_state[f"color{st.session_state.next_id}"] = color
    st.session_state.next_id += 1


def set_color(h: dict, color: str) -> None:
    h["color"] = st.session_state[f"color{h['id']}"] = color


def remove_hints(hint_id: int | None = None) -> None:
    """Delete one hint (or, without an id, all of them)."""
    st.session_state.hints = [h for h in st.session_state.hints if hint_id is not None and h["id"] != hint_id]


if hint_spec:
    click = st.session_state.get("click")  # the last click on the hint model's picture (displayed pixels)
    if click and click != st.session_state.clicked:
        st.session_state.clicked = click
        x, y = min(click["x"] * photo.width / click["width"], photo.width - 1), min(click["y"] * photo.height / click["height"], photo.height - 1)
        if st.session_state.get("click_moves") == "moves the newest hint" and st.session_state.hints:
            st.session_state.hints[-1].update(x=x, y=y)  # its colour kept; its suggestions are for the old place
            st.session_state.hints[-1].pop("suggested", None)
        else:
            add_hint(x, y)
    with st.sidebar:
        st.header("Hints")
        st.caption(f"Click the picture of {models.spec_labels([hint_spec])[0]} to place a hint (or give its pixel); the "
                   "numbered swatches are the model's own suggestions for the newest one")
        st.radio("A click on the picture", ["adds a hint", "moves the newest hint"], key="click_moves", horizontal=True)
        st.number_input("x", 0, photo.width - 1, photo.width // 2, key="hint_x")
        st.number_input("y", 0, photo.height - 1, photo.height // 2, key="hint_y")
        st.button("Add hint", on_click=lambda: add_hint(st.session_state.hint_x, st.session_state.hint_y))  # values at the click
        ref_upload = st.file_uploader("A reference photo: its colours become hints where its content matches this photo's",
                                      type=["jpg", "jpeg", "png", "webp"], key="reference_upload")
        st.slider("Reference: a match this confident becomes a hint", 0.0, 1.0, references.THRESHOLD, 0.01, key="ref_threshold")
        st.number_input("Reference: at most this many hints (the most confident)", 1, 256, 24, key="ref_most")
        if ref_upload is not None and st.session_state.reference != f"{ref_upload.name}:{ref_upload.size}":
            try:
                add_reference(ref_upload.getvalue(), ref_upload.name)
                st.session_state.reference = f"{ref_upload.name}:{ref_upload.size}"
            except (references.ReferenceError, models.VGGError) as e:
                st.error(str(e))
        hint_size = st.slider("Hint size (pixels of the photo)", 1, max(2, max(photo.size) // 8), hint_size)
        count = len(st.session_state.hints)
        listing = st.expander(f"{count} hint{'' if count == 1 else 's'}", expanded=count <= 12)
        for h in list(st.session_state.hints):
            h["color"] = st.session_state.get(f"color{h['id']}", h["color"])
            listing.color_picker(f"Hint at ({h['x']:.0f}, {h['y']:.0f})", key=f"color{h['id']}")
            row = listing.columns(4)
            if h is st.session_state.hints[-1] and "suggested" not in h:  # the newest hint's, once: one more model run
                G = generator(hint_spec, device)
                h["suggested"] = suggested(getattr(G, "source", G), photo, h)  # the PyTorch model: its class head
            for j, (col, color) in enumerate(zip(row, h.get("suggested", []))):
                # a swatch of the colour above its button (a button's own label cannot take an arbitrary colour)
                col.markdown(f'<div title="{color}" style="background:{color};height:1.2em;border-radius:4px;'
                             'border:1px solid #8888"></div>', unsafe_allow_html=True)
                col.button(f"{j + 1}", key=f"s{h['id']}-{j}", help=f"the model suggests {color}", on_click=set_color,
                           args=(h, color))
            listing.button("Delete this hint", key=f"del{h['id']}", on_click=remove_hints, args=(h["id"],))
        if st.session_state.hints:
            st.button("Clear hints", on_click=remove_hints)
            points = [{"x": h["x"], "y": h["y"], "color": h["color"], "size": hint_size}  # exact: the picture reproduced
                      for h in st.session_state.hints]
            reference_name = (st.session_state.reference or "").rsplit(":", 1)[0]  # the points include its hints
            st.download_button("Download hints (JSON for colorize.py --hints)", hint_files.to_json(points, reference_name),
                               f"{stem}.hints.json", "application/json")
names = models.spec_labels([baseline, ckpt])  # two models called ckpt.pt get two captions and two file names
panels = [("Input (gray)", None, "gray"), (f"Baseline: {names[0]}", baseline, names[0]), (f"Model: {names[1]}", ckpt, names[1])]
in_colour = has_chroma(uint8_to_lab(models.small_copy(photo)[None])[1]).item()  # a colour upload: the models see its gray
clickable = next((i for i, (_, spec, _) in enumerate(panels) if hint_spec and spec == hint_spec), None)
for i, (column, (title, spec, name)) in enumerate(zip(st.columns(3), panels)):
    with column:
        if spec == "":
            continue
        if spec in broken:  # said in place, not a blank column
            st.warning(f"{title} is not shown: {broken[spec]}")
            continue
        if spec is None and in_colour and st.toggle("Show the original, in colour", key="show_original"):
            st.image(photo, caption="The original", width="stretch", output_format="PNG")
            continue
        with st.spinner("colorizing..."):
            given = placed(photo) if i == clickable and st.session_state.hints else None
            img = as_gray(photo) if spec is None else \
                unguided(spec, upload.getvalue(), st.session_state.repair, temperature, vividness, photo) if given is None else \
                models.colorize(generator(spec, device), photo, temperature=temperature, hints=given, vividness=vividness)
        if i == clickable:
            from streamlit_image_coordinates import streamlit_image_coordinates

            st.session_state.result = img
            streamlit_image_coordinates(with_markers(img), key="click", width="stretch", image_format="JPEG", jpeg_quality=90)
            n = len(st.session_state.hints)
            st.caption(f"{title}: {n} hint{'' if n == 1 else 's'} (click to add one)")
        else:
            st.image(img, caption=title, width="stretch", output_format="PNG")  # exactly the downloaded pixels
        download = f"{stem}-{Path(name.replace('/', '_')).stem if spec else name}.png"
        st.download_button("Download PNG", png_bytes(img), download, "image/png", key=title)
chooser = next((s for s in (ckpt, baseline) if s and s not in broken), None)
if chooser:
    label = names[1] if chooser == ckpt else names[0]
    st.subheader(f"Choices: other plausible colourings by {label}")
    n, seed = st.session_state.n_choices, st.session_state.choice_seed
    if not n:
        st.caption("Set how many in the sidebar.")
    else:
        with st.spinner("drawing choices..."):
            given = placed(photo) if chooser == hint_spec and st.session_state.hints else None
            drawn = sampling.sample_ab(generator(chooser, device), models.small_copy(photo)[None], n, seed,
                                       None if given is None else given[None], vividness)[0].cpu()
        st.session_state.choices = drawn
        for row in range(0, n, 4):
            for k, column in zip(range(row, min(n, row + 4)), st.columns(4)):
                with column:
                    img = models.paint(photo, drawn[k])
                    st.image(img, caption=f"Choice {k + 1}", width="stretch", output_format="PNG")
                    st.download_button("Download PNG", png_bytes(img), f"{stem}-{Path(label.replace('/', '_')).stem}-choice{k + 1}.png",
                                       "image/png", key=f"choice-download{k}")
                    if hint_spec:
                        st.button("Edit as hints", key=f"choice-keep{k}", help="its colours become hints you can edit",
                                  on_click=keep_choice, args=(k,))
