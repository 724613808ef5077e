"""Predict at scale: stream a Predictor's batches into CSV or JSONL rows, with a progress bar and per-row errors.

Imports transferkit.core, transferkit.data and transferkit.serve. Rows are written batch by batch into a temp
file beside the destination, which is renamed into place only when every input has a row: an interrupted run
never leaves a truncated file that looks complete. Images that cannot be read get a row with an ``error`` (and no
label) instead of stopping the run; image CSVs therefore always carry an ``error`` column, text CSVs never do.
With ``strict`` the run stops instead, after every input was tried (so the error names them all), writing nothing.
"""
from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from transferkit.core.errors import ConfigError, DataError
from transferkit.core.io import atomic_write
from transferkit.data.examples import Examples
from transferkit.data.multilabels import DEFAULT_SEP
from transferkit.serve.predictor import BatchPredictions, Predictions, Predictor
from transferkit.tasks import Task

FORMATS = (".csv", ".jsonl")


def check_top_k(top_k: int | None, n_classes: int) -> None:
    if top_k is not None and (not isinstance(top_k, int) or not 1 <= top_k <= n_classes):
        raise ConfigError(f"The 'top_k' parameter must be an int between 1 and the model's {n_classes} classes. "
                          f"Got {top_k!r} instead.")


def _rows(batch: BatchPredictions, ids: list[str], id_field: str, names: tuple[str, ...],
          top_k: int | None, task: Task) -> Iterator[dict[str, Any]]:
    """The batch's rows in input order (readable and unreadable inputs interleaved as they came)."""
    by_position: dict[int, dict[str, Any]] = {}
    for position, answer in zip(batch.positions, task.response(batch.probabilities, names, top_k, digits=6)):
        by_position[position] = {id_field: ids[position], **answer}
    for position, reason in batch.errors:
        by_position[position] = {id_field: ids[position], **dict.fromkeys(task.row_fields), "error": reason}
    for position in sorted(by_position):
        yield by_position[position]


class _CsvRows:
    """CSV with the top-k flattened into label_1, score_1, ..., label_K, score_K."""

    def __init__(self, fh: TextIO, id_field: str, top_k: int | None, with_error: bool,
                 row_fields: tuple[str, ...] = ("label", "score"), label_names: tuple[str, ...] = ()):
        ranked = [f"{kind}_{i}" for i in range(1, (top_k or 0) + 1) for kind in ("label", "score")]
        # multi-label: the label set joined by DEFAULT_SEP (what fit reads), and one score_<label> column per label
        fields = [f for name in row_fields for f in ([f"score_{n}" for n in label_names] if name == "scores" else [name])]
        fields = [id_field, *fields, *ranked] + (["error"] if with_error else [])
        self.writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        self.writer.writeheader()

    def write(self, row: dict[str, Any]) -> None:
        flat = {k: ("" if v is None else DEFAULT_SEP.join(v) if isinstance(v, list) else v)
                for k, v in row.items() if k not in ("top_k", "scores")}
        flat.update({f"score_{n}": v for n, v in (row.get("scores") or {}).items()})
        for i, item in enumerate(row.get("top_k") or [], start=1):
            flat[f"label_{i}"], flat[f"score_{i}"] = item["label"], item["score"]
        self.writer.writerow(flat)


class _JsonlRows:
    def __init__(self, fh: TextIO):
        self.fh = fh

    def write(self, row: dict[str, Any]) -> None:
        self.fh.write(json.dumps({k: v for k, v in row.items() if v is not None}, ensure_ascii=False) + "\n")


def _progress(enabled: bool, total: int):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(TextColumn("predict"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        console=Console(stderr=True), transient=True, disable=not enabled)
    return progress, progress.add_task("predict", total=total)


def refuse_unreadable(errors: dict[int, str], ids: list[str]) -> None:
    """``--strict``: unreadable inputs are a DataError naming the first few, as fit's data doctor names them."""
    if not errors:
        return
    shown = "; ".join(f"{ids[i]}: {errors[i]}" for i in sorted(errors)[:3])
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    raise DataError(f"{len(errors)} input(s) could not be read (--strict): {shown}{more}. Fix or remove them, or drop "
                    "--strict to get a row with an 'error' for each.")


def predict_to_file(predictor: Predictor, examples: Examples, out: Path | None, top_k: int | None = None,
                    progress: bool = True, strict: bool = False) -> Predictions:
    """Predict every input of ``examples``; with ``out`` (.csv or .jsonl), stream one row per input into it."""
    if top_k is not None and predictor.task.name == "regression":
        raise ConfigError("--top-k ranks a classifier's classes; this bundle is a regression model that predicts one "
                          "number per input (the 'value' column). Drop --top-k.")
    check_top_k(top_k, len(predictor.label_names))
    if out is not None and Path(out).suffix.lower() not in FORMATS:
        raise ConfigError(f"--out {out}: write predictions to a .csv or .jsonl file.")
    id_field = "text" if examples.modality == "text" else "path"
    probs = np.full((len(examples), len(predictor.label_names)), np.nan, dtype=np.float32)
    errors: dict[int, str] = {}

    def run(fh: TextIO | None) -> None:
        writer = None
        if fh is not None:
            writer = _JsonlRows(fh) if Path(out).suffix.lower() == ".jsonl" else \
                _CsvRows(fh, id_field, top_k, with_error=examples.modality in ("image", "audio"),
                         row_fields=predictor.task.row_fields, label_names=predictor.label_names)
        bar, task = _progress(progress, len(examples))
        with bar:
            for batch in predictor.iter_batches(examples):
                probs[batch.positions] = batch.probabilities
                errors.update(batch.errors)
                if writer is not None:
                    for row in _rows(batch, examples.ids, id_field, predictor.label_names, top_k, predictor.task):
                        writer.write(row)
                bar.advance(task, len(batch.positions) + len(batch.errors))
        if strict:
            refuse_unreadable(errors, examples.ids)

    if out is None:
        run(None)
    else:
        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="", encoding="utf-8") as fh:
                run(fh)  # raising here (strict) leaves no file behind

        atomic_write(Path(out), write)
    return Predictions(examples.ids, probs, predictor.label_names, errors, predictor.task)
