"""`transferkit rank`: pretrained backbones scored on the data from frozen features, before training.

Imports typer/rich and transferkit.cli.common at start; transferkit.rank only inside the command body.
"""
from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from transferkit.cli import cores
from transferkit.cli.app import app
from transferkit.cli.common import CLIP_SECONDS_HELP, IMAGE_COLUMN_HELP, TASK_HELP, console

RANK_EXAMPLES = """
Examples:

    transferkit rank --data photos/ --all --image-size 64

    transferkit rank --data builtin:digits --models efficientnet_lite0,mobilenetv2 --max-per-class 30 --out runs/rank

    transferkit rank --data news.csv --text-column body --by linear

Scores each candidate's frozen features (the feature cache: a second run on the same data reads them back)
without training. Estimators: LogME (the default ranking), LEEP and NCE (need the backbone's ImageNet
classifier), H-score, and k-NN / linear-probe accuracy by stratified cross-validation; regression: LogME and R²;
multi-label: LogME per label. A candidate whose package is missing is listed as skipped with the install command.
"""


@app.command(epilog=RANK_EXAMPLES)
def rank(
    data: str = typer.Option(..., "--data", help="Labeled image or audio folder, .csv/.jsonl of texts, or builtin:NAME."),
    models: str | None = typer.Option(None, help="Comma-separated backbones to score (names from `list models`, "
                                      "timm:NAME, hf:ID)."),
    all_models: bool = typer.Option(False, "--all", help="Score every registered backbone of the data's modality "
                                    "(the default without --models)."),
    task: str | None = typer.Option(None, help=TASK_HELP),
    by: str = typer.Option("logme", help="Estimator to rank by: logme | leep | nce | hscore | knn | linear."),
    image_size: int | None = typer.Option(None, help="Resize images to PX (default: each backbone's size)."),
    clip_seconds: float | None = typer.Option(None, help=CLIP_SECONDS_HELP),
    max_per_class: int | None = typer.Option(None, help="Score at most N inputs per class (seeded subsample)."),
    folds: int = typer.Option(5, help="Cross-validation folds for k-NN and the linear probe (fewer for tiny classes)."),
    text_column: str | None = typer.Option(None, help="CSV/JSONL column with the text [default: text]."),
    image_column: str | None = typer.Option(None, help=IMAGE_COLUMN_HELP),
    label_column: str | None = typer.Option(None, help="CSV/JSONL column with the label [default: label]."),
    out: Path | None = typer.Option(None, help="Folder for rank.json."),
) -> None:
    """Rank pretrained backbones for your labeled data from frozen features, before training (LogME & co)."""
    cores.claim()  # torch threads from the idle cores, before torch loads
    from transferkit.core.errors import ConfigError
    from transferkit.rank import rank as run_rank
    from transferkit.rank import render

    if models and all_models:
        raise ConfigError("Pass either --models a,b,c or --all, not both.")
    options = {k: v for k, v in {"task": task, "image_size": image_size, "clip_seconds": clip_seconds,
                                 "text_column": text_column, "image_column": image_column,
                                 "label_column": label_column}.items() if v is not None}
    summary = run_rank(data, models.split(",") if models else None, by=by, max_per_class=max_per_class, folds=folds,
                       out=out, on_model=lambda line: console.print(f"\\[rank] {escape(line)}", highlight=False),
                       **options)
    table, notes = render(summary)
    stdout = Console()
    if not stdout.is_terminal:  # a file or pipe: as wide as the table needs, so no model name is cut
        stdout = Console(width=max(160, Console(width=1000).measure(table).maximum))
    stdout.print(table)
    for line in notes:
        stdout.print(escape(line), highlight=False)
    if summary.get("out"):
        stdout.print(f"wrote {escape(summary['out'])}", highlight=False)
