"""transferkit.data.names: which class-name pairs look like one class spelled two ways, and which do not."""
from __future__ import annotations

import pytest

from transferkit.data.names import similar_names


@pytest.mark.parametrize("names", [
    ["grade 1", "grade 2"], ["class_3", "class_4"], ["level 1", "level 10"], ["cat", "cat2"], ["v1.2", "v1.3"],
    ["grade 9", "grade 10", "grade 11"], ["stage 1a", "stage 2a"],
])
def test_names_that_differ_only_by_a_number_are_different_classes(names: list[str]):
    assert similar_names(names) == []


@pytest.mark.parametrize(("a", "b", "why"), [
    ("Grade_1", "grade 1", "differ only in case, spaces or separators"),
    ("class1", "class 1", "differ by a single character"),
    ("covid-19", "covid19", "differ by a single character"),
    ("grade 1", "grades 1", "differ by a single character"),
])
def test_same_number_spelled_two_ways_is_still_found(a: str, b: str, why: str):
    assert similar_names([a, b]) == [tuple(sorted([a, b])) + (why,)]
