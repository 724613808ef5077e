"""TransferClassifier and TransferRegressor: scikit-learn estimators (fit / predict / predict_proba / score) over
transferkit.api.

Accepts texts (strings), image paths, image arrays (a list, or an [n, H, W(, C)] uint8 array) or audio file paths
(.wav, .flac, .ogg, .mp3; ``clip_seconds`` sets the length they are cropped or padded to).
``__init__`` only stores parameters; learned state ends in ``_``. Subclassing BaseEstimator/ClassifierMixin gives
get_params/set_params, clone and GridSearchCV. Labels keep their type: ``classes_`` holds values of ``y`` (ints,
floats, bools, numpy scalars, strings, in y's dtype) sorted as np.unique sorts them, ``predict`` returns them, and
``save``/``load`` round-trip them through ``estimator_classes.json`` beside the bundle (whose label map has the
class names: labels.label_name of each value, as for labels read from files). Multi-label: ``y`` a list of label
lists (``classes_`` the label values, typed and sorted as single labels are) or a 2-D 0/1 indicator array
(``classes_`` its column numbers) fits ``--task multilabel``; ``predict`` then returns the 0/1 indicator array,
``predict_proba`` each label's own probability [n, len(classes_)] (as MLPClassifier and OneVsRestClassifier do) and
``score`` is subset accuracy (ClassifierMixin's accuracy on indicator arrays). Token classification: ``X`` a list
of word lists and ``y`` a tag list per sentence (see TransferClassifier). A fit without ``out`` runs in a temporary
folder removed with the estimator (``_fit_run``).
"""
from __future__ import annotations

import json
import math
import shutil
import tempfile
import unicodedata
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.metaestimators import available_if

from transferkit import api
from transferkit.core.errors import DataError, NotFittedError
from transferkit.core.io import atomic_write_json
from transferkit.data.audio import AUDIO_EXTENSIONS
from transferkit.data.conll import normalise_tags
from transferkit.data.examples import Examples
from transferkit.data.images import IMAGE_EXTENSIONS
from transferkit.data.labels import label_name
from transferkit.evaluate.token_metrics import sequence_report
from transferkit.export.bundle import read_manifest
from transferkit.serve.predictor import Predictor

CLASSES_FILE = "estimator_classes.json"
_PYTHON_TYPES = {"bool": bool, "int": int, "float": float, "str": str}


def _to_examples(X: Any, names: list[str] | None, source: str) -> Examples:
    items = list(X)  # a list, or an array whose first axis indexes examples
    if not items:
        raise DataError(f"{source}: X is empty.")
    first = items[0]
    suffix = Path(first).suffix.lower() if isinstance(first, (str, Path)) else ""
    modality = "audio" if suffix in AUDIO_EXTENSIONS else "image" if suffix in IMAGE_EXTENSIONS or \
        not isinstance(first, str) else "text"
    if names is not None and len(names) != len(items):
        raise DataError(f"{source}: X has {len(items)} items but y has {len(names)}.")
    return Examples(modality, [str(x) for x in items] if modality == "audio" else items, names, source)


def _class_name(value: Any, i: int) -> str:
    """The class name of y[i] (as for a label read from a file); missing or unusable values are DataErrors."""
    plain = value.item() if isinstance(value, np.generic) else value
    missing = plain is None or (isinstance(plain, float) and math.isnan(plain))
    try:
        name = None if missing else label_name(plain)
    except TypeError:
        raise DataError(f"y[{i}] is {value!r}, a {type(value).__name__}; class labels are strings, numbers or "
                        "booleans.") from None
    if name is None:
        raise DataError(f"y[{i}] is missing ({value!r}); give every example a label, or leave it out of X and y.")
    return name


def _y_dtype(y: Any, values: list[Any]) -> np.dtype:
    """y's own dtype (numpy, pandas); for a list, numpy's dtype when all values share one type, else object."""
    if hasattr(y, "dtype") and np.asarray(y).dtype.kind != "O":
        return np.asarray(y).dtype
    kinds = {type(v) for v in values}  # one Python type, or one numpy scalar type (np.int64 -> an int64 array)
    if len(kinds) == 1 and (type(values[0]) in _PYTHON_TYPES.values() or isinstance(values[0], np.generic)):
        return np.asarray(values).dtype
    return np.dtype(object)


def _learn_classes(y: Any) -> tuple[list[str], np.ndarray]:
    """(the class name of each y value, classes_): one value per class, in y's dtype, sorted where values sort."""
    values = list(y)
    names = [_class_name(v, i) for i, v in enumerate(values)]
    first: dict[str, Any] = {}
    for value, name in zip(values, names):
        kept = first.setdefault(name, value)
        if not bool(kept == value):
            form = " (the same text in two Unicode forms, NFC and NFD)" if isinstance(kept, str) and \
                isinstance(value, str) and unicodedata.normalize("NFC", kept) == unicodedata.normalize("NFC", value) else ""
            raise DataError(f"y holds {kept!r} and {value!r}{form}, which name the same class {name!r} (labels are "
                            "compared as written in a file: numbers that are equal are one class, and text is "
                            "compared in NFC form); use one of them.")
    try:
        ordered = sorted(first.values())
    except TypeError:  # mixed types that do not compare: the label map's order
        ordered = list(first.values())
    return names, _as_array(ordered, _y_dtype(y, values))


def _learn_label_sets(y: Any) -> tuple[list[tuple[str, ...]], np.ndarray] | None:
    """Multi-label y -> (each row's label names, classes_), or None for one label per row. A 2-D array is a 0/1
    indicator (classes_ its column numbers); a list of lists/tuples/sets holds label values (classes_ those values,
    one per label, typed and sorted as for single labels)."""
    if getattr(y, "ndim", 1) == 2:
        matrix = np.asarray(y)
        if not np.isin(matrix, (0, 1)).all():
            raise DataError("a 2-D y is read as a multi-label 0/1 indicator array, but it holds other values.")
        return [tuple(str(j) for j in np.flatnonzero(row)) for row in matrix], np.arange(matrix.shape[1])
    values = list(y)
    if not values or not all(isinstance(v, (list, tuple, set, frozenset)) for v in values):
        return None
    rows = [tuple(sorted({_class_name(v, i) for v in row})) for i, row in enumerate(values)]
    flat = [v for row in values for v in row]
    if not flat:
        raise DataError("every label list in y is empty; multi-label needs at least 2 label names.")
    return rows, _learn_classes(flat)[1]


def _as_array(values: list[Any], dtype: np.dtype) -> np.ndarray:
    if dtype.kind != "O":
        return np.array(values, dtype=dtype)
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _encode_classes(classes: np.ndarray) -> dict[str, Any]:
    if classes.dtype.kind != "O":
        return {"dtype": classes.dtype.str, "values": classes.tolist()}
    tagged = []
    for v in classes:
        if isinstance(v, np.generic):
            tagged.append({"numpy": v.dtype.str, "value": v.item()})
        else:
            kind = next(name for name, t in _PYTHON_TYPES.items() if isinstance(v, t))  # bool before int
            tagged.append({"python": kind, "value": _PYTHON_TYPES[kind](v)})
    return {"dtype": "object", "values": tagged}


def _decode_classes(record: dict[str, Any]) -> np.ndarray:
    if record["dtype"] != "object":
        return _as_array(record["values"], np.dtype(record["dtype"]))
    values = [np.dtype(v["numpy"]).type(v["value"]) if "numpy" in v else _PYTHON_TYPES[v["python"]](v["value"])
              for v in record["values"]]
    return _as_array(values, np.dtype(object))


_OWNED: weakref.WeakKeyDictionary[BaseEstimator, weakref.finalize] = weakref.WeakKeyDictionary()


def _fit_run(owner: BaseEstimator, out: str | None, fit: Callable[[str], api.FitResult]) -> api.FitResult:
    """``fit`` into ``out``, else into a temporary folder that lives as long as ``owner``: it is removed when the
    estimator is fitted again, garbage-collected, or at interpreter exit (a failed fit removes it at once)."""
    folder = out or tempfile.mkdtemp(prefix="transferkit-")
    try:
        result = fit(folder)
    except BaseException:
        if out is None:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    previous = _OWNED.pop(owner, None)
    if previous is not None:
        previous()  # the last fit's temporary run
    if out is None:
        _OWNED[owner] = weakref.finalize(owner, shutil.rmtree, folder, ignore_errors=True)
    return result


def _check_bundle(bundle: Path) -> Path:
    """``bundle``, which predict (the text tokenizer) and save read; a copy (pickle, deepcopy) of an estimator fitted
    without ``out`` shares its temporary run, which goes with the original."""
    if not bundle.is_dir():
        raise FileNotFoundError(f"{bundle} no longer exists: it was the temporary run of the estimator this one was "
                                "copied from. Fit with out=FOLDER, or save() before the original goes.")
    return bundle


def _copy_bundle(bundle: Path, folder: Path) -> None:
    shutil.copytree(_check_bundle(bundle), folder, dirs_exist_ok=True)


def _is_token_data(X: Any) -> bool:
    """Sentences given as word lists (token classification), rather than one text or image per row."""
    first = None if hasattr(X, "ndim") else next(iter(X), None)
    return isinstance(first, (list, tuple))


def _token_examples(X: Any, y: Any = None) -> Examples:
    """Sentences (lists of words) and, for fit and score, a tag list each (any IOB scheme, read as IOB2). For
    predict (no ``y``) a sentence may also be a plain text, kept whole: it is cut into words as Predictor.tag cuts
    it (``split_words``), rather than iterated character by character."""
    words = [s if isinstance(s, str) and y is None else list(s) for s in X]
    for i, s in enumerate(words):
        if isinstance(s, str):
            continue
        if not s or not all(isinstance(w, str) for w in s):
            raise DataError(f"X[{i}] is {s!r:.60}; token classification takes each sentence as a non-empty list of "
                            "word strings.")
    if y is None:
        return Examples("text", words, None, "X")
    tags = [list(t) if isinstance(t, (list, tuple)) else None for t in y]
    if len(tags) != len(words):
        raise DataError(f"X has {len(words)} sentences but y has {len(tags)} tag lists.")
    for i, (s, t) in enumerate(zip(words, tags)):
        if t is None or len(t) != len(s) or not all(isinstance(tag, str) for tag in t):
            raise DataError(f"y[{i}] must be a list of {len(s)} tag names, one per word of X[{i}] (such as 'B-PER', "
                            f"'I-PER', 'O'); got {y[i]!r:.60}.")
    return Examples("text", words, normalise_tags(tags, "y", list(range(len(tags))), strict=False), "X")


def _no_token_proba(clf: TransferClassifier) -> bool:
    if getattr(clf, "task_", None) == "tokens":
        raise AttributeError("predict_proba gives one row of probabilities per input, and a token classifier tags "
                             "each word: use predict (a tag list per sentence), or transferkit.predict(bundle, data) "
                             "for every word's score.")
    return True


class TransferClassifier(ClassifierMixin, BaseEstimator):
    """Fine-tune (or probe) a pretrained backbone as a classifier.

    >>> clf = TransferClassifier(model="minilm", strategy="linear-probe").fit(texts, labels)
    >>> clf.predict(["new text"])

    Token classification (NER): ``X`` a list of sentences, each a list of words, and ``y`` a tag list per sentence
    (IOB1, IOB2 or IOBES, read as IOB2); ``predict`` returns a list of IOB2 tag lists (it also takes plain texts,
    cut into words as ``Predictor.tag`` does: a tag per word of ``split_words(text)``), ``classes_`` the model's
    tags and ``score`` the entity-level micro-F1 (seqeval), the score fit selects by; ``predict_proba`` is absent.
    ``target_data`` (a folder or .csv/.jsonl of unlabeled target-domain inputs) is what strategy='dann', 'coral'
    or 'mmd' adapts to, as ``fit --target-data``.
    ``out=None`` fits into a temporary folder kept as long as the estimator lives (``result_`` points into it;
    a pickled or deep copy shares it, and cannot predict once the original is gone): pass ``out`` or call ``save``
    to keep the run.
    """

    def __init__(self, model: str = "auto", strategy: str = "finetune", epochs: int = 10, batch_size: int | None = None,
                 lr: float = 1e-3, image_size: int | None = None, seed: int = 0, out: str | None = None,
                 progress: bool = False, clip_seconds: float | None = None, target_data: str | None = None):
        self.model, self.strategy, self.epochs, self.batch_size = model, strategy, epochs, batch_size
        self.lr, self.image_size, self.seed, self.out, self.progress = lr, image_size, seed, out, progress
        self.clip_seconds, self.target_data = clip_seconds, target_data

    def fit(self, X: Any, y: Any) -> TransferClassifier:
        classes: np.ndarray | None = None
        if _is_token_data(X):  # sentences as word lists, a tag list each
            examples, task = _token_examples(X, y), "tokens"
        else:
            sets = _learn_label_sets(y)  # multi-label: a list of label lists, or a 2-D 0/1 indicator array
            names, classes = sets if sets is not None else _learn_classes(y)
            examples, task = _to_examples(X, names, "X"), "multilabel" if sets is not None else "classification"
        # the task is always given: many numeric classes stay classes
        result = _fit_run(self, self.out, lambda out: api.fit(
            examples, model=self.model, strategy=self.strategy, epochs=self.epochs, batch_size=self.batch_size,
            lr=self.lr, image_size=self.image_size, seed=self.seed, out=out, progress=self.progress,
            clip_seconds=self.clip_seconds, task=task, target_data=self.target_data))
        if classes is None:
            classes = np.array(read_manifest(Path(result.bundle_dir))["labels"])
        atomic_write_json(Path(result.bundle_dir) / CLASSES_FILE, _encode_classes(classes))
        self._set_model(Path(result.bundle_dir), classes)
        self.result_ = result
        return self

    def _set_model(self, folder: Path, classes: np.ndarray) -> None:
        """classes_ and, for each, its column in the bundle's label map (the order of predict_proba's columns).
        Token bundles are tagged through api.predict (the Predictor answers one row per input)."""
        self.task_ = read_manifest(folder).get("task", "classification")
        if self.task_ == "regression":
            raise DataError(f"{folder} holds a regression bundle; load it with TransferRegressor.")
        self.bundle_dir_, self.classes_ = folder, classes
        self.predictor_ = None if self.task_ == "tokens" else Predictor.from_bundle(folder)
        names = read_manifest(folder)["labels"] if self.predictor_ is None else self.predictor_.bundle.label_map.names
        index = {name: i for i, name in enumerate(names)}
        self.columns_ = np.array([index[_class_name(c, i)] for i, c in enumerate(classes)], dtype=np.int64)

    def _check_fitted(self) -> str:
        """The fitted task's name; NotFittedError before fit."""
        if not hasattr(self, "task_"):
            raise NotFittedError("This TransferClassifier is not fitted yet; call fit(X, y) first.")
        _check_bundle(Path(self.bundle_dir_))
        return self.task_

    @available_if(_no_token_proba)
    def predict_proba(self, X: Any) -> np.ndarray:
        """Probabilities, one column per entry of ``classes_``, in that order (multi-label: each label's own)."""
        self._check_fitted()
        return self.predictor_.predict(_to_examples(X, None, "X")).probabilities[:, self.columns_]

    def predict(self, X: Any) -> np.ndarray | list[list[str]]:
        """The class of each input; multi-label: a 0/1 indicator array [n, len(classes_)] (scikit-learn's form);
        tokens: a list of tag lists, one tag per word (a sentence given as a plain text is cut into words as
        Predictor.tag cuts it, and its row has a tag per such word)."""
        task = self._check_fitted()
        if task == "tokens":
            return api.predict(self.bundle_dir_, _token_examples(X), progress=False).tags
        probabilities = self.predict_proba(X)
        if task == "multilabel":
            return self.predictor_.task.decode_scores(probabilities)
        return self.classes_[self.predictor_.task.decode_scores(probabilities)]

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Accuracy; labels compare as Python values, so a list mixing 1 and 'a' is not turned into strings.
        Multi-label: subset accuracy (the whole label set right), what ClassifierMixin.score gives for an indicator
        y. Tokens: entity-level micro-F1 (seqeval's default mode, as evaluate reports it)."""
        task = self._check_fitted()
        if task == "tokens":
            if sample_weight is not None:
                raise DataError("sample_weight: entity F1 counts entities, not sentences; score without weights.")
            return float(sequence_report(_token_examples(X, y).labels, self.predict(X))["entity_f1"])
        if task == "multilabel":
            return super().score(X, self._indicator(y), sample_weight)
        hits = [bool(p == t) for p, t in zip(self.predict(X), list(y))]
        return float(np.average(hits, weights=sample_weight))

    def _indicator(self, y: Any) -> np.ndarray:
        """Multi-label y (label lists, or a 0/1 array whose columns are ``classes_``) as the indicator array."""
        if getattr(y, "ndim", 1) == 2:
            if np.shape(y)[1] != len(self.classes_) or not np.isin(y, (0, 1)).all():
                raise DataError(f"a 2-D y is a 0/1 indicator array with one column per entry of classes_ "
                                f"({len(self.classes_)}); got shape {np.shape(y)}.")
            return np.asarray(y)
        sets = _learn_label_sets(y)
        if sets is None:
            raise DataError("this classifier is multi-label; score it with label lists or a 0/1 indicator array.")
        column = {_class_name(c, j): j for j, c in enumerate(self.classes_)}
        truth = np.zeros((len(sets[0]), len(self.classes_)), dtype=np.int64)
        for i, row in enumerate(sets[0]):
            unknown = [n for n in row if n not in column]
            if unknown:
                raise DataError(f"y[{i}] holds label {unknown[0]!r}, which this classifier was not fitted on "
                                f"(classes_: {', '.join(map(str, self.classes_[:10]))}).")
            truth[i, [column[n] for n in row]] = 1
        return truth

    def save(self, folder: str | Path) -> Path:
        """Copy the fitted bundle to ``folder`` (loadable with TransferClassifier.load or the CLI)."""
        self._check_fitted()
        _copy_bundle(Path(self.bundle_dir_), Path(folder))
        atomic_write_json(Path(folder) / CLASSES_FILE, _encode_classes(self.classes_))
        return Path(folder)

    @classmethod
    def load(cls, folder: str | Path) -> TransferClassifier:
        """A fitted classifier from a saved folder or any bundle (a bundle from the CLI has string classes)."""
        clf = cls()
        record = Path(folder) / CLASSES_FILE
        classes = (_decode_classes(json.loads(record.read_text(encoding="utf-8"))) if record.is_file()
                   else np.array(read_manifest(Path(folder))["labels"]))
        clf._set_model(Path(folder), classes)
        return clf


def _targets(y: Any) -> list[str]:
    """y as the label strings a file would give (regression targets); a non-finite value is a DataError."""
    values = np.asarray(y, dtype=object).ravel().tolist() if hasattr(y, "dtype") else list(y)
    out = []
    for i, value in enumerate(values):
        plain = value.item() if isinstance(value, np.generic) else value
        if isinstance(plain, bool) or not isinstance(plain, (int, float)) or not math.isfinite(plain):
            raise DataError(f"y[{i}] is {value!r}; TransferRegressor needs a finite number for every example.")
        out.append(repr(float(plain)))
    return out


class TransferRegressor(RegressorMixin, BaseEstimator):
    """Fine-tune (or probe: ridge on frozen features) a pretrained backbone to predict one number.

    >>> reg = TransferRegressor(model="minilm", strategy="linear-probe").fit(texts, scores)
    >>> reg.predict(["new text"])  # floats, in y's units; score() is R² (RegressorMixin)

    ``out=None`` fits into a temporary folder kept as long as the estimator lives, as for TransferClassifier.
    ``loss``: 'mse' or 'huber' (outlying targets pull less; not with strategy='linear-probe'); ``huber_delta`` in
    training-target stds.
    """

    def __init__(self, model: str = "auto", strategy: str = "finetune", epochs: int = 10, batch_size: int | None = None,
                 lr: float = 1e-3, image_size: int | None = None, seed: int = 0, out: str | None = None,
                 progress: bool = False, loss: str = "mse", huber_delta: float = 1.0, clip_seconds: float | None = None,
                 target_data: str | None = None):
        self.model, self.strategy, self.epochs, self.batch_size = model, strategy, epochs, batch_size
        self.lr, self.image_size, self.seed, self.out, self.progress = lr, image_size, seed, out, progress
        self.loss, self.huber_delta, self.clip_seconds, self.target_data = loss, huber_delta, clip_seconds, target_data

    def fit(self, X: Any, y: Any) -> TransferRegressor:
        examples = _to_examples(X, _targets(y), "X")
        result = _fit_run(self, self.out, lambda out: api.fit(
            examples, model=self.model, strategy=self.strategy, epochs=self.epochs, batch_size=self.batch_size,
            lr=self.lr, image_size=self.image_size, seed=self.seed, out=out, progress=self.progress,
            task="regression", loss=self.loss, huber_delta=self.huber_delta, clip_seconds=self.clip_seconds,
            target_data=self.target_data))
        self.predictor_, self.result_ = Predictor.from_bundle(result.bundle_dir), result
        return self

    def predict(self, X: Any) -> np.ndarray:
        if not hasattr(self, "predictor_"):
            raise NotFittedError("This TransferRegressor is not fitted yet; call fit(X, y) first.")
        _check_bundle(Path(self.predictor_.bundle.path))
        return self.predictor_.predict(_to_examples(X, None, "X")).values.astype(np.float64)

    def save(self, folder: str | Path) -> Path:
        """Copy the fitted bundle to ``folder`` (loadable with TransferRegressor.load or the CLI)."""
        if not hasattr(self, "predictor_"):
            raise NotFittedError("This TransferRegressor is not fitted yet; call fit(X, y) first.")
        _copy_bundle(Path(self.predictor_.bundle.path), Path(folder))
        return Path(folder)

    @classmethod
    def load(cls, folder: str | Path) -> TransferRegressor:
        reg = cls()
        reg.predictor_ = Predictor.from_bundle(Path(folder))
        if reg.predictor_.task.name != "regression":
            raise DataError(f"{folder} holds a {reg.predictor_.task.name} bundle; load it with TransferClassifier.")
        return reg
