"""Small domain-adaptation loss modules and functions, TLlib-style: pure, separate from any loop or strategy.

Imports torch only. Features are [n, d] float tensors (a backbone's pooled embedding); source and target batches
may differ in size. Written here rather than taken from a library: TLlib and pytorch-adapt are unmaintained and
pin old dependencies, and each loss is a few lines checked against a direct computation in
tests/strategies/test_domain.py.

- Gradient reversal (Ganin & Lempitsky 2015; Ganin et al. 2016, "Domain-Adversarial Training of Neural
  Networks", JMLR): the identity forward, -coeff x the gradient backward, so the feature extractor learns to
  *fool* a domain discriminator that learns to tell source from target. ``dann_lambda`` is the paper's
  coefficient schedule 2 / (1 + exp(-gamma p)) - 1 over training progress p in [0, 1] (gamma = 10).
- Deep CORAL (Sun & Saenko 2016): the squared Frobenius distance between source and target feature
  covariances, divided by 4 d^2.
- Multi-kernel MMD (DAN, Long et al. 2015): the unbiased estimate of the squared maximum mean discrepancy
  under the mean of Gaussian kernels whose bandwidths are multiples of the mean pairwise squared distance.
- NT-Xent (SimCLR) and InfoNCE with in-batch negatives (SimCSE): the contrastive losses of `transferkit
  pretrain`, checked in tests/test_pretrain.py (lightly would bring pytorch-lightning and hydra for two lines).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class _GradientReversal(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, coeff: float) -> torch.Tensor:
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.coeff * grad, None


def grad_reverse(x: torch.Tensor, coeff: float = 1.0) -> torch.Tensor:
    """``x`` unchanged forward; backward multiplies the incoming gradient by ``-coeff``."""
    return _GradientReversal.apply(x, coeff)


class GradientReversal(nn.Module):
    """The gradient reversal layer as a module: ``coeff`` may be changed between steps (``dann_lambda``)."""

    def __init__(self, coeff: float = 1.0):
        super().__init__()
        self.coeff = coeff

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grad_reverse(x, self.coeff)


def dann_lambda(progress: float, gamma: float = 10.0) -> float:
    """DANN's reversal coefficient 2 / (1 + exp(-gamma p)) - 1: 0 at the start (the discriminator's first, noisy
    signal does not reach the features), near 1 by the end."""
    return 2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0


class DomainDiscriminator(nn.Module):
    """[n, d] features -> [n] logits of "comes from the source domain": the MLP of Ganin et al. 2016 (two hidden
    ReLU layers, 1024 units there, ``hidden`` here). No batch norm (TLlib adds it): over the small, low-variance
    pooled features of a pretrained backbone it amplified the reversed gradient into the backbone ~60x (gradient
    norm 12 with it, 0.19 without, the head's 0.85; digits through EfficientNet-Lite0), and the loop's global
    gradient clipping then shrank the head's step until nothing learned."""

    def __init__(self, in_features: int, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features).squeeze(-1)


def domain_adversarial_loss(discriminator: nn.Module, source: torch.Tensor, target: torch.Tensor,
                            coeff: float = 1.0) -> tuple[torch.Tensor, float]:
    """(loss, discriminator accuracy) of DANN: the mean of the binary cross-entropies of source (label 1) and
    target (label 0), one forward pass over both through a gradient reversal of ``coeff``. Minimising it trains the
    discriminator and, reversed, pushes the features towards domain invariance."""
    logits = _full(discriminator(grad_reverse(torch.cat([source, target]), coeff)))
    n = len(source)
    labels = torch.cat([torch.ones(n), torch.zeros(len(target))]).to(logits.device, logits.dtype)
    loss = 0.5 * (F.binary_cross_entropy_with_logits(logits[:n], labels[:n])
                  + F.binary_cross_entropy_with_logits(logits[n:], labels[n:]))
    accuracy = float(((logits > 0).float() == labels).float().mean())
    return loss, accuracy


def _full(x: torch.Tensor) -> torch.Tensor:
    """16-bit activations (autocast) in float32; float32/64 as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def covariance(x: torch.Tensor) -> torch.Tensor:
    """[d, d] unbiased covariance of [n, d] rows (n >= 2)."""
    centered = x - x.mean(0, keepdim=True)
    return centered.T @ centered / (len(x) - 1)


def coral_loss(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Deep CORAL: ||C_S - C_T||_F^2 / (4 d^2), with C the unbiased covariances of [n_s, d] and [n_t, d] features
    (each batch needs 2 rows or more)."""
    d = source.shape[1]
    diff = covariance(_full(source)) - covariance(_full(target))
    return (diff * diff).sum() / (4 * d * d)


DAN_MULTIPLIERS = (0.125, 0.25, 0.5, 1.0, 2.0)  # 2^k, k = -3..1, as the DAN code of TLlib


def gaussian_kernels(x: torch.Tensor, multipliers: Sequence[float] = DAN_MULTIPLIERS) -> torch.Tensor:
    """Mean of Gaussian kernel matrices exp(-||x_i - x_j||^2 / (2 s)) over bandwidths s = m x the mean squared
    pairwise distance of ``x`` (held constant: no gradient flows through the bandwidth)."""
    squared = torch.cdist(x, x).pow(2)
    scale = squared.detach().mean().clamp_min(1e-12)
    return torch.stack([torch.exp(-squared / (2 * m * scale)) for m in multipliers]).mean(0)


def mmd_loss(source: torch.Tensor, target: torch.Tensor,
             multipliers: Sequence[float] = DAN_MULTIPLIERS) -> torch.Tensor:
    """Unbiased multi-kernel MMD^2 between [n_s, d] and [n_t, d] features (each 2 rows or more): the mean kernel
    within the source and within the target over distinct pairs, minus twice the mean across domains."""
    n = len(source)
    k = gaussian_kernels(_full(torch.cat([source, target])), multipliers)
    k_ss, k_tt, k_st = k[:n, :n], k[n:, n:], k[:n, n:]

    def within(block: torch.Tensor) -> torch.Tensor:
        m = len(block)
        return (block.sum() - block.diagonal().sum()) / (m * (m - 1))

    return within(k_ss) + within(k_tt) - 2 * k_st.mean()


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """SimCLR's NT-Xent (Chen et al. 2020) over [n, d] projections of two views: for each of the 2n views the
    other view of its input is the positive and the 2n - 2 remaining views are negatives (cosine / temperature)."""
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    n = len(z1)
    sim = (z @ z.T / temperature).masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(sim, targets)


def info_nce(anchors: torch.Tensor, positives: torch.Tensor, temperature: float = 0.05) -> torch.Tensor:
    """Unsupervised SimCSE (Gao et al. 2021), as sentence-transformers' MultipleNegativesRankingLoss computes it
    (scale = 1 / temperature): anchor i against every positive, its own the target, the rest in-batch negatives."""
    sim = F.normalize(anchors.float(), dim=1) @ F.normalize(positives.float(), dim=1).T / temperature
    return F.cross_entropy(sim, torch.arange(len(anchors), device=sim.device))
