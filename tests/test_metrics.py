"""FID and LPIPS (metrics.py) against independent computations: scipy's matrix square root, DDColor's preprocessing
written out by hand, torchvision's own backbones; weights seeded, from files, and refused offline in one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy import linalg

import metrics


def reference_fid(real: np.ndarray, fake: np.ndarray) -> float:
    """pytorch-fid's formula on (N, d) features: unbiased covariances, scipy's sqrtm."""
    mu1, mu2, s1, s2 = real.mean(0), fake.mean(0), np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_frechet_distance_matches_scipy_and_is_zero_against_itself():
    pool = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten())  # 12-d features: sqrtm is well conditioned with 60 images
    pool.num_features = 12
    nets = {"fid_paired_tv": pool}
    stats = metrics.fid_statistics(nets, 2, "cpu")
    g = torch.Generator().manual_seed(0)
    truth = torch.rand(60, 3, 8, 8, generator=g)
    other = (truth * 0.7 + 0.3 * torch.rand(60, 3, 8, 8, generator=g)).clamp(0, 1)
    for start in range(0, 60, 7):  # uneven batches: the statistics do not depend on how the images come
        metrics.update_fid(nets, stats, truth[start:start + 7], [truth[start:start + 7], other[start:start + 7]])
    same, different = metrics.compute_fid(stats)["fid_paired_tv"]
    features = [pool(x).double().numpy() for x in (truth, other)]
    assert same == pytest.approx(0, abs=1e-6)
    assert different == pytest.approx(reference_fid(*features), rel=1e-4) and different > 1e-3


def test_fid_grows_with_a_known_perturbation_and_each_half_of_the_images_is_computed_by_hand():
    pool = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten())
    pool.num_features = 12
    nets = {"fid_paired_tv": pool}
    g = torch.Generator().manual_seed(1)
    truth = torch.rand(60, 3, 8, 8, generator=g)
    noise = torch.randn(60, 3, 8, 8, generator=g)
    stats = metrics.fid_statistics(nets, 4, "cpu")
    index = torch.randperm(60, generator=g)  # the images' places in the set: which half each truth is in
    for start in range(0, 60, 7):
        batch = slice(start, start + 7)
        metrics.update_fid(nets, stats, truth[batch], [(truth[batch] + s * noise[batch]).clamp(0, 1) for s in (0, 0.05, 0.1, 0.2)],
                           index[batch])
    fids = metrics.compute_fid(stats)
    assert fids["fid_paired_tv"][0] == pytest.approx(0, abs=1e-6)
    assert 1e-4 < fids["fid_paired_tv"][1] < fids["fid_paired_tv"][2] < fids["fid_paired_tv"][3]  # more noise, further
    features, noisy = pool(truth).double().numpy(), pool((truth + 0.2 * noise).clamp(0, 1)).double().numpy()
    even = (index % 2 == 0).numpy()
    halves = fids["fid_paired_tv" + metrics.HALVES]  # (even, odd) per model
    assert len(halves) == 8 and halves[0] == pytest.approx(0, abs=1e-6)
    assert halves[6] == pytest.approx(reference_fid(features[even], noisy[even]), rel=1e-4)
    assert halves[7] == pytest.approx(reference_fid(features[~even], noisy[~even]), rel=1e-4)


def test_tv_network_is_ddcolors_preprocessing_and_torchvisions_inception(tmp_path):
    from torchvision.models import inception_v3

    net = metrics.tv_inception("random")
    rgb = torch.rand(2, 3, 40, 56, generator=torch.Generator().manual_seed(1))
    # DDColor's custom_fid.py by hand: bilinear 299, x*0.5+0.5, torchvision's transform_input, blocks up to avgpool
    plain = inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=False).eval()
    plain.load_state_dict({k: v for k, v in net.net.state_dict().items()}, strict=False)
    x = F.interpolate(rgb, size=(299, 299), mode="bilinear", align_corners=False) * 0.5 + 0.5
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    x = x * (std / 0.5)[:, None, None] + ((mean - 0.5) / 0.5)[:, None, None]
    with torch.no_grad():
        for name in ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3", "maxpool2",
                     "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a",
                     "Mixed_7b", "Mixed_7c", "avgpool"]:
            x = getattr(plain, name)(x)
        ours = net(rgb)
    assert ours.shape == (2, 2048) and ours.std() > 0
    torch.testing.assert_close(ours, x.flatten(1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(metrics.tv_inception("random")(rgb), ours)  # seeded: every run the same weights
    torch.save(plain.state_dict(), tmp_path / "inception.pth")  # a torchvision weights file gives the same network
    torch.testing.assert_close(metrics.tv_inception(str(tmp_path / "inception.pth"))(rgb), ours)
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "wrong.pth")
    with pytest.raises(metrics.MetricError, match="not the weights of Inception3"):
        metrics.tv_inception(str(tmp_path / "wrong.pth"))


def test_standard_fid_is_torch_fidelitys_network_on_the_8_bit_images_and_scipys_distance(tmp_path):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    net = metrics.tf_inception("random")
    torch.save(metrics._inception(aux_logits=False, num_classes=1008).state_dict(), tmp_path / "w.pth")  # the same seeded weights
    reference = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(tmp_path / "w.pth")).eval()
    g = torch.Generator().manual_seed(4)
    truth = torch.rand(12, 3, 24, 24, generator=g)
    pred = (truth * 0.5 + 0.5 * torch.rand(12, 3, 24, 24, generator=g)).clamp(0, 1)
    nets = {"fid": net}
    stats = metrics.fid_statistics(nets, 1, "cpu")
    for start in range(0, 12, 5):
        metrics.update_fid(nets, stats, truth[start:start + 5], [pred[start:start + 5]])
    with torch.no_grad():  # torch-fidelity on the pixels a PNG of each image holds
        features = [reference((x * 255).round().byte())[0].double().numpy() for x in (truth, pred)]
    (real_mu, real_cov), (fake_mu, fake_cov) = ((f.mean(0), np.cov(f, rowvar=False)) for f in features)
    # 12 images in 2048 dimensions: the covariances are singular, where scipy's sqrtm is unstable; the trace of the square
    # root is the sum of the square roots of the product's eigenvalues (numpy, float64)
    root_trace = np.sqrt(np.clip(np.linalg.eigvals(real_cov @ fake_cov).real, 0, None)).sum()
    expected = ((real_mu - fake_mu) ** 2).sum() + np.trace(real_cov) + np.trace(fake_cov) - 2 * root_trace
    fid = metrics.compute_fid(stats)["fid"][0]
    assert fid == pytest.approx(expected, rel=1e-3) and fid > 1


def lpips_by_hand(model, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Zhang et al. 2018's LPIPS from the network's parts: inputs in [-1, 1], unit-normalised channels, squared
    differences weighted by the linear layers, spatial mean, summed over layers."""
    fa, fb = (model.net(model.scaling_layer(x * 2 - 1)) for x in (a, b))
    total = 0
    for x, y, lin in zip(fa, fb, model.lins):
        x, y = x / (x.square().sum(1, keepdim=True).sqrt() + 1e-10), y / (y.square().sum(1, keepdim=True).sqrt() + 1e-10)
        total = total + (lin.model((x - y).square())).mean((2, 3))
    return total.flatten()


def test_lpips_is_zero_for_identical_images_and_reads_a_torchvision_backbone(tmp_path):
    from torchvision.models import alexnet

    model = metrics.lpips_network("alex", "random", "cpu")
    g = torch.Generator().manual_seed(2)
    a, b = torch.rand(3, 3, 64, 64, generator=g), torch.rand(3, 3, 64, 64, generator=g)
    assert metrics.lpips(model, a, a).tolist() == [0, 0, 0]
    d = metrics.lpips(model, a, b)
    assert d.shape == (3,) and (d > 0).all()
    with torch.no_grad():
        torch.testing.assert_close(d, lpips_by_hand(model, a, b), rtol=1e-5, atol=1e-6)  # [0, 1] images taken as such
    torch.testing.assert_close(metrics.lpips(model, a[1:2], b[1:2]), d[1:2])  # per image: the batch does not matter
    torch.manual_seed(5)
    backbone = alexnet(weights=None)
    torch.save(backbone.state_dict(), tmp_path / "alexnet.pth")
    loaded = metrics.lpips_network("alex", str(tmp_path / "alexnet.pth"), "cpu")
    torch.testing.assert_close(getattr(loaded.net.slice1, "0").weight, backbone.features[0].weight)
    torch.testing.assert_close(getattr(loaded.net.slice5, "10").weight, backbone.features[10].weight)


def test_weights_options_are_default_random_or_a_file(tmp_path):  # the default downloads: test_weights.py
    with pytest.raises(metrics.MetricError, match="must be default, random or a weights file"):
        metrics.check_weights("fid_weights", str(tmp_path / "nope.pth"))
