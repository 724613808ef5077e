"""The plain references of compare (transferkit.evaluate.baselines): the word-feature CRF for tokens learns entities
from context and word shape (names and cities it never saw), and reports the bundles' seqeval keys; audio clips are
described by MFCC statistics (the same numbers benchmarks/audio.py computed at 8 kHz), and a compare on a tone folder
runs that reference beside the strategies."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import tone, write_tone_folder
from transferkit.compare import compare
from transferkit.data.labels import LabelMap
from transferkit.data.sources import load_source
from transferkit.evaluate.baselines import (
    crf_reference,
    mfcc_statistics,
    reference_metrics,
    reference_name,
    sentence_features,
)
from transferkit.evaluate.token_metrics import sequence_report

TRAIN_NAMES = ("Anna", "Bruno", "Chen", "Dana", "Emil", "Fatima")
TRAIN_CITIES = ("Rome", "Paris", "Oslo", "Lima", "Quito", "Kyiv")
TEST_NAMES = ("Goran", "Hana", "Ivo", "Jana")  # never seen in training: only context and shape give them away
TEST_CITIES = ("Hanoi", "Dakar", "Tunis", "Perth")
FILLER = ("today", "happily", "again", "quickly")


def toy(n: int, names: tuple[str, ...], cities: tuple[str, ...], seed: int) -> list[tuple[list[str], list[str]]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        name, city, filler = rng.choice(names), rng.choice(cities), rng.choice(FILLER)
        if rng.random() < 0.5:
            words, tags = [name, "moved", "to", city, filler, "."], ["B-PER", "O", "O", "B-LOC", "O", "O"]
        else:
            words, tags = [filler, "in", city, ",", name, "smiled"], ["O", "O", "B-LOC", "O", "B-PER", "O"]
        out.append((words, tags))
    return out


def test_crf_reference_finds_unseen_entities_from_context():
    train = toy(40, TRAIN_NAMES, TRAIN_CITIES, 0)
    test = toy(20, TEST_NAMES, TEST_CITIES, 1)
    scores = crf_reference(train, test, seed=3)
    assert scores["entity_f1"] > 0.9, scores
    assert set(scores["per_type"]) == {"LOC", "PER"} and scores["n"] == 20 and scores["seed"] == 3
    assert {"entity_precision", "entity_recall", "token_accuracy", "strict", "type_confusion"} <= set(scores)
    # the same number as the bundles' report on the same tags: a perfect guess scores 1, all 'O' scores 0
    gold = [tags for _, tags in test]
    assert sequence_report(gold, gold)["entity_f1"] == 1.0
    assert sequence_report(gold, [["O"] * len(t) for t in gold])["entity_f1"] == 0.0


def test_crf_reference_is_deterministic_and_takes_examples_pairs():
    train, test = toy(30, TRAIN_NAMES, TRAIN_CITIES, 2), toy(10, TEST_NAMES, TEST_CITIES, 3)
    first = crf_reference(iter(train), iter(test), seed=0)
    assert crf_reference(train, test, seed=1)["entity_f1"] == pytest.approx(first["entity_f1"])


def test_word_features_cover_the_word_its_neighbours_and_the_sentence_ends():
    features = sentence_features(["Paris", "COVID-19", "ok"])
    assert features[0]["BOS"] and "EOS" not in features[0] and features[2]["EOS"]
    assert features[0]["lower"] == "paris" and features[0]["shape"] == "Xx" and features[0]["istitle"]
    assert features[0]["suffix3"] == "ris" and features[0]["prefix2"] == "Pa"
    assert features[1]["shape"] == "X-d" and features[1]["-1:lower"] == "paris" and features[1]["+1:lower"] == "ok"
    assert features[2]["-1:isupper"] is True


def test_reference_names_per_task():
    assert reference_name("text", "tokens") == "word-crf"
    assert reference_name("text", "regression") == "tfidf-ridge" and reference_name("image") == "pixels-logreg"
    assert reference_name("audio") == "mfcc-logreg" and reference_name("audio", "regression") == "mfcc-ridge"


def test_mfcc_statistics_are_20_means_and_20_stds_at_any_rate():
    """At 8 kHz: 256-sample windows, hop 80, 40 mel bands, i.e. what benchmarks/audio.py computed by hand. (The mel
    bands reach the rate's Nyquist frequency, so the reference decodes every clip at 16 kHz first.)"""
    import librosa

    wave = tone(440.0, 1.0, 8000)[:, 0]
    direct = librosa.feature.mfcc(y=wave, sr=8000, n_mfcc=20, n_fft=256, hop_length=80, n_mels=40)
    np.testing.assert_allclose(mfcc_statistics(wave, 8000), np.r_[direct.mean(1), direct.std(1)], rtol=1e-6)
    a, b = (mfcc_statistics(tone(440.0, 1.0, 16000, seed=seed)[:, 0], 16000) for seed in (0, 1))
    other = mfcc_statistics(tone(1760.0, 1.0, 16000)[:, 0], 16000)
    assert a.shape == (40,) and np.linalg.norm(a - b) < 0.2 * np.linalg.norm(a - other)


def test_audio_reference_reads_clips_not_pixels(tone_folder: Path, tmp_path: Path):
    """Mixed rates, channels and formats are decoded as audio (an image reader would fail on them) and the two
    pitches of the tone folder are told apart."""
    train = load_source(tone_folder).train
    test = load_source(write_tone_folder(tmp_path / "test", per_class=3, seed=1)).train
    metrics = reference_metrics(train, test, LabelMap.from_labels(train.labels, "train"))
    assert metrics["accuracy"] == 1.0 and metrics["n"] == 6


def test_compare_on_audio_runs_the_mfcc_reference(tone_folder: Path, tmp_path: Path):
    summary = compare(str(tone_folder), ["linear-probe"], [None], seeds=1, out=str(tmp_path / "cmp"),
                      progress=False, model="speech-embedding", clip_seconds=1.0)
    assert summary["reference_name"] == "mfcc-logreg"
    assert {r["strategy"] for r in summary["runs"]} == {"linear-probe", "mfcc-logreg"}
    assert "mfcc-logreg: logistic regression" in summary["config"]["reference"]
    assert "mfcc-logreg" in (tmp_path / "cmp" / "compare.html").read_text()
