"""Predictor: a loaded bundle — PyTorch or ONNX — that turns Examples into labels, scores and probabilities.

Imports transferkit.core, transferkit.data, transferkit.tasks, transferkit.train and transferkit.export. The
bundle's task (its manifest's ``task``) turns outputs into scores and decodes them. Uses only the bundle's
own preprocessing, never one re-specified by the caller, and the same input pipeline for both runtimes
(transferkit.data.stream), so an ONNX export predicts exactly what its source bundle does.
A token-classification bundle (``task.per_word``) answers per input its words, their tags and the entities
(transferkit.serve.token_output): texts are cut into words, long ones into overlapping sub-word windows, and both
runtimes' per-sub-word logits become per-word scores through the same code (transferkit.export.rows).
An audio bundle reads clips as file paths, the files' bytes (uploads) or mono arrays at the spec's sample rate.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from transferkit.core.errors import BundleError, ConfigError
from transferkit.data.examples import Examples, check_modality
from transferkit.data.preprocess import PreprocessSpec
from transferkit.data.stream import inference_batches
from transferkit.export.bundle import (
    INFERENCE_PRECISIONS,
    MANIFEST,
    WEIGHTS,
    Bundle,
    bundle_task,
    load_bundle,
    read_manifest,
    recorded_precision,
)
from transferkit.export.onnx import ONNX_FILE, OnnxBundle, load_onnx_bundle
from transferkit.export.rows import ModelBatch, as_sentences, model_batches, torch_rows
from transferkit.serve.token_output import TokenPredictions, sentence_rows
from transferkit.tasks import ClassificationTask, Task
from transferkit.train.inference import predict_logits

RUNTIMES = ("auto", "torch", "onnx")


@dataclass
class Predictions:
    ids: list[str]
    probabilities: np.ndarray  # [n, k]; rows of inputs that could not be read are NaN
    label_names: tuple[str, ...]
    errors: dict[int, str] = field(default_factory=dict)  # row -> why that input could not be read
    task: Task = field(default_factory=ClassificationTask)  # decodes the rows

    @property
    def indices(self) -> np.ndarray:
        """Predicted class per row (multi-label: a 0/1 row); -1 for rows in ``errors``."""
        valid = ~np.isnan(self.probabilities).any(1) if self.probabilities.size else np.zeros(0, bool)
        decoded = self.task.decode_scores(np.nan_to_num(self.probabilities, nan=-1.0))
        return np.where(valid[:, None] if decoded.ndim > 1 else valid, decoded, -1)

    @property
    def labels(self) -> list[Any]:
        """The label per row (multi-label: the list of labels); None for rows in ``errors``."""
        indices = self.indices
        if indices.ndim > 1:
            return [None if row[0] < 0 else [self.label_names[j] for j in np.flatnonzero(row == 1)] for row in indices]
        return [self.label_names[i] if i >= 0 else None for i in indices]

    @property
    def values(self) -> np.ndarray:
        """Regression: the predicted number per row (NaN for rows in ``errors``)."""
        return self.probabilities[:, 0] if self.probabilities.size else np.zeros(0)

    @property
    def scores(self) -> np.ndarray:
        return self.probabilities.max(1) if self.probabilities.size else np.zeros(0)


@dataclass
class BatchPredictions:
    """One streamed batch: probabilities of the readable rows at ``positions``, (position, reason) of the rest."""

    positions: list[int]
    probabilities: np.ndarray
    errors: list[tuple[int, str]]


def _manifest_runtime(folder: Path) -> str | None:
    try:
        return read_manifest(folder).get("runtime")
    except BundleError:
        return None


class Predictor:
    def __init__(self, bundle: Bundle | OnnxBundle, batch_size: int = 64, precision: str | None = None):
        """``precision`` (torch only) defaults to the bundle's recorded inference precision — the one its metrics
        were computed with and its ONNX export was checked against."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"The 'batch_size' parameter of Predictor must be an int >= 1. Got {batch_size!r}.")
        if precision is not None and precision not in INFERENCE_PRECISIONS:
            raise ConfigError(f"The 'precision' parameter of Predictor must be one of {INFERENCE_PRECISIONS} or None. "
                              f"Got {precision!r} instead.")
        self.bundle, self.batch_size = bundle, batch_size
        self.task = bundle_task(bundle.manifest, bundle.path)
        self.runtime = "onnx" if isinstance(bundle, OnnxBundle) else "torch"
        self.precision = precision or recorded_precision(bundle.manifest, bundle.path / MANIFEST)

    @classmethod
    def from_bundle(cls, folder: Path, runtime: str = "auto", batch_size: int = 64,
                    precision: str | None = None, int8: bool = False,
                    calibration: Examples | None = None) -> Predictor:
        """``runtime='auto'`` runs onnxruntime when the folder holds model.onnx (an export) or ``int8`` is asked
        for, PyTorch otherwise. ``runtime='onnx'`` (or ``int8``) on a PyTorch bundle predicts through an ONNX export
        of it made once into the cache (transferkit.serve.onnx_cache); ``calibration``: inputs a CNN's static int8
        calibrates on when the bundle's training inputs cannot be read (predict passes the data it predicts)."""
        folder = Path(folder)
        if runtime not in RUNTIMES:
            raise ConfigError(f"The 'runtime' parameter must be one of {RUNTIMES}. Got {runtime!r} instead.")
        if int8 and runtime == "torch":
            raise ConfigError("int8 runs through onnxruntime, not PyTorch: use --runtime onnx (or auto) with --int8, "
                              "or drop --int8 to predict with PyTorch.")
        has_onnx, has_torch = (folder / ONNX_FILE).is_file(), (folder / WEIGHTS).is_file()
        if runtime == "auto":  # an export missing its model.onnx should say so, not complain about safetensors
            runtime = "onnx" if has_onnx or int8 or (not has_torch and _manifest_runtime(folder) == "onnx") else "torch"
        if runtime == "onnx" and not has_onnx and has_torch:
            from transferkit.serve.onnx_cache import cached_export

            folder = cached_export(folder, int8, calibration)
        elif runtime == "onnx" and not has_onnx and (folder / MANIFEST).is_file():
            raise BundleError(f"'{folder}' has no {ONNX_FILE}: export it again with `transferkit export --bundle "
                              f"SOURCE_BUNDLE --format onnx --out {folder}`, or pass the PyTorch bundle itself.")
        elif int8 and has_onnx and not (read_manifest(folder).get("onnx") or {}).get("int8"):
            raise ConfigError(f"'{folder}' is an fp32 ONNX export: pass the PyTorch bundle it came from with --int8 "
                              "(its int8 export is made and cached), or drop --int8.")
        if runtime == "torch" and has_onnx and not has_torch:
            raise BundleError(f"'{folder}' is an ONNX export without PyTorch weights; use --runtime onnx (or auto).")
        bundle = load_onnx_bundle(folder) if runtime == "onnx" else load_bundle(folder)
        return cls(bundle, batch_size=batch_size, precision=precision)

    @property
    def modality(self) -> str:
        return self.bundle.preprocessing.modality

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(self.bundle.label_map.names)

    @property
    def manifest(self) -> dict[str, Any]:
        return self.bundle.manifest

    @property
    def preprocessing(self) -> PreprocessSpec:
        return self.bundle.preprocessing

    def probabilities(self, inputs: dict[str, torch.Tensor]) -> np.ndarray:
        """Class probabilities [n, k] for one preprocessed batch."""
        if isinstance(self.bundle, OnnxBundle):
            logits = self.bundle.logits(inputs)
        else:
            logits, _ = predict_logits(self.bundle.model, [inputs], self.precision)
        return self.task.probabilities(torch.from_numpy(logits)).numpy()

    def iter_batches(self, examples: Examples) -> Iterator[BatchPredictions]:
        """Predictions batch by batch, in input order; an unreadable input becomes a row error, not an exception."""
        if self.task.per_word:
            raise ConfigError("A token-classification bundle answers a row per sentence, not one score row per input: "
                              "use Predictor.predict or Predictor.tag (transferkit.serve.token_output writes files).")
        self._check_modality(examples)
        for batch in inference_batches(examples, self.preprocessing, self.batch_size):
            probs = self.probabilities(batch.inputs) if batch.inputs is not None else np.zeros((0, len(self.label_names)))
            yield BatchPredictions(batch.positions, probs, [(i, exc.reason) for i, exc in batch.errors])

    def predict(self, examples: Examples, progress: bool = False) -> Predictions | TokenPredictions:
        """All predictions at once; raises ImageDecodeError on the first unreadable input (the server decodes and
        rejects inputs itself; `transferkit predict` streams with per-row errors through ``iter_batches``).
        A token bundle tags each input — a text, or a list of words — and answers TokenPredictions."""
        self._check_modality(examples)
        if self.task.per_word:
            return self._tag(examples, progress)
        probs = np.full((len(examples), len(self.label_names)), np.nan, dtype=np.float32)
        # texts by length (less padding): each batch's positions put its rows back in input order
        batches = inference_batches(examples, self.preprocessing, self.batch_size, by_length=True)
        for batch in tqdm(batches, desc="predict", leave=False, disable=not progress or None):
            if batch.errors:
                raise batch.errors[0][1]
            probs[batch.positions] = self.probabilities(batch.inputs)
        return Predictions(examples.ids, probs, self.label_names, task=self.task)

    def tag(self, inputs: Sequence[str | Sequence[str]]) -> list[dict[str, Any]]:
        """A token bundle's answer per input — a text, or a list of its words: text, words, tags and entities, the
        JSON object `predict --out x.jsonl` writes per line and serve answers."""
        if not self.task.per_word:
            raise ConfigError(f"Predictor.tag answers a tag per word; {self.bundle.path} is a {self.task.name} bundle: "
                              "use Predictor.predict.")
        return self._tag(Examples("text", list(inputs), None, "inputs"), progress=False).rows

    def _tag(self, examples: Examples, progress: bool) -> TokenPredictions:
        """Per input: its words, their tags and the entities (offsets into the text, or into the words joined by
        spaces for a list of words)."""
        sentences = as_sentences(examples)
        scores: list[np.ndarray] = []
        batches = model_batches(sentences, self.preprocessing, self.batch_size, per_word=True)
        for batch in tqdm(batches, desc="predict", leave=False, disable=not progress or None):
            rows = self._word_logits(batch) if batch.inputs is not None else np.zeros((0, len(self.label_names)))
            scores += batch.per_input(self.task.probabilities(torch.from_numpy(rows)).numpy())
        rows = sentence_rows(self.task, self.label_names, sentences.ids, sentences.inputs, scores)
        return TokenPredictions(rows, self.label_names)

    def _word_logits(self, batch: ModelBatch) -> np.ndarray:
        """Logits [words, tags] at each word's first sub-word, from either runtime's per-sub-word output."""
        if isinstance(self.bundle, OnnxBundle):
            return batch.rows(self.bundle.logits(batch.inputs))
        return torch_rows(self.bundle.model, batch, self.precision)

    def _check_modality(self, examples: Examples) -> None:
        check_modality(examples, self.modality)
