"""The data doctor on labels and texts (D4 of RELIABILITY.md): each problem found, named with file and line,
and the fatal ones stop fit before training."""
from __future__ import annotations

from pathlib import Path

import pytest

import transferkit
from tests.conftest import bbc_texts, write_text_csv, write_text_jsonl
from transferkit.core.errors import DataError
from transferkit.data.doctor import DoctorConfig, diagnose
from transferkit.data.examples import DataSplits, Examples
from transferkit.data.names import similar_names
from transferkit.data.sources import TextColumns, load_source


def _kinds(report) -> list[str]:
    return sorted(f.kind for f in report.findings)


def _texts(n: int, prefix: str) -> list[str]:
    return [f"{prefix} example number {i} with a few distinct words {i * 7919 % 1000}" for i in range(n)]


def test_clean_text_data_has_no_findings(text_csv: Path):
    report = diagnose(load_source(text_csv), DoctorConfig(max_tokens=256))
    assert report.findings == [] and report.n_skipped == 0 and report.stats["class_counts"] == {
        "business": 8, "sports": 8, "tech": 8}


def test_non_utf8_is_reported_with_line_read_leniently_and_fatal_when_strict(tmp_path: Path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("text,label\nhello there,a\ncaf\u00e9 au lait \u00e0 la cr\u00e8me,b\nplain,a\nmore,b\n"
                     .encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.csv:3: byte 0xe9"):
        load_source(path)  # the default stays strict
    splits = load_source(path, encoding_errors="replace")
    assert splits.train.inputs[1] == "caf\ufffd au lait \ufffd la cr\ufffdme" and splits.train.lines == [2, 3, 4, 5]
    report = diagnose(splits)
    [finding] = report.findings
    assert (finding.kind, finding.path, finding.line, finding.severity) == ("non-utf8", str(path), 3, "warning")
    assert "3 byte(s) (0xe9, 0xe0, 0xe8)" in finding.message and report.stats["replaced_bytes"] == 3
    strict = diagnose(splits, DoctorConfig(strict=True))
    assert [f.severity for f in strict.findings] == ["fatal"]
    with pytest.raises(DataError, match=r"latin1.csv:3: 3 byte\(s\)"):
        strict.raise_if_fatal()


def test_empty_and_long_texts(tmp_path: Path):
    texts = ["short one", "   ", "word " * 300, "another short text"]
    path = write_text_jsonl(tmp_path / "t.jsonl", texts, ["a", "b", "a", "b"])
    report = diagnose(load_source(path), DoctorConfig(max_tokens=256))
    empty = next(f for f in report.findings if f.kind == "empty-text")
    long = next(f for f in report.findings if f.kind == "long-text")
    assert (empty.path, empty.line) == (str(path), 2)
    assert long.line == 3 and "1 of 4 texts" in long.message and "about 390" in long.message
    assert _kinds(diagnose(load_source(path))) == ["empty-text"], "no length check without a token limit"


def test_single_class_and_one_sample_class(tmp_path: Path):
    one = write_text_csv(tmp_path / "one.csv", _texts(5, "x"), ["a"] * 5)
    report = diagnose(load_source(one))
    assert [(f.kind, f.severity) for f in report.findings] == [("single-class", "fatal")]
    tiny = write_text_csv(tmp_path / "tiny.csv", _texts(6, "y"), ["a"] * 5 + ["b"])
    report = diagnose(load_source(tiny))
    [finding] = report.findings
    assert (finding.kind, finding.severity, finding.line) == ("small-class", "fatal", 7)
    assert "--val-data" in finding.message
    val = Examples("text", ["v1", "v2"], ["a", "b"], "val")
    with_val = diagnose(DataSplits(load_source(tiny).train, val))
    assert [(f.kind, f.severity) for f in with_val.findings] == [("small-class", "warning")]


def test_empty_class_folder_and_similar_names(make_digit_folder):
    root = make_digit_folder(digits=(0, 1), per_class=3)
    (root / "Cats").mkdir()
    (root / "cats").mkdir()
    (root / "golden_retriever").mkdir()
    (root / "golden retrievers").mkdir()
    report = diagnose(load_source(root))
    empty = sorted(Path(f.path).name for f in report.findings if f.kind == "empty-class")
    assert empty == ["Cats", "cats", "golden retrievers", "golden_retriever"]
    similar = [f.message for f in report.findings if f.kind == "similar-class-names"]
    assert len(similar) == 2 and "'Cats' and 'cats'" in similar[0] and "plural" in similar[1]
    assert not report.fatal


def test_similar_names_rules():
    found = {(a, b): why for a, b, why in similar_names(
        ["Dog", "dog ", "colour", "color", "box", "boxes", "1", "7", "cat", "car", "Bag", "Ankle boot", "Sneaker",
         "Sandal", "dress", "Dresses"])}
    assert found == {("Dog", "dog "): "differ only in case, spaces or separators",
                     ("color", "colour"): "differ by a single character",
                     ("box", "boxes"): "differ only by a plural ending",
                     ("Dresses", "dress"): "differ only by a plural ending"}


def test_imbalance_one_to_a_hundred(tmp_path: Path):
    path = write_text_csv(tmp_path / "skew.csv", _texts(200, "big") + _texts(2, "small"), ["big"] * 200 + ["small"] * 2)
    report = diagnose(load_source(path))
    [finding] = report.findings
    assert finding.kind == "imbalance" and "100.0x" in finding.message and report.stats["imbalance_ratio"] == 100.0
    assert diagnose(load_source(path), DoctorConfig(imbalance_warning=200)).findings == []


def test_unknown_label_in_test_names_file_and_line(tmp_path: Path, text_csv: Path):
    test = write_text_csv(tmp_path / "test.csv", ["a new business story", "something odd"], ["business", "weather"])
    report = diagnose(DataSplits(load_source(text_csv).train, test=load_source(test).train))
    [finding] = report.findings
    assert (finding.kind, finding.path, finding.line, finding.severity) == ("unknown-label", str(test), 3, "fatal")
    assert "'weather'" in finding.message


def test_text_leakage_exact_and_near_and_dedupe(tmp_path: Path):
    texts, labels = bbc_texts(per_class=4)
    near = texts[1].replace(texts[1].split()[5], "CHANGED", 1)
    test_texts = ["  " + texts[0].upper() + "  ", near, "a completely new text about the weather and nothing else"]
    test = write_text_csv(tmp_path / "test.csv", test_texts, [labels[0], labels[1], labels[2]])
    train = write_text_csv(tmp_path / "train.csv", texts + [texts[3]], labels + [labels[3]])
    splits = DataSplits(load_source(train).train, test=load_source(test).train)
    report = diagnose(splits)
    got = sorted((f.kind, f.path, f.line) for f in report.findings)
    assert got == [("duplicate", str(train), 14), ("leakage", str(test), 2), ("near-duplicate", str(test), 3)], got
    near_finding = next(f for f in report.findings if f.kind == "near-duplicate")
    assert f"{train}:3" in near_finding.message and "word 3-grams" in near_finding.message
    deduped = diagnose(splits, DoctorConfig(dedupe=True))
    clean = deduped.apply(splits)
    assert deduped.n_skipped == 3 and len(clean.train) == 12 and clean.test.inputs == [test_texts[2]]
    assert clean.test.lines == [4]


@pytest.mark.slow
def test_fit_reads_bad_utf8_leniently_and_records_the_doctor(tmp_path: Path, texts_and_labels):
    texts, labels = texts_and_labels
    path = tmp_path / "mixed.csv"
    write_text_csv(path, texts, labels)
    path.write_bytes(path.read_bytes() + "caf\u00e9 news,business\n".encode("latin-1"))
    result = transferkit.fit(str(path), model="minilm", strategy="linear-probe", baseline=False, out=str(tmp_path / "r"),
                             progress=False)
    metrics = (result.run_dir / "metrics.json").read_text()
    assert '"n_skipped": 0' in metrics and '"n_train_used"' in metrics
    report = (result.run_dir / "data_report.json").read_text()
    assert '"non-utf8"' in report and '"replaced_bytes": 1' in report
    assert "non-utf8" in (result.run_dir / "report.md").read_text()
    with pytest.raises(DataError, match="mixed.csv:26"):
        transferkit.fit(str(path), model="minilm", strategy="linear-probe", strict=True, out=str(tmp_path / "s"))
    assert not (tmp_path / "s").exists()


def test_columns_reach_the_doctor(tmp_path: Path):
    path = write_text_csv(tmp_path / "c.csv", ["", "fine text", "more text", "last text"], ["p", "q", "p", "q"],
                          text_column="body", label_column="y")
    report = transferkit.api.doctor(str(path), text_column="body", label_column="y")
    assert [(f.kind, f.line) for f in report.findings] == [("empty-text", 2)]
    assert load_source(path, TextColumns("body", "y")).train.lines == [2, 3, 4, 5]


# ---- long texts without spaces (issue 12): counted with the backbone's tokenizer, or estimated per CJK character

CHINESE = "\u4eca\u5929\u5929\u6c14\u5f88\u597d\u6211\u4eec\u53bb\u516c\u56ed\u6563\u6b65" * 50  # 650 characters


def test_long_chinese_text_is_found_without_a_tokenizer(tmp_path: Path):
    path = write_text_jsonl(tmp_path / "zh.jsonl", [CHINESE, "\u77ed\u6587", "short one", "another"], ["a", "b", "a", "b"])
    [finding] = diagnose(load_source(path), DoctorConfig(max_tokens=256)).findings
    assert (finding.kind, finding.line) == ("long-text", 1) and "1 of 4 texts" in finding.message
    assert "about 650" in finding.message and "estimated" in finding.message


def test_long_texts_are_counted_with_the_backbones_tokenizer(tmp_path: Path):
    from transferkit.backbones.text import token_counter

    count = token_counter("minilm")
    assert count is not None and count([CHINESE, "hello world"]) == [652, 4]  # [CLS] + 650 characters + [SEP]
    texts = [CHINESE, "word " * 250, "short one", "another"]  # 250 words: 252 tokens, under the limit
    path = write_text_jsonl(tmp_path / "t.jsonl", texts, ["a", "b", "a", "b"])
    asked: list[str] = []

    def recording(batch):
        asked.extend(batch)
        return count(batch)

    [finding] = diagnose(load_source(path), DoctorConfig(max_tokens=256, count_tokens=recording)).findings
    assert finding.line == 1 and "1 of 4 texts" in finding.message and "has 652" in finding.message
    assert "counted with its tokenizer" in finding.message
    assert asked == texts[:2], "texts shorter in bytes than the limit cannot be over it and are not tokenized"


def test_doctor_counts_with_the_text_models_tokenizer(tmp_path: Path):
    path = write_text_csv(tmp_path / "zh.csv", [CHINESE, "\u77ed\u6587", "short one", "another"], ["a", "b", "a", "b"])
    [finding] = transferkit.api.doctor(str(path)).findings
    assert finding.kind == "long-text" and "has 652" in finding.message
