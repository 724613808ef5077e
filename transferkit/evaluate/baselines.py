"""The plain reference a transfer method has to beat: logistic regression on raw pixels or on TF-IDF.

Imports transferkit.data. No pretrained weights at all: if a transfer strategy cannot beat this, the
pretrained model did not help on this data, and the comparison says so.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from transferkit.data.examples import Examples
from transferkit.data.images import load_image
from transferkit.data.labels import LabelMap
from transferkit.evaluate.metrics import classification_metrics

PIXEL_SIZE = 32  # images are resized to 32 x 32 RGB before flattening


def reference_name(modality: str) -> str:
    return "tfidf-logreg" if modality == "text" else "pixels-logreg"


def _pixels(examples: Examples) -> np.ndarray:
    rows = [np.asarray(load_image(x).resize((PIXEL_SIZE, PIXEL_SIZE)), dtype=np.float32).reshape(-1) / 255
            for x in examples.inputs]
    return np.stack(rows)


def reference_metrics(train: Examples, test: Examples, label_map: LabelMap) -> dict[str, Any]:
    """Fit the reference on ``train`` and score it on ``test`` (standardised pixels, or word 1-2-gram TF-IDF)."""
    y_train = np.array(label_map.encode(train.labels, train.source))
    y_test = np.array(label_map.encode(test.labels, test.source))
    if train.modality == "text":
        vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2))
        x_train, x_test = vectorizer.fit_transform(train.inputs), vectorizer.transform(test.inputs)
    else:
        scaler = StandardScaler().fit(_pixels(train))
        x_train, x_test = scaler.transform(_pixels(train)), scaler.transform(_pixels(test))
    clf = LogisticRegression(max_iter=3000, C=1.0).fit(x_train, y_train)
    probabilities = np.zeros((len(y_test), len(label_map)))
    probabilities[:, clf.classes_] = clf.predict_proba(x_test)
    return classification_metrics(y_test, probabilities.argmax(1), label_map.names, probabilities)
