"""Regression end to end, offline and tiny: MiniLM on 48 generated sentences whose target counts positive minus
negative words, and EfficientNet-Lite0 on 24 generated images whose target is their brightness. fit (detected,
with the line that says so) -> bundle -> evaluate/predict/serve/ONNX with parity; refusals with their reasons;
--loss huber against MSE on targets with outliers."""
from __future__ import annotations

import csv
import json
import random
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

import transferkit
from tests.conftest import VENV_BIN
from tests.serve.conftest import LiveServer
from transferkit.core.errors import ConfigError, DataError
from transferkit.data.examples import Examples
from transferkit.serve.config import ServeConfig
from transferkit.serve.predictor import Predictor

WORDS = ("good", "great", "fine", "bad", "awful", "table", "river", "chair", "window", "house")


def regression_texts(n: int = 48, seed: int = 0) -> list[tuple[str, float]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 8))]
        score = sum(w in WORDS[:3] for w in words) - sum(w in WORDS[3:5] for w in words) + 0.1 * (i % 7) / 7
        rows.append((" ".join(words), round(score, 3)))
    return rows


def write_rows(path: Path, rows: list[tuple[str, object]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def text_csv_regression(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_rows(tmp_path_factory.mktemp("reg") / "scores.csv", regression_texts())


@pytest.fixture(scope="module")
def text_run(tmp_path_factory: pytest.TempPathFactory, text_csv_regression: Path) -> transferkit.api.FitResult:
    out = tmp_path_factory.mktemp("reg-run") / "lp"
    return transferkit.fit(str(text_csv_regression), model="minilm", strategy="linear-probe", out=str(out),
                           progress=False)


def test_fit_detects_regression_and_says_so(text_run):
    summary = json.loads((text_run.run_dir / "metrics.json").read_text())
    assert summary["task"] == "regression"
    distinct = len({y for _, y in regression_texts()})
    assert summary["task_detected"] == (f"task: regression (detected: 48 numeric labels, {distinct} distinct; pass "
                                        "--task classification to override)")
    assert {"r2", "mae", "rmse", "spearman", "n"} <= set(summary["val"])
    manifest = json.loads((text_run.bundle_dir / "transferkit.json").read_text())
    assert manifest["task"] == "regression" and manifest["labels"] == ["value"]
    assert set(manifest["targets"]) == {"mean", "std"}
    report = (text_run.run_dir / "report.md").read_text()
    assert "task: regression (detected" in report and "Confusion matrix" not in report
    html = (text_run.run_dir / "report.html").read_text()
    assert html.count("data:image/png;base64") >= 2 and "predicted vs true" in html


def test_evaluate_predict_serve_agree_in_the_users_units(text_run, text_csv_regression: Path, tmp_path: Path):
    metrics = transferkit.evaluate(text_run.bundle_dir, str(text_csv_regression), progress=False)
    assert {"r2", "mae", "rmse", "spearman", "n"} <= set(metrics) and metrics["n"] == 48
    assert metrics["r2"] > 0.5  # the training rows are most of the data: the probe fits them
    truth = np.array([y for _, y in regression_texts()])
    predicted = transferkit.predict(text_run.bundle_dir, str(text_csv_regression), tmp_path / "p.csv", progress=False)
    assert np.mean(np.abs(predicted.values - truth)) == pytest.approx(metrics["mae"], abs=1e-5)
    with open(tmp_path / "p.csv", newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    assert reader.fieldnames == ["text", "value"]
    np.testing.assert_allclose([float(r["value"]) for r in rows], predicted.values, atol=1e-5)
    transferkit.predict(text_run.bundle_dir, str(text_csv_regression), tmp_path / "p.jsonl", progress=False)
    first = json.loads((tmp_path / "p.jsonl").read_text().splitlines()[0])
    assert set(first) == {"text", "value"}
    with pytest.raises(ConfigError, match="regression model that predicts one number"):
        transferkit.predict(text_run.bundle_dir, str(text_csv_regression), top_k=2, progress=False)
    server = LiveServer(Predictor.from_bundle(text_run.bundle_dir), ServeConfig()).start()
    try:
        answer = httpx.post(server.url + "/v1/predict", json={"inputs": [r[0] for r in regression_texts()[:3]]})
    finally:
        server.stop()
    assert answer.status_code == 200
    values = [p["value"] for p in answer.json()["predictions"]]
    np.testing.assert_allclose(values, predicted.values[:3], atol=1e-4)


def test_evaluate_and_predict_read_the_columns_the_bundle_was_fitted_with(tmp_path: Path, monkeypatch, capsys):
    from tests.test_cli_doctor import run_main

    rows = regression_texts(24)
    path = tmp_path / "named.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([("sentence", "valence score"), *rows])
    run = transferkit.fit(str(path), task="regression", model="minilm", strategy="linear-probe",
                          text_column="sentence", label_column="valence score", out=str(tmp_path / "run"),
                          progress=False)
    code, out, err = run_main(["evaluate", "--bundle", str(run.bundle_dir), "--data", str(path), "--json"],
                              monkeypatch, capsys)
    assert code == 0, err
    assert json.loads(out)["n"] == 24
    predicted = transferkit.predict(run.bundle_dir, str(path), progress=False)
    assert len(predicted.values) == 24
    with pytest.raises(DataError, match="no 'label' column"):  # a column named here still wins
        transferkit.evaluate(run.bundle_dir, str(path), label_column="label", progress=False)


def test_onnx_export_keeps_parity_and_int8_reports_its_agreement(text_run, text_csv_regression: Path, tmp_path: Path):
    entry = transferkit.api.export(text_run.bundle_dir, tmp_path / "onnx")
    assert entry["parity"]["max_abs_diff"] < 1e-3 and entry["parity"]["r2_vs_reference"] > 0.9999
    torch_values = transferkit.predict(text_run.bundle_dir, str(text_csv_regression), progress=False).values
    onnx_values = transferkit.predict(tmp_path / "onnx", str(text_csv_regression), runtime="onnx",
                                      progress=False).values
    np.testing.assert_allclose(onnx_values, torch_values, atol=1e-4)
    int8 = transferkit.api.export(text_run.bundle_dir, tmp_path / "int8", int8=True)["int8"]
    assert "r2_vs_reference" in int8["vs_fp32"] and {"r2_fp32", "r2_int8"} <= set(int8["accuracy"])


def test_cli_fit_prints_the_detection_and_evaluate_json_has_the_contract_keys(text_csv_regression, tmp_path,
                                                                               cli_env):
    run = tmp_path / "cli"
    fit = subprocess.run([str(VENV_BIN / "transferkit"), "fit", "--data", str(text_csv_regression), "--model",
                          "minilm", "--strategy", "linear-probe", "--out", str(run)], capture_output=True,
                         text=True, env=cli_env)
    assert fit.returncode == 0, fit.stderr
    printed = " ".join((fit.stdout + fit.stderr).split())
    assert "task: regression (detected: 48 numeric labels" in printed and "val: R²" in printed
    ev = subprocess.run([str(VENV_BIN / "transferkit"), "evaluate", "--bundle", str(run / "bundle"), "--data",
                         str(text_csv_regression), "--json"], capture_output=True, text=True, env=cli_env)
    assert ev.returncode == 0, ev.stderr
    assert {"r2", "mae", "rmse", "spearman", "n"} <= set(json.loads(ev.stdout))
    refused = subprocess.run([str(VENV_BIN / "transferkit"), "fit", "--data", str(text_csv_regression),
                              "--labels-per-class", "5", "--out", str(tmp_path / "no")], capture_output=True,
                             text=True, env=cli_env)
    assert refused.returncode == 2
    assert "a regression target has no classes" in " ".join((refused.stdout + refused.stderr).split())


def test_doctor_reports_a_bad_target_with_file_and_line(tmp_path, cli_env):
    rows = regression_texts(30)
    rows[4] = (rows[4][0], "n/a")
    data = write_rows(tmp_path / "bad.csv", rows)
    out = subprocess.run([str(VENV_BIN / "transferkit"), "doctor", "--data", str(data), "--task", "regression"],
                         capture_output=True, text=True, env=cli_env)
    assert out.returncode == 2
    text = " ".join((out.stdout + out.stderr).split())
    assert "bad-target" in text and "bad.csv:6" in text and "not a finite number" in text


def test_image_regression_on_brightness_with_a_trained_head(tmp_path: Path):
    """Images: a class-folder layout holds no numbers (image tables come with issue 13's data part), so the
    examples are built in memory; labels are brightness values as strings, as a CSV would give them."""
    from transferkit.data.examples import Examples

    rng = np.random.default_rng(0)
    paths, labels = [], []
    for i in range(24):
        level = int(rng.integers(10, 245))
        pixels = np.clip(rng.normal(level, 8, size=(32, 32, 3)), 0, 255).astype(np.uint8)
        path = tmp_path / f"img{i:02d}.png"
        Image.fromarray(pixels).save(path)
        paths.append(str(path))
        labels.append(str(round(level / 255, 4)))
    examples = Examples("image", paths, labels, str(tmp_path), paths)
    result = transferkit.fit(examples, model="efficientnet_lite0", strategy="linear-probe", image_size=64,
                             out=str(tmp_path / "run"), progress=False)
    assert result.metrics["val"]["r2"] > 0.5
    values = Predictor.from_bundle(result.bundle_dir).predict(examples).values
    assert np.corrcoef(values, [float(y) for y in labels])[0, 1] > 0.8


def test_transfer_regressor_is_a_scikit_learn_regressor(tmp_path: Path):
    from sklearn.base import clone, is_regressor
    from sklearn.metrics import r2_score

    from transferkit import TransferRegressor
    from transferkit.core.errors import DataError

    rows = regression_texts()
    texts, y = [t for t, _ in rows], np.array([v for _, v in rows])
    reg = TransferRegressor(model="minilm", strategy="linear-probe", out=str(tmp_path / "run"))
    assert is_regressor(reg) and clone(reg).get_params() == reg.get_params()
    predicted = reg.fit(texts, y).predict(texts)
    assert predicted.dtype == np.float64 and predicted.shape == (48,)
    assert reg.score(texts, y) == pytest.approx(r2_score(y, predicted))
    loaded = TransferRegressor.load(reg.save(tmp_path / "saved"))
    np.testing.assert_allclose(loaded.predict(texts[:5]), predicted[:5], atol=1e-6)
    with pytest.raises(DataError, match=r"y\[1\] is nan"):
        TransferRegressor().fit(texts[:3], [1.0, float("nan"), 2.0])


def test_compare_ranks_by_r2_against_a_ridge_reference(text_csv_regression: Path, tmp_path: Path):
    from transferkit.compare import compare

    summary = compare(str(text_csv_regression), ["linear-probe"], [None], out=tmp_path / "cmp", model="minilm")
    assert summary["task"] == "regression" and summary["metric"] == "r2"
    by_name = {r["strategy"]: r for r in summary["rows"]}
    assert set(by_name) == {"linear-probe", "tfidf-ridge"}
    assert {"r2_mean", "r2_std", "mae_mean"} <= set(by_name["tfidf-ridge"])
    assert "of R²" in summary["gains"][0]["statement"]
    assert "test R²" in (tmp_path / "cmp" / "compare.html").read_text(encoding="utf-8")
    with pytest.raises(ConfigError, match="--labels-per-class keeps K examples of each class"):
        compare(str(text_csv_regression), ["linear-probe"], [5], out=tmp_path / "no", model="minilm")


OUTLIER_ROWS = (3, 17, 30, 41)  # their targets (1.0-3.1 among values in [-3, 5]) become 100 in the training file


@pytest.fixture(scope="module")
def outlier_fits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, transferkit.api.FitResult]:
    """The same head-only fit (frozen MiniLM, seed 0) with MSE and with --loss huber on 48 sentences, 4 of whose
    targets are 100; a clean validation file selects the epoch."""
    folder = tmp_path_factory.mktemp("outliers")
    rows = regression_texts()
    for i in OUTLIER_ROWS:
        rows[i] = (rows[i][0], 100.0)
    train, val = write_rows(folder / "train.csv", rows), write_rows(folder / "val.csv", regression_texts(24, seed=1))
    return {loss: transferkit.fit(str(train), val_data=str(val), model="minilm", strategy="head", task="regression",
                                  loss=loss, epochs=8, lr=3e-3, patience=0, baseline=False, out=str(folder / loss),
                                  progress=False) for loss in ("mse", "huber")}


def test_huber_is_pulled_less_by_outlying_targets_than_mse(outlier_fits):
    """How far each model's predictions on the 4 outlying rows moved from their true values towards 100: Huber
    counts those errors linearly beyond one target std (seeds 0-3 measured: MSE moved 4.3-9.2, Huber 0.9-1.5)."""
    clean = regression_texts()
    texts, truth = [clean[i][0] for i in OUTLIER_ROWS], np.array([clean[i][1] for i in OUTLIER_ROWS])
    inputs = Examples("text", texts, None, "outlying rows")
    pull = {loss: abs(float(np.mean(Predictor.from_bundle(r.bundle_dir).predict(inputs).values - truth)))
            for loss, r in outlier_fits.items()}
    assert pull["huber"] < pull["mse"] / 2, pull


def test_the_loss_is_recorded_in_config_manifest_and_report(outlier_fits):
    for loss, run in outlier_fits.items():
        assert json.loads((run.run_dir / "config.json").read_text())["train"]["loss"] == loss
        manifest = json.loads((run.bundle_dir / "transferkit.json").read_text())
        assert manifest["train_config"]["loss"] == loss and manifest["train_config"]["huber_delta"] == 1.0
        assert f"| loss | {loss} |" in (run.run_dir / "report.md").read_text()


def test_cli_lists_loss_and_refuses_it_for_classification(text_csv, tmp_path, cli_env):
    helped = subprocess.run([str(VENV_BIN / "transferkit"), "fit", "--help"], capture_output=True, text=True,
                            env={**cli_env, "COLUMNS": "200"})
    assert "--loss" in helped.stdout and "--huber-delta" in helped.stdout and "mse | huber" in helped.stdout
    refused = subprocess.run([str(VENV_BIN / "transferkit"), "fit", "--data", str(text_csv), "--loss", "huber",
                              "--out", str(tmp_path / "no")], capture_output=True, text=True, env=cli_env)
    assert refused.returncode == 2
    assert ("--loss (mse | huber) chooses regression's loss, and classification trains with cross-entropy; drop it "
            "(classification; pass --task regression if the labels are numbers to predict)") in " ".join(
        (refused.stdout + refused.stderr).split())


@pytest.mark.parametrize("flags, said", [
    (["--huber-delta", "0.2"], "--huber-delta applies only with --loss huber. Got --huber-delta 0.2 without it"),
    (["--loss", "hubber"], "--loss must be mse or huber. Got 'hubber' instead"),
    (["--loss", "huber", "--huber-delta", "inf"], "--huber-delta must be a finite number > 0. Got inf instead"),
    (["--loss", "huber", "--strategy", "linear-probe"], "--loss huber trains the head by gradient steps"),
])
def test_cli_says_loss_mistakes_in_flag_names(text_csv_regression, tmp_path, monkeypatch, capsys, flags, said):
    from tests.test_cli_doctor import run_main

    code, out, err = run_main(["fit", "--data", str(text_csv_regression), "--model", "minilm", *flags, "--out",
                               str(tmp_path / "no")], monkeypatch, capsys)
    text = " ".join((out + err).split())
    assert code == 2 and said in text and "TrainConfig" not in text and "loss=" not in text


def test_transfer_regressor_takes_the_loss(tmp_path: Path):
    from sklearn.base import clone

    from transferkit import TransferRegressor

    rows = regression_texts(24)
    texts, y = [t for t, _ in rows], np.array([v for _, v in rows])
    reg = TransferRegressor(model="minilm", strategy="head", epochs=1, loss="huber", huber_delta=0.5,
                            out=str(tmp_path / "run"))
    assert clone(reg).get_params()["loss"] == "huber"
    reg.fit(texts, y)
    recorded = json.loads((tmp_path / "run" / "bundle" / "transferkit.json").read_text())["train_config"]
    assert (recorded["loss"], recorded["huber_delta"]) == ("huber", 0.5)
    assert reg.predict(texts[:3]).shape == (3,)
    with pytest.raises(ConfigError, match="linear-probe strategy fits its ridge head in closed form"):
        TransferRegressor(model="minilm", strategy="linear-probe", loss="huber").fit(texts, y)


def test_compare_passes_the_loss_to_every_run_and_refuses_it_with_the_ridge_probe(text_csv_regression, tmp_path):
    from transferkit.compare import compare

    with pytest.raises(ConfigError, match="loss='huber' trains the head by gradient steps, but the linear-probe"):
        compare(str(text_csv_regression), ["head", "linear-probe"], [None], out=tmp_path / "no", model="minilm",
                loss="huber")
