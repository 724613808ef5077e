"""TransferClassifier and TransferRegressor: scikit-learn estimators (fit / predict / predict_proba / score) over
transferkit.api.

Accepts texts (strings), image paths, or image arrays (a list, or an [n, H, W(, C)] uint8 array).
``__init__`` only stores parameters; learned state ends in ``_``. Subclassing BaseEstimator/ClassifierMixin gives
get_params/set_params, clone and GridSearchCV. Labels keep their type: ``classes_`` holds values of ``y`` (ints,
floats, bools, numpy scalars, strings, in y's dtype) sorted as np.unique sorts them, ``predict`` returns them, and
``save``/``load`` round-trip them through ``estimator_classes.json`` beside the bundle (whose label map has the
class names: labels.label_name of each value, as for labels read from files). Multi-label: ``y`` a list of label
lists (``classes_`` the sorted label names) or a 2-D 0/1 indicator array (``classes_`` its column numbers) fits
``--task multilabel``; ``predict`` then returns the 0/1 indicator array and ``score`` is subset accuracy.
"""
from __future__ import annotations

import json
import math
import tempfile
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

from transferkit import api
from transferkit.core.errors import DataError, NotFittedError
from transferkit.core.io import atomic_write_json
from transferkit.data.examples import Examples
from transferkit.data.labels import label_name
from transferkit.serve.predictor import Predictor

CLASSES_FILE = "estimator_classes.json"
_PYTHON_TYPES = {"bool": bool, "int": int, "float": float, "str": str}


def _to_examples(X: Any, names: list[str] | None, source: str) -> Examples:
    items = list(X)  # a list, or an array whose first axis indexes examples
    if not items:
        raise DataError(f"{source}: X is empty.")
    first = items[0]
    is_text = isinstance(first, str) and Path(first).suffix.lower() not in (".png", ".jpg", ".jpeg", ".bmp", ".webp")
    if names is not None and len(names) != len(items):
        raise DataError(f"{source}: X has {len(items)} items but y has {len(names)}.")
    return Examples("text" if is_text else "image", items, names, source)


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
    if len({type(v) for v in values}) == 1 and type(values[0]) in _PYTHON_TYPES.values():
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
    indicator (classes_ its column numbers); a list of lists/tuples/sets holds label values (classes_ their names)."""
    if getattr(y, "ndim", 1) == 2:
        matrix = np.asarray(y)
        if not np.isin(matrix, (0, 1)).all():
            raise DataError("a 2-D y is read as a multi-label 0/1 indicator array, but it holds other values.")
        return [tuple(str(j) for j in np.flatnonzero(row)) for row in matrix], np.arange(matrix.shape[1])
    values = list(y)
    if not values or not all(isinstance(v, (list, tuple, set, frozenset)) for v in values):
        return None
    rows = [tuple(sorted({_class_name(v, i) for v in row})) for i, row in enumerate(values)]
    return rows, np.array(sorted({n for row in rows for n in row}), dtype=object)


def _indicator_class(name: str, classes: np.ndarray) -> Any:
    """The classes_ entry a label name stands for (a column number for an indicator y)."""
    return int(name) if classes.dtype.kind in "iu" else name


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


class TransferClassifier(ClassifierMixin, BaseEstimator):
    """Fine-tune (or probe) a pretrained backbone as a classifier.

    >>> clf = TransferClassifier(model="minilm", strategy="linear-probe").fit(texts, labels)
    >>> clf.predict(["new text"])
    """

    def __init__(self, model: str = "auto", strategy: str = "finetune", epochs: int = 10, batch_size: int | None = None,
                 lr: float = 1e-3, image_size: int | None = None, seed: int = 0, out: str | None = None,
                 progress: bool = False):
        self.model, self.strategy, self.epochs, self.batch_size = model, strategy, epochs, batch_size
        self.lr, self.image_size, self.seed, self.out, self.progress = lr, image_size, seed, out, progress

    def fit(self, X: Any, y: Any) -> TransferClassifier:
        sets = _learn_label_sets(y)  # multi-label: a list of label lists, or a 2-D 0/1 indicator array
        names, classes = sets if sets is not None else _learn_classes(y)
        examples = _to_examples(X, names, "X")
        out = self.out or tempfile.mkdtemp(prefix="transferkit-")
        result = api.fit(examples, model=self.model, strategy=self.strategy, epochs=self.epochs,
                         batch_size=self.batch_size, lr=self.lr, image_size=self.image_size, seed=self.seed,
                         out=out, progress=self.progress,  # many numeric classes stay classes
                         task="multilabel" if sets is not None else "classification")
        atomic_write_json(Path(result.bundle_dir) / CLASSES_FILE, _encode_classes(classes))
        self._set_model(Predictor.from_bundle(result.bundle_dir), classes)
        self.result_ = result
        return self

    def _set_model(self, predictor: Predictor, classes: np.ndarray) -> None:
        """classes_ and, for each, its column in the bundle's label map (the order of predict_proba's columns)."""
        index = {name: i for i, name in enumerate(predictor.bundle.label_map.names)}
        self.predictor_, self.classes_ = predictor, classes
        self.columns_ = np.array([index[_class_name(c, i)] for i, c in enumerate(classes)], dtype=np.int64)

    def _check_fitted(self) -> Predictor:
        if not hasattr(self, "predictor_"):
            raise NotFittedError("This TransferClassifier is not fitted yet; call fit(X, y) first.")
        return self.predictor_

    def predict_proba(self, X: Any) -> np.ndarray:
        """Probabilities, one column per entry of ``classes_``, in that order."""
        return self._check_fitted().predict(_to_examples(X, None, "X")).probabilities[:, self.columns_]

    def predict(self, X: Any) -> np.ndarray:
        """The class of each input; multi-label: a 0/1 indicator array [n, len(classes_)] (scikit-learn's form)."""
        probabilities = self.predict_proba(X)  # first: it raises NotFittedError
        if self.predictor_.task.name == "multilabel":
            return self.predictor_.task.decode_scores(probabilities)
        return self.classes_[self.predictor_.task.decode_scores(probabilities)]

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Accuracy; labels compare as Python values, so a list mixing 1 and 'a' is not turned into strings.
        Multi-label: subset accuracy (the whole label set right), as scikit-learn scores multi-label."""
        if self._check_fitted().task.name == "multilabel":
            sets = _learn_label_sets(y)
            if sets is None:
                raise DataError("this classifier is multi-label; score it with label lists or a 0/1 indicator array.")
            index = {c: j for j, c in enumerate(self.classes_.tolist())}
            truth = np.zeros((len(sets[0]), len(self.classes_)), dtype=np.int64)
            for i, row in enumerate(sets[0]):
                truth[i, [index[_indicator_class(n, self.classes_)] for n in row]] = 1
            hits = list((self.predict(X) == truth).all(axis=1))
            return float(np.average(hits, weights=sample_weight))
        hits = [bool(p == t) for p, t in zip(self.predict(X), list(y))]
        return float(np.average(hits, weights=sample_weight))

    def save(self, folder: str | Path) -> Path:
        """Copy the fitted bundle to ``folder`` (loadable with TransferClassifier.load or the CLI)."""
        import shutil

        src = self._check_fitted().bundle.path
        shutil.copytree(src, folder, dirs_exist_ok=True)
        atomic_write_json(Path(folder) / CLASSES_FILE, _encode_classes(self.classes_))
        return Path(folder)

    @classmethod
    def load(cls, folder: str | Path) -> TransferClassifier:
        """A fitted classifier from a saved folder or any bundle (a bundle from the CLI has string classes)."""
        clf = cls()
        predictor = Predictor.from_bundle(Path(folder))
        record = Path(folder) / CLASSES_FILE
        classes = (_decode_classes(json.loads(record.read_text(encoding="utf-8"))) if record.is_file()
                   else np.array(predictor.bundle.label_map.names))
        clf._set_model(predictor, classes)
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
    >>> reg.predict(["new text"])  # floats, in y's units; score() is R²
    """

    def __init__(self, model: str = "auto", strategy: str = "finetune", epochs: int = 10, batch_size: int | None = None,
                 lr: float = 1e-3, image_size: int | None = None, seed: int = 0, out: str | None = None,
                 progress: bool = False):
        self.model, self.strategy, self.epochs, self.batch_size = model, strategy, epochs, batch_size
        self.lr, self.image_size, self.seed, self.out, self.progress = lr, image_size, seed, out, progress

    def fit(self, X: Any, y: Any) -> TransferRegressor:
        examples = _to_examples(X, _targets(y), "X")
        out = self.out or tempfile.mkdtemp(prefix="transferkit-")
        result = api.fit(examples, model=self.model, strategy=self.strategy, epochs=self.epochs,
                         batch_size=self.batch_size, lr=self.lr, image_size=self.image_size, seed=self.seed,
                         out=out, progress=self.progress, task="regression")
        self.predictor_, self.result_ = Predictor.from_bundle(result.bundle_dir), result
        return self

    def predict(self, X: Any) -> np.ndarray:
        if not hasattr(self, "predictor_"):
            raise NotFittedError("This TransferRegressor is not fitted yet; call fit(X, y) first.")
        return self.predictor_.predict(_to_examples(X, None, "X")).values.astype(np.float64)

    def save(self, folder: str | Path) -> Path:
        """Copy the fitted bundle to ``folder`` (loadable with TransferRegressor.load or the CLI)."""
        import shutil

        if not hasattr(self, "predictor_"):
            raise NotFittedError("This TransferRegressor is not fitted yet; call fit(X, y) first.")
        shutil.copytree(self.predictor_.bundle.path, folder, dirs_exist_ok=True)
        return Path(folder)

    @classmethod
    def load(cls, folder: str | Path) -> TransferRegressor:
        reg = cls()
        reg.predictor_ = Predictor.from_bundle(Path(folder))
        if reg.predictor_.task.name != "regression":
            raise DataError(f"{folder} holds a {reg.predictor_.task.name} bundle; load it with TransferClassifier.")
        return reg
