"""Turn a SRC string (image folder, .csv/.jsonl of texts, or builtin:NAME) into DataSplits.

Imports only transferkit.core and transferkit.data. Every user mistake raises DataError naming the
file, line or field and the fix.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from transferkit.core.errors import DataError
from transferkit.core.registry import lookup
from transferkit.data.builtins import DATASETS
from transferkit.data.examples import DataSplits, Examples
from transferkit.data.images import IMAGE_EXTENSIONS

SPLIT_DIRS = ("train", "val", "test")
# 'strict' refuses a text file with bytes that are not UTF-8 (naming file and line); 'replace' reads it with
# U+FFFD in their place, for the data doctor to report and count (transferkit.data.doctor).
EncodingErrors = Literal["strict", "replace"]


@dataclass(frozen=True)
class TextColumns:
    text: str = "text"
    label: str = "label"


def load_source(src: str | Path, columns: TextColumns = TextColumns(), labeled: bool = True,
                encoding_errors: EncodingErrors = "strict") -> DataSplits:
    """Read ``src``. With ``labeled=False`` (predict), unlabeled folders/files are accepted too."""
    text = str(src)
    if text.startswith("builtin:"):
        return lookup(DATASETS, text.removeprefix("builtin:"), "dataset")()
    path = Path(text).expanduser()
    if not path.exists():
        raise DataError(
            f"Data path '{path}' does not exist. Pass an image folder, a .csv/.jsonl file of texts, "
            "or builtin:NAME (see `transferkit list datasets`)."
        )
    if path.is_dir():
        return _image_folder_splits(path, labeled)
    if path.suffix.lower() in (".csv", ".jsonl"):
        return DataSplits(train=read_text_file(path, columns, labeled, encoding_errors))
    raise DataError(f"'{path}' is neither a folder of images nor a .csv/.jsonl file; pass one of those.")


def _image_folder_splits(root: Path, labeled: bool) -> DataSplits:
    if (root / "train").is_dir():
        parts = {name: _class_folder(root / name, labeled) for name in SPLIT_DIRS if (root / name).is_dir()}
        return DataSplits(**parts)
    return DataSplits(train=_class_folder(root, labeled))


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _class_folder(root: Path, labeled: bool) -> Examples:
    """``root/<class>/*.png`` -> labeled examples; loose images at the top level -> unlabeled (predict only)."""
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not class_dirs or (loose and not labeled):
        paths = _images_under(root) if not labeled else loose
        if not paths:
            raise DataError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) found under '{root}'.")
        if labeled:
            raise DataError(
                f"'{root}' holds images but no class folders; arrange them as {root}/<class>/<image> "
                "so each folder name is a label."
            )
        return Examples("image", [str(p) for p in paths], None, str(root))
    paths, labels = [], []
    for class_dir in class_dirs:
        found = _images_under(class_dir)
        paths += [str(p) for p in found]
        labels += [class_dir.name] * len(found)
    if not paths:
        raise DataError(
            f"The class folders under '{root}' ({', '.join(d.name for d in class_dirs[:5])}) contain no images "
            f"with extensions {', '.join(IMAGE_EXTENSIONS)}."
        )
    return Examples("image", paths, labels, str(root))


def read_text_file(path: Path, columns: TextColumns, labeled: bool, encoding_errors: EncodingErrors = "strict") -> Examples:
    text = _decode(path, encoding_errors)
    rows = _read_csv(path, text) if path.suffix.lower() == ".csv" else _read_jsonl(path, text)
    if not rows:
        raise DataError(f"'{path}' has no data rows.")
    texts, labels, ids = [], [], []
    for line, row in rows:
        text = row.get(columns.text)
        if text is None or (labeled and columns.label not in row):
            missing = columns.text if text is None else columns.label
            flag = "--text-column" if text is None else "--label-column"
            raise DataError(
                f"{path}:{line}: no '{missing}' field (found: {', '.join(map(str, row)) or 'nothing'}). "
                f"Name the right column with {flag} NAME."
            )
        texts.append(str(text))
        ids.append(str(text))
        if labeled:
            labels.append(str(row[columns.label]).strip())
    if labeled and any(label == "" for label in labels):
        line = rows[labels.index("")][0]
        raise DataError(f"{path}:{line}: empty '{columns.label}' value; every row needs a label.")
    return Examples("text", texts, labels if labeled else None, str(path), ids, [line for line, _ in rows])


def invalid_utf8(raw: bytes) -> list[tuple[int, int]]:
    """(line, byte value) of each invalid UTF-8 sequence in ``raw``: one per U+FFFD that 'replace' inserts."""
    found, start = [], 0
    while True:
        try:
            raw[start:].decode("utf-8")
            return found
        except UnicodeDecodeError as exc:
            position = start + exc.start
            found.append((raw[:position].count(b"\n") + 1, raw[position]))
            start += exc.end


def _decode(path: Path, errors: EncodingErrors = "strict") -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig", errors=errors)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path}:{line}: byte 0x{raw[exc.start]:02x} is not valid UTF-8. Re-save the file as UTF-8 "
            "(or let `transferkit fit` without --strict read it with the bad bytes replaced)."
        ) from None


def _read_csv(path: Path, text: str) -> list[tuple[int, dict]]:
    reader = csv.DictReader(text.splitlines(keepends=True))
    if reader.fieldnames is None:
        raise DataError(f"'{path}' is empty; it needs a header row such as 'text,label'.")
    return [(reader.line_num, dict(row)) for row in reader]


def _read_jsonl(path: Path, text: str) -> list[tuple[int, dict]]:
    rows = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{line_no}: not valid JSON ({exc.msg}). Each line must be one JSON object.") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{line_no}: expected a JSON object like {{\"text\": ..., \"label\": ...}}.")
        rows.append((line_no, obj))
    return rows
