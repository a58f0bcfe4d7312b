"""export.py and the model specs it makes possible: safetensors folders, hf:OWNER/NAME from the Hub's cache, ONNX."""

from __future__ import annotations

import json
import os
import pickle
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import models
from conftest import synthetic_rgb

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
    torch.manual_seed(1)
    G, ema = models.ECCV16Generator(), models.ECCV16Generator()
    path = tmp_path_factory.mktemp("run") / "ckpt.pt"
    models.save_checkpoint({"generator": G.state_dict(), "generator_ema": ema.state_dict(), "step": 1234,
                            "config": {"lr_g": 2e-4, "dataset": "photos"}}, path)
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
    ema = models.load_checkpoint(trained_ckpt)["generator_ema"]
    for spec in (str(out), str(out / "model.safetensors")):
        loaded = models.load_generator(spec).state_dict()
        assert loaded.keys() == ema.keys() and len(loaded) == 82
        assert all(torch.equal(loaded[k], ema[k]) for k in ema)  # the EMA generator, bit for bit
    info = json.loads((out / "config.json").read_text())
    assert info["step"] == 1234 and info["generator"] == "EMA" and info["training"]["lr_g"] == 2e-4 and info["onnx"]["opset"] == 17
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
        assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-3, np.abs(got - expected).max()

    # the same pixels from the exported folder as from the ckpt.pt
    photo = Image.fromarray(synthetic_rgb(0, 90, 120))
    a = np.asarray(models.colorize(models.load_generator(str(trained_ckpt)), photo))
    b = np.asarray(models.colorize(G, photo))
    assert np.array_equal(a, b)

    code, err = export(monkeypatch, capsys, str(trained_ckpt), str(out))
    assert code == 1 and "exists" in err and "--overwrite=True" in err


def test_hf_spec_loads_from_the_hub_cache_offline(trained_ckpt, tmp_path, monkeypatch, capsys):
    assert export(monkeypatch, capsys, str(trained_ckpt), str(tmp_path / "exp"))[0] == 0
    cache = tmp_path / "hub"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = cache / "models--someone--colorizer" / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").write_bytes((tmp_path / "exp" / "model.safetensors").read_bytes())
    (cache / "models--someone--colorizer" / "refs").mkdir()
    (cache / "models--someone--colorizer" / "refs" / "main").write_text(commit)
    code = ("import models, torch\n"
            "a = models.load_generator('hf:someone/colorizer').state_dict()\n"
            f"b = models.load_generator({str(tmp_path / 'exp')!r}).state_dict()\n"
            "assert all(torch.equal(a[k], b[k]) for k in b)\n"
            "for spec in ('hf:someone/missing', 'hf:someone/colorizer@v2', 'hf:not a repo'):\n"
            "    try:\n"
            "        models.load_generator(spec)\n"
            "    except models.ModelError as e:\n"
            "        print(e)\n")
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert "hf:someone/missing: not in the Hub cache" in lines[0] and "offline" in lines[0]
    assert lines[1].startswith("hf:someone/colorizer@v2: ") and "hf:OWNER/NAME" in lines[2]


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
