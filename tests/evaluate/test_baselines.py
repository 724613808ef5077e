"""The plain references of compare (transferkit.evaluate.baselines): the word-feature CRF for tokens learns entities
from context and word shape (names and cities it never saw), and reports the bundles' seqeval keys."""
from __future__ import annotations

import random

import pytest

from transferkit.evaluate.baselines import crf_reference, reference_name, sentence_features
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
