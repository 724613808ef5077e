"""Label-free model selection for domain adaptation: which epoch to keep when the target has no labels.

Imports numpy, scipy and scikit-learn only (pure functions over features, losses and probabilities; the loop
calls them through a callable the api builds, so train/ never imports evaluate/).

``deep_embedded_validation`` is DEV (You, Wang, Chen, Long & Jordan, "Towards Accurate Model Selection in Deep
Unsupervised Domain Adaptation", ICML 2019): the source validation loss, importance-weighted by how
target-like each validation example's features are (the density ratio from a domain classifier on the
features, w = n_s/n_t · p(target|x)/p(source|x)), with the weights as a control variate to cut the variance of
that estimate. It estimates the target risk: lower is better. The domain classifier is a logistic regression on
standardised, PCA-reduced features, regularised for calibration (``density_ratio``); its probabilities for
the validation examples are out-of-fold (cross-fitted), so an example never scores with a classifier that saw it.

``soft_neighborhood_density`` is SND (Saito, Kim, Teterwak, Sclaroff, Darrell & Saenko, "Tune it the Right Way",
ICCV 2021): the mean entropy of each target example's softened similarity to the other target examples in the
output space; higher is better. It needs no source data, but a model that predicts one class for everything also
scores high, which is why fit selects by DEV; SND is here for benchmarks to compare against.

``prediction_balance`` guards the selection against collapse, which DEV misses (it weighs *source* losses: a model
that sends the whole target to one class can still fit the source): the entropy of the classes the model predicts
on the target sample over the entropy of the source's class shares. An epoch under ``COLLAPSE_BALANCE`` (its
target predictions spread over far fewer classes than the source's labels) is not eligible for selection.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PROBABILITY_FLOOR = 1e-6  # a domain classifier's 0 or 1 would make a weight 0 or infinite
DOMAIN_COMPONENTS = 32  # principal components the domain classifier sees (see density_ratio)
DOMAIN_C_GRID = (0.01, 0.1, 1.0)  # its inverse regularisation strengths, chosen by out-of-fold log-loss
COLLAPSE_BALANCE = 0.5  # prediction_balance under this = collapsed (e.g. 10 balanced classes -> 3 or fewer)


@dataclass(frozen=True)
class DevScore:
    """DEV's estimate of the target risk and what went into it (for the report's "why")."""

    risk: float  # the control-variate estimate of the target loss: lower is better
    source_loss: float  # the plain mean loss on source validation (what source-only selection sees)
    weighted_loss: float  # the importance-weighted mean loss, before the control variate
    eta: float  # the control-variate coefficient, -Cov(w·l, w) / Var(w)
    effective_sample_size: float  # (Σw)² / Σw²: how many validation examples the weights effectively keep
    domain_accuracy: float  # out-of-fold accuracy of the domain classifier (0.5 = the domains look alike)
    control_variate: bool = True  # False: the control-variate estimate fell below 0, so risk = weighted_loss

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.__dict__.items()}


def density_ratio(source_features: np.ndarray, target_features: np.ndarray, seed: int = 0,
                  folds: int = 5) -> tuple[np.ndarray, float]:
    """(w per source example, the domain classifier's out-of-fold accuracy): w estimates p_target(x)/p_source(x),
    with the class prior corrected by n_source/n_target, so w averages about 1 over the source examples.

    The weights are only as good as the classifier's probabilities are calibrated: on wide features (1,280 for
    EfficientNet-Lite0) an unregularised logistic regression separates almost any two domains with probabilities
    near 0 and 1, and a handful of examples take all the weight. So the features are standardised and reduced to
    ``DOMAIN_COMPONENTS`` principal components, and C is the one of ``DOMAIN_C_GRID`` with the lowest out-of-fold
    log-loss (the calibration criterion)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    xs, xt = _matrix(source_features, "source_features"), _matrix(target_features, "target_features")
    if xs.shape[1] != xt.shape[1]:
        raise ValueError(f"source and target features differ in width: {xs.shape[1]} vs {xt.shape[1]}")
    x = np.concatenate([xs, xt])
    domain = np.r_[np.zeros(len(xs), int), np.ones(len(xt), int)]
    folds = max(2, min(folds, len(xs), len(xt)))
    split = StratifiedKFold(folds, shuffle=True, random_state=seed)
    x = _principal_components(x, DOMAIN_COMPONENTS, seed)
    best: tuple[float, np.ndarray] | None = None
    for c in DOMAIN_C_GRID:
        classifier = LogisticRegression(C=c, max_iter=1000)
        p_target = cross_val_predict(classifier, x, domain, cv=split, method="predict_proba")[:, 1]
        loss = _log_loss(domain, p_target)
        if best is None or loss < best[0]:
            best = (loss, p_target)
    p_target = best[1]
    accuracy = float(np.mean((p_target >= 0.5) == domain))
    p = np.clip(p_target[: len(xs)], PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)
    return (len(xs) / len(xt)) * p / (1 - p), accuracy


def _principal_components(x: np.ndarray, components: int, seed: int) -> np.ndarray:
    """Standardised ``x`` projected on its first principal components, then standardised again. Fitted on both
    domains together without their domain labels, so the cross-fitted classifier after it still never sees the
    label of an example it scores."""
    from sklearn.decomposition import PCA

    x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-8)
    n = max(1, min(components, x.shape[1], len(x) - 1))
    z = PCA(n, random_state=seed).fit_transform(x)
    return z / np.maximum(z.std(0), 1e-8)


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def deep_embedded_validation(source_features: np.ndarray, source_losses: np.ndarray,
                             target_features: np.ndarray, seed: int = 0, folds: int = 5) -> DevScore:
    """DEV's target-risk estimate from the source validation examples' features and per-example losses and the
    (unlabeled) target examples' features. Lower is better; see the module docstring."""
    losses = np.asarray(source_losses, dtype=np.float64).reshape(-1)
    if len(losses) != len(source_features):
        raise ValueError(f"{len(losses)} losses for {len(source_features)} source examples")
    weights, accuracy = density_ratio(source_features, target_features, seed, folds)
    return dev_risk(losses, weights, accuracy)


def dev_risk(losses: np.ndarray, weights: np.ndarray, domain_accuracy: float = float("nan")) -> DevScore:
    """DEV's control-variate estimate from per-example losses and importance weights: mean(w·l) + η·mean(w) − η
    with η = −Cov(w·l, w)/Var(w). The weights' mean is 1 in expectation, so the correction removes the part of
    the weighted loss's noise that comes from the weights; equal weights (Var(w) = 0) leave the mean loss.
    A loss is never negative, but with a few heavy weights the corrected estimate can be (measured: -6.3 on an
    mmd run, which then won the selection): a negative estimate is replaced by the plain importance-weighted
    mean, and ``control_variate`` says so."""
    losses, weights = np.asarray(losses, np.float64), np.asarray(weights, np.float64)
    weighted = weights * losses
    variance = float(np.var(weights, ddof=1)) if len(weights) > 1 else 0.0
    eta = -float(np.cov(weighted, weights, ddof=1)[0, 1]) / variance if variance > 0 else 0.0
    risk = float(weighted.mean() + eta * weights.mean() - eta)
    corrected = risk >= 0
    ess = float(weights.sum() ** 2 / np.sum(weights**2)) if np.any(weights) else 0.0
    return DevScore(risk=risk if corrected else float(weighted.mean()), source_loss=float(losses.mean()),
                    weighted_loss=float(weighted.mean()), eta=eta, effective_sample_size=ess,
                    domain_accuracy=float(domain_accuracy), control_variate=corrected)


def soft_neighborhood_density(probabilities: np.ndarray, temperature: float = 0.05) -> float:
    """SND of the target's class probabilities [n, k] (n >= 2): higher means denser neighbourhoods."""
    from scipy.special import softmax
    from scipy.stats import entropy

    p = _matrix(probabilities, "probabilities")
    if len(p) < 2:
        raise ValueError("soft neighborhood density needs at least 2 target examples")
    unit = p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12)
    similarity = unit @ unit.T / temperature
    np.fill_diagonal(similarity, -np.inf)  # an example is not its own neighbour
    return float(np.mean(entropy(softmax(similarity, axis=1), axis=1)))


def prediction_balance(predicted: np.ndarray, source_labels: np.ndarray, n_classes: int) -> float:
    """Entropy of the predicted classes' shares over the entropy of the source labels' shares (both integer arrays
    of class indices < ``n_classes``): 1 when the target predictions spread like the source labels, 0 when they
    are all one class. A source with a single class gives 1 (nothing to collapse)."""
    from scipy.stats import entropy

    def shares(classes: np.ndarray) -> np.ndarray:
        return np.bincount(np.asarray(classes, dtype=np.int64).reshape(-1), minlength=n_classes) / max(len(classes), 1)

    source = float(entropy(shares(source_labels)))
    return 1.0 if source <= 0 else float(entropy(shares(predicted))) / source


def select_epoch(scores: dict[int, float], lower_is_better: bool = True) -> int:
    """The epoch with the best score (the earliest on a tie: fewer steps away from the source model)."""
    if not scores:
        raise ValueError("no epoch was scored")
    sign = 1.0 if lower_is_better else -1.0
    return min(scores, key=lambda epoch: (sign * scores[epoch], epoch))


def selection_sentence(scores: dict[int, float], chosen: int, by_source: int | None = None,
                       collapsed: list[int] | None = None) -> str:
    """Why this epoch: DEV's risk per epoch, the epochs left out because their target predictions collapsed, and,
    when it differs, what source-validation selection would have kept."""
    listed = ", ".join(f"epoch {e}: {scores[e]:.4f}" for e in sorted(scores))
    sentence = (f"Label-free selection kept epoch {chosen}: the lowest deep-embedded-validation (DEV) estimate of "
                f"the target loss ({listed}); no target label was used.")
    if collapsed:
        sentence += (f" Not eligible: epoch{'s' if len(collapsed) > 1 else ''} {', '.join(map(str, collapsed))}, "
                     f"whose target predictions collapsed onto few classes (the entropy of the predicted classes "
                     f"under {COLLAPSE_BALANCE:.0%} of the source labels').")
    if by_source is not None and by_source != chosen:
        sentence += f" Source-validation selection would have kept epoch {by_source}."
    return sentence


def _matrix(values: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 2 or not len(x):
        raise ValueError(f"{name} must be a non-empty 2-D array, got shape {x.shape}")
    return x
