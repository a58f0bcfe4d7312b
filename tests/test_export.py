"""export.py and the model specs it makes possible: safetensors folders, hf:OWNER/NAME from the Hub's cache, ONNX."""

from __future__ import annotations

import ast
import hashlib
import http.server
import json
import pickle
import re
import runpy
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import models
import weights
from conftest import synthetic_rgb, varied_generator

ROOT = Path(__file__).resolve().parents[1]


class Custom:
    """A pickled object of a class: torch's weights_only refusal suggests weights_only=False."""


def export(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["export.py", *args])
    try:
        runpy.run_path(str(ROOT / "export.py"), run_name="__main__")
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def trained_ckpt(tmp_path_factory) -> Path:
    """A ckpt.pt as train_gan.py writes it: G, a different EMA G, config and step."""
    G, ema = varied_generator(1), varied_generator(2)  # colour that depends on L: an ONNX graph ignoring L would show
    path = tmp_path_factory.mktemp("run") / "ckpt.pt"
    weights.save_checkpoint({"generator": G.state_dict(), "generator_ema": ema.state_dict(), "step": 1234,
                            "config": {"lr_g": 2e-4, "dataset": "/home/someone/photos", "out_dir": "/home/someone/runs/gan",
                                       "init": "runs/finetune/ckpt.pt", "ckpt": ["~/a.pt", "eccv16"]}}, path)
    return path


def test_export_round_trip_is_bit_exact_and_onnx_matches(trained_ckpt, tmp_path, monkeypatch, capsys):
    results = tmp_path / "r.json"
    results.write_text(json.dumps({"models": [{"ckpt": "gan", "n_images": 5, "l1_ab": 9.5, "psnr": 24.1, "per_class": {}}],
                                   "protocol": {"resize": "stretch"}}))
    out = tmp_path / "exported"
    code, err = export(monkeypatch, capsys, str(trained_ckpt), str(out), "--onnx=True", f"--results={results}")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.onnx", "model.safetensors"]
    assert not list(tmp_path.glob(".exported*"))  # no temp folder left
    ema = weights.load_checkpoint(trained_ckpt)["generator_ema"]
    for spec in (str(out), str(out / "model.safetensors")):
        loaded = models.load_generator(spec).state_dict()
        assert loaded.keys() == ema.keys() and len(loaded) == 82
        assert all(torch.equal(loaded[k], ema[k]) for k in ema)  # the EMA generator, bit for bit
    info = json.loads((out / "config.json").read_text())
    assert info["step"] == 1234 and info["generator"] == "EMA" and info["training"]["lr_g"] == 2e-4 and info["onnx"]["opset"] == 17
    assert info["source"] == "ckpt.pt" and info["training"]["dataset"] == "photos" and info["training"]["out_dir"] == "gan"
    assert info["training"]["init"] == "runs/finetune/ckpt.pt" and info["training"]["ckpt"] == ["a.pt", "eccv16"]  # no machine's folder
    card = (out / "README.md").read_text()
    assert "| gan | 5 | 9.5000 | 24.1000 |" in card and "lr_g = 0.0002" in card

    import onnxruntime  # independent of export.py's own check

    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    G = models.load_generator(str(out))
    for shape in ((1, 1, 256, 256), (3, 1, 72, 104)):  # 256² and a batch at a non-square size
        L = torch.rand(shape, generator=torch.Generator().manual_seed(shape[2])) * 100
        with torch.no_grad():
            expected = G(L).numpy()
        got = session.run(["ab"], {"L": L.numpy()})[0]
        diff = np.abs(got - expected)
        # the fixture's 100x sharpened logits turn float rounding into ab at a few pixels, more where torch and
        # onnxruntime pick different kernels (an AVX2 CPU: max 0.12, mean 1.2e-3); a wrong graph is off by whole units
        assert got.shape == expected.shape and diff.max() < 0.5 and diff.mean() < 5e-3, (diff.max(), diff.mean())

    # the same pixels from the exported folder as from the ckpt.pt (the model's input at 64²: the weights decide, not the size)
    photo = Image.fromarray(synthetic_rgb(0, 90, 120))
    a = np.asarray(models.colorize(models.load_generator(str(trained_ckpt)), photo, size=64))
    b = np.asarray(models.colorize(G, photo, size=64))
    assert np.array_equal(a, b)

    code, err = export(monkeypatch, capsys, str(trained_ckpt), str(out))
    assert code == 1 and "exists" in err and "--overwrite=True" in err
    assert all(p.stat().st_mode & 0o044 == 0o044 for p in [out, *out.iterdir()])  # readable by the machine's other users
    assert export(monkeypatch, capsys, str(trained_ckpt), str(out), "--overwrite=True")[0] == 0  # an export: replaced
    run = trained_ckpt.parent  # a training folder: never deleted, whatever --overwrite says
    before = sorted(p.name for p in run.iterdir())
    code, err = export(monkeypatch, capsys, str(trained_ckpt), str(run), "--overwrite=True")
    assert code == 1 and "is not a folder export.py wrote" in err and sorted(p.name for p in run.iterdir()) == before, err


def test_space_folder_runs_the_app_with_the_model_and_needs_only_its_requirements(trained_ckpt, tmp_path, monkeypatch, capsys):
    import yaml

    out, space = tmp_path / "my-colorizer", tmp_path / "space"
    code, err = export(monkeypatch, capsys, str(trained_ckpt), str(out), f"--space={space}")
    assert code == 0, err
    files = sorted(str(p.relative_to(space)) for p in space.rglob("*") if p.is_file())
    assert files == [".streamlit/config.toml", "Dockerfile", "README.md", "app.py", "assets/restore/detector.safetensors",
                     "configurator.py", "data.py", "hints.py", "models.py", "my-colorizer/config.json",
                     "my-colorizer/model.safetensors", "reference.py", "requirements.txt", "restoration.py", "runtime.py",
                     "sampling.py", "weights.py"]
    assert (space / "my-colorizer" / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()
    meta = yaml.safe_load((space / "README.md").read_text().split("---")[1])  # the block Spaces reads
    assert meta["sdk"] == "docker" and meta["app_port"] == 8501 and len(meta["short_description"]) <= 60

    docker = (space / "Dockerfile").read_text().splitlines()
    assert "RUN useradd -m -u 1000 user" in docker and "USER user" in docker  # Spaces run the container as user 1000
    command = json.loads(next(x for x in (space / "Dockerfile").read_text().splitlines() if x.startswith("CMD "))[4:])
    assert command[:3] == ["streamlit", "run", "app.py"] and "--server.port=8501" in command
    app_args = command[command.index("--") + 1:]
    assert app_args == ["--baseline=eccv16", "--ckpt=my-colorizer"]
    monkeypatch.chdir(space)
    assert models.load_generator(app_args[1].split("=", 1)[1]).state_dict().keys() == models.load_generator(str(out)).state_dict().keys()

    # every package the Space's modules import is in its requirements.txt (the rest is the standard library or its own)
    wanted = {re.split(r"[<>=!~ ]", x)[0].lower().replace("_", "-") for x in (space / "requirements.txt").read_text().split()}
    own = {p.stem for p in space.glob("*.py")}
    for path in space.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module] if isinstance(node, ast.ImportFrom) else []
            for top in {n.split(".")[0] for n in names if n and n.split(".")[0] not in own | set(sys.stdlib_module_names)}:
                # imported only by HF datasets, int8 calibration (a Space ships calibrated models), 16-bit TIFF scans in
                # folder jobs, never by the app
                optional = top in ("datasets", "nncf", "tifffile")
                assert optional or {"PIL": "pillow", "skimage": "scikit-image"}.get(top, top).lower().replace("_", "-") in wanted, f"{path.name} imports {top}"

    code, err = export(monkeypatch, capsys, str(trained_ckpt), str(tmp_path / "other"), f"--space={space}")
    assert code == 1 and f"{space} exists" in err and not (tmp_path / "other").exists()


class FakeHub(http.server.BaseHTTPRequestHandler):
    """The Hub's file API as huggingface_hub uses it: /OWNER/NAME/resolve/REVISION/FILE, errors named in X-Error-Code."""

    repos: dict[str, dict[str, bytes]] = {}
    commit = "0123456789abcdef0123456789abcdef01234567"

    def do_HEAD(self):
        self.answer(body=False)

    def do_GET(self):
        self.answer(body=True)

    def answer(self, body: bool):
        owner, name, _, revision, file = self.path.split("?")[0].lstrip("/").split("/", 4)
        repo = self.repos.get(f"{owner}/{name}")
        error = ("RepoNotFound" if repo is None else "RevisionNotFound" if revision not in ("main", self.commit)
                 else "EntryNotFound" if file not in repo else None)
        data = b"" if error else repo[file]
        self.send_response(404 if error else 200)
        if error:
            self.send_header("X-Error-Code", error)
        self.send_header("X-Repo-Commit", self.commit)
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A Hub on 127.0.0.1 and an empty cache, as HF_ENDPOINT and HF_HUB_CACHE would set them."""
    from huggingface_hub import constants

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_port}"
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    yield FakeHub
    server.shutdown()
    server.server_close()


def test_hf_spec_downloads_once_then_loads_offline_and_errors_are_one_line(trained_ckpt, tmp_path, monkeypatch, capsys, hub):
    from huggingface_hub import constants

    assert export(monkeypatch, capsys, str(trained_ckpt), str(tmp_path / "exp"))[0] == 0
    exported = models.load_generator(str(tmp_path / "exp")).state_dict()
    hub.repos = {"someone/colorizer": {"model.safetensors": (tmp_path / "exp" / "model.safetensors").read_bytes()},
                 "someone/notes": {"README.md": b"# no weights here"}}
    got = models.load_generator("hf:someone/colorizer").state_dict()
    assert all(torch.equal(got[k], exported[k]) for k in exported)
    errors = {"hf:someone/missing": "no such model repository on the Hub",
              "hf:someone/colorizer@v2": "the repository has no revision 'v2'",
              "hf:someone/notes": "the repository has no model.safetensors",
              "hf:not a repo": "a Hub model is hf:OWNER/NAME"}
    for spec, message in errors.items():
        with pytest.raises(models.ModelError) as e:
            models.load_generator(spec)
        assert str(e.value).startswith(f"{spec}: {message}") and "\n" not in str(e.value)

    hub.repos = {}  # HF_HUB_OFFLINE=1: the cached copy without a request, one line for what is not cached
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # (a Hub that cannot be reached: the same, after retries)
    got = models.load_generator("hf:someone/colorizer").state_dict()
    assert all(torch.equal(got[k], exported[k]) for k in exported)
    with pytest.raises(models.ModelError, match=r"^hf:someone/other: not in the Hub cache and the Hub cannot be reached"):
        models.load_generator("hf:someone/other")


def test_files_that_are_not_checkpoints_say_so_without_unsafe_advice(tmp_path):
    png = tmp_path / "photo.png"
    Image.fromarray(synthetic_rgb(0)).save(png)
    with pytest.raises(models.ModelError, match="an image, not a checkpoint"):
        models.load_generator(str(png))

    pickled = tmp_path / "evil.pt"
    torch.save({"generator": Custom()}, pickled, pickle_module=pickle)
    with pytest.raises(models.ModelError) as e:
        models.load_generator(str(pickled))
    assert "does not unpickle code" in str(e.value) and "weights_only" not in str(e.value)
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(models.ModelError, match="not a readable safetensors file"):
        models.load_generator(str(tmp_path / "bad.safetensors"))
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(models.ModelError, match="without model.safetensors"):
        models.load_generator(str(tmp_path / "empty_dir"))


def test_a_siggraph17_model_exports_with_its_hint_inputs(siggraph_weights, tmp_path, monkeypatch, capsys):
    import onnxruntime

    out = tmp_path / "sig"
    code, err = export(monkeypatch, capsys, siggraph_weights, str(out), "--onnx=True")
    assert code == 0, err
    info = json.loads((out / "config.json").read_text())
    assert info["architecture"] == "SIGGRAPH17Generator" and info["onnx"]["input"] == "L, hint_ab, hint_mask"
    assert "--hints=hints.json" in (out / "README.md").read_text()
    G = models.load_generator(str(out))
    assert isinstance(G, models.SIGGRAPH17Generator)
    assert all(torch.equal(a, b) for a, b in zip(G.state_dict().values(), torch.load(siggraph_weights).values()))
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["L", "hint_ab", "hint_mask"]
    rgb = torch.from_numpy(synthetic_rgb(5, 64, 96)).permute(2, 0, 1)[None]
    import data
    import hints

    L, ab = data.uint8_to_lab(rgb)
    for h in (torch.zeros(1, 3, 64, 96), hints.sweep(ab, 10, [0])):
        with torch.no_grad():
            expected = G(L, h)
        got = session.run(["ab"], {"L": L.numpy(), "hint_ab": h[:, :2].numpy(), "hint_mask": h[:, 2:].numpy()})[0]
        assert np.abs(got - expected.numpy()).max() < 0.5 and np.abs(got - expected.numpy()).mean() < 5e-3  # as above
    assert (G(L, h) - G(L)).abs().max() > 1  # the hints matter: a graph that ignored them would fail above


def test_a_stop_while_converting_is_one_line_and_leaves_nothing(monkeypatch, capsys, release_weights, tmp_path):
    import runtime

    def interrupted(*args, **kw):
        raise KeyboardInterrupt  # Ctrl-C while OpenVINO converts or NNCF calibrates

    monkeypatch.setattr(runtime, "convert", interrupted)
    try:
        code, err = export(monkeypatch, capsys, release_weights, str(tmp_path / "out"), "--openvino=fp32")
    except KeyboardInterrupt:
        pytest.fail("the stop escaped export.py as a traceback")
    assert code == 130 and "stopped by SIGINT: nothing written" in err and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no export, no temp folder


def test_the_hypercolumn_model_exports_its_head_and_a_whole_onnx_graph(hypercolumn_weights, tmp_path, monkeypatch, capsys):
    import onnxruntime

    import data

    out = tmp_path / "hyper"
    code, err = export(monkeypatch, capsys, hypercolumn_weights, str(out), "--onnx=True")
    assert code == 0, err
    info = json.loads((out / "config.json").read_text())
    assert info["architecture"] == "HypercolumnGenerator" and "the head" in info["weights"]
    shipped = json.loads((ROOT / "assets" / "colorgan" / "config.json").read_text())  # no folder of the machine it was made on
    assert not [v for v in (shipped["source"], *shipped["training"].values()) if isinstance(v, str) and v.startswith(("/", "~"))]
    assert info["source"] == Path(hypercolumn_weights).name
    assert "the head alone" in (out / "README.md").read_text()
    from safetensors.torch import load_file

    exported = load_file(str(out / "model.safetensors"))
    assert not any(k.startswith("backbone.") for k in exported) and (out / "model.safetensors").stat().st_size < 8e6
    G = models.load_generator(str(out))
    rgb = torch.from_numpy(synthetic_rgb(5, 64, 96)).permute(2, 0, 1)[None]
    L = data.uint8_to_l(rgb)
    with torch.no_grad():
        expected = G(L)
    original = models.load_generator(hypercolumn_weights)
    assert all(torch.equal(v, original.state_dict()[k]) for k, v in exported.items())  # the same weights, bit for bit
    with torch.no_grad():  # two loads' forwards may take other kernels (seen: 1e-4 apart on an AVX512-BF16 EPYC)
        assert (original(L) - expected).abs().max() < 1e-3
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["ab"], {"L": L.numpy()})[0]  # its VGG16 inside the graph: no colorgan needed
    assert np.abs(got - expected.numpy()).max() < 0.5 and np.abs(got - expected.numpy()).mean() < 5e-3
