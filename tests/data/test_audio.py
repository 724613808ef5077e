"""Audio data: decoding to mono at a rate, crop/pad, audio folders and tables, the spec's audio fields, the loaders'
batches (raw waveforms and transformers feature extractors) and prediction's per-row errors."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.conftest import tone, write_tone_folder
from transferkit.core.errors import ConfigError, DataError
from transferkit.data.audio import AUDIO_EXTENSIONS, AudioDecodeError, crop_or_pad, load_audio
from transferkit.data.examples import Examples
from transferkit.data.labels import LabelMap
from transferkit.data.loaders import make_loader
from transferkit.data.preprocess import PreprocessSpec
from transferkit.data.sources import TextColumns, load_source
from transferkit.data.stream import inference_batches


def peak_hz(wave: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave))
    return float(np.fft.rfftfreq(len(wave), 1 / rate)[spectrum.argmax()])


# ------------------------------------------------------------------------------------------------------- decoding


@pytest.mark.parametrize("ext", [e.lstrip(".") for e in AUDIO_EXTENSIONS])
@pytest.mark.parametrize("rate", [8000, 44100])
def test_load_audio_any_format_and_rate_becomes_mono_at_the_target_rate(tmp_path: Path, ext: str, rate: int):
    path = tmp_path / f"a.{ext}"
    sf.write(path, tone(440.0, 1.5, rate, channels=2), rate)
    wave = load_audio(path, 16000)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - 1.5 * 16000) <= 0.02 * 16000  # mp3 adds a little encoder padding
    assert abs(peak_hz(wave, 16000) - 440.0) < 3.0


def test_load_audio_mono_is_the_mean_of_the_channels(tmp_path: Path):
    left = np.linspace(-0.5, 0.5, 16000, dtype=np.float32)
    stereo = np.stack([left, np.full_like(left, 0.25)], axis=1)
    sf.write(tmp_path / "s.wav", stereo, 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(tmp_path / "s.wav", 16000), (left + 0.25) / 2, atol=1e-6)


def test_load_audio_undecodable_empty_and_missing_name_the_file(tmp_path: Path):
    garbage = tmp_path / "bad.wav"
    garbage.write_bytes(b"RIFF not really a wave file" * 10)
    with pytest.raises(AudioDecodeError, match=r"bad\.wav: cannot be decoded as audio .*re-encode") as info:
        load_audio(garbage, 16000)
    assert info.value.kind == "unreadable-audio" and isinstance(info.value, DataError)
    assert "or remove it" in info.value.reason  # a file of a dataset can be left out; an upload cannot (below)
    (tmp_path / "zero.wav").write_bytes(b"")
    with pytest.raises(AudioDecodeError, match=r"zero\.wav: empty file") as info:
        load_audio(tmp_path / "zero.wav", 16000)
    assert info.value.kind == "empty-file"
    sf.write(tmp_path / "silent.wav", np.zeros((0, 1), dtype=np.float32), 16000)
    with pytest.raises(AudioDecodeError, match=r"silent\.wav: holds no audio \(0 samples\)"):
        load_audio(tmp_path / "silent.wav", 16000)
    with pytest.raises(AudioDecodeError, match=r"gone\.wav: file not found"):
        load_audio(tmp_path / "gone.wav", 16000)


@pytest.mark.parametrize("ext", ["wav", "flac", "ogg"])
def test_load_audio_from_bytes_equals_from_the_file_and_arrays_pass_through(tmp_path: Path, ext: str):
    """Uploads (serve) arrive as bytes; parity checks feed synthetic clips as arrays at the target rate."""
    path = tmp_path / f"t.{ext}"
    sf.write(path, tone(440.0, 1.2, 22050, 2, seed=3), 22050)
    from_file = load_audio(path, 16000)
    np.testing.assert_array_equal(load_audio(path.read_bytes(), 16000), from_file)
    np.testing.assert_array_equal(load_audio(from_file, 16000), from_file)
    with pytest.raises(AudioDecodeError, match=r"x\.wav \(file 0\): cannot be decoded as audio") as info:
        load_audio(b"RIFF" + bytes(40), 16000, where="x.wav (file 0)")
    assert "re-encode it" in info.value.reason and "remove it" not in info.value.reason
    with pytest.raises(AudioDecodeError, match=r"upload: empty file"):
        load_audio(b"", 16000, where="upload")
    with pytest.raises(AudioDecodeError, match="1-d array of finite mono samples"):
        load_audio(np.zeros((10, 2), np.float32), 16000)


def test_max_seconds_refuses_long_clips_from_the_header_before_decoding(tmp_path: Path):
    from transferkit.data.audio import AudioTooLongError

    path = tmp_path / "long.flac"
    sf.write(path, np.zeros((16000 * 3, 1), np.float32) + 0.1, 16000)
    assert len(load_audio(path.read_bytes(), 16000, max_seconds=3.0)) == 48000  # exactly the limit passes
    with pytest.raises(AudioTooLongError, match=r"up: the clip is 3.0 s long, over the 2.5-second limit") as info:
        load_audio(path.read_bytes(), 16000, where="up", max_seconds=2.5)
    assert info.value.kind == "too-long" and isinstance(info.value, AudioDecodeError)
    with pytest.raises(AudioTooLongError, match=r"long\.flac: the clip is 3.0 s long"):
        load_audio(path, 16000, max_seconds=2.5)


def test_crop_or_pad_centres_in_evaluation_crops_randomly_in_training_and_pads_at_the_end():
    wave = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(crop_or_pad(wave, 4), [3, 4, 5, 6])
    np.testing.assert_array_equal(crop_or_pad(wave, 13), [*range(10), 0, 0, 0])
    starts = {int(crop_or_pad(wave, 4, np.random.default_rng(s))[0]) for s in range(40)}
    assert starts == set(range(7))  # every start from 0 to 10 - 4 happens
    again = [crop_or_pad(wave, 4, np.random.default_rng(3)) for _ in range(2)]
    np.testing.assert_array_equal(*again)


# ----------------------------------------------------------------------------------------------------------- spec


def test_spec_audio_fields_default_and_old_bundles_still_load():
    old = {"modality": "image", "image_size": 64, "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bicubic",
           "tokenizer": None, "max_length": 256}
    spec = PreprocessSpec.from_dict(old)
    assert (spec.sample_rate, spec.clip_seconds, spec.feature_extractor) == (16000, 5.0, None)
    audio = PreprocessSpec("audio", sample_rate=8000, clip_seconds=2.5, feature_extractor="/fe")
    assert PreprocessSpec.from_dict(audio.to_dict()) == audio
    assert audio.with_clip_seconds(None) is audio and audio.with_clip_seconds(3).clip_seconds == 3.0


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf, "5", True])
def test_clip_seconds_must_be_a_positive_number(bad):
    with pytest.raises(ConfigError, match=r"'clip_seconds' parameter must be a number of seconds > 0"):
        PreprocessSpec("audio").with_clip_seconds(bad)


# -------------------------------------------------------------------------------------------------------- sources


def test_audio_folder_reads_clips_with_their_class(tone_folder: Path):
    examples = load_source(tone_folder).train
    assert examples.modality == "audio" and len(examples) == 12
    assert examples.class_counts() == {"high": 6, "low": 6}
    assert {Path(p).suffix for p in examples.inputs} == {".wav", ".flac", ".ogg"}


def test_audio_folder_with_splits_and_unlabeled_clips(tmp_path: Path):
    for split, n in (("train", 4), ("val", 2), ("test", 2)):
        write_tone_folder(tmp_path / "d" / split, per_class=n)
    splits = load_source(tmp_path / "d")
    assert [len(splits.get(s)) for s in ("train", "val", "test")] == [8, 4, 4]
    assert {splits.get(s).modality for s in ("train", "val", "test")} == {"audio"}
    loose = tmp_path / "loose"
    loose.mkdir()
    sf.write(loose / "a.mp3", tone(300.0, 1.0), 16000)
    unlabeled = load_source(loose, labeled=False).train
    assert unlabeled.modality == "audio" and unlabeled.labels is None and unlabeled.inputs == [str(loose / "a.mp3")]


def test_folder_of_images_and_clips_is_refused(tmp_path: Path, make_digit_folder):
    root = make_digit_folder(digits=(0, 1), per_class=2)
    sf.write(root / "1" / "x.wav", tone(300.0, 1.0), 16000)
    with pytest.raises(DataError, match=r"holds both images \(4, .*\) and audio clips \(1, .*x\.wav\); a dataset is one"):
        load_source(root)


def test_other_files_in_an_audio_folder_are_reported_as_not_audio(tone_folder: Path, tmp_path: Path):
    from transferkit.data.folders import list_class_folder

    root = write_tone_folder(tmp_path / "c", per_class=2)
    (root / "low" / "notes.txt").write_text("x")
    listing = list_class_folder(root, "audio")
    assert sum(map(len, listing.classes.values())) == 4
    [unexpected] = listing.unexpected
    assert "not an audio file (.txt; audio clips end in .wav, .flac, .ogg, .mp3)" in unexpected.reason


def _table(path: Path, rows: list[tuple[str, str]], header: tuple[str, str] = ("file", "label")) -> Path:
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows([header, *rows])
    return path


def test_csv_of_clip_paths_is_audio_named_or_detected(tone_folder: Path, tmp_path: Path):
    rows = [(str(tone_folder / c / f"{i}.{('wav', 'flac', 'ogg')[i % 3]}"), c) for c in ("low", "high") for i in range(3)]
    named = load_source(_table(tmp_path / "a.csv", rows), TextColumns(image="file")).train
    assert named.modality == "audio" and named.inputs == [r[0] for r in rows] and named.image_column == "file"
    detected = load_source(_table(tmp_path / "b.csv", rows, ("text", "label"))).train
    assert detected.modality == "audio" and detected.labels == [r[1] for r in rows]


def test_csv_naming_images_and_clips_is_refused(tone_folder: Path, tmp_path: Path, digits_folder: Path):
    rows = [(str(tone_folder / "low" / "0.wav"), "a"), (str(digits_folder / "0" / "0.png"), "b")]
    with pytest.raises(DataError, match=r"b\.csv:2: the 'file' column names both audio clips .* and images \(line 3"):
        load_source(_table(tmp_path / "b.csv", rows), TextColumns(image="file"))


# -------------------------------------------------------------------------------------------------------- loaders


def _examples(folder: Path) -> tuple[Examples, LabelMap]:
    examples = load_source(folder).train
    return examples, LabelMap.from_labels(examples.labels, examples.source)


def test_raw_waveform_batch_is_clip_long_with_a_mask_of_the_real_audio(tone_folder: Path):
    examples, labels = _examples(tone_folder)
    spec = PreprocessSpec("audio", sample_rate=8000, clip_seconds=1.5)
    batch = next(iter(make_loader(examples, spec, labels, 12)))
    assert batch["input_values"].shape == (12, 12000) and batch["input_values"].dtype == torch.float32
    lengths = [min(len(load_audio(p, 8000)), 12000) for p in examples.inputs]
    assert batch["attention_mask"].dtype == torch.long and batch["attention_mask"].sum(1).tolist() == lengths
    assert (batch["input_values"][batch["attention_mask"] == 0] == 0).all()
    assert batch["labels"].tolist() == labels.encode(examples.labels, "x") and batch["index"].tolist() == list(range(12))
    longest = int(np.argmax([len(load_audio(p, 8000)) for p in examples.inputs]))  # 2 s: its centre 1.5 s
    whole = load_audio(examples.inputs[longest], 8000)
    start = (len(whole) - 12000) // 2
    np.testing.assert_allclose(batch["input_values"][longest].numpy(), whole[start:start + 12000], atol=1e-6)


def test_training_crops_are_random_and_seeded_by_torch(tone_folder: Path):
    examples, labels = _examples(tone_folder)
    spec = PreprocessSpec("audio", sample_rate=8000, clip_seconds=0.5)

    def first_batch(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        return next(iter(make_loader(examples, spec, labels, 12, augment="light")))["input_values"]

    assert torch.equal(first_batch(1), first_batch(1))
    assert not torch.equal(first_batch(1), first_batch(2))
    evaluation = next(iter(make_loader(examples, spec, labels, 12)))["input_values"]
    assert not torch.equal(first_batch(1), evaluation)


def test_feature_extractor_batches_follow_the_contract(tone_folder: Path, tmp_path: Path):
    from transformers import Wav2Vec2FeatureExtractor, WhisperFeatureExtractor

    examples, labels = _examples(tone_folder)
    WhisperFeatureExtractor().save_pretrained(tmp_path / "whisper")
    Wav2Vec2FeatureExtractor(return_attention_mask=True).save_pretrained(tmp_path / "w2v")
    whisper = PreprocessSpec("audio", clip_seconds=2.0, feature_extractor=str(tmp_path / "whisper"))
    batch = next(iter(make_loader(examples, whisper, labels, 12)))
    assert batch["input_features"].shape == (12, 80, 200) and batch["attention_mask"].shape == (12, 200)
    seconds = [len(load_audio(p, 16000)) / 16000 for p in examples.inputs]
    assert batch["attention_mask"].sum(1).tolist() == [math.ceil(s * 100) for s in seconds]  # 100 frames a second
    w2v = PreprocessSpec("audio", clip_seconds=2.0, feature_extractor=str(tmp_path / "w2v"))
    batch = next(iter(make_loader(examples, w2v, labels, 12)))
    assert batch["input_values"].shape == (12, 32000) and batch["attention_mask"].dtype == torch.long
    assert batch["attention_mask"].sum(1).tolist() == [len(load_audio(p, 16000)) for p in examples.inputs]


def test_prediction_reports_an_undecodable_clip_as_a_row_error(tone_folder: Path, tmp_path: Path):
    bad = tmp_path / "bad.ogg"
    bad.write_bytes(b"OggS" + bytes(100))
    inputs = [str(tone_folder / "low" / "0.wav"), str(bad), str(tone_folder / "high" / "1.flac")]
    [batch] = list(inference_batches(Examples("audio", inputs, None, "x"), PreprocessSpec("audio"), 8))
    assert batch.positions == [0, 2] and batch.inputs["input_values"].shape == (2, 80000)
    [(position, error)] = batch.errors
    assert position == 1 and "bad.ogg: cannot be decoded as audio" in str(error)
