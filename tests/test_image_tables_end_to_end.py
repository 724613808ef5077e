"""Images from a table end to end, offline and tiny: EfficientNet-Lite0 on digit PNGs listed in labels.csv files
(paths relative to the table). fit -> evaluate -> predict (rows keep the table's paths) -> ONNX export on the
table's test split; missing rows left out and named by file:line; the CLI's --image-column and its "images:" line;
regression on image brightness; multi-label Fashion-MNIST tiles (benchmarks/task_data.py) through the CLI."""
from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import transferkit
from benchmarks.task_data import write_fashion_tiles
from tests.conftest import VENV_BIN, write_digit_folder
from transferkit.core.errors import DataError
from transferkit.data.builtins import FASHION_MNIST_DIR

DIGITS = (0, 1, 2)
FIT = {"model": "efficientnet_lite0", "strategy": "linear-probe", "image_size": 32, "progress": False}


def write_digit_table(root: Path, name: str, per_class: int, offset: int) -> Path:
    """root/images/<name>/<digit>/<i>.png listed in root/<name>.csv (columns image,label; relative paths)."""
    write_digit_folder(root / "images" / name, DIGITS, per_class, offset)
    rows = [(f"images/{name}/{d}/{offset + i}.png", str(d)) for d in DIGITS for i in range(per_class)]
    return write_rows(root / f"{name}.csv", rows)


def write_rows(path: Path, rows: list[tuple[str, str]], header: tuple[str, str] = ("image", "label")) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("image-table")
    return write_digit_table(root, "train", 8, 0), write_digit_table(root, "test", 4, 20)


@pytest.fixture(scope="module")
def run(tables, tmp_path_factory: pytest.TempPathFactory) -> transferkit.api.FitResult:
    train, test = tables
    return transferkit.fit(str(train), image_column="image", test_data=str(test),
                           out=str(tmp_path_factory.mktemp("run") / "lp"), **FIT)


def test_fit_reads_the_table_as_images_and_says_which_column(run):
    manifest = json.loads((run.bundle_dir / "transferkit.json").read_text())
    assert manifest["preprocessing"]["modality"] == "image" and manifest["labels"] == ["0", "1", "2"]
    assert manifest["fit_config"]["image_column"] == "image"
    report = json.loads((run.run_dir / "data_report.json").read_text())
    assert report["stats"]["image_columns"] == {"train": "image", "test": "image"}
    assert run.metrics["test"]["n"] == 12 and run.metrics["test"]["accuracy"] > 1 / 3  # chance: 1/3
    if run.metrics["test"]["accuracy"] < 1:  # the report's most confidently wrong examples, as thumbnails
        html = (run.run_dir / "report.html").read_text()
        assert 'src="data:image/png;base64,' in html and 'alt="images/test/' in html


def test_a_table_fits_exactly_as_the_same_images_in_class_folders(run, tables, tmp_path: Path):
    images = tables[0].parent / "images"
    folder = transferkit.fit(str(images / "train"), test_data=str(images / "test"), out=str(tmp_path / "f"), **FIT)
    for split in ("val", "test"):
        assert folder.metrics[split]["accuracy"] == run.metrics[split]["accuracy"]
        assert folder.metrics[split]["macro_f1"] == run.metrics[split]["macro_f1"]


def test_evaluate_and_predict_agree_and_keep_the_tables_paths(run, tables, tmp_path: Path):
    _, test = tables
    metrics = transferkit.evaluate(run.bundle_dir, str(test), progress=False)  # the bundle's image column
    assert metrics["image_column"] == "image" and metrics["n"] == 12 and metrics["n_skipped"] == 0
    assert metrics["accuracy"] == pytest.approx(run.metrics["test"]["accuracy"])
    transferkit.predict(run.bundle_dir, str(test), tmp_path / "p.csv", progress=False)
    with open(tmp_path / "p.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    with open(test, newline="", encoding="utf-8") as fh:
        truth = list(csv.DictReader(fh))
    assert [r["path"] for r in rows] == [t["image"] for t in truth]  # as written in the table
    assert np.mean([r["label"] == t["label"] for r, t in zip(rows, truth)]) == pytest.approx(metrics["accuracy"])


def test_a_missing_row_is_left_out_named_by_line_and_fatal_with_strict(run, tables, tmp_path: Path):
    _, test = tables
    with open(test, newline="", encoding="utf-8") as fh:
        rows = [(r["image"], r["label"]) for r in csv.DictReader(fh)]
    gappy = write_rows(test.parent / "gappy.csv", [*rows[:3], ("images/test/0/nope.png", "0"), *rows[3:]])
    metrics = transferkit.evaluate(run.bundle_dir, str(gappy), progress=False)
    assert metrics["n"] == 12 and metrics["n_skipped"] == 1
    (skipped,) = metrics["skipped"]
    assert skipped["path"] == f"{gappy}:5" and skipped["kind"] == "missing-image"
    assert str(test.parent / "images/test/0/nope.png") in skipped["reason"]
    with pytest.raises(DataError, match=r"gappy\.csv:5: image 'images/test/0/nope.png' not found"):
        transferkit.evaluate(run.bundle_dir, str(gappy), progress=False, strict=True)
    predicted = transferkit.predict(run.bundle_dir, str(gappy), tmp_path / "p.csv", progress=False)
    assert list(predicted.errors) == [3] and predicted.ids[3] == "images/test/0/nope.png"


def test_doctor_and_compare_take_the_image_column(tables, tmp_path: Path):
    from transferkit.compare import compare

    train, test = tables
    report = transferkit.api.doctor(str(train), image_column="image", test_data=str(test)).to_dict()
    assert report["stats"]["image_columns"] == {"train": "image", "test": "image"} and report["fatal"] == 0
    summary = compare(str(train), ["linear-probe"], [None], out=tmp_path / "cmp", test_data=str(test),
                      image_column="image", model="efficientnet_lite0", image_size=32)
    by_name = {r["strategy"]: r for r in summary["rows"]}
    assert set(by_name) == {"linear-probe", "pixels-logreg"}  # the reference decodes the table's images too
    assert by_name["pixels-logreg"]["accuracy_mean"] > 1 / 3 and by_name["linear-probe"]["accuracy_mean"] > 1 / 3


def test_onnx_export_checks_parity_on_the_tables_test_split(run, tables, tmp_path: Path):
    entry = transferkit.api.export(run.bundle_dir, tmp_path / "onnx")
    assert entry["parity"]["top1_agreement"] == 1.0 and str(tables[1]) in entry["parity"]["inputs"]


def test_cli_image_column_fit_and_evaluate_say_which_column(tables, tmp_path: Path, cli_env):
    train, test = tables
    cli = str(VENV_BIN / "transferkit")
    fit = subprocess.run([cli, "fit", "--data", str(train), "--image-column", "image", "--model", "efficientnet_lite0",
                          "--strategy", "linear-probe", "--image-size", "32", "--out", str(tmp_path / "run")],
                         capture_output=True, text=True, env=cli_env)
    assert fit.returncode == 0, fit.stderr
    assert "images: column 'image' read as image paths (train;" in " ".join((fit.stdout + fit.stderr).split())
    ev = subprocess.run([cli, "evaluate", "--bundle", str(tmp_path / "run" / "bundle"), "--data", str(test)],
                        capture_output=True, text=True, env=cli_env)
    assert ev.returncode == 0, ev.stderr
    assert "images: column 'image' read as image paths (all;" in " ".join((ev.stdout + ev.stderr).split())


def test_regression_from_an_image_table(tmp_path: Path):
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    rows = []
    for i in range(30):
        level = int(rng.integers(10, 245))
        pixels = np.clip(rng.normal(level, 8, size=(32, 32, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"img/{i:02d}.png")
        rows.append((f"img/{i:02d}.png", str(round(level / 255, 4))))
    table = write_rows(tmp_path / "brightness.csv", rows, ("text", "brightness"))  # detected from the text column
    result = transferkit.fit(str(table), label_column="brightness", out=str(tmp_path / "run"),
                             **{**FIT, "image_size": 64})
    summary = json.loads((result.run_dir / "metrics.json").read_text())
    assert summary["task"] == "regression" and result.metrics["val"]["r2"] > 0.5
    metrics = transferkit.evaluate(result.bundle_dir, str(table), label_column="brightness", progress=False)
    assert metrics["r2"] > 0.5 and metrics["image_column"] == "text"


@pytest.mark.skipif(not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").exists(),
                    reason="needs the Debian package dataset-fashion-mnist")
def test_multilabel_fashion_tiles_through_the_cli(tmp_path: Path, cli_env):
    train = write_fashion_tiles(tmp_path / "train", 150, seed=0, split="train")
    test = write_fashion_tiles(tmp_path / "test", 30, seed=1, split="test")
    with open(train, newline="", encoding="utf-8") as fh:
        first = next(csv.DictReader(fh))
    assert 2 <= len(first["labels"].split("|")) <= 4 and (train.parent / first["image"]).is_file()
    cli, run = str(VENV_BIN / "transferkit"), tmp_path / "run"
    fit = subprocess.run([cli, "fit", "--data", str(train), "--image-column", "image", "--label-column", "labels",
                          "--task", "multilabel", "--model", "efficientnet_lite0", "--strategy", "linear-probe",
                          "--image-size", "56", "--out", str(run)], capture_output=True, text=True, env=cli_env)
    assert fit.returncode == 0, fit.stderr
    ev = subprocess.run([cli, "evaluate", "--bundle", str(run / "bundle"), "--data", str(test), "--label-column",
                         "labels", "--json"],
                        capture_output=True, text=True, env=cli_env)
    assert ev.returncode == 0, ev.stderr
    metrics = json.loads(ev.stdout)
    assert {"micro_f1", "macro_f1", "subset_accuracy", "hamming_loss", "map"} <= set(metrics) and metrics["n"] == 30
    with open(test, newline="", encoding="utf-8") as fh:
        truth = [set(r["labels"].split("|")) for r in csv.DictReader(fh)]
    labels = sorted(set().union(*truth))
    n_true = sum(map(len, truth))
    every = 2 * n_true / (n_true + len(truth) * len(labels))  # the micro-F1 of answering every label every time
    prevalence = n_true / (len(truth) * len(labels))  # the average precision of scores that know nothing
    assert metrics["micro_f1"] > every and metrics["map"] > prevalence + 0.2


@pytest.mark.skipif(not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").exists(),
                    reason="needs the Debian package dataset-fashion-mnist")
def test_multilabel_tiles_train_through_the_loop(tmp_path: Path):
    """The training loop on multi-label images: each batch's targets are one 0/1 row per image."""
    train = write_fashion_tiles(tmp_path / "tiles", 24, seed=2)
    result = transferkit.fit(str(train), image_column="image", label_column="labels", task="multilabel",
                             out=str(tmp_path / "run"), **{**FIT, "strategy": "head", "epochs": 1})
    assert result.history[-1]["epoch"] == 1 and np.isfinite(result.history[-1]["train_loss"])
    assert {"micro_f1", "map"} <= set(result.metrics["val"])
