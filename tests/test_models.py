"""models.py: release compatibility, the PatchGAN, weights download, checkpoints, the colorize pipeline."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from skimage import color

import data
import models
import weights
from conftest import synthetic_rgb

# The release's layout, written out independently of models.py: (block, [(kind, cin, cout, stride, dilation)]).
RELEASE = [
    ("model1", [("c", 1, 64, 1, 1), ("c", 64, 64, 2, 1), ("bn", 64)]),
    ("model2", [("c", 64, 128, 1, 1), ("c", 128, 128, 2, 1), ("bn", 128)]),
    ("model3", [("c", 128, 256, 1, 1), ("c", 256, 256, 1, 1), ("c", 256, 256, 2, 1), ("bn", 256)]),
    ("model4", [("c", 256, 512, 1, 1), ("c", 512, 512, 1, 1), ("c", 512, 512, 1, 1), ("bn", 512)]),
    ("model5", [("c", 512, 512, 1, 2)] * 3 + [("bn", 512)]),
    ("model6", [("c", 512, 512, 1, 2)] * 3 + [("bn", 512)]),
    ("model7", [("c", 512, 512, 1, 1)] * 3 + [("bn", 512)]),
]


def release_keys() -> dict[str, tuple]:
    """Keys and shapes of the release's state dict, in order."""
    keys: dict[str, tuple] = {}
    for name, layers in RELEASE:
        i = 0
        for layer in layers:
            if layer[0] == "c":
                _, cin, cout, _, _ = layer
                keys[f"{name}.{i}.weight"], keys[f"{name}.{i}.bias"] = (cout, cin, 3, 3), (cout,)
                i += 2
            else:
                n = layer[1]
                for k in ("weight", "bias", "running_mean", "running_var"):
                    keys[f"{name}.{i}.{k}"] = (n,)
                keys[f"{name}.{i}.num_batches_tracked"] = ()
    keys |= {"model8.0.weight": (512, 256, 4, 4), "model8.0.bias": (256,), "model8.2.weight": (256, 256, 3, 3),
             "model8.2.bias": (256,), "model8.4.weight": (256, 256, 3, 3), "model8.4.bias": (256,),
             "model8.6.weight": (313, 256, 1, 1), "model8.6.bias": (313,), "model_out.weight": (2, 313, 1, 1)}
    return keys


def release_forward(state: dict, L: torch.Tensor) -> torch.Tensor:
    """The release's forward pass computed functionally from a state dict (eval mode)."""
    x = (L - 50) / 100
    for name, layers in RELEASE:
        i = 0
        for layer in layers:
            if layer[0] == "c":
                _, _, _, stride, dil = layer
                x = F.relu(F.conv2d(x, state[f"{name}.{i}.weight"], state[f"{name}.{i}.bias"], stride, dil, dil))
                i += 2
            else:
                p = f"{name}.{i}."
                x = F.batch_norm(x, state[p + "running_mean"], state[p + "running_var"], state[p + "weight"], state[p + "bias"])
    x = F.relu(F.conv_transpose2d(x, state["model8.0.weight"], state["model8.0.bias"], 2, 1))
    x = F.relu(F.conv2d(x, state["model8.2.weight"], state["model8.2.bias"], padding=1))
    x = F.relu(F.conv2d(x, state["model8.4.weight"], state["model8.4.bias"], padding=1))
    x = F.conv2d(x, state["model8.6.weight"], state["model8.6.bias"])
    ab = F.conv2d(torch.softmax(x, 1), state["model_out.weight"])
    return F.interpolate(ab, scale_factor=4, mode="bilinear", align_corners=False) * 110


def random_release_state(seed: int) -> dict:
    """Release-format weights with random values and non-trivial BN statistics."""
    g = torch.Generator().manual_seed(seed)
    return {k: (torch.randn(s, generator=g) * 0.05 if "running_var" not in k else torch.rand(s, generator=g) + 0.5)
            if s != () else torch.tensor(7) for k, s in release_keys().items()}


def test_state_dict_is_the_releases():
    sd = models.ECCV16Generator().state_dict()
    assert len(sd) == 82
    assert [(k, tuple(v.shape)) for k, v in sd.items()] == list(release_keys().items())


def test_release_weights_load_strictly_and_give_the_release_output():
    state = random_release_state(0)
    G = models.ECCV16Generator().eval()
    G.load_state_dict(models._release_state(state), strict=True)
    for shape in ((2, 1, 96, 96), (1, 1, 88, 120)):  # a batch; a non-square size (the same ops at any size)
        L = torch.rand(shape) * 100
        with torch.no_grad():
            assert (G(L) - release_forward(state, L)).abs().max() < 1e-3
    # a state dict saved without BatchNorm's counters (as older torch wrote them) loads strictly too, to the same weights
    bare = models.ECCV16Generator()
    bare.load_state_dict(models._release_state({k: v for k, v in state.items() if "num_batches_tracked" not in k}), strict=True)
    loaded = bare.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if "num_batches_tracked" not in k)


def test_bins_are_the_releases_pts_in_hull():
    bins = models.ab_bins().numpy()
    header = "{'descr': '<i8', 'fortran_order': False, 'shape': (313, 2), }"
    header += " " * (-(10 + len(header) + 1) % 16) + "\n"  # numpy 1.0 format, 16-byte aligned as the release's file
    raw = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + bins.astype("<i8").tobytes()
    assert hashlib.sha256(raw).hexdigest().startswith("b5dec01315c34f43")
    assert torch.equal(models.ECCV16Generator().model_out.weight[:, :, 0, 0].t() * 110, torch.from_numpy(bins).float())


def test_temperature_one_is_the_mean_and_lower_is_more_saturated():
    torch.manual_seed(0)
    G = models.ECCV16Generator().eval()
    L = torch.rand(1, 1, 64, 64) * 100
    with torch.no_grad():
        logits = G.logits(L)
        mean = torch.einsum("nqhw,qc->nchw", torch.softmax(logits, 1), models.ab_bins().float())
        assert (G(L) - F.interpolate(mean, scale_factor=4, mode="bilinear")).abs().max() < 1e-3
        assert G(L, temperature=0.38).norm(dim=1).mean() > G(L).norm(dim=1).mean()


def test_patchgan_shape_and_70x70_receptive_field():
    D = models.PatchDiscriminator()
    assert D(torch.zeros(2, 1, 256, 256), torch.zeros(2, 2, 256, 256)).shape == (2, 1, 30, 30)
    L = torch.rand(1, 1, 256, 256, requires_grad=True)
    ab = torch.rand(1, 2, 256, 256, requires_grad=True)
    D(L, ab)[0, 0, 15, 15].backward()
    touched = (L.grad.abs() + ab.grad.abs().sum(1, keepdim=True))[0, 0] > 0
    rows, cols = touched.any(1).nonzero().flatten(), touched.any(0).nonzero().flatten()
    assert touched.sum() == 70 * 70 and rows.max() - rows.min() == 69 and cols.max() - cols.min() == 69


def test_ema_update_moves_parameters_and_copies_buffers():
    a, b = nn.BatchNorm1d(3), nn.BatchNorm1d(3)
    with torch.no_grad():
        b.weight.fill_(3.0)
        b.running_mean.fill_(5.0)
    models.ema_update(a, b, 0.75)
    assert torch.allclose(a.weight, torch.full((3,), 1.5)) and torch.equal(a.running_mean, b.running_mean)


# ----------------------------------------------------------------------------- checkpoints and specs


def test_the_fixture_models_colour_depends_on_the_input_and_varies_across_the_image():
    from conftest import varied_generator

    G, other = varied_generator(0), varied_generator(1)
    photos = torch.stack([torch.from_numpy(synthetic_rgb(i, 64, 64)).permute(2, 0, 1) for i in range(20, 24)])
    L = data.uint8_to_l(photos)
    with torch.no_grad():
        ab, ab_other = G(L), other(L)
        dark, light = G(torch.zeros(1, 1, 64, 64)), G(torch.full((1, 1, 64, 64), 100.0))
    assert ab.std((2, 3)).mean() > 3  # within each photo (plain random weights: 1e-3)
    assert (ab - ab.flip(-1)).abs().mean() > 3 and (ab - ab.roll(1, 0)).abs().mean() > 3  # mirrored, or a neighbour's
    assert (dark - light).abs().mean() > 5 and (ab - ab_other).abs().mean() > 3


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    weights.save_checkpoint({"step": 1, "w": torch.ones(2)}, path)

    def dies(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies)
    with pytest.raises(KeyboardInterrupt):
        weights.save_checkpoint({"step": 2}, path)
    assert weights.load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_loading_never_unpickles_code(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"generator": Evil()}))
    torch.save({"generator": Evil()}, tmp_path / "evil2.pt")
    for name, message in (("evil.pt", "not a readable checkpoint"), ("evil2.pt", "does not unpickle code")):
        with pytest.raises(models.ModelError, match=message) as e:
            weights.load_checkpoint(tmp_path / name)
        assert "weights_only" not in str(e.value)


def test_load_generator_specs(tmp_path, release_weights):
    G = models.load_generator(release_weights)
    assert not G.training
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in G.state_dict().items()}
    weights.save_checkpoint({"generator": G.state_dict(), "generator_ema": ema, "step": 3, "epoch": 0, "config": {}}, tmp_path / "ckpt.pt")
    G2 = models.load_generator(str(tmp_path / "ckpt.pt"))
    assert torch.equal(G2.model_out.weight, ema["model_out.weight"])
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    torch.save({"something": torch.zeros(3)}, tmp_path / "wrong.pt")
    for spec, msg in ((str(tmp_path / "missing.pt"), "no such file"), (str(tmp_path / "bad.pt"), "not a readable"),
                      (str(tmp_path / "wrong.pt"), "not ECCV16 generator weights")):
        with pytest.raises(models.ModelError, match=msg):
            models.load_generator(spec)


@pytest.fixture
def file_server(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/served."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    http.server.SimpleHTTPRequestHandler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_weights_come_from_the_first_mirror_that_serves_them_whole(file_server, tmp_path, monkeypatch, release_weights):
    root, url = file_server
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    raw = open(release_weights, "rb").read()
    name = f"colorization_release_v2-{hashlib.sha256(raw).hexdigest()[:8]}.pth"
    (root / "wrong").mkdir()
    (root / "wrong" / name).write_bytes(raw[:-1] + b"x")  # a mirror serving other bytes under the right name
    (root / "ok").mkdir()
    (root / "ok" / name).write_bytes(raw)
    mirrors = [f"{url}/forbidden/{name}", f"{url}/wrong/{name}", f"{url}/ok/{name}"]  # 404, wrong bytes, good
    cached = weights.fetch_weights(mirrors)
    assert cached.read_bytes() == raw and cached == tmp_path / "torch" / "hub" / "checkpoints" / name
    (root / "ok" / name).unlink()  # cached: no second download
    monkeypatch.setenv("COLORGAN_ECCV16_URL", f"{url}/ok/{name}")
    G = models.load_generator("eccv16")
    assert torch.equal(G.state_dict()["model8.6.bias"], torch.load(release_weights, weights_only=True)["model8.6.bias"])

    cached.write_bytes(b"not the weights")  # a wrong file at the cache path is moved aside, never deleted
    with pytest.raises(models.ModelError) as e:
        weights.fetch_weights(mirrors)
    aside = sorted(cached.parent.glob(f"{name}.sha256-*"))
    assert [p.read_bytes() for p in aside] == [b"not the weights"] and not cached.exists()
    assert f"moved it to {aside[0].name}" in str(e.value) and f"put that file at {cached}" in str(e.value)
    assert "404" in str(e.value) and "is not" in str(e.value)  # each mirror's reason
    (root / "ok" / name).write_bytes(raw)
    assert weights.fetch_weights(mirrors).read_bytes() == raw


def test_a_forbidden_mirror_moves_on(tmp_path, monkeypatch):
    """The S3 bucket's failure mode: 403 Forbidden."""
    class Forbidden(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_error(403)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Forbidden)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    name = "w-00000000.pth"
    monkeypatch.setenv("COLORGAN_ECCV16_URL", f"http://127.0.0.1:{server.server_address[1]}/{name} http://127.0.0.1:9/{name}")
    with pytest.raises(models.ModelError, match=r"403.*127\.0\.0\.1:9: .*refused.*offline, put that file at"):
        models.load_generator("eccv16")
    server.shutdown()


def test_offline_download_says_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("COLORGAN_ECCV16_URL", "http://127.0.0.1:9/colorization_release_v2-9b330a0b.pth")
    with pytest.raises(models.ModelError) as e:
        models.load_generator("eccv16")
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "colorization_release_v2-9b330a0b.pth") in str(e.value)
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------- colorize


def release_pipeline(G: models.ECCV16Generator, rgb: np.ndarray) -> np.ndarray:
    """The official demo's steps: skimage float64 Lab at full resolution, bicubic 256 copy, bilinear ab."""
    small = np.asarray(Image.fromarray(rgb).resize((256, 256), Image.BICUBIC))
    L_orig = torch.from_numpy(color.rgb2lab(rgb)[:, :, 0])[None, None].float()
    L_small = torch.from_numpy(color.rgb2lab(small)[:, :, 0])[None, None].float()
    with torch.no_grad():
        ab = F.interpolate(G(L_small), size=rgb.shape[:2], mode="bilinear")
    lab = torch.cat([L_orig, ab], 1)[0].permute(1, 2, 0).numpy().astype(np.float64)
    return (color.lab2rgb(lab) * 255).round().astype(np.uint8)


def test_colorize_is_the_release_pipeline_and_keeps_full_resolution_l(release_weights):
    G = models.load_generator(release_weights)
    rgb = synthetic_rgb(5, 300, 410)
    out = np.asarray(models.colorize(G, Image.fromarray(rgb), chunk_pixels=50_000))
    ref = release_pipeline(G, rgb)
    diff = np.abs(out.astype(int) - ref.astype(int))
    assert out.shape == rgb.shape and diff.mean() <= 1.0 and np.percentile(diff, 99.9) <= 8
    dL = np.abs(color.rgb2lab(out)[..., 0] - color.rgb2lab(rgb)[..., 0])
    assert dL.mean() <= 0.6


def test_colorize_keeps_alpha(release_weights):
    G = models.load_generator(release_weights)
    img = Image.fromarray(synthetic_rgb(1, 40, 50))
    img.putalpha(Image.fromarray(np.tile(np.arange(50, dtype=np.uint8) * 5, (40, 1))))
    out = models.colorize(G, img)
    assert out.mode == "RGBA" and np.array_equal(np.asarray(out)[..., 3], np.asarray(img)[..., 3])


# ----------------------------------------------------------------------------- the hypercolumn model


def test_the_hypercolumn_model_saves_only_its_head_and_loads_from_its_file(hypercolumn_weights, tmp_path):
    from conftest import varied_hypercolumn

    G = varied_hypercolumn(0)
    assert all(not k.startswith("backbone.") for k in G.state_dict()) and "project.weight" in G.state_dict()
    assert sum(p.numel() for p in G.parameters() if p.requires_grad) < 2e6  # the head: a few MB
    H = models.load_generator(hypercolumn_weights)
    assert models.arch_of(hypercolumn_weights) == "hypercolumn" and isinstance(H, models.HypercolumnGenerator)
    L = data.uint8_to_l(torch.stack([torch.from_numpy(synthetic_rgb(i, 64, 64)).permute(2, 0, 1) for i in range(2)]))
    with torch.no_grad():
        ab = H(L)
    assert torch.equal(ab, G(L)) and ab.shape == (2, 2, 64, 64)
    assert ab.std((2, 3)).min() > 3 and (ab[0] - ab[1]).abs().mean() > 3  # colour that varies with the input and across it
    assert "random VGG16 (COLORGAN_BACKBONE), not ImageNet's" in models.describe(hypercolumn_weights, H)


def test_the_hypercolumn_is_vgg16s_taps_resampled_to_a_quarter(hypercolumn_weights):
    import torch.nn.functional as F
    import torchvision

    G = models.load_generator(hypercolumn_weights)
    vgg = torchvision.models.vgg16().features[:30].eval()  # torchvision's own network, NCHW, with the same weights
    vgg.load_state_dict({k.replace(".weight", ".weight").replace(".bias", ".bias"): v.contiguous()
                         for k, v in G.backbone.features.named_buffers() if k.split(".")[-1] in ("weight", "bias")})
    L = data.uint8_to_l(torch.from_numpy(synthetic_rgb(3, 64, 64)).permute(2, 0, 1)[None])
    x = (data.gray_rgb(L) - torch.tensor(models.IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(models.IMAGENET_STD).view(1, 3, 1, 1)
    taps = []
    with torch.no_grad():
        for i, layer in enumerate(vgg):
            x = layer(x)
            if i in (3, 8, 15, 22, 29):  # relu1_2 (64x64), relu2_2 (32), relu3_3 (16), relu4_3 (8), relu5_3 (4)
                taps.append(x)
        expected = torch.cat([F.avg_pool2d(taps[0], 4), F.avg_pool2d(taps[1], 2), taps[2],
                              F.interpolate(taps[3], size=(16, 16), mode="bilinear"), F.interpolate(taps[4], size=(16, 16), mode="bilinear")], 1)
        columns, scene = G.features(L)
    assert columns.shape == (1, 1472, 16, 16) and torch.allclose(columns, expected, rtol=1e-3, atol=1e-3 * expected.abs().max())
    assert torch.allclose(scene, taps[4].mean((2, 3)), rtol=1e-3, atol=1e-4)


def test_the_head_on_cached_positions_is_the_dense_head_there(hypercolumn_weights):
    """Training on sampled positions (the cache) trains the model that colorizes: the head is per position."""
    G = models.load_generator(hypercolumn_weights)
    L = data.uint8_to_l(torch.from_numpy(synthetic_rgb(5, 64, 64)).permute(2, 0, 1)[None])
    with torch.no_grad():
        columns, scene = G.features(L)
        dense = G(L, logits=True)
        where = torch.tensor([0, 17, 100, 255])
        picked = columns.flatten(2)[:, :, where][..., None]  # (1,1472,4,1), as features.fill stores them
        sparse = G(cached=(picked, scene))
    assert torch.allclose(sparse[0, :, :, 0], dense.flatten(2)[0][:, where], atol=1e-4)


def test_the_rebalance_moves_the_decoded_colour_toward_rare_bins(hypercolumn_weights):
    G = models.load_generator(hypercolumn_weights)
    L = data.uint8_to_l(torch.from_numpy(synthetic_rgb(5, 64, 64)).permute(2, 0, 1)[None])
    with torch.no_grad():
        logits = G(L, logits=True)
        plain = G(L)
        G.rebalance.copy_(torch.linspace(-2, 2, 313))
        shifted = G(L)
        p = torch.softmax(logits + G.rebalance[:, None, None], 1)  # by hand: the annealed mean with the added log-weights
        by_hand = torch.einsum("nchw,cd->ndhw", p, models.ab_bins().float())
    assert torch.allclose(shifted, torch.nn.functional.interpolate(by_hand, scale_factor=4, mode="bilinear"), atol=1e-3)
    assert (shifted - plain).abs().mean() > 1
