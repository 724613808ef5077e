"""ONNX export: parity with the eager model on real bundles, int8, the export as a bundle, and broken exports.

Bundles are linear probes (seconds to fit) on the shared tiny BBC texts and 32 px digits; their exports are made
once per module. Parity is the real check (100 inputs, 1e-4); int8 runs use fewer inputs to stay fast.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import transferkit
from transferkit.core import runtime as core_runtime
from transferkit.core.errors import BundleError, ConfigError
from transferkit.data.examples import Examples
from transferkit.data.sources import load_source
from transferkit.export import onnx as onnx_export
from transferkit.export.bundle import load_bundle
from transferkit.export.onnx import ONNX_FILE, ExportError, export_onnx
from transferkit.export.quantize import _warning
from transferkit.serve.predictor import Predictor
from transferkit.tasks import ClassificationTask, MultilabelTask, RegressionTask, TokensTask
from transferkit.train import precision_probe


@pytest.fixture(scope="module")
def text_bundle(tmp_path_factory: pytest.TempPathFactory, text_csv: Path) -> Path:
    """'global' scaling: a per-feature probe puts 1e30 weights on MiniLM's dead dimensions, which int8 cannot
    carry (tested separately below); this bundle has an ordinary head."""
    out = tmp_path_factory.mktemp("onnx-text") / "run"
    return Path(transferkit.fit(str(text_csv), model="minilm", strategy="linear-probe", out=str(out), progress=False,
                                strategy_options={"scaling": "global"}).bundle_dir)


@pytest.fixture(scope="module")
def image_bundle(tmp_path_factory: pytest.TempPathFactory, digits_split_folder: Path) -> Path:
    out = tmp_path_factory.mktemp("onnx-image") / "run"
    return Path(transferkit.fit(str(digits_split_folder), model="efficientnet_lite0", strategy="linear-probe",
                                image_size=32, out=str(out), progress=False).bundle_dir)


@pytest.fixture(scope="module")
def text_export(text_bundle: Path) -> Path:
    out = text_bundle.parent / "onnx"
    export_onnx(text_bundle, out)
    return out


@pytest.fixture(scope="module")
def image_export(image_bundle: Path) -> Path:
    out = image_bundle.parent / "onnx"
    export_onnx(image_bundle, out)
    return out


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "transferkit.json").read_text())


def test_text_export_is_a_bundle_with_parity(text_bundle: Path, text_export: Path):
    manifest = _manifest(text_export)
    assert manifest["runtime"] == "onnx"
    assert manifest["labels"] == _manifest(text_bundle)["labels"]
    assert (text_export / ONNX_FILE).is_file() and (text_export / "tokenizer").is_dir()
    assert not (text_export / "model.safetensors").exists()
    entry = manifest["onnx"]
    assert entry["inputs"][:2] == ["input_ids", "attention_mask"]
    parity = entry["parity"]
    assert parity["n"] == 100
    assert parity["max_abs_diff"] <= 1e-4 and parity["top1_agreement"] == 1.0
    # no test split was recorded: the held-out validation texts are re-drawn, then topped up with synthetic ones
    assert "val (re-drawn)" in parity["inputs"] and "synthetic" in parity["inputs"]
    assert entry["int8"] is None


def test_image_export_checks_on_the_recorded_test_split(image_export: Path, digits_split_folder: Path):
    parity = _manifest(image_export)["onnx"]["parity"]
    assert parity["n"] == 100
    assert parity["max_abs_diff"] <= 1e-4 and parity["top1_agreement"] == 1.0
    assert parity["inputs"].startswith(f"20 from the test split of {digits_split_folder.resolve()}")


@pytest.mark.parametrize("kind", ["text", "image"])
def test_onnx_predictor_matches_torch(kind: str, request, text_csv: Path, digits_split_folder: Path):
    bundle, export = request.getfixturevalue(f"{kind}_bundle"), request.getfixturevalue(f"{kind}_export")
    data = load_source(str(text_csv) if kind == "text" else str(digits_split_folder / "test")).train
    onnx_predictor = Predictor.from_bundle(export)  # auto: the folder holds model.onnx
    torch_predictor = Predictor.from_bundle(bundle)
    assert (onnx_predictor.runtime, torch_predictor.runtime) == ("onnx", "torch")
    assert onnx_predictor.label_names == torch_predictor.label_names
    assert onnx_predictor.manifest["runtime"] == "onnx"
    assert onnx_predictor.bundle.preprocessing == Predictor.from_bundle(export, runtime="onnx").bundle.preprocessing
    a, b = onnx_predictor.predict(data), torch_predictor.predict(data)
    assert a.labels == b.labels
    np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-5)


def test_runtime_choice_errors(text_bundle: Path, text_export: Path):
    # --runtime onnx on a PyTorch bundle predicts through a cached export of it (tests/serve/test_onnx_cache.py)
    (text_export / ONNX_FILE).rename(text_export / "moved.onnx")
    try:
        with pytest.raises(BundleError, match="export it again"):
            Predictor.from_bundle(text_export, runtime="onnx")
    finally:
        (text_export / "moved.onnx").rename(text_export / ONNX_FILE)
    with pytest.raises(BundleError, match="--runtime onnx"):
        Predictor.from_bundle(text_export, runtime="torch")
    with pytest.raises(ConfigError, match="'runtime'"):
        Predictor.from_bundle(text_bundle, runtime="tensorrt")


@pytest.mark.slow
def test_int8_text_export(text_bundle: Path, text_csv: Path):
    out = text_bundle.parent / "onnx-int8"
    entry = export_onnx(text_bundle, out, int8=True, n_check=24)
    q = entry["int8"]
    assert q["method"] == "dynamic" and q["attention_fused"] is True
    assert q["int8_bytes"] < q["fp32_bytes"] / 3
    assert q["vs_fp32"]["n"] == 24 and q["vs_fp32"]["top1_agreement"] >= 0.8
    assert q["accuracy"]["split"] == "val (re-drawn)" and q["accuracy"]["n"] > 0
    assert isinstance(q["accuracy"]["accuracy_drop_points"], float)
    predictions = Predictor.from_bundle(out).predict(load_source(str(text_csv)).train)
    assert set(predictions.labels) <= {"business", "sports", "tech"}
    assert np.allclose(predictions.probabilities.sum(1), 1, atol=1e-5)


def test_int8_image_export_uses_calibrated_qdq(image_bundle: Path, digits_split_folder: Path):
    out = image_bundle.parent / "onnx-int8"
    q = export_onnx(image_bundle, out, int8=True, n_check=20)["int8"]
    assert q["method"] == "static QDQ"
    assert q["calibration"]["inputs"] == str(digits_split_folder / "train")  # training images, not the test split
    assert q["accuracy"]["split"] == "test" and q["accuracy"]["n"] == 20
    assert q["vs_fp32"]["top1_agreement"] >= 0.8
    test = load_source(str(digits_split_folder / "test")).train
    assert len(Predictor.from_bundle(out, runtime="onnx").predict(test).labels) == 20


def test_int8_warns_when_the_head_amplifies_quantization_noise(image_bundle: Path):
    bundle = load_bundle(image_bundle)
    info = {"vs_fp32": {"top1_agreement": 0.5}, "accuracy": None}
    assert _warning(bundle, info) and "fp32 export" in _warning(bundle, info)
    bundle.model.head.linear.weight.data[0, 0] = 1e30
    assert "1.0e+30" in _warning(bundle, info)
    assert _warning(bundle, {"vs_fp32": {"top1_agreement": 1.0}, "accuracy": {"accuracy_drop_points": 0.2}}) is None
    assert _warning(bundle, {"vs_fp32": {"top1_agreement": 0.9}, "accuracy": {"accuracy_drop_points": -0.6}}) is None
    assert "drops 3.0 points" in _warning(bundle, {"vs_fp32": {"top1_agreement": 1.0},
                                                   "accuracy": {"accuracy_drop_points": 3.0}})


@pytest.mark.parametrize("damage", ["garbage", "truncated", "missing"])
def test_damaged_model_onnx_gives_a_typed_error(damage: str, image_export: Path, tmp_path: Path):
    broken = tmp_path / "broken"
    shutil.copytree(image_export, broken)
    model = broken / ONNX_FILE
    if damage == "garbage":
        model.write_bytes(b"\x08\x07not a protobuf at all" * 10)
    elif damage == "truncated":
        model.write_bytes(model.read_bytes()[:5000])
    else:
        model.unlink()
    for runtime in ("onnx", "auto"):
        with pytest.raises(BundleError, match="model.onnx"):
            Predictor.from_bundle(broken, runtime=runtime)


def test_failed_parity_writes_nothing(image_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(onnx_export, "PARITY_ATOL", -1.0)  # no export can pass: the failure path must be clean
    out = tmp_path / "export"
    with pytest.raises(ExportError, match="does not reproduce the eager model"):
        export_onnx(image_bundle, out, n_check=4)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".export")]  # no staging folder left behind


def test_export_refuses_to_overwrite_other_folders(image_bundle: Path, image_export: Path, tmp_path: Path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not an earlier ONNX export"):
        export_onnx(image_bundle, tmp_path)
    with pytest.raises(ConfigError, match="bundle itself"):
        export_onnx(image_bundle, image_bundle)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_synthetic_inputs_when_no_data_is_recorded(tmp_path: Path):
    arrays = [np.full((32, 32, 3), v, np.uint8) for v in (0, 128, 255)]
    result = transferkit.fit(Examples("image", arrays * 4, ["a", "b", "c"] * 4, "memory"), strategy="linear-probe",
                             image_size=32, out=str(tmp_path / "run"), progress=False)
    parity = export_onnx(result.bundle_dir, tmp_path / "onnx", n_check=10)["parity"]
    assert parity["inputs"].startswith("10 synthetic") and "in memory" in parity["inputs"]
    assert parity["max_abs_diff"] <= 1e-4


def test_auto_precision_bundles_predict_in_fp32_like_their_export(digits_split_folder: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch):
    """Where 'auto' trains in bf16 (forced here, whatever this CPU has), the bundle still records and predicts in
    fp32: fit's metrics, evaluate, predict with the bundle and predict with its export all agree."""
    monkeypatch.setattr(core_runtime, "bf16_supported", lambda device: True)
    monkeypatch.setattr(precision_probe, "load_cached", lambda key: None)  # auto's probe finds bf16 faster (forced)
    monkeypatch.setattr(precision_probe, "measure", lambda *a: {"fp32": [2.0], "bf16": [1.0]})
    result = transferkit.fit(str(digits_split_folder), model="efficientnet_lite0", strategy="linear-probe",
                             image_size=32, out=str(tmp_path / "run"), progress=False, baseline=False)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert (metrics["precision_used"], metrics["inference_precision"]) == ("bf16", "fp32")
    assert _manifest(result.bundle_dir)["inference_precision"] == "fp32"
    entry = export_onnx(result.bundle_dir, tmp_path / "onnx")
    assert entry["vs_bundle"]["precision"] == "fp32" and entry["vs_bundle"]["top1_agreement"] == 1.0
    assert entry["vs_bundle"]["max_abs_diff"] <= 1e-4 and "warning" not in entry["vs_bundle"]
    data = str(digits_split_folder / "test")
    from_bundle = transferkit.predict(result.bundle_dir, data, progress=False)
    from_export = transferkit.predict(tmp_path / "onnx", data, progress=False)
    assert from_bundle.labels == from_export.labels
    np.testing.assert_allclose(from_bundle.probabilities, from_export.probabilities, atol=1e-5)
    evaluated = transferkit.evaluate(result.bundle_dir, str(digits_split_folder), split="test", progress=False)
    assert evaluated["accuracy"] == metrics["test"]["accuracy"]


def test_export_of_a_bf16_bundle_is_checked_against_its_bf16_predictions(make_digit_folder, tmp_path: Path):
    """A bundle recording bf16 inference: the export still has fp32 parity, and ``vs_bundle`` reports how it agrees
    with what the bundle really predicts (bf16) — the agreement `predict` with each then shows."""
    root = make_digit_folder("data/train", digits=(0, 1, 2, 3), per_class=12).parent
    make_digit_folder("data/test", digits=(0, 1, 2, 3), per_class=25, offset=12)  # 100 = every check input is real
    result = transferkit.fit(str(root), model="efficientnet_lite0", strategy="linear-probe", image_size=32,
                             precision="bf16", out=str(tmp_path / "run"), progress=False, baseline=False)
    assert _manifest(result.bundle_dir)["inference_precision"] == "bf16"
    entry = export_onnx(result.bundle_dir, tmp_path / "onnx")
    assert entry["parity"]["max_abs_diff"] <= 1e-4 and entry["parity"]["top1_agreement"] == 1.0
    reported = entry["vs_bundle"]
    assert reported["precision"] == "bf16" and reported["n"] == 100
    assert reported["max_abs_diff"] > 1e-4, "compared with bf16 predictions, not with the fp32 model"
    test = load_source(root).test
    from_export = Predictor.from_bundle(tmp_path / "onnx", batch_size=32).predict(test).labels
    from_bundle = Predictor.from_bundle(result.bundle_dir, batch_size=32).predict(test).labels  # recorded: bf16
    agreement = float(np.mean(np.array(from_bundle) == np.array(from_export)))
    assert reported["top1_agreement"] == pytest.approx(agreement)
    assert ("warning" in reported) == (agreement < 1.0)
    in_fp32 = Predictor.from_bundle(result.bundle_dir, batch_size=32, precision="fp32").predict(test).labels
    assert in_fp32 == from_export  # the way out the warning names


@pytest.mark.parametrize(("task", "reference", "other", "says", "never"), [
    (ClassificationTask(), [[2.0, 1.0], [0.0, 3.0]], [[1.0, 2.0], [0.0, 3.0]], "top-1 agreement 50.0%", "label set"),
    (MultilabelTask(), [[1.0, -1.0], [1.0, 1.0]], [[1.0, 1.0], [1.0, 1.0]],
     "same label set (every per-label decision) on 50.0% of inputs", "top-1"),
    (RegressionTask(), [[1.0], [2.0], [3.0]], [[1.0], [2.0], [3.5]], "max |difference| 5.0e-01, R² of the values 0.875",
     "top-1"),
    (TokensTask(("O", "B-PER")), [[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]], [[2.0, 1.0], [3.0, 0.0], [1.0, 0.0]],
     "same tag on 66.7% of 3 words", "top-1"),
])
def test_export_checks_read_in_the_tasks_terms(task, reference: list, other: list, says: str, never: str):
    """What `transferkit export` prints for a check comes from the task: per label set, per value, per word tag."""
    check = onnx_export.compare_logits(np.array(reference, np.float32), np.array(other, np.float32), task)
    assert says in task.agreement(check) and never not in task.agreement(check)
