"""`transferkit enroll` (transferkit/enroll.py): a protonet bundle of digits 0-2 learns digit 3 from 5 images."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import transferkit
from tests.conftest import write_digit_folder
from transferkit import api
from transferkit.cli import app
from transferkit.core.errors import ConfigError
from transferkit.enroll import enroll
from transferkit.export.bundle import load_bundle

runner = CliRunner()


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train/ digits 0-2 (10 each), new/ five 3s, more/ five other 0s, test/ 10 other images of each of 0-3."""
    root = tmp_path_factory.mktemp("enroll")
    write_digit_folder(root / "train", (0, 1, 2), 10)
    write_digit_folder(root / "new", (3,), 5)
    write_digit_folder(root / "more", (0,), 5, offset=20)
    write_digit_folder(root / "test", (0, 1, 2, 3), 10, offset=40)
    return root


@pytest.fixture(scope="module")
def proto_bundle(digits: Path) -> Path:
    """Prototypes of the frozen EfficientNet-Lite0 features of digits 0-2 at 64 px (the closed form: seconds)."""
    result = transferkit.fit(str(digits / "train"), strategy="protonet", strategy_options={"backbone": "frozen"},
                             image_size=64, out=digits / "proto", progress=False, baseline=False)
    return result.bundle_dir


@pytest.fixture(scope="module")
def enrolled(proto_bundle: Path, digits: Path) -> tuple[Path, str, bytes]:
    """(the enrolled bundle, enroll's output, the protonet bundle's weights before) after enrolling five 3s."""
    weights_before = (proto_bundle / "model.safetensors").read_bytes()
    out = digits / "enrolled"
    result = runner.invoke(app, ["enroll", "--bundle", str(proto_bundle), "--data", str(digits / "new"),
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, result.output, weights_before


def _recall_of_3(bundle: Path, digits: Path) -> float:
    return api.evaluate(bundle, str(digits / "test"), progress=False)["per_class"]["3"]["recall"]


def test_an_enrolled_class_is_predicted_on_held_out_examples(enrolled: tuple[Path, str, bytes], proto_bundle: Path,
                                                             digits: Path):
    out, output, weights_before = enrolled
    assert "3: 5 examples (new class)" in output
    assert (proto_bundle / "model.safetensors").read_bytes() == weights_before, "the user's bundle was rewritten"
    assert load_bundle(proto_bundle).label_map.names == ("0", "1", "2")
    manifest = json.loads((out / "transferkit.json").read_text())
    assert manifest["labels"] == ["0", "1", "2", "3"]
    assert manifest["enrolled"][0]["added_labels"] == ["3"] and manifest["enrolled"][0]["examples"] == {"3": 5}
    loaded = load_bundle(out)
    assert loaded.model.head.counts[3] == 5 and (loaded.model.head.counts[:3] >= 8).all()
    recall = _recall_of_3(out, digits)
    assert recall >= 0.5, f"held-out 3s predicted as 3: {recall} (chance: 0.25)"


def test_more_examples_of_a_known_class_update_its_running_mean_in_place(proto_bundle: Path, digits: Path,
                                                                         tmp_path: Path):
    copy = tmp_path / "bundle"
    copy.mkdir()
    for f in proto_bundle.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    before = load_bundle(copy).model.head
    result = enroll(copy, digits / "more", in_place=True)
    assert result.bundle == copy and result.added == [] and result.examples == {"0": 5}
    after = load_bundle(copy).model.head
    assert after.counts[0] == before.counts[0] + 5 and torch.equal(after.counts[1:], before.counts[1:])
    assert not torch.equal(after.prototypes[0], before.prototypes[0])
    torch.testing.assert_close(after.prototypes[1:], before.prototypes[1:])


def test_enroll_refuses_clearly(proto_bundle: Path, digits: Path, tmp_path: Path):
    def refused(*args: str) -> str:
        result = runner.invoke(app, ["enroll", "--bundle", str(proto_bundle), *args])
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output
        return " ".join(result.output.split())

    assert "--in-place" in refused("--data", str(digits / "new"))  # no --out: never rewrite the bundle silently
    assert "already exists" in refused("--data", str(digits / "new"), "--out", str(digits / "train"))
    empty = tmp_path / "with-empty"
    write_digit_folder(empty, (3,), 2)
    (empty / "4").mkdir()
    message = refused("--data", str(empty), "--out", str(tmp_path / "x"))
    assert "'4' has no usable example" in message
    assert not (tmp_path / "x").exists()


def test_a_bundle_without_prototypes_is_refused_naming_the_fix(digits: Path, tmp_path: Path):
    probe = transferkit.fit(str(digits / "train"), strategy="linear-probe", image_size=32,
                            out=tmp_path / "probe", progress=False, baseline=False)
    with pytest.raises(ConfigError, match=r"not class prototypes.*--strategy protonet.*--init-from"):
        enroll(probe.bundle_dir, digits / "new", out=tmp_path / "x")
    result = runner.invoke(app, ["enroll", "--bundle", str(probe.bundle_dir), "--data", str(digits / "new"),
                                 "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "--strategy protonet" in " ".join(result.output.split())
    assert not (tmp_path / "x").exists()


def test_an_enrolled_bundle_exports_to_onnx_and_predicts_the_same_there(enrolled: tuple[Path, str, bytes],
                                                                        digits: Path, tmp_path: Path):
    out = enrolled[0]
    api.export(out, tmp_path / "onnx")  # raises unless onnxruntime matches PyTorch on every logit (1e-4) and label
    torch_rows = api.predict(out, str(digits / "test"), tmp_path / "torch.csv", progress=False)
    onnx_rows = api.predict(tmp_path / "onnx", str(digits / "test"), tmp_path / "onnx.csv", runtime="onnx",
                            progress=False)
    assert len(torch_rows.ids) == len(onnx_rows.ids) == 40

    def labels(name: str) -> list[str]:
        with open(tmp_path / name, newline="") as fh:
            return [row["label"] for row in csv.DictReader(fh)]

    assert labels("onnx.csv") == labels("torch.csv") and "3" in labels("onnx.csv")


def test_a_protonet_bundle_can_be_refitted_with_init_from(proto_bundle: Path, digits: Path, tmp_path: Path):
    """fit --init-from a prototype bundle: its backbone is the start (there are no linear rows to copy), and
    protonet recomputes the prototypes, now of four classes."""
    result = transferkit.fit(str(digits / "test"), init_from=str(proto_bundle), strategy="protonet",
                             strategy_options={"backbone": "frozen"}, out=tmp_path / "refit", progress=False,
                             baseline=False)
    loaded = load_bundle(result.bundle_dir)
    assert loaded.label_map.names == ("0", "1", "2", "3")
    assert (loaded.model.head.counts > 0).all()
