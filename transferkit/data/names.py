"""Class names that probably mean the same class: equal up to case and spacing, a plural ending, or one edit.

Imports nothing from transferkit. Such pairs usually come from two folders or spellings of one class
("Cat"/"cats", "golden_retriever"/"golden retriever", "grey"/"gray"), which splits its examples in two.
Short or numeric names are exempt from the one-edit rule: "1" and "7", "cat" and "car" are different classes, and so
are names whose numbers differ ("grade 1"/"grade 2", "class_3"/"class_4", "level 1"/"level 10"): a number in a
class name is almost always an ordinal or an id.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

_SEPARATORS = re.compile(r"[\s_\-]+")
_NUMBERS = re.compile(r"\d+")
MIN_LENGTH_FOR_EDITS = 4


def name_key(name: str) -> str:
    return _SEPARATORS.sub(" ", name.strip().casefold()).strip()


def singular(key: str) -> str:
    if key.endswith("ies") and len(key) > 4:
        return key[:-3] + "y"
    if key.endswith(("ses", "xes", "ches", "shes")):
        return key[:-2]
    if key.endswith("s") and not key.endswith("ss") and len(key) > 3:
        return key[:-1]
    return key


def numbers(key: str) -> list[int]:
    return [int(n) for n in _NUMBERS.findall(key)]


def one_edit_apart(a: str, b: str) -> bool:
    """Exactly one insertion, deletion or substitution turns ``a`` into ``b`` (linear time, no DP table)."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) > len(b):
        a, b = b, a
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    if len(a) == len(b):
        return a[i + 1:] == b[i + 1:]
    return a[i:] == b[i + 1:]


def similar_names(names: Iterable[str]) -> list[tuple[str, str, str]]:
    """(a, b, why) for each pair of distinct names that look like one class spelled two ways."""
    names = sorted(set(names))
    keys = {n: name_key(n) for n in names}
    pairs = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            ka, kb = keys[a], keys[b]
            if ka == kb:
                why = "differ only in case, spaces or separators"
            elif singular(ka) == singular(kb):
                why = "differ only by a plural ending"
            elif (min(len(ka), len(kb)) >= MIN_LENGTH_FOR_EDITS and not (ka.isdigit() or kb.isdigit())
                  and numbers(ka) == numbers(kb) and one_edit_apart(ka, kb)):
                why = "differ by a single character"
            else:
                continue
            pairs.append((a, b, why))
    return pairs
