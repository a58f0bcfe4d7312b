"""runtime.py: each runtime and precision against the exact torch fp32 path, the OpenVINO cache, the refusals, and
colorize.py with them (the same files written)."""

from __future__ import annotations

import builtins
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import data
import hints
import runtime
from conftest import synthetic_rgb, varied_generator

# ab error bounds against torch fp32 on the suite's SIGGRAPH17 model (colour varying ~8 Lab units within a photo):
# (mean, 99.9th percentile), about twice what was measured at 64x64 on 8 synthetic photos with 5 hints
BOUNDS = {("torch", "bf16"): (2.0, 10.0), ("openvino", "fp32"): (0.01, 0.05), ("openvino", "bf16"): (2.0, 10.0),
          ("openvino", "int8"): (9.0, 56.0)}


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory):
    """One cache for the module: a model converted (and quantized) by one test is reused by the next, as by users."""
    folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COLORGAN_CACHE", str(folder))
        yield folder / "openvino"


def photos(first: int, n: int, size: int = 64) -> torch.Tensor:
    return torch.stack([torch.from_numpy(synthetic_rgb(i, size, size)).permute(2, 0, 1) for i in range(first, first + n)])


@pytest.fixture(scope="module")
def calibration(tmp_path_factory) -> list:
    """16 synthetic photos to calibrate int8 on, as files (as users give them)."""
    folder = tmp_path_factory.mktemp("calibration")
    for i, rgb in enumerate(photos(0, 16)):
        Image.fromarray(rgb.permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
    return sorted(folder.iterdir())


@pytest.fixture(scope="module")
def sig():
    return varied_generator(0, "siggraph17")


@pytest.mark.parametrize("rt, precision", list(BOUNDS))
def test_each_precision_stays_within_its_bound_of_fp32(sig, rt, precision, monkeypatch, calibration):
    if (rt, precision) == ("openvino", "bf16") and not runtime.has_bf16():
        pytest.skip(f"this CPU ({runtime.cpu_class()}) has no bf16 units: OpenVINO runs f32 (the refusal is tested below)")
    monkeypatch.setattr(runtime, "has_bf16", lambda: True)  # torch's bf16 is the arithmetic on any CPU (emulated without units)
    L, ab = data.uint8_to_lab(photos(20, 8))  # held out from the calibration photos
    given = hints.sweep(ab, 5, list(range(8)))
    with torch.no_grad():
        exact = sig(L, given)
        out = runtime.prepare(sig, rt, precision, 64, calibration)(L, given)
    err = (out - exact).abs()
    mean, p999 = BOUNDS[(rt, precision)]
    assert err.mean() <= mean and err.flatten().quantile(0.999) <= p999
    if precision != "fp32":
        assert err.mean() > 1e-3  # it really ran in that precision


def test_openvino_fp32_is_the_exact_path_for_eccv16_too():
    G = varied_generator(1)
    L, _ = data.uint8_to_lab(photos(30, 2))
    with torch.no_grad():
        assert (runtime.prepare(G, "openvino", "fp32", 64)(L) - G(L)).abs().max() < 0.05


def test_a_converted_model_is_cached_per_weights_and_precision(sig, cache, monkeypatch, calibration):
    L, _ = data.uint8_to_lab(photos(20, 2))
    first = runtime.prepare(sig, "openvino", "int8", 64, calibration)(L)  # made here or by the test above
    assert len(list(cache.glob("siggraph17-64-int8-*/model.xml"))) == 1 and list((cache / "compiled").iterdir())
    def converted_again(*args):
        raise AssertionError("converted again")

    monkeypatch.setattr(runtime, "_convert", converted_again)
    assert torch.equal(runtime.prepare(sig, "openvino", "int8", 64, calibration)(L), first)
    other = varied_generator(2, "siggraph17")
    with pytest.raises(AssertionError, match="converted again"):  # other weights: another entry
        runtime.prepare(other, "openvino", "int8", 64, calibration)


def test_refusals_are_one_line(monkeypatch):
    with pytest.raises(runtime.RuntimeChoiceError, match="int8 needs --runtime=openvino"):
        runtime.check("torch", "int8")
    with pytest.raises(runtime.RuntimeChoiceError, match="use auto, torch or openvino"):
        runtime.check("onnx", "fp32")
    monkeypatch.setattr(runtime, "has_bf16", lambda: False)
    with pytest.raises(runtime.RuntimeChoiceError, match="no bf16 units.*--fallback=True"):
        runtime.check("openvino", "bf16", fallback=False)  # colorize.py, which has --fallback
    assert runtime.check("openvino", "bf16", fallback=True) == "fp32"
    assert runtime.check("torch", "bf16", device="cuda") == "bf16"  # on a GPU, the CPU's bf16 units do not matter
    with pytest.raises(runtime.RuntimeChoiceError, match="runs on the CPU at temperature 1.*--device=cuda"):
        runtime.check("openvino", "fp32", device="cuda")
    real_import = builtins.__import__

    def no_openvino(name, *args, **kw):
        if name.startswith(("openvino", "nncf")):
            raise ImportError(name)
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_openvino)
    with pytest.raises(runtime.RuntimeChoiceError, match="pip install openvino nncf"):
        runtime.check("openvino", "int8")


def test_colorize_with_openvino_int8_writes_the_same_files_close_to_fp32(script, siggraph_weights, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        exif = Image.Exif()
        exif[0x010E] = f"photo {i}"  # ImageDescription: metadata the output keeps
        Image.fromarray(synthetic_rgb(i, 72, 96)).save(src / f"{i}.jpg", quality=95, exif=exif)
    code, err = script("colorize.py", str(src), str(tmp_path / "exact"), f"--ckpt={siggraph_weights}", "--size=64",
                       "--runtime=torch")
    assert code == 0, err
    code, err = script("colorize.py", str(src), str(tmp_path / "int8"), f"--ckpt={siggraph_weights}", "--size=64",
                       "--runtime=openvino", "--precision=int8", "--calibration_images=3")  # the job's own photos
    assert code == 0, err
    for i in range(3):
        exact, fast = Image.open(tmp_path / "exact" / f"{i}.jpg"), Image.open(tmp_path / "int8" / f"{i}.jpg")
        assert fast.size == exact.size and fast.getexif().get(0x010E) == f"photo {i}"
        diff = np.abs(np.asarray(fast, int) - np.asarray(exact, int))
        assert 0 < diff.mean() < 10
    code, err = script("colorize.py", str(src / "0.jpg"), str(tmp_path / "t.png"), f"--ckpt={siggraph_weights}",
                       "--runtime=openvino", "--temperature=0.5")
    assert code == 1 and "temperature 1" in err and not (tmp_path / "t.png").exists()


def test_an_export_ships_openvino_models_that_colorize_uses_without_converting(script, release_weights, tmp_path, monkeypatch,
                                                                              capsys):
    import runpy
    import sys

    from conftest import ROOT

    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(4):
        Image.fromarray(synthetic_rgb(i, 64, 64)).save(calib / f"{i}.png")
    monkeypatch.setattr(sys, "argv", ["export.py", release_weights, str(tmp_path / "ex"), "--openvino=fp32,int8", f"--calibration={calib}"])
    try:
        runpy.run_path(str(ROOT / "export.py"), run_name="__main__")
    except SystemExit as e:
        assert not e.code, capsys.readouterr().err
    assert (tmp_path / "ex" / "openvino" / "int8" / "model.xml").is_file() and (tmp_path / "ex" / "openvino" / "fp32" / "model.bin").is_file()

    def converted(*args):
        raise AssertionError("converted instead of using the shipped model")

    monkeypatch.setattr(runtime, "_convert", converted)
    Image.fromarray(synthetic_rgb(9, 64, 80)).save(tmp_path / "p.png")
    for precision in ("int8", "bf16"):
        code, err = script("colorize.py", str(tmp_path / "p.png"), str(tmp_path / f"{precision}.png"), f"--ckpt={tmp_path / 'ex'}",
                           "--runtime=openvino", f"--precision={precision}", "--fallback=True")
        assert code == 0, err
    with pytest.raises(AssertionError, match="converted instead"):  # shipped for 256x256 only: another size converts
        script("colorize.py", str(tmp_path / "p.png"), str(tmp_path / "64.png"), f"--ckpt={tmp_path / 'ex'}",
               "--runtime=openvino", "--precision=int8", "--size=64")


def test_evaluate_with_openvino_gives_torchs_metrics(script, siggraph_weights, tmp_path):
    import json

    d = tmp_path / "val"
    d.mkdir()
    for i in range(3):
        Image.fromarray(synthetic_rgb(40 + i, 64, 64)).save(d / f"{i}.png")
    rows = {}
    for rt in ("torch", "openvino"):
        code, err = script("evaluate.py", f"--ckpt={siggraph_weights}", f"--dataset={d}", "--image_size=64", "--fid=none",
                           "--lpips_weights=none", "--vgg_weights=none", "--device=cpu", "--num_workers=0", "--hints=0,5",
                           f"--runtime={rt}", f"--out={tmp_path / rt}.json")
        assert code == 0, err
        rows[rt] = json.loads((tmp_path / f"{rt}.json").read_text())
    assert rows["openvino"]["protocol"]["runtime"] == "openvino fp32"
    for a, b in zip(rows["torch"]["models"], rows["openvino"]["models"]):
        assert a["hints"] == b["hints"] and a["l1_ab"] == pytest.approx(b["l1_ab"], abs=1e-3) and a["psnr"] == pytest.approx(b["psnr"], abs=1e-3)
    code, err = script("evaluate.py", f"--ckpt={siggraph_weights}", f"--dataset={d}", "--runtime=openvino", "--precision=int8")
    assert code == 1 and "needs --calibration=FOLDER" in err


AVX2 = {"fma", "avx2"}  # an AMD EPYC Zen 2 or most laptops
BF16 = AVX2 | {"avx512f", "avx512_vnni", "avx512_bf16"}  # this project's usual VM (AMD EPYC Zen 4)


@pytest.mark.parametrize("flags, cls", [(AVX2, "AVX2"), (AVX2 | {"avx_vnni"}, "AVX2 VNNI"), (AVX2 | {"avx512f"}, "AVX-512"),
                                        (AVX2 | {"avx512f", "avx512_vnni"}, "AVX-512 VNNI"), (BF16, "AVX512-BF16"),
                                        (BF16 | {"amx_bf16"}, "AMX")])
def test_the_cpu_class_comes_from_the_flags_and_onednns_cap(flags, cls, monkeypatch, tmp_path):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    assert runtime.cpu_class(flags) == cls
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"model name\t: AMD EPYC\nflags\t\t: {' '.join(sorted(flags))}\n")
    real = runtime.Path
    monkeypatch.setattr(runtime, "Path", lambda p: real(cpuinfo) if p == "/proc/cpuinfo" else real(p))
    assert runtime.cpu_class() == cls and runtime.has_bf16() == (cls in ("AVX512-BF16", "AMX"))
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")  # kernels capped to AVX2: no bf16 units for them
    assert runtime.cpu_class().startswith("AVX2") and not runtime.has_bf16()


def test_auto_picks_the_fastest_on_each_cpu_class_and_says_so(monkeypatch):
    monkeypatch.setattr(runtime.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(runtime, "cpu_flags", lambda: AVX2)
    rt, precision, note = runtime.choose("auto", "auto")
    assert (rt, precision) == ("torch", "fp32") and "AVX2: no bf16 units" in note and "\n" not in note
    assert runtime.choose("auto", "int8")[:2] == ("openvino", "int8")  # asked for: int8 runs on OpenVINO only
    monkeypatch.setattr(runtime, "cpu_flags", lambda: BF16)
    rt, precision, note = runtime.choose("auto", "auto")
    assert (rt, precision) == ("openvino", "bf16") and "AVX512-BF16" in note
    assert runtime.choose("auto", "auto", temperature=0.5)[:2] == ("torch", "bf16")  # OpenVINO holds temperature 1
    rt, precision, note = runtime.choose("auto", "auto", samples=2)  # the line says why torch, and names the exact path
    assert (rt, precision) == ("torch", "bf16") and "torch, since --samples needs the model's colour distribution" in note
    assert "--precision=fp32 for the exact path" in note and "--runtime=torch for" not in note, note
    assert runtime.choose("auto", "auto", device="cuda")[:2] == ("torch", "fp32")
    assert runtime.choose("torch", "auto") == ("torch", "fp32", "")  # torch alone: the exact path, as before
    assert runtime.choose("openvino", "auto")[:2] == ("openvino", "bf16")
    assert runtime.choose("torch", "fp32") == ("torch", "fp32", "")
    monkeypatch.setattr(runtime, "_openvino_installed", lambda: False)
    assert runtime.choose("auto", "auto")[:2] == ("torch", "bf16")  # not installed: torch's own bf16


def test_the_cache_key_names_the_cpu_class(monkeypatch):
    G = varied_generator(1)
    monkeypatch.setattr(runtime, "cpu_flags", lambda: AVX2)
    avx2 = runtime._key(G, 64, "fp32", "")
    monkeypatch.setattr(runtime, "cpu_flags", lambda: BF16)
    assert runtime._key(G, 64, "fp32", "") != avx2  # one model name ("AMD EPYC"), two classes: two entries


def test_bf16_refused_without_units_names_only_options_the_script_has(monkeypatch):
    monkeypatch.setattr(runtime, "has_bf16", lambda: False)
    with pytest.raises(runtime.RuntimeChoiceError) as e:
        runtime.check("openvino", "bf16")  # evaluate.py and app.py have no --fallback
    assert "--fallback" not in str(e.value) and "--precision=fp32" in str(e.value)


def test_a_damaged_cache_entry_is_converted_again(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COLORGAN_CACHE", str(tmp_path))
    G = varied_generator(1)
    L, _ = data.uint8_to_lab(photos(30, 2))
    good = runtime.prepare(G, "openvino", "fp32", 64)(L)
    folder = next((tmp_path / "openvino").glob("eccv16-64-fp32-*"))
    for damage in ("zeroed", "truncated", "garbage xml"):
        shutil.rmtree(tmp_path / "openvino" / "compiled")  # OpenVINO's compiled blob gone: the IR is what is read
        bin_, xml = folder / "model.bin", folder / "model.xml"
        if damage == "zeroed":  # the same size, wrong weights: it would run, with wrong colours
            raw = bytearray(bin_.read_bytes())
            raw[len(raw) // 4: len(raw) // 2] = bytes(len(raw) // 2 - len(raw) // 4)
            bin_.write_bytes(bytes(raw))
        elif damage == "truncated":
            bin_.write_bytes(bin_.read_bytes()[:1000])
        else:
            xml.write_text("<not a model")
        capsys.readouterr()
        again = runtime.prepare(G, "openvino", "fp32", 64)(L)
        assert "is damaged: made again" in capsys.readouterr().err, damage
        assert torch.equal(again, good) and runtime.intact(folder), damage


def test_a_cache_that_cannot_be_written_is_one_line_and_the_run_goes_on(tmp_path, monkeypatch, capsys):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("COLORGAN_CACHE", str(tmp_path / "file"))
    G = varied_generator(1)
    L, _ = data.uint8_to_lab(photos(30, 2))
    out = runtime.prepare(G, "openvino", "fp32", 64)(L)
    assert "cannot write the OpenVINO cache" in capsys.readouterr().err
    assert (out - G(L).detach()).abs().max() < 0.05


def test_int8_with_hints_is_refused_before_the_weights_load(script, siggraph_weights, tmp_path, monkeypatch):
    import models

    Image.fromarray(synthetic_rgb(0, 48, 64)).save(tmp_path / "p.png")
    (tmp_path / "h.json").write_text('{"points": [{"x": 10, "y": 10, "color": "red"}]}')
    monkeypatch.setattr(models, "load_generator", lambda *a, **k: pytest.fail("the weights loaded"))
    code, err = script("colorize.py", str(tmp_path / "p.png"), str(tmp_path / "o.png"), f"--ckpt={siggraph_weights}",
                       f"--hints={tmp_path / 'h.json'}", "--runtime=openvino", "--precision=int8")
    assert code == 1 and "int8 loses hints" in err and len(err.strip().splitlines()) == 1, err


def test_int8_calibrates_on_the_whole_job_when_resuming_and_a_stop_there_is_one_line(script, release_weights, tmp_path,
                                                                                      monkeypatch):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(4):
        Image.fromarray(synthetic_rgb(i, 48, 64)).save(src / f"{i}.png")
    calibrated = []

    def prepare(G, rt, precision, size, photos, *args, **kw):
        calibrated.append(list(photos))
        return G

    monkeypatch.setattr(runtime, "prepare", prepare)
    args = [str(src), str(tmp_path / "out"), f"--ckpt={release_weights}", "--size=64", "--runtime=openvino", "--precision=int8"]
    assert script("colorize.py", *args)[0] == 0
    (tmp_path / "out" / "1.png").unlink()
    (tmp_path / "out" / "2.png").write_bytes(b"")  # a zero-byte output (another tool's crash) is not done
    code, err = script("colorize.py", *args, "--skip_existing=True")
    assert code == 0 and "2 outputs exist, 2 to do" in err, err
    assert calibrated[0] == calibrated[1] == sorted(src.iterdir())  # one calibration set, one model for the archive
    assert Image.open(tmp_path / "out" / "2.png").size == (64, 48)

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(runtime, "prepare", interrupted)  # Ctrl-C while converting or calibrating
    code, err = script("colorize.py", *args[:1], str(tmp_path / "out2"), *args[2:])
    assert code == 130 and "Traceback" not in err and "stopped by SIGINT while preparing the model" in err
    assert not (tmp_path / "out2").exists()


def test_colorize_without_a_flag_says_what_auto_chose(script, release_weights, tmp_path, monkeypatch):
    Image.fromarray(synthetic_rgb(0, 48, 64)).save(tmp_path / "p.png")
    monkeypatch.setattr(runtime, "cpu_flags", lambda: AVX2)
    code, err = script("colorize.py", str(tmp_path / "p.png"), str(tmp_path / "auto.png"), f"--ckpt={release_weights}", "--size=64")
    assert code == 0 and "auto chose --runtime=torch --precision=fp32 (AVX2: no bf16 units" in err, err
    assert script("colorize.py", str(tmp_path / "p.png"), str(tmp_path / "exact.png"), f"--ckpt={release_weights}", "--size=64",
                  "--runtime=torch", "--precision=fp32")[0] == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "auto.png")), np.asarray(Image.open(tmp_path / "exact.png")))
