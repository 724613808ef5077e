"""Token-classification data: CoNLL and JSONL readers, tag-scheme detection and IOB2 normalisation, the
file:line refusals, detection of token files, fingerprints of word lists, words and character offsets."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from transferkit.core.errors import DataError
from transferkit.data.conll import (
    detect_scheme,
    is_token_file,
    read_conll,
    read_raw_lines,
    read_token_jsonl,
    split_words,
    to_iob2,
    word_offsets,
)
from transferkit.data.examples import Examples


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_conll_tab_file_with_docstart_and_whitespace_only_separators(tmp_path):
    path = write(tmp_path / "ner.txt", "-DOCSTART-\tO\n\nEmpire\tB-facility\nState\tI-facility\n.\tO\n\t\n"
                                       "Hi\tO\n@bob\tB-person\n \n\n")
    ex = read_conll(path)
    assert ex.inputs == [["Empire", "State", "."], ["Hi", "@bob"]]
    assert ex.labels == [["B-facility", "I-facility", "O"], ["O", "B-person"]]
    assert ex.lines == [3, 7]
    assert ex.ids == ["Empire State .", "Hi @bob"]
    assert ex.is_tokens and ex.modality == "text"


def test_conll2003_four_space_separated_columns_take_the_last_as_tag(tmp_path):
    path = write(tmp_path / "train.conll", "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n"
                                           "German JJ B-NP B-MISC\n")
    assert read_conll(path).labels == [["B-ORG", "O", "B-MISC"]]


def test_space_separated_docstart_line_in_a_tab_file_is_skipped(tmp_path):
    path = write(tmp_path / "train.conll", "-DOCSTART- O\n\nAnna\tB-PER\nlives\tO\n\nNew York\tB-LOC\n")
    ex = read_conll(path)
    assert ex.inputs == [["Anna", "lives"], ["New York"]]
    assert ex.labels == [["B-PER", "O"], ["B-LOC"]]
    assert ex.lines == [3, 6]


def test_raw_tags_are_kept_only_when_a_prefixed_file_has_tags_without_a_prefix(tmp_path):
    typo = read_conll(write(tmp_path / "typo.conll", "Anna\tB-PER\nlives\t0\n\nin\tO\nRome\tX-LOC\n"))
    assert typo.raw_labels == [["B-PER", "0"], ["O", "X-LOC"]] and typo.labels[1] == ["O", "B-X-LOC"]
    assert typo.subset([1]).raw_labels == [["O", "X-LOC"]]
    assert read_conll(write(tmp_path / "io.conll", "Anna\tPER\nlives\tO\n")).raw_labels is None  # IO scheme
    assert read_conll(write(tmp_path / "ok.conll", "Anna\tB-PER\nlives\tO\n")).raw_labels is None


def test_a_line_with_the_wrong_column_count_names_file_and_line(tmp_path):
    path = write(tmp_path / "bad.conll", "a\tO\nb\tO\nNew York\n\nc\tO\n")
    with pytest.raises(DataError, match=r"bad\.conll:3: 1 column\(s\) where 2 is the file's majority"):
        read_conll(path)


def test_one_column_file_is_unlabeled_words_for_predict_only(tmp_path):
    path = write(tmp_path / "words.conll", "Paris\nis\n\nnice\n")
    assert read_conll(path, labeled=False).inputs == [["Paris", "is"], ["nice"]]
    assert read_conll(path, labeled=False).labels is None
    with pytest.raises(DataError, match="no tags to learn from"):
        read_conll(path)


@pytest.mark.parametrize(("tags", "scheme", "iob2"), [
    (["B-PER", "I-PER", "O", "B-LOC"], "IOB2", ["B-PER", "I-PER", "O", "B-LOC"]),
    (["I-PER", "I-PER", "B-PER", "O", "I-LOC"], "IOB1", ["B-PER", "I-PER", "B-PER", "O", "B-LOC"]),
    (["S-PER", "B-LOC", "I-LOC", "E-LOC", "O"], "IOBES", ["B-PER", "B-LOC", "I-LOC", "I-LOC", "O"]),
    (["U-PER", "B-LOC", "L-LOC"], "IOBES", ["B-PER", "B-LOC", "I-LOC"]),  # BILOU
    (["PER", "PER", "O", "LOC"], "IOB1", ["B-PER", "I-PER", "O", "B-LOC"]),  # IO: bare types
])
def test_schemes_are_detected_and_normalised_to_iob2(tags, scheme, iob2):
    assert detect_scheme([tags]) == scheme
    assert to_iob2(tags, scheme)[0] == iob2


def test_strict_refuses_an_i_tag_that_cannot_continue_default_reads_it_as_a_start(tmp_path):
    path = write(tmp_path / "mixed.conll", "Anna\tB-PER\nin\tO\nRome\tB-LOC\nSmith\tI-PER\n")
    assert read_conll(path).labels == [["B-PER", "O", "B-LOC", "B-PER"]]
    with pytest.raises(DataError, match=r"mixed\.conll:4: tag 'I-PER' follows 'B-LOC'.*write 'B-PER'"):
        read_conll(path, strict=True)


def test_jsonl_tokens_and_tags_and_its_refusals(tmp_path):
    rows = [{"tokens": ["EU", "rejects", "German"], "tags": ["B-ORG", "O", "B-MISC"]},
            {"tokens": ["Peter", "Blackburn"], "ner_tags": ["B-PER", "I-PER"]}]
    path = write(tmp_path / "ner.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    ex = read_token_jsonl(path)
    assert ex.inputs == [r["tokens"] for r in rows] and ex.labels == [["B-ORG", "O", "B-MISC"], ["B-PER", "I-PER"]]
    bad = write(tmp_path / "bad.jsonl", json.dumps(rows[0]) + "\n" + json.dumps({"tokens": ["a", "b"], "tags": ["O"]}))
    with pytest.raises(DataError, match=r"bad\.jsonl:2: 2 tokens but 1 tags"):
        read_token_jsonl(bad)
    numbers = write(tmp_path / "ids.jsonl", json.dumps({"tokens": ["a"], "tags": [3]}) + "\n")
    with pytest.raises(DataError, match=r"ids\.jsonl:1: 'tags' must be a list of tag names"):
        read_token_jsonl(numbers)
    empty = write(tmp_path / "empty.jsonl", json.dumps({"tokens": [], "tags": []}) + "\n")
    with pytest.raises(DataError, match=r"empty\.jsonl:1: 'tokens' must be a non-empty list"):
        read_token_jsonl(empty)


def test_token_files_are_detected_and_other_text_files_are_not(tmp_path):
    assert is_token_file(write(tmp_path / "a.conll", "x\n"))
    assert is_token_file(write(tmp_path / "ner.txt", "Paris\tB-geo-loc\nis\tO\n\t\nok\tO\n"))
    assert not is_token_file(write(tmp_path / "notes.txt", "Paris is nice\nso is Rome\n"))
    assert is_token_file(write(tmp_path / "t.jsonl", json.dumps({"tokens": ["a"], "tags": ["O"]}) + "\n"))
    assert not is_token_file(write(tmp_path / "c.jsonl", json.dumps({"text": "a", "label": "x"}) + "\n"))
    assert not is_token_file(write(tmp_path / "c.csv", "text,label\na,b\n"))


def test_word_lists_fingerprint_apart_and_subset_keeps_lines():
    a = Examples("text", [["a b"]], [["O"]], "x")
    b = Examples("text", [["a", "b"]], [["O", "O"]], "x")
    assert a.fingerprint() != b.fingerprint()
    assert Examples("text", [["a", "b"]], [["O", "B-X"]], "x").fingerprint() != b.fingerprint()
    ex = Examples("text", [["a"], ["b", "c"]], [["O"], ["B-X", "I-X"]], "x", lines=[1, 3])
    assert ex.subset([1]).lines == [3] and ex.subset([1]).ids == ["b c"]
    assert ex.class_counts() == {"B-X": 1, "I-X": 1, "O": 1}


def test_raw_lines_split_into_words_whose_offsets_point_into_the_line(tmp_path):
    text = "@paulwalk It's the Empire State Building, in NYC!"
    words = split_words(text)
    assert words == ["@paulwalk", "It's", "the", "Empire", "State", "Building", ",", "in", "NYC", "!"]
    assert [text[s:e] for s, e in word_offsets(text, words)] == words
    ex = read_raw_lines(write(tmp_path / "raw.txt", "\n" + text + "\n"))
    assert ex.ids == ["", text] and ex.inputs == [[], words] and ex.lines == [1, 2] and ex.labels is None  # a row
    with pytest.raises(DataError, match="no text lines"):  # per line, the blank one too; but not only blank ones
        read_raw_lines(write(tmp_path / "blank.txt", "\n  \n"))
