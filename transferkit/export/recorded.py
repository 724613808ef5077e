"""The data a bundle was fitted on, found again from its manifest, and synthetic inputs when it cannot be.

Imports transferkit.core and transferkit.data. An export checks parity (and int8 accuracy) on the bundle's own
test split when that is still readable, and re-fine-tuning scores the old test split to show forgetting; both
need the same answer to "which data was this?". fit records it in the manifest's ``data`` entry; older bundles
fall back to the run folder's config.json. A split fit held out at random is re-drawn the way fit draws it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.core.errors import TransferkitError
from transferkit.data.examples import Examples
from transferkit.data.multilabels import DEFAULT_SEP
from transferkit.data.preprocess import PreprocessSpec, load_tokenizer
from transferkit.data.sources import TextColumns, load_source
from transferkit.data.splits import held_out_split, subsample_per_class


@dataclass
class RecordedSplit:
    examples: Examples
    split: str  # "test", "val" or "val (re-drawn)"
    train: Examples | None = None  # the training inputs, e.g. to calibrate int8 activations on


def reference(data: Any) -> str | None:
    """How a manifest records data: an absolute path or builtin:NAME; None for data passed in memory."""
    if not isinstance(data, (str, Path)):
        return None
    text = str(data)
    return text if text.startswith("builtin:") else str(Path(text).resolve())


def data_record(data: Any, val_data: str | None, test_data: str | None) -> dict[str, str | None]:
    """The manifest's ``data`` entry written by fit."""
    return {"source": reference(data), "val_data": reference(val_data), "test_data": reference(test_data)}


def _record(manifest: dict[str, Any], bundle_dir: Path) -> dict[str, Any]:
    if isinstance(manifest.get("data"), dict):
        return manifest["data"]
    fit_config = manifest.get("fit_config", {})
    config_file = Path(bundle_dir).parent / "config.json"  # bundles written before the manifest recorded data
    source = None
    if config_file.is_file():
        try:
            source = json.loads(config_file.read_text(encoding="utf-8")).get("data")
        except (OSError, ValueError):
            source = None
    return {"source": source, "val_data": fit_config.get("val_data"), "test_data": fit_config.get("test_data")}


def recorded_split(manifest: dict[str, Any], bundle_dir: Path) -> tuple[RecordedSplit | None, str]:
    """The bundle's labeled evaluation split (test, else val) and a sentence saying where it came from or why not."""
    record = _record(manifest, bundle_dir)
    if not record.get("source"):
        return None, "the bundle does not record its data (it was fitted on data passed in memory)"
    fit_config, train_config = manifest.get("fit_config", {}), manifest.get("train_config", {})
    multilabel = manifest.get("task") == "multilabel"  # a CSV label cell split as fit split it
    columns = TextColumns(fit_config.get("text_column", "text"), fit_config.get("label_column", "label"),
                          fit_config.get("label_sep") or (DEFAULT_SEP if multilabel else None),
                          tuple(fit_config.get("label_columns") or ()), fit_config.get("image_column"))
    try:
        splits = load_source(record["source"], columns)
        if record.get("test_data"):
            return RecordedSplit(load_source(record["test_data"], columns).train, "test", splits.train), \
                record["test_data"]
        if splits.test is not None:
            return RecordedSplit(splits.test, "test", splits.train), record["source"]
        if record.get("val_data"):
            return RecordedSplit(load_source(record["val_data"], columns).train, "val", splits.train), \
                record["val_data"]
        if splits.val is not None:
            return RecordedSplit(splits.val, "val", splits.train), record["source"]
        train, seed = splits.train, int(train_config.get("seed", 0))
        if fit_config.get("labels_per_class"):
            train = subsample_per_class(train, int(fit_config["labels_per_class"]), seed)
        train, val = held_out_split(train, float(fit_config.get("val_fraction", 0.15)), seed,
                                    manifest.get("task", "classification"))
        return RecordedSplit(val, "val (re-drawn)", train), record["source"]
    except (TransferkitError, OSError, ValueError) as exc:
        return None, f"its recorded data {record['source']} is not readable here ({str(exc).split('. ')[0]})"


def spread(examples: Examples, n: int) -> Examples:
    """At most ``n`` examples evenly spaced over the whole set (every class of a sorted folder is represented)."""
    if len(examples) <= n:
        return examples
    return examples.subset(np.unique(np.linspace(0, len(examples) - 1, n).round().astype(int)))


def synthetic_examples(spec: PreprocessSpec, n: int, seed: int = 0) -> Examples:
    """Random pictures, texts of 5-40 random vocabulary tokens, or clips (a tone of random pitch in noise, a tenth
    to the whole of the clip length, as mono arrays at the spec's rate): inputs for a parity check without real
    data."""
    rng = np.random.default_rng(seed)
    if spec.modality == "image":
        size = spec.image_size
        inputs: list[Any] = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]
        return Examples("image", inputs, None, "synthetic images")
    if spec.modality == "audio":
        return Examples("audio", [_synthetic_clip(spec, rng) for _ in range(n)], None, "synthetic clips")
    tokenizer = load_tokenizer(spec)
    special = set(tokenizer.all_special_ids)
    vocab = np.array([i for i in range(tokenizer.vocab_size) if i not in special])
    texts = [tokenizer.decode(rng.choice(vocab, size=int(rng.integers(5, 41))).tolist()) for _ in range(n)]
    return Examples("text", texts, None, "synthetic texts")


def _synthetic_clip(spec: PreprocessSpec, rng: np.random.Generator) -> np.ndarray:
    samples = max(1, int(spec.clip_seconds * spec.sample_rate * rng.uniform(0.1, 1.0)))
    t = np.arange(samples) / spec.sample_rate
    wave = rng.uniform(0.05, 0.5) * np.sin(2 * np.pi * rng.uniform(80, 2000) * t) + rng.normal(0, 0.02, samples)
    return wave.astype(np.float32)


def check_inputs(spec: PreprocessSpec, recorded: RecordedSplit | None, where: str, n: int) -> tuple[Examples, str]:
    """``n`` inputs to compare two runtimes on: real ones from ``recorded`` first, topped up with synthetic ones."""
    real = spread(recorded.examples, n) if recorded is not None and recorded.examples.modality == spec.modality else None
    if real is not None and len(real) >= n:
        return real, f"{len(real)} from the {recorded.split} split of {where}"
    fake = synthetic_examples(spec, n - (len(real) if real is not None else 0))
    if real is None:
        return fake, f"{len(fake)} synthetic, as {where}"
    mixed = Examples(spec.modality, list(real.inputs) + list(fake.inputs), None, f"{real.source} + {fake.source}")
    return mixed, f"{len(real)} from the {recorded.split} split of {where} + {len(fake)} synthetic"
