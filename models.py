"""Models: the ECCV16, SIGGRAPH17 and hypercolumn generators, the PatchGAN discriminator, model specs and painting.

Every script gets its generator from load_generator(spec) (its weights from weights.py) and colorizes with colorize().
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

import data
import weights
from weights import ModelError

# Zhang et al.'s 313 in-gamut ab bins (grid 10): for each a, the range of b. In this order (a, then b)
# they are the release's pts_in_hull.npy; the release's model_out holds them / 110.
AB_BIN_RANGES = {
    -90: (50, 90), -80: (20, 90), -70: (0, 90), -60: (-20, 90), -50: (-30, 100), -40: (-40, 100),
    -30: (-50, 100), -20: (-50, 100), -10: (-60, 100), 0: (-70, 100), 10: (-80, 90), 20: (-80, 90),
    30: (-90, 90), 40: (-100, 90), 50: (-100, 80), 60: (-110, 80), 70: (-110, 80), 80: (-110, 70),
    90: (-110, 70), 100: (-90, 0),
}


AB_CLASSES = [(a, b) for a in range(-110, 111, 10) for b in range(-110, 111, 10)]  # SIGGRAPH17's 529 classes: a*23 + b


def ab_class(ab: torch.Tensor) -> torch.Tensor:
    """SIGGRAPH17's class (N,H,W) of each ab (N,2,H,W): the nearest point of its 23 x 23 grid of 10."""
    q = ((ab.clamp(-110, 110) + 110) / 10).round().long()
    return q[:, 0] * 23 + q[:, 1]


def ab_bins() -> torch.Tensor:
    """The 313 ab bin centres (313, 2) int64, in the release's order."""
    return torch.tensor([(a, b) for a, (lo, hi) in AB_BIN_RANGES.items() for b in range(lo, hi + 1, 10)])


# ----------------------------------------------------------------------------- networks


def _convs(cin: int, cout: int, strides: list[int], dilation: int = 1) -> list[nn.Module]:
    """3x3 conv + ReLU per stride, the release's building block."""
    layers: list[nn.Module] = []
    for s in strides:
        layers += [nn.Conv2d(cin, cout, 3, s, dilation, dilation), nn.ReLU(True)]
        cin = cout
    return layers


class ECCV16Generator(nn.Module):
    """Zhang et al. 2016: L in [0,100] (N,1,H,W) -> ab in Lab units (N,2,H,W); the release's state dict."""

    arch = "eccv16"
    takes_hints = False

    def __init__(self):
        super().__init__()
        self.model1 = nn.Sequential(*_convs(1, 64, [1, 2]), nn.BatchNorm2d(64))
        self.model2 = nn.Sequential(*_convs(64, 128, [1, 2]), nn.BatchNorm2d(128))
        self.model3 = nn.Sequential(*_convs(128, 256, [1, 1, 2]), nn.BatchNorm2d(256))
        self.model4 = nn.Sequential(*_convs(256, 512, [1, 1, 1]), nn.BatchNorm2d(512))
        self.model5 = nn.Sequential(*_convs(512, 512, [1, 1, 1], dilation=2), nn.BatchNorm2d(512))
        self.model6 = nn.Sequential(*_convs(512, 512, [1, 1, 1], dilation=2), nn.BatchNorm2d(512))
        self.model7 = nn.Sequential(*_convs(512, 512, [1, 1, 1]), nn.BatchNorm2d(512))
        self.model8 = nn.Sequential(nn.ConvTranspose2d(512, 256, 4, 2, 1), nn.ReLU(True),
                                    *_convs(256, 256, [1, 1]), nn.Conv2d(256, 313, 1))
        self.model_out = nn.Conv2d(313, 2, 1, bias=False)
        if not self.model_out.weight.is_meta:  # meta: loading replaces it (and meta arithmetic would import torch._dynamo: 2 s)
            with torch.no_grad():  # from scratch, the output layer starts as what it means: the bin centres
                self.model_out.weight.copy_(ab_bins().float().t()[:, :, None, None] / 110)

    def logits(self, L: torch.Tensor) -> torch.Tensor:
        """The 313 bin logits at 1/4 resolution."""
        x = (L - 50) / 100
        for block in (self.model1, self.model2, self.model3, self.model4, self.model5, self.model6, self.model7, self.model8):
            x = block(x)
        return x

    def forward(self, L: torch.Tensor, hints: torch.Tensor | None = None, temperature: float = 1.0,
                logits: bool = False) -> torch.Tensor:
        """ab at full resolution (or, with logits=True, the bin logits); temperature < 1 is Zhang's annealed mean."""
        if hints is not None:
            raise ValueError("ECCV16 has no hint input (use a SIGGRAPH17 model)")
        if logits:  # through forward, so that DDP sees the classification loss's pass
            return self.logits(L)
        return F.interpolate(self.decode(self.logits(L), temperature), scale_factor=4, mode="bilinear")

    def decode(self, logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """ab (Lab units) at the logits' resolution: the annealed mean of softmax(logits / temperature)."""
        return self.model_out(torch.softmax(logits / temperature, 1)) * 110


class SIGGRAPH17Generator(nn.Module):
    """Zhang, Zhu et al. 2017 (user-guided): L in [0,100] (N,1,H,W) and hints (N,3,H,W) -- ab in Lab units where a hint
    is (0 elsewhere) and a 0/1 mask -- -> ab in Lab units (N,2,H,W); H and W multiples of 8; the release's state dict.
    Without hints (None, or an all-zero mask) it is an automatic colorizer."""

    arch = "siggraph17"
    takes_hints = True

    def __init__(self):
        super().__init__()
        self.model1 = nn.Sequential(*_convs(4, 64, [1, 1]), nn.BatchNorm2d(64))
        self.model2 = nn.Sequential(*_convs(64, 128, [1, 1]), nn.BatchNorm2d(128))
        self.model3 = nn.Sequential(*_convs(128, 256, [1, 1, 1]), nn.BatchNorm2d(256))
        self.model4 = nn.Sequential(*_convs(256, 512, [1, 1, 1]), nn.BatchNorm2d(512))
        self.model5 = nn.Sequential(*_convs(512, 512, [1, 1, 1], dilation=2), nn.BatchNorm2d(512))
        self.model6 = nn.Sequential(*_convs(512, 512, [1, 1, 1], dilation=2), nn.BatchNorm2d(512))
        self.model7 = nn.Sequential(*_convs(512, 512, [1, 1, 1]), nn.BatchNorm2d(512))
        self.model8up = nn.Sequential(nn.ConvTranspose2d(512, 256, 4, 2, 1))
        self.model3short8 = nn.Sequential(nn.Conv2d(256, 256, 3, 1, 1))
        self.model8 = nn.Sequential(nn.ReLU(True), *_convs(256, 256, [1, 1]), nn.BatchNorm2d(256))
        self.model9up = nn.Sequential(nn.ConvTranspose2d(256, 128, 4, 2, 1))
        self.model2short9 = nn.Sequential(nn.Conv2d(128, 128, 3, 1, 1))
        self.model9 = nn.Sequential(nn.ReLU(True), *_convs(128, 128, [1]), nn.BatchNorm2d(128))
        self.model10up = nn.Sequential(nn.ConvTranspose2d(128, 128, 4, 2, 1))
        self.model1short10 = nn.Sequential(nn.Conv2d(64, 128, 3, 1, 1))
        self.model10 = nn.Sequential(nn.ReLU(True), nn.Conv2d(128, 128, 3, 1, 1), nn.LeakyReLU(0.2))
        self.model_class = nn.Sequential(nn.Conv2d(256, len(AB_CLASSES), 1))  # the colour distribution at 1/4 resolution
        self.model_out = nn.Sequential(nn.Conv2d(128, 2, 1), nn.Tanh())

    def forward(self, L: torch.Tensor, hints: torch.Tensor | None = None, temperature: float = 1.0,
                logits: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """ab at the input's size (temperature does not apply: the output is a regression); with logits=True,
        (ab, the 529-class logits at 1/4 resolution), the class head on a detached trunk as the release trains it."""
        if L.shape[-1] % 8 or L.shape[-2] % 8:
            raise ValueError(f"SIGGRAPH17 needs a height and width that are multiples of 8, not {tuple(L.shape[-2:])}")
        if hints is None:
            hints = L.new_zeros(L.shape[0], 3, *L.shape[2:])
        x = torch.cat([(L - 50) / 100, hints[:, :2] / 110, hints[:, 2:]], 1)  # the release's input: the mask not centred
        conv1 = self.model1(x)
        conv2 = self.model2(conv1[:, :, ::2, ::2])
        conv3 = self.model3(conv2[:, :, ::2, ::2])
        conv7 = self.model7(self.model6(self.model5(self.model4(conv3[:, :, ::2, ::2]))))
        conv8 = self.model8(self.model8up(conv7) + self.model3short8(conv3))
        conv9 = self.model9(self.model9up(conv8) + self.model2short9(conv2))
        conv10 = self.model10(self.model10up(conv9) + self.model1short10(conv1))
        ab = self.model_out(conv10) * 110
        return (ab, self.model_class(conv8.detach())) if logits else ab


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RELU4_3 = 24  # index of relu4_3 in torchvision's vgg19().features (the GAN's perceptual loss)
VGG16_RELU4_3 = 22  # and in vgg16().features
VGG_NETS = ("vgg19", "vgg16")


class VGGError(ModelError):
    """VGG weights that cannot be had; the message is one line naming the options."""


class VGGFeatures(nn.Module):
    """Frozen torchvision VGG19 or VGG16 features up to a layer (default VGG19's relu4_3) on RGB in [0,1], ImageNet-
    normalised inside. Its weights are buffers outside the state dict: a model that holds it (the hypercolumn
    colorizer's backbone) saves only its own weights, and an optimizer never sees these."""

    def __init__(self, source: str = "imagenet", layer: int = RELU4_3, net: str = "vgg19", option: str = "vgg_weights"):
        super().__init__()
        import torchvision  # heavy: only the perceptual loss, the reference matching and the hypercolumn model need it

        with torch.device("meta"):  # the classifier (123M parameters in VGG19) is never used: no memory, no random init
            features = getattr(torchvision.models, net)(init_weights=False).features.to_empty(device="cpu")
        if source == "random":
            with torch.random.fork_rng(devices=[]):  # the same network every time, whatever ran before
                torch.manual_seed(0)
                for m in features:  # torchvision's own initialisation of these layers, in its order
                    if isinstance(m, nn.Conv2d):
                        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                        nn.init.zeros_(m.bias)
        else:
            state = vgg_state(source, net, option)
            try:
                features.load_state_dict(state)
            except RuntimeError:
                raise VGGError(f"{source}: not {net.upper()} weights (imagenet, random or a {net} .pth file)") from None
        self.features = features[: layer + 1].eval().requires_grad_(False)
        for m in self.features:
            for name, p in list(m.named_parameters(recurse=False)):
                delattr(m, name)  # channels_last: 2-2.5x faster on CPUs (oneDNN), as on GPUs
                m.register_buffer(name, p.data.contiguous(memory_format=torch.channels_last) if p.ndim == 4 else p.data,
                                  persistent=False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> "VGGFeatures":
        """Always eval: the network is a fixed feature extractor."""
        return super().train(False)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        """Features of RGB in [0,1]."""
        return self.features(self.normalize(rgb))

    def normalize(self, rgb: torch.Tensor) -> torch.Tensor:
        """RGB in [0,1] as the first layer takes it: ImageNet-normalised, channels_last."""
        return ((rgb - self.mean) / self.std).contiguous(memory_format=torch.channels_last)


def vgg_state(source: str, net: str, option: str = "") -> dict[str, torch.Tensor]:
    """VGG `features` weights (keys without the prefix): imagenet (VGG19: torchvision's file, downloaded once; VGG16: from
    the package index or torchvision, weights.imagenet_backbone) or a file; VGGError naming --option when they cannot be
    had."""
    try:
        if source != "imagenet":
            state = weights.load_checkpoint(source)
        elif net == "vgg16":
            state = weights.imagenet_backbone("vgg16")
        else:
            state = weights.load_checkpoint(weights.fetch_weights([torchvision_url(net)]))
    except weights.ModelError as e:
        if source != "imagenet":
            raise VGGError(str(e)) from None
        avoid = f", or pass --{option}=PATH (--{option}=random for a smoke test)" if option else ""
        raise VGGError(f"the {net.upper()} ImageNet weights: {e}{avoid}") from None
    return {k.removeprefix("features."): v for k, v in state.items() if not k.startswith("classifier.")}


def torchvision_url(net: str) -> str:
    """torchvision's ImageNet weights file of a VGG."""
    import torchvision

    return getattr(torchvision.models, f"{net.upper()}_Weights").IMAGENET1K_V1.url


HYPERCOLUMN_TAPS = (3, 8, 15, 22, 29)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 in torchvision's vgg16().features
HYPERCOLUMN_CHANNELS = 64 + 128 + 256 + 512 + 512
HEAD_WIDTH = 512
BACKBONE_ENV = "COLORGAN_BACKBONE"  # random or a VGG16 weights file instead of ImageNet's (smoke tests: said at every load)


class HypercolumnGenerator(nn.Module):
    """colorgan's own colorizer (Larsson, Maire and Shakhnarovich 2016): a frozen ImageNet VGG16 sees the gray photo; its
    hypercolumn (relu1_2 ... relu5_3, 1472 channels, resampled to a quarter of the input) and the photo's mean relu5_3
    (what the scene is) go through a small trained head to ECCV16's 313 ab bins, decoded as ECCV16's (annealed mean).
    Only the head is in the state dict (a few MB); the backbone comes from weights.imagenet_backbone. L in [0,100]
    (N,1,H,W) -> ab (N,2,H,W); H and W multiples of 8."""

    arch = "hypercolumn"
    takes_hints = False

    def __init__(self, backbone: str | None = None):
        super().__init__()
        source = backbone or os.environ.get(BACKBONE_ENV, "imagenet")
        with torch.device("cpu"):  # the backbone's weights are real even when the head is built on the meta device
            self.backbone = VGGFeatures(source, HYPERCOLUMN_TAPS[-1], "vgg16", "")
        # which backbone, for the feature cache's key and the line naming the model
        self.backbone_id = f"ImageNet VGG16 {weights.BACKBONES['vgg16'].digest[:8]}" if source == "imagenet" else \
            f"{source} VGG16 ({BACKBONE_ENV})" if backbone is None else f"{source} VGG16"
        self.project = nn.Conv2d(HYPERCOLUMN_CHANNELS, HEAD_WIDTH, 1)  # linear: the same before or after resampling
        self.scene = nn.Linear(512, HEAD_WIDTH)
        self.head = nn.Sequential(nn.ReLU(), nn.Dropout(0.2), nn.Conv2d(HEAD_WIDTH, HEAD_WIDTH, 1), nn.ReLU(),
                                  nn.Conv2d(HEAD_WIDTH, 313, 1))
        self.model_out = nn.Conv2d(313, 2, 1, bias=False).requires_grad_(False)  # the bin centres, never trained
        # added to the logits when decoding: strength x log of Zhang's rebalancing weights (train_finetune.py --rebalance);
        # the head learns calibrated probabilities, and this moves its colour from their mean toward rare, vivid bins
        self.register_buffer("rebalance", torch.zeros(313))
        if not self.model_out.weight.is_meta:
            with torch.no_grad():
                self.model_out.weight.copy_(ab_bins().float().t()[:, :, None, None] / 110)

    def features(self, L: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(hypercolumns (N,1472,H/4,W/4), scene (N,512)) of L: what the head sees (and what training caches)."""
        x = self.backbone.normalize(data.gray_rgb(L))
        taps = []
        for i, layer in enumerate(self.backbone.features):
            x = layer(x)
            if i in HYPERCOLUMN_TAPS:
                taps.append(x)
        # relu1_2 and relu2_2 averaged down to relu3_3's quarter scale, relu4_3 and relu5_3 bilinearly up to it (fixed
        # factors and a size read from a tensor: the graph exports to ONNX with any input size)
        grid = taps[2]
        taps = [F.avg_pool2d(taps[0], 4), F.avg_pool2d(taps[1], 2), grid] + \
            [F.interpolate(t, size=grid.shape[-2:], mode="bilinear", align_corners=False) for t in taps[3:]]
        return torch.cat(taps, 1), x.mean((2, 3))

    def head_logits(self, columns: torch.Tensor, scene: torch.Tensor) -> torch.Tensor:
        """The 313 bin logits of hypercolumns (N,1472,h,w) -- a map, or sampled positions as (N,1472,K,1) -- and scene."""
        return self.head(self.project(columns) + self.scene(scene)[:, :, None, None])

    def logits(self, L: torch.Tensor) -> torch.Tensor:
        """The 313 bin logits at 1/4 resolution."""
        return self.head_logits(*self.features(L))

    def forward(self, L: torch.Tensor | None = None, hints: torch.Tensor | None = None, temperature: float = 1.0,
                logits: bool = False, cached: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """ab at full resolution: the annealed mean of softmax(logits / temperature + rebalance); with logits=True, the
        logits; with cached=(hypercolumns, scene) from the training cache, the head's logits there (through forward, so
        that DDP sees the pass)."""
        if hints is not None:
            raise ValueError("the hypercolumn model has no hint input (use a SIGGRAPH17 model)")
        if cached is not None:
            return self.head_logits(*cached)
        if logits:
            return self.logits(L)
        return F.interpolate(self.decode(self.logits(L), temperature), scale_factor=4, mode="bilinear")

    def decode(self, logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """ab (Lab units) at the logits' resolution: the annealed mean of softmax(logits / temperature + rebalance)."""
        return self.model_out(torch.softmax(logits / temperature + self.rebalance[:, None, None], 1)) * 110


class Gray(nn.Module):
    """The floor every colorizer is measured against: ab = 0 everywhere (the gray photo itself); --ckpt=gray."""

    arch = "gray"
    takes_hints = False

    def __init__(self):
        super().__init__()
        self.register_buffer("zero", torch.zeros(()))

    def forward(self, L: torch.Tensor, hints: torch.Tensor | None = None, temperature: float = 1.0) -> torch.Tensor:
        return (L * self.zero).expand(-1, 2, -1, -1)


ARCHS = {"eccv16": ECCV16Generator, "siggraph17": SIGGRAPH17Generator, "hypercolumn": HypercolumnGenerator}
Generator = ECCV16Generator | SIGGRAPH17Generator | HypercolumnGenerator


class PatchDiscriminator(nn.Module):
    """pix2pix 70x70 PatchGAN on [L, ab] (normalised inside): (N,1,H,W),(N,2,H,W) -> logits (N,1,30,30) at 256.

    Spectral norm instead of BatchNorm: it has no batch statistics, so real and fake batches in one forward do
    not leak into each other and each logit depends on exactly its 70x70 window. Its power-iteration vectors
    (_u, _v) are buffers that DDP broadcasts from rank 0 like any other. It also bounds D's Lipschitz constant,
    which steadies training.
    """

    def __init__(self, channels: int = 64):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        widths = [3, channels, channels * 2, channels * 4, channels * 8]
        layers: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(widths, widths[1:])):
            layers += [sn(nn.Conv2d(cin, cout, 4, 2 if i < 3 else 1, 1)), nn.LeakyReLU(0.2, True)]
        layers.append(sn(nn.Conv2d(widths[-1], 1, 4, 1, 1)))
        self.model = nn.Sequential(*layers)

    def forward(self, L: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
        """Patch logits, no sigmoid."""
        return self.model(torch.cat([(L - 50) / 100, ab / 110], 1))


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float, apply: torch.Tensor | None = None) -> None:
    """ema <- decay * ema + (1 - decay) * model for parameters, buffers (BN statistics) copied; a no-op where apply
    (a bool tensor on the device) is False, decided on the device without a host sync."""
    params = list(ema.parameters())
    weight = torch.full((), 1 - decay, device=params[0].device)
    if apply is not None:
        weight = weight * apply
    torch._foreach_lerp_(params, list(model.parameters()), [weight] * len(params))
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b if apply is None else torch.where(apply, b, b_ema))


# ----------------------------------------------------------------------------- model specs


def spec_labels(specs: list[str]) -> list[str]:
    """Distinct short names for model specs: each path's last parts, as few as tell them apart (finetune/ckpt.pt,
    gan/ckpt.pt); a spec given twice gets #1, #2."""
    parts = {s: (s,) if s.startswith("hf:") or "/" not in s else Path(s).parts for s in specs}
    for k in range(1, max(map(len, parts.values()), default=1) + 1):
        names = {s: "/".join(p[-k:]) for s, p in parts.items()}
        if len(set(names.values())) == len(names):
            break
    return [names[s] + (f"#{specs[:i].count(s) + 1}" if specs.count(s) > 1 else "") for i, s in enumerate(specs)]


def _release_state(state: dict) -> dict:
    """A generator state dict in release keys, with num_batches_tracked filled where it is missing."""
    state = {re.sub(r"^(module\.|_orig_mod\.)+", "", k): v for k, v in state.items()}
    for key in [k for k in state if k.endswith(".running_mean")]:
        state.setdefault(key.replace("running_mean", "num_batches_tracked"), torch.tensor(0))
    return state


def state_arch(state: dict) -> str:
    """The architecture whose keys a generator state dict has: hypercolumn (its head's projection), siggraph17 (its
    decoder's model10) or eccv16."""
    return "hypercolumn" if "project.weight" in state else "siggraph17" if "model10.1.weight" in state else "eccv16"


def generator_from_state(state: dict, label: str = "the weights") -> Generator:
    """The generator (its architecture told by its keys) holding a state dict's tensors; one line when they do not fit."""
    state = _release_state(state)
    arch = state_arch(state)
    with torch.device("meta"):  # no memory and no random init for weights that loading replaces
        G = ARCHS[arch]()
    try:
        G.load_state_dict(state, strict=True, assign=True)  # adopt the loaded tensors: no second copy
    except (RuntimeError, AttributeError, TypeError) as e:
        raise ModelError(f"{label}: not {arch.upper()} generator weights ({str(e).splitlines()[0][:200]})") from None
    return G


def arch_of(spec: str, arch: str = "eccv16") -> str:
    """A model spec's architecture without building the model (its name's, or its weights' keys, read mapped), so that
    what it cannot take is refused before the weights load; scratch is arch."""
    known = {"eccv16": "eccv16", "siggraph17": "siggraph17", "colorgan": "hypercolumn", "scratch": arch, "gray": "gray"}
    if spec in known:
        return known[spec]
    path = weights.weights_path(spec)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), "pt") as f:
                return state_arch(_release_state(dict.fromkeys(f.keys())))
        except (SafetensorError, OSError) as e:
            raise ModelError(f"{spec}: not a readable safetensors file ({str(e).splitlines()[0][:200]})") from None
    state = weights.load_checkpoint(path)  # mapped: the tensors' bytes are not read
    return state_arch(_release_state(state.get("generator", state)))


ARCH_NAMES = {"eccv16": "an ECCV16 model", "siggraph17": "a SIGGRAPH17 model", "hypercolumn": "a hypercolumn model",
              "gray": "no colorizer"}
SPEC_TEXT = {"colorgan": "colorgan's own colorizer, shipped: a frozen ImageNet VGG16 and a head trained by colorgan",
             "eccv16": "Zhang et al.'s official ECCV16 weights", "siggraph17": "Zhang, Zhu et al.'s official SIGGRAPH17 weights",
             "scratch": "random weights", "gray": "ab = 0: the floor a colorizer must beat on PSNR"}


def describe(spec: str, G: nn.Module) -> str:
    """What a run says of its model: the spec, what it is, and the hypercolumn backbone when it is not ImageNet's."""
    G = getattr(G, "source", G)  # a runtime's wrapper: the PyTorch model it runs
    text = SPEC_TEXT.get(spec, ARCH_NAMES[G.arch])
    if G.arch == "hypercolumn" and not G.backbone_id.startswith("ImageNet"):
        text += f"; its VGG16 is {G.backbone_id}, not ImageNet's"
    return f"{spec} ({text})"


def load_generator(spec: str, device: str | torch.device = "cpu", arch: str = "eccv16") -> Generator:
    """A ready generator (eval mode) from a model spec: colorgan (the shipped hypercolumn model), eccv16, siggraph17,
    scratch (of arch), release-format weights, a ckpt.pt (EMA first), a .safetensors file, an exported folder or
    hf:OWNER/NAME[@REVISION]."""
    if spec == "scratch":
        return ARCHS[arch]().to(device).eval()
    if spec == "gray":
        return Gray().to(device).eval()
    state = weights.load_checkpoint(weights.weights_path(spec))
    if "generator" in state:
        state = state.get("generator_ema") or state["generator"]
    return generator_from_state(state, spec).to(device).eval()


@torch.no_grad()
def fingerprint(*modules: nn.Module) -> torch.Tensor:
    """A float64 summary of every parameter, to check that processes hold the same weights."""
    return torch.stack([(p.double() * (i + 1)).sum() for m in modules for i, p in enumerate(m.parameters())]).sum()


# ----------------------------------------------------------------------------- inference


MAX_VIVIDNESS = 4.0  # a chroma gain beyond this only clips colours (the app's slider stops at 2)


def device_of(G) -> torch.device:
    """Where a generator runs: its parameters' device (a compiled runtime's own, see runtime.py)."""
    return G.device if hasattr(G, "device") else next(G.parameters()).device


@torch.no_grad()
def predict_ab(G: Generator, small: torch.Tensor, temperature: float = 1.0, hints: torch.Tensor | None = None,
               vividness: float = 1.0) -> torch.Tensor:
    """uint8 RGB copies (N,3,s,s) (and hints (N,3,s,s) for a SIGGRAPH17 model) -> the model's ab (N,2,s,s), float32,
    on the model's device, times vividness (a chroma gain: 0 gray, 1 the model's own)."""
    device = device_of(G)
    ab = G(data.uint8_to_l(small.to(device)), None if hints is None else hints.to(device), temperature).float()
    return ab if vividness == 1 else ab * vividness


@torch.no_grad()
def paint(img: Image.Image, ab_small: torch.Tensor, chunk_pixels: int = 1 << 17) -> Image.Image | np.ndarray:
    """The colorized photo: ab (2,h,w) upsampled bilinearly onto img's own full-resolution L (alpha kept). A 16-bit
    photo (load_image(keep_16bit=True): gray, or an RGB TIFF) gives uint16 RGB (H,W,3), its L at full precision."""
    device = ab_small.device
    deep = data.deep16(img)
    img_rgb = img if img.mode == "RGB" or deep is not None else img.convert("RGB")
    ab_small = ab_small[None]
    W, H = img_rgb.size
    # bilinear (align_corners=False) is separable: widen once, then blend two source rows per output row,
    # so no full-resolution ab tensor is ever held
    ab_wide = F.interpolate(ab_small, size=(ab_small.shape[2], W), mode="bilinear")[0]
    src = ((torch.arange(H, device=device) + 0.5) * (ab_small.shape[2] / H) - 0.5).clamp_min(0)
    y0 = src.floor().long().clamp_max(ab_small.shape[2] - 1)
    y1, frac = (y0 + 1).clamp_max(ab_small.shape[2] - 1), (src - y0).view(-1, 1)
    out = np.empty((H, W, 3), np.uint8 if deep is None else np.uint16)
    rows = max(1, chunk_pixels // W)  # bands small enough that the float32 temporaries stay in cache
    for r in range(0, H, rows):
        if deep is None:
            band = torch.from_numpy(np.array(img_rgb.crop((0, r, W, min(H, r + rows))))).to(device).permute(2, 0, 1)[None]
            L = data.uint8_to_l(band)
        else:
            L = data.deep16_to_l(torch.from_numpy(deep[r:r + rows].astype(np.float32)).to(device))
        ab = torch.lerp(ab_wide[:, y0[r:r + rows]], ab_wide[:, y1[r:r + rows]], frac[r:r + rows])[None]
        rgb = (data.lab_to_rgb(torch.cat([L, ab], 1))[0] * (255 if deep is None else 65535)).round_().cpu()
        torch.from_numpy(out[r:r + rows]).permute(2, 0, 1).copy_(rgb)  # cast and interleave in one pass
    if deep is not None:
        return out
    result = Image.frombuffer("RGB", (W, H), out, "raw", "RGB", 0, 1)  # shares out's memory: no copy
    if img.mode == "RGBA":
        result.putalpha(img.getchannel("A"))
    return result


def small_copy(img: Image.Image, size: int = 256) -> torch.Tensor:
    """The model's input for one photo: its size x size bicubic copy as uint8 (3,size,size)."""
    return data.to_uint8_tensor(data.resize_square(data.as_rgb8(img), size))


def colorize(G: Generator, img: Image.Image, size: int = 256, temperature: float = 1.0, hints: torch.Tensor | None = None,
             chunk_pixels: int = 1 << 17, vividness: float = 1.0) -> Image.Image:
    """The release pipeline: L of a size x size bicubic copy (and hints (3,size,size) at that scale) -> ab, upsampled
    onto the full-resolution L."""
    return paint(img, predict_ab(G, small_copy(img, size)[None], temperature, None if hints is None else hints[None],
                                 vividness)[0], chunk_pixels)
