"""Serving an audio bundle on a real loopback server: multipart uploads and base64 JSON answer what the Predictor
answers for the same files, a clip over --max-audio-seconds is a 413 found from its header, anything undecodable a
422 naming the upload; the ONNX export serves the same labels.

The bundle is a whisper-tiny-en linear probe on the shared tone folder (2 pitches, 1-2 s clips, mixed rates,
channels and formats) with 1.5-second clips, fitted once per module; unseen clips come from another seed.
"""
from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

import transferkit
from tests.conftest import write_tone_folder
from tests.serve.conftest import LiveServer
from transferkit.core.errors import ConfigError
from transferkit.data.examples import Examples
from transferkit.data.sources import load_source
from transferkit.export.onnx import export_onnx
from transferkit.serve.config import ServeConfig
from transferkit.serve.predictor import Predictor

LIMITS = {"max_body_mb": 1, "max_batch": 8, "timeout_s": 20.0, "max_audio_seconds": 4.0}


@pytest.fixture(scope="module")
def audio_bundle(tmp_path_factory: pytest.TempPathFactory, tone_folder: Path) -> Path:
    out = tmp_path_factory.mktemp("serve-audio") / "run"
    return Path(transferkit.fit(str(tone_folder), model="whisper-tiny-en", strategy="linear-probe", clip_seconds=1.5,
                                out=str(out), progress=False).bundle_dir)


@pytest.fixture(scope="module")
def clips(audio_bundle: Path) -> list[Path]:
    """6 unseen clips (3 high, 3 low; .wav, .flac, .ogg), in folder order."""
    return list(load_source(str(write_tone_folder(audio_bundle.parent.parent / "unseen", 3, seed=1))).train.inputs)


@pytest.fixture(scope="module")
def audio_predictor(audio_bundle: Path) -> Predictor:
    return Predictor.from_bundle(audio_bundle)


@pytest.fixture(scope="module")
def audio_server(audio_predictor: Predictor) -> Iterator[LiveServer]:
    server = LiveServer(audio_predictor, ServeConfig(**LIMITS)).start()
    yield server
    server.stop()


def _files(paths: list[Path]) -> list[tuple[str, tuple[str, bytes]]]:
    return [("files", (Path(p).name, Path(p).read_bytes())) for p in paths]


def _flac(seconds: float, rate: int = 16000) -> bytes:
    """Silence as FLAC, written a minute at a time (hours of it compress to a few hundred KB)."""
    buf, minute = io.BytesIO(), np.zeros(60 * rate, np.float32)
    with sf.SoundFile(buf, "w", rate, 1, format="FLAC") as f:
        for start in range(0, int(seconds * rate), len(minute)):
            f.write(minute[:int(seconds * rate) - start])
    return buf.getvalue()


def _check(response: httpx.Response, labels: list[str], scores: np.ndarray) -> None:
    assert response.status_code == 200, response.text
    got = response.json()["predictions"]
    assert [p["label"] for p in got] == labels
    np.testing.assert_allclose([p["score"] for p in got], scores, atol=1e-5)


def _still_serving(server: LiveServer, clip: Path) -> None:
    assert httpx.post(server.url + "/v1/predict", files=_files([clip])).status_code == 200


def test_multipart_and_base64_answer_what_the_predictor_answers_for_the_files(audio_server, audio_predictor, clips):
    expected = audio_predictor.predict(Examples("audio", [str(p) for p in clips], None, "files"))
    assert expected.labels == [Path(p).parent.name for p in clips]  # 220 Hz vs 880 Hz: a probe tells them apart
    _check(httpx.post(audio_server.url + "/v1/predict", files=_files(clips)), expected.labels, expected.scores)
    body = {"inputs": [{"audio_base64": base64.b64encode(Path(p).read_bytes()).decode()} for p in clips[::-1]]}
    _check(httpx.post(audio_server.url + "/v1/predict", json=body), expected.labels[::-1], expected.scores[::-1])
    ranked = httpx.post(audio_server.url + "/v1/predict", files=_files(clips[:1]), data={"top_k": "2"})
    assert [t["label"] for t in ranked.json()["predictions"][0]["top_k"]] == \
        [audio_predictor.label_names[i] for i in np.argsort(-expected.probabilities[0])]


def test_the_onnx_export_serves_the_same_labels(audio_bundle: Path, audio_predictor, clips, live_server):
    export = audio_bundle.parent / "onnx"
    export_onnx(audio_bundle, export, n_check=8)
    server = live_server(Predictor.from_bundle(export), **LIMITS)
    expected = audio_predictor.predict(Examples("audio", [str(p) for p in clips], None, "files"))
    _check(httpx.post(server.url + "/v1/predict", files=_files(clips)), expected.labels, expected.scores)


def test_a_clip_over_the_duration_limit_is_a_413_found_from_its_header(audio_server, clips):
    response = httpx.post(audio_server.url + "/v1/predict", files=[*_files(clips[:1]), ("files", ("long.flac",
                                                                                                    _flac(6.0)))])
    assert response.status_code == 413, response.text
    detail = response.json()["detail"]
    assert "long.flac" in detail and "6.0 s long, over the 4-second limit" in detail and "--max-audio-seconds" in detail
    hours = _flac(3600.0, 8000)  # an hour of FLAC silence: ~100 KB that would decode to 29 M samples
    assert len(hours) < LIMITS["max_body_mb"] * 2**20
    start = time.perf_counter()
    response = httpx.post(audio_server.url + "/v1/predict",
                          json={"inputs": [{"audio_base64": base64.b64encode(hours).decode()}]})
    assert response.status_code == 413 and "inputs[0].audio_base64" in response.json()["detail"]
    assert time.perf_counter() - start < 2.0  # refused from the header, never decoded
    _still_serving(audio_server, clips[0])


AUDIO_CASES = {
    "junk file": (dict(files=[("files", ("junk.wav", b"RIFF" + bytes(40)))]), 422, "junk.wav"),
    "empty file": (dict(files=[("files", ("empty.ogg", b""))]), 422, "empty.ogg"),
    "a picture": (dict(files=[("files", ("cat.png", b"\x89PNG\r\n\x1a\n" + bytes(64)))]), 422,
                  "cannot be decoded as audio"),
    "bad base64": (dict(json={"inputs": [{"audio_base64": "%%% not base64"}]}), 422, "not valid base64"),
    "image field": (dict(json={"inputs": [{"image_base64": "AAAA"}]}), 422, "inputs[0].image_base64"),
    "texts": (dict(json={"inputs": ["a clip"]}), 422, "an audio model"),
    "other form field": (dict(files=[("files", ("a.wav", b"x"))], data={"path": "/etc/passwd"}), 422, "'path'"),
    "too many clips": (dict(files=[("files", (f"{i}.wav", b"x")) for i in range(9)]), 413, "--max-batch"),
    "far too many clips": (dict(files=[("files", (f"{i}.wav", b"x")) for i in range(70)]), 413,  # past the parser's
                           "Over 9 inputs exceed the limit of 8 per request (--max-batch)"),  # own cap too
    "urlencoded": (dict(data={"inputs": "a"}), 415, "an audio model"),
}


@pytest.mark.parametrize("case", sorted(AUDIO_CASES))
def test_undecodable_and_malformed_uploads_get_a_4xx_naming_the_problem(audio_server, clips, case: str):
    kwargs, status, words = AUDIO_CASES[case]
    response = httpx.post(audio_server.url + "/v1/predict", **kwargs)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]
    _still_serving(audio_server, clips[0])


def test_model_card_states_the_clip_and_its_limits(audio_server):
    card = httpx.get(audio_server.url + "/v1/model").json()
    assert card["modality"] == "audio" and card["backbone"] == "whisper-tiny-en"
    assert card["input"] == {"sample_rate": 16000, "clip_seconds": 1.5}
    assert card["limits"]["max_audio_seconds"] == 4.0


@pytest.mark.parametrize("bad", [0, -1.0, "60"])
def test_max_audio_seconds_is_validated(bad):
    with pytest.raises(ConfigError, match=r"'max_audio_seconds' parameter of ServeConfig must be a number > 0") as info:
        ServeConfig(max_audio_seconds=bad)
    assert info.value.cli == f"--max-audio-seconds must be a number > 0. Got {bad!r} instead."


def test_serve_names_its_flag_for_a_bad_limit(audio_bundle: Path):
    from typer.testing import CliRunner

    from transferkit.cli import app

    for flag, name in (("--max-audio-seconds", "max_audio_seconds"), ("--timeout", "timeout_s")):
        result = CliRunner().invoke(app, ["serve", "--bundle", str(audio_bundle), flag, "0"])
        assert result.exit_code == 2 and f"{flag} must be a number > 0. Got 0.0 instead." in result.output
        assert name not in result.output


def test_an_undecodable_upload_is_named_once_with_advice_for_an_http_client(audio_server, clips):
    response = httpx.post(audio_server.url + "/v1/predict",
                          files=[*_files(clips[:1]), ("files", ("notes.wav", b"RIFF" + bytes(40)))])
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail.startswith("notes.wav (file 1): cannot be decoded as audio") and "files file" not in detail
    assert "re-encode it as WAV or FLAC" in detail and "remove it" not in detail
