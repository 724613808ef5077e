"""transferkit.data: sources (folders, csv, jsonl), their error messages, labels, splits, image decoding."""
from __future__ import annotations

import io
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import write_digit_folder, write_text_csv
from transferkit.core.errors import DataError
from transferkit.data.examples import Examples
from transferkit.data.images import load_image
from transferkit.data.labels import LabelMap
from transferkit.data.sources import TextColumns, load_source
from transferkit.data.splits import stratified_split, subsample_per_class

# ---------------------------------------------------------------------------------------------------- good sources


def test_folder_with_class_dirs(digits_folder: Path):
    splits = load_source(digits_folder)
    assert splits.val is None and splits.test is None
    train = splits.train
    assert train.modality == "image"
    assert len(train) == 30
    assert train.class_counts() == {"0": 10, "1": 10, "2": 10}
    for path, label in zip(train.inputs, train.labels):  # each image's label is its folder name
        assert Path(path).parent.name == label
        assert Path(path).exists()


def test_folder_with_train_and_test_subfolders(digits_split_folder: Path):
    splits = load_source(digits_split_folder)
    assert splits.val is None
    assert splits.train.class_counts() == {"0": 12, "1": 12, "2": 12, "3": 12}
    assert splits.test is not None
    assert splits.test.class_counts() == {"0": 5, "1": 5, "2": 5, "3": 5}
    assert not set(splits.train.inputs) & set(splits.test.inputs)
    assert all("/train/" in p for p in splits.train.inputs)
    assert all("/test/" in p for p in splits.test.inputs)


def test_csv(text_csv: Path, texts_and_labels):
    texts, labels = texts_and_labels
    train = load_source(text_csv).train
    assert train.modality == "text"
    assert train.inputs == texts
    assert train.labels == labels
    assert train.class_counts() == {"business": 8, "sports": 8, "tech": 8}


def test_jsonl(text_jsonl: Path, texts_and_labels):
    texts, labels = texts_and_labels
    train = load_source(text_jsonl).train
    assert train.modality == "text"
    assert train.inputs == texts
    assert train.labels == labels


def test_csv_with_custom_columns(tmp_path: Path):
    path = write_text_csv(tmp_path / "reviews.csv", ["good", "bad", "fine"], ["5", "1", "3"], "body", "stars")
    train = load_source(path, TextColumns("body", "stars")).train
    assert train.inputs == ["good", "bad", "fine"]
    assert train.labels == ["5", "1", "3"]


def test_unlabeled_csv_is_accepted_for_prediction(tmp_path: Path):
    path = write_text_csv(tmp_path / "new.csv", ["one", "two"], None)
    train = load_source(path, labeled=False).train
    assert train.inputs == ["one", "two"]
    assert train.labels is None


def test_loose_images_are_accepted_unlabeled(tmp_path: Path):
    root = write_digit_folder(tmp_path / "imgs", (4,), 3)
    for p in (root / "4").iterdir():
        p.rename(root / p.name)
    (root / "4").rmdir()
    train = load_source(root, labeled=False).train
    assert len(train) == 3 and train.labels is None


# ---------------------------------------------------------------------------------------------------------- errors


def test_missing_path(tmp_path: Path):
    missing = tmp_path / "no" / "such"
    with pytest.raises(DataError) as info:
        load_source(missing)
    assert str(missing) in str(info.value)
    assert "does not exist" in str(info.value)


def test_empty_folder(tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError) as info:
        load_source(empty)
    assert str(empty) in str(info.value)
    assert "No images" in str(info.value)


def test_class_folders_without_images(tmp_path: Path):
    root = tmp_path / "data"
    (root / "cats").mkdir(parents=True)
    (root / "dogs").mkdir()
    (root / "dogs" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError) as info:
        load_source(root)
    assert str(root) in str(info.value)
    assert "cats" in str(info.value) and "dogs" in str(info.value)


def test_loose_images_without_class_folders_when_labels_are_needed(tmp_path: Path):
    root = tmp_path / "loose"
    root.mkdir()
    Image.new("RGB", (8, 8), "white").save(root / "a.png")
    Image.new("RGB", (8, 8), "black").save(root / "b.png")
    with pytest.raises(DataError) as info:
        load_source(root, labeled=True)
    message = str(info.value)
    assert str(root) in message
    assert "class folders" in message


def test_single_class_is_rejected_by_the_label_map(tmp_path: Path):
    root = write_digit_folder(tmp_path / "one", (7,), 3)
    train = load_source(root).train  # reading works; a label map needs two classes
    with pytest.raises(DataError) as info:
        LabelMap.from_labels(train.labels, train.source)
    message = str(info.value)
    assert str(root) in message
    assert "'7'" in message
    assert "at least 2 classes" in message
    with pytest.raises(DataError, match="none"):
        LabelMap.from_labels([], "empty.csv")


def test_csv_missing_text_column(tmp_path: Path):
    path = write_text_csv(tmp_path / "t.csv", ["a", "b"], ["x", "y"], text_column="body")
    with pytest.raises(DataError) as info:
        load_source(path)
    message = str(info.value)
    assert str(path) in message
    assert "'text'" in message
    assert "body" in message  # lists what was found
    assert "--text-column" in message


def test_csv_missing_label_column(tmp_path: Path):
    path = write_text_csv(tmp_path / "t.csv", ["a", "b"], None)
    with pytest.raises(DataError) as info:
        load_source(path)
    assert str(path) in str(info.value)
    assert "--label-column" in str(info.value)


def test_csv_empty_label_names_the_line(tmp_path: Path):
    path = tmp_path / "t.csv"
    path.write_text("text,label\nhello,a\nworld,\nagain,b\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_source(path)
    assert f"{path}:3" in str(info.value)


def test_non_utf8_csv_names_the_line(tmp_path: Path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("text,label\nhello,a\ncaf\u00e9 au lait,b\n".encode("latin-1"))
    with pytest.raises(DataError) as info:
        load_source(path)
    message = str(info.value)
    assert f"{path}:3" in message
    assert "UTF-8" in message
    assert "0xe9" in message


def test_empty_csv(tmp_path: Path):
    path = tmp_path / "empty.csv"
    path.write_text("", encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_source(path)
    assert str(path) in str(info.value)


def test_bad_jsonl_line(tmp_path: Path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n\n{"text": "b", "label": \n{"text": "c", "label": "y"}\n',
                    encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_source(path)
    message = str(info.value)
    assert f"{path}:3" in message
    assert "JSON" in message


def test_jsonl_line_that_is_not_an_object(tmp_path: Path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n["b", "y"]\n', encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_source(path)
    assert f"{path}:2" in str(info.value)


def test_unsupported_file_type(tmp_path: Path):
    path = tmp_path / "data.parquet"
    path.write_bytes(b"PAR1")
    with pytest.raises(DataError) as info:
        load_source(path)
    assert str(path) in str(info.value)


def test_label_map_is_sorted_naturally_and_rejects_unknown_labels():
    label_map = LabelMap.from_labels(["10", "2", "1", "2"], "src")
    assert label_map.names == ("1", "2", "10")
    assert label_map.encode(["10", "1"]) == [2, 0]
    with pytest.raises(DataError) as info:
        label_map.encode(["1", "3"], "val.csv")
    assert "val.csv" in str(info.value) and "'3'" in str(info.value)


# ---------------------------------------------------------------------------------------------------------- splits


def _examples(counts: dict[str, int]) -> Examples:
    labels = [name for name, n in counts.items() for _ in range(n)]
    return Examples("text", [f"text {i}" for i in range(len(labels))], labels, "mem")


def test_subsample_per_class_counts():
    examples = _examples({"a": 10, "b": 3, "c": 7})
    sub = subsample_per_class(examples, 5, seed=0)
    assert sub.class_counts() == {"a": 5, "b": 3, "c": 5}
    assert set(sub.inputs) <= set(examples.inputs)
    assert len(set(sub.inputs)) == len(sub)
    for text, label in zip(sub.inputs, sub.labels):  # inputs keep their labels
        assert examples.labels[examples.inputs.index(text)] == label
    assert subsample_per_class(examples, 5, seed=0).inputs == sub.inputs  # seeded
    assert subsample_per_class(examples, 5, seed=1).inputs != sub.inputs


def test_stratified_split_counts():
    examples = _examples({"a": 20, "b": 10, "c": 10})
    train, held = stratified_split(examples, 0.25, seed=0)
    assert held.class_counts() == {"a": 5, "b": 3, "c": 3}  # per class: round half up of fraction * count
    assert len(train) == 29
    assert not set(train.inputs) & set(held.inputs)
    assert Counter(train.inputs + held.inputs) == Counter(examples.inputs)
    assert stratified_split(examples, 0.25, seed=0)[1].inputs == held.inputs


def test_stratified_split_keeps_every_class_in_the_held_out_set():
    examples = _examples({"a": 30, "b": 2, "c": 2})
    train, held = stratified_split(examples, 0.05, seed=0)
    assert set(held.labels) == {"a", "b", "c"}
    assert set(train.labels) == {"a", "b", "c"}


def test_stratified_split_rejects_singleton_classes():
    with pytest.raises(DataError) as info:
        stratified_split(_examples({"a": 5, "b": 1}), 0.2, seed=0)
    assert "b" in str(info.value) and "--val-data" in str(info.value)


# ---------------------------------------------------------------------------------------------------------- images


def test_rgba_is_composited_on_white(tmp_path: Path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[0, 0] = (0, 0, 0, 0)  # fully transparent black -> white
    rgba[0, 1] = (255, 0, 0, 255)  # opaque red stays red
    rgba[0, 2] = (0, 0, 0, 128)  # half-transparent black -> mid grey
    path = tmp_path / "t.png"
    Image.fromarray(rgba, "RGBA").save(path)
    for item in (path, Image.open(path), rgba):
        image = load_image(item)
        assert image.mode == "RGB"
        px = np.asarray(image)
        assert tuple(px[0, 0]) == (255, 255, 255)
        assert tuple(px[0, 1]) == (255, 0, 0)
        assert all(abs(int(v) - 127) <= 2 for v in px[0, 2])


def test_la_and_palette_transparency_on_white():
    la = Image.new("LA", (2, 2), (0, 0))
    assert np.asarray(load_image(la))[0, 0].tolist() == [255, 255, 255]
    pal = Image.new("P", (2, 2), 0)
    pal.putpalette([0, 0, 0] * 256)
    pal.info["transparency"] = 0
    assert np.asarray(load_image(pal))[0, 0].tolist() == [255, 255, 255]


def test_grayscale_array_becomes_rgb():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    for item in (gray, gray[:, :, None]):
        image = load_image(item)
        assert image.mode == "RGB" and image.size == (4, 3)
        px = np.asarray(image)
        assert px.shape == (3, 4, 3)
        for c in range(3):
            np.testing.assert_array_equal(px[:, :, c], gray)


def test_exif_orientation_is_applied(tmp_path: Path):
    image = Image.new("RGB", (40, 20), "white")
    image.paste((255, 0, 0), (0, 0, 10, 20))  # red band on the left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif.tobytes(), quality=95)
    with Image.open(path) as raw:
        assert raw.size == (40, 20)  # stored landscape
    upright = load_image(path)
    assert upright.size == (20, 40)  # displayed portrait
    px = np.asarray(upright).astype(int)
    assert px[2, 10, 0] > 200 and px[2, 10, 1] < 80  # the left band is now on top
    assert px[-3, 10].min() > 200  # the bottom is white
    buf = io.BytesIO(path.read_bytes())
    assert load_image(Image.open(buf)).size == (20, 40)


# ------------------------------------------------------------------------------------- folders copied from macOS/Windows

APPLE_DOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(64)  # what `._name.png` files hold


def _write_png(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path)
    return path


def _add_os_junk(folder: Path) -> None:
    """What Finder, Explorer and a zip made on a Mac leave in a folder of images."""
    for image in [p for p in folder.iterdir() if p.is_file()]:
        (folder / f"._{image.name}").write_bytes(APPLE_DOUBLE)
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(32))
    (folder / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0" + bytes(32))
    (folder / "desktop.ini").write_text("[.ShellClassInfo]\n")


def test_os_files_are_never_listed(tmp_path: Path):
    root = tmp_path / "data"
    real = [_write_png(root / label / f"{i}.png", seed) for seed, (label, i) in enumerate(
        [("cat", 0), ("cat", 1), ("dog", 0), ("dog", 1)])]
    for folder in (root, root / "cat", root / "dog"):
        _add_os_junk(folder)
    (root / "__MACOSX" / "cat").mkdir(parents=True)
    (root / "__MACOSX" / "cat" / "._0.png").write_bytes(APPLE_DOUBLE)
    _write_png(root / "cat" / ".thumbnails" / "0.png", 9)  # a hidden folder inside a class
    _write_png(root / ".git" / "x.png", 10)
    for labeled in (True, False):
        train = load_source(root, labeled=labeled).train
        assert sorted(train.inputs) == sorted(map(str, real)), labeled
    assert load_source(root).train.class_counts() == {"cat": 2, "dog": 2}
    split = tmp_path / "split"
    for k, name in enumerate(("train", "test")):
        for j, label in enumerate(("cat", "dog")):
            _write_png(split / name / label / "0.png", 20 + 2 * k + j)
            _add_os_junk(split / name / label)
        _add_os_junk(split / name)
    (split / "__MACOSX" / "train").mkdir(parents=True)
    splits = load_source(split)
    assert splits.train.class_counts() == splits.test.class_counts() == {"cat": 1, "dog": 1}


def test_every_format_the_decoder_reads_is_listed(tmp_path: Path):
    root = tmp_path / "data"
    _write_png(root / "photos" / "0.png", 0)
    (root / "scans").mkdir()
    for i, name in enumerate(("a.tif", "b.tiff", "c.gif", "d.TIF", "e.webp", "f.bmp", "g.jpeg")):
        Image.fromarray(np.full((8, 8, 3), 20 * i, np.uint8)).save(root / "scans" / name)
    train = load_source(root).train
    assert train.class_counts() == {"photos": 1, "scans": 7}, "a class made only of TIFF/GIF images is a class"
    for path in train.inputs:
        assert load_image(path).size == (8, 8)


def test_class_names_are_one_unicode_form(tmp_path: Path):
    """'café' made on macOS (e + combining accent) and on Linux (é) is one class, in one split or across two."""
    decomposed, composed = "cafe\u0301", "caf\u00e9"
    root = tmp_path / "data"
    _write_png(root / "train" / decomposed / "0.png", 0)
    _write_png(root / "train" / decomposed / "1.png", 1)
    _write_png(root / "train" / "the" / "0.png", 2)
    _write_png(root / "train" / "the" / "1.png", 3)
    _write_png(root / "test" / composed / "0.png", 4)
    splits = load_source(root)
    assert set(splits.train.labels) == {composed, "the"} and splits.test.labels == [composed]
    LabelMap.from_labels(splits.train.labels, "train").encode(splits.test.labels, "test")  # no unknown label
    _write_png(root / "train" / composed / "2.png", 5)  # both spellings side by side (possible on Linux)
    assert load_source(root).train.class_counts() == {composed: 3, "the": 2}


def test_a_folder_that_cannot_be_read_is_named(tmp_path: Path):
    from transferkit.data.folders import list_class_folder

    root = tmp_path / "data"
    _write_png(root / "cat" / "0.png", 0)
    locked = root / "cat" / "private"
    _write_png(locked / "1.png", 1)
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):
            pytest.skip("running as a user who reads any folder (root)")
        listing = list_class_folder(root)
    finally:
        locked.chmod(0o755)
    assert [(u.path, u.kind) for u in listing.unexpected] == [(locked, "unexpected-folder")]
    assert "cannot be read" in listing.unexpected[0].reason
