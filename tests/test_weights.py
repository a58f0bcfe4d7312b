"""Every weights file a script reads: downloaded once, checked against the publisher's hash, never unpickled."""

from __future__ import annotations

import hashlib
import http.server
import pickle
import threading
import urllib.error
from pathlib import Path

import pytest
import torch

import losses
import metrics
import models

# the cache names of every publisher's file the scripts read, and what reads it
PUBLISHED = {
    "colorization_release_v2-9b330a0b.pth": lambda: models.load_generator("eccv16"),
    "vgg19-dcbb9e9d.pth": lambda: losses.VGGFeatures("imagenet"),
    "inception_v3_google-0cc3c7bd.pth": lambda: metrics.tv_inception("default"),
    "weights-inception-2015-12-05-6726825d.pth": lambda: metrics.tf_inception("default"),
    "alexnet-owt-7be5be79.pth": lambda: metrics.lpips_network("alex", "default", "cpu"),
    "vgg16-397923af.pth": lambda: metrics.lpips_network("vgg", "default", "cpu"),
}


class Planted:
    """A pickle that writes a file when it is unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """torch.hub's cache in tmp_path, and no network: every download attempt fails as it does offline."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("COLORGAN_ECCV16_URL", raising=False)

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("no network here")

    monkeypatch.setattr(models.urllib.request, "urlopen", no_network)
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_a_planted_pickle_at_every_cache_name_runs_no_code_and_is_moved_aside(offline, tmp_path):
    offline.mkdir(parents=True)
    for name, read in PUBLISHED.items():
        marker = tmp_path / f"{name}.ran"
        (offline / name).write_bytes(pickle.dumps({"state_dict": Planted(marker)}))
        with pytest.raises((models.ModelError, losses.VGGError, metrics.MetricError)) as e:
            read()
        message = str(e.value)
        assert not marker.exists(), name
        moved = list(offline.glob(f"{name}.sha256-*"))
        assert len(moved) == 1 and not (offline / name).exists(), name
        assert f"moved it to {moved[0].name}" in message and "no network here" in message and "\n" not in message, message
        assert f"put that file at {offline / name}" in message, message


def test_offline_publisher_weights_say_which_file_goes_where_and_the_option(offline):
    for name, read, option in (("vgg19-dcbb9e9d.pth", PUBLISHED["vgg19-dcbb9e9d.pth"], "--vgg_weights=PATH"),
                               ("inception_v3_google-0cc3c7bd.pth", PUBLISHED["inception_v3_google-0cc3c7bd.pth"], "--fid_weights=PATH"),
                               ("weights-inception-2015-12-05-6726825d.pth", PUBLISHED["weights-inception-2015-12-05-6726825d.pth"],
                                "--fid_weights=PATH"),
                               ("alexnet-owt-7be5be79.pth", PUBLISHED["alexnet-owt-7be5be79.pth"], "--lpips_weights=PATH")):
        with pytest.raises((losses.VGGError, metrics.MetricError)) as e:
            read()
        assert f"put that file at {offline / name}" in str(e.value) and option in str(e.value), str(e.value)
        assert "no network here" in str(e.value) and "\n" not in str(e.value)


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
    vgg = losses.VGGFeatures("imagenet")
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
    monkeypatch.setattr(models, "DOWNLOAD_MAX_BYTES", 3 << 20)
    monkeypatch.setattr(models, "DOWNLOAD_MAX_S", 20)  # a broken size cap fails here, not by filling the disk
    with pytest.raises(models.ModelError, match="more than the limit of 3,145,728 bytes.*put that file at"):
        models.fetch_weights([f"{endless}/w-00000000.pth"])
    monkeypatch.setattr(models, "DOWNLOAD_MAX_BYTES", 1 << 40)
    monkeypatch.setattr(models, "DOWNLOAD_MAX_S", 0.2)
    with pytest.raises(models.ModelError, match=r"took more than 0.2 s"):
        models.fetch_weights([f"{endless}/w-00000000.pth"])
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
        models.fetch_weights(["http://127.0.0.1:9/model.pth"])
