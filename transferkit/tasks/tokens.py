"""Token classification (NER): one IOB2 tag per word, scored per entity with seqeval.

Imports transferkit.core, transferkit.data and transferkit.tasks.base. The batch layout comes from
transferkit.data.token_loader: the backbone's per-token hidden states (``embed_tokens``) are gathered at
``word_rows`` (each word's first sub-word, in the window that predicts it), so the head's output has one row per
word of the batch's sentences, concatenated, and the targets are [words, 2] = (tag id, position of the word in its
sentence). Position 0 starts a sentence: that is how metrics cut the rows back into sentences, and how predict
does it from the words it sent (``split_rows``).

Choices written down here:
- The task holds the tag names (entity F1 needs 'B-PER', not 3): ``TokensTask(tags)``; a task built from a head's
  name alone learns them from the head (``bind``, called by TransferModel), and the head keeps them from its
  builder (the bundle's label names).
- Validation and early stopping use seqeval's default (conlleval) entity micro-F1, the number CoNLL papers report;
  strict IOB2 scores are in the evaluation report (transferkit.evaluate.token_metrics).
- Decoding is per-word argmax; an I-X that follows O reads as the start of an entity (conlleval), so every
  predicted tag sequence has entities without a repair step. An entity's score is the mean probability of its
  words' tags.
- Distillation is KD per word: the KL between the teacher's and the student's softened tag distributions on
  each word's row (its first sub-word), mean over words. Teacher and student read the same batch, so the two
  must tokenize alike (transferkit.strategies.distill.Teacher refuses otherwise) and rows pair up by word; the
  teacher needs the student's tag set. An unlabeled sentence's target is IGNORE for every word.
- The head is dropout + Linear per token with the usual small normal init (not zeros like the classification head:
  a zero head passes no gradient to the backbone on the first steps of a fine-tune).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score
from seqeval.metrics.sequence_labeling import get_entities
from torch import nn

from transferkit.data.conll import word_offsets
from transferkit.tasks.base import Task
from transferkit.tasks.classification import kd_loss

IGNORE = -100


class TokensHead(nn.Module):
    """Per-word logits: hidden states [windows, positions, d] gathered at ``word_rows`` -> [words, tags]."""

    task = "tokens"
    per_token = True

    def __init__(self, in_dim: int, n_outputs: int, dropout: float = 0.0, tags: Sequence[str] = ()):
        super().__init__()
        self.tags = tuple(tags)
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_dim, n_outputs)
        nn.init.normal_(self.linear.weight, std=0.02)
        nn.init.zeros_(self.linear.bias)
        self.register_buffer("class_weight", None, persistent=False)

    def set_class_weight(self, weight: torch.Tensor | None) -> None:
        self.class_weight = None if weight is None else weight.to(self.linear.weight.device, torch.float32)

    def forward(self, hidden: torch.Tensor, word_rows: torch.Tensor | None = None) -> torch.Tensor:
        """Without ``word_rows``: logits at every sub-word position [windows, positions, tags] (the ONNX graph's
        output; transferkit.export.rows gathers the words from it in Python, for either runtime)."""
        if word_rows is None:
            return self.linear(self.dropout(hidden))
        words = hidden.reshape(-1, hidden.shape[-1]).index_select(0, word_rows)
        return self.linear(self.dropout(words))

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), labels[:, 0], weight=self.class_weight, ignore_index=IGNORE)


def split_rows(values: Sequence[Any] | np.ndarray, positions: Sequence[int] | np.ndarray) -> list[list[Any]]:
    """Rows of concatenated sentences -> one list per sentence (a position of 0 starts one)."""
    out: list[list[Any]] = []
    for value, position in zip(values, positions):
        if int(position) == 0 or not out:
            out.append([])
        out[-1].append(value)
    return out


class TokensTask(Task):
    """One tag per word; outputs [words, tags] logits, targets [words, 2] (tag id, position in sentence)."""

    name = "tokens"
    selection_metric = "val_entity_f1"
    metric_names: ClassVar[tuple[str, ...]] = ("entity_f1", "entity_precision", "entity_recall", "token_accuracy")
    row_fields: ClassVar[tuple[str, ...]] = ("tag", "score")
    # Sentences per batch at any data size (TrainConfig's 32 above 1,000 examples is for one label per input): a
    # sentence carries ~20 labelled words, and on WNUT-16 (1,615 training tweets) batches of 32 gave 51 steps an
    # epoch and val entity F1 0.19 after one epoch, 0.42 after four; batches of 8: 0.38 after one, 0.50 after three.
    batch_size: ClassVar[int | None] = 8
    per_word = True

    def __init__(self, tags: Sequence[str] = ()):
        self.tags = tuple(tags)

    def bind(self, head: nn.Module) -> None:
        """Take the tag names from ``head`` when this task was built without them."""
        if not self.tags:
            self.tags = tuple(getattr(head, "tags", ()))

    def head(self, feature_dim: int, n_outputs: int, dropout: float = 0.0, names: Sequence[str] = (),
             **options: Any) -> TokensHead:
        """A fresh head; ``names`` are the tag names (the label map's, or the bundle's labels)."""
        tags = tuple(names) or self.tags
        if tags and len(tags) != n_outputs:
            raise ValueError(f"{len(tags)} tag names for {n_outputs} outputs")
        self.tags = tags
        return TokensHead(feature_dim, n_outputs, dropout, tags)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs.float(), targets[:, 0], ignore_index=IGNORE)

    def probabilities(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.float().softmax(-1)

    def decode(self, outputs: Any) -> Any:
        return outputs.argmax(1)

    def distill_loss(self, student: torch.Tensor, teacher: torch.Tensor, temperature: float,
                     head: nn.Module) -> torch.Tensor:
        return kd_loss(student, teacher, temperature)

    def labeled(self, targets: torch.Tensor) -> torch.Tensor:
        return targets[:, 0] != IGNORE

    def missing_target(self, example: Any, n_outputs: int) -> list[int]:
        return [IGNORE] * len(example)

    def tag_sequences(self, ids: Sequence[int] | np.ndarray, positions: Sequence[int] | np.ndarray) -> list[list[str]]:
        """Tag ids of concatenated sentences -> tag names per sentence."""
        if not self.tags:
            raise ValueError("a tokens task needs its tag names (TokensTask(tags) or a head that has them)")
        return split_rows([self.tags[int(i)] for i in ids], positions)

    def metrics(self, targets: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
        """seqeval's default-mode entity micro precision/recall/F1 and the token accuracy."""
        gold = self.tag_sequences(targets[:, 0], targets[:, 1])
        guess = self.tag_sequences(predictions, targets[:, 1])
        return {"entity_f1": float(f1_score(gold, guess, zero_division=0)),
                "entity_precision": float(precision_score(gold, guess, zero_division=0)),
                "entity_recall": float(recall_score(gold, guess, zero_division=0)),
                "token_accuracy": float(accuracy_score(gold, guess))}

    def response(self, scores: np.ndarray, names: tuple[str, ...] | list[str], top_k: int | None = None,
                 digits: int | None = None) -> list[dict[str, Any]]:
        """One {"tag", "score"} per word row (``sentence_response`` groups them into sentences)."""
        best = scores.argmax(1) if len(scores) else np.zeros(0, int)
        return [{"tag": names[int(b)], "score": _number(row[int(b)], digits)} for row, b in zip(scores, best)]

    def sentence_response(self, text: str, words: Sequence[str], scores: np.ndarray,
                          names: Sequence[str], digits: int | None = None) -> dict[str, Any]:
        """One sentence: its words, their tags and the entities {text, type, start, end, score} with character
        offsets into ``text`` (the raw line the words were cut from, or the words joined by spaces)."""
        rows = self.response(scores, tuple(names), digits=digits)
        tags = [row["tag"] for row in rows]
        offsets = word_offsets(text, words)
        entities = []
        for kind, first, last in get_entities(tags):
            start, end = offsets[first][0], offsets[last][1]
            score = float(np.mean([rows[i]["score"] for i in range(first, last + 1)]))
            entities.append({"text": text[start:end], "type": kind, "start": start, "end": end,
                             "score": _number(score, digits)})
        return {"text": text, "words": list(words), "tags": tags, "entities": entities}

    def agreement(self, check: dict[str, Any], spec: str = ".1%") -> str:
        """Compared per word: the logits at each word's first sub-word and the tag decoded from them."""
        words = f" of {check['n_words']:,} words" if "n_words" in check else " of words"
        return (f"max |logit diff| {check['max_abs_diff']:.1e}, same tag on {format(check['top1_agreement'], spec)}"
                f"{words}")

    def int8_cost(self, accuracy: dict[str, Any]) -> str:
        return (f"word-tag accuracy {accuracy['accuracy_fp32']:.4f} -> {accuracy['accuracy_int8']:.4f}, entity F1 "
                f"{accuracy['entity_f1_fp32']:.4f} -> {accuracy['entity_f1_int8']:.4f} on {accuracy['n']} "
                f"{accuracy['split']} sentences")


def _number(value: Any, digits: int | None) -> float:
    return round(float(value), digits) if digits is not None else float(value)
