"""transferkit.evaluate.metrics against scikit-learn, torchmetrics and an independent ECE written here."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    confusion_matrix,
    f1_score,
    mean_absolute_error,
    mean_squared_error,
    precision_recall_fscore_support,
    r2_score,
    top_k_accuracy_score,
)
from torchmetrics.functional.classification import multiclass_calibration_error

from transferkit.core.scores import macro_f1
from transferkit.evaluate.metrics import (
    CALIBRATION_BINS,
    calibration,
    classification_metrics,
    headline,
    regression_metrics,
)

NAMES = ["a", "b", "c", "d"]
# 'c' (2) is never predicted; 'd' (3) never occurs in y_true but is predicted once.
Y_TRUE = np.array([0, 0, 0, 1, 1, 2, 2, 2, 0, 1])
Y_PRED = np.array([0, 1, 0, 1, 3, 0, 1, 0, 0, 1])


def probabilities_with_argmax(y_pred: np.ndarray, n_classes: int, seed: int = 0) -> np.ndarray:
    """Random probability rows whose argmax is ``y_pred``."""
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(n_classes), size=len(y_pred))
    for i, j in enumerate(y_pred):
        top = p[i].argmax()
        p[i, [top, j]] = p[i, [j, top]]
    assert (p.argmax(1) == y_pred).all()
    return p


def ece_reference(probabilities: np.ndarray, y_true: np.ndarray, n_bins: int = CALIBRATION_BINS) -> float:
    """Top-label ECE = sum over equal-width bins of |accuracy - mean confidence| * n_bin / n.

    Bin convention (checked against torchmetrics below): bin i holds i/n_bins <= confidence < (i+1)/n_bins,
    and a confidence of exactly 1.0 is a bin of its own (torchmetrics' bucketize(right=True) over n_bins+1 edges).
    """
    confidence = probabilities.max(1)
    correct = (probabilities.argmax(1) == y_true).astype(float)
    bins = np.floor(confidence * n_bins).astype(int)
    total = 0.0
    for b in np.unique(bins):
        members = bins == b
        total += abs(correct[members].mean() - confidence[members].mean()) * members.sum() / len(confidence)
    return float(total)


def away_from_bin_edges(probabilities: np.ndarray, n_bins: int = CALIBRATION_BINS, margin: float = 1e-4) -> np.ndarray:
    """Rows whose top confidence is not within ``margin`` of an edge k/n_bins (float32 vs float64 edges differ)."""
    scaled = probabilities.max(1) * n_bins
    return np.abs(scaled - np.round(scaled)) > margin * n_bins


# ----------------------------------------------------------------------------------------- classification report


def test_classification_metrics_equal_scikit_learn():
    probabilities = probabilities_with_argmax(Y_PRED, len(NAMES))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UndefinedMetricWarning)  # absent classes must use zero_division=0, silently
        m = classification_metrics(Y_TRUE, Y_PRED, NAMES, probabilities)
    labels = list(range(len(NAMES)))

    assert m["accuracy"] == pytest.approx(accuracy_score(Y_TRUE, Y_PRED)) == pytest.approx(0.5)
    assert m["n"] == 10
    for average in ("micro", "macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(Y_TRUE, Y_PRED, labels=labels, average=average, zero_division=0)
        assert m["averages"][average] == pytest.approx({"precision": p, "recall": r, "f1": f}), average
        assert m["averages"][average]["f1"] == pytest.approx(
            f1_score(Y_TRUE, Y_PRED, labels=labels, average=average, zero_division=0))
    assert m["macro_f1"] == pytest.approx(f1_score(Y_TRUE, Y_PRED, labels=labels, average="macro", zero_division=0))
    assert m["weighted_f1"] == pytest.approx(
        f1_score(Y_TRUE, Y_PRED, labels=labels, average="weighted", zero_division=0))

    report = classification_report(Y_TRUE, Y_PRED, labels=labels, target_names=NAMES, output_dict=True, zero_division=0)
    assert list(m["per_class"]) == NAMES
    for name in NAMES:
        assert m["per_class"][name] == pytest.approx(report[name]), name
    assert m["confusion_matrix"] == confusion_matrix(Y_TRUE, Y_PRED, labels=labels).tolist()
    assert np.asarray(m["confusion_matrix"]).shape == (4, 4)

    # top-k for k below the number of classes only (4 classes: top-2 and top-3, no top-5)
    assert {k for k in m if k.startswith("top")} == {"top2_accuracy", "top3_accuracy"}
    for k in (2, 3):
        assert m[f"top{k}_accuracy"] == pytest.approx(top_k_accuracy_score(Y_TRUE, probabilities, k=k, labels=labels))


def test_absent_classes_score_zero_not_nan():
    m = classification_metrics(Y_TRUE, Y_PRED, NAMES)
    never_predicted, never_true = m["per_class"]["c"], m["per_class"]["d"]
    assert never_predicted == {"precision": 0.0, "recall": 0.0, "f1-score": 0.0, "support": 3.0}
    assert never_true == {"precision": 0.0, "recall": 0.0, "f1-score": 0.0, "support": 0.0}
    # by hand: a has 3 of its 5 predictions right and finds 3 of 4; b 2 of 4 and 2 of 3; macro-F1 averages all 4 labels
    assert m["per_class"]["a"]["precision"] == pytest.approx(3 / 5)
    assert m["per_class"]["a"]["recall"] == pytest.approx(3 / 4)
    assert m["macro_f1"] == pytest.approx((2 * 0.6 * 0.75 / 1.35 + 2 * 0.5 * (2 / 3) / (0.5 + 2 / 3)) / 4)
    assert all(np.isfinite(v) for row in m["per_class"].values() for v in row.values())
    assert "ece" not in m and "top2_accuracy" not in m  # no probabilities, no calibration


def test_one_class_split_scores_over_the_classes_present():
    """A split holding one class, predicted perfectly: macro-F1 1.0 (not 1/3), every class keeps its row."""
    m = classification_metrics(np.array([1, 1, 1]), np.array([1, 1, 1]), ["a", "b", "c"])
    assert m["accuracy"] == 1.0 and m["macro_f1"] == 1.0 and m["averages"]["macro"]["precision"] == 1.0
    assert m["macro_n_classes"] == 1 and m["absent_classes"] == ["a", "c"]
    assert list(m["per_class"]) == ["a", "b", "c"] and m["per_class"]["a"]["support"] == 0.0
    assert m["weighted_f1"] == 1.0 and m["averages"]["micro"]["f1"] == 1.0


def test_a_class_predicted_but_absent_counts_in_the_macro_average():
    m = classification_metrics(np.array([1, 1, 1, 1]), np.array([1, 1, 1, 2]), ["a", "b", "c"])
    assert m["macro_n_classes"] == 2 and m["absent_classes"] == ["a"]
    assert m["macro_f1"] == pytest.approx((2 * 1.0 * 0.75 / 1.75 + 0.0) / 2)


def test_one_macro_f1_definition_everywhere():
    """The loop's validation score, the linear probe's C selection and refit use core.scores.macro_f1; it must equal
    the metrics' macro-F1 on any labels, including splits that miss classes."""
    rng = np.random.default_rng(5)
    for _ in range(20):
        y_true, y_pred = rng.integers(0, 3, 12), rng.integers(0, 5, 12)
        m = classification_metrics(y_true, y_pred, list("abcdefg"))
        assert macro_f1(y_true, y_pred) == pytest.approx(m["macro_f1"])
        assert macro_f1(y_true, y_pred) == pytest.approx(f1_score(y_true, y_pred, average="macro", zero_division=0))
    assert macro_f1(np.array([], dtype=int), np.array([], dtype=int)) == 0.0


def test_top_k_with_many_and_two_classes():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 6, 200)
    p = rng.dirichlet(np.ones(6), size=200)
    m = classification_metrics(y, p.argmax(1), [str(i) for i in range(6)], p)
    for k in (2, 3, 5):
        assert m[f"top{k}_accuracy"] == pytest.approx(top_k_accuracy_score(y, p, k=k, labels=list(range(6))))
    assert m["top5_accuracy"] > m["top3_accuracy"] > m["top2_accuracy"] > m["accuracy"]
    y2 = rng.integers(0, 2, 50)
    p2 = rng.dirichlet(np.ones(2), size=50)
    m2 = classification_metrics(y2, p2.argmax(1), ["no", "yes"], p2)
    assert not [k for k in m2 if k.startswith("top")]
    assert 0 <= m2["ece"] <= 1


# ------------------------------------------------------------------------------------------------------ calibration


def test_ece_equals_independent_computation_on_random_data():
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=2.5, size=(6000, 5))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = rng.integers(0, 5, len(p))
    keep = away_from_bin_edges(p)
    p, y = p[keep], y[keep]
    ece = calibration(y, p)["ece"]
    assert ece == pytest.approx(ece_reference(p, y), abs=1e-6)
    # the edge convention of ece_reference is torchmetrics' own
    tm = multiclass_calibration_error(torch.tensor(p, dtype=torch.float32), torch.tensor(y), num_classes=5, n_bins=15)
    assert ece == pytest.approx(float(tm), abs=1e-6)
    assert ece > 0.05  # random labels: a real miscalibration, not a trivially zero case


def test_ece_by_hand_with_confidences_at_bin_centres():
    # bin width 1/15: 0.95 lies in bin 14, 0.55 in bin 8, 0.70 in bin 10 (none near an edge)
    conf = np.array([0.95] * 4 + [0.55] * 4 + [0.70] * 2)
    correct = np.array([1, 1, 1, 0] + [1, 0, 0, 0] + [1, 1])
    y_pred = np.zeros(10, dtype=int)
    p = np.stack([conf, 1 - conf], 1)
    y = np.where(correct == 1, y_pred, 1)
    expected = (4 * abs(0.75 - 0.95) + 4 * abs(0.25 - 0.55) + 2 * abs(1.0 - 0.70)) / 10
    assert calibration(y, p)["ece"] == pytest.approx(expected, abs=1e-6)
    assert ece_reference(p, y) == pytest.approx(expected)


def test_ece_bin_convention_matches_torchmetrics_for_saturated_confidence():
    """A float32 softmax saturates at exactly 1.0; torchmetrics keeps those in a bin of their own."""
    p = np.array([[0.97, 0.03], [1.0, 0.0], [0.2, 0.8], [0.0, 1.0]])
    y = np.array([0, 1, 1, 1])
    tm = multiclass_calibration_error(torch.tensor(p, dtype=torch.float32), torch.tensor(y), num_classes=2, n_bins=15)
    assert ece_reference(p, y) == pytest.approx(float(tm), abs=1e-6)
    # ours pools exactly-1.0 confidences into the last bin (scikit-learn's bins, the ones the diagram draws), so it
    # differs from torchmetrics here, by design, and equals the count-weighted gap of its own diagram
    ours = calibration(y, p)
    r = ours["reliability"]
    from_bins = sum(c / len(y) * abs(a - f) for c, a, f in zip(r["count"], r["accuracy"], r["confidence"]))
    assert ours["ece"] == pytest.approx(from_bins, abs=1e-12)
    assert ours["ece"] != pytest.approx(float(tm), abs=1e-6)


def calibrated_sample(n: int, n_classes: int, low: float, high: float, accuracy_of=lambda c: c, seed: int = 0):
    """Top-label confidence c ~ U(low, high) on a random class; the label equals it with probability accuracy_of(c)."""
    rng = np.random.default_rng(seed)
    c = rng.uniform(low, high, n)
    predicted = rng.integers(0, n_classes, n)
    p = np.repeat(((1 - c) / (n_classes - 1))[:, None], n_classes, 1)
    p[np.arange(n), predicted] = c
    hit = rng.uniform(size=n) < accuracy_of(c)
    other = (predicted + rng.integers(1, n_classes, n)) % n_classes
    return p, np.where(hit, predicted, other)


def test_perfectly_calibrated_model_has_near_zero_ece():
    p, y = calibrated_sample(40_000, 4, 0.3, 1.0)
    ece = calibration(y, p)["ece"]
    assert ece < 0.015
    assert ece == pytest.approx(ece_reference(p, y), abs=1e-5)


def test_overconfident_model_has_large_ece():
    p, y = calibrated_sample(5_000, 4, 0.94, 0.999, accuracy_of=lambda c: np.full_like(c, 0.5), seed=1)
    result = calibration(y, p)
    accuracy = (p.argmax(1) == y).mean()
    # every bin is overconfident, so ECE = mean confidence - accuracy exactly
    assert result["ece"] == pytest.approx(p.max(1).mean() - accuracy, abs=1e-5)
    assert result["ece"] > 0.4
    assert all(a < c for a, c in zip(result["reliability"]["accuracy"], result["reliability"]["confidence"]))


def test_reliability_bins_count_every_example_and_match_their_means():
    rng = np.random.default_rng(7)
    logits = rng.normal(scale=1.5, size=(3000, 3))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = np.where(rng.uniform(size=len(p)) < 0.7, p.argmax(1), rng.integers(0, 3, len(p)))
    keep = away_from_bin_edges(p)
    p, y = p[keep], y[keep]
    rel = calibration(y, p)["reliability"]
    assert sum(rel["count"]) == len(y)
    assert len(rel["count"]) == len(rel["confidence"]) == len(rel["accuracy"])
    assert all(c > 0 for c in rel["count"])
    conf, correct = p.max(1), p.argmax(1) == y
    bins = np.floor(conf * CALIBRATION_BINS).astype(int)
    occupied = np.unique(bins)
    assert rel["count"] == [int((bins == b).sum()) for b in occupied]
    assert rel["confidence"] == pytest.approx([conf[bins == b].mean() for b in occupied])
    assert rel["accuracy"] == pytest.approx([correct[bins == b].mean() for b in occupied])
    assert rel["confidence"] == sorted(rel["confidence"])


def ece_from_reliability(rel: dict) -> float:
    n = sum(rel["count"])
    return sum(c / n * abs(a - m) for c, a, m in zip(rel["count"], rel["accuracy"], rel["confidence"]))


def test_reliability_diagram_agrees_with_the_ece_it_is_titled_with():
    """The report titles the reliability diagram 'ECE x'; its own bins must imply that same x."""
    p, y = calibrated_sample(2000, 3, 0.4, 0.999, seed=5)
    keep = away_from_bin_edges(p)
    result = calibration(y[keep], p[keep])
    assert ece_from_reliability(result["reliability"]) == pytest.approx(result["ece"], abs=1e-5)


def test_reliability_diagram_agrees_with_ece_when_softmax_saturates():
    """Confidence exactly 1.0 (a float32 softmax with a logit gap above ~17) is common for confident models.

    torchmetrics puts such examples in a 16th bin [1, 1] while scikit-learn's calibration_curve pools them with
    (14/15, 1]: the ECE printed on the diagram then differs from what the plotted bins imply.
    """
    p = np.array([[0.97, 0.03], [1.0, 0.0]])
    y = np.array([0, 1])  # 0.97 right, 1.0 wrong
    result = calibration(y, p)
    assert ece_from_reliability(result["reliability"]) == pytest.approx(result["ece"], abs=1e-6)


# ------------------------------------------------------------------------------------------------------- regression


def test_regression_metrics_equal_scikit_learn():
    rng = np.random.default_rng(11)
    y = rng.normal(size=100)
    pred = y + rng.normal(scale=0.3, size=100)
    m = regression_metrics(y, pred)
    assert m["mae"] == pytest.approx(mean_absolute_error(y, pred))
    assert m["rmse"] == pytest.approx(np.sqrt(mean_squared_error(y, pred)))
    assert m["rmse"] == pytest.approx(np.sqrt(np.mean((y - pred) ** 2)))
    assert m["r2"] == pytest.approx(r2_score(y, pred))
    assert m["n"] == 100
    perfect = regression_metrics(y, y)
    assert perfect["mae"] == perfect["rmse"] == 0.0 and perfect["r2"] == 1.0


# `evaluate --json` prints one object per split whose keys include these (issue 13's interface contract)
CONTRACT = {
    "classification": {"accuracy", "macro_f1", "n"},
    "multilabel": {"micro_f1", "macro_f1", "samples_f1", "subset_accuracy", "hamming_loss", "map", "n"},
    "regression": {"r2", "mae", "rmse", "spearman", "n"},
    "tokens": {"entity_f1", "entity_precision", "entity_recall", "token_accuracy", "per_type", "n"},
}
CONTRACT_CASES = {  # (targets, predictions, label names, scores) as each task's evaluation passes them
    "classification": (np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), ("a", "b", "c"),
                       np.array([[.8, .1, .1], [.1, .8, .1], [.1, .3, .6], [.2, .2, .6]])),
    "multilabel": (np.array([[1, 0], [1, 1], [0, 1]]), np.array([[1, 0], [1, 0], [0, 1]]), ("x", "y"),
                   np.array([[.9, .2], [.8, .4], [.1, .7]])),
    "regression": (np.array([1.0, 2.0, 3.5, 4.0]), np.array([1.2, 1.9, 3.0, 4.4]), ("value",), None),
    "tokens": (np.array([[1, 0], [2, 1], [0, 2], [0, 0], [3, 1]]), np.array([1, 2, 0, 0, 0]),
               ("O", "B-PER", "I-PER", "B-LOC", "I-LOC"), None),  # rows: (tag id, position in its sentence)
}


@pytest.mark.parametrize("task", sorted(CONTRACT))
def test_every_task_report_has_the_evaluate_json_contract_keys(task: str):
    from transferkit.evaluate.metrics import REPORTS

    assert set(CONTRACT) == set(REPORTS)  # a new task joins the contract here
    metrics = REPORTS[task](*CONTRACT_CASES[task])
    assert CONTRACT[task] <= set(metrics)
    json.dumps(headline(metrics), allow_nan=False)  # strict JSON: no bare NaN
    if task == "tokens":
        assert set(metrics["per_type"]) == {"PER", "LOC"} and metrics["n"] == 2
    else:
        assert metrics["n"] == len(CONTRACT_CASES[task][0])
