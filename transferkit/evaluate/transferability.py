"""Transferability estimators: how well a pretrained backbone's frozen features suit a labeled target task, scored
before any training — LogME, LEEP, NCE, H-score, and cross-validated k-NN / linear-probe scores.

Imports numpy, scipy and scikit-learn only (and transferkit.core.errors): pure functions on arrays, so they can
be checked against values computed by hand. Shapes: ``features`` [n, d] (float), ``labels`` [n] class indices
0..K-1, ``targets`` [n, t] floats (one column per target: one-hot classes, 0/1 labels, or standardised numbers),
``source_probs`` [n, Z] the backbone's own (ImageNet) classifier's softmax. Higher is better for every score.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp
from sklearn.covariance import ledoit_wolf
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

ESTIMATORS = ("logme", "leep", "nce", "hscore", "knn", "linear")
DEFAULT_ESTIMATOR = "logme"
# which estimators have a meaning for each task (tokens: none; rank refuses it)
APPLIES: dict[str, tuple[str, ...]] = {
    "classification": ESTIMATORS,
    "regression": ("logme", "knn", "linear"),
    "multilabel": ("logme",),
}
WHY_NOT = {
    "leep": "n/a: needs classes (LEEP conditions on one class per input)",
    "nce": "n/a: needs classes (NCE conditions on one class per input)",
    "hscore": "n/a: needs classes (H-score uses class-conditional means)",
    "knn": "n/a: single-label classification or regression only",
    "linear": "n/a: single-label classification or regression only",
}
NO_SOURCE = "n/a: no source classifier"


@dataclass(frozen=True)
class LogMEFit:
    """The maximised log evidence of one target column, divided by n, and the alpha, beta that reach it."""

    evidence: float
    alpha: float
    beta: float
    iterations: int


def logme(features: np.ndarray, targets: np.ndarray) -> float:
    """LogME (You, Liu, Wang, Long, "LogME: Practical Assessment of Pre-trained Models for Transfer Learning",
    ICML 2021): the log marginal likelihood of a Bayesian linear model ``y = F w + noise`` (prior w ~ N(0, 1/alpha),
    noise ~ N(0, 1/beta)), maximised over alpha and beta, per target column, divided by n, averaged over columns.

    ``features`` [n, d]; ``targets`` [n] or [n, t] floats (classification: one-hot, see ``one_hot``). Features are
    used as given (no centring). Raises ValueError on mismatched shapes or fewer than 2 examples.
    """
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    y = y[:, None] if y.ndim == 1 else y
    _check_rows(f, y, "targets")
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    return float(np.mean([_logme_column(u, s ** 2, f.shape[1], y[:, j]).evidence for j in range(y.shape[1])]))


def logme_fit(features: np.ndarray, target: np.ndarray) -> LogMEFit:
    """LogME of one target column [n]: the evidence / n with its alpha and beta (see ``logme``)."""
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64).reshape(-1)
    _check_rows(f, y, "target")
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    return _logme_column(u, s ** 2, f.shape[1], y)


def _logme_column(u: np.ndarray, sigma: np.ndarray, d: int, y: np.ndarray, tol: float = 1e-7,
                  max_iter: int = 200) -> LogMEFit:
    """The fixed-point iteration of the paper's Algorithm 1 in the eigenbasis of F^T F = V diag(sigma) V^T
    (``u``: F's left singular vectors [n, k], ``sigma`` the k non-zero-or-not eigenvalues, d - k more are zero):
    gamma = sum(beta sigma / (alpha + beta sigma)), alpha = gamma / |m|^2, beta = (n - gamma) / |y - F m|^2."""
    n = y.shape[0]
    z = u.T @ y  # y's coordinates along F's singular directions
    outside = max(float(y @ y - z @ z), 0.0)  # |y|^2 off the span of F: no m can fit it
    alpha, beta, tiny, iteration = 1.0, 1.0, 1e-300, 0
    while iteration < max_iter:
        iteration += 1
        shrink = alpha + beta * sigma
        gamma = float(np.sum(beta * sigma / shrink))
        m2 = float(np.sum((beta * np.sqrt(sigma) * z / shrink) ** 2))  # |m|^2, m = beta A^-1 F^T y
        res2 = outside + float(np.sum((alpha * z / shrink) ** 2))  # |y - F m|^2
        new_alpha, new_beta = gamma / max(m2, tiny), (n - gamma) / max(res2, tiny)
        done = abs(new_alpha - alpha) <= tol * alpha and abs(new_beta - beta) <= tol * beta
        alpha, beta = max(new_alpha, tiny), max(new_beta, tiny)
        if done:
            break
    shrink = alpha + beta * sigma
    m2 = float(np.sum((beta * np.sqrt(sigma) * z / shrink) ** 2))
    res2 = outside + float(np.sum((alpha * z / shrink) ** 2))
    log_det = float(np.sum(np.log(shrink))) + (d - sigma.shape[0]) * np.log(alpha)  # log|alpha I + beta F^T F|
    evidence = (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - n / 2 * np.log(2 * np.pi)
                - beta / 2 * res2 - alpha / 2 * m2 - log_det / 2)
    return LogMEFit(float(evidence / n), float(alpha), float(beta), iteration)


def one_hot(labels: np.ndarray, n_classes: int | None = None) -> np.ndarray:
    """Class indices [n] -> one-hot [n, K] floats (K = ``n_classes`` or max label + 1)."""
    labels = np.asarray(labels, dtype=np.int64)
    k = int(labels.max()) + 1 if n_classes is None else n_classes
    out = np.zeros((labels.shape[0], k))
    out[np.arange(labels.shape[0]), labels] = 1.0
    return out


def leep(source_probs: np.ndarray, labels: np.ndarray) -> float:
    """LEEP (Nguyen, Hassner, Seeger, Archambeau, "LEEP: A New Measure to Evaluate Transferability of Learned
    Representations", ICML 2020): the mean log-likelihood of the target labels under the "expected empirical
    predictor" sum_z P(y | z) theta(x)_z, with P(y, z) = mean_i theta(x_i)_z [y_i = y] the empirical joint of the
    source classifier's soft predictions and the target labels. ``source_probs`` [n, Z] (rows sum to 1), ``labels``
    [n] class indices. A value <= 0; closer to 0 is better.
    """
    theta = np.asarray(source_probs, dtype=np.float64)
    _check_rows(theta, labels, "labels")
    y = one_hot(labels)
    joint = theta.T @ y / theta.shape[0]  # [Z, K]: P(z, y)
    p_z = joint.sum(axis=1, keepdims=True)
    cond = np.divide(joint, p_z, out=np.zeros_like(joint), where=p_z > 0)  # P(y | z)
    eep = theta @ cond  # [n, K]
    return float(np.mean(np.log(eep[np.arange(len(labels)), np.asarray(labels)])))


def nce(source_probs: np.ndarray, labels: np.ndarray) -> float:
    """NCE, negative conditional entropy (Tran, Nguyen, Hassner, "Transferability and Hardness of Supervised
    Classification Tasks", ICCV 2019): -H(Y | Z) with Z the source classifier's hard label argmax theta(x), from
    the empirical joint of (z_i, y_i). ``source_probs`` [n, Z], ``labels`` [n]. A value <= 0; 0: Z determines Y.
    """
    theta = np.asarray(source_probs)
    _check_rows(theta, labels, "labels")
    z = theta.argmax(axis=1)
    labels = np.asarray(labels, dtype=np.int64)
    joint = np.zeros((theta.shape[1], int(labels.max()) + 1))
    np.add.at(joint, (z, labels), 1.0)
    joint /= len(labels)
    p_z = joint.sum(axis=1, keepdims=True)
    seen = joint > 0
    return float(np.sum(joint[seen] * np.log((joint / np.where(p_z > 0, p_z, 1.0))[seen])))


def h_score(features: np.ndarray, labels: np.ndarray, shrinkage: bool = False) -> float:
    """H-score (Bao, Li, Huang, Zheng, Zhang, "An Information-Theoretic Approach to Transferability in Task
    Transfer Learning", ICIP 2019): tr(cov(f)^+ cov(E[f | y])), the features' between-class covariance against
    their total covariance (pseudo-inverse). ``features`` [n, d], ``labels`` [n]. Between 0 and min(d, K - 1).

    With n <= d the sample covariance is singular and the plain H-score is K - 1 for any features, so ``shrinkage``
    uses the shrinkage-based H-score of Ibrahim, Ponomareva, Mazumder ("Newer is not always better: Rethinking
    transferability metrics, their peculiarities, stability and performance", ECML-PKDD 2022):
    tr(((1 - a) cov(f) + a mu I)^-1 (1 - a) cov(E[f | y])), a and mu from Ledoit-Wolf (population covariances).
    """
    f = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    _check_rows(f, labels, "labels")
    f = f - f.mean(axis=0)
    class_means = np.zeros_like(f)
    for c in np.unique(labels):
        class_means[labels == c] = f[labels == c].mean(axis=0)
    if shrinkage:
        shrunk, a = ledoit_wolf(f, assume_centered=True)
        cov_g = (1 - a) * class_means.T @ class_means / len(f)
        return float(np.trace(np.linalg.pinv(shrunk, hermitian=True) @ cov_g))
    cov_f = f.T @ f / (len(f) - 1)
    cov_g = class_means.T @ class_means / (len(f) - 1)
    return float(np.trace(np.linalg.pinv(cov_f, rcond=1e-10, hermitian=True) @ cov_g))


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log softmax of [n, Z] logits (float64)."""
    logits = np.asarray(logits, dtype=np.float64)
    return logits - logsumexp(logits, axis=1, keepdims=True)


def cv_folds(labels: np.ndarray, folds: int, classes: bool) -> int:
    """The folds a cross-validation can use: at most ``folds``, at most the smallest class's size (classes)."""
    if not classes:
        return min(folds, len(labels))
    return min(folds, int(np.bincount(np.asarray(labels, dtype=np.int64)).min()))


def knn_score(features: np.ndarray, y: np.ndarray, task: str = "classification", k: int = 5, folds: int = 5,
              seed: int = 0) -> float:
    """Cross-validated k-nearest-neighbour score on the features, by cosine distance: accuracy (classification,
    stratified folds) or R^2 (regression, shuffled folds). The neighbours are those of the training folds only;
    k is capped at the smallest training fold. ``y`` [n] class indices or numbers. ValueError under 2 folds."""
    cv, n_train = _splitter(y, task, folds, seed)
    k = max(1, min(k, n_train))
    model = (KNeighborsClassifier if task == "classification" else KNeighborsRegressor)(
        n_neighbors=k, metric="cosine", algorithm="brute")
    return float(np.mean(cross_val_score(model, np.asarray(features, dtype=np.float64), y, cv=cv)))


def linear_probe_score(features: np.ndarray, y: np.ndarray, task: str = "classification", folds: int = 5,
                       seed: int = 0) -> float:
    """Cross-validated linear probe on standardised features: logistic regression's accuracy (classification,
    stratified folds) or ridge regression's R^2 (regression, alpha chosen by RidgeCV inside each training fold).
    ``y`` [n] class indices or numbers. ValueError under 2 folds."""
    cv, _ = _splitter(y, task, folds, seed)
    head = LogisticRegression(max_iter=2000) if task == "classification" else RidgeCV(alphas=np.logspace(-3, 3, 13))
    model = make_pipeline(StandardScaler(), head)
    return float(np.mean(cross_val_score(model, np.asarray(features, dtype=np.float64), y, cv=cv)))


def transferability(features: np.ndarray, task: str, y: np.ndarray, source_probs: np.ndarray | None = None,
                    estimators: tuple[str, ...] = ESTIMATORS, folds: int = 5, seed: int = 0) -> dict[str, float | str]:
    """Every estimator in ``estimators`` on one backbone's features: a number, or "n/a: why" where it does not apply.

    ``task``: classification (``y`` [n] class indices), regression (``y`` [n] numbers, standardised for LogME's
    noise scale to mean the same on every dataset) or multilabel (``y`` [n, L] 0/1: LogME per label). LEEP and NCE
    need ``source_probs`` [n, Z] (None: the backbone has no source classifier). ValueError for another task.
    """
    if task not in APPLIES:
        raise ValueError(f"no transferability estimator for task '{task}'; tasks: {', '.join(APPLIES)}")
    y = np.asarray(y)
    out: dict[str, float | str] = {}
    for name in estimators:
        if name not in APPLIES[task]:
            out[name] = WHY_NOT[name]
        elif name in ("leep", "nce") and source_probs is None:
            out[name] = NO_SOURCE
        else:
            try:
                out[name] = _estimate(name, features, task, y, source_probs, folds, seed)
            except ValueError as error:  # too few examples per class for cross-validation
                out[name] = f"n/a: {error}"
    return out


def logme_difference(features_a: np.ndarray, features_b: np.ndarray, task: str, y: np.ndarray,
                     resamples: int = 20, seed: int = 0) -> tuple[float, float]:
    """(LogME(a) - LogME(b) on all examples, its standard error): whether one backbone's lead over another is more
    than the noise of a small labeled set. The error is the delete-half jackknife's (Shao & Wu 1989): both
    backbones are scored on the same ``resamples`` half-samples drawn without replacement (stratified by class
    for classification), and for subsets of half the data its variance estimate is the plain variance of the
    half-sample differences, here taken robustly as the scaled median absolute deviation (1.4826 MAD): on a
    few dozen examples LogME's fixed-point iteration occasionally lands far off (-34 instead of -0.05 on 40
    Fashion-MNIST images), and one such draw would swamp a standard deviation. (A bootstrap with replacement
    would repeat rows, which inflates LogME's evidence whenever there are fewer examples than dimensions.)

    ``features_a`` [n, d_a], ``features_b`` [n, d_b] on the same n inputs; ``y`` as ``transferability`` takes it.
    ValueError for mismatched rows or fewer than 4 examples.
    """
    _check_rows(np.asarray(features_a), np.asarray(features_b), "features_b")
    y = np.asarray(y)
    if len(y) < 4:
        raise ValueError(f"need at least 4 examples to compare LogME on half-samples; got {len(y)}")
    full = _estimate("logme", features_a, task, y, None, 0, seed) - _estimate("logme", features_b, task, y, None, 0,
                                                                            seed)
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(y == c) for c in np.unique(y)] if task == "classification" else [np.arange(len(y))]
    diffs = []
    for _ in range(resamples):
        rows = np.concatenate([rng.choice(g, size=max(1, len(g) // 2), replace=False) for g in groups])
        diffs.append(_estimate("logme", features_a[rows], task, y[rows], None, 0, seed)
                     - _estimate("logme", features_b[rows], task, y[rows], None, 0, seed))
    diffs = np.asarray(diffs)
    return float(full), float(1.4826 * np.median(np.abs(diffs - np.median(diffs))))


def _estimate(name: str, features: np.ndarray, task: str, y: np.ndarray, source_probs: np.ndarray | None,
              folds: int, seed: int) -> float:
    if name == "logme":
        if task == "classification":
            return logme(features, one_hot(y))
        if task == "regression":
            y = (y - y.mean()) / (y.std() or 1.0)
        return logme(features, y)
    if name == "leep":
        return leep(source_probs, y)
    if name == "nce":
        return nce(source_probs, y)
    if name == "hscore":
        return h_score(features, y, shrinkage=True)
    if name == "knn":
        return knn_score(features, y, task, folds=folds, seed=seed)
    return linear_probe_score(features, y, task, folds=folds, seed=seed)


def _splitter(y: np.ndarray, task: str, folds: int, seed: int) -> tuple[KFold | StratifiedKFold, int]:
    classes = task == "classification"
    n_folds = cv_folds(y, folds, classes)
    if n_folds < 2:
        raise ValueError("cross-validation needs at least 2 examples of every class" if classes
                         else "cross-validation needs at least 2 examples")
    splitter = (StratifiedKFold if classes else KFold)(n_splits=n_folds, shuffle=True, random_state=seed)
    return splitter, len(y) - -(-len(y) // n_folds)  # the smallest training fold


def _check_rows(a: np.ndarray, b: np.ndarray, what: str) -> None:
    if a.ndim != 2 or len(a) != len(b):
        raise ValueError(f"expected a 2-D array with one row per entry of {what}; got shapes {a.shape} and "
                         f"{np.shape(b)}")
    if len(a) < 2:
        raise ValueError(f"need at least 2 examples; got {len(a)}")
