"""The data doctor's per-task label checks: regression targets, multi-label sets, token tags, and hints when
classification labels look like another task's (label sets joined by '|', or numbers with a few non-numbers).

Imports only transferkit.core and transferkit.data (never transferkit.data.doctor, which calls ``task_issues``).
Each check yields ``Issue`` records naming a split and an example index; the doctor turns them into findings with
file:line. Kinds: regression ``bad-target`` (not a finite number: NaN, inf, text; fatal), ``constant-target``
(training: fatal; val/test: a warning, R² is undefined there); multi-label ``no-labels`` (a row with an empty set:
a warning), ``single-class``, ``unknown-label`` (val/test, fatal); tokens ``empty-tags``/``tag-count``,
``no-entities``, ``unseen-tag`` (val/test), ``unprefixed-tag`` (a warning: '0' or 'X-LOC' among B-/I- tags,
from ``Examples.raw_labels``); classification hints, only when the task was detected rather than
given (``hints``): ``label-sets-as-classes`` and ``numbers-as-classes`` (warnings).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from transferkit.data.conll import unprefixed
from transferkit.data.examples import Examples
from transferkit.data.targets import detect_task, numeric_target

SEPARATORS = ("|", ";", ",")  # how label sets arrive in one CSV cell; '|' is --label-sep's default
HINT_KINDS = ("label-sets-as-classes", "numbers-as-classes", "unprefixed-tag")  # fit prints these, not only its report
_SHOWN = 5  # rows named per kind and split (the message counts the rest)


@dataclass(frozen=True)
class Issue:
    kind: str
    split: str
    message: str
    index: int | None = None  # the example it is about (its file:line); None: the split's file
    fatal: bool = False
    word: int = 0  # tokens: the word's position in its sentence (a CoNLL file has a line per word)


def task_issues(task: str, usable: dict[str, Examples], stats: dict, hints: bool = False) -> Iterator[Issue]:
    """The checks of ``task`` on the usable examples of each split (``stats`` gets the task's counts); for
    classification only the ``hints`` (the doctor checks classes itself)."""
    if task == "regression":
        yield from _targets(usable, stats)
    elif task == "multilabel":
        yield from _label_sets(usable, stats)
    elif task == "tokens":
        yield from _tags(usable, stats)
    elif hints:
        yield from _label_set_hint(usable["train"])
        yield from _numbers_hint(usable["train"])


# ---- regression -----------------------------------------------------------------------------------------------

def _targets(usable: dict[str, Examples], stats: dict) -> Iterator[Issue]:
    """Every target a finite number (the first bad rows of each split), targets not constant."""
    for name, examples in usable.items():
        bad = [i for i, y in enumerate(examples.labels or []) if numeric_target(y) is None]
        for i in bad[:_SHOWN]:
            more = f" ({len(bad)} such rows in {name})" if len(bad) > 1 else ""
            yield Issue("bad-target", name, f"target {examples.labels[i]!r} is not a finite number{more}; regression "
                        "needs a number in every row's label column. Fix or drop the row", i, fatal=True)
    values = [v for y in usable["train"].labels or [] if (v := numeric_target(y)) is not None]
    if not values:
        yield Issue("no-examples", "train", "no usable training targets are left; see the findings above", fatal=True)
        return
    stats["targets"] = {"n": len(values), "distinct": len(set(values)), "min": min(values), "max": max(values),
                        "mean": sum(values) / len(values)}
    if len(set(values)) == 1:
        yield Issue("constant-target", "train", f"every training target is {values[0]:g}; a constant cannot be "
                    "learned. Check --label-column or add rows with other values", fatal=True)
    for name in ("val", "test"):
        held = {v for y in (usable[name].labels or [] if name in usable else []) if (v := numeric_target(y)) is not None}
        if len(held) == 1:
            use = "validation selects the epoch by it" if name == "val" else "the test scores say little"
            yield Issue("constant-target", name, f"every {name} target is {next(iter(held)):g}: R² is undefined on a "
                        f"constant and {use}. Use {name} rows with varied targets")


# ---- multi-label ----------------------------------------------------------------------------------------------

def _label_sets(usable: dict[str, Examples], stats: dict) -> Iterator[Issue]:
    """A row with no label (a warning: it teaches "none of these"), at least 2 label names in training, and
    val/test names seen in training (fatal, as for classes)."""
    for name, examples in usable.items():
        empty = [i for i, y in enumerate(examples.labels or []) if not y]
        if empty:
            more = f" ({len(empty)} such rows in {name})" if len(empty) > 1 else ""
            yield Issue("no-labels", name, f"this row has no label{more}; it is read as 'none of the labels'. Add "
                        "its labels if it has some", empty[0])
    counts = Counter(n for y in usable["train"].labels or [] if y for n in y)
    stats["class_counts"] = dict(sorted(counts.items()))
    if len(counts) < 2:
        yield Issue("single-class", "train", f"{len(counts)} label name(s) in training; multi-label needs at least 2. "
                    "Check --label-column, --label-sep or --label-columns", fatal=True)
    for name in ("val", "test"):
        for i, y in enumerate(usable[name].labels or [] if name in usable else []):
            unseen = [n for n in y or () if n not in counts]
            if unseen:
                yield Issue("unknown-label", name, f"label '{unseen[0]}' does not occur in the training data; the "
                            "model cannot predict it. Fix the label or add training examples", i, fatal=True)
                break


# ---- tokens ---------------------------------------------------------------------------------------------------

def _tags(usable: dict[str, Examples], stats: dict) -> Iterator[Issue]:
    """One tag per word in every sentence, entity tags in training, val/test entity types seen in training."""
    for name, examples in usable.items():
        for i, (words, tags) in enumerate(zip(examples.inputs, examples.labels or [])):
            if not tags or len(tags) != len(words):
                yield Issue("empty-tags" if not tags else "tag-count", name, f"{len(words)} words but "
                            f"{len(tags or [])} tags; give one tag per word", i, fatal=True)
        yield from _unprefixed_tags(name, examples)
    counts = Counter(t for seq in usable["train"].labels or [] for t in seq)
    stats["tag_counts"] = dict(sorted(counts.items()))
    if not set(counts) - {"O"}:
        yield Issue("no-entities", "train", "no training token has an entity tag (B-X/I-X); the model would only "
                    "learn 'O'. Check the tag column (the last one)", fatal=True)
    types = {t[2:] for t in counts if t != "O"}  # the model has B- and I- of each (data.conll.TagMap)
    for name in ("val", "test"):
        seen: set[str] = set()
        for i, tags in enumerate(usable[name].labels or [] if name in usable else []):
            for position, tag in enumerate(tags):
                if tag == "O" or tag[2:] in types or tag[2:] in seen:
                    continue
                seen.add(tag[2:])
                yield Issue("unseen-tag", name, f"entity type '{tag[2:]}' ({tag}) does not occur in the training "
                            "data; the model cannot learn it, so such entities count as missed. Fix the tag or add "
                            "training sentences with it", i, word=position)


def _unprefixed_tags(name: str, examples: Examples) -> Iterator[Issue]:
    """In a file whose tags carry B-/I-/E-/S- prefixes, each tag other than 'O' without one (its first line, a
    warning): it is read as an entity type of its own, almost always a typo ('0' or 'o' for 'O', 'X-LOC')."""
    seen: set[str] = set()
    for i, tags in enumerate(examples.raw_labels or []):
        for position, tag in enumerate(tags):
            if tag in seen or not unprefixed(tag):
                continue
            seen.add(tag)
            meant = "'O'" if tag.upper() in ("O", "0") else \
                "'B-{0}' or 'I-{0}'".format(tag[2:] if len(tag) > 2 and tag[1] in "-_" else tag)
            yield Issue("unprefixed-tag", name, f"tag '{tag}' has no B-/I- prefix while the file's other entity tags "
                        f"have one, so it is read as an entity type of its own; did you mean {meant}? Fix the tag",
                        i, word=position)


# ---- classification: labels that look like another task's ----------------------------------------------------

def _label_set_hint(train: Examples) -> Iterator[Issue]:
    """Labels such as 'drama|comedy' read as classes of their own. '|' (--label-sep's default) is named whenever a
    label holds it; ';' and ',' only when their parts recur (one part in two labels, or alone as a label)."""
    labels = [y for y in train.labels or [] if isinstance(y, str)]
    classes = set(labels)
    for sep in SEPARATORS:
        joined = sorted(c for c in classes if sep in c)
        parts = Counter(p.strip() for c in joined for p in set(c.split(sep)))
        if not joined or (sep != "|" and not any(n > 1 or p in classes for p, n in parts.items())):
            continue
        rows = [i for i, y in enumerate(train.labels or []) if isinstance(y, str) and sep in y]
        yield Issue("label-sets-as-classes", "train", f"{len(rows)} rows ({len(joined)} distinct labels) contain "
                    f"'{sep}' (here '{train.labels[rows[0]]}'): if each row has several labels, pass --task multilabel "
                    f"(--label-sep '{sep}'); read as one class each, they make {len(classes)} classes", rows[0])
        return


def _numbers_hint(train: Examples) -> Iterator[Issue]:
    """Labels that are numbers (as a regression target's are) but for a few rows that are not (NaN, inf, 'n/a'):
    detection reads such a column as classes; or all numbers, some with decimals, that detection left classes."""
    labels = [y for y in train.labels or [] if isinstance(y, str)]
    bad = [i for i, y in enumerate(train.labels or []) if isinstance(y, str) and numeric_target(y) is None]
    numbers = [y for y in labels if numeric_target(y) is not None]
    if not bad and numbers and any(not numeric_target(y).is_integer() for y in numbers):
        yield Issue("numbers-as-classes", "train", f"the labels are all numbers ({len(set(numbers))} distinct, some "
                    "with decimals): pass --task regression if this is a score; read as classes, every distinct "
                    "value is a class of its own", 0)
        return
    if not bad or len(bad) > 0.1 * len(labels) or detect_task(numbers).name != "regression":
        return
    yield Issue("numbers-as-classes", "train", f"'{train.labels[bad[0]]}' is not a finite number, but {len(numbers)} "
                f"of {len(labels)} labels are numbers with {len(set(numbers))} distinct values, as a regression "
                f"target's are: if this is a score, fix or drop the {len(bad)} row(s) without a number and pass --task "
                f"regression; read as classes, every distinct value is a class of its own", bad[0])
