"""One rule for unreadable inputs in every command that reads a dataset (README, Data doctor): fit, compare, evaluate,
predict and doctor leave out, name and count (``n_skipped``) the same files, and only ``--strict`` makes them fatal.

One small folder: 2 digit classes x 4 PNGs in train and x 3 in test, plus one zero-byte and one corrupt PNG in
each split; a linear probe at 32 px is the model (seconds on a CPU).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import transferkit
from tests.conftest import write_digit_folder
from tests.data.badfiles import corrupt_png
from tests.test_cli_doctor import run_main
from transferkit.compare import compare
from transferkit.core.errors import DataError

FIT = dict(model="efficientnet_lite0", strategy="linear-probe", image_size=32, progress=False)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[str]]]:
    """root/{train,test}/{0,1}/*.png with an empty and a corrupt PNG per split -> (root, bad paths per split)."""
    root = tmp_path_factory.mktemp("skipped") / "data"
    write_digit_folder(root / "train", (0, 1), 4, offset=0)
    write_digit_folder(root / "test", (0, 1), 3, offset=4)
    rng = np.random.default_rng(0)
    bad: dict[str, list[str]] = {}
    for split in ("train", "test"):
        (root / split / "0" / "empty.png").write_bytes(b"")
        (root / split / "1" / "corrupt.png").write_bytes(corrupt_png(rng))
        bad[split] = sorted([str(root / split / "0" / "empty.png"), str(root / split / "1" / "corrupt.png")])
    return root, bad


@pytest.fixture(scope="module")
def fitted(folder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root, _ = folder
    return transferkit.fit(str(root), out=str(tmp_path_factory.mktemp("fit") / "run"), **FIT).run_dir


def _paths(skipped: list[dict]) -> list[str]:
    return sorted(item["path"] for item in skipped)


def test_fit_and_doctor_leave_out_and_count_the_same_files(folder, fitted: Path, monkeypatch, capsys):
    root, bad = folder
    metrics = json.loads((fitted / "metrics.json").read_text())
    report = json.loads((fitted / "data_report.json").read_text())
    assert metrics["n_skipped"] == report["n_skipped"] == 4
    assert _paths(report["skipped"]) == sorted(bad["train"] + bad["test"])
    assert {item["kind"] for item in report["skipped"]} == {"empty-file", "unreadable-image"}
    assert all(item["reason"] for item in report["skipped"])
    assert metrics["test"]["n"] == 6  # the 6 readable test images were scored

    code, out, _ = run_main(["doctor", "--data", str(root), "--json"], monkeypatch, capsys)
    doctor = json.loads(out)
    assert code == 0 and doctor["n_skipped"] == 4 and doctor["skipped"] == report["skipped"]
    code, _, err = run_main(["doctor", "--data", str(root), "--strict"], monkeypatch, capsys)
    assert code == 2 and "Traceback" not in err


def test_evaluate_leaves_out_what_fit_left_out(folder, fitted: Path, monkeypatch, capsys):
    root, bad = folder
    bundle = fitted / "bundle"
    result = transferkit.evaluate(bundle, str(root), split="test", progress=False)
    assert result["n_skipped"] == 2 and _paths(result["skipped"]) == bad["test"]
    fit_test = json.loads((fitted / "metrics.json").read_text())["test"]
    assert result["n"] == fit_test["n"] == 6 and result["accuracy"] == fit_test["accuracy"]

    code, out, _ = run_main(["evaluate", "--bundle", str(bundle), "--data", str(root), "--json"], monkeypatch, capsys)
    assert code == 0 and json.loads(out)["skipped"] == result["skipped"]
    code, _, err = run_main(["evaluate", "--bundle", str(bundle), "--data", str(root)], monkeypatch, capsys)
    assert code == 0 and "n_skipped: 2" in err
    code, _, err = run_main(["evaluate", "--bundle", str(bundle), "--data", str(root), "--strict"], monkeypatch, capsys)
    assert code == 2 and "empty.png" in err and "Traceback" not in err
    with pytest.raises(DataError, match="corrupt.png"):  # a single-split folder is scored whole
        transferkit.evaluate(bundle, str(root / "test"), strict=True, progress=False)


def test_predict_rows_and_count_for_the_same_files(folder, fitted: Path, tmp_path: Path, monkeypatch, capsys):
    root, bad = folder
    bundle = fitted / "bundle"
    predictions = transferkit.predict(bundle, str(root), progress=False)
    assert sorted(predictions.ids[i] for i in predictions.errors) == sorted(bad["train"] + bad["test"])

    out = tmp_path / "preds.csv"
    code, _, err = run_main(["predict", "--bundle", str(bundle), "--data", str(root / "test"), "--out", str(out)],
                            monkeypatch, capsys)
    assert code == 0 and "n_skipped: 2" in err and out.is_file()
    strict_out = tmp_path / "strict.csv"
    code, _, err = run_main(["predict", "--bundle", str(bundle), "--data", str(root / "test"), "--out",
                             str(strict_out), "--strict"], monkeypatch, capsys)
    assert code == 2 and "2 input(s) could not be read" in err and "corrupt.png" in err
    assert not strict_out.exists() and not list(tmp_path.glob(".strict.csv.*"))


def test_compare_checks_every_split_once_before_training(folder, tmp_path: Path, monkeypatch, capsys):
    root, bad = folder
    started: list[str] = []
    summary = compare(str(root), ["linear-probe"], [None], out=tmp_path / "cmp", on_run=started.append,
                      **{k: v for k, v in FIT.items() if k != "strategy"})
    assert summary["n_skipped"] == 4 and _paths(summary["skipped_inputs"]) == sorted(bad["train"] + bad["test"])
    assert json.loads((tmp_path / "cmp" / "data_report.json").read_text())["n_skipped"] == 4
    assert len(started) == 1 and summary["runs"][0]["accuracy"] is not None

    out = tmp_path / "strict"
    code, _, err = run_main(["compare", "--data", str(root), "--strategies", "linear-probe", "--image-size", "32",
                             "--model", "efficientnet_lite0", "--strict", "--out", str(out)], monkeypatch, capsys)
    assert code == 2 and "empty.png" in err and "[compare]" not in err
    assert not (out / "runs").exists()  # stopped before the first run

    unknown = shutil.copytree(root, tmp_path / "unknown")
    write_digit_folder(unknown / "test", (7,), 1)  # a test class the training data lacks: fatal, before any run
    started.clear()
    with pytest.raises(DataError, match="label '7'"):
        compare(str(unknown), ["linear-probe"], [None], out=tmp_path / "cmp2", on_run=started.append,
                **{k: v for k, v in FIT.items() if k != "strategy"})
    assert not started and not (tmp_path / "cmp2").exists()


def test_fit_leaves_out_unreadable_unlabeled_inputs_too(folder, fitted: Path, tmp_path: Path):
    """--unlabeled-data (distillation) is read by fit as well: checked the same way, before training."""
    root, bad = folder
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for path in sorted((root / "test" / "0").glob("[0-9]*.png")):
        shutil.copy(path, inbox / path.name)
    (inbox / "zz_empty.png").write_bytes(b"")
    result = transferkit.fit(str(root), model="efficientnet_lite0-slim", strategy="distill", image_size=32, epochs=1,
                             teacher=str(fitted / "bundle"), unlabeled_data=str(inbox), baseline=False,
                             out=str(tmp_path / "student"), progress=False)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["n_unlabeled"] == 3 and _paths(metrics["unlabeled_skipped"]) == [str(inbox / "zz_empty.png")]
    assert metrics["n_skipped"] == 5


def test_evaluate_names_the_split_it_scored(folder, fitted: Path, monkeypatch, capsys):
    """A mistyped --split is a usage error; a single-split source is scored whole and reported as split 'all', with
    a note when it is the very data the bundle was trained on (its scores are then no held-out estimate)."""
    root, _ = folder
    bundle = fitted / "bundle"
    code, _, err = run_main(["evaluate", "--bundle", str(bundle), "--data", str(root), "--split", "tst"],
                            monkeypatch, capsys)
    assert code == 2 and "train, val, test" in err and "Traceback" not in err
    held_out = transferkit.evaluate(bundle, str(root / "test"), split="val", progress=False)
    assert held_out["split"] == "all" and "note" not in held_out
    flat = root.parent / "flat"
    shutil.copytree(root / "train", flat)
    fitted_flat = transferkit.fit(str(flat), out=str(root.parent / "flat-run"), **FIT)
    result = transferkit.evaluate(fitted_flat.bundle_dir, str(flat), progress=False)
    assert result["split"] == "all" and "trained on" in result["note"]
    code, out, err = run_main(["evaluate", "--bundle", str(fitted_flat.bundle_dir), "--data", str(flat)],
                              monkeypatch, capsys)
    assert code == 0 and "not a held-out estimate" in err and "[all]" in out
