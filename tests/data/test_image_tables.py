"""transferkit.data.image_tables: a CSV/JSONL column of image paths read as an image source (detection, the
--image-column override, paths relative to the table's folder), and the data doctor's findings on its rows."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transferkit.core.errors import DataError
from transferkit.data.doctor import DoctorConfig, diagnose
from transferkit.data.examples import DataSplits
from transferkit.data.sources import TextColumns, load_source


def write_images(root: Path, n: int = 4) -> list[str]:
    """n tiny PNGs under root/images/, as 'images/k.png' (their paths relative to root)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    names = []
    for k in range(n):
        Image.fromarray(np.full((8, 8, 3), 40 * k, dtype=np.uint8)).save(root / f"images/{k}.png")
        names.append(f"images/{k}.png")
    return names


def write_table(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def test_a_text_column_of_image_files_is_read_as_images_relative_to_the_table(tmp_path, monkeypatch):
    names = write_images(tmp_path / "data")
    write_table(tmp_path / "data" / "labels.csv", "text,label", [f"{n},{'ab'[k % 2]}" for k, n in enumerate(names)])
    monkeypatch.chdir(tmp_path)  # the paths are the table's, not the working directory's
    train = load_source("data/labels.csv").train
    assert train.modality == "image" and train.image_column == "text"
    assert train.inputs == [str(tmp_path / "data" / n) for n in names]
    assert train.ids == names and train.lines == [2, 3, 4, 5]
    assert train.labels == ["a", "b", "a", "b"]


def test_image_column_names_another_column_and_absolute_paths_are_kept(tmp_path):
    names = write_images(tmp_path / "pics")
    absolute = str(tmp_path / "pics" / names[0])
    rows = [f"{absolute},caption one,a", f"{names[1]},caption two,b"]
    table = write_table(tmp_path / "pics" / "t.csv", "file,text,label", rows)
    assert load_source(table).train.modality == "text"  # the text column holds captions
    train = load_source(table, TextColumns(image="file")).train
    assert train.modality == "image" and train.image_column == "file"
    assert train.inputs == [absolute, str(tmp_path / "pics" / names[1])]
    assert train.ids == [absolute, names[1]]


def test_jsonl_image_table_with_label_lists(tmp_path):
    names = write_images(tmp_path)
    table = tmp_path / "t.jsonl"
    table.write_text("".join(json.dumps({"image": n, "labels": ["x", "y"][: k % 2 + 1]}) + "\n"
                             for k, n in enumerate(names)))
    train = load_source(table, TextColumns(image="image")).train
    assert train.modality == "image" and train.labels[:2] == [("x",), ("x", "y")]


def test_plain_texts_stay_texts(tmp_path):
    table = write_table(tmp_path / "t.csv", "text,label", ["a cat on a mat,a", "see photo.png,b"])
    assert load_source(table).train.modality == "text"


def test_a_missing_image_column_points_at_the_option(tmp_path):
    write_images(tmp_path)
    table = write_table(tmp_path / "t.csv", "image,label", ["images/0.png,a"])
    with pytest.raises(DataError, match=r"no 'text' column.*--image-column NAME"):
        load_source(table)
    with pytest.raises(DataError, match=r"no 'picture' column"):
        load_source(table, TextColumns(image="picture"))


def test_when_no_listed_image_exists_the_error_names_line_path_tried_and_fix(tmp_path):
    (tmp_path / "sub").mkdir()
    table = write_table(tmp_path / "sub" / "t.csv", "text,label", ["img/a.png,a", "img/b.png,b"])
    with pytest.raises(DataError) as info:
        load_source(table)
    message = str(info.value)
    assert f"{table}:2" in message and str(tmp_path / "sub" / "img" / "a.png") in message
    assert "relative to the table's folder" in message


def test_empty_path_and_url_are_refused_with_the_line(tmp_path):
    names = write_images(tmp_path)
    table = write_table(tmp_path / "t.csv", "image,label", [f"{names[0]},a", ",b"])
    with pytest.raises(DataError, match=r"t\.csv:3: the 'image' value is empty"):
        load_source(table, TextColumns(image="image"))
    table = write_table(tmp_path / "u.csv", "image,label", [f"{names[0]},a", "https://x.org/a.png,b"])
    with pytest.raises(DataError, match=r"u\.csv:3: .* is a URL; images are not downloaded"):
        load_source(table, TextColumns(image="image"))


def test_windows_separators_are_tried_as_slashes(tmp_path):
    names = write_images(tmp_path)
    table = write_table(tmp_path / "t.csv", "text,label", [n.replace("/", "\\") + ",a" for n in names])
    train = load_source(table).train
    assert train.modality == "image" and all(os.path.isfile(p) for p in train.inputs)


def test_doctor_names_missing_and_unreadable_rows_with_file_and_line(tmp_path):
    names = write_images(tmp_path, 6)
    (tmp_path / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    rows = [f"{n},{'ab'[k % 2]}" for k, n in enumerate(names)] + ["images/gone.png,a", "images/broken.png,b"]
    table = write_table(tmp_path / "t.csv", "text,label", rows)
    splits = load_source(table)
    report = diagnose(splits)
    by_kind = {f.kind: f for f in report.findings}
    missing, broken = by_kind["missing-image"], by_kind["unreadable-image"]
    assert (missing.path, missing.line) == (str(table), 8) and missing.severity == "warning"
    assert "images/gone.png" in missing.message and str(tmp_path / "images" / "gone.png") in missing.message
    assert "fix the path in the table" in missing.message
    assert (broken.path, broken.line) == (str(table), 9) and "images/broken.png" in broken.message
    assert report.n_skipped == 2 and report.stats["image_columns"] == {"train": "text"}
    assert [s["path"] for s in report.skipped()] == [f"{table}:8", f"{table}:9"]
    assert len(report.apply(splits).train) == 6
    strict = diagnose(splits, DoctorConfig(strict=True))
    assert {f.kind for f in strict.fatal} >= {"missing-image", "unreadable-image"}
    with pytest.raises(DataError, match=r"t\.csv:8"):
        strict.raise_if_fatal()


def test_doctor_names_an_unknown_test_label_by_the_tables_line(tmp_path):
    names = write_images(tmp_path, 4)
    train = write_table(tmp_path / "train.csv", "text,label", [f"{n},{'ab'[k % 2]}" for k, n in enumerate(names)])
    test = write_table(tmp_path / "test.csv", "text,label", [f"{names[0]},a", f"{names[1]},c"])
    report = diagnose(DataSplits(load_source(train).train, test=load_source(test).train))
    unknown = next(f for f in report.findings if f.kind == "unknown-label")
    assert (unknown.path, unknown.line) == (str(test), 3)
