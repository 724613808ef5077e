"""Linear probe: frozen backbone, cached features, multinomial logistic regression (regression: ridge; multi-label:
one-vs-rest logistic) as the head.

Imports transferkit.core, transferkit.backbones and transferkit.strategies.base. The regularisation strength
is chosen on the validation features; the fitted scikit-learn model is folded into the torch head so the
bundle predicts with the same code path as every other strategy. ``fit_probe_head`` picks the closed form by
the head's task: logistic for classification, scikit-learn's RidgeCV (alpha by efficient leave-one-out on the
training features) for a regression head, fitted on the standardised target the head learns. For a tokens head
the features and labels are per word (one row per word, transferkit.backbones.features): a per-token logistic
regression, with C chosen by the tags' macro-F1 on validation words.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.metrics import f1_score, r2_score
from sklearn.preprocessing import StandardScaler
from torch import nn

from transferkit.core.catalog import STRATEGY_SUMMARIES
from transferkit.core.errors import ConfigError
from transferkit.core.scores import macro_f1
from transferkit.strategies.base import Strategy, StrategyConfig, StrategyContext, set_requires_grad
from transferkit.tasks.model import TransferModel


@dataclass(frozen=True)
class LinearProbeConfig(StrategyConfig):
    c_grid: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)
    max_iter: int = 2000
    scaling: str = "per-feature"  # or "global": one constant for all features (a head that will be fine-tuned)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.c_grid or any(c <= 0 for c in self.c_grid):
            raise ConfigError(f"The 'c_grid' parameter of LinearProbeConfig must hold floats > 0. Got {self.c_grid}.")
        if self.scaling not in ("per-feature", "global"):
            raise ConfigError(f"The 'scaling' parameter of LinearProbeConfig must be 'per-feature' or 'global'. "
                              f"Got {self.scaling!r} instead.")


def fit_logistic_head(head: nn.Module, ctx: StrategyContext, config: LinearProbeConfig) -> dict[str, float]:
    """Fit standardized logistic regression on cached features, pick C on val, write it into ``head.linear``."""
    x_train, y_train = ctx.features("train")
    x_val, y_val = ctx.features("val")
    scaler = StandardScaler().fit(x_train)
    # A feature that (almost) never varies on the training set would get a weight of 1/std ~ 1e30 folded into the
    # head: harmless in fp32 on that set, but any later noise there (int8 export, a new input) swamps the logits.
    # A floor at 1e-3 of the median spread keeps such features at most ~1000x amplified.
    scaler.scale_ = np.maximum(scaler.scale_, 1e-3 * float(np.median(scaler.scale_)))
    if config.scaling == "global":
        # Per-feature scaling divides by each feature's std; near-constant features then get huge weights
        # that explode once fine-tuning moves those features (seen as loss spikes on digits).
        scaler.scale_ = np.full_like(scaler.scale_, float(np.mean(scaler.scale_)))
    weights = None if ctx.class_weight is None else {i: float(w) for i, w in enumerate(ctx.class_weight) if w > 0}
    best: tuple[float, float, LogisticRegression] | None = None
    for c in config.c_grid:
        clf = LogisticRegression(C=c, max_iter=config.max_iter, class_weight=weights).fit(
            scaler.transform(x_train), y_train)
        score = macro_f1(y_val, clf.predict(scaler.transform(x_val)))
        if best is None or score > best[0]:
            best = (score, c, clf)
    score, c, clf = best
    _write_head(head, scaler, clf, ctx.n_classes)
    return {"C": c, "val_macro_f1": float(score)}


RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-2, 4, 13))


def fit_probe_head(head: nn.Module, ctx: StrategyContext, config: LinearProbeConfig) -> dict[str, float]:
    """The task's closed-form head on cached features: ridge for a regression head, logistic otherwise."""
    if getattr(head, "task", "classification") == "regression":
        return fit_ridge_head(head, ctx, config)
    if getattr(head, "task", "classification") == "multilabel":
        return fit_one_vs_rest_head(head, ctx, config)
    return fit_logistic_head(head, ctx, config)


def fit_one_vs_rest_head(head: nn.Module, ctx: StrategyContext, config: LinearProbeConfig) -> dict[str, float]:
    """One binary logistic regression per label on standardised features (one C for all, chosen by validation
    micro-F1), written into ``head.linear``; a label constant in training gets a constant logit."""
    x_train, y_train = ctx.features("train")
    x_val, y_val = ctx.features("val")
    scaler = _scaler(x_train, config)
    xt, xv = scaler.transform(x_train), scaler.transform(x_val)
    y_train, y_val = np.asarray(y_train) > 0.5, np.asarray(y_val) > 0.5
    best: tuple[float, float, np.ndarray, np.ndarray] | None = None
    for c in config.c_grid:
        coef, intercept = np.zeros((y_train.shape[1], xt.shape[1])), np.zeros(y_train.shape[1])
        for j in range(y_train.shape[1]):
            if y_train[:, j].all() or not y_train[:, j].any():
                intercept[j] = 10.0 if y_train[:, j].all() else -10.0
                continue
            clf = LogisticRegression(C=c, max_iter=config.max_iter).fit(xt, y_train[:, j])
            coef[j], intercept[j] = clf.coef_[0], clf.intercept_[0]
        score = f1_score(y_val, (xv @ coef.T + intercept) > 0, average="micro", zero_division=0.0)
        if best is None or score > best[0]:
            best = (float(score), c, coef, intercept)
    score, c, coef, intercept = best
    weight = coef / scaler.scale_
    bias = intercept - weight @ scaler.mean_
    with torch.no_grad():
        head.linear.weight.copy_(torch.as_tensor(weight, dtype=head.linear.weight.dtype))
        head.linear.bias.copy_(torch.as_tensor(bias, dtype=head.linear.bias.dtype))
    return {"C": c, "val_micro_f1": score}


def fit_ridge_head(head: nn.Module, ctx: StrategyContext, config: LinearProbeConfig) -> dict[str, float]:
    """Ridge regression of the head's standardised target on standardised features (RidgeCV picks alpha);
    written into ``head.linear``, so ``head`` outputs values in the target's units."""
    x_train, y_train = ctx.features("train")
    x_val, y_val = ctx.features("val")
    scaler = _scaler(x_train, config)
    mean, std = float(head.target_mean), float(head.target_std)
    ridge = RidgeCV(alphas=RIDGE_ALPHAS).fit(scaler.transform(x_train), (np.asarray(y_train, np.float64) - mean) / std)
    predicted = ridge.predict(scaler.transform(x_val)) * std + mean
    weight = ridge.coef_[None, :] / scaler.scale_
    bias = np.array([ridge.intercept_]) - weight @ scaler.mean_
    with torch.no_grad():
        head.linear.weight.copy_(torch.as_tensor(weight, dtype=head.linear.weight.dtype))
        head.linear.bias.copy_(torch.as_tensor(bias, dtype=head.linear.bias.dtype))
    score = float(r2_score(y_val, predicted)) if len(y_val) > 1 else float("nan")
    return {"alpha": float(ridge.alpha_), "val_r2": score}


def _scaler(x_train: np.ndarray, config: LinearProbeConfig) -> StandardScaler:
    """Per-feature standardisation, floored (see fit_logistic_head), or one global scale."""
    scaler = StandardScaler().fit(x_train)
    scaler.scale_ = np.maximum(scaler.scale_, 1e-3 * float(np.median(scaler.scale_)))
    if config.scaling == "global":
        scaler.scale_ = np.full_like(scaler.scale_, float(np.mean(scaler.scale_)))
    return scaler


def _write_head(head: nn.Module, scaler: StandardScaler, clf: LogisticRegression, n_classes: int) -> None:
    """logits = W((x - mu)/sigma) + b  ==  (W/sigma) x + (b - W mu/sigma)."""
    coef, intercept = clf.coef_, clf.intercept_
    if coef.shape[0] == 1:  # binary: scikit-learn stores one row; softmax over [-z/2, z/2] gives the same odds
        coef, intercept = np.vstack([-coef / 2, coef / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
    full_w = np.zeros((n_classes, coef.shape[1]))
    full_b = np.full(n_classes, -1e4)  # classes absent from training are never predicted
    full_w[clf.classes_], full_b[clf.classes_] = coef, intercept
    weight = full_w / scaler.scale_
    bias = full_b - weight @ scaler.mean_
    linear = head.linear
    with torch.no_grad():
        linear.weight.copy_(torch.as_tensor(weight, dtype=linear.weight.dtype))
        linear.bias.copy_(torch.as_tensor(bias, dtype=linear.bias.dtype))


class LinearProbe(Strategy):
    name = "linear-probe"
    config_class = LinearProbeConfig
    summary = STRATEGY_SUMMARIES["linear-probe"]
    trains_with_loop = False

    def prepare(self, model: TransferModel, ctx: StrategyContext) -> None:
        set_requires_grad(model, False)
        self.fit_info = fit_probe_head(model.head, ctx, self.config)
