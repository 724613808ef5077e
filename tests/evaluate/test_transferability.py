"""The transferability estimators against values computed by hand, or by a direct formula loop written here
independently of the implementation (explicit matrices, inverses and determinants instead of its SVD)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.model_selection import StratifiedKFold

from transferkit.evaluate.transferability import (
    NO_SOURCE,
    h_score,
    knn_score,
    leep,
    linear_probe_score,
    logme,
    logme_fit,
    nce,
    one_hot,
    transferability,
)

THETA = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])  # source classifier probabilities, 3 inputs, 2 classes
Y3 = np.array([0, 1, 0])


def direct_logme(f: np.ndarray, y: np.ndarray, iterations: int = 2000) -> tuple[float, float, float]:
    """You et al. 2021, Algorithm 1, with explicit matrices: A = alpha I + beta F^T F, m = beta A^-1 F^T y,
    gamma = sum_i beta s_i / (alpha + beta s_i) over the eigenvalues s_i of F^T F, then the evidence / n."""
    n, d = f.shape
    eig = np.linalg.eigvalsh(f.T @ f)
    alpha = beta = 1.0
    for _ in range(iterations):
        a = alpha * np.eye(d) + beta * f.T @ f
        m = beta * np.linalg.inv(a) @ f.T @ y
        gamma = sum(beta * s / (alpha + beta * s) for s in eig)
        alpha, beta = gamma / (m @ m), (n - gamma) / np.sum((y - f @ m) ** 2)
    a = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.inv(a) @ f.T @ y
    evidence = (d / 2 * math.log(alpha) + n / 2 * math.log(beta) - n / 2 * math.log(2 * math.pi)
                - beta / 2 * np.sum((y - f @ m) ** 2) - alpha / 2 * (m @ m) - np.linalg.slogdet(a)[1] / 2)
    return evidence / n, alpha, beta


@pytest.mark.parametrize("n,d,rank", [(6, 3, 3), (5, 7, 2)])  # more examples than dimensions, and fewer (rank 2)
def test_logme_matches_the_direct_fixed_point(n: int, d: int, rank: int):
    rng = np.random.default_rng(n * 10 + d)
    f = rng.normal(size=(n, rank)) @ rng.normal(size=(rank, d))
    y = f @ rng.normal(size=d) + 0.5 * rng.normal(size=n)
    fit = logme_fit(f, y)
    evidence, alpha, beta = direct_logme(f, y)
    assert fit.evidence == pytest.approx(evidence, rel=1e-6)
    assert fit.alpha == pytest.approx(alpha, rel=1e-4)
    assert fit.beta == pytest.approx(beta, rel=1e-4)


def test_logme_averages_the_class_columns():
    f = np.array([[1.0, 0.2], [0.9, -0.1], [0.1, 1.0], [-0.2, 0.8], [0.5, 0.5]])
    labels = np.array([0, 0, 1, 1, 0])
    onehot = np.array([[1, 0], [1, 0], [0, 1], [0, 1], [1, 0]], dtype=float)
    expected = (direct_logme(f, onehot[:, 0])[0] + direct_logme(f, onehot[:, 1])[0]) / 2
    assert logme(f, one_hot(labels)) == pytest.approx(expected, rel=1e-6)
    assert transferability(f, "classification", labels, estimators=("logme",))["logme"] == pytest.approx(expected, rel=1e-6)


def test_logme_prefers_features_that_separate_the_classes():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 10)
    separating = one_hot(labels) * 3 + rng.normal(scale=0.3, size=(30, 3))
    noise = rng.normal(size=(30, 3))
    assert logme(separating, one_hot(labels)) > logme(noise, one_hot(labels)) + 0.5


def test_leep_by_hand():
    # joint P(z, y) = 1/3 * sum_i theta_iz [y_i = y]: z0: (0.8 + 0.6, 0.3), z1: (0.2 + 0.4, 0.7); P(z) = 1.7/3, 1.3/3
    p = {(0, 0): 1.4 / 1.7, (0, 1): 0.3 / 1.7, (1, 0): 0.6 / 1.3, (1, 1): 0.7 / 1.3}  # P(y | z)
    by_hand = (math.log(0.8 * p[0, 0] + 0.2 * p[1, 0]) + math.log(0.3 * p[0, 1] + 0.7 * p[1, 1])
               + math.log(0.6 * p[0, 0] + 0.4 * p[1, 0])) / 3
    assert leep(THETA, Y3) == pytest.approx(by_hand, rel=1e-12)


def test_nce_by_hand():
    theta = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.3, 0.7]])  # hard source labels z = 0, 0, 1, 1
    labels = np.array([0, 1, 1, 1])
    # P(z0, y0) = P(z0, y1) = 1/4, P(z1, y1) = 1/2; P(y | z0) = 1/2, P(y1 | z1) = 1
    by_hand = 0.25 * math.log(0.5) + 0.25 * math.log(0.5) + 0.5 * math.log(1.0)
    assert nce(theta, labels) == pytest.approx(by_hand, rel=1e-12)
    assert nce(THETA, Y3) == 0.0  # the source label determines the target label


def test_h_score_by_hand_in_one_dimension():
    # f = 0, 2, 4, 6 (mean 3), classes {0, 2} and {4, 6}: class means 1, 1, 5, 5
    # var(f) = (9 + 1 + 1 + 9) / 3 = 20/3, var(E[f|y]) = (4 + 4 + 4 + 4) / 3 = 16/3, H = 16/20
    assert h_score(np.array([[0.0], [2.0], [4.0], [6.0]]), np.array([0, 0, 1, 1])) == pytest.approx(0.8)


def test_h_score_matches_a_direct_loop():
    rng = np.random.default_rng(3)
    f = rng.normal(size=(9, 2))
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    mean = f.mean(axis=0)
    cov_f = sum(np.outer(x - mean, x - mean) for x in f) / 8
    class_mean = {c: f[labels == c].mean(axis=0) for c in range(3)}
    cov_g = sum(np.outer(class_mean[c] - mean, class_mean[c] - mean) for c in labels) / 8
    (a, b), (_, d) = cov_f
    inverse = np.array([[d, -b], [-b, a]]) / (a * d - b * b)
    assert h_score(f, labels) == pytest.approx(np.trace(inverse @ cov_g), rel=1e-9)


def test_shrunk_h_score_matches_ledoit_wolf_by_its_formula():
    """Ledoit & Wolf 2004: S the population covariance, mu = tr(S) / d, a = min(1, b2 / d2) with
    d2 = |S - mu I|^2 and b2 = 1/n^2 sum_k |x_k x_k^T - S|^2 (Frobenius); then tr(((1-a) S + a mu I)^-1 (1-a) cov_g)."""
    rng = np.random.default_rng(4)
    labels = np.repeat([0, 1, 2], 3)
    f = rng.normal(size=(9, 4)) + np.eye(4)[labels]
    x = f - f.mean(axis=0)
    n, d = x.shape
    s = sum(np.outer(row, row) for row in x) / n
    mu = np.trace(s) / d
    d2 = np.sum((s - mu * np.eye(d)) ** 2)
    b2 = sum(np.sum((np.outer(row, row) - s) ** 2) for row in x) / n ** 2
    a = min(1.0, b2 / d2)
    g = np.array([x[labels == c].mean(axis=0) for c in labels])
    by_formula = np.trace(np.linalg.inv((1 - a) * s + a * mu * np.eye(d)) @ ((1 - a) * g.T @ g / n))
    assert h_score(f, labels, shrinkage=True) == pytest.approx(by_formula, rel=1e-9)
    assert h_score(np.array([[0.0], [2.0], [4.0], [6.0]]), np.array([0, 0, 1, 1]), shrinkage=True) == \
        pytest.approx(0.8)  # one dimension: nothing to shrink toward, the by-hand value above


def test_h_score_without_shrinkage_saturates_when_n_is_below_d():
    rng = np.random.default_rng(5)
    labels = np.repeat([0, 1, 2], 4)
    noise, separating = rng.normal(size=(12, 40)), rng.normal(size=(12, 40)) + 3 * np.eye(40)[labels]
    assert h_score(noise, labels) == pytest.approx(2.0)  # K - 1 whatever the features
    assert h_score(separating, labels, shrinkage=True) > h_score(noise, labels, shrinkage=True) + 0.5


def test_knn_matches_a_direct_nearest_neighbour_loop():
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1, 2], 4)
    f = rng.normal(size=(12, 3)) + np.eye(3)[labels]
    correct = 0
    for train, test in StratifiedKFold(n_splits=2, shuffle=True, random_state=0).split(f, labels):
        unit = f / np.linalg.norm(f, axis=1, keepdims=True)
        for i in test:
            nearest = train[np.argmax(unit[train] @ unit[i])]  # the smallest cosine distance
            correct += labels[nearest] == labels[i]
    assert knn_score(f, labels, k=1, folds=2, seed=0) == pytest.approx(correct / 12)


def test_probes_on_separated_and_on_constant_features():
    labels = np.repeat([0, 1, 2], 4)
    separated = np.eye(3)[labels] * 5 + 0.01 * np.arange(12)[:, None]
    assert knn_score(separated, labels, k=1, folds=4) == 1.0
    assert linear_probe_score(separated, labels, folds=4) == 1.0
    # constant features: every input looks the same, so each fold predicts one class for its balanced test part
    assert linear_probe_score(np.ones((12, 3)), labels, folds=4) == pytest.approx(1 / 3)


def test_regression_and_multilabel_say_what_applies():
    rng = np.random.default_rng(2)
    f = rng.normal(size=(20, 3))
    target = f @ np.array([1.0, -2.0, 0.5]) + 3.0
    scores = transferability(f, "regression", target)
    assert scores["linear"] > 0.99  # R^2 of a ridge probe on an exactly linear target
    assert scores["logme"] > transferability(rng.normal(size=(20, 3)), "regression", target)["logme"]
    assert scores["leep"].startswith("n/a") and scores["hscore"].startswith("n/a")
    labels = (rng.random((20, 3)) > 0.5).astype(float)
    multi = transferability(f, "multilabel", labels)
    assert multi["logme"] == pytest.approx(np.mean([logme_fit(f, labels[:, j]).evidence for j in range(3)]))
    assert all(str(multi[k]).startswith("n/a") for k in ("leep", "nce", "hscore", "knn", "linear"))
    with pytest.raises(ValueError, match="tokens"):
        transferability(f, "tokens", target)


def test_missing_source_classifier_and_too_few_examples():
    f = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]])
    scores = transferability(f, "classification", np.array([0, 1, 1]))
    assert scores["leep"] == NO_SOURCE and scores["nce"] == NO_SOURCE
    assert scores["knn"].startswith("n/a: cross-validation needs at least 2 examples of every class")
    with_source = transferability(f, "classification", Y3, source_probs=THETA, estimators=("leep", "nce"))
    assert with_source == {"leep": pytest.approx(leep(THETA, Y3)), "nce": 0.0}


def test_logme_difference_is_the_full_sample_difference_with_a_bootstrap_error():
    from transferkit.evaluate.transferability import logme, logme_difference, one_hot

    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(2), 20)
    a = np.eye(2)[y] * 2 + rng.normal(0, 0.5, (40, 2))
    b = rng.normal(0, 1, (40, 2))
    lead, se = logme_difference(a, b, "classification", y, resamples=10)
    assert lead == pytest.approx(logme(a, one_hot(y)) - logme(b, one_hot(y)))
    assert 0 < se < lead  # separable vs noise: a lead far above its resampling noise
    assert logme_difference(a, a, "classification", y, resamples=5) == (0.0, 0.0)
