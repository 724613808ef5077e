"""transferkit.data.tables: CSV (RFC 4180) and JSON Lines read exactly, or refused with file:line and the fix."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from transferkit.core.errors import DataError
from transferkit.data.sources import TextColumns, load_source
from transferkit.data.tables import physical_lines

# Characters that str.splitlines() breaks at but that are legal inside a CSV field; JSON strings may hold the
# first three as they are (control characters must be escaped there, so json.dumps never writes them raw).
LINE_BREAKS_INSIDE = ["\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e"]
RAW_IN_JSON = LINE_BREAKS_INSIDE[:3]


def _write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def _error(path: Path, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        load_source(path, **kwargs)
    return str(info.value)


# --------------------------------------------------------------------------------------------- records and lines


def test_physical_lines_split_only_at_line_feeds():
    assert physical_lines("a\u2028b\r\nc\x0bd\ne") == ["a\u2028b\r\n", "c\x0bd\n", "e"]
    assert physical_lines("") == [] and physical_lines("x\n") == ["x\n"]


@pytest.mark.parametrize("char", RAW_IN_JSON)
def test_jsonl_record_with_a_unicode_line_separator_stays_one_record(tmp_path: Path, char: str):
    texts = [f"first{char}part", "second", "third", "fourth"]
    lines = [json.dumps({"text": t, "label": y}, ensure_ascii=False) for t, y in zip(texts, "abab")]
    assert char in lines[0]
    train = load_source(_write(tmp_path, "t.jsonl", "\n".join(lines) + "\n")).train
    assert train.inputs == texts and train.labels == list("abab") and train.lines == [1, 2, 3, 4]


@pytest.mark.parametrize("char", LINE_BREAKS_INSIDE)
def test_csv_field_with_a_unicode_line_separator_stays_one_field(tmp_path: Path, char: str):
    path = _write(tmp_path, "t.csv", f"text,label\nfirst{char}part,a\nsecond,b\n")
    train = load_source(path).train
    assert train.inputs == [f"first{char}part", "second"] and train.lines == [2, 3]


def test_csv_rfc4180_quoting_crlf_bom_and_line_numbers_where_records_start(tmp_path: Path):
    content = ('\ufefftext,label\r\n"one, with a comma",a\r\n"two\r\nlines and ""quotes""",b\r\n\r\n'
               'plain,a\r\n"three\nlines\nhere",b\r\nlast,a')
    train = load_source(_write(tmp_path, "t.csv", content)).train
    assert train.inputs == ["one, with a comma", 'two\r\nlines and "quotes"', "plain", "three\nlines\nhere", "last"]
    assert train.labels == ["a", "b", "a", "b", "a"]
    assert train.lines == [2, 3, 6, 7, 10]


def test_jsonl_crlf_blank_lines_and_bom(tmp_path: Path):
    content = '\ufeff{"text": "a", "label": "x"}\r\n\r\n{"text": "b\\nc", "label": "y"}\r\n'
    train = load_source(_write(tmp_path, "t.jsonl", content)).train
    assert train.inputs == ["a", "b\nc"] and train.lines == [1, 3]


# ------------------------------------------------------------------------------------------- rows read exactly


def test_csv_row_with_more_fields_than_the_header_is_an_error_not_a_shifted_field(tmp_path: Path):
    path = _write(tmp_path, "t.csv", "text,label\nfine,a\nhello, world,b\nok,b\n")
    message = _error(path)
    assert f"{path}:3:" in message and "3 field(s) where the header (line 1) has 2" in message
    assert "double quotes" in message


def test_csv_row_with_fewer_fields_is_an_error_not_a_missing_value(tmp_path: Path):
    path = _write(tmp_path, "t.csv", "text,label\nfine,a\na text that runs\nonto the next line,b\n")
    message = _error(path)
    assert f"{path}:3:" in message and "1 field(s) where the header (line 1) has 2" in message


def test_csv_unclosed_quote_does_not_swallow_the_rest_of_the_file(tmp_path: Path):
    path = _write(tmp_path, "t.csv", 'text,label\nfine,a\n"never closed,b\nthird,a\nfourth,b\n')
    message = _error(path)
    assert f"{path}:3:" in message and "never closed" in message


def test_csv_text_after_a_closing_quote_is_an_error(tmp_path: Path):
    path = _write(tmp_path, "t.csv", 'text,label\nfine,a\n"quoted" and more,b\n')
    message = _error(path)
    assert f"{path}:3:" in message and "closing double quote" in message and '("")' in message


def test_csv_bare_carriage_return_is_an_error(tmp_path: Path):
    message = _error(_write(tmp_path, "t.csv", "text,label\rfine,a\rsecond,b\r"))
    assert ":1:" in message and "carriage return" in message


def test_csv_header_naming_the_label_column_twice(tmp_path: Path):
    message = _error(_write(tmp_path, "t.csv", "text,label,label\nx,a,b\ny,b,a\n"))
    assert ":1:" in message and "'label' 2 times (columns 2, 3)" in message


def test_csv_long_field_is_read_whole(tmp_path: Path):
    long = "word " * 40_000  # 200,000 characters: over csv's default 131,072-character field limit
    train = load_source(_write(tmp_path, "t.csv", f'text,label\n"{long}",a\nshort,b\n')).train
    assert train.inputs[0] == long


def test_jsonl_two_objects_on_one_line_are_not_merged(tmp_path: Path):
    path = _write(tmp_path, "t.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}{"text": "c", '
                                       '"label": "x"}\n')
    message = _error(path)
    assert f"{path}:2:" in message and "Extra data" in message


def test_jsonl_repeated_key_and_nan_are_errors(tmp_path: Path):
    dup = _write(tmp_path, "d.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", "label": "x", "label": "y"}\n')
    assert f"{dup}:2: the key 'label' appears twice" in _error(dup)
    nan = _write(tmp_path, "n.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", "label": NaN}\n')
    assert f"{nan}:2: NaN is not JSON" in _error(nan)


def test_jsonl_text_that_is_not_a_string(tmp_path: Path):
    path = _write(tmp_path, "t.jsonl", '{"text": "a", "label": "x"}\n{"text": ["b", "c"], "label": "y"}\n')
    assert f"{path}:2: the 'text' value is a JSON list" in _error(path)
    null = _write(tmp_path, "n.jsonl", '{"text": "a", "label": "x"}\n{"text": null, "label": "y"}\n')
    assert f"{null}:2: the 'text' value is null" in _error(null)


def test_jsonl_record_missing_a_field_other_records_have(tmp_path: Path):
    path = _write(tmp_path, "t.jsonl", '{"text": "a", "label": "x"}\n{"label": "y"}\n{"text": "c", "label": "x"}\n')
    message = _error(path)
    assert f"{path}:2: this record has no 'text' field" in message and "--text-column" not in message
    wrong = _write(tmp_path, "w.jsonl", '{"body": "a", "label": "x"}\n{"body": "b", "label": "y"}\n')
    message = _error(wrong)
    assert f"{wrong}:1: no 'text' field (found: body, label)" in message and "--text-column" in message


# ---------------------------------------------------------------------------------------------------- delimiters


@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_csv_delimiter_is_taken_from_the_header(tmp_path: Path, delimiter: str):
    d = delimiter
    path = _write(tmp_path, "t.csv", f'text{d}label\r\nHallo, Welt{d}a\r\n"mit {d} darin"{d}b\r\n')
    train = load_source(path).train
    assert train.inputs == ["Hallo, Welt", f"mit {d} darin"] and train.labels == ["a", "b"]


def test_semicolon_header_without_the_columns_says_what_the_file_looks_like(tmp_path: Path):
    path = _write(tmp_path, "t.csv", "Text;Kategorie\nHallo;a\nWelt;b\n")
    message = _error(path)
    assert "looks semicolon-separated, with columns Text, Kategorie" in message and "--text-column" in message


def test_unlabeled_csv_with_semicolons_for_predict(tmp_path: Path):
    path = _write(tmp_path, "t.csv", "id;text\n1;erste Zeile\n2;zweite Zeile\n")
    assert load_source(path, labeled=False).train.inputs == ["erste Zeile", "zweite Zeile"]


def test_header_names_match_after_spaces_and_unicode_form(tmp_path: Path):
    path = _write(tmp_path, "t.csv", "te\u0301xt , label\nbonjour,a\nsalut,b\n")
    assert load_source(path, TextColumns("t\u00e9xt")).train.inputs == ["bonjour", "salut"]


# ------------------------------------------------------------------------------- exports seen in the wild (review)


@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_quoted_header_with_another_delimiter_is_read(tmp_path: Path, delimiter: str):
    """LibreOffice/Excel quote every cell: '"text";"label"' is valid CSV, not a quoting error of a comma file."""
    body = "\r\n".join(delimiter.join(f'"{c}"' for c in row) for row in
                       (("text", "label"), ("a, b", "pos"), ("c", "neg")))
    examples = load_source(_write(tmp_path, "q.csv", "\ufeff" + body + "\r\n")).train
    assert examples.inputs == ["a, b", "c"] and examples.labels == ["pos", "neg"]


def test_excel_sep_line_names_the_delimiter_and_keeps_line_numbers(tmp_path: Path):
    path = _write(tmp_path, "sep.csv", "sep=;\ntext;label\na;pos\nb;neg\n")
    examples = load_source(path).train
    assert (examples.inputs, examples.labels, examples.lines) == (["a", "b"], ["pos", "neg"], [3, 4])
    bad = _write(tmp_path, "bad.csv", "sep=;\ntext;label\na;pos\nb;neg;x\n")
    assert f"{bad}:4:" in _error(bad)


def test_utf16_file_says_so(tmp_path: Path):
    path = _write(tmp_path, "u16.csv", "text,label\na,pos\nb,neg\n".encode("utf-16"))
    message = _error(path)
    assert "UTF-16" in message and "UTF-8" in message and "--text-column" not in message


def test_one_column_csv_keeps_empty_texts_so_predict_answers_every_row(tmp_path: Path):
    """In a one-column file an empty or all-space line is an (empty) text; only truly empty lines are no record."""
    path = _write(tmp_path, "one.csv", 'text\nhello\n""\n   \n\nbye\n')
    examples = load_source(path, labeled=False).train
    assert examples.inputs == ["hello", "", "   ", "bye"] and examples.lines == [2, 3, 4, 6]


def test_blank_lines_are_no_records_of_a_two_column_file(tmp_path: Path):
    examples = load_source(_write(tmp_path, "two.csv", "text,label\n\na,pos\n   \nb,neg\n")).train
    assert (examples.inputs, examples.lines) == (["a", "b"], [3, 5])
