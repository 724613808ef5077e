"""Batches for token classification: words -> sub-word windows, and the rows that carry one prediction per word.

Imports only transferkit.core and transferkit.data. A sentence is tokenized word by word (``is_split_into_words``;
``word_ids`` groups the sub-words); a word the tokenizer drops entirely becomes the unknown token, so every word
has a first sub-word. The label goes on that first sub-word; the model reads the hidden state there and nowhere
else, which is the same as labelling the other sub-words -100.

Sentences longer than the backbone's limit are cut into overlapping windows of whole words (``plan_windows``),
never truncated: each word is predicted once, from the window where it sits furthest from an edge (most left
and right context). The batch says which hidden state answers for which word with ``word_rows``: indices into
the flattened [windows * positions] hidden states, in sentence order, one per word, so a model's output has one
row per word of the batch's sentences, concatenated. Labels are [words, 2]: the tag id and the word's position
in its sentence (0 starts a sentence), which is all entity-level scoring needs to cut the rows back into
sentences. A single word longer than a window keeps its first sub-words only (its label sits on the first).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from transferkit.data.examples import Examples
from transferkit.data.loaders import EpochSampler
from transferkit.data.preprocess import PreprocessSpec, load_tokenizer

IGNORE = -100


@dataclass(frozen=True)
class Window:
    start: int  # first word in the window
    end: int  # one past the last word
    owned: tuple[int, ...]  # the words this window predicts


def plan_windows(lengths: Sequence[int], budget: int, overlap: int) -> list[Window]:
    """Cover words of ``lengths`` sub-words with windows of at most ``budget`` sub-words that share up to
    ``overlap`` sub-words with the previous one; every word is owned by exactly one window (see module doc)."""
    if budget < 1:
        raise ValueError(f"a window needs room for at least one sub-word; got budget {budget}")
    sizes = [min(max(n, 1), budget) for n in lengths]
    spans: list[tuple[int, int]] = []
    start = 0
    while start < len(sizes):
        end, used = start, 0
        while end < len(sizes) and used + sizes[end] <= budget:
            used, end = used + sizes[end], end + 1
        spans.append((start, end))
        if end == len(sizes):
            break
        nxt, back = end, 0
        while nxt - 1 > start and back + sizes[nxt - 1] <= overlap:
            nxt, back = nxt - 1, back + sizes[nxt - 1]
        start = nxt
    cumulative = [0, *accumulate(sizes)]
    owner: dict[int, int] = {}
    best: dict[int, int] = {}
    for k, (s, e) in enumerate(spans):
        for w in range(s, e):
            centrality = min(cumulative[w] - cumulative[s], cumulative[e] - cumulative[w + 1])
            if w not in best or centrality > best[w]:
                owner[w], best[w] = k, centrality
    return [Window(s, e, tuple(w for w in range(s, e) if owner[w] == k)) for k, (s, e) in enumerate(spans)]


class TokenDataset(Dataset):
    def __init__(self, examples: Examples, targets: list[list[int]] | None):
        self.examples, self.targets = examples, targets

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item: dict[str, Any] = {"words": self.examples.inputs[i], "index": i}
        if self.targets is not None:
            item["labels"] = self.targets[i]
        return item


class TokenCollator:
    """Sentences -> padded windows plus ``word_rows`` (and [words, 2] ``labels`` when the items carry tags)."""

    def __init__(self, spec: PreprocessSpec, overlap: int | None = None):
        self.tokenizer = load_tokenizer(spec)
        self.prefix, self.suffix = _special_tokens(self.tokenizer)
        self.budget = spec.max_length - len(self.prefix) - len(self.suffix)
        self.overlap = self.budget // 4 if overlap is None else overlap

    def pieces(self, sentences: list[list[str]]) -> list[list[list[int]]]:
        """Per sentence, per word: its sub-word ids (the unknown token for a word that makes none)."""
        encoded = self.tokenizer(sentences, is_split_into_words=True, add_special_tokens=False, truncation=False,
                                 verbose=False)
        out = []
        for i, words in enumerate(sentences):
            groups: list[list[int]] = [[] for _ in words]
            for token, word in zip(encoded["input_ids"][i], encoded.word_ids(i)):
                if word is not None:
                    groups[word].append(token)
            out.append([g[:self.budget] or [self.tokenizer.unk_token_id] for g in groups])
        return out

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        sequences, index = [], []
        rows: list[tuple[int, int]] = []  # per word, in sentence order: (window, position of its first piece)
        labels: list[tuple[int, int]] = []
        for item, words in zip(items, self.pieces([list(it["words"]) for it in items])):
            owned: dict[int, tuple[int, int]] = {}
            for window in plan_windows([len(p) for p in words], self.budget, self.overlap):
                ids, starts = [], {}
                for w in range(window.start, window.end):
                    starts[w] = len(ids)
                    ids += words[w]
                owned.update({w: (len(sequences), starts[w] + len(self.prefix)) for w in window.owned})
                sequences.append(self.prefix + ids + self.suffix)
                index.append(item["index"])
            rows += [owned[w] for w in range(len(words))]
            if "labels" in item:
                labels += [(tag, position) for position, tag in enumerate(item["labels"])]
        batch = dict(self.tokenizer.pad({"input_ids": sequences}, return_tensors="pt"))
        width = batch["input_ids"].shape[1]
        batch["word_rows"] = torch.tensor([k * width + pos for k, pos in rows], dtype=torch.long)
        batch["index"] = torch.tensor(index)
        if labels:
            batch["labels"] = torch.tensor(labels, dtype=torch.long).reshape(-1, 2)
        return batch


def _special_tokens(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after one sequence ([CLS] and [SEP] for BERT), read off how it
    encodes a word with and without them."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    for shift in range(len(full) - len(plain) + 1):
        if full[shift:shift + len(plain)] == plain:
            return full[:shift], full[shift + len(plain):]
    raise ValueError("the tokenizer's special tokens split a word's pieces; cannot place per-word labels")


def make_token_loader(examples: Examples, spec: PreprocessSpec, targets: list[list[int]] | None, batch_size: int,
                      shuffle_seed: int | None = None) -> DataLoader:
    """A loader over sentences (``targets``: tag ids per word, or None to predict); see TokenCollator."""
    sampler = EpochSampler(len(examples), shuffle_seed) if shuffle_seed is not None else None
    return DataLoader(TokenDataset(examples, targets), batch_size=batch_size, sampler=sampler,
                      generator=torch.Generator().manual_seed(0), collate_fn=TokenCollator(spec), num_workers=0)
