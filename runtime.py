"""Inference runtimes for everything that colorizes: --runtime=torch|openvino, --precision=fp32|bf16|int8.

torch fp32 is the exact path the tests compare against. torch bf16 is autocast (no new dependency). openvino runs the
same network converted in process (openvino from PyPI): fp32, bf16 (the CPU's bf16 units) or int8 (NNCF post-training
quantization, calibrated on photos). A converted (and quantized) model is an OpenVINO IR (model.xml/.bin: no pickle),
cached under COLORGAN_CACHE (default ~/.cache/colorgan) per weights, architecture, input size, precision, calibration
and CPU, beside OpenVINO's own cache of compiled models: the second run starts fast.

prepare() returns an object that takes the generator's place: G(L, hints, temperature) -> ab, with arch, takes_hints
and device, so predict_ab, the folder job, videos, evaluate.py and the app use it unchanged; .source is the PyTorch
model it was made from (the app's colour suggestions read its class head).
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import torch
import torch.nn as nn
from tqdm import tqdm

import data
import hints
import models

RUNTIMES = ("torch", "openvino")  # and auto: see choose()
PRECISIONS = ("fp32", "bf16", "int8")
CALIBRATION_IMAGES = 300  # photos that calibrate int8 (NNCF's default subset size)
OV_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # int8 layers run int8; what is left runs f32
MANIFEST = "sha256.txt"  # beside a cached model.xml/.bin: the digest of both, checked at every start


class RuntimeChoiceError(ValueError):
    """A runtime or precision this install or CPU cannot give; the message is one line."""


def cache_dir() -> Path:
    """Where converted models and OpenVINO's compiled blobs live."""
    return Path(os.environ.get("COLORGAN_CACHE", "~/.cache/colorgan")).expanduser() / "openvino"


def cpu_name() -> str:
    """The CPU's model name (the cache is per CPU: a compiled blob and bf16's availability depend on it)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# oneDNN's ISA cap (ONEDNN_MAX_CPU_ISA; torch's and OpenVINO's kernels both honour it): the flags it takes away
ISA_CAPS = {"AVX2": ("avx512", "amx", "avx_vnni"), "AVX2_VNNI": ("avx512", "amx"), "AVX512_CORE": ("avx512_bf16", "avx512_vnni", "amx"),
            "AVX512_CORE_VNNI": ("avx512_bf16", "amx"), "AVX512_CORE_BF16": ("amx",)}


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux lists them (x86 "flags", Arm "Features"), less those oneDNN's ISA cap forbids;
    empty where there is no /proc."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return set()
    flags = {f for line in lines if line.startswith(("flags", "Features")) for f in line.split(":", 1)[1].split()}
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "")).upper()
    return {f for f in flags if not f.startswith(ISA_CAPS.get(cap, ()))}


def has_bf16() -> bool:
    """True where the CPU computes bf16 natively (AVX512-BF16 or AMX; Arm's BF16)."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16", "bf16"})


def cpu_class(flags: set[str] | None = None) -> str:
    """The CPU class every speed figure names: what decides which runtime and precision are fastest."""
    flags = cpu_flags() if flags is None else flags
    if "amx_bf16" in flags:
        return "AMX"
    if "avx512_bf16" in flags:
        return "AVX512-BF16"
    if "avx512_vnni" in flags:
        return "AVX-512 VNNI"
    if "avx512f" in flags:
        return "AVX-512"
    if "avx2" in flags:
        return "AVX2" + (" VNNI" if "avx_vnni" in flags else "")
    return platform.machine() + (" BF16" if "bf16" in flags else "")


def _openvino_installed() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def choose(runtime: str, precision: str, device: str = "auto", temperature: float = 1.0, samples: int = 0) -> tuple[str, str, str]:
    """Resolve auto to (runtime, precision, a one-line note of what was chosen, or ''). --runtime=auto: on a CPU with
    bf16 units, openvino bf16 (on AMX 5.8x torch fp32 for colorgan's model, ab 0.38 Lab from it on average: docs/speed.md),
    else torch bf16; elsewhere torch fp32 (on AVX2, OpenVINO fp32 is 0.93x and int8 1.1x at a colour cost); never int8
    unasked (it needs calibration photos and loses hints); a GPU, a temperature below 1 or samples keep torch.
    --runtime=torch with precision auto is fp32, the exact path; openvino's auto is bf16 where the CPU has the units."""
    if "auto" not in (runtime, precision):
        return runtime, precision, ""
    on_gpu = runtime != "openvino" and (device.startswith(("cuda", "mps")) or (device == "auto" and torch.cuda.is_available()))
    bf16_cpu = has_bf16() and not on_gpu
    if runtime != "auto":
        precision = "bf16" if runtime == "openvino" and bf16_cpu else "fp32"
        return runtime, precision, f"colorgan: --runtime={runtime} --precision={precision} ({cpu_class()})" if runtime == "openvino" else ""
    if precision == "auto":
        precision = "bf16" if bf16_cpu else "fp32"
    fast = precision == "int8" or (precision == "bf16" and bf16_cpu and temperature == 1 and not samples)
    runtime = "openvino" if fast and _openvino_installed() else "torch"
    if on_gpu:
        why = "on a GPU"
    elif precision == "bf16":
        torch_only = ("; torch, since --samples needs the model's colour distribution" if samples else
                      "; torch, since a temperature below 1 needs the model's colour distribution" if temperature != 1 else "")
        why = (f"{cpu_class()}: the CPU's bf16 units{torch_only}, ab ~0.4 Lab from fp32 on average, --precision=fp32 "
               "for the exact path") if runtime == "torch" else (f"{cpu_class()}: the CPU's bf16 units, ab ~0.4 Lab from "
                                                                 "fp32 on average, --runtime=torch --precision=fp32 for the exact path")
    else:
        why = f"{cpu_class()}: no bf16 units, and nothing runs faster than torch fp32 here" if runtime == "torch" else cpu_class()
    return runtime, precision, f"colorgan: auto chose --runtime={runtime} --precision={precision} ({why}; docs/speed.md)"


def check(runtime: str, precision: str, fallback: bool | None = None, device: str = "auto", temperature: float = 1.0,
          samples: int = 0) -> str:
    """Refuse a runtime or precision that cannot run here, in one line (before any weights load); returns the precision
    to use (fp32 where the CPU lacks bf16 and fallback is allowed, with a note). OpenVINO runs on the CPU at
    temperature 1; torch on a GPU goes by the GPU's bf16, not the CPU's. fallback=None: the script has no --fallback."""
    if runtime not in RUNTIMES:
        raise RuntimeChoiceError(f"--runtime={runtime}: use auto, torch or openvino")
    if precision not in PRECISIONS:
        raise RuntimeChoiceError(f"--precision={precision}: use auto, fp32, bf16 or int8")
    if runtime == "torch" and precision == "int8":
        raise RuntimeChoiceError("--precision=int8 needs --runtime=openvino (NNCF's post-training quantization)")
    if runtime == "openvino":
        try:
            import openvino  # noqa: F401
            if precision == "int8":
                import nncf  # noqa: F401
        except ImportError:
            raise RuntimeChoiceError(f"--runtime=openvino{' --precision=int8' if precision == 'int8' else ''} needs "
                                     f"{'openvino and nncf' if precision == 'int8' else 'openvino'}: pip install openvino nncf") from None
    if runtime == "openvino" and samples:
        raise RuntimeChoiceError("--samples draws from the model's colour distribution, which the OpenVINO graph (its mean "
                                 "colour) does not give: use --runtime=torch (or auto)")
    if runtime == "openvino" and (temperature != 1 or device not in ("auto", "cpu")):
        raise RuntimeChoiceError("--runtime=openvino runs on the CPU at temperature 1 (the release's mean); use --runtime=torch "
                                 f"for {'--temperature' if temperature != 1 else '--device=' + device}")
    on_cpu = runtime == "openvino" or device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    if precision == "bf16" and on_cpu and not has_bf16():
        if not fallback:
            raise RuntimeChoiceError(f"--precision=bf16: this CPU ({cpu_name()}, {cpu_class()}) has no bf16 units, so bf16 "
                                     "would be slower than fp32; use --precision=fp32 or auto"
                                     + (", or --fallback=True to run fp32 wherever bf16 is missing" if fallback is not None else ""))
        print(f"colorgan: this CPU ({cpu_name()}) has no bf16 units: running fp32 (--fallback=True)", file=sys.stderr)
        return "fp32"
    return precision


def pick_device(name: str) -> torch.device:
    """The device to run on (under a launcher, auto is this process's GPU); RuntimeChoiceError when it is not here."""
    local = int(os.environ.get("LOCAL_RANK", 0))
    if name == "auto":
        return torch.device(f"cuda:{local % torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise RuntimeChoiceError(f"--device={name}: not a device (auto, cpu, cuda, cuda:N or mps)") from None
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise RuntimeChoiceError(f"--device={name}: torch sees {torch.cuda.device_count()} CUDA GPUs here")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeChoiceError(f"--device={name}: no Apple GPU (MPS) here")
    return dev


class Autocast(nn.Module):
    """A generator run under CPU/CUDA bf16 autocast, its output float32."""

    def __init__(self, G: nn.Module):
        super().__init__()
        self.G, self.arch, self.takes_hints, self.device = G, G.arch, G.takes_hints, models.device_of(G)
        self.source = G

    def forward(self, L: torch.Tensor, hints: torch.Tensor | None = None, temperature: float = 1.0) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16):
            return self.G(L, hints, temperature).float()


class OpenVINOGenerator:
    """A compiled OpenVINO model in the generator's place: L (N,1,s,s) (and hints (N,3,s,s)) -> ab (N,2,s,s)."""

    def __init__(self, compiled, source: nn.Module, size: int, precision: str):
        self.compiled, self.source, self.size, self.precision = compiled, source, size, precision
        self.arch, self.takes_hints, self.device = source.arch, source.takes_hints, torch.device("cpu")

    def __call__(self, L: torch.Tensor, hints: torch.Tensor | None = None, temperature: float = 1.0) -> torch.Tensor:
        if temperature != 1:
            raise ValueError("the OpenVINO graph holds the release's mean (temperature 1)")
        if tuple(L.shape[-2:]) != (self.size, self.size):
            raise ValueError(f"compiled for {self.size}x{self.size} inputs, not {tuple(L.shape[-2:])}")
        inputs = [L.detach().float().cpu().numpy()]
        if self.takes_hints:
            h = hints if hints is not None else L.new_zeros(L.shape[0], 3, *L.shape[2:])
            inputs.append(h.detach().float().cpu().numpy())
        return torch.from_numpy(self.compiled(inputs)[0].copy())


class _Graph(nn.Module):
    """What the OpenVINO graph computes: G(L) (SIGGRAPH17: G(L, hints)) at temperature 1."""

    def __init__(self, G: nn.Module):
        super().__init__()
        self.G = G

    def forward(self, L: torch.Tensor, hints: torch.Tensor | None = None) -> torch.Tensor:
        return self.G(L, hints) if self.G.takes_hints else self.G(L)


def _key(G: nn.Module, size: int, precision: str, calibration_id: str) -> str:
    """The cache key of a converted model: its weights, architecture, size, precision, calibration, the CPU and versions."""
    import openvino

    h = hashlib.sha256()
    for name, t in G.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    versions = [openvino.__version__]
    if precision == "int8":
        import nncf

        versions.append(nncf.__version__)
    cpu = (cpu_name(), cpu_class())  # VMs of two CPU classes can share one model name ("AMD EPYC")
    h.update(repr((G.arch, size, precision, calibration_id if precision == "int8" else "", cpu, versions)).encode())
    return h.hexdigest()[:24]


def _convert(G: nn.Module, size: int):
    """G as an OpenVINO model with a dynamic batch and size x size inputs."""
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # the converter imports it: a CPU torch warns
    import openvino as ov

    shapes = [[-1, 1, size, size]] + ([[-1, 3, size, size]] if G.takes_hints else [])
    example = tuple(torch.zeros(1, s[1], size, size) for s in shapes)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # OpenVINO traces with torch.jit, which torch calls deprecated
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # SIGGRAPH17's size check: traced at a valid size
        return ov.convert_model(_Graph(G.float().cpu().eval()), example_input=example, input=shapes)


def _quantize(model, G: nn.Module, calibration: Iterable[torch.Tensor], count: int):
    """NNCF post-training int8 of model, calibrated on uint8 RGB copies (N,3,s,s), at most count of them (SIGGRAPH17: with
    hints simulated from their own colours, as it is used)."""
    import nncf

    items = []
    g = torch.Generator().manual_seed(0)
    with tqdm(total=count, desc="int8 calibration photos", unit="img", file=sys.stderr, disable=count < 8) as bar:
        for rgb in calibration:
            L, ab = data.uint8_to_lab(rgb)
            for i in range(len(rgb)):
                item = [L[i:i + 1].numpy()]
                if G.takes_hints:
                    item.append(hints.simulate(ab[i:i + 1], g).numpy())
                items.append(item)
                bar.update()
    if not items:
        raise RuntimeChoiceError("--precision=int8: no photos to calibrate on (give --calibration=FOLDER of photos)")
    return nncf.quantize(model, nncf.Dataset(items), preset=nncf.QuantizationPreset.MIXED, subset_size=len(items))


def shipped(spec: str, precision: str, size: int) -> Path | None:
    """The OpenVINO model an export folder ships for this precision and size (export.py --openvino), if any."""
    xml = Path(spec) / "openvino" / ("int8" if precision == "int8" else "fp32") / "model.xml"
    try:
        return xml if xml.is_file() and f'"{size}"' in xml.with_name("size.json").read_text() else None
    except OSError:
        return None


def _digest(folder: Path) -> str:
    """sha256 of a converted model's two files, as its manifest records them."""
    h = hashlib.sha256()
    for name in ("model.xml", "model.bin"):
        with open(folder / name, "rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
    return h.hexdigest()


def intact(folder: Path) -> bool:
    """True when a cached model's files are the ones written (the manifest's sha256): a truncated, zeroed or edited
    model.bin would compile, or run with wrong weights."""
    try:
        return (folder / MANIFEST).read_text().strip() == _digest(folder)
    except OSError:
        return False


def convert(G: nn.Module, size: int, precision: str, photos: Sequence[Path] = (), calibration_images: int = CALIBRATION_IMAGES,
            note: str = ""):
    """G as an OpenVINO model (int8: quantized, calibrated on the first calibration_images of photos that decode)."""
    print(f"colorgan: converting the model for OpenVINO {precision} at {size}x{size}{note}", file=sys.stderr)
    model = _convert(G, size)
    if precision == "int8":
        model = _quantize(model, G, _photo_batches(photos, size, calibration_images), calibration_images)
    return model


def save(model, folder: Path, size: int) -> None:
    """Write a converted model to folder (model.xml, .bin, its size and manifest), whole or not at all (built beside,
    renamed); OSError when the cache cannot be written."""
    import openvino as ov

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        ov.save_model(model, str(tmp / "model.xml"), compress_to_fp16=False)
        (tmp / "size.json").write_text(f'{{"size": "{size}"}}\n')  # the inputs' fixed height and width
        (tmp / MANIFEST).write_text(_digest(tmp) + "\n")
        if folder.exists():  # a damaged entry (see prepare): removed, then replaced
            shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)  # a concurrent run that got there first wins
    except OSError:
        if not intact(folder):
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def prepare(G: nn.Module, runtime: str, precision: str, size: int = 256, photos: Sequence[Path] = (),
            calibration_images: int = CALIBRATION_IMAGES, spec: str = ""):
    """The generator to colorize with: G itself (torch fp32), G under bf16 autocast, or G compiled by OpenVINO at
    size x size: the model spec's shipped OpenVINO model (export.py --openvino) if it has one, else the cache's,
    converted there first (int8: calibrated on photos, once; their names are part of the cache key). A damaged cache
    entry is converted again; a cache that cannot be written is said in one line and the run goes on without it."""
    if runtime == "torch":
        return G if precision == "fp32" else Autocast(G)
    import openvino as ov

    root = cache_dir()
    core = ov.Core()
    source = shipped(spec, precision, size) if spec else None
    if source is None:
        used = "\n".join(map(str, photos[:calibration_images]))
        folder = root / f"{G.arch}-{size}-{precision}-{_key(G, size, precision, used)}"
        if intact(folder):
            source = str(folder / "model.xml")
        else:
            damaged = (folder / "model.xml").exists()
            source = convert(G, size, precision, photos, calibration_images,
                             f" (the cached copy in {folder} is damaged: made again)" if damaged else f" (once: it is cached in {root})")
            try:
                save(source, folder, size)
                source = str(folder / "model.xml")
            except OSError as e:
                print(f"colorgan: cannot write the OpenVINO cache {root} ({e.strerror or e}): running without it (set "
                      "COLORGAN_CACHE to a writable folder to convert once)", file=sys.stderr)
                root = None
    else:
        source = str(source)
    config = {"INFERENCE_PRECISION_HINT": OV_PRECISION[precision], "PERFORMANCE_HINT": "LATENCY"}
    try:
        if root is not None:
            (root / "compiled").mkdir(parents=True, exist_ok=True)
            config["CACHE_DIR"] = str(root / "compiled")
    except OSError:
        pass  # no compiled-model cache: compiled at each start
    try:
        compiled = core.compile_model(source, "CPU", config)
    except RuntimeError:  # a damaged compiled blob in CACHE_DIR: compile without the cache
        if "CACHE_DIR" not in config:
            raise
        config.pop("CACHE_DIR")
        compiled = core.compile_model(source, "CPU", config)
    return OpenVINOGenerator(compiled, G, size, precision)


def share_cores(runtime: str, workers: int) -> int:
    """Before a folder job: with OpenVINO running the model on its own threads, torch only paints, in the job's worker
    threads, so one torch thread each keeps them from fighting OpenVINO's for the cores (2 cores, int8 folder: 3.9 -> 4.6
    photos/s; a video paints in one thread and keeps torch's). Returns the thread count it replaced."""
    threads = torch.get_num_threads()
    if runtime == "openvino" and workers > 0:
        torch.set_num_threads(1)
    return threads


def calibration_photos(folder: str) -> list[Path]:
    """The photos under folder (recursive, sorted): --calibration's."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in data.IMAGE_SUFFIXES and p.is_file()) if folder else []


def _photo_batches(paths: Sequence[Path], size: int, limit: int, batch: int = 16) -> Iterator[torch.Tensor]:
    """Calibration photos: the first limit of paths that decode, as uint8 RGB size x size copies in batches."""
    chunk, used = [], 0
    for p in paths:
        if used == limit:
            break
        try:
            chunk.append(models.small_copy(data.load_image(p), size))
        except data.ImageError:
            continue
        used += 1
        if len(chunk) == batch:
            yield torch.stack(chunk)
            chunk = []
    if chunk:
        yield torch.stack(chunk)
