"""The plain reference a transfer method has to beat: logistic regression (regression: ridge) on raw pixels, on
TF-IDF, or on MFCC statistics for audio; for tokens a linear-chain CRF (sklearn-crfsuite) on hand-made word features
(``crf_reference``).

Imports transferkit.data and transferkit.evaluate. No pretrained weights at all: if a transfer strategy cannot
beat this, the pretrained model did not help on this data, and the comparison says so. The CRF's features are the
classic CoNLL set (lowercased word, 2-3 character prefixes and suffixes, title/upper/digit flags, word shape, the
same for the words either side, BOS/EOS); it is scored with the bundles' seqeval report, so its entity F1 is the
number a fitted bundle's `evaluate --json` prints. An audio clip is described by the mean and standard deviation
over time of 20 MFCCs (librosa; 32 ms windows every 10 ms, 40 mel bands) of the whole clip, mono at 16 kHz:
40 numbers, standardised like the pixels. benchmarks/audio.py computes its reference with ``mfcc_statistics``.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import sklearn_crfsuite
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.preprocessing import StandardScaler

from transferkit.data.audio import load_audio
from transferkit.data.conll import TagMap
from transferkit.data.examples import Examples
from transferkit.data.images import load_image
from transferkit.data.labels import LabelMap
from transferkit.data.multilabels import MultiLabelMap
from transferkit.data.targets import NumericTargets
from transferkit.evaluate.metrics import classification_metrics, regression_report
from transferkit.evaluate.multilabel_metrics import multilabel_report
from transferkit.evaluate.token_metrics import sequence_report

PIXEL_SIZE = 32  # images are resized to 32 x 32 RGB before flattening
MFCC_RATE = 16000  # audio clips are decoded to mono at this rate (mixed rates then describe alike)
N_MFCC, N_MELS, WINDOW_SECONDS, HOP_SECONDS = 20, 40, 0.032, 0.010


CRF_NAME = "word-crf"


def reference_name(modality: str, task: str = "classification") -> str:
    if task == "tokens":
        return CRF_NAME
    model = "ridge" if task == "regression" else "logreg"
    return {"text": "tfidf", "audio": "mfcc"}.get(modality, "pixels") + f"-{model}"


def _pixels(examples: Examples) -> np.ndarray:
    rows = [np.asarray(load_image(x).resize((PIXEL_SIZE, PIXEL_SIZE)), dtype=np.float32).reshape(-1) / 255
            for x in examples.inputs]
    return np.stack(rows)


def mfcc_statistics(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mean and std over time of 20 MFCCs of a mono clip (32 ms windows, 10 ms hop, 40 mel bands at its rate)."""
    import librosa

    n_fft = int(round(WINDOW_SECONDS * sample_rate))
    mfcc = librosa.feature.mfcc(y=np.asarray(wave, dtype=np.float32), sr=sample_rate, n_mfcc=N_MFCC, n_fft=n_fft,
                                hop_length=int(round(HOP_SECONDS * sample_rate)), n_mels=N_MELS)
    return np.concatenate([mfcc.mean(axis=1), mfcc.std(axis=1)])


def _mfccs(examples: Examples) -> np.ndarray:
    return np.stack([mfcc_statistics(load_audio(x, MFCC_RATE), MFCC_RATE) for x in examples.inputs])


def _features(train: Examples, test: Examples) -> tuple[Any, Any]:
    """Word 1-2-gram TF-IDF, or standardised pixels, or standardised MFCC statistics."""
    if train.modality == "text":
        vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2))
        return vectorizer.fit_transform(train.inputs), vectorizer.transform(test.inputs)
    describe = _mfccs if train.modality == "audio" else _pixels
    x_train, x_test = describe(train), describe(test)
    scaler = StandardScaler().fit(x_train)
    return scaler.transform(x_train), scaler.transform(x_test)


def reference_metrics(train: Examples, test: Examples,
                      label_map: LabelMap | MultiLabelMap | NumericTargets | TagMap, seed: int = 0) -> dict[str, Any]:
    """Fit the reference on ``train`` and score it on ``test``: logistic regression, RidgeCV for numeric
    targets (``label_map`` a NumericTargets), one-vs-rest logistic regression for label sets (a MultiLabelMap),
    the word-feature CRF for tag sequences (a TagMap)."""
    if isinstance(label_map, TagMap):
        return crf_reference(zip(train.inputs, train.labels or []), zip(test.inputs, test.labels or []), seed)
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


def crf_reference(train_sentences: Iterable[tuple[Sequence[str], Sequence[str]]],
                  test_sentences: Iterable[tuple[Sequence[str], Sequence[str]]], seed: int = 0) -> dict[str, Any]:
    """Train the reference CRF on (words, IOB2 tags) pairs and score it on the test pairs with the bundles' seqeval
    report (``entity_f1``, ``entity_precision``, ``entity_recall``, ``token_accuracy``, ``per_type``, ``strict``…).

    L-BFGS with c1 = c2 = 0.1 (sklearn-crfsuite's tutorial setting), at most 100 iterations, every transition
    allowed. The optimisation is deterministic: ``seed`` is recorded (``"seed"`` in the result) so a reference row
    lines up with the seeded runs it sits beside, and changes nothing else.
    """
    train = [(list(w), list(t)) for w, t in train_sentences if len(w)]
    test = [(list(w), list(t)) for w, t in test_sentences]
    crf = sklearn_crfsuite.CRF(algorithm="lbfgs", c1=0.1, c2=0.1, max_iterations=100,
                               all_possible_transitions=True)
    crf.fit([sentence_features(w) for w, _ in train], [t for _, t in train])
    guess = [list(crf.predict_single(sentence_features(w))) if w else [] for w, _ in test]
    return {**sequence_report([t for _, t in test], guess), "seed": seed}


def sentence_features(words: Sequence[str]) -> list[dict[str, Any]]:
    """The CRF's features of each word of a sentence (see the module docstring)."""
    out = []
    for i, word in enumerate(words):
        features: dict[str, Any] = {"bias": 1.0, **_word_features(word, "")}
        features.update(_word_features(words[i - 1], "-1:", short=True) if i > 0 else {"BOS": True})
        features.update(_word_features(words[i + 1], "+1:", short=True) if i + 1 < len(words) else {"EOS": True})
        out.append(features)
    return out


def _word_features(word: str, prefix: str, short: bool = False) -> dict[str, Any]:
    features: dict[str, Any] = {"lower": word.lower(), "istitle": word.istitle(), "isupper": word.isupper(),
                                "isdigit": word.isdigit(), "shape": _shape(word)}
    if not short:
        features.update({"prefix2": word[:2], "prefix3": word[:3], "suffix2": word[-2:], "suffix3": word[-3:]})
    return {prefix + k: v for k, v in features.items()}


def _shape(word: str) -> str:
    """'Paris' -> 'Xx', 'COVID-19' -> 'X-d', '@user' -> '@x': character classes with repeats collapsed."""
    classes = "".join("X" if c.isupper() else "x" if c.islower() else "d" if c.isdigit() else c for c in word)
    return re.sub(r"(.)\1+", r"\1", classes)
