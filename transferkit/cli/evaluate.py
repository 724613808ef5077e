"""`transferkit evaluate` and `transferkit predict`: a saved bundle scored on labeled data, or predicting.

Imports typer/rich and transferkit.cli.common at start; transferkit.api only inside the command bodies.
"""
from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from transferkit.cli import cores
from transferkit.cli.app import app
from transferkit.cli.common import IMAGE_COLUMN_HELP, _print_image_columns, _print_left_out, console


@app.command(epilog="Example:\n\n"
             "    transferkit evaluate --bundle runs/fm/bundle --data builtin:fashion-mnist --split test --json")
def evaluate(
    bundle: Path = typer.Option(..., help="A run's bundle/ folder."),
    data: str = typer.Option(..., "--data", help="Labeled data to score."),
    split: str = typer.Option("test", help="train, val or test of a source with those parts; a single-split source "
                              "is scored whole (reported as split 'all')."),
    text_column: str | None = typer.Option(None, help="CSV/JSONL text column [default: the bundle's, else text]."),
    image_column: str | None = typer.Option(None, help=IMAGE_COLUMN_HELP),
    label_column: str | None = typer.Option(None, help="CSV/JSONL label column [default: the bundle's, else label]."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
    strict: bool = typer.Option(False, "--strict", help="Stop (exit 2) on any unreadable input or other per-input "
                                "finding, instead of leaving it out."),
) -> None:
    """Score a saved bundle on labeled data (accuracy, macro-F1, per-class report)."""
    cores.claim()  # torch threads from the idle cores, before torch loads
    from transferkit import api
    from transferkit.evaluate.metrics import headline

    metrics = api.evaluate(bundle, data, split, text_column, label_column, progress=not as_json, strict=strict,
                           image_column=image_column)
    if as_json:
        print(json.dumps(metrics))
        return
    _print_image_columns({metrics["split"]: metrics["image_column"]} if "image_column" in metrics else None)
    _print_left_out(metrics["skipped"], "the output of --json")
    if "note" in metrics:
        console.print(f"[yellow]Note:[/yellow] {escape(metrics['note'])}")
    table = Table("metric", "value", title=escape(f"{metrics['data']} [{metrics['split']}]"))
    for key, value in headline(metrics).items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    Console().print(table)


PREDICT_EXAMPLES = """
Examples:

    transferkit predict --bundle runs/fm/bundle --data photos/ --out preds.csv

    transferkit predict --bundle runs/news/bundle --data new.csv --out preds.jsonl --top-k 3

    transferkit predict --bundle runs/news/onnx --runtime onnx --data new.csv --out preds.csv

    transferkit predict --bundle runs/news/bundle --int8 --data new.csv --out preds.csv

--runtime onnx or --int8 on a PyTorch bundle predicts through an ONNX export of it (int8: dynamic for text, static
for CNNs, calibrated on the bundle's training images when readable, else on 64 images spread over --data), made
once with `transferkit export`'s parity check into $TRANSFERKIT_CACHE/onnx/SHA256-int8/ (or -fp32) and reused
while the bundle is unchanged; the bundle folder is not written to. The command says which export it uses.

Rows keep the input order. An image that cannot be read gets a row with an 'error' and no label; the run goes on
(counted as n_skipped), unless --strict.
"""


@app.command(epilog=PREDICT_EXAMPLES)
def predict(
    bundle: Path = typer.Option(..., help="A run's bundle/ folder, or an ONNX export of one."),
    data: str = typer.Option(..., "--data", help="Images or audio clips (folder) or texts (.csv/.jsonl); no labels needed."),
    out: Path = typer.Option(Path("predictions.csv"), help="Output .csv or .jsonl: one row per input."),
    text_column: str | None = typer.Option(None, help="CSV/JSONL text column [default: the bundle's, else text]."),
    image_column: str | None = typer.Option(None, help=IMAGE_COLUMN_HELP),
    top_k: int | None = typer.Option(None, help="Also write the K most probable labels with their scores."),
    runtime: str = typer.Option("auto", help="torch | onnx | auto (onnx when the bundle holds model.onnx, or --int8)."),
    int8: bool = typer.Option(False, "--int8", help="Predict with an int8 ONNX model (made once and cached)."),
    batch_size: int = typer.Option(64, help="Inputs per batch (memory holds one batch of decoded inputs)."),
    strict: bool = typer.Option(False, "--strict", help="Stop (exit 2, nothing written) if any input is unreadable."),
) -> None:
    """Predict labels with a saved bundle, streaming batches to a file, using the bundle's own preprocessing."""
    cores.claim()  # torch threads from the idle cores, before torch loads
    from transferkit import api

    with _export_notes():
        predictions = api.predict(bundle, data, out, text_column, runtime=runtime, top_k=top_k,
                                  batch_size=batch_size, strict=strict, image_column=image_column, int8=int8)
    console.print(f"wrote {len(predictions.ids)} predictions to {escape(str(out))}; n_skipped: "
                  f"{len(predictions.errors)}", highlight=False)
    if predictions.errors:
        first = min(predictions.errors)
        console.print(f"[yellow]{len(predictions.errors)} input(s) could not be read[/] (rows with an 'error'), e.g. "
                      f"{escape(predictions.ids[first])}: {escape(predictions.errors[first])}", highlight=False)


@contextlib.contextmanager
def _export_notes() -> Iterator[None]:
    """Which ONNX export of a PyTorch bundle predict uses, and where (transferkit.serve.onnx_cache logs it)."""

    class ToConsole(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            console.print(f"onnx: {escape(record.getMessage())}", highlight=False)

    logger, handler = logging.getLogger("transferkit.serve.onnx_cache"), ToConsole(logging.INFO)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
