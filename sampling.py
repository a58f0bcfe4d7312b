"""Several colourings from one forward: coherent samples of a model's colour distribution.

Every colorgan model computes a distribution of colours at each position of a quarter of its input (ECCV16's and the
hypercolumn model's 313 ab bins, SIGGRAPH17's 529-class head). One colouring is its annealed mean (what colorize.py
writes); a sample perturbs the logits with Gumbel noise drawn on a coarse grid (one draw per NOISE_CELL x NOISE_CELL
positions, bilinearly interpolated between them: a few draws across the photo) and decodes at SHARPNESS: each region
draws one colour mode and keeps it, where noise drawn per position gives speckle (Deshpande et al. 2017, PixColor and
UniColor make the same point).
Sample k of a photo is a function of (seed, k) and the model's input alone: the same seed, photo and batch give the
same pixels. A photo batched with others (a folder job's --batch_size) can differ from the same photo alone by a level
of 255 here and there: the model's kernels round a batch of 4 differently from a batch of 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import data
import models

# chosen on the tuning photos (docs/evaluation.md): draws 64 positions apart (a 256 input's width: 3 x 3 draws, bilinear
# between) gave best-of-8 PSNR +1.1 dB over the deterministic output at 1.17x its speckle; 8 apart, -0.8 dB at 1.38x
MAX_SEED = 2**32 - 1  # seeds 0 ... this: (seed, k) must make one torch seed (below 2**64)
NOISE_CELL = 64  # positions of the 1/4-resolution distribution per noise draw
SHARPNESS = 0.6  # the samples' annealed-mean temperature: lower draws one bin per region, higher blends the modes
METHOD = (f"logits + Gumbel noise drawn on a grid of one per {NOISE_CELL}x{NOISE_CELL} positions of the 1/4-resolution "
          f"distribution (bilinear between), softmax at temperature {SHARPNESS}, mean of the ab centres; noise from (seed, k)")


def distribution(G: models.Generator, L: torch.Tensor, hints: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (N,C,h,w) at a quarter of L's size, the C ab centres (C,2)) of a model's colour distribution: the 313
    bins (the hypercolumn model's rebalancing included) or SIGGRAPH17's 529-class head."""
    G = getattr(G, "source", G)  # a runtime's wrapper: its PyTorch model
    if G.takes_hints:
        _, logits = G(L, hints, logits=True)
        return logits.float(), torch.tensor(models.AB_CLASSES, dtype=torch.float32, device=L.device)
    logits = G(L, logits=True).float()
    if hasattr(G, "rebalance"):
        logits = logits + G.rebalance[:, None, None]
    return logits, models.ab_bins().float().to(L.device)


def noise(seed: int, k: int, classes: int, size: tuple[int, int]) -> torch.Tensor:
    """Sample k's coherent Gumbel noise (classes, h, w): draws on a grid of one per NOISE_CELL positions, interpolated."""
    cell = NOISE_CELL
    g = torch.Generator().manual_seed(seed * 1_000_003 + k)
    grid = (size[0] // cell + 2, size[1] // cell + 2)
    u = torch.rand(1, classes, *grid, generator=g).clamp(1e-9, 1 - 1e-9)
    gumbel = -torch.log(-torch.log(u))
    return F.interpolate(gumbel, size=(grid[0] * cell, grid[1] * cell), mode="bilinear", align_corners=True)[0, :, :size[0], :size[1]]


@torch.no_grad()
def sample_ab(G: models.Generator, small: torch.Tensor, n: int, seed: int, hints: torch.Tensor | None = None,
              vividness: float = 1.0) -> torch.Tensor:
    """n colourings of each photo's model input (uint8 RGB (N,3,s,s)): ab (N,n,2,s,s) in Lab units, one forward."""
    device = models.device_of(G)
    L = data.uint8_to_l(small.to(device))
    logits, centres = distribution(G, L, None if hints is None else hints.to(device))
    N, C, h, w = logits.shape
    out = torch.empty(N, n, 2, *L.shape[2:], device=device)
    for k in range(n):
        z = (logits + noise(seed, k, C, (h, w)).to(device)) / SHARPNESS
        ab = torch.einsum("nchw,cd->ndhw", torch.softmax(z, 1), centres)
        out[:, k] = F.interpolate(ab, size=L.shape[2:], mode="bilinear") * vividness
    return out


def speckle(ab: torch.Tensor) -> torch.Tensor:
    """(N,) total variation of ab (N,2,H,W): the mean |difference| of neighbouring positions, in Lab units."""
    dx = (ab[..., :, 1:] - ab[..., :, :-1]).abs().mean((1, 2, 3))
    dy = (ab[..., 1:, :] - ab[..., :-1, :]).abs().mean((1, 2, 3))
    return (dx + dy) / 2
