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

RUNTIMES = ("torch", "openvino")
PRECISIONS = ("fp32", "bf16", "int8")
CALIBRATION_IMAGES = 300  # photos that calibrate int8 (NNCF's default subset size)
OV_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # int8 layers run int8; what is left runs f32


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


def has_bf16() -> bool:
    """True where the CPU computes bf16 natively (AVX512-BF16 or AMX; Arm's BF16)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16", "bf16"))


def check(runtime: str, precision: str, fallback: bool = False, device: str = "auto", temperature: float = 1.0) -> str:
    """Refuse a runtime or precision that cannot run here, in one line (before any weights load); returns the precision
    to use (fp32 where the CPU lacks bf16 and fallback is allowed, with a note). OpenVINO runs on the CPU at
    temperature 1; torch on a GPU goes by the GPU's bf16, not the CPU's."""
    if runtime not in RUNTIMES:
        raise RuntimeChoiceError(f"--runtime={runtime}: use torch or openvino")
    if precision not in PRECISIONS:
        raise RuntimeChoiceError(f"--precision={precision}: use fp32, bf16 or int8")
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
    if runtime == "openvino" and (temperature != 1 or device not in ("auto", "cpu")):
        raise RuntimeChoiceError("--runtime=openvino runs on the CPU at temperature 1 (the release's mean); use --runtime=torch "
                                 f"for {'--temperature' if temperature != 1 else '--device=' + device}")
    on_cpu = runtime == "openvino" or device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    if precision == "bf16" and on_cpu and not has_bf16():
        if not fallback:
            raise RuntimeChoiceError(f"--precision=bf16: this CPU ({cpu_name()}) has no bf16 units, so bf16 would be slower "
                                     "than fp32; use --precision=fp32, or --fallback=True to run fp32 wherever bf16 is missing")
        print(f"colorgan: this CPU ({cpu_name()}) has no bf16 units: running fp32 (--fallback=True)", file=sys.stderr)
        return "fp32"
    return precision


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
    h.update(repr((G.arch, size, precision, calibration_id if precision == "int8" else "", cpu_name(), versions)).encode())
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


def convert(G: nn.Module, folder: Path, precision: str, size: int = 256, photos: Sequence[Path] = (),
            calibration_images: int = CALIBRATION_IMAGES) -> None:
    """Write G as an OpenVINO IR (int8: quantized, calibrated on the first calibration_images of photos that decode) to
    folder/model.xml, whole or not at all (built beside, renamed)."""
    import openvino as ov

    print(f"colorgan: converting the model for OpenVINO {precision} at {size}x{size} (once: it is cached in {folder.parent})",
          file=sys.stderr)
    model = _convert(G, size)
    if precision == "int8":
        model = _quantize(model, G, _photo_batches(photos, size, calibration_images), calibration_images)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        ov.save_model(model, str(tmp / "model.xml"), compress_to_fp16=False)
        (tmp / "size.json").write_text(f'{{"size": "{size}"}}\n')  # the inputs' fixed height and width
        tmp.rename(folder)  # a concurrent run that got there first wins
    except OSError:
        if not (folder / "model.xml").is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def prepare(G: nn.Module, runtime: str, precision: str, size: int = 256, photos: Sequence[Path] = (),
            calibration_images: int = CALIBRATION_IMAGES, spec: str = ""):
    """The generator to colorize with: G itself (torch fp32), G under bf16 autocast, or G compiled by OpenVINO at
    size x size: the model spec's shipped OpenVINO model (export.py --openvino) if it has one, else the cache's,
    converted there first (int8: calibrated on photos, once; their names are part of the cache key)."""
    if runtime == "torch":
        return G if precision == "fp32" else Autocast(G)
    import openvino as ov

    root = cache_dir()
    xml = shipped(spec, precision, size) if spec else None
    if xml is None:
        used = "\n".join(map(str, photos[:calibration_images]))
        folder = root / f"{G.arch}-{size}-{precision}-{_key(G, size, precision, used)}"
        if not (folder / "model.xml").is_file():
            convert(G, folder, precision, size, photos, calibration_images)
        xml = folder / "model.xml"
    core = ov.Core()
    core.set_property({"CACHE_DIR": str(root / "compiled")})
    compiled = core.compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": OV_PRECISION[precision],
                                                    "PERFORMANCE_HINT": "LATENCY"})
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
