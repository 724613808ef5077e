"""Multi-label end to end, offline and tiny: MiniLM on 48 generated texts whose labels are decided by keywords.
fit (detected from JSON lists, with the line that says so) -> bundle with tuned thresholds -> evaluate/predict/
serve/ONNX with parity; a CSV with --label-sep through the CLI; the training loop (head strategy); the estimator."""
from __future__ import annotations

import csv
import json
import random
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest

import transferkit
from tests.conftest import VENV_BIN
from tests.serve.conftest import LiveServer
from transferkit.estimator import TransferClassifier
from transferkit.serve.config import ServeConfig
from transferkit.serve.predictor import Predictor

KEYWORDS = {"sun": "weather", "rain": "weather", "goal": "sport", "match": "sport", "vote": "politics",
            "law": "politics"}
FILLER = ("the", "a", "today", "people", "city", "big")
METRIC_KEYS = {"micro_f1", "macro_f1", "samples_f1", "subset_accuracy", "hamming_loss", "map", "n"}


def multilabel_texts(n: int = 48, seed: int = 0) -> list[tuple[str, list[str]]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        keys = rng.sample(list(KEYWORDS), rng.randint(1, 3))
        words = keys + [rng.choice(FILLER) for _ in range(3)]
        rng.shuffle(words)
        rows.append((" ".join(words), sorted({KEYWORDS[k] for k in keys})))
    return rows


@pytest.fixture(scope="module")
def jsonl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ml") / "topics.jsonl"
    path.write_text("".join(json.dumps({"text": t, "labels": y}) + "\n" for t, y in multilabel_texts()))
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, jsonl: Path) -> transferkit.api.FitResult:
    out = tmp_path_factory.mktemp("ml-run") / "lp"
    return transferkit.fit(str(jsonl), model="minilm", strategy="linear-probe", out=str(out), progress=False)


def test_fit_detects_multilabel_and_records_thresholds(run):
    summary = json.loads((run.run_dir / "metrics.json").read_text())
    assert summary["task"] == "multilabel"
    assert summary["task_detected"].startswith("task: multilabel (detected: 48 rows with a list of labels")
    assert METRIC_KEYS <= set(summary["val"])
    manifest = json.loads((run.bundle_dir / "transferkit.json").read_text())
    assert manifest["task"] == "multilabel" and manifest["labels"] == ["politics", "sport", "weather"]
    assert set(manifest["thresholds"]) == {"politics", "sport", "weather"}
    assert all(0 < t < 1 for t in manifest["thresholds"].values())
    report = (run.run_dir / "report.md").read_text()
    assert "threshold" in report and "Confusion matrix" not in report
    assert "per label" in (run.run_dir / "report.html").read_text()


def test_report_shows_micro_f1_and_map_before_and_after_adaptation(run, jsonl: Path, tmp_path: Path):
    assert "No before-vs-after: this run is the frozen-feature probe" in (run.run_dir / "report.md").read_text()
    head = transferkit.fit(str(jsonl), model="minilm", strategy="head", epochs=2, lr=1e-2, out=str(tmp_path / "head"),
                           progress=False)
    summary = json.loads((head.run_dir / "metrics.json").read_text())
    before, after = summary["before_adaptation"], summary["val"]
    assert before["map"] is not None and before["n"] == after["n"]  # the probe's per-label scores give its mAP
    section = (head.run_dir / "report.md").read_text().split("## Before vs after adaptation", 1)[1]
    assert "| model | val micro-F1 | val mAP |" in section
    assert (f"| before: one-vs-rest logistic probe on frozen pretrained features | {before['micro_f1']:.4f} | "
            f"{before['map']:.4f} |") in section
    assert f"| after: head | {after['micro_f1']:.4f} | {after['map']:.4f} |" in section
    gain = after["micro_f1"] - before["micro_f1"]
    statement = f"is {-gain:.3f} of val micro-F1 below" if gain < 0 else f"gained +{gain:.3f} of val micro-F1"
    assert statement in section and statement in (head.run_dir / "report.html").read_text()


def test_evaluate_predict_serve_agree(run, jsonl: Path, tmp_path: Path):
    metrics = transferkit.evaluate(run.bundle_dir, str(jsonl), progress=False)
    assert METRIC_KEYS <= set(metrics) and metrics["n"] == 48
    assert metrics["micro_f1"] > 0.8  # keywords decide the labels: the probe learns them
    predicted = transferkit.predict(run.bundle_dir, str(jsonl), tmp_path / "p.jsonl", progress=False)
    rows = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert set(rows[0]) == {"text", "labels", "scores"} and set(rows[0]["scores"]) == {"politics", "sport", "weather"}
    assert all(r["labels"] == [n for n, s in r["scores"].items() if s > 0.5] for r in rows)
    assert predicted.labels == [r["labels"] for r in rows]
    truth = [y for _, y in multilabel_texts()]
    subset = np.mean([r["labels"] == y for r, y in zip(rows, truth)])
    assert subset == pytest.approx(metrics["subset_accuracy"])
    transferkit.predict(run.bundle_dir, str(jsonl), tmp_path / "p.csv", progress=False)
    with open(tmp_path / "p.csv", newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        table = list(reader)
    assert reader.fieldnames == ["text", "labels", "score_politics", "score_sport", "score_weather"]
    assert [r["labels"] for r in table] == ["|".join(r["labels"]) for r in rows]
    server = LiveServer(Predictor.from_bundle(run.bundle_dir), ServeConfig()).start()
    try:
        answer = httpx.post(server.url + "/v1/predict", json={"inputs": [t for t, _ in multilabel_texts()[:3]]})
    finally:
        server.stop()
    assert answer.status_code == 200
    served = answer.json()["predictions"]
    assert [p["labels"] for p in served] == [r["labels"] for r in rows[:3]]
    np.testing.assert_allclose([p["scores"]["sport"] for p in served], predicted.probabilities[:3, 1], atol=1e-4)


def test_onnx_parity_per_label_and_int8_label_set_agreement(run, jsonl: Path, tmp_path: Path):
    entry = transferkit.api.export(run.bundle_dir, tmp_path / "onnx")
    assert entry["parity"]["max_abs_diff"] < 1e-3 and entry["parity"]["top1_agreement"] == 1.0
    torch_scores = transferkit.predict(run.bundle_dir, str(jsonl), progress=False).probabilities
    onnx_scores = transferkit.predict(tmp_path / "onnx", str(jsonl), runtime="onnx", progress=False).probabilities
    np.testing.assert_allclose(onnx_scores, torch_scores, atol=1e-4)
    int8 = transferkit.api.export(run.bundle_dir, tmp_path / "int8", int8=True)["int8"]
    assert 0 <= int8["vs_fp32"]["top1_agreement"] <= 1 and int8["accuracy"]["n"] > 0


def test_cli_csv_with_label_sep_and_refusals(tmp_path: Path, cli_env):
    data = tmp_path / "topics.csv"
    with open(data, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "tags"])
        writer.writerows((t, ";".join(y)) for t, y in multilabel_texts())
    fit = subprocess.run([str(VENV_BIN / "transferkit"), "fit", "--data", str(data), "--task", "multilabel",
                          "--label-column", "tags", "--label-sep", ";", "--model", "minilm", "--strategy",
                          "linear-probe", "--out", str(tmp_path / "run")], capture_output=True, text=True, env=cli_env)
    assert fit.returncode == 0, fit.stderr
    assert "val: micro-F1" in " ".join((fit.stdout + fit.stderr).split())
    ev = subprocess.run([str(VENV_BIN / "transferkit"), "evaluate", "--bundle", str(tmp_path / "run" / "bundle"),
                         "--data", str(data), "--label-column", "tags", "--json"], capture_output=True, text=True,
                        env=cli_env)
    assert ev.returncode == 0, ev.stderr
    assert METRIC_KEYS <= set(json.loads(ev.stdout)) and json.loads(ev.stdout)["micro_f1"] > 0.8
    refused = subprocess.run([str(VENV_BIN / "transferkit"), "fit", "--data", str(data), "--task", "multilabel",
                              "--label-column", "tags", "--label-sep", ";", "--sampler", "balanced", "--out",
                              str(tmp_path / "no")], capture_output=True, text=True, env=cli_env)
    assert refused.returncode == 2 and "--sampler balanced" in refused.stdout + refused.stderr


def test_training_loop_and_estimator_take_label_lists(tmp_path: Path):
    texts, labels = zip(*multilabel_texts())
    clf = TransferClassifier(model="minilm", strategy="head", epochs=2, lr=1e-2, out=str(tmp_path / "est"))
    clf.fit(list(texts), [list(y) for y in labels])
    assert clf.result_.history and "val_micro_f1" in clf.result_.history[0]
    assert list(clf.classes_) == ["politics", "sport", "weather"]
    predicted = clf.predict(list(texts[:5]))
    assert predicted.shape == (5, 3) and set(np.unique(predicted)) <= {0, 1}
    assert 0 <= clf.score(list(texts), [list(y) for y in labels]) <= 1
    indicator = np.array([[int(c in y) for c in ("politics", "sport", "weather")] for y in labels])
    by_columns = TransferClassifier(model="minilm", strategy="linear-probe", out=str(tmp_path / "ind"))
    by_columns.fit(list(texts), indicator)
    assert list(by_columns.classes_) == [0, 1, 2]
    assert by_columns.score(list(texts), indicator) > 0.7


def test_compare_ranks_by_micro_f1_against_a_one_vs_rest_reference(jsonl: Path, tmp_path: Path):
    from transferkit.compare import compare

    summary = compare(str(jsonl), ["linear-probe"], [None], out=tmp_path / "cmp", model="minilm", progress=False)
    assert summary["task"] == "multilabel" and summary["metric"] == "micro_f1"
    names = {r["strategy"] for r in summary["rows"]}
    assert names == {"linear-probe", "tfidf-logreg"}
    assert all(0 <= r["micro_f1_mean"] <= 1 for r in summary["rows"])
    assert any("micro-F1" in g["statement"] for g in summary["gains"])
