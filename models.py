"""Models: the ECCV16 and SIGGRAPH17 generators (release-compatible), the PatchGAN discriminator, weights and checkpoints.

Every script gets its generator from load_generator(spec) and writes checkpoints with save_checkpoint.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import sys
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

import data

# the same file, tried in order: the S3 bucket has answered 403 for weeks at a time (richzhang/colorization issues)
ECCV16_URLS = ("https://colorizers.s3.us-east-2.amazonaws.com/colorization_release_v2-9b330a0b.pth",
               "https://people.eecs.berkeley.edu/~rich.zhang/projects/2016_colorization/files/demo_release/"
               "colorization_release_v2-9b330a0b.pth")
SIGGRAPH17_URLS = ("https://colorizers.s3.us-east-2.amazonaws.com/siggraph17-df00044c.pth",)
RELEASES = {"eccv16": ECCV16_URLS, "siggraph17": SIGGRAPH17_URLS}  # spec -> the official weights' mirrors
HUB_REPO = re.compile(r"[\w.-]+/[\w.-]+")  # a Hub repository's OWNER/NAME
DOWNLOAD_TIMEOUT_S = 30  # per connection attempt and per read: a dead mirror moves on instead of hanging
DOWNLOAD_MAX_BYTES = 1 << 30  # the largest weights any script fetches (VGG19) are 548 MB: more is not the file
DOWNLOAD_MAX_S = 3600  # a whole download, however slowly a server trickles bytes
HASH_IN_NAME = re.compile(r"-([a-f0-9]{6,})\.")  # torch.hub's convention: the sha256's first digits before the suffix

# Zhang et al.'s 313 in-gamut ab bins (grid 10): for each a, the range of b. In this order (a, then b)
# they are the release's pts_in_hull.npy; the release's model_out holds them / 110.
AB_BIN_RANGES = {
    -90: (50, 90), -80: (20, 90), -70: (0, 90), -60: (-20, 90), -50: (-30, 100), -40: (-40, 100),
    -30: (-50, 100), -20: (-50, 100), -10: (-60, 100), 0: (-70, 100), 10: (-80, 90), 20: (-80, 90),
    30: (-90, 90), 40: (-100, 90), 50: (-100, 80), 60: (-110, 80), 70: (-110, 80), 80: (-110, 70),
    90: (-110, 70), 100: (-90, 0),
}


class ModelError(ValueError):
    """A model spec, weights file or checkpoint that cannot be used; the message is one line."""


AB_CLASSES = [(a, b) for a in range(-110, 111, 10) for b in range(-110, 111, 10)]  # SIGGRAPH17's 529 classes: a*23 + b


def ab_class(ab: torch.Tensor) -> torch.Tensor:
    """SIGGRAPH17's class (N,H,W) of each ab (N,2,H,W): the nearest point of its 23 x 23 grid of 10."""
    q = ((ab.clamp(-110, 110) + 110) / 10).round().long()
    return q[:, 0] * 23 + q[:, 1]


def ab_bins() -> torch.Tensor:
    """The 313 ab bin centres (313, 2) int64, in the release's order."""
    return torch.tensor([(a, b) for a, (lo, hi) in AB_BIN_RANGES.items() for b in range(lo, hi + 1, 10)])


# ----------------------------------------------------------------------------- networks


def _convs(cin: int, cout: int, strides: list[int], dilation: int = 1) -> list[nn.Module]:
    """3x3 conv + ReLU per stride, the release's building block."""
    layers: list[nn.Module] = []
    for s in strides:
        layers += [nn.Conv2d(cin, cout, 3, s, dilation, dilation), nn.ReLU(True)]
        cin = cout
    return layers


class ECCV16Generator(nn.Module):
    """Zhang et al. 2016: L in [0,100] (N,1,H,W) -> ab in Lab units (N,2,H,W); the release's state dict."""

    arch = "eccv16"
    takes_hints = False

    def __init__(self):
        super().__init__()
        self.model1 = nn.Sequential(*_convs(1, 64, [1, 2]), nn.BatchNorm2d(64))
        self.model2 = nn.Sequential(*_convs(64, 128, [1, 2]), nn.BatchNorm2d(128))
        self.model3 = nn.Sequential(*_convs(128, 256, [1, 1, 2]), nn.BatchNorm2d(256))
        self.model4 = nn.Sequential(*_convs(256, 512, [1, 1, 1]), nn.BatchNorm2d(512))
        self.model5 = nn.Sequential(*_convs(512, 512, [1, 1, 1], dilation=2), nn.BatchNorm2d(512))
        self.model6 = nn.Sequential(*_convs(512, 512, [1, 1, 1], dilation=2), nn.BatchNorm2d(512))
        self.model7 = nn.Sequential(*_convs(512, 512, [1, 1, 1]), nn.BatchNorm2d(512))
        self.model8 = nn.Sequential(nn.ConvTranspose2d(512, 256, 4, 2, 1), nn.ReLU(True),
                                    *_convs(256, 256, [1, 1]), nn.Conv2d(256, 313, 1))
        self.model_out = nn.Conv2d(313, 2, 1, bias=False)
        if not self.model_out.weight.is_meta:  # meta: loading replaces it (and meta arithmetic would import torch._dynamo: 2 s)
            with torch.no_grad():  # from scratch, the output layer starts as what it means: the bin centres
                self.model_out.weight.copy_(ab_bins().float().t()[:, :, None, None] / 110)

    def logits(self, L: torch.Tensor) -> torch.Tensor:
        """The 313 bin logits at 1/4 resolution."""
        x = (L - 50) / 100
        for block in (self.model1, self.model2, self.model3, self.model4, self.model5, self.model6, self.model7, self.model8):
            x = block(x)
        return x

    def forward(self, L: torch.Tensor, hints: torch.Tensor | None = None, temperature: float = 1.0,
                logits: bool = False) -> torch.Tensor:
        """ab at full resolution (or, with logits=True, the bin logits); temperature < 1 is Zhang's annealed mean."""
        if hints is not None:
            raise ValueError("ECCV16 has no hint input (use a SIGGRAPH17 model)")
        if logits:  # through forward, so that DDP sees the classification loss's pass
            return self.logits(L)
        ab = self.model_out(torch.softmax(self.logits(L) / temperature, 1))
        return F.interpolate(ab, scale_factor=4, mode="bilinear") * 110


class SIGGRAPH17Generator(nn.Module):
    """Zhang, Zhu et al. 2017 (user-guided): L in [0,100] (N,1,H,W) and hints (N,3,H,W) -- ab in Lab units where a hint
    is (0 elsewhere) and a 0/1 mask -- -> ab in Lab units (N,2,H,W); H and W multiples of 8; the release's state dict.
    Without hints (None, or an all-zero mask) it is an automatic colorizer."""

    arch = "siggraph17"
    takes_hints = True

    def __init__(self):
        super().__init__()
        self.model1 = nn.Sequential(*_convs(4, 64, [1, 1]), nn.BatchNorm2d(64))
        self.model2 = nn.Sequential(*_convs(64, 128, [1, 1]), nn.BatchNorm2d(128))
        self.model3 = nn.Sequential(*_convs(128, 256, [1, 1, 1]), nn.BatchNorm2d(256))
        self.model4 = nn.Sequential(*_convs(256, 512, [1, 1, 1]), nn.BatchNorm2d(512))
        self.model5 = nn.Sequential(*_convs(512, 512, [1, 1, 1], dilation=2), nn.BatchNorm2d(512))
        self.model6 = nn.Sequential(*_convs(512, 512, [1, 1, 1], dilation=2), nn.BatchNorm2d(512))
        self.model7 = nn.Sequential(*_convs(512, 512, [1, 1, 1]), nn.BatchNorm2d(512))
        self.model8up = nn.Sequential(nn.ConvTranspose2d(512, 256, 4, 2, 1))
        self.model3short8 = nn.Sequential(nn.Conv2d(256, 256, 3, 1, 1))
        self.model8 = nn.Sequential(nn.ReLU(True), *_convs(256, 256, [1, 1]), nn.BatchNorm2d(256))
        self.model9up = nn.Sequential(nn.ConvTranspose2d(256, 128, 4, 2, 1))
        self.model2short9 = nn.Sequential(nn.Conv2d(128, 128, 3, 1, 1))
        self.model9 = nn.Sequential(nn.ReLU(True), *_convs(128, 128, [1]), nn.BatchNorm2d(128))
        self.model10up = nn.Sequential(nn.ConvTranspose2d(128, 128, 4, 2, 1))
        self.model1short10 = nn.Sequential(nn.Conv2d(64, 128, 3, 1, 1))
        self.model10 = nn.Sequential(nn.ReLU(True), nn.Conv2d(128, 128, 3, 1, 1), nn.LeakyReLU(0.2))
        self.model_class = nn.Sequential(nn.Conv2d(256, len(AB_CLASSES), 1))  # the colour distribution at 1/4 resolution
        self.model_out = nn.Sequential(nn.Conv2d(128, 2, 1), nn.Tanh())

    def forward(self, L: torch.Tensor, hints: torch.Tensor | None = None, temperature: float = 1.0,
                logits: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """ab at the input's size (temperature does not apply: the output is a regression); with logits=True,
        (ab, the 529-class logits at 1/4 resolution), the class head on a detached trunk as the release trains it."""
        if L.shape[-1] % 8 or L.shape[-2] % 8:
            raise ValueError(f"SIGGRAPH17 needs a height and width that are multiples of 8, not {tuple(L.shape[-2:])}")
        if hints is None:
            hints = L.new_zeros(L.shape[0], 3, *L.shape[2:])
        x = torch.cat([(L - 50) / 100, hints[:, :2] / 110, hints[:, 2:]], 1)  # the release's input: the mask not centred
        conv1 = self.model1(x)
        conv2 = self.model2(conv1[:, :, ::2, ::2])
        conv3 = self.model3(conv2[:, :, ::2, ::2])
        conv7 = self.model7(self.model6(self.model5(self.model4(conv3[:, :, ::2, ::2]))))
        conv8 = self.model8(self.model8up(conv7) + self.model3short8(conv3))
        conv9 = self.model9(self.model9up(conv8) + self.model2short9(conv2))
        conv10 = self.model10(self.model10up(conv9) + self.model1short10(conv1))
        ab = self.model_out(conv10) * 110
        return (ab, self.model_class(conv8.detach())) if logits else ab


ARCHS = {"eccv16": ECCV16Generator, "siggraph17": SIGGRAPH17Generator}
Generator = ECCV16Generator | SIGGRAPH17Generator


class PatchDiscriminator(nn.Module):
    """pix2pix 70x70 PatchGAN on [L, ab] (normalised inside): (N,1,H,W),(N,2,H,W) -> logits (N,1,30,30) at 256.

    Spectral norm instead of BatchNorm: it has no batch statistics, so real and fake batches in one forward do
    not leak into each other and each logit depends on exactly its 70x70 window. Its power-iteration vectors
    (_u, _v) are buffers that DDP broadcasts from rank 0 like any other. It also bounds D's Lipschitz constant,
    which steadies training.
    """

    def __init__(self, channels: int = 64):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        widths = [3, channels, channels * 2, channels * 4, channels * 8]
        layers: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(widths, widths[1:])):
            layers += [sn(nn.Conv2d(cin, cout, 4, 2 if i < 3 else 1, 1)), nn.LeakyReLU(0.2, True)]
        layers.append(sn(nn.Conv2d(widths[-1], 1, 4, 1, 1)))
        self.model = nn.Sequential(*layers)

    def forward(self, L: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
        """Patch logits, no sigmoid."""
        return self.model(torch.cat([(L - 50) / 100, ab / 110], 1))


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float, apply: torch.Tensor | None = None) -> None:
    """ema <- decay * ema + (1 - decay) * model for parameters, buffers (BN statistics) copied; a no-op where apply
    (a bool tensor on the device) is False, decided on the device without a host sync."""
    params = list(ema.parameters())
    weight = torch.full((), 1 - decay, device=params[0].device)
    if apply is not None:
        weight = weight * apply
    torch._foreach_lerp_(params, list(model.parameters()), [weight] * len(params))
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b if apply is None else torch.where(apply, b, b_ema))


# ----------------------------------------------------------------------------- weights and checkpoints


def temp_beside(path: Path) -> Path:
    """A temp name beside path (its suffix kept), unique to this process and call: two jobs writing one folder never
    share one, and the clean-up never meets a user's file."""
    return path.with_name(f".{path.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp{path.suffix}")


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """write(f) into a temp file beside path (its folder made if needed), flushed to disk, then renamed over path:
    a kill or an error never leaves a half-written path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _download(url: str, dst: Path, sha256_prefix: str) -> None:
    """url -> dst (atomically), the sha256 checked while streaming, size and time capped; OSError/ValueError when it fails."""

    def stream(f: BinaryIO) -> None:
        digest, start, size = hashlib.sha256(), time.monotonic(), 0
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as r:
            total = int(r.headers.get("Content-Length") or 0) or None
            if total and total > DOWNLOAD_MAX_BYTES:
                raise ValueError(f"serves {total:,} bytes, over the limit of {DOWNLOAD_MAX_BYTES:,}")
            with tqdm(total=total, unit="B", unit_scale=True, disable=not sys.stderr.isatty(), leave=False) as bar:
                while chunk := r.read(1 << 20):
                    size += len(chunk)
                    if size > DOWNLOAD_MAX_BYTES:
                        raise ValueError(f"served more than the limit of {DOWNLOAD_MAX_BYTES:,} bytes")
                    if time.monotonic() - start > DOWNLOAD_MAX_S:
                        raise ValueError(f"took more than {DOWNLOAD_MAX_S} s")
                    digest.update(chunk)
                    f.write(chunk)
                    bar.update(len(chunk))
        if not digest.hexdigest().startswith(sha256_prefix):
            raise ValueError(f"served a file whose sha256 {digest.hexdigest()[:8]}... is not {sha256_prefix}")

    write_atomic(dst, stream)


def fetch_weights(urls: list[str] | tuple[str, ...], name: str | None = None) -> Path:
    """The file the urls (mirrors of one file) serve, in torch.hub's cache under name (default: the first url's file
    name): downloaded once from the first mirror that serves it whole; its sha256 must start with the hash in name."""
    name = name or urls[0].rsplit("/", 1)[-1]
    if not (m := HASH_IN_NAME.search(name)):
        raise ModelError(f"{name}: no sha256 in the file name (NAME-<first hex digits>.pth), so a download cannot be checked")
    prefix, dst = m.group(1), hub_cache_file(name)
    aside = ""
    if dst.exists():
        with open(dst, "rb") as f:  # streamed: never 130 MB in memory at once
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        if digest.startswith(prefix):
            return dst
        bad = dst.with_name(f"{name}.sha256-{digest[:8]}")
        dst.replace(bad)  # kept, not deleted: it may be the user's only copy of something
        aside = f"{dst} had sha256 {digest[:8]}..., not {prefix}: moved it to {bad.name}; "
        print(f"colorgan: {aside.rstrip('; ')}", file=sys.stderr)
    failures = []
    for url in urls:
        print(f"downloading {url} to {dst}", file=sys.stderr)
        try:
            _download(url, dst, prefix)
            return dst
        except (OSError, ValueError) as e:  # URLError, HTTPError (403...), timeouts, a wrong or oversized file
            reason = f"HTTP {e.code} {e.reason}" if isinstance(e, urllib.error.HTTPError) else getattr(e, "reason", None) or e
            failures.append(f"{url.split('/')[2]}: {reason}")
    raise ModelError(f"{aside}cannot download {name} ({'; '.join(failures)}); offline, put that file at {dst}")


def publisher_weights(url: str, what: str, option: str, error: type[Exception] = ModelError) -> Path:
    """A publisher's weights file (torchvision's, torch-fidelity's: the sha256 in its name) from torch.hub's cache,
    downloaded once and checked, never unpickled by torch.hub; the failure is one line naming the option that avoids it."""
    try:
        return fetch_weights([url])
    except ModelError as e:
        raise error(f"the {what} weights: {e}, or pass --{option}=PATH (--{option}=random for a smoke test)") from None


def hub_cache_file(url: str) -> Path:
    """Where torch.hub's cache keeps the download of url (or of a file of that name)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def save_checkpoint(ckpt: dict, path: str | os.PathLike) -> None:
    """torch.save, atomically: a kill never leaves a half-written path."""
    write_atomic(path, lambda f: torch.save(ckpt, f))


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A checkpoint or state dict (.pt/.pth, or .safetensors), on the CPU, without unpickling code."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(8)
    except FileNotFoundError:
        raise ModelError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ModelError(f"{path}: a folder without model.safetensors") from None
    if magic.startswith((b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"RIFF")):
        raise ModelError(f"{path}: an image, not a checkpoint (a model is eccv16, scratch, a .pth/.pt/.safetensors file, "
                         "an exported folder or hf:OWNER/NAME)")
    if path.suffix == ".onnx":
        raise ModelError(f"{path}: an ONNX file is for other runtimes; give the folder export.py wrote it in (its "
                         "model.safetensors is the same model)")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except (SafetensorError, OSError) as e:
            raise ModelError(f"{path}: not a readable safetensors file ({str(e).splitlines()[0][:200]})") from None
    try:
        try:  # mapped, not read into a buffer: a 130 MB file costs no extra copy
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):  # files from torch < 1.6 cannot be mapped
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" not in str(e):
            raise ModelError(f"{path}: not a readable checkpoint (no torch tensor archive or state dict)") from None
        raise ModelError(  # torch's own text suggests weights_only=False: never pass that on
            f"{path}: holds Python objects other than tensors and plain values; colorgan does not unpickle "
                         "code -- re-save it as a state dict or safetensors where it was made") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise ModelError(f"{path}: not a readable checkpoint ({str(e).splitlines()[0][:200]})") from None
    if not isinstance(obj, dict):
        raise ModelError(f"{path}: holds a {type(obj).__name__}, not a state dict or checkpoint")
    return obj


def _hub_file(spec: str) -> Path:
    """hf:OWNER/NAME[@REVISION] -> model.safetensors in huggingface_hub's cache (downloaded once; HF_HUB_OFFLINE=1 works)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    repo, _, revision = spec.removeprefix("hf:").partition("@")
    if not HUB_REPO.fullmatch(repo):
        raise ModelError(f"{spec}: a Hub model is hf:OWNER/NAME or hf:OWNER/NAME@REVISION")
    try:
        return Path(hf_hub_download(repo, "model.safetensors", revision=revision or None))
    except RepositoryNotFoundError:
        raise ModelError(f"{spec}: no such model repository on the Hub (or it is private: log in with `hf auth login`)") from None
    except RevisionNotFoundError:
        raise ModelError(f"{spec}: the repository has no revision {revision!r}") from None
    except LocalEntryNotFoundError:  # before EntryNotFoundError, its base class
        raise ModelError(f"{spec}: not in the Hub cache and the Hub cannot be reached (offline?); "
                         "download it once online, or give a local folder") from None
    except EntryNotFoundError:
        raise ModelError(f"{spec}: the repository has no model.safetensors (make one with export.py)") from None
    except HfHubHTTPError as e:
        raise ModelError(f"{spec}: the Hub answered {str(e).splitlines()[0][:200]}") from None


def weights_path(spec: str) -> Path:
    """The file a model spec names: eccv16's cached download, hf:OWNER/NAME's cached file, a folder's model.safetensors, a file."""
    if spec in RELEASES:
        override = os.environ.get(f"COLORGAN_{spec.upper()}_URL")  # one URL, or several separated by spaces
        urls = override.split() if override else RELEASES[spec]
        # an override's file name with a hash is checked against it; one without is checked against the release's
        return fetch_weights(urls, None if HASH_IN_NAME.search(urls[0].rsplit("/", 1)[-1]) else RELEASES[spec][0].rsplit("/", 1)[-1])
    if spec.startswith("hf:"):
        return _hub_file(spec)
    path = Path(spec)
    if path.is_dir():
        if not (path / "model.safetensors").is_file():
            raise ModelError(f"{spec}: a folder without model.safetensors (export.py writes one)")
        return path / "model.safetensors"
    if path.is_file():
        return path
    raise ModelError(f"{spec}: no such file (a model is eccv16, siggraph17, scratch, a .pth/.pt/.safetensors file, an "
                     "exported folder or hf:OWNER/NAME)")


def spec_labels(specs: list[str]) -> list[str]:
    """Distinct short names for model specs: each path's last parts, as few as tell them apart (finetune/ckpt.pt,
    gan/ckpt.pt); a spec given twice gets #1, #2."""
    parts = {s: (s,) if s.startswith("hf:") or "/" not in s else Path(s).parts for s in specs}
    for k in range(1, max(map(len, parts.values()), default=1) + 1):
        names = {s: "/".join(p[-k:]) for s, p in parts.items()}
        if len(set(names.values())) == len(names):
            break
    return [names[s] + (f"#{specs[:i].count(s) + 1}" if specs.count(s) > 1 else "") for i, s in enumerate(specs)]


def _release_state(state: dict) -> dict:
    """A generator state dict in release keys, with num_batches_tracked filled where it is missing."""
    state = {re.sub(r"^(module\.|_orig_mod\.)+", "", k): v for k, v in state.items()}
    for key in [k for k in state if k.endswith(".running_mean")]:
        state.setdefault(key.replace("running_mean", "num_batches_tracked"), torch.tensor(0))
    return state


def state_arch(state: dict) -> str:
    """The architecture whose release keys a generator state dict has: siggraph17 (its decoder's model10) or eccv16."""
    return "siggraph17" if "model10.1.weight" in state else "eccv16"


def generator_from_state(state: dict, label: str = "the weights") -> Generator:
    """The generator (either architecture, told by its keys) holding a state dict's tensors; one line when they do not fit."""
    state = _release_state(state)
    arch = state_arch(state)
    with torch.device("meta"):  # no memory and no random init for weights that loading replaces
        G = ARCHS[arch]()
    try:
        G.load_state_dict(state, strict=True, assign=True)  # adopt the loaded tensors: no second copy
    except (RuntimeError, AttributeError, TypeError) as e:
        raise ModelError(f"{label}: not {arch.upper()} generator weights ({str(e).splitlines()[0][:200]})") from None
    return G


def load_generator(spec: str, device: str | torch.device = "cpu", arch: str = "eccv16") -> Generator:
    """A ready generator (eval mode) from a model spec: eccv16, siggraph17, scratch (of arch), release-format weights of
    either, a ckpt.pt (EMA first), a .safetensors file, an exported folder or hf:OWNER/NAME[@REVISION]."""
    if spec == "scratch":
        return ARCHS[arch]().to(device).eval()
    state = load_checkpoint(weights_path(spec))
    if "generator" in state:
        state = state.get("generator_ema") or state["generator"]
    return generator_from_state(state, spec).to(device).eval()


@torch.no_grad()
def fingerprint(*modules: nn.Module) -> torch.Tensor:
    """A float64 summary of every parameter, to check that processes hold the same weights."""
    return torch.stack([(p.double() * (i + 1)).sum() for m in modules for i, p in enumerate(m.parameters())]).sum()


def rng_state() -> dict:
    """Torch's CPU and CUDA generator states, for exact resume."""
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict) -> None:
    """Restore what rng_state saved."""
    torch.set_rng_state(state["cpu"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- inference


def device_of(G) -> torch.device:
    """Where a generator runs: its parameters' device (a compiled runtime's own, see runtime.py)."""
    return G.device if hasattr(G, "device") else next(G.parameters()).device


@torch.no_grad()
def predict_ab(G: Generator, small: torch.Tensor, temperature: float = 1.0, hints: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 RGB copies (N,3,s,s) (and hints (N,3,s,s) for a SIGGRAPH17 model) -> the model's ab (N,2,s,s), float32,
    on the model's device."""
    device = device_of(G)
    return G(data.uint8_to_l(small.to(device)), None if hints is None else hints.to(device), temperature).float()


@torch.no_grad()
def paint(img: Image.Image, ab_small: torch.Tensor, chunk_pixels: int = 1 << 17) -> Image.Image | np.ndarray:
    """The colorized photo: ab (2,h,w) upsampled bilinearly onto img's own full-resolution L (alpha kept). A 16-bit
    photo (load_image(keep_16bit=True): gray, or an RGB TIFF) gives uint16 RGB (H,W,3), its L at full precision."""
    device = ab_small.device
    deep = data.deep16(img)
    img_rgb = img if img.mode == "RGB" or deep is not None else img.convert("RGB")
    ab_small = ab_small[None]
    W, H = img_rgb.size
    # bilinear (align_corners=False) is separable: widen once, then blend two source rows per output row,
    # so no full-resolution ab tensor is ever held
    ab_wide = F.interpolate(ab_small, size=(ab_small.shape[2], W), mode="bilinear")[0]
    src = ((torch.arange(H, device=device) + 0.5) * (ab_small.shape[2] / H) - 0.5).clamp_min(0)
    y0 = src.floor().long().clamp_max(ab_small.shape[2] - 1)
    y1, frac = (y0 + 1).clamp_max(ab_small.shape[2] - 1), (src - y0).view(-1, 1)
    out = np.empty((H, W, 3), np.uint8 if deep is None else np.uint16)
    rows = max(1, chunk_pixels // W)  # bands small enough that the float32 temporaries stay in cache
    for r in range(0, H, rows):
        if deep is None:
            band = torch.from_numpy(np.array(img_rgb.crop((0, r, W, min(H, r + rows))))).to(device).permute(2, 0, 1)[None]
            L = data.uint8_to_l(band)
        else:
            L = data.deep16_to_l(torch.from_numpy(deep[r:r + rows].astype(np.float32)).to(device))
        ab = torch.lerp(ab_wide[:, y0[r:r + rows]], ab_wide[:, y1[r:r + rows]], frac[r:r + rows])[None]
        rgb = (data.lab_to_rgb(torch.cat([L, ab], 1))[0] * (255 if deep is None else 65535)).round_().cpu()
        torch.from_numpy(out[r:r + rows]).permute(2, 0, 1).copy_(rgb)  # cast and interleave in one pass
    if deep is not None:
        return out
    result = Image.frombuffer("RGB", (W, H), out, "raw", "RGB", 0, 1)  # shares out's memory: no copy
    if img.mode == "RGBA":
        result.putalpha(img.getchannel("A"))
    return result


def small_copy(img: Image.Image, size: int = 256) -> torch.Tensor:
    """The model's input for one photo: its size x size bicubic copy as uint8 (3,size,size)."""
    return data.to_uint8_tensor(data.resize_square(data.as_rgb8(img), size))


def colorize(G: Generator, img: Image.Image, size: int = 256, temperature: float = 1.0, hints: torch.Tensor | None = None,
             chunk_pixels: int = 1 << 17) -> Image.Image:
    """The release pipeline: L of a size x size bicubic copy (and hints (3,size,size) at that scale) -> ab, upsampled
    onto the full-resolution L."""
    return paint(img, predict_ab(G, small_copy(img, size)[None], temperature, None if hints is None else hints[None])[0],
                 chunk_pixels)
