"""transferkit.data.labels: one class name per class, whatever the file's types or Unicode form; missing = error."""
from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest

from transferkit.core.errors import DataError
from transferkit.data.labels import LabelMap, label_name
from transferkit.data.sources import load_source


def _write(tmp_path: Path, name: str, content: str) -> Path:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    return path


@pytest.mark.parametrize(("value", "name"), [
    (1, "1"), (1.0, "1"), ("1", "1"), ("1.0", "1"), (" 1.00 ", "1"), ("1e3", "1000"), (-0.0, "0"), ("-0", "0"),
    (0.5, "0.5"), ("0.50", "0.5"), (1e300, "1e+300"),
    ("01", "01"), ("+1", "+1"), (".5", ".5"), ("1e999", "1e999"),  # not written as JSON numbers: codes, kept
    (True, "true"), (False, "false"),  # a yes/no label, not the number 1/0
    ("cafe\u0301", "caf\u00e9"), ("  caf\u00e9\u00a0", "caf\u00e9"),
    (None, None), ("", None), (" \t", None),
])
def test_label_name(value, name):
    assert label_name(value) == name


def test_label_name_refuses_lists():
    with pytest.raises(TypeError):
        label_name(["a", "b"])


def test_jsonl_one_and_one_point_zero_are_one_class(tmp_path: Path):
    rows = [f'{{"text": "t{i}", "label": {y}}}' for i, y in enumerate(["0", "1", "0.0", "1.0", "1", "0"])]
    train = load_source(_write(tmp_path, "t.jsonl", "\n".join(rows) + "\n")).train
    assert train.labels == ["0", "1", "0", "1", "1", "0"]
    assert LabelMap.from_labels(train.labels, "t").names == ("0", "1")


def test_csv_number_spellings_are_one_class_but_codes_are_not(tmp_path: Path):
    path = _write(tmp_path, "t.csv", "text,label\na,1\nb,1.0\nc,2\nd,2.00\ne,007\nf,7\n")
    assert load_source(path).train.labels == ["1", "1", "2", "2", "007", "7"]


def test_json_booleans_are_classes_true_and_false(tmp_path: Path):
    path = _write(tmp_path, "t.jsonl", '{"text": "a", "label": true}\n{"text": "b", "label": false}\n'
                                       '{"text": "c", "label": 1}\n')
    assert load_source(path).train.labels == ["true", "false", "1"]


def test_accented_labels_typed_on_macos_and_linux_are_one_class(tmp_path: Path):
    nfd, nfc = unicodedata.normalize("NFD", "caf\u00e9"), "caf\u00e9"
    assert nfd != nfc
    path = _write(tmp_path, "t.csv", f"text,label\na,{nfd}\nb,{nfc}\nc, {nfc} \nd,th\u00e9\n")
    assert load_source(path).train.labels == [nfc, nfc, nfc, "th\u00e9"]


@pytest.mark.parametrize(("content", "line"), [
    ("text,label\na,x\nb,\nc,y\n", 3),  # empty CSV cell
    ("text,label\na,x\nb,y\nc,  \n", 4),  # only spaces
    ('{"text": "a", "label": "x"}\n{"text": "b", "label": null}\n', 2),  # JSON null
    ('{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n\n{"text": "c"}\n', 4),  # key missing
])
def test_missing_label_is_an_error_with_file_and_line_not_a_class_named_none(tmp_path: Path, content: str, line: int):
    path = _write(tmp_path, "t.jsonl" if content.startswith("{") else "t.csv", content)
    with pytest.raises(DataError) as info:
        load_source(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}:") and "label" in message and "None" not in message


def test_every_missing_label_is_counted(tmp_path: Path):
    path = _write(tmp_path, "t.csv", "text,label\na,\nb,x\nc,\nd,\ne,y\n")
    with pytest.raises(DataError, match=r"t.csv:2: no label .*\(and 2 more: lines 4, 5\)"):
        load_source(path)


def test_missing_labels_are_fine_for_prediction(tmp_path: Path):
    path = _write(tmp_path, "t.jsonl", '{"text": "a", "label": null}\n{"text": "b"}\n')
    assert load_source(path, labeled=False).train.inputs == ["a", "b"]


def test_list_label_makes_every_row_a_label_set(tmp_path: Path):  # multi-label (issue 13)
    path = _write(tmp_path, "t.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", "label": ["y", "x", "x"]}\n')
    assert load_source(path).train.labels == [("x",), ("x", "y")]


def test_object_label_is_an_error(tmp_path: Path):
    path = _write(tmp_path, "t.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", "label": {"x": 1}}\n')
    with pytest.raises(DataError, match=r"t.jsonl:2: the 'label' value \{\"x\": 1\} is not one class label"):
        load_source(path)


def test_number_labels_sort_numerically():
    assert LabelMap.from_labels(["10", "2", "-1", "0.5", "b", "a"], "x").names == ("-1", "0.5", "2", "10", "a", "b")


@pytest.mark.parametrize("names", [("①", "②", "③"), ("x²", "²", "10")])
def test_names_made_of_unicode_digit_characters_are_names(names):
    """str.isdigit() is true for '①' and '²'; they are names, not numbers, and must not crash the sort."""
    label_map = LabelMap.from_labels(list(names), "t")
    assert set(label_map.names) == set(names)
    assert LabelMap.from_labels(["2", "10", "①"], "t").names == ("2", "10", "①")
