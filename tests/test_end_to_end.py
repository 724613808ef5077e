"""End to end through the public API with the real bundled weights: finetune, scratch, and the estimator."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import transferkit
from tests.conftest import bbc_texts
from transferkit import TransferClassifier
from transferkit.core.errors import NotFittedError
from transferkit.export.bundle import load_bundle

pytestmark = pytest.mark.slow


def _check_run_folder(run_dir: Path, expect_test: bool) -> dict:
    assert (run_dir / "bundle" / "model.safetensors").is_file()
    assert (run_dir / "bundle" / "transferkit.json").is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    splits = [s for s in ("test", "val") if s in metrics]
    assert splits, f"metrics.json has neither test nor val: {sorted(metrics)}"
    if expect_test:
        assert "test" in metrics
    for split in splits:
        m = metrics[split]
        assert 0.0 <= m["accuracy"] <= 1.0
        assert 0.0 <= m["macro_f1"] <= 1.0
        assert isinstance(m["n"], int) and m["n"] > 0
    report = (run_dir / "report.md").read_text()
    assert report.startswith("# transferkit run")
    assert "## Results" in report
    events = list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert events, "no TensorBoard event files"
    assert all(e.stat().st_size > 0 for e in events)
    return metrics


def test_finetune_on_tiny_digits(digits_split_folder: Path, tmp_path: Path):
    run_dir = tmp_path / "finetune"
    result = transferkit.fit(str(digits_split_folder), model="efficientnet_lite0", strategy="finetune", epochs=2,
                             image_size=32, labels_per_class=10, batch_size=16, out=str(run_dir), progress=False)
    assert Path(result.run_dir) == run_dir
    metrics = _check_run_folder(run_dir, expect_test=True)
    assert metrics["test"]["n"] == 20  # the folder's own test/ split: 4 classes x 5
    assert metrics["n_train_used"] == 32  # 10 labels per class, 2 of each held out for validation
    assert metrics["trainable_params"] == metrics["total_params"] > 3_000_000
    assert len(result.history) == 3  # epoch 0 = validation before any step, then 2 epochs
    history = json.loads((run_dir / "history.json").read_text())
    assert [row["epoch"] for row in history] == [0, 1, 2]
    assert history[0]["train_loss"] is None
    assert all(np.isfinite(row["train_loss"]) for row in history[1:])
    assert result.metrics["test"]["accuracy"] == metrics["test"]["accuracy"]
    phases = metrics["phase_seconds"]  # where the wall time went, phase after phase
    assert list(phases) == ["data", "model", "before_adaptation", "train", "evaluate", "finish"]
    assert phases["train"] >= metrics["train_seconds"] > 0
    assert sum(phases.values()) <= metrics["wall_seconds"] + 0.05
    bundle = load_bundle(result.bundle_dir)
    assert bundle.label_map.names == ("0", "1", "2", "3")
    assert bundle.manifest["strategy"]["name"] == "finetune"
    # the test score the run reports is what the saved bundle gets on the same split
    rescored = transferkit.evaluate(result.bundle_dir, str(digits_split_folder), split="test", progress=False)
    assert rescored["confusion_matrix"] == metrics["test"]["confusion_matrix"]


def test_scratch_runs_without_pretrained_weights(digits_folder: Path, tmp_path: Path):
    run_dir = tmp_path / "scratch"
    result = transferkit.fit(str(digits_folder), model="efficientnet_lite0", strategy="scratch", epochs=1,
                             image_size=32, out=str(run_dir), progress=False)
    metrics = _check_run_folder(run_dir, expect_test=False)
    assert metrics["val"]["n"] == result.metrics["val"]["n"] > 0
    manifest = json.loads((run_dir / "bundle" / "transferkit.json").read_text())
    assert manifest["backbone"]["pretrained_sha256"] is None
    assert manifest["strategy"]["name"] == "scratch"


def test_estimator_on_texts_returns_original_label_values(tmp_path: Path):
    texts, topics = bbc_texts(per_class=8)
    codes = {"business": 10, "sports": 20, "tech": 30}
    y = np.array([codes[t] for t in topics])
    clf = TransferClassifier(model="minilm", strategy="linear-probe", out=str(tmp_path / "est"))
    assert clf.fit(texts, y) is clf
    assert sorted(clf.classes_.tolist()) == [10, 20, 30]
    pred = clf.predict(texts)
    assert pred.shape == (len(texts),)
    assert set(pred.tolist()) <= {10, 20, 30}
    assert np.issubdtype(pred.dtype, np.integer)
    assert clf.score(texts, y) >= 0.75
    proba = clf.predict_proba(texts)
    assert proba.shape == (len(texts), 3)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)
    # unseen texts from the same topics
    new_texts, new_topics = bbc_texts(per_class=3, offset=50)
    assert clf.score(new_texts, [codes[t] for t in new_topics]) >= 2 / 3
    saved = clf.save(tmp_path / "saved")
    again = TransferClassifier.load(saved)
    np.testing.assert_allclose(again.predict_proba(new_texts), clf.predict_proba(new_texts), atol=1e-6)


def test_estimator_before_fit_raises_not_fitted():
    clf = TransferClassifier(model="minilm", strategy="linear-probe")
    for method in (clf.predict_proba, clf.predict):
        with pytest.raises(NotFittedError, match="not fitted"):
            method(["some text"])
    with pytest.raises(NotFittedError):
        clf.score(["some text"], ["a"])
