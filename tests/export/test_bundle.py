"""Bundles: what transferkit.fit saves is what load_bundle gives back, and broken bundles fail clearly."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import transferkit
from tests.conftest import write_digit_folder
from transferkit.backbones import build_backbone
from transferkit.backbones.base import state_dict_sha256
from transferkit.core.errors import BundleError, ConfigError
from transferkit.data.loaders import make_loader
from transferkit.data.sources import load_source
from transferkit.export.bundle import MANIFEST, WEIGHTS, load_bundle, read_manifest, save_bundle
from transferkit.serve.predictor import Predictor
from transferkit.tasks import ClassificationHead
from transferkit.tasks.model import TransferModel

IMAGE_SIZE = 32


@pytest.fixture(scope="module")
def probe_run(tmp_path_factory: pytest.TempPathFactory):
    """A linear probe on 3 digit classes with explicit val and test folders (so both can be re-scored)."""
    root = tmp_path_factory.mktemp("bundle-run")
    train = write_digit_folder(root / "train", (0, 1, 2), 10, offset=0)
    val = write_digit_folder(root / "val", (0, 1, 2), 4, offset=10)
    test = write_digit_folder(root / "test", (0, 1, 2), 4, offset=14)
    result = transferkit.fit(str(train), strategy="linear-probe", model="efficientnet_lite0", image_size=IMAGE_SIZE,
                             val_data=str(val), test_data=str(test), out=str(root / "run"), progress=False)
    return result, {"train": train, "val": val, "test": test}


def test_bundle_files_and_manifest(probe_run):
    result, _ = probe_run
    bundle_dir = Path(result.bundle_dir)
    assert bundle_dir == Path(result.run_dir) / "bundle"
    assert (bundle_dir / WEIGHTS).is_file() and (bundle_dir / MANIFEST).is_file()
    manifest = json.loads((bundle_dir / MANIFEST).read_text())
    assert manifest["labels"] == ["0", "1", "2"]
    assert manifest["task"] == "classification"
    assert manifest["preprocessing"]["modality"] == "image"
    assert manifest["preprocessing"]["image_size"] == IMAGE_SIZE
    assert manifest["preprocessing"]["mean"] == [0.5, 0.5, 0.5]
    sha = manifest["backbone"]["pretrained_sha256"]
    assert isinstance(sha, str) and len(sha) == 64
    assert sha == build_backbone("efficientnet_lite0").weights_sha256
    assert manifest["backbone"]["name"] == "efficientnet_lite0"
    assert manifest["strategy"]["name"] == "linear-probe"
    versions = manifest["versions"]
    for package in ("python", "torch", "transferkit", "timm", "safetensors", "numpy"):
        assert versions.get(package) and versions[package] != "not installed", package
    assert versions["torch"] == torch.__version__.split("+")[0] or versions["torch"] == torch.__version__


def test_loaded_bundle_predicts_exactly_like_the_fitted_model(probe_run):
    """fit scored val/test with the in-memory model; the loaded bundle must reproduce those predictions."""
    result, folders = probe_run
    for split in ("val", "test"):
        fitted = result.metrics[split]
        loaded = transferkit.evaluate(result.bundle_dir, str(folders[split]), progress=False)
        assert loaded["n"] == fitted["n"] == 12
        assert loaded["confusion_matrix"] == fitted["confusion_matrix"], split
        assert loaded["accuracy"] == fitted["accuracy"]
        assert loaded["macro_f1"] == fitted["macro_f1"]


def test_loaded_backbone_is_the_pretrained_one(probe_run):
    """A linear probe never moves the backbone: the bundle's backbone hashes to pretrained_sha256, and the
    loaded model's logits equal a freshly built pretrained backbone + the bundle's head, bit for bit."""
    result, folders = probe_run
    bundle = load_bundle(result.bundle_dir)
    assert not bundle.model.training
    assert state_dict_sha256(bundle.model.backbone.model) == bundle.manifest["backbone"]["pretrained_sha256"]
    assert bundle.label_map.names == ("0", "1", "2")
    assert bundle.preprocessing.image_size == IMAGE_SIZE

    fresh = build_backbone("efficientnet_lite0").eval()
    fresh.preprocessing = fresh.preprocessing.with_image_size(IMAGE_SIZE)
    head = ClassificationHead(fresh.feature_dim, 3)
    head.load_state_dict(bundle.model.head.state_dict())
    reference = TransferModel(fresh, head).eval()
    examples = load_source(folders["test"]).train
    batch = next(iter(make_loader(examples, bundle.preprocessing, None, 64)))
    with torch.inference_mode():
        ours, theirs = bundle.model(batch), reference(batch)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    assert torch.equal(ours.argmax(1), theirs.argmax(1))


def test_predictor_and_predict(probe_run, tmp_path: Path):
    result, folders = probe_run
    predictions = result.predictor().predict(load_source(folders["test"]).train)
    assert predictions.probabilities.shape == (12, 3)
    np.testing.assert_allclose(predictions.probabilities.sum(1), 1.0, atol=1e-5)
    assert set(predictions.labels) <= {"0", "1", "2"}
    out = tmp_path / "pred.jsonl"
    again = transferkit.predict(result.bundle_dir, str(folders["test"]), out=out, progress=False)
    np.testing.assert_array_equal(again.probabilities, predictions.probabilities)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 12
    assert [r["label"] for r in rows] == predictions.labels
    assert {r["path"] for r in rows} == set(load_source(folders["test"]).train.inputs)


def test_save_load_round_trip_of_a_trained_head(tmp_path: Path):
    """save_bundle/load_bundle alone: any weights (here a random head) come back identical."""
    backbone = build_backbone("efficientnet_lite0").eval()
    backbone.preprocessing = backbone.preprocessing.with_image_size(IMAGE_SIZE)
    model = TransferModel(backbone, ClassificationHead(backbone.feature_dim, 2)).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        model.head.linear.weight.normal_(0, 0.1)
        model.head.linear.bias.normal_(0, 0.1)
    manifest = {"backbone": {"name": backbone.name, "architecture": backbone.architecture(),
                             "pretrained_sha256": backbone.weights_sha256, "feature_dim": backbone.feature_dim},
                "task": "classification", "labels": ["cat", "dog"], "preprocessing": backbone.preprocessing.to_dict()}
    folder = save_bundle(tmp_path / "b", model, manifest)
    assert not list(tmp_path.glob(".b.*")), "the staging folder must be gone"
    bundle = load_bundle(folder)
    for key, value in model.state_dict().items():
        assert torch.equal(bundle.model.state_dict()[key], value), key
    x = {"pixel_values": torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE)}
    with torch.inference_mode():
        assert torch.equal(bundle.model(x), model(x))
    # saving again over an existing bundle replaces it
    save_bundle(folder, model, {**manifest, "labels": ["a", "b"]})
    assert load_bundle(folder).label_map.names == ("a", "b")


def test_missing_bundle_folder(tmp_path: Path):
    with pytest.raises(BundleError) as info:
        load_bundle(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(info.value)
    with pytest.raises(BundleError):
        transferkit.load(tmp_path / "nope")


def test_folder_without_manifest(tmp_path: Path):
    with pytest.raises(BundleError, match=MANIFEST):
        load_bundle(tmp_path)


def test_damaged_manifest_and_weights(probe_run, tmp_path: Path):
    result, _ = probe_run
    broken = tmp_path / "broken"
    shutil.copytree(result.bundle_dir, broken)
    (broken / WEIGHTS).write_bytes(b"not safetensors")
    with pytest.raises(BundleError, match=WEIGHTS):
        load_bundle(broken)
    (broken / MANIFEST).write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        read_manifest(broken)


def test_a_bundle_is_loaded_by_its_manifests_task(probe_run, tmp_path: Path):
    result, _ = probe_run
    assert read_manifest(result.bundle_dir)["task"] == "classification"
    assert load_bundle(result.bundle_dir).model.task.name == "classification"
    other = tmp_path / "other"
    shutil.copytree(result.bundle_dir, other)
    manifest = read_manifest(other)
    (other / MANIFEST).write_text(json.dumps({**manifest, "task": "clasification"}))
    with pytest.raises(BundleError, match="Did you mean 'classification'"):
        load_bundle(other)


def test_inference_precision_is_read_checked_and_overridable(probe_run, tmp_path: Path):
    """Bundles record the precision they predict in (fp32 under 'auto'); predict and evaluate use it; a garbled
    value names the manifest, an unknown override is a config error, and bundles that predate the record are fp32."""
    result, folders = probe_run
    assert read_manifest(result.bundle_dir)["inference_precision"] == "fp32"
    assert Predictor.from_bundle(result.bundle_dir).precision == "fp32"
    assert Predictor.from_bundle(result.bundle_dir, precision="bf16").precision == "bf16"
    with pytest.raises(ConfigError, match="precision"):
        Predictor.from_bundle(result.bundle_dir, precision="fp16")
    edited = tmp_path / "edited"
    shutil.copytree(result.bundle_dir, edited)
    manifest = read_manifest(edited)
    (edited / MANIFEST).write_text(json.dumps({**manifest, "inference_precision": "half"}))
    with pytest.raises(BundleError, match="inference_precision"):
        Predictor.from_bundle(edited)
    with pytest.raises(BundleError, match="inference_precision"):
        transferkit.evaluate(edited, str(folders["test"]), progress=False)
    manifest.pop("inference_precision")
    (edited / MANIFEST).write_text(json.dumps(manifest))
    assert Predictor.from_bundle(edited).precision == "fp32"
