"""The token-classification report: entity-level precision/recall/F1 per type and averaged, with seqeval.

Imports transferkit.tasks (to cut the concatenated word rows back into sentences). Targets are [words, 2]
(tag id, position in sentence) and predictions [words] tag ids, as transferkit.tasks.tokens lays them out.

Two modes, as seqeval has them: ``default`` is conlleval's (an I-X after O or another type starts an entity; the
number CoNLL papers report, and the headline ``entity_*`` keys), ``strict`` scores IOB2 chunks exactly (such an
entity does not count). ``per_type`` is the CoNLL paper table (precision, recall, F1, support = gold entities);
``macro_*`` average it over the types; ``type_confusion`` counts, per gold entity, the type of the predicted
entity with exactly the same span ('-' when no predicted entity has that span).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
from seqeval.metrics import accuracy_score, classification_report
from seqeval.metrics.sequence_labeling import get_entities
from seqeval.scheme import IOB2

from transferkit.tasks.tokens import TokensTask


def token_report(y_true: np.ndarray, y_pred: np.ndarray, label_names: Sequence[str],
                 scores: np.ndarray | None = None) -> dict[str, Any]:
    """The report of REPORTS["tokens"] (see the module docstring); ``scores`` are not used."""
    task = TokensTask(label_names)
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    gold = task.tag_sequences(y_true[:, 0], y_true[:, 1]) if len(y_true) else []
    guess = task.tag_sequences(y_pred, y_true[:, 1]) if len(y_true) else []
    return sequence_report(gold, guess)


def sequence_report(gold: Sequence[Sequence[str]], guess: Sequence[Sequence[str]]) -> dict[str, Any]:
    """The same report from IOB2 tag names per sentence (what a model outside transferkit, e.g. the CRF reference
    of transferkit.evaluate.baselines, predicts)."""
    gold, guess = [list(s) for s in gold], [list(s) for s in guess]
    out: dict[str, Any] = {"n": len(gold), "n_words": sum(len(s) for s in gold)}
    if not gold:
        return out
    default = _entity_scores(gold, guess, strict=False)
    out.update({f"entity_{k}": v for k, v in default["micro"].items() if k != "support"})
    out["token_accuracy"] = float(accuracy_score(gold, guess))
    out.update({f"macro_{k}": v for k, v in default["macro"].items() if k != "support"})
    out["n_entities"] = int(default["micro"]["support"])
    out["per_type"] = default["per_type"]
    strict = _entity_scores(gold, guess, strict=True)
    out["strict"] = {f"entity_{k}": v for k, v in strict["micro"].items() if k != "support"}
    out["strict"]["per_type"] = strict["per_type"]
    out["type_confusion"] = type_confusion(gold, guess)
    return out


def _entity_scores(gold: list[list[str]], guess: list[list[str]], strict: bool) -> dict[str, Any]:
    options: dict[str, Any] = {"mode": "strict", "scheme": IOB2} if strict else {}
    report = classification_report(gold, guess, output_dict=True, zero_division=0, **options)
    rename = {"precision": "precision", "recall": "recall", "f1-score": "f1", "support": "support"}

    def row(values: dict[str, Any]) -> dict[str, float]:
        return {new: (int(values[old]) if new == "support" else float(values[old])) for old, new in rename.items()}

    averages = {"micro avg", "macro avg", "weighted avg"}
    per_type = {kind: row(values) for kind, values in report.items() if kind not in averages}
    empty = {"precision": 0.0, "recall": 0.0, "f1-score": 0.0, "support": 0}
    return {"micro": row(report.get("micro avg", empty)), "macro": row(report.get("macro avg", empty)),
            "per_type": per_type}


def type_confusion(gold: list[list[str]], guess: list[list[str]]) -> dict[str, dict[str, int]]:
    """gold type -> {predicted type of the same span, or '-'} -> count."""
    table: dict[str, Counter[str]] = {}
    for g, p in zip(gold, guess):
        predicted = {(start, end): kind for kind, start, end in get_entities(p)}
        for kind, start, end in get_entities(g):
            table.setdefault(kind, Counter())[predicted.get((start, end), "-")] += 1
    return {kind: dict(sorted(counts.items())) for kind, counts in sorted(table.items())}
