"""The domain-adaptation losses of strategies/losses.py against direct computations on fixed tensors.

Gradient reversal flips and scales gradients; the DANN schedule has the paper's values; Deep CORAL and the
multi-kernel MMD equal the formulas of their papers written out with numpy loops.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from transferkit.strategies.losses import (
    DAN_MULTIPLIERS,
    DomainDiscriminator,
    GradientReversal,
    coral_loss,
    dann_lambda,
    domain_adversarial_loss,
    grad_reverse,
    mmd_loss,
)


def _fixed(n: int, d: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(shift, 1.0, (n, d))).double()


@pytest.mark.parametrize("coeff", [1.0, 0.25, 3.0])
def test_gradient_reversal_flips_and_scales_gradients(coeff: float):
    x = _fixed(4, 3, 0).requires_grad_()
    w = _fixed(4, 3, 1)
    y = grad_reverse(x, coeff)
    assert torch.equal(y, x)  # the identity forward
    (y * w).sum().backward()
    assert torch.allclose(x.grad, -coeff * w)


def test_gradient_reversal_module_reads_its_coefficient_at_each_call():
    layer = GradientReversal()
    x = torch.ones(2, 2, requires_grad=True)
    layer(x).sum().backward()
    assert torch.equal(x.grad, -torch.ones(2, 2))
    x.grad = None
    layer.coeff = 0.5
    layer(x).sum().backward()
    assert torch.equal(x.grad, torch.full((2, 2), -0.5))


def test_dann_lambda_follows_the_paper_schedule():
    assert dann_lambda(0.0) == 0.0
    assert dann_lambda(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert dann_lambda(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    values = [dann_lambda(p / 10) for p in range(11)]
    assert values == sorted(values) and values[-1] < 1


def test_domain_adversarial_loss_trains_the_discriminator_and_reverses_the_features():
    torch.manual_seed(0)
    disc = DomainDiscriminator(3, hidden=8).double()
    source, target = _fixed(5, 3, 2).requires_grad_(), _fixed(4, 3, 3).requires_grad_()
    loss, accuracy = domain_adversarial_loss(disc, source, target, coeff=0.5)
    logits = disc(torch.cat([source, target]))
    expected = 0.5 * (torch.nn.functional.softplus(-logits[:5]).mean() + torch.nn.functional.softplus(logits[5:]).mean())
    assert loss.item() == pytest.approx(expected.item(), rel=1e-10)
    predicted = (logits > 0).double()
    assert accuracy == pytest.approx(((predicted[:5] == 1).sum() + (predicted[5:] == 0).sum()).item() / 9)
    loss.backward()
    reversed_grad = source.grad.clone()
    source.grad = None
    disc.zero_grad()
    plain = 0.5 * (torch.nn.functional.softplus(-disc(torch.cat([source, target]))[:5]).mean()
                   + torch.nn.functional.softplus(disc(torch.cat([source, target]))[5:]).mean())
    plain.backward()
    assert torch.allclose(reversed_grad, -0.5 * source.grad)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in disc.parameters())


def _coral_direct(s: np.ndarray, t: np.ndarray) -> float:
    d = s.shape[1]
    diff = np.cov(s, rowvar=False) - np.cov(t, rowvar=False)
    return float((diff ** 2).sum() / (4 * d * d))


def test_coral_matches_the_paper_formula():
    s, t = _fixed(7, 4, 4), _fixed(9, 4, 5, shift=1.0) * 2
    assert coral_loss(s, t).item() == pytest.approx(_coral_direct(s.numpy(), t.numpy()), rel=1e-6)
    assert coral_loss(s, s + 3.0).item() == pytest.approx(0.0, abs=1e-12)  # a mean shift is not a covariance change


def _mmd_direct(s: np.ndarray, t: np.ndarray, multipliers: tuple[float, ...]) -> float:
    x = np.concatenate([s, t])
    m = len(x)
    sq = np.array([[((x[i] - x[j]) ** 2).sum() for j in range(m)] for i in range(m)])
    bandwidth = sq.mean()

    def k(i: int, j: int) -> float:
        return float(np.mean([np.exp(-sq[i, j] / (2 * mult * bandwidth)) for mult in multipliers]))

    n, nt = len(s), len(t)
    ss = sum(k(i, j) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    tt = sum(k(n + i, n + j) for i in range(nt) for j in range(nt) if i != j) / (nt * (nt - 1))
    st = sum(k(i, n + j) for i in range(n) for j in range(nt)) / (n * nt)
    return ss + tt - 2 * st


@pytest.mark.parametrize("multipliers", [DAN_MULTIPLIERS, (1.0,), (0.5, 4.0)])
def test_mmd_matches_a_direct_computation(multipliers: tuple[float, ...]):
    s, t = _fixed(6, 3, 6), _fixed(5, 3, 7, shift=0.7)
    got = mmd_loss(s, t, multipliers).item()
    assert got == pytest.approx(_mmd_direct(s.numpy(), t.numpy(), multipliers), rel=1e-6)


def test_mmd_is_larger_between_domains_than_within_one():
    same = mmd_loss(_fixed(32, 4, 8), _fixed(32, 4, 9)).item()
    apart = mmd_loss(_fixed(32, 4, 8), _fixed(32, 4, 10, shift=1.5)).item()
    assert abs(same) < 0.05 < apart
