"""losses.py: adversarial, L1, perceptual, Zhang's classification loss, and the metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

import data
import losses
import models
from conftest import synthetic_rgb


def test_gan_losses_by_hand():
    x = torch.tensor([0.0, 2.0])
    assert losses.gan_loss(x, True).item() == pytest.approx((math.log(2) + math.log(1 + math.exp(-2))) / 2)
    assert losses.gan_loss(x, False).item() == pytest.approx((math.log(2) + math.log(1 + math.exp(2))) / 2)
    assert losses.gan_loss(x, True, "lsgan").item() == pytest.approx((1 + 1) / 2)
    assert losses.gan_loss(x, True, "hinge").item() == pytest.approx((1 + 0) / 2)
    assert losses.gan_loss(x, False, "hinge").item() == pytest.approx((1 + 3) / 2)
    assert losses.gan_loss(x, True, "hinge", generator=True).item() == pytest.approx(-1)


def test_l1_weights_skip_gray_images():
    pred, true = torch.zeros(2, 2, 4, 4), torch.cat([torch.full((1, 2, 4, 4), 3.0), torch.full((1, 2, 4, 4), 10.0)])
    assert losses.l1_ab(pred, true).item() == pytest.approx(6.5)
    assert losses.l1_ab(pred, true, torch.tensor([1.0, 0.0])).item() == pytest.approx(3.0)


def test_perceptual_is_zero_for_identical_and_grows_with_difference():
    torch.manual_seed(0)
    vgg = models.VGGFeatures("random")
    a = torch.rand(2, 3, 32, 32)
    assert losses.perceptual(vgg, a, a).abs().max() == 0
    small, large = losses.perceptual(vgg, a, (a + 0.05).clamp(0, 1)), losses.perceptual(vgg, a, 1 - a)
    assert (large > small).all() and (small > 0).all()
    assert not any(p.requires_grad for p in vgg.parameters()) and not vgg.train().training


def test_vgg_weights_from_a_local_file(tmp_path):  # the download and its offline line: test_weights.py
    import torchvision

    torch.manual_seed(1)
    full = torchvision.models.vgg19().state_dict()
    torch.save(full, tmp_path / "vgg19.pth")
    vgg = models.VGGFeatures(str(tmp_path / "vgg19.pth"))
    assert torch.equal(vgg.features[0].weight, full["features.0.weight"])


# ----------------------------------------------------------------------------- classification loss


def test_soft_encoding_weights_the_nearest_bins():
    bins = models.ab_bins().float()
    ab = torch.tensor([[0.0, 0.0], [13.0, -27.0]]).T.reshape(1, 2, 1, 2)
    z = losses.soft_encode(ab, bins)
    assert torch.allclose(z.sum(1), torch.ones(1, 1, 2))
    assert (z > 0).sum(1).flatten().tolist() == [5, 5]
    assert bins[z[0, :, 0, 0].argmax()].tolist() == [0, 0]
    assert bins[z[0, :, 0, 1].argmax()].tolist() == [10, -30]
    # exact bin centre: its weight is exp(0) over the 4 neighbours at 10 and the next at 10*sqrt(2)
    w = torch.tensor([1.0] + [math.exp(-100 / 50)] * 4)
    assert z[0, :, 0, 0].max().item() == pytest.approx((w / w.sum())[0].item(), rel=1e-5)


def test_prior_and_rebalancing_weights():
    bins = models.ab_bins().float()
    ab = torch.zeros(4, 2, 8, 8)  # every pixel gray: the prior peaks at (0, 0)
    prior = losses.ab_prior([ab], bins)
    assert prior.sum().item() == pytest.approx(1.0) and bins[prior.argmax()].tolist() == [0, 0]
    w = losses.rebalance_weights(prior)
    assert (prior * w).sum().item() == pytest.approx(1.0)
    assert w[prior.argmax()] == w.min()  # the common colour is weighted least
    flat = losses.rebalance_weights(torch.full((313,), 1 / 313))
    assert torch.allclose(flat, torch.ones(313))


def test_classification_loss_is_lowest_at_the_target_and_cached_prior(tmp_path):
    bins = models.ab_bins().float()
    ab = torch.tensor([30.0, -40.0]).view(1, 2, 1, 1).expand(1, 2, 8, 8)
    target = losses.soft_encode(torch.tensor([30.0, -40.0]).view(1, 2, 1, 1), bins)
    good, bad = (target.clamp_min(1e-6).log()).expand(1, 313, 2, 2), torch.zeros(1, 313, 2, 2)
    w = torch.ones(313)
    assert losses.classification_loss(good, ab, bins, w) < losses.classification_loss(bad, ab, bins, w)
    assert losses.classification_loss(bad, ab, bins, w).item() == pytest.approx(math.log(313), rel=1e-5)
    calls = []
    batches = lambda: calls.append(1) or [ab]  # noqa: E731
    p1 = losses.load_or_compute_prior(tmp_path / "prior.npy", batches, bins)
    p2 = losses.load_or_compute_prior(tmp_path / "prior.npy", batches, bins)
    assert torch.equal(p1, p2) and len(calls) == 1


# ----------------------------------------------------------------------------- metrics


def test_auc_by_hand():
    ab = torch.zeros(1, 2, 4, 4)
    assert losses.auc(ab, ab).item() == pytest.approx(1.0)
    shifted = ab + torch.tensor([6.0, 8.0]).view(1, 2, 1, 1)  # every pixel off by exactly 10
    # share is 0 for t < 10 and 1 from t = 10: trapezoid area 0.5 + 140, over 150
    assert losses.auc(shifted, ab).item() == pytest.approx(140.5 / 150)
    far = ab + 200
    assert losses.auc(far, ab).item() == 0


def test_psnr_and_ssim_against_skimage():
    rng = np.random.default_rng(0)
    gt = synthetic_rgb(0, 64, 80) / 255.0
    pred = np.clip(gt + rng.normal(0, 0.05, gt.shape), 0, 1)
    t = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None].float()  # noqa: E731
    assert losses.psnr(t(pred), t(gt)).item() == pytest.approx(peak_signal_noise_ratio(gt, pred, data_range=1), abs=1e-3)
    assert losses.psnr(t(gt), t(gt)).item() == pytest.approx(100.0)
    ref = structural_similarity(gt, pred, channel_axis=-1, data_range=1.0)
    assert abs(losses.ssim(t(pred.astype(np.float32)), t(gt.astype(np.float32))).item() - ref) < 1e-4
    assert losses.ssim(t(gt), t(gt)).item() == pytest.approx(1.0)


def test_colorfulness_by_hand():
    gray = torch.full((1, 3, 4, 4), 0.5)
    assert losses.colorfulness(gray).item() == pytest.approx(0.0, abs=1e-4)
    red = torch.zeros(1, 3, 2, 2)
    red[:, 0] = 1.0  # rg = 255, yb = 127.5 everywhere: sigma 0, mu = sqrt(255^2 + 127.5^2)
    assert losses.colorfulness(red).item() == pytest.approx(0.3 * math.hypot(255, 127.5), rel=1e-5)
    rgb = synthetic_rgb(3) / 255.0
    r, g, b = (rgb * 255).transpose(2, 0, 1)
    rg, yb = r - g, 0.5 * (r + g) - b
    ref = math.hypot(rg.std(), yb.std()) + 0.3 * math.hypot(rg.mean(), yb.mean())
    assert losses.colorfulness(torch.from_numpy(rgb).permute(2, 0, 1)[None]).item() == pytest.approx(ref, rel=1e-4)


def test_image_metrics_of_a_gray_prediction():
    rgb = torch.from_numpy(synthetic_rgb(2)).permute(2, 0, 1)[None]
    L, ab = data.uint8_to_lab(rgb)
    m = losses.image_metrics(L, ab, torch.zeros_like(ab))
    assert m["l1_ab"].item() == pytest.approx(ab.abs().mean().item(), rel=1e-5)
    assert m["colorfulness"].item() < 1.0 < m["colorfulness_true"].item()
    perfect = losses.image_metrics(L, ab, ab)
    assert perfect["auc"].item() == 1.0 and perfect["l1_ab"].item() == 0.0
