"""The data doctor's audio checks: each clip's header read (soundfile.info) and the clip decoded once, by the same
decoder the loaders use (transferkit.data.audio), into what the doctor reports and the fingerprints it compares.

Imports only transferkit.core and transferkit.data (never transferkit.data.doctor, which calls ``audio_issues``).
Kinds, per clip: ``empty-file``, ``unreadable-audio`` (cannot be decoded, no samples, NaN samples; left out of the
run like an unreadable image), ``silent-audio`` (its loudest sample is below ``SILENT_DBFS``: a warning, it trains
as silence), ``wrong-extension`` (decodes, but its content is another format than its name says); per split:
``short-audio`` (clips under ``SHORT_FRACTION`` of ``clip_seconds``: mostly padding) and ``long-audio`` (over
``LONG_FACTOR`` x ``clip_seconds``: how much of them the model never hears); over all splits: ``mixed-sample-rates``
and ``mixed-channels`` (a warning each: every clip is resampled and mixed to mono anyway, but a recording setup
that differs by class is a shortcut a model learns).
Fingerprints: each clip mono, resampled to ``FINGERPRINT_RATE``, scaled to its peak and quantised to 8 bits; its
SHA-256 is the exact key (the same samples in WAV and FLAC, or in stereo and mono, at any peak level). Near duplicates
across splits (``near_audio_pairs``) have durations within ``NEAR_DURATION``, loudness envelopes (``ENVELOPE_SEGMENTS``
equal segments, dB under the loudest) within ``NEAR_AUDIO_DB`` and coarse power spectra (so two different tones,
whose envelopes are both flat, stay apart) within ``NEAR_SPECTRUM_DB``: the same recording resampled or re-encoded
at another bit depth or rate matches there. Unlike images, no hash buckets them: a dHash of the envelope flips bits
between equally loud neighbouring segments after a mere resampling, so candidates come from a window of durations.
"""
from __future__ import annotations

import bisect
import hashlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.data.audio import AudioDecodeError, read_audio, resample, to_mono
from transferkit.data.examples import Examples
from transferkit.data.fingerprints import _looks_like
from transferkit.data.preprocess import PreprocessSpec

FINGERPRINT_RATE = 8000
SILENT_DBFS = -60.0  # a clip whose loudest sample is quieter than this holds no sound worth learning
SHORT_FRACTION = 0.1  # clips shorter than a tenth of clip_seconds are over 90 % padding
LONG_FACTOR = 2.0  # clips over twice clip_seconds lose over half of their sound to the crop
ENVELOPE_SEGMENTS = 64
ENVELOPE_FLOOR_DB = -50.0  # the envelope in dB under the clip's loudest segment, floored: noise floors compare equal
NEAR_AUDIO_DB = 1.0  # mean absolute envelope difference (dB) under which two clips are the same sound
NEAR_DURATION = 0.02  # and their durations differ by at most 2 %
SPECTRUM_BANDS, SPECTRUM_FRAME = 32, 512  # mean power of 512-sample frames in 32 bands of 125 Hz (at 8 kHz)
NEAR_SPECTRUM_DB = 1.5  # and their spectra (dB under the loudest band, floored) within this on average
# (re-encoded to OGG/MP3 or resampled, real prompts stay under 0.3 dB of envelope and 0.6 dB of spectrum)
EXTENSION_FORMATS = {".wav": "WAV", ".wave": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".oga": "OGG", ".mp3": "MP3",
                     ".aif": "AIFF", ".aiff": "AIFF"}
_SHOWN = 5  # sample rates or channel counts listed in a message


@dataclass(frozen=True)
class AudioInfo:
    """What one header read and one decode of a clip tell; the doctor's exact-duplicate key is ``sha256``."""

    kind: str | None = None  # None when usable; else empty-file | unreadable-audio | missing-audio
    reason: str | None = None
    format: str | None = None  # soundfile's name for the container (WAV, FLAC, OGG, MP3, ...)
    sample_rate: int = 0
    channels: int = 0
    seconds: float = 0.0
    peak_dbfs: float = float("-inf")
    sha256: str | None = None
    envelope: bytes | None = None  # float32 [ENVELOPE_SEGMENTS + 1], dB under the loudest segment
    spectrum: bytes | None = None  # float32 [SPECTRUM_BANDS], dB under the loudest band

    @property
    def ok(self) -> bool:
        return self.kind is None


@dataclass(frozen=True)
class AudioIssue:
    kind: str
    split: str
    message: str
    index: int | None = None  # the clip it is about; None: the split's source
    left_out: bool = False  # unusable: the run leaves the clip out (``reason`` says why, for the report)
    reason: str = ""


def audio_info(path: str | Path) -> AudioInfo:
    """Header, decode and fingerprints of one clip file."""
    import soundfile as sf

    try:
        data, rate = read_audio(path)
    except AudioDecodeError as exc:
        hint = _looks_like(Path(path)) if exc.kind == "unreadable-audio" else ""
        return AudioInfo(exc.kind, f"not an audio file{hint}; rename or remove it" if hint else exc.reason)
    try:
        container = sf.info(str(path)).format
    except RuntimeError:  # read_audio decoded it: the header is readable
        container = None
    mono = to_mono(data)
    peak = float(np.abs(data).max())
    peak_dbfs = 20 * float(np.log10(peak)) if peak > 0 else float("-inf")
    info = AudioInfo(None, None, container, rate, int(data.shape[1]), len(mono) / rate, peak_dbfs)
    if peak_dbfs < SILENT_DBFS:  # reported as silent; two silences are not the same recording
        return info
    wave = resample(mono, rate, FINGERPRINT_RATE)
    return replace(info, sha256=_quantised_sha256(wave), envelope=_envelope(wave), spectrum=_spectrum(wave))


def _quantised_sha256(wave: np.ndarray) -> str:
    """SHA-256 of the samples scaled to their peak and rounded to 8 bits."""
    peak = float(np.abs(wave).max()) if wave.size else 0.0
    quantised = np.rint(wave / peak * 127).astype(np.int8) if peak > 0 else np.zeros(wave.size, np.int8)
    return hashlib.sha256(quantised.tobytes()).hexdigest()


def _envelope(wave: np.ndarray) -> bytes:
    """RMS of ``ENVELOPE_SEGMENTS`` equal segments, dB under the loudest."""
    segments = np.array_split(wave.astype(np.float64), ENVELOPE_SEGMENTS)
    rms = np.array([np.sqrt(np.mean(s * s)) if s.size else 0.0 for s in segments])
    return _floored_db(20 * np.log10(np.maximum(rms, 1e-10))).tobytes()


def _spectrum(wave: np.ndarray) -> bytes:
    """Mean power of ``SPECTRUM_FRAME``-sample frames in ``SPECTRUM_BANDS`` equal bands, dB under the loudest."""
    frames = np.pad(wave, (0, -len(wave) % SPECTRUM_FRAME)).reshape(-1, SPECTRUM_FRAME)
    power = (np.abs(np.fft.rfft(frames, axis=1)) ** 2).mean(axis=0)[1:]  # without the DC bin
    bands = power.reshape(SPECTRUM_BANDS, -1).mean(axis=1)
    return _floored_db(10 * np.log10(np.maximum(bands, 1e-20))).tobytes()


def _floored_db(level: np.ndarray) -> np.ndarray:
    """Levels in dB under their maximum, no lower than ``ENVELOPE_FLOOR_DB`` (float32)."""
    return np.maximum(level - level.max(), ENVELOPE_FLOOR_DB).astype(np.float32)


def near_audio(a: AudioInfo, b: AudioInfo) -> bool:
    """The same sound: durations within ``NEAR_DURATION``, envelopes within ``NEAR_AUDIO_DB`` and spectra within
    ``NEAR_SPECTRUM_DB``."""
    if None in (a.envelope, b.envelope, a.spectrum, b.spectrum):
        return False
    if abs(a.seconds - b.seconds) > NEAR_DURATION * max(a.seconds, b.seconds):
        return False
    return _mad(a.envelope, b.envelope) < NEAR_AUDIO_DB and _mad(a.spectrum, b.spectrum) < NEAR_SPECTRUM_DB


def _mad(a: bytes, b: bytes) -> float:
    return float(np.abs(np.frombuffer(a, np.float32) - np.frombuffer(b, np.float32)).mean())


def near_audio_pairs(infos: dict[str, list[AudioInfo]], marked: dict[str, set[int]]) -> list[tuple[str, int, str, int]]:
    """(split, index, earlier split, index): each clip not in ``marked`` (already an exact duplicate) with the
    clip of an earlier split (in ``infos``' order) whose envelope is closest among those ``near_audio`` accepts."""
    earlier: list[tuple[float, str, int]] = []  # (seconds, split, index), sorted by duration
    pairs = []
    for name, found in infos.items():
        for i, info in enumerate(found):
            if info.envelope is None or i in marked.get(name, set()):
                continue
            low = bisect.bisect_left(earlier, (info.seconds * (1 - NEAR_DURATION), "", -1))
            high = bisect.bisect_right(earlier, (info.seconds / (1 - NEAR_DURATION), "\uffff", 1 << 62))
            matches = [(_mad(info.envelope, infos[s][j].envelope), s, j) for _, s, j in earlier[low:high]
                       if near_audio(info, infos[s][j])]
            if matches:
                _, s, j = min(matches)
                pairs.append((name, i, s, j))
        earlier = sorted(earlier + [(info.seconds, name, i) for i, info in enumerate(found)
                                    if info.envelope is not None])
    return pairs


def audio_infos(examples: Examples) -> list[AudioInfo]:
    return [audio_info(item) for item in examples.inputs]


def audio_issues(parts: dict[str, Examples], infos: dict[str, list[AudioInfo]], clip_seconds: float | None,
                 stats: dict[str, Any], summaries: bool = True) -> Iterator[AudioIssue]:
    """Every per-clip finding and, with ``summaries``, the per-split (durations) and cross-split (mixed formats)
    ones; ``stats['audio']`` gets the rates, channels and durations seen. ``clip_seconds`` None: PreprocessSpec's
    default."""
    clip = clip_seconds if clip_seconds is not None else PreprocessSpec(modality="audio").clip_seconds
    for name, examples in parts.items():
        yield from _clip_issues(name, examples, infos[name])
    if not parts or not summaries:
        return
    for name, examples in parts.items():
        yield from _durations(name, examples, infos[name], clip)
    usable = [(name, i, info) for name, found in infos.items() for i, info in enumerate(found) if info.ok]
    seconds = [info.seconds for _, _, info in usable]
    stats["audio"] = {"clip_seconds": clip,
                      "sample_rates": _counts(info.sample_rate for _, _, info in usable),
                      "channels": _counts(info.channels for _, _, info in usable),
                      "seconds": {"min": round(min(seconds), 3), "median": round(float(np.median(seconds)), 3),
                                  "max": round(max(seconds), 3)} if seconds else {}}
    yield from _mixed("mixed-sample-rates", "sample rates", " Hz", usable, lambda info: info.sample_rate, parts,
                      "all are resampled to the backbone's rate, but a rate (or bandwidth) that differs by class is "
                      "a shortcut a model learns instead of the sound")
    yield from _mixed("mixed-channels", "channel counts", " channel(s)", usable, lambda info: info.channels, parts,
                      "all are mixed down to mono (the mean of the channels)")


def _clip_issues(split: str, examples: Examples, infos: list[AudioInfo]) -> Iterator[AudioIssue]:
    for i, info in enumerate(infos):
        clip = f"clip '{examples.inputs[i]}': " if examples.lines is not None else ""
        if not info.ok:
            yield AudioIssue(info.kind or "unreadable-audio", split, f"{clip}{info.reason}; left out of the run", i,
                             left_out=True, reason=f"{clip}{info.reason}")
            continue
        if info.peak_dbfs < SILENT_DBFS:
            level = "every sample is 0" if info.peak_dbfs == float("-inf") else \
                f"its loudest sample is at {info.peak_dbfs:.0f} dBFS"
            yield AudioIssue("silent-audio", split, f"{clip}silent: {level} (under {SILENT_DBFS:.0f} dBFS); it trains "
                             "as silence. Check the recording or remove the file", i)
        claimed = EXTENSION_FORMATS.get(Path(str(examples.inputs[i])).suffix.lower())
        if claimed and info.format and info.format != claimed:
            yield AudioIssue("wrong-extension", split, f"{clip}a {info.format} file named "
                             f"'{Path(str(examples.inputs[i])).name}'; it decodes, but rename it so that other tools "
                             "read it too", i)


def _durations(split: str, examples: Examples, infos: list[AudioInfo], clip: float) -> Iterator[AudioIssue]:
    """One finding for the clips much shorter, one for those much longer than ``clip``, at the most extreme."""
    ok = [i for i, info in enumerate(infos) if info.ok]
    short = [i for i in ok if infos[i].seconds < SHORT_FRACTION * clip]
    if short:
        i = min(short, key=lambda k: infos[k].seconds)
        yield AudioIssue("short-audio", split, f"{_share(short, ok)} clips are shorter than {SHORT_FRACTION * clip:g} s "
                         f"(a tenth of --clip-seconds {clip:g}): each is padded with silence to {clip:g} s, so over "
                         f"90 % of what the model hears is padding; the shortest, here, lasts {infos[i].seconds:.3g} s. "
                         "Lower --clip-seconds or check the recordings", i)
    long = [i for i in ok if infos[i].seconds > LONG_FACTOR * clip]
    if long:
        i = max(long, key=lambda k: infos[k].seconds)
        cut = 1 - clip * len(long) / sum(infos[k].seconds for k in long)
        yield AudioIssue("long-audio", split, f"{_share(long, ok)} clips are longer than {LONG_FACTOR:g} x "
                         f"--clip-seconds {clip:g}: only {clip:g} s of each is heard (a random stretch in training, the "
                         f"middle in evaluation), {100 * cut:.0f} % of their sound is cut; the longest, here, lasts "
                         f"{infos[i].seconds:.1f} s ({infos[i].seconds - clip:.1f} s cut). Raise --clip-seconds or cut "
                         "the recordings into clips", i)


def _share(found: list[int], ok: list[int]) -> str:
    return f"{len(found)} of {len(ok)} ({100 * len(found) / len(ok):.0f} %)"


def _mixed(kind: str, what: str, unit: str, usable: list[tuple[str, int, AudioInfo]], value: Any,
           parts: dict[str, Examples], why: str) -> Iterator[AudioIssue]:
    counts = Counter(value(info) for _, _, info in usable)
    if len(counts) < 2:
        return
    rare = min(counts, key=counts.get)
    split, i = next((name, i) for name, i, info in usable if value(info) == rare)
    listed = ", ".join(f"{v}{unit}: {n}" for v, n in counts.most_common(_SHOWN))
    more = f" and {len(counts) - _SHOWN} more" if len(counts) > _SHOWN else ""
    by_class = _by_class(usable, value, unit, parts)
    yield AudioIssue(kind, split, f"clips come with {len(counts)} {what} ({listed}{more}; this one: {rare}{unit}); "
                     f"{why}{by_class}", i)


def _by_class(usable: list[tuple[str, int, AudioInfo]], value: Any, unit: str, parts: dict[str, Examples]) -> str:
    """Names a value (of 2 clips or more) that only one class has, when the clips are labelled by class."""
    seen: dict[Any, list[str]] = {}
    for name, i, info in usable:
        labels = parts[name].labels
        if labels is None or not isinstance(labels[i], str):
            return ""
        seen.setdefault(value(info), []).append(labels[i])
    if len({y for found in seen.values() for y in found}) < 2:
        return ""
    alone = sorted((v, found[0]) for v, found in seen.items() if len(found) > 1 and len(set(found)) == 1)
    if not alone:
        return ""
    v, label = alone[0]
    return f". Every {v}{unit} clip is of class '{label}': check that the model does not learn that instead"


def _counts(values: Iterator[Any]) -> dict[str, int]:
    return {str(k): n for k, n in sorted(Counter(values).items())}
