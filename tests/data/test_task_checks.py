"""The data doctor's per-task label checks (transferkit.data.task_checks), each with its file:line: hints that
classification labels look like label sets or numbers, NaN/inf and constant regression targets, multi-label rows
without a label, empty tag sequences; and fit / doctor on the command line printing the label-set hint."""
from __future__ import annotations

import csv
from pathlib import Path

from transferkit.data.doctor import DoctorConfig, diagnose
from transferkit.data.examples import DataSplits, Examples
from transferkit.data.sources import load_source

GENRES = ["drama|comedy", "drama", "comedy|action", "action", "drama", "comedy"]


def write_csv(path: Path, labels: list[str]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows([f"film number {i} of the year", y] for i, y in enumerate(labels))
    return path


def findings(path: Path, **config) -> dict:
    return {f.kind: f for f in diagnose(load_source(path), DoctorConfig(**config)).findings}


def test_labels_joined_by_a_pipe_get_the_multilabel_hint_with_file_and_line(tmp_path: Path):
    data = write_csv(tmp_path / "films.csv", GENRES * 3)
    hint = findings(data)["label-sets-as-classes"]
    assert (hint.path, hint.line, hint.severity) == (str(data), 2, "warning")  # the header is line 1
    assert "6 rows (2 distinct labels) contain '|' (here 'drama|comedy')" in hint.message
    assert "pass --task multilabel (--label-sep '|')" in hint.message and "5 classes" in hint.message
    assert "label-sets-as-classes" not in findings(data, hints=False)  # --task classification given by name


def test_other_separators_need_recurring_parts(tmp_path: Path):
    sets = write_csv(tmp_path / "sets.csv", ["a;b", "a;c", "b", "c"] * 3)
    assert "--label-sep ';'" in findings(sets)["label-sets-as-classes"].message
    names = write_csv(tmp_path / "names.csv", ["Smith, John", "Doe, Jane", "Brown, Ann", "Lee, Kim"] * 3)
    assert "label-sets-as-classes" not in findings(names)  # commas in names, no part seen twice


def test_numbers_with_a_nan_get_the_regression_hint(tmp_path: Path):
    values = [f"{0.37 * i:.2f}" for i in range(40)]
    values[7] = "nan"
    data = write_csv(tmp_path / "scores.csv", values)
    hint = findings(data)["numbers-as-classes"]
    assert hint.line == 9 and "'nan' is not a finite number" in hint.message and "--task regression" in hint.message
    codes = write_csv(tmp_path / "codes.csv", [str(i % 4) for i in range(20)] + ["n/a"])
    assert "numbers-as-classes" not in findings(codes)  # a few integer codes are classes anyway


def test_small_float_scores_are_detected_as_regression_and_repeated_ones_get_the_hint(tmp_path: Path, monkeypatch,
                                                                                       capsys):
    from tests.test_cli_doctor import run_main

    scores = write_csv(tmp_path / "scores.csv", [f"{-0.648 + 0.119 * i:.3f}" for i in range(12)])
    code, out, _ = run_main(["doctor", "--data", str(scores)], monkeypatch, capsys)
    assert code == 0 and "task: regression (detected: 12 numeric labels" in " ".join(out.split())
    assert "small-class" not in out
    halves = write_csv(tmp_path / "halves.csv", ["0.5", "1.5", "2", "2.5"] * 3)  # few values: left classes
    hint = findings(halves)["numbers-as-classes"]
    assert "the labels are all numbers" in hint.message and "pass --task regression if this is a score" in hint.message
    assert "numbers-as-classes" not in findings(write_csv(tmp_path / "stars.csv", ["1", "2", "3", "4", "5"] * 3))


def test_regression_targets_nan_inf_and_constant_splits(tmp_path: Path):
    train = write_csv(tmp_path / "train.csv", ["1.5", "inf", "2", "NaN", "3"])
    found = diagnose(load_source(train), DoctorConfig(task="regression")).findings
    assert [(f.kind, f.line, f.severity) for f in found if f.kind == "bad-target"] == \
        [("bad-target", 3, "fatal"), ("bad-target", 5, "fatal")]
    varied = Examples("text", ["a", "b", "c"], ["1", "2", "3"], "train.csv")
    constant = Examples("text", ["d", "e"], ["4", "4.0"], "val.csv", lines=[2, 3])
    report = diagnose(DataSplits(varied, constant), DoctorConfig(task="regression"))
    (flat,) = [f for f in report.findings if f.kind == "constant-target"]
    assert (flat.split, flat.path, flat.severity) == ("val", "val.csv", "warning") and "R² is undefined" in flat.message
    report = diagnose(DataSplits(constant, varied), DoctorConfig(task="regression"))
    assert [(f.split, f.severity) for f in report.findings if f.kind == "constant-target"] == [("train", "fatal")]


def test_empty_tag_sequence_and_missing_multilabel_set_name_their_line():
    words = Examples("text", [["Anna", "lives"], ["in", "Rome"]], [["B-PER", "O"], []], "t.jsonl", lines=[1, 2])
    (empty,) = [f for f in diagnose(DataSplits(words), DoctorConfig(task="tokens")).findings if f.kind == "empty-tags"]
    assert (empty.line, empty.severity) == (2, "fatal") and "give one tag per word" in empty.message
    rows = Examples("text", ["a", "b", "c"], [("x",), (), ("y",)], "m.jsonl", lines=[1, 2, 3])
    (none,) = [f for f in diagnose(DataSplits(rows), DoctorConfig(task="multilabel")).findings if f.kind == "no-labels"]
    assert (none.line, none.severity) == (2, "warning")


def test_fit_and_doctor_print_the_hint_only_when_the_task_was_detected(tmp_path: Path, monkeypatch, capsys):
    from tests.test_cli_doctor import run_main

    data = write_csv(tmp_path / "films.csv", GENRES * 4)
    code, out, _ = run_main(["doctor", "--data", str(data)], monkeypatch, capsys)
    assert code == 0 and "label-sets-as-classes" in out and "--task multilabel" in out
    code, out, _ = run_main(["doctor", "--data", str(data), "--task", "classification"], monkeypatch, capsys)
    assert code == 0 and "label-sets-as-classes" not in out
    code, _, err = run_main(["fit", "--data", str(data), "--model", "minilm", "--strategy", "linear-probe", "--out",
                             str(tmp_path / "run")], monkeypatch, capsys)
    text = " ".join(err.split())
    assert code == 0 and f"hint: {data}:2: 8 rows (2 distinct labels) contain '|'" in text and "--label-sep '|'" in text
