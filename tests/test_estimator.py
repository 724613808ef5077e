"""TransferClassifier: sklearn conventions (fit returns self, classes_, score, clone) on real weights, and label
values that keep their type (int, float, bool, numpy scalars, str) through fit, predict, save and load."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import digit_arrays, write_inverted_digits
from transferkit import TransferClassifier
from transferkit.core.errors import ConfigError, DataError, NotFittedError
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


def test_numpy_scalar_labels_give_a_typed_classes_array():
    assert _learn_classes([np.int64(3), np.int64(1), np.int64(3)])[1].dtype == np.int64
    assert _learn_classes([np.float32(0.5), np.float32(2)])[1].dtype == np.float32
    assert _learn_classes([np.int64(3), 3.5])[1].dtype == object  # two types: each value keeps its own


# ------------------------------------------------------------------------------ temporary runs (out=None)


@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_a_fit_without_out_keeps_its_run_only_as_long_as_the_estimator(kind: str, texts_and_labels):
    import copy
    import gc

    from transferkit import TransferRegressor

    texts, topics = texts_and_labels
    y = topics if kind == "classifier" else [float(i % 5) + 0.1 * i for i in range(len(texts))]
    est = (TransferClassifier if kind == "classifier" else TransferRegressor)(model="minilm", strategy="linear-probe")
    first = Path(est.fit(texts, y).result_.run_dir)
    assert (first / "bundle").is_dir()
    second = Path(est.fit(texts, y).result_.run_dir)
    assert second != first and not first.exists() and second.is_dir()  # a refit removes the last temporary run
    kept = est.save(second.parent / f"{second.name}-kept")
    duplicate = copy.deepcopy(est)  # a copy does not own the folder
    del est
    gc.collect()
    assert not second.exists()  # gone with the estimator; what save() copied stays
    assert (kept / "model.safetensors").is_file()
    for use in (duplicate.predict, duplicate.save):  # the text tokenizer is read from the bundle
        with pytest.raises(FileNotFoundError, match="copied from"):
            use(second.parent / "late" if use == duplicate.save else texts[:2])
    import shutil

    shutil.rmtree(kept)


# ---------------------------------------------------------------------------------------------- multi-label


def test_multilabel_follows_scikit_learn(texts_and_labels):
    from sklearn.base import clone
    from sklearn.metrics import accuracy_score

    texts, topics = texts_and_labels
    codes = {"business": [1], "sports": [2, 3], "tech": [3]}  # int label values, label 3 in two topics
    y = [codes[t] for t in topics]
    clf = TransferClassifier(model="minilm", strategy="linear-probe").fit(texts, y)
    assert clf.classes_.dtype == np.int64 and list(clf.classes_) == [1, 2, 3]  # the values, not their names
    assert clone(clf).get_params() == clf.get_params() and not hasattr(clone(clf), "classes_")
    proba = clf.predict_proba(texts)
    assert proba.shape == (len(texts), 3) and ((proba >= 0) & (proba <= 1)).all()
    assert not np.allclose(proba.sum(1), 1.0)  # each label's own probability, not a distribution over labels
    predicted = clf.predict(texts)
    truth = np.array([[int(c in row) for c in (1, 2, 3)] for row in y])
    assert clf.score(texts, y) == pytest.approx(accuracy_score(truth, predicted))  # subset accuracy
    assert clf.score(texts, truth) == clf.score(texts, y) >= 0.8
    with pytest.raises(DataError, match=r"y\[0\] holds label '9'"):
        clf.score(texts[:1], [[9]])


# -------------------------------------------------------------------------------------- token classification


def test_token_classification_takes_word_lists_and_tag_lists(tmp_path: Path):
    from tests.test_tokens_end_to_end import sentences
    from transferkit.evaluate.token_metrics import sequence_report

    def split(rows):
        return [[w for w, _ in s] for s in rows], [[t for _, t in s] for s in rows]

    X, y = split(sentences(60, 0))
    X_test, y_test = split(sentences(12, 1))
    y_iobes = [["S-" + t[2:] if t != "O" else t for t in tags] for tags in y]  # single-word entities in IOBES
    clf = TransferClassifier(model="minilm", strategy="linear-probe", out=str(tmp_path / "run")).fit(X, y_iobes)
    assert list(clf.classes_) == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    predicted = clf.predict(X_test)
    assert [len(p) for p in predicted] == [len(s) for s in X_test] and {t for p in predicted for t in p} <= \
        set(clf.classes_)
    assert clf.score(X_test, y_test) == sequence_report(y_test, predicted)["entity_f1"] > 0.8
    assert not hasattr(clf, "predict_proba")
    with pytest.raises(AttributeError) as refused:
        clf.predict_proba(X_test)
    assert "use predict" in str(refused.value.__cause__)
    loaded = TransferClassifier.load(clf.save(tmp_path / "saved"))
    assert loaded.predict(X_test) == predicted and list(loaded.classes_) == list(clf.classes_)
    text = " ".join(X_test[0][:-1]) + X_test[0][-1]  # 'Anna lives in Rome.': cut into words, not characters
    assert clf.predict([text, X_test[1]]) == predicted[:2]
    with pytest.raises(DataError, match=r"y\[1\] must be a list of 5 tag names"):
        TransferClassifier().fit(X[:2], [y[0], y[1][:-1]])


@pytest.mark.parametrize("name", ["scan.tif", "anim.GIF", "photo.jfif", "a.png"])
def test_paths_with_any_decoded_image_extension_are_images(name: str):
    from transferkit.estimator import _to_examples

    assert _to_examples([f"pics/{name}", "pics/b.png"], None, "X").modality == "image"
    assert _to_examples(["a text about tif files"], None, "X").modality == "text"


def test_estimator_adapts_to_target_data(tmp_path: Path):
    """target_data (a folder of unlabeled target inputs) reaches fit --target-data; the domain strategies need it."""
    arrays = digit_arrays((3, 7), per_class=8, size=32)
    X, y = np.stack(arrays[3] + arrays[7]), np.array([3] * 8 + [7] * 8)
    target = write_inverted_digits(tmp_path / "target", (3, 7), 4)
    clf = TransferClassifier(model="efficientnet_lite0", strategy="coral", epochs=1, image_size=32,
                             target_data=str(target), out=str(tmp_path / "run"))
    assert clf.fit(X, y) is clf and set(clf.predict(X)) <= {3, 7}
    assert json.loads((clf.result_.run_dir / "metrics.json").read_text())["n_target"] == 8
    with pytest.raises(ConfigError, match="needs --target-data"):
        TransferClassifier(model="efficientnet_lite0", strategy="mmd", image_size=32).fit(X, y)
