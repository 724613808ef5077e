"""Predict at scale: streamed CSV/JSONL rows in input order, top-k, per-row errors for unreadable images, no
partial output file, and the same answers as the Predictor (the server's path, which refuses bad inputs)."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import transferkit
from tests.conftest import VENV_BIN
from transferkit.core.errors import ConfigError
from transferkit.data.images import ImageDecodeError
from transferkit.data.sources import load_source
from transferkit.serve.predictor import Predictor


@pytest.fixture(scope="module")
def image_bundle(tmp_path_factory: pytest.TempPathFactory, digits_folder: Path) -> Path:
    out = tmp_path_factory.mktemp("predict-image") / "run"
    return Path(transferkit.fit(str(digits_folder), model="efficientnet_lite0", strategy="linear-probe", image_size=32,
                                out=str(out), progress=False).bundle_dir)


@pytest.fixture
def messy_folder(tmp_path: Path, digits_folder: Path) -> Path:
    """Loose images to predict, three of them unreadable (garbage, empty, a text file with a .png name)."""
    folder = tmp_path / "inbox"
    folder.mkdir()
    for digit in ("0", "1", "2"):
        for path in sorted((digits_folder / digit).glob("*.png"))[:2]:
            shutil.copy(path, folder / f"{digit}_{path.name}")
    (folder / "1_zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    (folder / "2_zz_empty.jpg").write_bytes(b"")
    (folder / "0_zz_notes.png").write_text("not an image")
    return folder


def _csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def test_csv_rows_in_order_with_top_k_and_per_row_errors(image_bundle: Path, messy_folder: Path, tmp_path: Path):
    out = tmp_path / "preds.csv"
    predictions = transferkit.predict(image_bundle, str(messy_folder), out, top_k=2, batch_size=3, progress=False)
    fields, rows = _csv(out)
    assert fields == ["path", "label", "score", "label_1", "score_1", "label_2", "score_2", "error"]
    assert [r["path"] for r in rows] == sorted(str(p) for p in messy_folder.iterdir())
    bad = {r["path"].rsplit("/", 1)[1]: r for r in rows if r["error"]}
    assert sorted(bad) == ["0_zz_notes.png", "1_zz_broken.png", "2_zz_empty.jpg"]
    assert bad["2_zz_empty.jpg"]["error"] == "empty file"
    assert all(r["label"] == "" and r["score"] == "" for r in bad.values())
    good = [r for r in rows if not r["error"]]
    assert len(good) == 6
    for r in good:
        assert r["label"] == r["label_1"] and r["label"] in {"0", "1", "2"} and r["label_2"] != r["label_1"]
        assert 1.0 >= float(r["score_1"]) >= float(r["score_2"]) >= 0.0
    # the returned Predictions say the same, with the failed rows marked
    assert len(predictions.errors) == 3 and all(predictions.labels[i] is None for i in predictions.errors)
    assert [r["label"] or None for r in rows] == predictions.labels
    assert not list(tmp_path.glob(".preds.csv.*"))  # the temp file was renamed into place


def test_jsonl_rows(image_bundle: Path, messy_folder: Path, tmp_path: Path):
    out = tmp_path / "preds.jsonl"
    transferkit.predict(image_bundle, str(messy_folder), out, top_k=3, progress=False)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 9
    errors = [r for r in rows if "error" in r]
    assert len(errors) == 3 and all("label" not in r and "score" not in r for r in errors)
    for r in rows:
        if "error" not in r:
            assert [t["label"] for t in r["top_k"]][0] == r["label"] and len(r["top_k"]) == 3
            assert abs(sum(t["score"] for t in r["top_k"]) - 1.0) < 1e-4


def test_streamed_predictions_equal_the_predictor(image_bundle: Path, digits_folder: Path):
    """Batching and streaming change nothing: every row equals Predictor.predict on the same inputs."""
    examples = load_source(str(digits_folder)).train
    streamed = transferkit.predict(image_bundle, str(digits_folder), batch_size=4, progress=False)
    direct = Predictor.from_bundle(image_bundle).predict(examples)
    assert streamed.labels == direct.labels and not streamed.errors
    np.testing.assert_allclose(streamed.probabilities, direct.probabilities, atol=1e-5)  # batch 4 vs 64


def test_predictor_predict_refuses_unreadable_inputs(image_bundle: Path, messy_folder: Path):
    """The server's path: an unreadable input is an error the caller handles, not a silent row."""
    examples = load_source(str(messy_folder), labeled=False).train
    with pytest.raises(ImageDecodeError):
        Predictor.from_bundle(image_bundle).predict(examples)


def test_interrupted_run_leaves_no_output(image_bundle: Path, digits_folder: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch):
    out = tmp_path / "preds.csv"
    original = Predictor.iter_batches

    def dies_after_one_batch(self, examples):
        batches = original(self, examples)
        yield next(batches)
        raise KeyboardInterrupt

    monkeypatch.setattr(Predictor, "iter_batches", dies_after_one_batch)
    with pytest.raises(KeyboardInterrupt):
        transferkit.predict(image_bundle, str(digits_folder), out, batch_size=4, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_bad_top_k_and_output_format(image_bundle: Path, digits_folder: Path, tmp_path: Path):
    with pytest.raises(ConfigError, match="'top_k'"):
        transferkit.predict(image_bundle, str(digits_folder), tmp_path / "p.csv", top_k=4, progress=False)
    with pytest.raises(ConfigError, match=".csv or .jsonl"):
        transferkit.predict(image_bundle, str(digits_folder), tmp_path / "p.parquet", progress=False)


@pytest.mark.slow
def test_cli_predict_reports_unreadable_inputs(image_bundle: Path, messy_folder: Path, tmp_path: Path,
                                               cli_env: dict[str, str]):
    import subprocess

    out = tmp_path / "preds.csv"
    proc = subprocess.run([str(VENV_BIN / "transferkit"), "predict", "--bundle", str(image_bundle), "--data",
                           str(messy_folder), "--out", str(out), "--top-k", "2", "--runtime", "torch"],
                          capture_output=True, text=True, env=cli_env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "wrote 9 predictions" in proc.stderr and "3 input(s) could not be read" in proc.stderr
    assert len(_csv(out)[1]) == 9


def test_a_txt_gives_a_text_model_a_row_per_line_as_a_one_column_csv_does(tmp_path: Path, text_csv: Path):
    bundle = transferkit.fit(str(text_csv), model="minilm", strategy="linear-probe", out=str(tmp_path / "run"),
                             progress=False).bundle_dir
    lines = ["Shares rose on the market", "", "   ", "The team won the match"]
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "in.csv").write_text("text\n" + "\n".join(f'"{t}"' for t in lines) + "\n", encoding="utf-8")
    from_txt = transferkit.predict(bundle, str(tmp_path / "in.txt"), progress=False)
    from_csv = transferkit.predict(bundle, str(tmp_path / "in.csv"), progress=False)
    assert from_txt.ids == lines == from_csv.ids
    assert np.allclose(from_txt.probabilities, from_csv.probabilities, atol=1e-6)


def test_an_image_bundle_refuses_clips_in_predict_and_evaluate_alike(image_bundle: Path, tone_folder: Path):
    """The same one-line DataError (exit 2 in the CLI) from both commands, never a KeyError on 'pixel_values'."""
    from typer.testing import CliRunner

    from transferkit.cli import app
    from transferkit.core.errors import DataError

    said = f"{tone_folder} holds audio data but this bundle is an image model; pass image data."
    for command in (transferkit.predict, transferkit.evaluate):
        with pytest.raises(DataError) as info:
            command(image_bundle, str(tone_folder), progress=False)
        assert str(info.value) == said
    result = CliRunner().invoke(app, ["evaluate", "--bundle", str(image_bundle), "--data", str(tone_folder)])
    assert result.exit_code == 2 and "this bundle is an image model" in result.output
