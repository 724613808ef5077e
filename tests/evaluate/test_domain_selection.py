"""Label-free selection (DEV, SND) on constructed inputs whose right answer is known."""
from __future__ import annotations

import math

import numpy as np
import pytest

from transferkit.evaluate.domain_selection import (
    COLLAPSE_BALANCE,
    deep_embedded_validation,
    density_ratio,
    dev_risk,
    prediction_balance,
    select_epoch,
    selection_sentence,
    soft_neighborhood_density,
)


def _clusters(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source validation: 100 examples near (-4, 0) (region A), 100 near (+4, 0) (region B); target: B only."""
    rng = np.random.default_rng(seed)
    a = rng.normal((-4, 0), 0.5, (100, 2))
    b = rng.normal((4, 0), 0.5, (100, 2))
    target = rng.normal((4, 0), 0.5, (150, 2))
    in_b = np.r_[np.zeros(100, bool), np.ones(100, bool)]
    return np.concatenate([a, b]), target, in_b


def test_dev_estimates_the_loss_where_the_target_lies():
    source, target, in_b = _clusters()
    losses = np.where(in_b, 2.0, 0.1)
    score = deep_embedded_validation(source, losses, target)
    assert score.source_loss == pytest.approx(1.05)
    assert score.risk == pytest.approx(2.0, abs=0.1)  # the target only covers B, where the loss is 2.0
    assert score.domain_accuracy > 0.6  # the classifier tells A from the target
    assert 50 < score.effective_sample_size < 150  # about the 100 examples of B count


def test_dev_picks_the_model_that_is_right_on_the_target_region_not_on_source_validation():
    source, target, in_b = _clusters(1)
    good_on_source = np.where(in_b, 1.0, 0.0)  # mean 0.5: source validation prefers it
    good_on_target = np.where(in_b, 0.2, 2.0)  # mean 1.1
    scores = {1: deep_embedded_validation(source, good_on_source, target).risk,
              2: deep_embedded_validation(source, good_on_target, target).risk}
    assert select_epoch(scores) == 2
    assert select_epoch({1: good_on_source.mean(), 2: good_on_target.mean()}) == 1


def test_dev_with_alike_domains_is_the_mean_loss():
    rng = np.random.default_rng(2)
    source, target = rng.normal(size=(300, 4)), rng.normal(size=(300, 4))
    losses = rng.exponential(1.0, 300)
    weights, accuracy = density_ratio(source, target)
    assert abs(accuracy - 0.5) < 0.1  # indistinguishable domains
    assert weights.mean() == pytest.approx(1.0, abs=0.1)
    assert deep_embedded_validation(source, losses, target).risk == pytest.approx(losses.mean(), abs=0.1)


def test_weights_on_wide_features_of_one_distribution_stay_near_one():
    """512-d features, 300 per domain, one distribution: an unregularised classifier on all 512 dimensions
    overfits each fold (weights up to 1e6, effective sample size 6 of 300); the calibrated one keeps them near 1."""
    rng = np.random.default_rng(5)
    weights, _ = density_ratio(rng.normal(size=(300, 512)), rng.normal(size=(300, 512)))
    assert weights.sum() ** 2 / np.sum(weights**2) > 0.8 * 300
    assert weights.max() < 5


def test_the_control_variate_returns_a_constant_loss_exactly():
    weights = np.random.default_rng(3).lognormal(0, 1, 50)  # any weights, far from averaging 1
    assert weights.mean() != pytest.approx(1.0, abs=0.2)
    score = dev_risk(np.full(50, 0.7), weights)
    assert score.risk == pytest.approx(0.7, abs=1e-9)
    assert score.weighted_loss != pytest.approx(0.7, abs=0.1)  # without the control variate it would be off
    assert dev_risk(np.array([1.0, 3.0]), np.ones(2)).risk == pytest.approx(2.0)  # equal weights: the mean


def test_a_negative_control_variate_estimate_falls_back_to_the_weighted_mean():
    weights, losses = np.array([0.09, 20.66, 14.77, 4.78]), np.array([1.2, 2.7, 0.7, 1.9])
    weighted = weights * losses
    eta = -np.cov(weighted, weights, ddof=1)[0, 1] / np.var(weights, ddof=1)
    assert weighted.mean() + eta * weights.mean() - eta < 0  # the corrected estimate, by hand: about -1.6
    score = dev_risk(losses, weights)
    assert not score.control_variate and score.risk == pytest.approx(weighted.mean())
    assert dev_risk(np.full(50, 0.7), np.random.default_rng(3).lognormal(0, 1, 50)).control_variate


def test_dev_refuses_mismatched_inputs():
    with pytest.raises(ValueError, match="3 losses for 2 source examples"):
        deep_embedded_validation(np.zeros((2, 2)), np.zeros(3), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="width"):
        density_ratio(np.zeros((4, 2)), np.zeros((4, 3)))


def test_snd_of_tight_clusters_is_the_log_of_the_neighbour_count():
    clustered = np.repeat(np.eye(3), 20, axis=0)  # 3 classes x 20 identical confident outputs
    # each example spreads its soft neighbourhood evenly over its 19 identical neighbours
    assert soft_neighborhood_density(clustered) == pytest.approx(math.log(19), abs=1e-3)
    scattered = np.random.default_rng(4).dirichlet(np.ones(3), 60)
    assert soft_neighborhood_density(scattered) < soft_neighborhood_density(clustered)


def test_select_epoch_and_its_sentence():
    scores = {0: 0.9, 1: 0.4, 2: 0.4, 3: 0.6}
    assert select_epoch(scores) == 1  # the earliest of a tie
    assert select_epoch(scores, lower_is_better=False) == 0
    sentence = selection_sentence(scores, 1, by_source=3)
    assert "kept epoch 1" in sentence and "epoch 2: 0.4000" in sentence
    assert "Source-validation selection would have kept epoch 3" in sentence
    with pytest.raises(ValueError):
        select_epoch({})


def test_prediction_balance_is_one_when_spread_like_the_source_and_zero_when_collapsed():
    source = np.repeat(np.arange(10), 5)
    assert prediction_balance(source[::-1], source, 10) == pytest.approx(1.0)
    assert prediction_balance(np.zeros(50, int), source, 10) == 0.0
    three = np.repeat([0, 1, 2], 17)[:50]  # 3 of 10 classes: log(3) / log(10) under the collapse line
    assert prediction_balance(three, source, 10) == pytest.approx(math.log(3) / math.log(10), abs=0.01)
    assert prediction_balance(three, source, 10) < COLLAPSE_BALANCE < prediction_balance(source % 5, source, 10)
    assert prediction_balance(np.zeros(5, int), np.zeros(5, int), 3) == 1.0  # one source class: nothing to lose


def test_the_sentence_names_collapsed_epochs():
    sentence = selection_sentence({0: 0.9, 1: 0.4, 2: 0.1}, 1, collapsed=[2])
    assert "Not eligible: epoch 2, whose target predictions collapsed" in sentence
