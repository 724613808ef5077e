"""Audio end to end: fit a linear probe on a folder of clips (2 pitches x 6 clips of 1-2 s, mixed rates, channels and
formats), then evaluate and predict from the bundle alone, with the clip length replayed from its spec; the CLI's
--clip-seconds; a feature extractor travels inside the bundle; the sklearn facade reads audio paths."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import pytest

import transferkit
from tests.conftest import VENV_BIN, write_tone_folder
from transferkit.core.errors import ConfigError

MODELS = ("whisper-tiny-en", "speech-embedding")
CLIP = 1.5


@pytest.fixture(scope="module")
def tone_splits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tone-splits")
    write_tone_folder(root / "train", per_class=6)
    write_tone_folder(root / "test", per_class=3, seed=1)
    return root


@pytest.mark.parametrize("model", MODELS)
def test_fit_linear_probe_then_evaluate_and_predict_from_the_bundle(tone_splits: Path, tmp_path: Path, model: str):
    run = transferkit.fit(str(tone_splits / "train"), model=model, strategy="linear-probe", clip_seconds=CLIP,
                          out=str(tmp_path / "run"), progress=False)
    spec = json.loads((run.bundle_dir / "transferkit.json").read_text())["preprocessing"]
    assert spec["modality"] == "audio" and spec["clip_seconds"] == CLIP and spec["sample_rate"] == 16000
    if spec["feature_extractor"] is not None:  # Whisper's log-mel extractor is a bundle asset
        assert (run.bundle_dir / "feature_extractor" / "preprocessor_config.json").is_file()
    metrics = transferkit.evaluate(run.bundle_dir, str(tone_splits / "test"), split="train", progress=False)
    assert metrics["accuracy"] == 1.0 and metrics["n"] == 6  # 220 Hz vs 880 Hz: any speech encoder tells them apart
    clips = tmp_path / "clips"
    shutil.copytree(tone_splits / "test", clips)
    (clips / "low" / "broken.flac").write_bytes(b"fLaC" + bytes(64))
    out = tmp_path / "predictions.csv"
    predictions = transferkit.predict(run.bundle_dir, str(clips), out, progress=False)
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 7 and len(predictions.labels) == 7
    broken = next(r for r in rows if r["path"].endswith("broken.flac"))
    assert "cannot be decoded as audio" in broken["error"] and not broken["label"]
    assert all(r["label"] == Path(r["path"]).parent.name for r in rows if r is not broken)


def test_cli_fit_with_clip_seconds_then_predict(tone_splits: Path, tmp_path: Path, cli_env: dict[str, str]):
    exe = str(VENV_BIN / "transferkit")
    fit = subprocess.run([exe, "fit", "--data", str(tone_splits / "train"), "--model", "speech-embedding",
                          "--strategy", "linear-probe", "--clip-seconds", "1.25", "--out", str(tmp_path / "run")],
                         capture_output=True, text=True, env=cli_env, timeout=300)
    assert fit.returncode == 0, fit.stderr[-2000:]
    manifest = json.loads((tmp_path / "run" / "bundle" / "transferkit.json").read_text())
    assert manifest["preprocessing"]["clip_seconds"] == 1.25
    predict = subprocess.run([exe, "predict", "--bundle", str(tmp_path / "run" / "bundle"), "--data",
                              str(tone_splits / "test"), "--out", str(tmp_path / "p.csv")],
                             capture_output=True, text=True, env=cli_env, timeout=300)
    assert predict.returncode == 0, predict.stderr[-2000:]
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert [r["label"] for r in rows] == [Path(r["path"]).parent.name for r in rows] and len(rows) == 6


def test_clip_seconds_is_validated_by_the_cli_and_the_api(tone_splits: Path):
    from typer.testing import CliRunner

    from transferkit.cli import app

    refused = CliRunner().invoke(app, ["fit", "--data", str(tone_splits / "train"), "--clip-seconds", "0"])
    assert refused.exit_code == 2
    assert "--clip-seconds must be a number of seconds > 0. Got 0.0 instead." in refused.output
    tiny = CliRunner().invoke(app, ["fit", "--data", str(tone_splits / "train"), "--clip-seconds", "0.01"])
    assert tiny.exit_code == 2 and "--clip-seconds must be at least 0.025 seconds for whisper-tiny-en" in tiny.output
    with pytest.raises(ConfigError, match=r"'clip_seconds' parameter must be a number of seconds > 0. Got -1"):
        transferkit.fit("unused", clip_seconds=-1)


def test_a_feature_extractor_is_saved_in_the_bundle_and_read_from_it(tmp_path: Path, tone_splits: Path):
    """The bundle keeps its own copy: deleting the folder the spec named at fit time changes nothing."""
    from transformers import Wav2Vec2FeatureExtractor

    from transferkit.backbones import build_backbone
    from transferkit.export.bundle import load_bundle, save_bundle
    from transferkit.serve.predictor import Predictor
    from transferkit.tasks import ClassificationHead
    from transferkit.tasks.model import TransferModel

    Wav2Vec2FeatureExtractor(return_attention_mask=True).save_pretrained(tmp_path / "fe")
    backbone = build_backbone("speech-embedding").eval()
    backbone.preprocessing = backbone.preprocessing.__class__(**{**backbone.preprocessing.to_dict(),
                                                               "feature_extractor": str(tmp_path / "fe")})
    model = TransferModel(backbone, ClassificationHead(backbone.feature_dim, 2)).eval()
    manifest = {"backbone": {"name": backbone.name, "architecture": backbone.architecture(),
                             "pretrained_sha256": backbone.weights_sha256, "feature_dim": backbone.feature_dim},
                "task": "classification", "labels": ["high", "low"], "preprocessing": backbone.preprocessing.to_dict()}
    folder = save_bundle(tmp_path / "bundle", model, manifest)
    shutil.rmtree(tmp_path / "fe")
    assert load_bundle(folder).preprocessing.feature_extractor == str(folder / "feature_extractor")
    examples = transferkit.data.sources.load_source(tone_splits / "test").train
    probabilities = Predictor.from_bundle(folder).predict(examples).probabilities
    assert probabilities.shape == (6, 2)


def test_estimator_fits_and_predicts_audio_paths(tone_splits: Path):
    from transferkit.data.sources import load_source
    from transferkit.estimator import TransferClassifier

    train, test = load_source(tone_splits / "train").train, load_source(tone_splits / "test").train
    clf = TransferClassifier(model="speech-embedding", strategy="linear-probe", clip_seconds=CLIP)
    clf.fit(train.inputs, train.labels)
    assert list(clf.predict(test.inputs)) == test.labels
    assert json.loads((Path(clf.result_.bundle_dir) / "transferkit.json").read_text())[
        "preprocessing"]["clip_seconds"] == CLIP


@pytest.fixture(scope="module")
def speech_bundle(tone_splits: Path) -> Path:
    run = transferkit.fit(str(tone_splits / "train"), model="speech-embedding", strategy="linear-probe",
                          clip_seconds=CLIP, out=str(tone_splits.parent / "run-speech"), progress=False)
    return Path(run.bundle_dir)


def test_evaluate_refuses_data_of_another_modality_like_predict(speech_bundle: Path, tmp_path: Path,
                                                               digits_folder: Path, text_csv: Path):
    """An audio bundle scored on images or texts: one DataError naming the data and the bundle's modality (the CLI
    prints it and exits 2), never a KeyError or a tokenizer complaint from deep in the loader."""
    from typer.testing import CliRunner

    from transferkit.cli import app
    from transferkit.core.errors import DataError

    for data, held in ((digits_folder, "image"), (text_csv, "text")):
        with pytest.raises(DataError, match=f"holds {held} data but this bundle is an audio model"):
            transferkit.evaluate(speech_bundle, str(data), progress=False)
        with pytest.raises(DataError, match=f"holds {held} data but this bundle is an audio model"):
            transferkit.predict(speech_bundle, str(data), progress=False)
    result = CliRunner().invoke(app, ["evaluate", "--bundle", str(speech_bundle), "--data", str(digits_folder)])
    assert result.exit_code == 2 and "this bundle is an audio model" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("option,flag", [({"image_size": 64}, "--image-size"), ({"max_pixels": 10**6}, "--max-pixels"),
                                         ({"mixup": 0.2}, "--mixup"), ({"cutmix": 1.0}, "--cutmix"),
                                         ({"hflip": 0.5}, "--hflip")])
def test_image_only_options_are_refused_for_audio_and_text(tone_splits: Path, text_csv: Path, tmp_path: Path,
                                                          option: dict, flag: str):
    """Nothing resizes, caps, mixes or flips a clip or a text: such an option is a ConfigError naming it (the CLI's
    flag), before any training and before a manifest could record it as applied."""
    name = next(iter(option))
    for data, modality in ((tone_splits / "train", "audio"), (text_csv, "text")):
        with pytest.raises(ConfigError, match=f"'{name}' parameter applies to images only, and the training data "
                                              f"is {modality}; drop it") as info:
            transferkit.fit(str(data), strategy="linear-probe", out=str(tmp_path / modality), progress=False,
                            **option)
        assert info.value.cli.startswith(f"{flag} applies to images only")
        assert not (tmp_path / modality / "bundle").exists()
    from typer.testing import CliRunner

    from transferkit.cli import app

    value = str(option[name])
    result = CliRunner().invoke(app, ["fit", "--data", str(tone_splits / "train"), flag, value,
                                      "--out", str(tmp_path / "cli")])
    assert result.exit_code == 2 and f"{flag} applies to images only, and the training data is audio" in result.output
