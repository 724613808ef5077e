"""TransferClassifier on image arrays: sklearn conventions (fit returns self, classes_, score) on real weights."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.conftest import digit_arrays
from transferkit import TransferClassifier


def test_estimator_accepts_a_stack_of_image_arrays(tmp_path: Path):
    arrays = digit_arrays((3, 7), per_class=10, size=32)
    X = np.stack(arrays[3] + arrays[7])  # [20, 32, 32] uint8
    y = np.array([3] * 10 + [7] * 10)
    clf = TransferClassifier(model="efficientnet_lite0", strategy="linear-probe", image_size=32,
                             out=str(tmp_path / "run"))
    assert clf.fit(X, y) is clf
    assert list(clf.classes_) == [3, 7]
    predictions = clf.predict(X)
    assert predictions.dtype == y.dtype and set(predictions) <= {3, 7}
    assert clf.score(X, y) >= 0.9  # training data of two very different digits
    proba = clf.predict_proba(X)
    assert proba.shape == (20, 2) and np.allclose(proba.sum(1), 1.0, atol=1e-5)
    assert clf.get_params()["strategy"] == "linear-probe"
