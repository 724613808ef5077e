"""Decode an audio clip into mono float32 at a backbone's sample rate, and crop or pad it to a fixed length.

Imports only transferkit.core. ``soundfile`` (libsndfile) decodes WAV, FLAC, OGG/Vorbis and MP3; ``soxr`` resamples.
Any channel count becomes mono (the mean of the channels) and any sample rate the one asked for, so clips recorded
at 8 kHz stereo and 48 kHz mono reach a backbone alike. A clip that cannot be decoded, holds no samples or holds
non-finite values is an ``AudioDecodeError`` naming the file and what to do; loaders and the data doctor catch it
the way they catch ``ImageDecodeError``. A clip may also come as the file's bytes (an upload, with an optional
limit on its duration: ``AudioTooLongError``) or as an array of mono samples already at the target rate.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.core.errors import DataError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
# {}: " or remove it" for a file of a dataset, "" for an upload (the client sends it again, fixed)
_FIX = "re-encode it as WAV or FLAC (e.g. `ffmpeg -i in.x out.wav`){}; readable formats: " + ", ".join(AUDIO_EXTENSIONS)


class AudioDecodeError(DataError):
    """An input that is no decodable, non-empty clip; ``reason`` says which, ``kind`` is the data doctor's name for
    it (``unreadable-audio``, ``empty-file``). Same attributes as ``ImageDecodeError``."""

    def __init__(self, where: str, reason: str, kind: str = "unreadable-audio", format: str | None = None):
        super().__init__(f"{where}: {reason}")
        self.where, self.reason, self.kind, self.format = where, reason, kind, format


class AudioTooLongError(AudioDecodeError):
    """A clip longer than a stated maximum (serve's --max-audio-seconds), known from its header before decoding."""

    def __init__(self, where: str, seconds: float, max_seconds: float):
        super().__init__(where, f"the clip is {seconds:.1f} s long, over the {max_seconds:g}-second limit per clip; "
                         "cut it into shorter clips", "too-long")
        self.seconds, self.max_seconds = seconds, max_seconds


def is_audio_name(name: str | Path) -> bool:
    return os.path.splitext(str(name))[1].lower() in AUDIO_EXTENSIONS


def read_audio(source: str | Path | bytes, where: str | None = None, max_seconds: float | None = None
               ) -> tuple[np.ndarray, int]:
    """The clip as decoded: float32 [frames, channels] and its own sample rate. ``source`` is a path or the file's
    bytes (an upload; ``where`` names it in errors). ``max_seconds``: a longer clip is an ``AudioTooLongError``
    raised from the header, before decoding (a small compressed upload can hold hours of audio); soundfile never
    decodes more frames than the header states."""
    import soundfile as sf

    if isinstance(source, (bytes, bytearray, memoryview)):
        where = where or f"<{len(source)} bytes of audio>"
        if len(source) == 0:
            raise AudioDecodeError(where, "empty file (0 bytes); send the clip's bytes", "empty-file")
        opened: Any = io.BytesIO(bytes(source))
        remove = ""  # an upload: the client re-sends it fixed; there is no file of ours to remove
    else:
        where = where or str(source)
        if not os.path.isfile(source):
            raise AudioDecodeError(where, "file not found; fix the path or restore the file", "missing-audio")
        if os.path.getsize(source) == 0:
            raise AudioDecodeError(where, "empty file (0 bytes); remove it", "empty-file")
        opened, remove = str(source), " or remove it"
    try:
        with sf.SoundFile(opened) as f:
            rate, frames = int(f.samplerate), int(f.frames)
            if max_seconds is not None and frames > max_seconds * rate:
                raise AudioTooLongError(where, frames / rate, max_seconds)
            data = f.read(dtype="float32", always_2d=True)
    except (RuntimeError, OSError, ValueError, TypeError) as exc:  # soundfile.LibsndfileError is a RuntimeError
        detail = getattr(exc, "error_string", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
        raise AudioDecodeError(where, f"cannot be decoded as audio ({detail}); {_FIX.format(remove)}") from None
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise AudioDecodeError(where, f"holds no audio (0 samples); {'remove it or ' if remove else ''}record it "
                               "again", "empty-file")
    if not np.isfinite(data).all():
        raise AudioDecodeError(where, "holds NaN or infinite samples; re-export it from the recording software")
    return data, rate


def to_mono(data: np.ndarray) -> np.ndarray:
    """[frames, channels] -> [frames], the mean of the channels (a [frames] array is returned as it is)."""
    return np.ascontiguousarray(data.mean(axis=1) if data.ndim == 2 else data, dtype=np.float32)


def resample(wave: np.ndarray, rate: int, target: int) -> np.ndarray:
    """``wave`` at ``target`` samples a second (soxr's high-quality resampler; unchanged when the rates agree)."""
    if rate == target:
        return wave
    import soxr

    return np.asarray(soxr.resample(wave, rate, target), dtype=np.float32)


def load_audio(source: str | Path | bytes | np.ndarray, sample_rate: int, where: str | None = None,
               max_seconds: float | None = None) -> np.ndarray:
    """Mono float32 samples of ``source`` at ``sample_rate``; AudioDecodeError naming the file when it is unusable.
    ``source``: a path, a file's bytes, or a 1-d array taken as mono samples already at ``sample_rate``."""
    if isinstance(source, np.ndarray):
        if source.ndim != 1 or not np.isfinite(source).all():
            raise AudioDecodeError(where or "an audio array", "in-memory audio must be a 1-d array of finite mono "
                                   f"samples at {sample_rate} Hz; got shape {source.shape}")
        return np.ascontiguousarray(source, dtype=np.float32)
    data, rate = read_audio(source, where, max_seconds)
    return resample(to_mono(data), rate, sample_rate)


def clip_samples(clip_seconds: float, sample_rate: int) -> int:
    """The number of samples a clip of ``clip_seconds`` holds at ``sample_rate`` (at least one)."""
    return max(1, int(round(clip_seconds * sample_rate)))


def crop_or_pad(wave: np.ndarray, samples: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """Exactly ``samples`` samples: a longer clip cropped (at a random start when ``rng`` is given, i.e. in training;
    centred otherwise), a shorter one zero-padded at the end."""
    n = len(wave)
    if n > samples:
        start = int(rng.integers(0, n - samples + 1)) if rng is not None else (n - samples) // 2
        return np.ascontiguousarray(wave[start:start + samples], dtype=np.float32)
    if n == samples:
        return np.asarray(wave, dtype=np.float32)
    return np.concatenate([np.asarray(wave, dtype=np.float32), np.zeros(samples - n, dtype=np.float32)])
