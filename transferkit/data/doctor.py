"""The data doctor: finds what would silently hurt a run and names it, before any training starts.

Imports only transferkit.core and transferkit.data. Trusted tools fail quietly here (timm substitutes another
sample for a file it cannot open; a single mislabelled folder or a test image copied into train inflates every
metric), so every finding names a file (and line, for text rows), a kind and a sentence with the fix. Kinds:

- folders: ``unexpected-file`` (not an image, or an image outside the class folders: not read),
  ``unexpected-folder`` (a sub-folder read as its class, a folder beside the splits); files an OS leaves behind
  are only counted (transferkit.data.folders).
- images: ``empty-file``, ``unreadable-image`` (corrupt, truncated, not an allowed format), ``image-too-large``
  (over the memory cap, or a decompression bomb; decided from the header), ``wrong-extension`` (decodes, but is
  not what its name says), ``missing-image`` (a table's row names a file that does not exist). Images listed in a
  table (transferkit.data.image_tables) are named by the table's file and line, and the path as written.
  Unusable images are *left out* of the run: the report lists them (``skipped``: path, kind, reason), counts them
  (``n_skipped``) and ``DataReport.apply`` drops them; ``diagnose_inputs`` runs only these per-input checks, for
  `evaluate`, so every command leaves out the same files.
- audio (transferkit.data.audio_checks): ``empty-file``, ``unreadable-audio``, ``missing-audio`` (left out like
  unusable images), ``silent-audio``, ``wrong-extension``, ``short-audio``/``long-audio`` against
  ``clip_seconds``, ``mixed-sample-rates``/``mixed-channels``; duplicates by audio fingerprint (below).
- labels: ``no-examples``, ``single-class``, ``small-class`` (fewer than a validation split needs),
  ``empty-class``, ``similar-class-names`` (case/space/plural/one edit), ``imbalance``, ``unknown-label``, and
  the hints of transferkit.data.task_checks (labels that look like label sets or numbers); regression, multi-label
  and tokens (``task``) have their own label checks there (``bad-target``, ``constant-target``, ``no-labels``,
  ``empty-tags``, ``unseen-tag``, ...).
- text: ``non-utf8`` (file and line; the source is read with U+FFFD in place, and the bytes are counted),
  ``empty-text``, ``long-text`` (over the backbone's token limit: counted with ``DoctorConfig.count_tokens``, the
  backbone's tokenizer, else estimated by ``fingerprints.estimated_tokens``, which counts CJK/Thai by character).
- leakage: ``duplicate`` (same content within a split), ``leakage`` (same content in two splits),
  ``near-duplicate`` (across splits; see transferkit.data.fingerprints). ``dedupe`` drops the later copy.

Findings are warnings unless the run cannot go on (``fatal``); ``strict`` makes every finding fatal.
"""
from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from transferkit.core.errors import ConfigError, DataError
from transferkit.data.audio_checks import AudioInfo, audio_infos, audio_issues, near_audio_pairs
from transferkit.data.examples import DataSplits, Examples
from transferkit.data.fingerprints import (
    ImageInfo,
    estimated_tokens,
    extension_mismatch,
    image_infos,
    near_images,
    near_text_pairs,
    text_sha256,
)
from transferkit.data.folders import FolderListing, folder_report
from transferkit.data.image_tables import missing_image_message
from transferkit.data.images import DEFAULT_MAX_PIXELS
from transferkit.data.names import similar_names
from transferkit.data.tables import invalid_utf8
from transferkit.data.task_checks import task_issues

SPLITS = ("train", "val", "test")
FATAL, WARNING = "fatal", "warning"
_SPECIAL_TOKENS = 8  # tokens a tokenizer adds around a text ([CLS] ... [SEP]), with room to spare
_NEAR_CANDIDATES = 64  # earlier images compared per perceptual-hash bucket: bounds the cost on low-detail data


@dataclass(frozen=True)
class DoctorConfig:
    strict: bool = False  # every finding is fatal
    dedupe: bool = False  # leave out later copies of duplicates and near-duplicates
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_tokens: int | None = None  # the text backbone's limit; None skips the length check
    count_tokens: Callable[[Sequence[str]], list[int]] | None = None  # its tokenizer's counts; None: estimated
    imbalance_warning: float = 10.0  # largest/smallest class ratio that is worth a finding
    near_duplicates: bool = True
    needs_val_split: bool | None = None  # None: when the data has no val split of its own
    task: str = "classification"  # regression checks targets (numbers, not constant), tokens tags, not classes
    hints: bool = True  # classification: say when labels look like label sets or numbers (fit: task not given)
    clip_seconds: float | None = None  # audio: the length clips are cut or padded to; None: PreprocessSpec's

    def __post_init__(self) -> None:
        if not isinstance(self.max_pixels, int) or self.max_pixels < 1:
            raise ConfigError(f"The 'max_pixels' parameter must be an int >= 1. Got {self.max_pixels!r} instead.")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ConfigError(f"The 'max_tokens' parameter must be None or >= 1. Got {self.max_tokens!r} instead.")


@dataclass(frozen=True)
class Finding:
    kind: str
    path: str
    message: str
    severity: str = WARNING
    line: int | None = None
    split: str | None = None

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}" if self.line is not None else self.path

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class DataReport:
    """The findings, and which examples (by split and index) a run leaves out."""

    findings: list[Finding]
    sizes: dict[str, int]
    unreadable: dict[str, list[int]]
    duplicates: dict[str, list[int]]
    config: DoctorConfig = field(default_factory=DoctorConfig)
    stats: dict[str, Any] = field(default_factory=dict)
    left_out_ids: dict[str, list[str]] = field(default_factory=dict)
    reasons: dict[str, dict[int, tuple[str, str]]] = field(default_factory=dict)  # split -> index -> (kind, why)

    @property
    def fatal(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == FATAL]

    def left_out(self, split: str) -> list[int]:
        dropped = set(self.unreadable.get(split, []))
        if self.config.dedupe:
            dropped |= set(self.duplicates.get(split, []))
        return sorted(dropped)

    @property
    def n_skipped(self) -> int:
        return sum(len(self.left_out(s)) for s in self.sizes)  # train/val/test, or any parts checked

    def skipped(self) -> list[dict[str, str]]:
        """Each input a run leaves out: split, path (file:line for text rows), kind and reason."""
        found = []
        for s in self.sizes:
            for i in self.left_out(s):
                kind, reason = self.reasons.get(s, {}).get(i, ("", ""))
                found.append({"split": s, "path": self.left_out_ids[s][i], "kind": kind, "reason": reason})
        return found

    def apply(self, splits: DataSplits) -> DataSplits:
        """The same splits without the examples the report leaves out (unreadable; duplicates with dedupe)."""
        parts: dict[str, Examples | None] = {}
        for name in SPLITS:
            examples = splits.get(name)
            if examples is not None and len(examples) != self.sizes.get(name):
                raise ValueError(f"the report was made for {self.sizes.get(name)} {name} examples, not {len(examples)}")
            drop = set(self.left_out(name))
            parts[name] = None if examples is None else \
                examples.subset([i for i in range(len(examples)) if i not in drop])
            if parts[name] is not None:  # the loaders decode with the cap the checks used
                parts[name].max_pixels = self.config.max_pixels
        return DataSplits(**parts)

    def raise_if_fatal(self) -> None:
        fatal = self.fatal
        if not fatal:
            return
        shown = "; ".join(f"{f.where}: {f.message}" for f in fatal[:3])
        more = f" (and {len(fatal) - 3} more)" if len(fatal) > 3 else ""
        strict = " --strict makes every finding fatal." if self.config.strict else ""
        raise DataError(f"The data doctor found {len(fatal)} fatal problem(s): {shown}{more}. Fix the data, or list "
                        f"every finding with `transferkit doctor --data SRC`.{strict}")

    def to_dict(self) -> dict[str, Any]:
        by_kind = Counter(f.kind for f in self.findings)
        return {"fatal": len(self.fatal), "warnings": len(self.findings) - len(self.fatal),
                "by_kind": dict(sorted(by_kind.items())), "strict": self.config.strict, "dedupe": self.config.dedupe,
                "sizes": self.sizes, "n_skipped": self.n_skipped,
                "left_out": {s: [self.left_out_ids[s][i] for i in self.left_out(s)] for s in self.sizes},
                "skipped": self.skipped(),
                "stats": self.stats, "findings": [f.to_dict() for f in self.findings]}


def diagnose(splits: DataSplits, config: DoctorConfig = DoctorConfig()) -> DataReport:
    """Check every split of ``splits`` (each image fully decoded once); the report says what a run would drop."""
    return _Doctor(config).run({name: splits.get(name) for name in SPLITS if splits.get(name) is not None})


def diagnose_inputs(parts: dict[str, Examples], config: DoctorConfig = DoctorConfig()) -> DataReport:
    """Only the checks of each input on its own (unreadable or refused images, wrong extensions, bad bytes, empty
    and long texts), for splits scored without training data (``evaluate``); labels and leakage are not checked.

    ``diagnose`` runs these same checks first, so every command leaves out, names and counts the same files.
    """
    return _Doctor(config).run(parts, inputs_only=True)


def locate(examples: Examples, i: int) -> tuple[str, int | None]:
    """(path, line) naming example ``i``: the image or audio file, or the text file and row (an image table's too; else
    its id)."""
    item = examples.inputs[i]
    if isinstance(item, (str, Path)) and examples.modality in ("image", "audio") and examples.lines is None:
        return str(item), None
    if examples.lines is not None:
        return examples.source, examples.lines[i]
    ident = examples.ids[i]
    return (f"{examples.source}#{i}" if isinstance(item, str) and ident == item else ident), None


class _Doctor:
    def __init__(self, config: DoctorConfig):
        self.config = config
        self.findings: list[Finding] = []
        self.unreadable: dict[str, list[int]] = defaultdict(list)
        self.duplicates: dict[str, list[int]] = defaultdict(list)
        self.reasons: dict[str, dict[int, tuple[str, str]]] = defaultdict(dict)  # split -> index -> (kind, why)
        self.listings: dict[str, FolderListing] = {}  # split -> how its folder was listed
        self.stats: dict[str, Any] = {}

    def add(self, kind: str, path: str, message: str, fatal: bool = False, line: int | None = None,
            split: str | None = None) -> None:
        severity = FATAL if fatal or self.config.strict else WARNING
        self.findings.append(Finding(kind, path, message, severity, line, split))

    def run(self, parts: dict[str, Examples], inputs_only: bool = False) -> DataReport:
        start = time.perf_counter()
        infos: dict[str, list[ImageInfo] | list[AudioInfo]] = {}
        for name, examples in parts.items():
            if examples.modality == "image":
                infos[name] = self._images(name, examples)
            elif examples.modality != "audio":
                self._texts(name, examples)
        infos.update(self._audio({n: ex for n, ex in parts.items() if ex.modality == "audio"}, inputs_only))
        dropped = {name: set(self.unreadable[name]) for name in parts}
        usable = {name: ex.subset([i for i in range(len(ex)) if i not in dropped[name]]) for name, ex in parts.items()}
        needs_split = self.config.needs_val_split if self.config.needs_val_split is not None else "val" not in parts
        if not inputs_only and parts["train"].labels is not None:
            self._labels(usable, needs_split)
        if not inputs_only:
            self._leakage(parts, infos)
        self.stats.update({"unreadable": sum(map(len, self.unreadable.values())),
                           "duplicates": sum(map(len, self.duplicates.values())),
                           "seconds": round(time.perf_counter() - start, 3)})
        return DataReport(self.findings, {n: len(ex) for n, ex in parts.items()}, dict(self.unreadable),
                          dict(self.duplicates), self.config, self.stats,
                          {n: [_label(locate(ex, i)) for i in range(len(ex))] for n, ex in parts.items()},
                          dict(self.reasons))

    # ---- images -----------------------------------------------------------------------------------------------

    def _images(self, split: str, examples: Examples) -> list[ImageInfo]:
        self._folder(split, examples)
        infos = image_infos(examples.inputs, self.config.max_pixels)
        if examples.image_column:  # images listed in a table: findings name its file and line
            self.stats.setdefault("image_columns", {})[split] = examples.image_column
        for i, (item, info) in enumerate(zip(examples.inputs, infos)):
            path, line = locate(examples, i)
            if not info.ok:
                kind, reason, message = _unusable(examples, i, info)
                self.unreadable[split].append(i)
                self.reasons[split][i] = (kind, reason)
                self.add(kind, path, message, line=line, split=split)
            elif isinstance(item, (str, Path)) and (real := extension_mismatch(str(item), info)):
                self.add("wrong-extension", path, f"a {real} file named '{Path(item).name}'; it decodes, but rename "
                                                  f"it so that other tools read it too", line=line, split=split)
        return infos

    def _folder(self, split: str, examples: Examples) -> None:
        """What listing a split's folder left out (files the OS leaves behind are only counted)."""
        listing = folder_report(examples.source, split, examples.modality) if examples.labels is not None else None
        if listing is None:
            return
        self.listings[split] = listing
        self.stats["os_files_ignored"] = self.stats.get("os_files_ignored", 0) + listing.ignored
        for item in listing.unexpected:
            self.add(item.kind, str(item.path), item.reason, split=split)

    # ---- audio ------------------------------------------------------------------------------------------------

    def _audio(self, parts: dict[str, Examples], inputs_only: bool) -> dict[str, list[AudioInfo]]:
        """transferkit.data.audio_checks' findings; unusable clips are left out like unreadable images."""
        for name, examples in parts.items():
            self._folder(name, examples)
        infos = {name: audio_infos(examples) for name, examples in parts.items()}
        for issue in audio_issues(parts, infos, self.config.clip_seconds, self.stats, summaries=not inputs_only):
            examples = parts[issue.split]
            path, line = locate(examples, issue.index) if issue.index is not None else (examples.source, None)
            if issue.left_out and issue.index is not None:
                self.unreadable[issue.split].append(issue.index)
                self.reasons[issue.split][issue.index] = (issue.kind, issue.reason)
            self.add(issue.kind, path, issue.message, line=line, split=issue.split)
        return infos

    # ---- texts ------------------------------------------------------------------------------------------------

    def _texts(self, split: str, examples: Examples) -> None:
        source = Path(examples.source)
        if examples.lines is not None and source.suffix.lower() in (".csv", ".jsonl") and source.is_file():
            bad = invalid_utf8(source.read_bytes())
            self.stats["replaced_bytes"] = self.stats.get("replaced_bytes", 0) + len(bad)
            by_line: dict[int, list[int]] = defaultdict(list)
            for line, byte in bad:
                by_line[line].append(byte)
            for line, found in by_line.items():
                shown = ", ".join(f"0x{b:02x}" for b in found[:4])
                self.add("non-utf8", str(source), f"{len(found)} byte(s) ({shown}) are not valid UTF-8 and were read "
                         "as U+FFFD; re-save the file as UTF-8", line=line, split=split)
        for i, text in enumerate(examples.inputs):
            if not (" ".join(text) if isinstance(text, list) else str(text)).strip():
                path, line = locate(examples, i)
                self.add("empty-text", path, "empty text; it trains as a blank input", line=line, split=split)
        if self.config.max_tokens is not None and len(examples) and not examples.is_tokens:  # tokens: windowed
            self._long_texts(split, examples, self.config.max_tokens)

    def _long_texts(self, split: str, examples: Examples, limit: int) -> None:
        texts = [str(t) for t in examples.inputs]
        count = self.config.count_tokens
        # No tokenizer makes more tokens than a text has UTF-8 bytes (plus [CLS]/[SEP]-like ones): skip those.
        maybe = [i for i, t in enumerate(texts) if len(t.encode("utf-8")) + _SPECIAL_TOKENS > limit]
        tokens = dict(zip(maybe, count([texts[i] for i in maybe]) if count is not None and maybe
                          else [estimated_tokens(texts[i]) for i in maybe]))
        over = [i for i in maybe if tokens[i] > limit]
        if over:
            longest = max(over, key=tokens.__getitem__)
            path, line = locate(examples, longest)
            how = ("counted with its tokenizer", "") if count is not None else \
                ("estimated from words, and characters of Chinese, Japanese or Thai", "about ")
            self.add("long-text", path, f"{len(over)} of {len(texts)} texts ({100 * len(over) / len(texts):.0f} %) "
                     f"are longer than the backbone's {limit} tokens ({how[0]}) and are cut to it; the longest, "
                     f"here, has {how[1]}{tokens[longest]}", line=line, split=split)

    # ---- labels -----------------------------------------------------------------------------------------------

    def _labels(self, usable: dict[str, Examples], needs_split: bool) -> None:
        self._task_issues(usable)  # regression, multi-label, tokens; classification: its hints
        if self.config.task != "classification":
            return
        train = usable["train"]
        counts = Counter(train.labels or [])
        self.stats["class_counts"] = dict(sorted(counts.items()))
        if not counts:
            self.add("no-examples", train.source, "no usable training examples are left; see the findings above",
                     fatal=True, split="train")
            return
        if len(counts) < 2:
            self.add("single-class", train.source, f"only class '{next(iter(counts))}' has examples; classification "
                     "needs at least 2 classes. Add examples of another class", fatal=True, split="train")
        for name, n in sorted(counts.items()):
            if n < 2:
                path, line = locate(train, train.labels.index(name))
                fix = ("splitting off a validation set needs at least 2 per class. Add examples or pass --val-data"
                       if needs_split else "its validation and training behaviour rest on a single example")
                self.add("small-class", path, f"class '{name}' has 1 usable example; {fix}", fatal=needs_split,
                         line=line, split="train")
        empty = self._empty_classes(usable, counts)
        for a, b, why in similar_names(sorted(set(counts) | empty)):
            self.add("similar-class-names", train.source, f"classes '{a}' and '{b}' {why}: one class split in two? "
                     "Merge the folders or labels if they mean the same thing", split="train")
        ratio = max(counts.values()) / min(counts.values())
        self.stats["imbalance_ratio"] = round(ratio, 3)
        if ratio >= self.config.imbalance_warning:
            big, small = max(counts, key=counts.get), min(counts, key=counts.get)
            self.add("imbalance", train.source, f"class '{big}' has {ratio:.1f}x the examples of '{small}' "
                     f"({counts[big]} vs {counts[small]}); fit weights the loss (--class-weight auto) but more "
                     f"examples of '{small}' help more", split="train")
        for name in ("val", "test"):
            if name in usable and usable[name].labels is not None:
                self._unknown_labels(name, usable[name], counts)

    def _task_issues(self, usable: dict[str, Examples]) -> None:
        """transferkit.data.task_checks' findings, at the file:line of the example each names."""
        for issue in task_issues(self.config.task, usable, self.stats, self.config.hints):
            examples = usable[issue.split]
            path, line = locate(examples, issue.index) if issue.index is not None else (examples.source, None)
            if issue.word and line is not None and not path.endswith(".jsonl"):  # CoNLL: a line per word
                line += issue.word
            self.add(issue.kind, path, issue.message, issue.fatal, line, issue.split)

    def _empty_classes(self, usable: dict[str, Examples], counts: Counter) -> set[str]:
        """Class folders with no usable image; in train such a class is left out of the model."""
        found: set[str] = set()
        for name, examples in usable.items():
            listing = self.listings.get(name)
            if listing is None or examples.modality != "image":
                continue
            present = set(examples.labels or [])
            for label, folder in listing.folders.items():
                if label in present or (name == "train" and label in counts):
                    continue
                found.add(label)
                what = "is left out of the model" if name == "train" else f"has no {name} examples"
                self.add("empty-class", str(folder), f"class folder '{folder.name}' holds no usable image, so the "
                         f"class {what}; add images or remove the folder", split=name)
        return found if "train" in usable else set()

    def _unknown_labels(self, split: str, examples: Examples, counts: Counter) -> None:
        known = ", ".join(sorted(counts)[:10])
        seen: set[str] = set()
        for i, label in enumerate(examples.labels or []):
            if label in counts or (examples.modality == "image" and label in seen):
                continue
            seen.add(label)
            path, line = locate(examples, i)
            if examples.modality == "image" and examples.lines is None:  # the class folder
                path = str(Path(path).parent)
            self.add("unknown-label", path, f"label '{label}' does not occur in the training data (classes: {known}); "
                     "the model cannot predict it. Fix the label or add training examples", fatal=True, line=line,
                     split=split)

    # ---- leakage ----------------------------------------------------------------------------------------------

    def _leakage(self, parts: dict[str, Examples], infos: dict[str, list[ImageInfo]]) -> None:
        keys = {name: _exact_keys(ex, infos.get(name)) for name, ex in parts.items()}
        first: dict[str, tuple[str, int]] = {}
        for name, ex in parts.items():
            for i, key in enumerate(keys[name]):
                if key is None:
                    continue
                if key not in first:
                    first[key] = (name, i)
                    continue
                earlier, j = first[key]
                kind = "leakage" if earlier != name else "duplicate"
                what = {"image": "pixels", "audio": "sound (at 8 kHz, mono, scaled to its peak)"}.get(
                    ex.modality, "text (ignoring case and spacing)")
                self._duplicate(kind, name, ex, i, parts[earlier], j, f"same {what} as")
        modalities = {ex.modality for ex in parts.values()}
        if self.config.near_duplicates and len(parts) > 1 and len(modalities) == 1:  # mixed: fit refuses anyway
            if modalities == {"image"}:
                self._near_images(parts, infos)
            elif modalities == {"audio"}:
                for name, i, s, j in near_audio_pairs(infos, {n: set(self.duplicates[n]) for n in parts}):
                    self._duplicate("near-duplicate", name, parts[name], i, parts[s], j, "nearly the same sound (a "
                                    "re-encoded, resampled or louder copy?) as")
            else:
                self._near_texts(parts)

    def _duplicate(self, kind: str, split: str, ex: Examples, i: int, other: Examples, j: int, how: str) -> None:
        path, line = locate(ex, i)
        there = _label(locate(other, j))
        labels = ""
        if ex.labels is not None and other.labels is not None and ex.labels[i] != other.labels[j]:
            labels = ", but tagged differently here and there" if isinstance(ex.labels[i], list) else \
                f", but labelled '{ex.labels[i]}' here and '{other.labels[j]}' there"
        action = "--dedupe leaves this copy out" if not self.config.dedupe else "left out (--dedupe)"
        self.duplicates[split].append(i)
        self.reasons[split][i] = (kind, f"{how} {there}{labels}")
        self.add(kind, path, f"{how} {there}{labels}; {action}", line=line, split=split)

    def _near_images(self, parts: dict[str, Examples], infos: dict[str, list[ImageInfo]]) -> None:
        buckets: dict[int, list[tuple[str, int]]] = defaultdict(list)
        for name, ex in parts.items():
            marked = set(self.duplicates[name])
            for i, info in enumerate(infos[name]):
                if not info.ok:
                    continue
                bucket = buckets[info.dhash]
                if i not in marked:
                    match = next(((s, j) for s, j in bucket[:_NEAR_CANDIDATES]
                                  if s != name and near_images(infos[s][j], info)), None)
                    if match is not None:
                        self._duplicate("near-duplicate", name, ex, i, parts[match[0]], match[1], "nearly the same "
                                        "picture as")
                        continue
                bucket.append((name, i))

    def _near_texts(self, parts: dict[str, Examples]) -> None:
        names = list(parts)
        for k, name in enumerate(names[1:], start=1):
            earlier = [(s, j) for s in names[:k] for j in range(len(parts[s]))]
            marked = set(self.duplicates[name])
            best: dict[int, tuple[int, float]] = {}
            pairs = near_text_pairs([str(t) for t in parts[name].inputs],
                                    [str(parts[s].inputs[j]) for s, j in earlier])
            for i, e, jaccard in pairs:
                if i not in marked and jaccard > best.get(i, (0, 0.0))[1]:
                    best[i] = (e, jaccard)
            for i, (e, jaccard) in sorted(best.items()):
                s, j = earlier[e]
                self._duplicate("near-duplicate", name, parts[name], i, parts[s], j,
                                f"{100 * jaccard:.0f} % of its word 3-grams shared with")


def _unusable(examples: Examples, i: int, info: ImageInfo) -> tuple[str, str, str]:
    """(kind, reason, message) for an image input the run leaves out; an image table's row names its path too."""
    kind, reason = info.kind or "unreadable-image", info.reason or "unreadable"
    if examples.image_column is None:
        return kind, reason, f"{reason}; left out of the run"
    item, written = str(examples.inputs[i]), examples.ids[i]
    if not Path(item).exists():
        message = missing_image_message(examples.source, written, item)
        return "missing-image", f"image '{written}' not found (tried {item})", message
    return kind, f"image '{written}': {reason}", f"image '{written}': {reason}; left out of the run"


def _exact_keys(examples: Examples, infos: list[ImageInfo] | None) -> list[str | None]:
    if infos is not None:
        return [info.sha256 for info in infos]
    return [text_sha256(str(t)) for t in examples.inputs]


def _label(location: tuple[str, int | None]) -> str:
    path, line = location
    return f"{path}:{line}" if line is not None else path
