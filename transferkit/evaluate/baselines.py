"""The plain reference a transfer method has to beat: logistic regression (regression: ridge) on raw pixels or on
TF-IDF.

Imports transferkit.data. No pretrained weights at all: if a transfer strategy cannot beat this, the
pretrained model did not help on this data, and the comparison says so.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.preprocessing import StandardScaler

from transferkit.data.examples import Examples
from transferkit.data.images import load_image
from transferkit.data.labels import LabelMap
from transferkit.data.multilabels import MultiLabelMap
from transferkit.data.targets import NumericTargets
from transferkit.evaluate.metrics import classification_metrics, regression_report
from transferkit.evaluate.multilabel_metrics import multilabel_report

PIXEL_SIZE = 32  # images are resized to 32 x 32 RGB before flattening


def reference_name(modality: str, task: str = "classification") -> str:
    model = "ridge" if task == "regression" else "logreg"
    return f"tfidf-{model}" if modality == "text" else f"pixels-{model}"


def _pixels(examples: Examples) -> np.ndarray:
    rows = [np.asarray(load_image(x).resize((PIXEL_SIZE, PIXEL_SIZE)), dtype=np.float32).reshape(-1) / 255
            for x in examples.inputs]
    return np.stack(rows)


def _features(train: Examples, test: Examples) -> tuple[Any, Any]:
    """Word 1-2-gram TF-IDF, or standardised pixels."""
    if train.modality == "text":
        vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2))
        return vectorizer.fit_transform(train.inputs), vectorizer.transform(test.inputs)
    scaler = StandardScaler().fit(_pixels(train))
    return scaler.transform(_pixels(train)), scaler.transform(_pixels(test))


def reference_metrics(train: Examples, test: Examples, label_map: LabelMap | MultiLabelMap | NumericTargets,
                      ) -> dict[str, Any]:
    """Fit the reference on ``train`` and score it on ``test``: logistic regression, RidgeCV for numeric
    targets (``label_map`` a NumericTargets), one-vs-rest logistic regression for label sets (a MultiLabelMap)."""
    y_train = np.array(label_map.encode(train.labels, train.source))
    y_test = np.array(label_map.encode(test.labels, test.source))
    x_train, x_test = _features(train, test)
    if isinstance(label_map, NumericTargets):
        ridge = RidgeCV(alphas=np.logspace(-2, 4, 13)).fit(x_train, y_train)
        return regression_report(y_test, ridge.predict(x_test))
    if isinstance(label_map, MultiLabelMap):  # one-vs-rest logistic; a label constant in training stays constant
        scores = np.tile(y_train.mean(0), (len(y_test), 1))
        for j in np.flatnonzero(y_train.min(0) != y_train.max(0)):
            clf = LogisticRegression(max_iter=3000, C=1.0).fit(x_train, y_train[:, j])
            scores[:, j] = clf.predict_proba(x_test)[:, 1]
        return multilabel_report(y_test, (scores > 0.5).astype(np.int64), label_map.names, scores)
    clf = LogisticRegression(max_iter=3000, C=1.0).fit(x_train, y_train)
    probabilities = np.zeros((len(y_test), len(label_map)))
    probabilities[:, clf.classes_] = clf.predict_proba(x_test)
    return classification_metrics(y_test, probabilities.argmax(1), label_map.names, probabilities)
