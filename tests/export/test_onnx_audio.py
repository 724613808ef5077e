"""ONNX export of audio bundles: the graph takes the backbone's batch, the feature extractor travels as an asset,
parity on the recorded test clips, int8 for both audio backbones, and predict --runtime onnx on a folder of clips.

Bundles are linear probes on tiny tone folders (2 pitches, 1-2 s clips at mixed rates and formats), fitted once
per module with 1.5-second clips; whisper-tiny-en's export is made once per module too.
"""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

import transferkit
from tests.conftest import write_tone_folder
from transferkit.data.examples import Examples
from transferkit.data.sources import load_source
from transferkit.export.onnx import ONNX_FILE, export_onnx
from transferkit.serve.predictor import Predictor

CLIP = 1.5


@pytest.fixture(scope="module")
def tones(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("onnx-tones")
    write_tone_folder(root / "train", per_class=6)
    write_tone_folder(root / "test", per_class=3, seed=1)
    return root


def _fit(tones: Path, model: str) -> Path:
    out = tones.parent / f"run-{model}"
    return Path(transferkit.fit(str(tones), model=model, strategy="linear-probe", clip_seconds=CLIP, out=str(out),
                                progress=False).bundle_dir)


@pytest.fixture(scope="module")
def whisper_bundle(tones: Path) -> Path:
    return _fit(tones, "whisper-tiny-en")


@pytest.fixture(scope="module")
def speech_bundle(tones: Path) -> Path:
    return _fit(tones, "speech-embedding")


@pytest.fixture(scope="module")
def whisper_export(whisper_bundle: Path) -> Path:
    out = whisper_bundle.parent / "onnx"
    export_onnx(whisper_bundle, out)
    return out


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "transferkit.json").read_text())


def test_whisper_export_takes_log_mels_and_carries_its_feature_extractor(whisper_export: Path, tones: Path):
    manifest = _manifest(whisper_export)
    entry = manifest["onnx"]
    assert manifest["runtime"] == "onnx" and entry["inputs"] == ["input_features", "attention_mask"]
    assert (whisper_export / "feature_extractor" / "preprocessor_config.json").is_file()
    assert not (whisper_export / "model.safetensors").exists()
    parity = entry["parity"]
    assert parity["n"] == 100 and parity["max_abs_diff"] <= 1e-4 and parity["top1_agreement"] == 1.0
    # the 6 recorded test clips first, topped up with synthetic clips (tones in noise of random lengths)
    assert parity["inputs"] == f"6 from the test split of {tones.resolve()} + 94 synthetic"
    graph_inputs = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
                    for i in onnx.load(str(whisper_export / ONNX_FILE)).graph.input}
    frames = int(CLIP * 100)  # log-mel frames of a 1.5 s clip: the clip length is fixed, the batch is not
    assert graph_inputs == {"input_features": ["batch", 80, frames], "attention_mask": ["batch", frames]}


def test_a_moved_export_reads_its_own_feature_extractor(whisper_export: Path, tmp_path: Path, tones: Path):
    moved = tmp_path / "moved"
    shutil.copytree(whisper_export, moved)
    predictor = Predictor.from_bundle(moved)
    assert predictor.runtime == "onnx"
    assert predictor.preprocessing.feature_extractor == str(moved / "feature_extractor")
    test = load_source(str(tones / "test")).train
    assert predictor.predict(test).labels == test.labels


def test_onnx_predictions_equal_the_bundles_on_files_bytes_and_single_clips(whisper_bundle: Path,
                                                                            whisper_export: Path, tones: Path):
    test = load_source(str(tones / "test")).train
    onnx_predictor, torch_predictor = Predictor.from_bundle(whisper_export), Predictor.from_bundle(whisper_bundle)
    a, b = onnx_predictor.predict(test), torch_predictor.predict(test)
    assert a.labels == b.labels == test.labels
    np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-5)
    as_bytes = Examples("audio", [Path(p).read_bytes() for p in test.inputs], None, "uploads")
    np.testing.assert_allclose(onnx_predictor.predict(as_bytes).probabilities, a.probabilities, atol=1e-6)
    one = Predictor.from_bundle(whisper_export, batch_size=1).predict(test)  # a batch of one through the graph
    np.testing.assert_allclose(one.probabilities, a.probabilities, atol=1e-5)


def test_predict_runtime_onnx_on_a_folder_with_a_broken_clip(whisper_bundle: Path, whisper_export: Path,
                                                             tones: Path, tmp_path: Path):
    clips = tmp_path / "clips"
    shutil.copytree(tones / "test", clips)
    (clips / "high" / "broken.wav").write_bytes(b"RIFF" + bytes(40))
    rows = {}
    for runtime, bundle in (("onnx", whisper_export), ("torch", whisper_bundle)):
        out = tmp_path / f"{runtime}.csv"
        transferkit.predict(bundle, str(clips), out, runtime=runtime, progress=False)
        rows[runtime] = list(csv.DictReader(out.open()))
    assert [r["label"] for r in rows["onnx"]] == [r["label"] for r in rows["torch"]]
    np.testing.assert_allclose([float(r["score"] or "nan") for r in rows["onnx"]],
                               [float(r["score"] or "nan") for r in rows["torch"]], atol=1e-5)
    broken = next(r for r in rows["onnx"] if r["path"].endswith("broken.wav"))
    assert "cannot be decoded as audio" in broken["error"] and not broken["label"]
    assert all(r["label"] == Path(r["path"]).parent.name for r in rows["onnx"] if r is not broken)


def test_int8_whisper_quantizes_the_encoders_matrices(whisper_bundle: Path, tones: Path):
    out = whisper_bundle.parent / "onnx-int8"
    q = export_onnx(whisper_bundle, out, int8=True, n_check=40)["int8"]
    assert q["method"] == "dynamic" and "front end" in q["float"]
    assert q["int8_bytes"] < q["fp32_bytes"] / 2.5  # the convolutions and the position table stay float
    assert q["vs_fp32"]["n"] == 40 and q["vs_fp32"]["top1_agreement"] >= 0.9
    assert q["accuracy"] == {"split": "test", "n": 6, "accuracy_fp32": 1.0, "accuracy_int8": 1.0,
                             "accuracy_drop_points": 0.0}
    ops = {n.op_type for n in onnx.load(str(out / ONNX_FILE)).graph.node}
    assert "MatMulInteger" in ops and "ConvInteger" not in ops
    test = load_source(str(tones / "test")).train
    assert Predictor.from_bundle(out).predict(test).labels == test.labels


def test_speech_embedding_exports_with_parity_and_int8_keeps_its_mel_front_end_float(speech_bundle: Path,
                                                                                     tones: Path):
    fp32 = export_onnx(speech_bundle, speech_bundle.parent / "onnx", n_check=20)
    assert fp32["inputs"] == ["input_values", "attention_mask"]
    assert fp32["parity"]["max_abs_diff"] <= 1e-4 and fp32["parity"]["top1_agreement"] == 1.0
    assert not (speech_bundle.parent / "onnx" / "feature_extractor").exists()  # raw waveforms: nothing to carry
    out = speech_bundle.parent / "onnx-int8"
    q = export_onnx(speech_bundle, out, int8=True, n_check=20)["int8"]
    assert q["method"] == "static QDQ" and q["calibration"]["inputs"] == str(tones / "train")
    assert q["accuracy"]["split"] == "test" and q["accuracy"]["accuracy_drop_points"] <= 0.0
    nodes = onnx.load(str(out / ONNX_FILE)).graph.node
    quantized = [n.name for n in nodes if n.op_type == "DequantizeLinear"]
    assert quantized and not [n for n in quantized if "/frontend/" in n]
    test = load_source(str(tones / "test")).train
    assert Predictor.from_bundle(out).predict(test).labels == test.labels


def test_synthetic_clips_when_the_recorded_data_is_gone(speech_bundle: Path, tmp_path: Path):
    bundle = tmp_path / "bundle"
    shutil.copytree(speech_bundle, bundle)
    manifest = _manifest(bundle)
    manifest["data"] = {"source": str(tmp_path / "gone"), "val_data": None, "test_data": None}
    (bundle / "transferkit.json").write_text(json.dumps(manifest))
    parity = export_onnx(bundle, tmp_path / "onnx", n_check=8)["parity"]
    assert parity["inputs"].startswith("8 synthetic") and "not readable here" in parity["inputs"]
    assert parity["n"] == 8 and parity["max_abs_diff"] <= 1e-4


def test_evaluate_on_an_export_names_the_bundle_it_came_from(whisper_bundle: Path, whisper_export: Path,
                                                            tones: Path):
    """evaluate reads PyTorch bundles: an export (no backbone_config/, no weights) is refused up front, naming the
    bundle it was exported from, not with an error from the hub or about safetensors."""
    from typer.testing import CliRunner

    from transferkit.cli import app
    from transferkit.core.errors import BundleError

    with pytest.raises(BundleError, match="is an ONNX export") as info:
        transferkit.evaluate(whisper_export, str(tones / "test"), split="train", progress=False)
    assert f"evaluate the PyTorch bundle it came from ({whisper_bundle.resolve()})" in str(info.value)
    result = CliRunner().invoke(app, ["evaluate", "--bundle", str(whisper_export), "--data", str(tones / "test")])
    assert result.exit_code == 2 and "is an ONNX export" in result.output
