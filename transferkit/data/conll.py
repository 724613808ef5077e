"""Token-classification data: CoNLL-style files and JSONL with ``tokens`` + ``tags`` lists -> Examples.

Imports only transferkit.core and transferkit.data. One sentence is one example: ``inputs`` holds its list of
words and ``labels`` its list of tags (None for unlabeled files), so splits, subsets and fingerprints treat a
sentence as the unit. Its id is the words joined by single spaces: character offsets of predicted entities
refer to that text (``word_offsets``), or to the raw line a word list was cut from (``split_words``).

Choices written down here:
- CoNLL: one token per line, the tag in the LAST column (CoNLL-2003's ``word POS chunk NER`` works as is), tab-
  or space-separated (a file with tabs splits on tabs only, so a token may hold spaces there). A blank or
  whitespace-only line ends a sentence (WNUT-16 separates tweets with a lone tab); ``-DOCSTART-`` lines (known
  by their first whitespace-separated token, so ``-DOCSTART- O`` in a tab file too) are skipped. A line whose
  column count differs from the file's majority is an error naming file:line: it is almost always a token that
  contains the separator or a missing tag, and guessing would shift every tag after it.
  A file whose lines all hold one column is unlabeled (words to tag).
- Tag schemes are detected per file and normalised to IOB2 (what seqeval and the head use): IOBES/BIOES (and
  BILOU) by their E-/S- (L-/U-) prefixes; IOB1 when an entity starts with I- and no B- starts an entity; IO (bare
  types) as IOB1. An I-X that cannot continue the tag before it (``I-PER`` after ``B-LOC`` or ``O``) in an IOB2
  file starts a new entity, as conlleval reads it; ``strict=True`` refuses it instead, with file:line.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from transferkit.core.errors import DataError
from transferkit.data.examples import Examples

_PREFIX_MAP = {"L": "E", "U": "S"}  # BILOU -> BIOES


def read_conll(path: str | Path, labeled: bool = True, strict: bool = False) -> Examples:
    """Sentences of a CoNLL-style file (see the module docstring for the rules)."""
    path = Path(path)
    rows = _conll_rows(path)
    if not any(cols for _, cols in rows):
        raise DataError(f"{path}: no tokens found; a CoNLL file has one token per line and a blank line between "
                        "sentences.")
    width = Counter(len(cols) for _, cols in rows if cols).most_common(1)[0][0]
    bad = [(n, cols) for n, cols in rows if cols and len(cols) != width]
    if bad:
        n, cols = bad[0]
        raise DataError(f"{path}:{n}: {len(cols)} column(s) where {width} is the file's "
                        f"majority ({len(bad)} such line(s)): each line holds one token and its tag in the last "
                        "column; fix the line (a token holding a space needs tab separators).")
    words, tags, lines, current = [], [], [], []
    for n, cols in rows + [(0, [])]:
        if cols:
            current.append((n, cols))
            continue
        if current:
            words.append([c[0] for _, c in current])
            tags.append([c[-1] for _, c in current] if width > 1 else [])
            lines.append(current[0][0])
            current = []
    if width == 1 and labeled:
        raise DataError(f"{path}: one column per line, so no tags to learn from: put each token's tag in the "
                        "last column (e.g. 'Paris<TAB>B-LOC').")
    labels = normalise_tags(tags, path, lines, strict, line_per_token=True) if width > 1 else None
    return Examples("text", words, labels, str(path), lines=lines, raw_labels=mixed_prefixes(tags))


def _conll_rows(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, columns) per token line, with one ``(n, [])`` break between sentences."""
    with open(path, encoding="utf-8-sig") as fh:
        lines = [raw.rstrip("\r\n") for raw in fh]
    tabbed = any("\t" in line for line in lines if line.strip())
    rows: list[tuple[int, list[str]]] = []
    for n, line in enumerate(lines, 1):
        cols = ([c.strip() for c in line.split("\t")] if tabbed else line.split()) if line.strip() else []
        if cols and line.split()[0] == "-DOCSTART-":  # '-DOCSTART- O' in a tab file too
            cols = []
        if cols or (rows and rows[-1][1]):
            rows.append((n, cols))
    return rows


def read_token_jsonl(path: str | Path, labeled: bool = True, strict: bool = False) -> Examples:
    """One JSON object per line with a ``tokens`` list and a ``tags`` (or ``ner_tags``) list of tag names."""
    path = Path(path)
    words, tags, lines = [], [], []
    with open(path, encoding="utf-8-sig") as fh:
        for n, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{n}: not valid JSON ({exc.msg}); write one object per line.") from None
            tokens = row.get("tokens") if isinstance(row, dict) else None
            if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
                raise DataError(f"{path}:{n}: 'tokens' must be a non-empty list of strings; got {tokens!r:.60}.")
            row_tags = row.get("tags", row.get("ner_tags"))
            if row_tags is not None:
                if not isinstance(row_tags, list) or not all(isinstance(t, str) for t in row_tags):
                    raise DataError(f"{path}:{n}: 'tags' must be a list of tag names such as 'B-PER' (numbers need "
                                    "the dataset's names list: write the names).")
                if len(row_tags) != len(tokens):
                    raise DataError(f"{path}:{n}: {len(tokens)} tokens but {len(row_tags)} tags; give one tag per "
                                    "token.")
            elif labeled:
                raise DataError(f"{path}:{n}: no 'tags' list; give one tag per token (or predict on the file).")
            words.append(tokens)
            tags.append(row_tags)
            lines.append(n)
    if not words:
        raise DataError(f"{path}: no rows; write one JSON object with 'tokens' and 'tags' lists per line.")
    has_tags = all(t is not None for t in tags)
    labels = normalise_tags(tags, path, lines, strict) if has_tags else None
    return Examples("text", words, labels, str(path), lines=lines, raw_labels=mixed_prefixes(tags) if has_tags else None)


def read_raw_lines(path: str | Path) -> Examples:
    """Unlabeled raw text, one sentence per line: words cut by ``split_words``, the id is the line. Every line is
    an input, so predictions line up with the file's lines: a blank or space-only line has no words (its row has
    no tags, no entities)."""
    path = Path(path)
    words, ids, lines = [], [], []
    with open(path, encoding="utf-8-sig", newline="") as fh:
        for n, raw in enumerate(fh, 1):
            text = raw.rstrip("\r\n")
            words.append(split_words(text))
            ids.append(text)
            lines.append(n)
    if not any(words):
        raise DataError(f"{path}: no text lines to tag.")
    return Examples("text", words, None, str(path), ids=ids, lines=lines)


def read_token_file(path: str | Path, labeled: bool = True, strict: bool = False) -> Examples:
    """A token-classification file: JSONL with ``tokens``, else CoNLL; unlabeled (``labeled=False``) .txt that is
    not CoNLL is raw text, one sentence per line."""
    path = Path(path)
    if path.suffix.lower() == ".jsonl":
        return read_token_jsonl(path, labeled, strict)
    if not labeled and path.suffix.lower() == ".txt" and not is_token_file(path):
        return read_raw_lines(path)
    return read_conll(path, labeled, strict)


def is_token_file(path: str | Path) -> bool:
    """A CoNLL-style file (.conll/.conllu/.bio/.iob, or a .txt/.tsv whose first lines are 'token<sep>TAG') or a
    JSONL whose first row has a ``tokens`` list."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        try:
            with open(path, encoding="utf-8-sig") as fh:
                first = next((line for line in fh if line.strip()), "")
            return isinstance(row := json.loads(first), dict) and isinstance(row.get("tokens"), list)
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            return False
    if suffix in (".conll", ".conllu", ".bio", ".iob"):
        return True
    if suffix not in (".txt", ".tsv"):
        return False
    try:
        with open(path, encoding="utf-8-sig") as fh:
            head = [line.strip() for _, line in zip(range(50), fh)]
    except (OSError, UnicodeDecodeError):
        return False
    cols = [line.split() for line in head if line and not line.startswith("-DOCSTART-")]
    return bool(cols) and all(len(c) >= 2 and _looks_like_tag(c[-1]) for c in cols)


def _looks_like_tag(tag: str) -> bool:
    return tag == "O" or bool(re.fullmatch(r"[BIESLU]-\S+", tag))


@dataclass(frozen=True)
class TagMap:
    """Tag name <-> index for token classification: 'O', then B- and I- of every entity type (both, even when the
    data has only one of them, so any IOB2 tag of a known type can be scored and predicted), by type. The bundle
    saves ``names`` as its labels. ``encode`` maps each sentence's tags to indices."""

    names: tuple[str, ...]

    @classmethod
    def from_labels(cls, sequences: Iterable[Sequence[str] | None], source: str,
                    also: Iterable[Sequence[str] | None] = ()) -> TagMap:
        """The tags of ``sequences`` (training), plus the types only ``also`` (validation/test) has: the model
        never predicts those, and their entities count as missed rather than stopping the run."""
        types = {t[2:] for seq in sequences if seq for t in seq if t != "O"}
        if not types:
            raise DataError(f"{source}: every token is tagged 'O'; token classification needs entity tags such as "
                            "B-PER/I-PER on some tokens.")
        types |= {t[2:] for seq in also if seq for t in seq if t != "O"}
        return cls(("O", *(f"{p}-{kind}" for kind in sorted(types) for p in "BI")))

    def __len__(self) -> int:
        return len(self.names)

    def encode(self, sequences: Sequence[Sequence[str] | None], source: str = "data") -> list[list[int]]:
        index = {n: i for i, n in enumerate(self.names)}
        unknown = sorted({t for seq in sequences if seq is not None for t in seq} - set(index))
        if unknown:
            raise DataError(f"{source}: tag(s) {', '.join(repr(u) for u in unknown[:5])} are not among the model's "
                            f"tags ({', '.join(self.names)}); the model cannot score an entity type it never saw. "
                            "Use data with the same tag set (or map those tags to 'O').")
        return [[index[t] for t in seq] if seq is not None else [] for seq in sequences]


# ---- tag schemes ----------------------------------------------------------------------------------------------
_PREFIXED = re.compile(r"[BIESLU][-_]\S+")


def unprefixed(tag: str) -> bool:
    """A tag other than 'O' without a B-/I-/E-/S-/L-/U- prefix: an entity type of its own in the IO scheme, and a
    likely typo ('0', 'o', 'X-LOC') in a file whose other tags carry prefixes."""
    return tag != "O" and not _PREFIXED.fullmatch(tag)


def mixed_prefixes(sequences: Sequence[Sequence[str]]) -> list[list[str]] | None:
    """``sequences`` (the tags as written) when they mix prefixed tags and ``unprefixed`` ones, else None: what
    ``Examples.raw_labels`` keeps for the doctor (a warning per such tag; they still read as entity types)."""
    tags = {t for seq in sequences for t in seq}
    if any(unprefixed(t) for t in tags) and any(t != "O" and not unprefixed(t) for t in tags):
        return [list(seq) for seq in sequences]
    return None


def _split(tag: str) -> tuple[str, str]:
    """'B-PER' -> ('B', 'PER'); 'O' -> ('O', ''); a bare type 'PER' (IO scheme) -> ('I', 'PER')."""
    if tag == "O":
        return "O", ""
    if len(tag) > 2 and tag[1] in "-_" and tag[0] in "BIESLU":
        return _PREFIX_MAP.get(tag[0], tag[0]), tag[2:]
    return "I", tag


def detect_scheme(sequences: Sequence[Sequence[str]]) -> str:
    """'IOBES', 'IOB1' or 'IOB2' for these tag sequences (see the module docstring)."""
    prefixes = {_split(t)[0] for seq in sequences for t in seq}
    if prefixes & {"E", "S"}:
        return "IOBES"
    i_starts = b_starts = 0
    for seq in sequences:
        previous = ("O", "")
        for tag in seq:
            prefix, kind = _split(tag)
            if prefix == "I" and (previous[0] == "O" or previous[1] != kind):
                i_starts += 1
            if prefix == "B" and (previous[0] == "O" or previous[1] != kind):
                b_starts += 1
            previous = (prefix, kind)
    return "IOB1" if i_starts and not b_starts else "IOB2"


def to_iob2(tags: Sequence[str], scheme: str) -> tuple[list[str], int | None]:
    """``tags`` in IOB2, and the index of the first I- tag that had to start an entity where ``scheme`` does not
    allow that (IOB2, IOBES; None when none did)."""
    out: list[str] = []
    repaired = None
    previous = ("O", "")
    for i, tag in enumerate(tags):
        prefix, kind = _split(tag)
        prefix = {"S": "B", "E": "I"}.get(prefix, prefix)
        if prefix == "I" and (previous[0] == "O" or previous[1] != kind):
            prefix = "B"
            if scheme != "IOB1" and repaired is None:
                repaired = i
        out.append("O" if prefix == "O" else f"{prefix}-{kind}")
        previous = (prefix, kind)
    return out, repaired


def normalise_tags(sequences: list[list[str]], path: str | Path, lines: list[int], strict: bool,
                   line_per_token: bool = False) -> list[list[str]]:
    """Every sequence in IOB2; in strict mode an I- tag that cannot continue its entity (IOB2, IOBES) is an error.
    ``lines``: each sequence's first line (``line_per_token``: its tokens follow on the next lines)."""
    scheme = detect_scheme(sequences)
    out = []
    for seq, first_line in zip(sequences, lines):
        tags, repaired = to_iob2(seq, scheme)
        if strict and repaired is not None:
            before = repr(seq[repaired - 1]) if repaired else "the sentence start"
            line = first_line + repaired if line_per_token else first_line
            raise DataError(f"{path}:{line}: tag '{seq[repaired]}' follows {before}: in {scheme} an entity starts "
                            f"with B-; write 'B-{_split(seq[repaired])[1]}' there (or drop --strict to read it as "
                            "the start of an entity, as conlleval does).")
        out.append(tags)
    return out


# ---- words and character offsets -----------------------------------------------------------------------------
_WORD = re.compile(r"[@#]?\w+(?:['’.\-]\w+)*|\S")


def split_words(text: str) -> list[str]:
    """Raw text -> words: runs of letters/digits (with inner ' . - and a leading @ or #), each other symbol alone."""
    return _WORD.findall(text)


def word_offsets(text: str, words: Sequence[str]) -> list[tuple[int, int]]:
    """(start, end) character offsets of each word in ``text``, found left to right (words absent from the text,
    e.g. after normalisation, get the offsets of where they would be: an empty span at the search position)."""
    offsets, position = [], 0
    for word in words:
        start = text.find(word, position)
        if start < 0:
            offsets.append((position, position))
            continue
        offsets.append((start, start + len(word)))
        position = start + len(word)
    return offsets
