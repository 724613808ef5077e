"""The data doctor on audio clips: unusable clips named and left out, silent clips and wrong extensions named,
extreme durations against --clip-seconds, mixed sample rates and channels reported (not fatal), duplicates across
splits found by audio fingerprint (also resampled, re-encoded, louder or in stereo), and `transferkit doctor`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from tests.test_cli_doctor import run_main
from transferkit.data.audio_checks import NEAR_AUDIO_DB, audio_info, near_audio
from transferkit.data.doctor import DoctorConfig, diagnose, diagnose_inputs
from transferkit.data.examples import Examples
from transferkit.data.sources import load_source

RATE = 8000


def bursts(seed: int, seconds: float = 1.0) -> np.ndarray:
    """Noise whose loudness changes every 50 ms (a speech-like envelope), peak about 0.5."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    level = np.repeat(rng.uniform(0.02, 0.3, n // 400 + 1), 400)[:n]
    return np.clip(level * rng.standard_normal(n), -0.9, 0.9).astype(np.float32)


def write(path: Path, wave: np.ndarray, rate: int = RATE, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave, rate, **kwargs)
    return path


def by_kind(report) -> dict[str, list]:
    found: dict[str, list] = {}
    for f in report.findings:
        found.setdefault(f.kind, []).append(f)
    return found


def test_bad_clips_are_named_and_unusable_ones_left_out(tmp_path):
    root = tmp_path / "clips"
    for c, cls in enumerate("ab"):
        for i in range(3):
            write(root / cls / f"{i}.wav", bursts(10 * c + i))
    silent = write(root / "a" / "silent.wav", np.zeros(RATE, np.float32))
    zero_length = write(root / "a" / "header-only.wav", np.zeros(0, np.float32))
    (root / "b" / "empty.wav").write_bytes(b"")
    (root / "b" / "notes.wav").write_text("these are my notes, not a recording\n")
    flac = write(root / "b" / "really-flac.wav", bursts(99), format="FLAC")
    report = diagnose(load_source(root))
    kinds = by_kind(report)
    [quiet] = kinds["silent-audio"]
    assert quiet.path == str(silent) and "every sample is 0" in quiet.message
    assert {f.path for f in kinds["empty-file"]} == {str(zero_length), str(root / "b" / "empty.wav")}
    [notes] = kinds["unreadable-audio"]
    assert notes.path == str(root / "b" / "notes.wav") and "looks like text" in notes.message
    [wrong] = kinds["wrong-extension"]
    assert wrong.path == str(flac) and "a FLAC file named 'really-flac.wav'" in wrong.message
    left_out = {s["path"] for s in report.skipped()}
    assert left_out == {str(zero_length), str(root / "b" / "empty.wav"), str(root / "b" / "notes.wav")}
    assert report.n_skipped == 3 and not report.fatal  # silent and wrong-extension clips still train
    assert len(report.apply(load_source(root)).train) == len(load_source(root).train) - 3


def test_durations_against_clip_seconds_say_how_much_is_cut(tmp_path):
    root = tmp_path / "clips"
    for cls in "ab":
        for i in range(3):
            write(root / cls / f"{i}.wav", bursts(i, seconds=1.0))
    short = write(root / "a" / "blip.wav", bursts(7, seconds=0.05))
    longest = write(root / "b" / "lecture.wav", bursts(8, seconds=6.0))
    write(root / "b" / "long.wav", bursts(9, seconds=3.0))
    kinds = by_kind(diagnose(load_source(root), DoctorConfig(clip_seconds=1.0)))
    [s] = kinds["short-audio"]
    assert s.path == str(short) and "1 of 9" in s.message and "0.05 s" in s.message
    assert "Lower --clip-seconds or check the recordings" in s.message
    [lg] = kinds["long-audio"]
    assert lg.path == str(longest) and "2 of 9" in lg.message
    assert "(5.0 s cut)" in lg.message and f"{100 * (1 - 2 / 9):.0f} % of their sound is cut" in lg.message
    # the same clips at the default 5 s: nothing is long, and the 1 s clips are not "very short"
    default = by_kind(diagnose(load_source(root)))
    assert "long-audio" not in default and [f.path for f in default["short-audio"]] == [str(short)]


def test_mixed_rates_and_channels_are_reported_not_fatal(tmp_path):
    root = tmp_path / "clips"
    for i in range(3):
        write(root / "a" / f"{i}.wav", bursts(i))
        write(root / "b" / f"{i}.wav", soxr.resample(bursts(10 + i), RATE, 16000), 16000)
    write(root / "b" / "stereo.wav", np.stack([bursts(20), bursts(21)], axis=1))
    report = diagnose(load_source(root))
    kinds = by_kind(report)
    [rates] = kinds["mixed-sample-rates"]
    assert "8000 Hz: 4, 16000 Hz: 3" in rates.message and rates.severity == "warning"
    assert "Every 16000 Hz clip is of class 'b'" in rates.message
    [channels] = kinds["mixed-channels"]
    assert channels.path == str(root / "b" / "stereo.wav") and "1 channel(s): 6, 2 channel(s): 1" in channels.message
    assert report.stats["audio"]["sample_rates"] == {"8000": 4, "16000": 3}
    assert not report.fatal and report.n_skipped == 0


def test_duplicates_across_splits_by_fingerprint(tmp_path):
    root = tmp_path / "clips"
    for c, cls in enumerate("ab"):
        for i in range(3):
            write(root / "train" / cls / f"{i}.wav", bursts(10 * c + i))
    pcm, _ = sf.read(root / "train" / "a" / "0.wav", dtype="int16")  # a lossless stereo FLAC copy of 0.wav
    copy = write(root / "test" / "a" / "copy.flac", np.stack([pcm, pcm], 1))
    resampled = soxr.resample(bursts(1), RATE, 16000)
    moved = write(root / "test" / "a" / "hifi.flac", np.stack([resampled, resampled], 1) * 0.7, 16000,
                  subtype="PCM_24")
    relabelled = write(root / "test" / "b" / "other-label.wav", bursts(2))
    write(root / "test" / "b" / "new.wav", bursts(50))
    report = diagnose(load_source(root))
    found = {f.path: f for f in report.findings if f.kind in ("leakage", "near-duplicate")}
    assert set(found) == {str(copy), str(moved), str(relabelled)}
    assert found[str(copy)].kind == "leakage" and str(root / "train" / "a" / "0.wav") in found[str(copy)].message
    assert found[str(moved)].kind == "near-duplicate" and "nearly the same sound (a re-encoded" in found[str(moved)].message
    assert "labelled 'b' here and 'a' there" in found[str(relabelled)].message
    assert report.n_skipped == 0
    deduped = diagnose(load_source(root), DoctorConfig(dedupe=True))
    assert {s["path"] for s in deduped.skipped()} == set(found)


def test_near_audio_needs_the_same_sound_not_only_a_flat_envelope(tmp_path):
    a = audio_info(write(tmp_path / "a.wav", bursts(3)))
    b16 = soxr.resample(bursts(3), RATE, 16000)
    b = audio_info(write(tmp_path / "b.flac", b16 * 0.6, 16000, subtype="PCM_24"))
    assert a.sha256 != b.sha256 and near_audio(a, b)
    assert not near_audio(a, audio_info(write(tmp_path / "c.wav", bursts(4))))
    sine = {f: (0.5 * np.sin(2 * np.pi * f * np.arange(RATE) / RATE)).astype(np.float32) for f in (440.0, 1200.0)}
    low, high = (audio_info(write(tmp_path / f"{f:.0f}.wav", wave)) for f, wave in sine.items())
    flat = np.frombuffer(low.envelope, np.float32), np.frombuffer(high.envelope, np.float32)
    assert np.abs(flat[0] - flat[1]).mean() < NEAR_AUDIO_DB  # envelopes alone would match ...
    assert not near_audio(low, high)  # ... but different spectra


def test_diagnose_inputs_checks_each_clip_only(tmp_path):
    good = write(tmp_path / "good.wav", bursts(1, seconds=30.0))
    (tmp_path / "bad.wav").write_bytes(b"RIFF\x00\x00")
    examples = Examples("audio", [str(good), str(tmp_path / "bad.wav")], ["a", "a"], str(tmp_path))
    report = diagnose_inputs({"test": examples})
    assert [f.kind for f in report.findings] == ["unreadable-audio"] and report.left_out("test") == [1]


def test_cli_doctor_reports_audio_findings(tmp_path, tone_folder, monkeypatch, capsys):
    import shutil

    root = Path(shutil.copytree(tone_folder, tmp_path / "clips"))
    write(root / "low" / "quiet.wav", np.zeros(RATE, np.float32))
    (root / "high" / "broken.flac").write_bytes(b"fLaC" + bytes(20))
    code, out, _ = run_main(["doctor", "--data", str(root)], monkeypatch, capsys)
    assert code == 0
    for kind in ("silent-audio", "unreadable-audio", "mixed-sample-rates", "mixed-channels"):
        assert kind in out, out
    assert "broken.flac" in out and "quiet.wav" in out and "fit would leave out 1 input(s)" in out
    assert "long-audio" not in out  # 1-2 s clips against the default 5 s
    code, out, _ = run_main(["doctor", "--data", str(root), "--clip-seconds", "0.5", "--json"], monkeypatch, capsys)
    report = json.loads(out)
    long = [f for f in report["findings"] if f["kind"] == "long-audio"]
    assert code == 0 and report["stats"]["audio"]["clip_seconds"] == 0.5 and len(long) == 1
    assert "longer than 2 x --clip-seconds 0.5" in long[0]["message"]


def test_stats_name_rates_channels_and_durations(tmp_path):
    seconds = 0.5
    write(tmp_path / "x" / "a" / "0.wav", bursts(0, seconds))
    write(tmp_path / "x" / "b" / "0.wav", bursts(1, 2 * seconds))
    stats = diagnose(load_source(tmp_path / "x")).stats["audio"]
    assert stats["seconds"] == {"min": seconds, "median": 1.5 * seconds, "max": 2 * seconds}
    assert stats["channels"] == {"1": 2} and stats["clip_seconds"] == 5.0
