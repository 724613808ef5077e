"""Reports for audio (transferkit/evaluate/html.py, plots.py): the most confidently wrong clips get a waveform +
log-mel spectrogram thumbnail, the input summary reads clip durations and sample rates from the headers (a clip is
never opened as an image), and a real audio fit writes a report.html that shows those thumbnails."""
from __future__ import annotations

import html as htmllib
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import transferkit
from tests.conftest import tone, write_tone_folder
from tests.evaluate.test_report import DATA_URI, decode_png
from transferkit.data.examples import Examples
from transferkit.evaluate import html
from transferkit.evaluate.html import audio_thumbnail, confident_errors, inputs_summary


def _loud_then_silent(path: Path) -> Path:
    wave = np.concatenate([tone(440.0, 0.5, 16000)[:, 0], np.zeros(8000, np.float32)])
    sf.write(path, wave, 16000)
    return path


def test_audio_thumbnail_is_a_waveform_over_a_log_mel_spectrogram(tmp_path: Path):
    """A wide PNG; the tone's half is bright and the silent half dark in the spectrogram (lower two thirds)."""
    image = decode_png(DATA_URI.fullmatch(audio_thumbnail(_loud_then_silent(tmp_path / "a.wav"))).group(1))
    width, height = image.size
    assert 120 <= width <= 260 and 80 <= height <= 180 and width > height
    spectrogram = np.asarray(image.convert("L"), dtype=float)[int(height * 0.45):]
    left, right = spectrogram[:, : width // 3], spectrogram[:, 2 * width // 3:]
    assert left.mean() > right.mean() + 40, (left.mean(), right.mean())
    broken = tmp_path / "broken.flac"
    broken.write_bytes(b"fLaC" + bytes(64))
    assert audio_thumbnail(broken) == ""


def test_confident_errors_of_clips_carry_thumbnails_and_file_names(tmp_path: Path):
    clip, broken = _loud_then_silent(tmp_path / "a.wav"), tmp_path / "b.wav"
    broken.write_bytes(b"RIFF")
    rows = confident_errors([str(clip), str(broken)], ["a", "b"], np.array([1, 1]),
                            np.array([[0.9, 0.1], [0.8, 0.2]]), ["x", "y"], "audio")
    assert rows[0]["thumbnail"].startswith("data:image/png;base64,") and rows[0]["audio"] is True
    assert rows[1]["thumbnail"] == "" and rows[1]["text"] == "b.wav"  # the template then shows the name


def test_inputs_summary_of_clips_reads_headers_not_images(tone_folder: Path, monkeypatch: pytest.MonkeyPatch):
    def no_images(*args, **kwargs):
        raise AssertionError("a clip was opened as an image")

    monkeypatch.setattr(html, "load_image", no_images)
    paths = sorted(str(p) for p in tone_folder.rglob("*.*"))
    summary = inputs_summary(Examples("audio", paths, [Path(p).parent.name for p in paths], str(tone_folder)))
    assert summary == ("Clip durations (first 12 training clips): shortest 1.00 s, median 1.50 s, longest 2.00 s; "
                       "sample rates 8,000, 16,000, 22,050, 44,100 Hz.")


def test_report_of_an_audio_run_shows_the_wrong_clips(tone_folder: Path, tmp_path: Path):
    """Test clips whose folders name the other pitch: every prediction is confidently wrong, so report.html shows a
    thumbnail per test clip, and report.md names the clips."""
    swapped = tmp_path / "swapped"
    write_tone_folder(tmp_path / "test", per_class=2, seed=3)
    shutil.copytree(tmp_path / "test" / "high", swapped / "low")
    shutil.copytree(tmp_path / "test" / "low", swapped / "high")
    run = transferkit.fit(str(tone_folder), model="speech-embedding", strategy="linear-probe", clip_seconds=1.0,
                          test_data=str(swapped), out=str(tmp_path / "run"), progress=False, baseline=False)
    assert run.metrics["test"]["accuracy"] == 0.0
    page = (run.run_dir / "report.html").read_text()
    images = re.findall(r'<img src="(data:image/png;base64,[^"]+)" alt="([^"]+)" class="audio"', page)
    assert len(images) == 4
    for uri, _ in images:
        assert decode_png(DATA_URI.fullmatch(htmllib.unescape(uri)).group(1)).size[0] > 100
    assert "Clip durations (first" in page and "Image sizes" not in page
    markdown = (run.run_dir / "report.md").read_text()
    assert all(name in markdown for name in ("0.wav", "1.flac"))
