"""TransferClassifier: sklearn conventions (fit returns self, classes_, score, clone) on real weights, and label
values that keep their type (int, float, bool, numpy scalars, str) through fit, predict, save and load."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import digit_arrays
from transferkit import TransferClassifier
from transferkit.core.errors import DataError, NotFittedError
from transferkit.estimator import _decode_classes, _encode_classes, _learn_classes


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


# ---------------------------------------------------------------------------------------- label types (issue 12)

LABEL_SETS = {
    "int": [10, 2, 10, 2],
    "float": [0.5, 2.25, 0.5, 2.25],
    "bool": [True, False, True, False],
    "numpy int32": list(np.array([3, 1, 3, 1], dtype=np.int32)),
    "numpy array uint8": np.array([3, 1, 3, 1], dtype=np.uint8),
    "str": ["b", "a", "b", "a"],
    "mixed": [10, "ten", True, 2.5, np.int64(7)],
}


@pytest.mark.parametrize("name", LABEL_SETS)
def test_classes_keep_their_type_through_the_saved_record(name: str):
    y = LABEL_SETS[name]
    names, classes = _learn_classes(y)
    assert len(names) == len(y)
    restored = _decode_classes(json.loads(json.dumps(_encode_classes(classes))))
    assert restored.dtype == classes.dtype
    assert [(type(v), v) for v in restored] == [(type(v), v) for v in classes]
    assert {(type(v), v) for v in classes} == {(type(v), v) for v in (np.asarray(y) if name != "mixed" else y)}


def test_classes_are_sorted_as_numpy_sorts_them():
    assert list(_learn_classes([10, 2, 10, 2])[1]) == [2, 10]  # not '10' < '2'
    assert _learn_classes(np.array([3, 1], dtype=np.int32))[1].dtype == np.int32


@pytest.mark.parametrize("y,match", [
    ([1, None], r"y\[1\] is missing"),
    (["a", ""], r"y\[1\] is missing"),
    ([1.0, float("nan")], r"y\[1\] is missing"),
    ([1, "1"], "same class '1'"),
    (["caf\u00e9", "cafe\u0301"], "two Unicode forms"),
    ([1, [2]], r"y\[1\] is \[2\], a list"),
])
def test_unusable_labels_are_data_errors(y: list, match: str):
    with pytest.raises(DataError, match=match):
        _learn_classes(y)


def test_text_labels_round_trip_with_their_types(tmp_path: Path, texts_and_labels):
    """Mixed label types on the MiniLM linear probe: predict returns the original values, before and after load."""
    texts, topics = texts_and_labels
    to_value = {"business": 10, "sports": True, "tech": np.int64(7)}
    y = [to_value[t] for t in topics]
    clf = TransferClassifier(model="minilm", strategy="linear-probe", epochs=2, out=str(tmp_path / "run")).fit(texts, y)
    assert [(type(c), c) for c in clf.classes_] == [(bool, True), (np.int64, 7), (int, 10)]  # sorted: True == 1
    before = clf.predict(texts)
    assert {type(v) for v in before} <= {int, bool, np.int64}
    assert clf.score(texts, y) == np.mean([p == t for p, t in zip(before, y)]) >= 0.6
    proba = clf.predict_proba(texts)
    assert list(clf.classes_[proba.argmax(1)]) == list(before)

    loaded = TransferClassifier.load(clf.save(tmp_path / "saved"))
    after = loaded.predict(texts)
    assert [(type(v), v) for v in after] == [(type(v), v) for v in before]
    np.testing.assert_allclose(loaded.predict_proba(texts), proba, atol=1e-6)
    assert [(type(c), c) for c in TransferClassifier.load(clf.result_.bundle_dir).classes_] == \
        [(type(c), c) for c in clf.classes_]


def test_scikit_learn_conventions():
    from sklearn.base import clone, is_classifier

    clf = TransferClassifier(model="minilm", strategy="linear-probe", epochs=3)
    copy = clone(clf)
    assert copy is not clf and copy.get_params() == clf.get_params()
    assert is_classifier(clf) and copy.set_params(epochs=1).epochs == 1
    with pytest.raises(NotFittedError, match="fit"):
        clf.predict(["text"])
