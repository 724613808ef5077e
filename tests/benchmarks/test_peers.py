"""benchmarks/peers.py: the data parts, the throughput count, the side order, the summary and the table, on fixed
inputs (no training, no timing)."""
from __future__ import annotations

import pytest

from benchmarks.peers import (
    fixed_test,
    items_per_second,
    scores,
    side_order,
    summarise,
    table,
    train_val_parts,
)
from transferkit.data.examples import Examples


def pool(per_class: int) -> Examples:
    labels = [c for c in "abc" for _ in range(per_class)]
    return Examples("text", [f"{y} {i}" for i, y in enumerate(labels)], labels, "test", [str(i) for i in range(len(labels))])


def test_train_and_validation_parts_are_disjoint_balanced_and_seeded():
    train, val = train_val_parts(pool(10), 4, 2, 0)
    assert train.class_counts() == {"a": 4, "b": 4, "c": 4}
    assert val.class_counts() == {"a": 2, "b": 2, "c": 2}
    assert not set(train.ids) & set(val.ids)
    again = train_val_parts(pool(10), 4, 2, 0)
    assert (again[0].ids, again[1].ids) == (train.ids, val.ids)


def test_fixed_test_subset_is_stratified_and_stable():
    test = pool(20)
    part = fixed_test(test, 30)
    assert len(part) == 30 and part.class_counts() == {"a": 10, "b": 10, "c": 10}
    assert fixed_test(test, 30).ids == part.ids
    assert fixed_test(test, 60) is test and fixed_test(test, 100) is test


def test_throughput_counts_trained_and_validated_items():
    assert items_per_second(240, 150, 78.0) == pytest.approx(5.0)


def test_sides_alternate_between_repeats():
    assert side_order(0) == ("transferkit", "peer")
    assert side_order(1) == ("peer", "transferkit")
    assert side_order(2) == side_order(0)


def test_scores():
    assert scores([0, 0, 1, 1], [0, 1, 1, 1]) == pytest.approx({"test_accuracy": 0.75, "test_macro_f1": 0.7333333})


def run(rate: float, accuracy: float) -> dict:
    return {"items_per_s": rate, "test_accuracy": accuracy, "test_macro_f1": accuracy}


def test_ratios_are_taken_within_each_repeat():
    summary = summarise({"transferkit": [run(10.0, 0.9), run(4.0, 0.9)], "peer": [run(5.0, 0.8), run(4.0, 0.8)]})
    assert summary["ratio"]["runs"] == [2.0, 1.0]
    assert summary["ratio"]["median"] == 1.5  # not 7 / 4.5: each ratio from one repeat's pair
    assert summary["transferkit"]["items_per_s"] == {"median": 7.0, "min": 4.0, "max": 10.0, "runs": [10.0, 4.0]}
    assert summary["accuracy_difference"]["median"] == pytest.approx(0.1)


def test_table_names_the_peer_and_gives_ratio_and_difference_on_transferkit_lines():
    summary = summarise({"transferkit": [run(12.0, 0.91)], "peer": [run(10.0, 0.88)]})
    header, ours, theirs = table({"text": summary})
    assert "ratio" in header and "acc diff" in header
    assert ours.split()[:2] == ["text", "transferkit"] and "1.20 [1.20-1.20]" in ours and "+0.030" in ours
    assert "transformers.Trainer" in theirs and "0.880" in theirs
