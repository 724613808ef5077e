"""`transferkit compare`: strategies on identical splits, the table and the transfer-gain lines.

Imports typer/rich and transferkit.cli.common at start; transferkit.compare only inside the command body.
"""
from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from transferkit.cli import cores
from transferkit.cli.app import app
from transferkit.cli.common import (
    CLIP_SECONDS_HELP,
    HUBER_DELTA_HELP,
    IMAGE_COLUMN_HELP,
    LOSS_HELP,
    TASK_HELP,
    _print_left_out,
    console,
)

COMPARE_EXAMPLES = """
Examples:

    transferkit compare --data builtin:digits --strategies linear-probe,finetune,scratch --labels-per-class 10,50 --seeds 3

    transferkit compare --data photos/ --test-data photos_test/ --strategies head,partial,lp-ft --budget-minutes 30
"""


def _parse_ks(text: str) -> list[int | None]:
    from transferkit.core.errors import ConfigError

    ks: list[int | None] = []
    for part in text.split(","):
        part = part.strip()
        if part == "all":
            ks.append(None)
        elif part.isdigit() and int(part) > 0:
            ks.append(int(part))
        else:
            raise ConfigError(f"--labels-per-class takes positive integers or 'all', comma-separated (e.g. 10,100); "
                              f"got {part!r}.")
    return ks


@app.command(epilog=COMPARE_EXAMPLES)
def compare(
    data: str = typer.Option(..., "--data", help="Image or audio folder, .csv/.jsonl of texts, or builtin:NAME."),
    strategies: str = typer.Option("linear-probe,finetune,scratch", help="Comma-separated strategy names."),
    labels_per_class: str = typer.Option("all", help="Comma-separated K values (or 'all'), e.g. 10,100."),
    seeds: int = typer.Option(1, help="Seeds per (strategy, K): each seed draws its own K-subsample."),
    out: Path | None = typer.Option(None, help="Folder for compare.json, compare.html and the runs."),
    budget_minutes: float | None = typer.Option(None, help="Skip the slowest combinations once over budget."),
    workers: int = typer.Option(1, help="Runs at once, each in its own process with cores // N torch threads."),
    model: str | None = typer.Option(None, help="Backbone for every run."),
    val_data: str | None = typer.Option(None, help="Validation data (default: a split of each K-subsample)."),
    test_data: str | None = typer.Option(None, help="Test data (default: the source's test split or a fixed 20 %)."),
    text_column: str | None = typer.Option(None, help="CSV/JSONL text column."),
    image_column: str | None = typer.Option(None, help=IMAGE_COLUMN_HELP),
    label_column: str | None = typer.Option(None, help="CSV/JSONL label column."),
    image_size: int | None = typer.Option(None, help="Resize images to PX."),
    clip_seconds: float | None = typer.Option(None, help=CLIP_SECONDS_HELP),
    epochs: int | None = typer.Option(None, help="Maximum epochs per run."),
    batch_size: int | None = typer.Option(None, help="Training batch size."),
    lr: float | None = typer.Option(None, help="Head learning rate."),
    patience: int | None = typer.Option(None, help="Early-stopping patience."),
    loss: str | None = typer.Option(None, help=LOSS_HELP),
    huber_delta: float | None = typer.Option(None, help=HUBER_DELTA_HELP),
    augment: str | None = typer.Option(None, help="none | light | randaugment | trivial."),
    precision: str | None = typer.Option(None, help="auto | fp32 | bf16."),
    strict: bool = typer.Option(False, "--strict", help="Stop on any data-doctor finding (checked before any run)."),
    dedupe: bool = typer.Option(False, "--dedupe", help="Leave out later copies of duplicate inputs (train < val < test)."),
    max_pixels: int | None = typer.Option(None, help="Refuse images decoding to over N pixels, ~4N bytes [default: 250 M]."),
    task: str | None = typer.Option(None, help=TASK_HELP),
    target_data: str | None = typer.Option(None, help="Unlabeled target domain for the strategies that adapt to it "
                                           "(dann, coral, mmd); the others train on --data alone."),
) -> None:
    """Compare strategies on identical splits: mean ± std, wall time, trainable parameters, transfer gain."""
    cores.claim()  # torch threads from the idle cores, before torch loads
    from transferkit.compare import compare as run_comparison

    options = {k: v for k, v in locals().items() if v is not None and v is not False and k not in (
        "data", "strategies", "labels_per_class", "seeds", "out", "budget_minutes", "workers", "run_comparison")}
    summary = run_comparison(data, [s.strip() for s in strategies.split(",") if s.strip()], _parse_ks(labels_per_class),
                          seeds=seeds, out=out, budget_minutes=budget_minutes, workers=workers,
                          on_run=lambda line: console.print(rf"\[compare] {escape(line)}"), **options)
    metric = summary.get("metric", "accuracy")
    table = Table("strategy", "K", "R²" if metric == "r2" else metric, "s/run", "trainable",
                  title=f"compare: {summary['data']}")
    for r in summary["rows"]:
        table.add_row(r["strategy"], str(r["labels_per_class"] or "all"),
                      f"{r[metric + '_mean']:.4f} ± {r[metric + '_std']:.4f}", f"{r['seconds_mean']:.1f}",
                      f"{r['trainable_params']:,}" if r["trainable_params"] is not None else "-")
    Console().print(table)
    for g in summary["gains"]:
        console.print(("[red]" if g["negative"] else "") + escape(g["statement"]) + ("[/]" if g["negative"] else ""))
    for s in summary["skipped"]:
        console.print(f"skipped: {escape(s)}")
    _print_left_out(summary["skipped_inputs"], f"{summary['out']}/data_report.json")
    console.print(f"wrote {summary['out']}/compare.html and compare.json")
