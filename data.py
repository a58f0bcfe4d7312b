"""Data: sRGB <-> CIELAB on torch tensors, the one image loader, and the datasets.

Lab follows scikit-image exactly (sRGB, D65, 2-degree observer): L in [0, 100], a and b raw.
Workers decode and augment to uint8 tensors; the Lab conversion runs batched on the device.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import stat
import struct
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

# scikit-image's sRGB -> XYZ matrix and D65 white point, so our numbers are theirs.
XYZ_FROM_RGB = (
    (0.412453, 0.357580, 0.180423),
    (0.212671, 0.715160, 0.072169),
    (0.019334, 0.119193, 0.950227),
)
RGB_FROM_XYZ = tuple(map(tuple, np.linalg.inv(np.array(XYZ_FROM_RGB)).tolist()))
WHITE_D65 = (0.95047, 1.0, 1.08883)
RGB_FROM_WHITE_XYZ = tuple(tuple(m * w for m, w in zip(row, WHITE_D65)) for row in RGB_FROM_XYZ)  # XYZ / white -> RGB
MAX_PIXELS = 100_000_000  # refuse larger images: a decompression bomb costs gigabytes
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".mov", ".m4v", ".mkv", ".avi", ".webm", ".mpeg", ".mpg", ".ts", ".wmv", ".flv"}
WRITE_SUFFIXES = {".mp4": "libx264", ".mov": "libx264", ".m4v": "libx264", ".mkv": "ffv1", ".webm": "libvpx-vp9",
                  ".avi": "ffv1"}  # the video outputs colorgan writes, and their codec
# the formats behind those suffixes (JPEG includes cameras' multi-picture MPO), the only ones PIL may open: it decodes by
# content, and an EPS named x.png would otherwise go to Ghostscript
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "DIB", "GIF", "TIFF")
DEFAULT_DATA = "Elriggs/imagenet-50-subset"
MAX_STAND_INS = 16  # consecutive undecodable training photos before the dataset is called broken
HELD_OUT_EVERY = 20  # without a validation split, every 20th photo (5%) is held out for validation
CHROMA_THRESHOLD = 5.0  # Zhang et al.: images with no |a| or |b| above this are treated as gray


class ImageError(ValueError):
    """An input that is not a usable image; the message is one line for the user."""


class DataError(ValueError):
    """A dataset that cannot be found or read; the message is one line for the user."""


# ----------------------------------------------------------------------------- Lab


def _mix(x: torch.Tensor, m: tuple) -> torch.Tensor:
    """Apply a 3x3 colour matrix over dim 1 with elementwise ops (exact in fp32 even under autocast)."""
    c0, c1, c2 = x.unbind(1)
    return torch.stack([r[0] * c0 + r[1] * c1 + r[2] * c2 for r in m], 1)


def _linearize(rgb: torch.Tensor) -> torch.Tensor:
    """Linearise sRGB in [0, 1] (the inverse sRGB companding curve)."""
    return torch.where(rgb > 0.04045, ((rgb.clamp_min(0.04045) + 0.055) / 1.055) ** 2.4, rgb / 12.92)


def _pow(x: torch.Tensor, p: float) -> torch.Tensor:
    """x ** p for x > 0 as exp(p log x): as accurate in float32, twice as fast as pow on CPU."""
    return torch.exp(torch.log(x) * p)


def _f(t: torch.Tensor) -> torch.Tensor:
    """CIE f(t): cube root above 0.008856, linear below (clamped so gradients stay finite)."""
    return torch.where(t > 0.008856, _pow(t.clamp_min(0.008856), 1 / 3), 7.787 * t + 16 / 116)


def _lab_from_linear(lin: torch.Tensor) -> torch.Tensor:
    """Linear RGB (N,3,H,W) -> Lab (N,3,H,W)."""
    xyz = _mix(lin, XYZ_FROM_RGB)
    fx, fy, fz = _f(xyz / xyz.new_tensor(WHITE_D65).view(1, 3, 1, 1)).unbind(1)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], 1)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB (N,3,H,W) in [0,1] -> Lab (N,3,H,W), as skimage.color.rgb2lab."""
    return _lab_from_linear(_linearize(rgb.float()))


def _srgb_table(device: torch.device) -> torch.Tensor:
    """The linear value of each 8-bit sRGB level (256,): a lookup instead of a power per pixel."""
    return _linearize(torch.arange(256, device=device) / 255)


def _linear_table(rgb: torch.Tensor) -> torch.Tensor:
    """uint8 sRGB -> linear RGB through the 256-entry table."""
    return _srgb_table(rgb.device).take(rgb.long())  # take is twice as fast as indexing on CPU


def uint8_to_l(rgb: torch.Tensor) -> torch.Tensor:
    """uint8 RGB (N,3,H,W) -> L (N,1,H,W): only the luminance row of uint8_to_lab (white Y is 1)."""
    # Y from three tables of weighted linear values: the same float32 sums as _mix, half the passes
    table, idx = _srgb_table(rgb.device), rgb.long()
    r, g, b = (w * table for w in XYZ_FROM_RGB[1])
    y = r.take(idx[:, 0:1]) + g.take(idx[:, 1:2]) + b.take(idx[:, 2:3])
    return 116 * _f(y) - 16


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """Lab (N,3,H,W) -> sRGB (N,3,H,W) clipped to [0,1], as skimage.color.lab2rgb; differentiable."""
    L, a, b = lab.float().unbind(1)
    fy = (L + 16) / 116
    f = torch.stack([fy + a / 500, fy, (fy - b / 200).clamp_min(0)], 1)
    xyz = torch.where(f > 0.2068966, f.pow(3), (f - 16 / 116) / 7.787)  # in units of the white point
    lin = _mix(xyz, RGB_FROM_WHITE_XYZ)
    rgb = torch.where(lin > 0.0031308, 1.055 * _pow(lin.clamp_min(0.0031308), 1 / 2.4) - 0.055, lin * 12.92)
    return rgb.clamp(0, 1)


def gray_rgb(L: torch.Tensor) -> torch.Tensor:
    """L (N,1,H,W) -> the sRGB gray picture (N,3,H,W) in [0,1] with that lightness: what an ImageNet network sees of it."""
    return lab_to_rgb(torch.cat([L, torch.zeros_like(L).expand(-1, 2, -1, -1)], 1))


def uint8_to_lab(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 RGB (N,3,H,W) on any device -> (L (N,1,H,W), ab (N,2,H,W)) in float32, as rgb_to_lab."""
    lab = _lab_from_linear(_linear_table(batch))
    return lab[:, :1], lab[:, 1:]


def colorization_grid(L: torch.Tensor, preds: list[torch.Tensor], ab: torch.Tensor) -> torch.Tensor:
    """One RGB image (3,H',W') in [0,1] with a row per image: gray | each prediction | truth."""
    from torchvision.utils import make_grid  # only figures need it

    cols = [torch.zeros_like(ab), *preds, ab]
    tiles = torch.stack([lab_to_rgb(torch.cat([L, c.float()], 1)) for c in cols], 1)
    return make_grid(tiles.flatten(0, 1), nrow=len(cols), padding=0)


def has_chroma(ab: torch.Tensor) -> torch.Tensor:
    """(N,) bool: True where some |a| or |b| exceeds 5 (Zhang et al. skip the rest)."""
    return ab.abs().flatten(1).amax(1) > CHROMA_THRESHOLD


# ----------------------------------------------------------------------------- images


def _to_8bit(img: Image.Image) -> Image.Image:
    """Bring 16-bit, 32-bit and float images to 8 bits by scaling, not clipping."""
    arr = np.asarray(img)
    if img.mode == "F":
        arr = np.clip(arr, 0, 1) * 255 if arr.max() <= 1 else np.clip(arr, 0, 255)
    elif arr.max() > 255:
        arr = arr.astype(np.float64) * (255 / 65535)
    return Image.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8), "L")


GRAY16_MODES = ("I;16", "I;16B", "I;16L", "I")  # PIL's 16-bit gray (and the 32-bit integer mode it opens some in)


RGB16 = "colorgan_rgb16"  # img.info key of a 16-bit RGB TIFF's or PNG's own pixels (PIL reads them as 8 bits)
TRANSPOSE = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1], 5: lambda a: a.swapaxes(0, 1),
             6: lambda a: a.swapaxes(0, 1)[:, ::-1], 7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
             8: lambda a: a.swapaxes(0, 1)[::-1]}  # EXIF orientation -> the array upright, as ImageOps.exif_transpose


def deep16(img: Image.Image) -> np.ndarray | None:
    """A 16-bit photo's own pixels (what load_image(keep_16bit=True) keeps): uint16 (H,W) gray or (H,W,3) RGB; else None."""
    if img.mode in GRAY16_MODES:
        return np.asarray(img).astype(np.uint16)
    return img.info.get(RGB16)


def deep16_to_l(pixels: torch.Tensor) -> torch.Tensor:
    """16-bit values (h,w) gray or (h,w,3) RGB, float, -> L (1,1,h,w) at full precision (gray: Y is the linear value)."""
    if pixels.ndim == 2:
        return (116 * _f(_linearize(pixels / 65535)) - 16)[None, None]
    return rgb_to_lab(pixels.permute(2, 0, 1)[None] / 65535)[:, :1]


def _rgb16(src, img: Image.Image, rawmode: str | None, orientation: int | None) -> np.ndarray | None:
    """A 16-bit RGB TIFF's or PNG's pixels, where PIL gave 8 bits, turned by its orientation as PIL turned the 8-bit
    picture (img, upright); None for any other file, and for one with an ICC profile (LittleCMS converts the 8-bit
    pixels only: the two are kept alike)."""
    if img.mode != "RGB" or "icc_profile" in img.info:
        return None
    turn = TRANSPOSE.get(orientation, lambda a: a)
    if img.format == "TIFF" and tuple(getattr(img, "tag_v2", {}).get(258, ())) == (16, 16, 16):
        import tifffile

        arr = turn(tifffile.imread(io.BytesIO(src) if isinstance(src, bytes) else src))
    elif img.format == "PNG" and rawmode == "RGB;16B":
        # PIL's decoder keeps each big-endian sample's high byte; the same rows read as little-endian give the low one
        low = _open(src)
        low.tile = [low.tile[0]._replace(args="RGB;16L")]
        arr = (np.asarray(img).astype(np.uint16) << 8) | turn(np.asarray(low))
    else:
        return None
    return np.ascontiguousarray(arr) if arr.dtype == np.uint16 and arr.shape == (img.height, img.width, 3) else None


def _open(src: str | os.PathLike | bytes) -> Image.Image:
    """PIL's lazy opening of a photo file, our own pixel limit deciding instead of PIL's warning; a path that is not a
    regular file (a FIFO, a device) is refused unopened: reading it would block or never end."""
    if not isinstance(src, bytes) and os.path.exists(src) and not os.path.isdir(src) and not stat.S_ISREG(os.stat(src).st_mode):
        raise ImageError(f"{src}: not a regular file (a pipe or a device is never read)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(io.BytesIO(src) if isinstance(src, bytes) else src, formats=IMAGE_FORMATS)


def displayed_size(src: str | os.PathLike) -> tuple[int, int]:
    """A photo's (width, height) as load_image gives it (its orientation applied), from the header; OSError,
    UnidentifiedImageError or ValueError when it cannot be read."""
    with _open(src) as img:
        turned = img.format != "TIFF" and img.getexif().get(274) in (5, 6, 7, 8)  # Pillow 13 turns a TIFF's size itself
        return (img.height, img.width) if turned else img.size


def as_rgb8(img: Image.Image) -> Image.Image:
    """The 8-bit RGB picture of a photo load_image gave (a 16-bit gray one scaled to 8 bits, not clipped)."""
    return img if img.mode == "RGB" else (_to_8bit(img) if img.mode in GRAY16_MODES else img).convert("RGB")


@contextlib.contextmanager
def _refusals(name: str, max_pixels: int):
    """The ways a file fails to be one photo, each as a one-line ImageError."""
    try:
        yield
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{name}: is a directory, not an image") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file (or not one of {', '.join(sorted(IMAGE_SUFFIXES))})") from None
    except Image.DecompressionBombError:
        raise ImageError(f"{name}: over the limit of {max_pixels:,} pixels (a decompression bomb?)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{name}: cannot decode ({e})") from None


def _one_picture(img: Image.Image, name: str, max_pixels: int) -> None:
    """Refuse, from its header, a file larger than max_pixels or of several pages or frames."""
    if img.width * img.height > max_pixels:
        raise Image.DecompressionBombError(name)
    frames = getattr(img, "n_frames", 1)
    if frames > 1 and img.format != "MPO":  # a camera's MPO holds the photo and its preview: the first is the photo
        raise ImageError(f"{name}: holds {frames} pages or frames; colorgan colorizes one picture a file (split it "
                         "first, e.g. with ImageMagick: convert in.tif page-%d.png)")


def check_header(src: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> None:
    """Refuse (ImageError) what load_image would refuse from the file's header alone, without decoding it: a missing
    file, not an image, too many pixels, several pages."""
    with _refusals(str(src), max_pixels), _open(src) as img:
        _one_picture(img, str(src), max_pixels)


def unreadable(paths: list[Path], max_pixels: int = MAX_PIXELS) -> dict[Path, str]:
    """The photos among paths whose header check_header refuses, each with its one-line reason (videos left out)."""
    found = {}
    for path in paths:
        if path.suffix.lower() not in VIDEO_SUFFIXES:
            try:
                check_header(path, max_pixels)
            except ImageError as e:
                found[path] = str(e)
    return found


def load_image(src: str | os.PathLike | bytes, keep_alpha: bool = False, max_pixels: int = MAX_PIXELS,
               keep_16bit: bool = False) -> Image.Image:
    """Open anything PIL reads as an upright 8-bit RGB (or RGBA) image; ImageError otherwise. keep_16bit keeps a 16-bit
    photo's precision too (see deep16): a gray one in its own mode (I;16 or I), a 16-bit RGB TIFF's or PNG's pixels beside
    the 8-bit picture."""
    name = "<bytes>" if isinstance(src, bytes) else str(src)
    with _refusals(name, max_pixels):
        img = _open(src)
        _one_picture(img, name, max_pixels)
        turned = getattr(img, "tag_v2", {}).get(274)  # a TIFF's orientation: Pillow 13 applies it while loading
        rawmode = img.tile[0].args if img.format == "PNG" and img.tile else None  # the decoder's (gone once loaded)
        img.load()
        if img.format == "PNG":
            turned = img.getexif().get(274)  # what exif_transpose turns the picture by
        ImageOps.exif_transpose(img, in_place=True)  # in place: a 12 MP photo is not copied
        rgb16 = _rgb16(src, img, rawmode, turned) if keep_16bit else None
    info = img.info  # EXIF (its orientation applied), ICC profile, text: what an output keeps
    if keep_16bit and img.mode in GRAY16_MODES and np.asarray(img).max() > 255:  # (values up to 255: 8-bit data)
        img.info = info
        return img
    if img.mode in GRAY16_MODES or img.mode == "F":
        img = _to_8bit(img)
    has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
    mode = "RGBA" if keep_alpha and has_alpha else "RGB"
    img = img if img.mode == mode else img.convert(mode)
    img.info = info
    if rgb16 is not None and mode == "RGB":
        img.info[RGB16] = rgb16
    return _to_srgb(img) if info.get("icc_profile") else img


def _to_srgb(img: Image.Image) -> Image.Image:
    """Pixels in a colour space other than sRGB (Adobe RGB, Display P3, a scanner's) converted to sRGB with LittleCMS."""
    from PIL import ImageCms

    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(img.info["icc_profile"]))
        if profile.profile.xcolor_space.strip() != "RGB" or "srgb" in ImageCms.getProfileDescription(profile).lower():
            return img  # gray scans keep their gray values: the model sees L, and L is what a gray profile encodes
        out = ImageCms.profileToProfile(img, profile, ImageCms.createProfile("sRGB"), outputMode=img.mode)
    except ImageCms.PyCMSError:  # a broken profile: the pixels as they are, as most viewers show them
        return img
    out.info = img.info
    return out


RESIZE_MODES = ("stretch", "center_crop")


def resize_square(img: Image.Image, size: int, mode: str = "stretch") -> Image.Image:
    """Bicubic resize to size x size: the whole image stretched (the release's and the seeds' protocol) or its central
    square cropped first (center_crop)."""
    if mode == "center_crop":
        w, h = img.size
        side = min(w, h)
        img = img.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))
    return img.resize((size, size), Image.BICUBIC)


def random_resized_crop(img: Image.Image, size: int, rng: np.random.Generator, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3)) -> Image.Image:
    """Random crop of scale x area and aspect ratio, resized bicubic to size x size (torchvision's rule)."""
    w, h = img.size
    for _ in range(10):
        area = w * h * rng.uniform(*scale)
        aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
        cw, ch = int(round(np.sqrt(area * aspect))), int(round(np.sqrt(area / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            return img.resize((size, size), Image.BICUBIC, box=(x, y, x + cw, y + ch))
    return resize_square(img, size)


def to_uint8_tensor(img: Image.Image) -> torch.Tensor:
    """PIL RGB image -> uint8 tensor (3,H,W)."""
    return torch.from_numpy(np.array(img if img.mode == "RGB" else img.convert("RGB"))).permute(2, 0, 1)


def to_pil(rgb: torch.Tensor) -> Image.Image:
    """RGB in [0,1] (3,H,W), any device -> 8-bit PIL image (rounded)."""
    return Image.fromarray((rgb * 255).round().byte().permute(1, 2, 0).cpu().numpy())


PNG_COLOR_TYPES = {"L": 0, "RGB": 2, "LA": 4, "RGBA": 6}


def png_bytes(img: Image.Image | np.ndarray, level: int = 3, chunks: list[tuple[bytes, bytes]] = ()) -> bytes:
    """An 8-bit L/LA/RGB/RGBA image (or a uint16 RGB array (H,W,3): a 16-bit PNG) as PNG, deflated in parallel bands as
    pigz does: 2-3x faster than PIL's encoder. chunks: (type, body) ancillary chunks (iCCP, eXIf, tEXt...) to write
    before the pixels."""
    deep = isinstance(img, np.ndarray)
    height, width = (img.shape[0], img.shape[1]) if deep else (img.height, img.width)
    # PNG's 16-bit samples are big-endian; its filters work on bytes, so the rows below serve both depths
    pixels = (img.astype(">u2").view(np.uint8) if deep else np.asarray(img)).reshape(height, -1)
    rows = np.empty((height, pixels.shape[1] + 1), np.uint8)
    rows[:, 0] = 2  # PNG's "Up" filter, each row minus the one above: on photos within a few % of PIL's adaptive filters
    rows[0, 1:] = pixels[0]
    np.subtract(pixels[1:], pixels[:-1], out=rows[1:, 1:])
    bands = np.array_split(rows, max(1, min(64, rows.nbytes >> 20)))

    def deflate(i: int) -> bytes:  # raw deflate, byte-aligned at the end, so the bands join into one stream
        z = zlib.compressobj(level, zlib.DEFLATED, -15)
        return z.compress(bands[i]) + z.flush(zlib.Z_FINISH if i == len(bands) - 1 else zlib.Z_SYNC_FLUSH)

    with ThreadPoolExecutor(os.cpu_count()) as pool:  # zlib lets go of the GIL
        parts = list(pool.map(deflate, range(len(bands))))
    parts[0] = zlib.compress(b"", level)[:2] + parts[0]  # the zlib header
    parts[-1] += zlib.adler32(rows).to_bytes(4, "big")

    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(body, zlib.crc32(kind)).to_bytes(4, "big")

    header = struct.pack(">IIBBBBB", width, height, 16 if deep else 8, PNG_COLOR_TYPES["RGB" if deep else img.mode], 0, 0, 0)
    return b"".join([b"\x89PNG\r\n\x1a\n", chunk(b"IHDR", header), *(chunk(k, b) for k, b in chunks),
                     *(chunk(b"IDAT", p) for p in parts), chunk(b"IEND", b"")])


# ----------------------------------------------------------------------------- datasets


class ImageDataset(torch.utils.data.Dataset):
    """Images from a folder or a Hugging Face dataset as (uint8 (3,S,S), label) pairs."""

    def __init__(self, items, classes: list[str], image_size: int, train: bool, seed: int = 0, resize: str = "stretch",
                 split: str | None = None):
        self.items, self.classes, self.image_size, self.train, self.seed = items, classes, image_size, train, seed
        self.resize = resize  # validation: stretch or center_crop
        self.split = split  # the split these items are (None: a source without splits, all of it)
        self.epoch = 0  # set by the training loop: augmentation depends on (seed, epoch, index) only
        self.zoom: tuple[float, float] | None = None  # training crops of zoom[0]..zoom[1] photo pixels a side per crop pixel (None: half to all of the photo)

    def __len__(self) -> int:
        return len(self.items)

    def source(self, i: int) -> tuple[str | bytes, int]:
        """The encoded image (path or bytes) and label of item i."""
        item = self.items[i]
        if isinstance(item, tuple):
            return item
        label = item.get("label")
        return item["image"]["bytes"] or item["image"]["path"], -1 if label is None else int(label)

    def _decode(self, i: int) -> tuple[torch.Tensor, int]:
        """Item i decoded and augmented (train) or stretched (validation)."""
        src, label = self.source(i)
        img = load_image(src)
        if self.train:
            rng = np.random.default_rng((self.seed, self.epoch, i))
            scale = (0.5, 1.0) if self.zoom is None else \
                tuple(min(1.0, (z * self.image_size) ** 2 / (img.width * img.height)) for z in self.zoom)
            img = random_resized_crop(img, self.image_size, rng, scale)
            if rng.random() < 0.5:
                img = img.transpose(Image.FLIP_LEFT_RIGHT)
        else:
            img = resize_square(img, self.image_size, self.resize)
        return to_uint8_tensor(img), label

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, str]:
        """(uint8 (3,S,S), label, bad): bad names the files that failed to decode, one per line ('' when none).

        A bad photo never stops a run: in training the next good item stands in (the batch stays full);
        otherwise the item is a black image with label -1 whose bad field marks it for the metrics to skip.
        """
        bad = []
        for j in range(i, i + (min(len(self), MAX_STAND_INS) if self.train else 1)):
            try:
                return (*self._decode(j % len(self)), "\n".join(bad))
            except ImageError as e:
                bad.append(str(e))
        if self.train:
            raise DataError(f"{MAX_STAND_INS} photos in a row cannot be decoded, from {bad[0]}")
        return torch.zeros(3, self.image_size, self.image_size, dtype=torch.uint8), -1, bad[0]


def _folder_items(root: Path) -> tuple[list[tuple[str, int]], list[str]]:
    """Every image under root (recursive, sorted); the parent folder below root is the class."""
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    names = [str(p.parent.relative_to(root)) if p.parent != root else "" for p in files]
    classes = sorted(set(names))
    index = {c: i for i, c in enumerate(classes)}
    return [(str(p), index[n]) for p, n in zip(files, names)], classes


def _folder_split(root: Path, split: str) -> Path:
    """root/<split> when the folder is split (train/, validation/ or val/), else root itself."""
    names = [split] + (["val", "valid"] if split == "validation" else [])
    return next((root / n for n in names if (root / n).is_dir()), root)


def _hf_dataset(data: str, split: str):
    """A Hugging Face split from the hub, a save_to_disk folder or parquet files, images left encoded."""
    import datasets  # heavy: imported only when a Hugging Face dataset is used

    path = Path(data)
    try:
        if path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
            ds = datasets.load_from_disk(str(path))
            ds = ds[split] if isinstance(ds, datasets.DatasetDict) else ds
        elif path.suffix == ".parquet":
            ds = datasets.load_dataset("parquet", data_files=str(path), split="train")
        else:
            ds = datasets.load_dataset(str(path) if path.is_dir() else data, split=split)
    except KeyError:
        raise DataError(f"{data}: has no split '{split}'") from None
    except ValueError as e:
        if "split" not in str(e).lower():
            raise DataError(f"{data}: cannot load split '{split}' ({str(e).splitlines()[0]})") from None
        raise DataError(f"{data}: has no split '{split}'") from None
    except (OSError, datasets.exceptions.DatasetsError) as e:  # no network, Hub answers, missing files: all derive from these
        raise DataError(f"{data}: cannot load split '{split}' ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                        " -- give --dataset a local image folder, a save_to_disk folder or parquet files when offline") from None
    if "image" not in ds.column_names:
        raise DataError(f"{data}: no 'image' column (columns: {', '.join(ds.column_names)})")
    ds = ds.cast_column("image", datasets.Image(decode=False))
    classes = ds.features["label"].names if "label" in ds.column_names and hasattr(ds.features["label"], "names") else []
    return ds, classes


def _is_hub_name(spec: str) -> bool:
    """OWNER/NAME, the Hub's form, whose first part is not a local folder (a mistyped path is never sent to the Hub)."""
    return re.fullmatch(r"[\w.-]+/[\w.-]+", spec) is not None and not Path(spec.split("/")[0]).exists()


def _split_items(spec: str, split: str) -> tuple[object, list[str], bool]:
    """(items, classes, whether the source has this split) of an image folder, a local HF dataset, parquet or a Hub name."""
    path = Path(spec)
    is_local_hf = path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists()
                                     or any(path.rglob("*.parquet")))
    if path.is_dir() and not is_local_hf:
        root = _folder_split(path, split)
        items, classes = _folder_items(root)
        if not items:
            raise DataError(f"{spec}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found")
        return items, classes, root != path or split == "train"
    if path.exists() or _is_hub_name(spec):
        if path.suffix == ".parquet":
            items, classes = _hf_dataset(spec, "train")
            return items, classes, split == "train"
        items, classes = _hf_dataset(spec, split)
        return items, classes, True
    raise DataError(f"{spec}: no such file or folder (a Hugging Face dataset is named OWNER/NAME)")


def make_dataset(spec: str, split: str, image_size: int, train: bool, seed: int = 0, resize: str = "stretch") -> ImageDataset:
    """The split of --dataset: an image folder (all of it when it has no such subfolder), local HF data or a Hub name."""
    items, classes, has_split = _split_items(spec, split)
    if len(items) == 0:
        raise DataError(f"{spec}: split '{split}' is empty")
    return ImageDataset(items, classes, image_size, train, seed, resize, split if has_split else None)


def train_val_datasets(spec: str, image_size: int, seed: int = 0) -> tuple[ImageDataset, ImageDataset, str]:
    """Training and validation sets; without a validation split, every HELD_OUT_EVERY-th photo is held out of training.

    The third value says where validation comes from, for the run's log.
    """
    train_items, classes, _ = _split_items(spec, "train")
    try:
        val_items, _, has_val = _split_items(spec, "validation")
    except DataError as e:
        if "has no split" not in str(e):
            raise
        has_val = False
    if has_val:
        note = f"validation: the validation split ({len(val_items)} photos)"
    else:
        held = [i for i in range(len(train_items)) if i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1] or [len(train_items) - 1]
        kept = sorted(set(range(len(train_items))) - set(held))
        pick = train_items.select if hasattr(train_items, "select") else (lambda idx: [train_items[i] for i in idx])
        train_items, val_items = pick(kept), pick(held)
        note = f"validation: no validation split, so {len(val_items)} of {len(kept) + len(held)} photos (every {HELD_OUT_EVERY}th) are held out of training"
    for name, items in (("train", train_items), ("validation", val_items)):
        if len(items) == 0:
            raise DataError(f"{spec}: split '{name}' is empty")
    return ImageDataset(train_items, classes, image_size, True, seed), ImageDataset(val_items, classes, image_size, False), note
