"""Read a .csv or .jsonl file of texts (and labels) exactly as RFC 4180 and JSON Lines define them.

Imports only transferkit.core and transferkit.data. Records are split at line feeds only ('\\n', and '\\r\\n'):
``str.splitlines()`` also breaks at U+2028, U+0085, '\\x0b', '\\x0c' and others, which are legal inside a JSON
string or a CSV field, and so would cut a record in two. A record that cannot be read exactly (bad quoting, more
or fewer fields than the header, invalid JSON, a key given twice, a missing text or label) is a DataError naming
``file:line`` (the physical line where the record starts) and the fix: nothing is shifted, merged or guessed.
The CSV delimiter is the one of ``,`` ``;`` tab ``|`` that splits the header into the columns asked for
(European Excel writes ``text;label``). Label values become class names through ``labels.label_name``.
"""
from __future__ import annotations

import csv
import json
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from transferkit.core.errors import DataError
from transferkit.data.examples import Examples
from transferkit.data.image_tables import column_kind, image_paths
from transferkit.data.labels import label_name
from transferkit.data.multilabels import indicator_set, label_set

# 'strict' refuses a text file with bytes that are not UTF-8 (naming file and line); 'replace' reads it with
# U+FFFD in their place, for the data doctor to report and count (transferkit.data.doctor).
EncodingErrors = Literal["strict", "replace"]
DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
_EXCEL_SEP = re.compile(r"sep=(.)")
_QUOTING_FIX = ("a field that holds the delimiter, a double quote or a line break must be enclosed in double "
                "quotes, with each double quote inside it written twice (\"\")")
Row = tuple[int, dict[str, Any]]  # (physical line where the record starts, its fields)


@dataclass(frozen=True)
class TextColumns:
    text: str = "text"
    label: str = "label"
    # Multi-label (transferkit.data.multilabels): a CSV label cell split on ``label_sep`` (a JSON list in JSONL
    # needs nothing), or one 0/1 column per label name (``label_columns``, instead of ``label``).
    label_sep: str | None = None
    label_columns: tuple[str, ...] = ()
    # A column of image (or audio) file paths (transferkit.data.image_tables), read instead of ``text``; None: the
    # text column is read as images (audio clips) when its values are image (audio) files.
    image: str | None = None


def read_text_file(path: Path, columns: TextColumns, labeled: bool, encoding_errors: EncodingErrors = "strict") -> Examples:
    text = decode(path, encoding_errors)
    column = columns.image or columns.text
    if path.suffix.lower() == ".csv":
        label_fields = list(columns.label_columns) or [columns.label]
        flag = "--label-columns A,B,C" if columns.label_columns else "--label-column NAME"
        rows = read_csv(path, text, [column, *label_fields] if labeled else [column], flag)
    else:
        rows = read_jsonl(path, text)
        if columns.label == "label" and rows and not any("label" in r for _, r in rows) and \
                all("labels" in r for _, r in rows):  # the default field, plural: {"text": ..., "labels": [...]}
            columns = replace(columns, label="labels")
        _require_field(path, rows, column, "--image-column" if columns.image else "--text-column")
        for field in (columns.label_columns or [columns.label]) if labeled else ():
            _require_field(path, rows, field, "--label-columns" if columns.label_columns else "--label-column")
    if not rows:
        raise DataError(f"'{path}' has no data rows.")
    texts = [_text_value(path, line, row[column], column) for line, row in rows]
    labels = _labels(path, rows, columns) if labeled else None
    lines = [line for line, _ in rows]
    kind = column_kind(path, texts, lines, column, named=columns.image is not None)
    images = image_paths(path, texts, lines, column, columns.image is not None, kind)
    if images is not None:  # the column names image (or audio) files: its paths are kept as the ids
        return Examples(kind, images, labels, str(path), list(texts), lines, image_column=column)
    return Examples("text", texts, labels, str(path), list(texts), lines)


def physical_lines(text: str) -> list[str]:
    """The lines of ``text`` with their ends, split at '\\n' only (a '\\r' before it stays, as RFC 4180 allows)."""
    parts = text.split("\n")
    return [part + "\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


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


def decode(path: Path, errors: EncodingErrors = "strict") -> str:
    raw = path.read_bytes()
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in raw[:4096]:  # Excel's "Unicode text" is UTF-16
        raise DataError(f"{path}: the file is UTF-16 (or holds NUL bytes), not UTF-8 text. Re-save it as UTF-8 "
                        "(in Excel: 'CSV UTF-8'; or `iconv -f UTF-16 -t UTF-8`).")
    try:
        return raw.decode("utf-8-sig", errors=errors)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path}:{line}: byte 0x{raw[exc.start]:02x} is not valid UTF-8. Re-save the file as UTF-8 "
            "(or let `transferkit fit` without --strict read it with the bad bytes replaced)."
        ) from None


# ------------------------------------------------------------------------------------------------------------- csv


def read_csv(path: Path, text: str, wanted: list[str], label_flag: str = "--label-column NAME") -> list[Row]:
    """Rows of ``path`` holding the ``wanted`` columns (matched after NFC and stripping spaces); a missing label
    column's message names ``label_flag``."""
    lines = physical_lines(text)
    if not any(line.strip() for line in lines):
        raise DataError(f"'{path}' is empty; it needs a header row such as 'text,label'.")
    limit = csv.field_size_limit()
    csv.field_size_limit(max(limit, len(text) + 1))  # a field may be as long as the file (csv's default: 128 KiB)
    try:
        declared = _EXCEL_SEP.fullmatch(lines[0].rstrip("\r\n"))
        if declared:  # Excel's 'sep=;' line names the delimiter; blanked, so line numbers stay physical
            lines = ["\n", *lines[1:]]
        delimiter = declared.group(1) if declared else _delimiter(path, lines, wanted, label_flag)
        records = list(_records(path, lines, delimiter, keep_blank=True))
    finally:
        csv.field_size_limit(limit)
    records = _without_leading_blanks(records)
    if not records:
        raise DataError(f"'{path}' is empty; it needs a header row such as 'text,label'.")
    (header_line, header), body = records[0], records[1:]
    if len(header) > 1:  # a blank line is no record of a file with several columns; of a one-column file it is
        body = [r for r in body if not _blank(r[1])]  # an empty text, which predict must answer in its place
    names = [_column_key(name) for name in header]
    where = {}
    for column in wanted:
        found = [i for i, name in enumerate(names) if name == _column_key(column)]
        if len(found) > 1:
            raise DataError(f"{path}:{header_line}: the header names '{column}' {len(found)} times (columns "
                            f"{', '.join(str(i + 1) for i in found)}); rename all but one.")
        where[column] = found[0]
    rows = []
    for line, record in body:
        if len(record) != len(header):
            raise DataError(_field_count_problem(path, line, record, header, header_line, delimiter))
        rows.append((line, {column: record[i] for column, i in where.items()}))
    return rows


def _column_key(name: str) -> str:
    return unicodedata.normalize("NFC", name).strip()


def _delimiter(path: Path, lines: list[str], wanted: list[str], label_flag: str) -> str:
    """The delimiter whose header holds every wanted column; else a DataError saying what the header looks like."""
    keys = {_column_key(c) for c in wanted}
    headers: dict[str, list[str]] = {}
    comma_error = None
    for delimiter in DELIMITERS:
        try:  # a quoted header of another delimiter ('"text";"label"') is not valid comma-separated CSV
            _, header = next(_records(path, lines, delimiter))
        except DataError as exc:
            comma_error = exc if delimiter == "," else comma_error
            continue
        if keys <= {_column_key(name) for name in header}:
            return delimiter
        headers[delimiter] = header
    if comma_error is not None and not any(len(h) > 1 for h in headers.values()):
        raise comma_error
    comma = headers.get(",", [])
    missing = next(c for c in wanted if _column_key(c) not in {_column_key(n) for n in comma})
    flag = "--text-column NAME (or --image-column NAME, for a column of image file paths)" \
        if missing == wanted[0] else label_flag
    looks = next((d for d in DELIMITERS if d != "," and len(headers.get(d, [])) > max(len(comma), 1)), None)
    hint = (f"; the header {lines[0].rstrip(chr(10) + chr(13))!r} looks {DELIMITERS[looks]}-separated, with columns "
            f"{', '.join(headers[looks])}" if looks else "")
    raise DataError(f"{path}: no '{missing}' column in the header (found: {', '.join(comma) or 'nothing'}){hint}. "
                    f"Name the right column with {flag}.")


class _CountedLines:
    """An iterator over lines that knows how many it has handed out, so a record's first line is known."""

    def __init__(self, lines: list[str]):
        self.lines, self.consumed = lines, 0

    def __iter__(self) -> _CountedLines:
        return self

    def __next__(self) -> str:
        if self.consumed >= len(self.lines):
            raise StopIteration
        self.consumed += 1
        return self.lines[self.consumed - 1]


def _blank(record: list[str]) -> bool:
    return len(record) == 1 and not record[0].strip()


def _without_leading_blanks(records: list[tuple[int, list[str]]]) -> list[tuple[int, list[str]]]:
    start = next((i for i, (_, record) in enumerate(records) if not _blank(record)), len(records))
    return records[start:]


def _records(path: Path, lines: list[str], delimiter: str,
             keep_blank: bool = False) -> Iterator[tuple[int, list[str]]]:
    """(first line, fields) of each record (empty lines skipped; lines of spaces too unless ``keep_blank``);
    strict RFC 4180 quoting, else DataError."""
    source = _CountedLines(lines)
    reader = csv.reader(source, delimiter=delimiter, strict=True)
    while True:
        start = source.consumed + 1
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DataError(f"{path}:{start}: {_csv_problem(str(exc))}.") from None
        if record and (keep_blank or not _blank(record)):
            yield start, record


def _csv_problem(message: str) -> str:
    if "unexpected end of data" in message:
        return ("a double-quoted field that starts in this record is never closed, so the rest of the file would be "
                f"read into it; close the quote. ({_QUOTING_FIX})")
    if "expected after" in message:
        return f"text follows the closing double quote of a field; {_QUOTING_FIX}"
    if "new-line character" in message:
        return ("a carriage return (\\r) outside double quotes; enclose that field in double quotes, or save the file "
                "with \\n or \\r\\n line ends")
    return f"not valid CSV ({message}); {_QUOTING_FIX}"


def _field_count_problem(path: Path, line: int, record: list[str], header: list[str], header_line: int,
                         delimiter: str) -> str:
    shown = DELIMITERS[delimiter] if delimiter != "," else "','"
    what = f"{len(record)} field(s) where the header (line {header_line}) has {len(header)} ({', '.join(header)})"
    if len(record) > len(header):
        return f"{path}:{line}: {what}. A field that holds a {shown} must be enclosed in double quotes."
    return (f"{path}:{line}: {what}. Fill in the missing fields (an empty field still needs its {shown}); a text "
            "that runs onto the next line must be enclosed in double quotes.")


# ----------------------------------------------------------------------------------------------------------- jsonl


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _DuplicateKey(key)
        obj[key] = value
    return obj


def _not_json(constant: str) -> Any:
    raise ValueError(constant)


def read_jsonl(path: Path, text: str) -> list[Row]:
    """One JSON object per line (blank lines skipped); JSON as RFC 8259 has it: no NaN/Infinity, no repeated key."""
    rows = []
    for line_no, line in enumerate(physical_lines(text), start=1):
        if not line.strip(" \t\r\n"):
            continue
        try:
            obj = json.loads(line, object_pairs_hook=_unique_keys, parse_constant=_not_json)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{line_no}: not valid JSON ({exc.msg}, column {exc.colno}). Each line must be "
                            "one JSON object; a line break inside a text must be written as \\n.") from None
        except _DuplicateKey as exc:
            raise DataError(f"{path}:{line_no}: the key '{exc}' appears twice in this object, so which value "
                            "counts is a guess; keep one.") from None
        except ValueError as exc:
            raise DataError(f"{path}:{line_no}: {exc} is not JSON; write null or a number instead.") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{line_no}: expected a JSON object like {{\"text\": ..., \"label\": ...}}.")
        rows.append((line_no, obj))
    return rows


def _require_field(path: Path, rows: list[Row], key: str, flag: str) -> None:
    """A key no record has is a wrong name (suggest the flag); one that some records lack is a gap in the data."""
    lacking = [line for line, row in rows if key not in row]
    if not lacking:
        return
    if len(lacking) == len(rows):
        found = sorted({k for _, row in rows[:100] for k in row})
        raise DataError(f"{path}:{rows[0][0]}: no '{key}' field (found: {', '.join(found) or 'nothing'}). "
                        f"Name the right field with {flag} NAME.")
    raise DataError(f"{path}:{lacking[0]}: this record has no '{key}' field, which other records have"
                    f"{_more(lacking)}; add it to every record.")


# ---------------------------------------------------------------------------------------------------------- values


def _text_value(path: Path, line: int, value: Any, column: str) -> str:
    if isinstance(value, str):
        return value
    what = "null" if value is None else f"a JSON {type(value).__name__} ({json.dumps(value)[:40]})"
    raise DataError(f"{path}:{line}: the '{column}' value is {what}, not a string; write the text in double quotes.")


def _labels(path: Path, rows: list[Row], columns: TextColumns) -> list[Any]:
    """One class name per row, or (multi-label: a JSON list in any row, --label-sep or --label-columns) a tuple
    of names per row (transferkit.data.multilabels)."""
    column = columns.label
    if columns.label_columns:
        return [_indicator_row(path, line, row, columns.label_columns) for line, row in rows]
    sets = columns.label_sep is not None or any(isinstance(row.get(column), list) for _, row in rows)
    names, missing = [], []
    for line, row in rows:
        try:
            name = label_set(row[column], columns.label_sep) if sets else label_name(row[column])
        except TypeError:
            raise DataError(f"{path}:{line}: the '{column}' value {json.dumps(row[column])[:60]} is not one class "
                            "label; each record needs exactly one label (a string, number or true/false).") from None
        if name is None:
            missing.append(line)
        names.append(name)
    if missing:
        raise DataError(f"{path}:{missing[0]}: no label (the '{column}' value is empty or null){_more(missing)}; "
                        "every row needs a label. Fill it in, or remove the row (predict reads files without labels).")
    return names


def _indicator_row(path: Path, line: int, row: dict[str, Any], label_columns: tuple[str, ...]) -> tuple[str, ...]:
    try:
        return indicator_set(row, label_columns)
    except ValueError as exc:
        raise DataError(f"{path}:{line}: the '{exc}' value {json.dumps(row.get(str(exc)))[:40]} is not 0 or 1; "
                        "each --label-columns column holds 1 (the row has that label) or 0.") from None


def _more(lines: list[int]) -> str:
    if len(lines) == 1:
        return ""
    shown = ", ".join(map(str, lines[1:6]))
    return f" (and {len(lines) - 1} more: line{'s' if len(lines) > 2 else ''} {shown}{', ...' if len(lines) > 6 else ''})"
