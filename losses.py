"""Losses and metrics: GAN, L1 on ab, VGG perceptual, Zhang's class-rebalanced 313-bin loss,
and the per-image metrics that evaluate.py and the training scripts' validation share.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import data
import models
import weights

AUC_THRESHOLDS = 150  # Zhang et al.: ab error thresholds 0..150


# ----------------------------------------------------------------------------- GAN, L1, perceptual


def gan_loss(logits: torch.Tensor, real: bool, mode: str = "vanilla", generator: bool = False) -> torch.Tensor:
    """Adversarial loss of logits against real/fake: 'vanilla' (BCE), 'lsgan' (MSE) or 'hinge'."""
    if mode == "vanilla":
        return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(real)))
    if mode == "lsgan":
        return F.mse_loss(logits, torch.full_like(logits, float(real)))
    if mode == "hinge":
        return -logits.mean() if generator else F.relu(1 - logits if real else 1 + logits).mean()
    raise ValueError(f"gan_mode must be vanilla, lsgan or hinge, not {mode!r}")


def weighted_mean(per_image: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over images, each scaled by weight (N,) when given (0 drops gray photos)."""
    return per_image.mean() if weight is None else (per_image * weight).sum() / weight.sum().clamp_min(1)


def l1_ab(ab_pred: torch.Tensor, ab_true: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean |ab error| in Lab units; weight (N,) scales each image (0 for gray ones)."""
    return weighted_mean((ab_pred - ab_true).abs().flatten(1).mean(1), weight)


def mse_ab(ab_pred: torch.Tensor, ab_true: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared ab error in Lab units; weight (N,) scales each image."""
    return weighted_mean((ab_pred - ab_true).square().flatten(1).mean(1), weight)


def huber_ab(ab_pred: torch.Tensor, ab_true: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """The SIGGRAPH17 port's regression loss: smooth L1 on ab / 110 with delta 1 / 110 (quadratic below 1 Lab unit)."""
    per_pixel = F.smooth_l1_loss(ab_pred / 110, ab_true / 110, beta=1 / 110, reduction="none")
    return weighted_mean(per_pixel.flatten(1).mean(1), weight)


def ab_class_loss(logits: torch.Tensor, ab: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """SIGGRAPH17's class head: cross-entropy of its 529-class logits (N,529,h,w) against ab (N,2,H,W) sampled at (h,w)
    every H/h pixels, as the release's training does."""
    step = ab.shape[-1] // logits.shape[-1]
    target = models.ab_class(ab[:, :, ::step, ::step])
    per_pixel = F.cross_entropy(logits.float(), target, reduction="none")
    return weighted_mean(per_pixel.flatten(1).mean(1), weight)


def perceptual(vgg: models.VGGFeatures, rgb_pred: torch.Tensor, rgb_true: torch.Tensor) -> torch.Tensor:
    """Per-image mean |VGG feature difference| (N,)."""
    return (vgg(rgb_pred) - vgg(rgb_true)).abs().flatten(1).mean(1)


# ----------------------------------------------------------------------------- Zhang et al.'s classification loss


def soft_encode(ab: torch.Tensor, bins: torch.Tensor, neighbours: int = 5, sigma: float = 5.0) -> torch.Tensor:
    """ab (N,2,H,W) -> (N,313,H,W): Gaussian weights on the nearest bins, summing to 1 per pixel."""
    flat = ab.permute(0, 2, 3, 1).reshape(-1, 2)
    dist, idx = torch.cdist(flat, bins.to(flat)).topk(neighbours, dim=1, largest=False)
    w = torch.softmax(-dist.square() / (2 * sigma**2), 1)
    target = torch.zeros(flat.shape[0], bins.shape[0], device=ab.device).scatter_(1, idx, w)
    N, _, H, W = ab.shape
    return target.view(N, H, W, -1).permute(0, 3, 1, 2)


def nearest_bin(ab: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """ab (N,2,H,W) -> index (N,H,W) of the nearest bin."""
    N, _, H, W = ab.shape
    return torch.cdist(ab.permute(0, 2, 3, 1).reshape(-1, 2), bins.to(ab)).argmin(1).view(N, H, W)


def ab_prior(batches: Iterable[torch.Tensor], bins: torch.Tensor, sigma: float = 5.0) -> torch.Tensor:
    """Empirical distribution (313,) of nearest bins over ab batches, smoothed with a Gaussian in ab."""
    counts = torch.zeros(bins.shape[0], dtype=torch.float64)
    for ab in batches:
        counts += torch.bincount(nearest_bin(ab, bins).flatten(), minlength=bins.shape[0]).double().cpu()
    b = bins.double()
    kernel = torch.exp(-torch.cdist(b, b).square() / (2 * sigma**2))
    smoothed = kernel @ (counts / counts.sum().clamp_min(1))
    return (smoothed / smoothed.sum()).float()


def rebalance_weights(prior: torch.Tensor, lam: float = 0.5) -> torch.Tensor:
    """w proportional to ((1 - lam) p + lam / Q)^-1, scaled so that the expectation of w under p is 1."""
    w = 1 / ((1 - lam) * prior + lam / prior.numel())
    return w / (prior * w).sum()


def classification_loss(logits: torch.Tensor, ab: torch.Tensor, bins: torch.Tensor, class_weights: torch.Tensor | None,
                        image_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Zhang's class-rebalanced cross-entropy (class_weights None: unweighted): logits (N,313,h,w) vs ab (N,2,H,W) pooled
    to (h,w)."""
    ab = F.adaptive_avg_pool2d(ab, logits.shape[-2:])
    target = soft_encode(ab, bins)
    per_pixel = -(target * F.log_softmax(logits.float(), 1)).sum(1)
    if class_weights is not None:
        per_pixel = per_pixel * class_weights.to(ab)[target.argmax(1)]
    return weighted_mean(per_pixel.flatten(1).mean(1), image_weight)


def load_or_compute_prior(path: Path, batches: Callable[[], Iterable[torch.Tensor]], bins: torch.Tensor) -> torch.Tensor:
    """The ab prior cached at path (.npy), computed from batches() when the file is missing."""
    if path.exists():
        return torch.from_numpy(np.load(path, allow_pickle=False))
    prior = ab_prior(batches(), bins)
    weights.write_atomic(path, lambda f: np.save(f, prior.numpy()))  # never a half-written prior for a resume to read
    return prior


# ----------------------------------------------------------------------------- metrics (per image)


def auc(ab_pred: torch.Tensor, ab_true: torch.Tensor, thresholds: int = AUC_THRESHOLDS) -> torch.Tensor:
    """(N,) area under the share-of-pixels-with-ab-error-<=-t curve, t = 0..thresholds, over thresholds."""
    d = (ab_pred - ab_true).float().square().sum(1).sqrt().flatten(1)
    # d <= t for integer t is ceil(d) <= t: one histogram of ceil(d) gives every threshold at once
    bucket = d.ceil().clamp_max(thresholds + 1).long()
    hist = torch.zeros(d.shape[0], thresholds + 2, device=d.device).scatter_add_(1, bucket, torch.ones_like(d))
    share = hist.cumsum(1)[:, : thresholds + 1] / d.shape[1]
    return torch.trapezoid(share, dim=1) / thresholds


def psnr(rgb_pred: torch.Tensor, rgb_true: torch.Tensor) -> torch.Tensor:
    """(N,) PSNR in dB for RGB in [0,1]; identical images give 100 dB (MSE floored at 1e-10), not inf."""
    mse = (rgb_pred.float() - rgb_true.float()).square().flatten(1).mean(1)
    return 10 * torch.log10(1 / mse.clamp_min(1e-10))


def _box_mean(x: torch.Tensor, win: int, dim: int) -> torch.Tensor:
    """Mean of each full window of win along dim (no padding): in-place sums of shifted views, 2.5x avg_pool2d on CPU."""
    n = x.shape[dim] - win + 1
    total = x.narrow(dim, 0, n).clone()
    for k in range(1, win):
        total.add_(x.narrow(dim, k, n))
    return total.div_(win)


def ssim(rgb_pred: torch.Tensor, rgb_true: torch.Tensor, win: int = 7) -> torch.Tensor:
    """(N,) SSIM as skimage's structural_similarity(channel_axis, data_range=1) with its defaults."""
    x, y = rgb_pred.float(), rgb_true.float()
    # centred per channel: float32 variances (small differences of squares) stay accurate to ~1e-6
    mx, my = x.mean((2, 3), keepdim=True), y.mean((2, 3), keepdim=True)
    x, y = x - mx, y - my
    # one separable 7x7 box filter over all five moments; skimage crops the padded border, so no padding
    moments = torch.cat([x, y, x * x, y * y, x * y], 1)
    ux, uy, xx, yy, xy = _box_mean(_box_mean(moments, win, 3), win, 2).chunk(5, 1)
    cov_norm = win * win / (win * win - 1)  # sample covariance, skimage's default
    vx, vy, vxy = cov_norm * (xx - ux * ux), cov_norm * (yy - uy * uy), cov_norm * (xy - ux * uy)
    ux, uy = ux + mx, uy + my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(1).double().mean(1).float()


def colorfulness(rgb: torch.Tensor, absolute: bool = False) -> torch.Tensor:
    """(N,) Hasler and Suesstrunk 2003 on 0-255 RGB: sigma_rgyb + 0.3 mu_rgyb; absolute=True takes |rg| and |yb| as
    DDColor's colorfulness.py (pyimagesearch's code) does, which gives other numbers."""
    r, g, b = (rgb.float() * 255).unbind(1)
    rg, yb = (r - g).flatten(1), (0.5 * (r + g) - b).flatten(1)
    if absolute:
        rg, yb = rg.abs(), yb.abs()
    sigma = (rg.var(1, unbiased=False) + yb.var(1, unbiased=False)).sqrt()
    mu = (rg.mean(1).square() + yb.mean(1).square()).sqrt()
    return sigma + 0.3 * mu


def image_metrics(L: torch.Tensor, ab_true: torch.Tensor, ab_pred: torch.Tensor, vgg: models.VGGFeatures | None = None,
                  rgb_pred: torch.Tensor | None = None, rgb_true: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per-image metrics (each (N,)) of a prediction; the RGB images are clipped to [0,1] (rgb_pred, rgb_true: the
    Lab->RGB of each when the caller has already made it, as for several models on one batch)."""
    ab_pred = ab_pred.float()
    rgb_true = data.lab_to_rgb(torch.cat([L, ab_true], 1)) if rgb_true is None else rgb_true
    rgb_pred = data.lab_to_rgb(torch.cat([L, ab_pred], 1)) if rgb_pred is None else rgb_pred
    out = {
        "l1_ab": (ab_pred - ab_true).abs().flatten(1).mean(1),
        "mse_ab": (ab_pred - ab_true).square().flatten(1).mean(1),
        "auc": auc(ab_pred, ab_true),
        "psnr": psnr(rgb_pred, rgb_true),
        "ssim": ssim(rgb_pred, rgb_true),
        "colorfulness": colorfulness(rgb_pred),
        "colorfulness_true": colorfulness(rgb_true),
        "colorfulness_ddcolor": colorfulness(rgb_pred, absolute=True),
        "colorfulness_ddcolor_true": colorfulness(rgb_true, absolute=True),
    }
    if vgg is not None:
        out["perceptual"] = perceptual(vgg, rgb_pred, rgb_true)
    return out


@torch.no_grad()
def mean_metrics(G: nn.Module, batches: Iterable, gather: Callable = lambda t: t) -> dict[str, float]:
    """Metrics of G averaged over the images of batches: (uint8 RGB, ok) pairs, ok (N,) bool marking the photos that
    decoded (None: all); gather joins processes."""
    sums: dict[str, float] = {}
    n = 0
    for rgb, ok in batches:
        L, ab = data.uint8_to_lab(rgb)
        m = image_metrics(L, ab, G(L))
        m["ok"] = torch.ones(len(rgb), dtype=torch.bool, device=rgb.device) if ok is None else ok
        m = gather(m)
        keep = m.pop("ok")
        n += int(keep.sum())
        for k, v in m.items():
            sums[k] = sums.get(k, 0.0) + v[keep].double().sum().item()
    return {k: v / max(n, 1) for k, v in sums.items()}
