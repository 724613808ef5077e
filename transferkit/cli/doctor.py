"""`transferkit doctor`: data checks before training (bad inputs, labels, text, duplicates, leakage), as a table or JSON.

Imports typer/rich and transferkit.cli.common at start; transferkit.api (torch and the rest) only inside the
command body.
"""
from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from transferkit.cli.app import app
from transferkit.cli.common import IMAGE_COLUMN_HELP, LABEL_COLUMNS_HELP, LABEL_SEP_HELP, TASK_HELP, _print_image_columns

DOCTOR_EXAMPLES = """
Examples:

    transferkit doctor --data photos/

    transferkit doctor --data photos/train --test-data photos/test --dedupe --json > data_report.json

    transferkit doctor --data reviews.csv --text-column body --label-column stars --strict

Exit code 0 when nothing is fatal, 2 otherwise (every finding with --strict). The data is never modified:
--dedupe only marks which copies `fit --dedupe` would leave out.
"""


@app.command(epilog=DOCTOR_EXAMPLES)
def doctor(
    data: str = typer.Option(..., "--data", help="Image folder, .csv/.jsonl of texts, or builtin:NAME."),
    val_data: str | None = typer.Option(None, help="Validation data, checked with the rest (leakage across splits)."),
    test_data: str | None = typer.Option(None, help="Test data, checked with the rest (leakage across splits)."),
    text_column: str | None = typer.Option(None, help="CSV/JSONL column with the text [default: text]."),
    image_column: str | None = typer.Option(None, help=IMAGE_COLUMN_HELP),
    label_column: str | None = typer.Option(None, help="CSV/JSONL column with the label [default: label]."),
    task: str | None = typer.Option(None, help=TASK_HELP),
    label_sep: str | None = typer.Option(None, help=LABEL_SEP_HELP),
    label_columns: str | None = typer.Option(None, help=LABEL_COLUMNS_HELP),
    strict: bool = typer.Option(False, "--strict", help="Treat every finding as fatal (exit 2 on any)."),
    dedupe: bool = typer.Option(False, "--dedupe", help="Mark later copies of duplicates as left out, as fit --dedupe."),
    max_pixels: int | None = typer.Option(None, help="Refuse images decoding to over N pixels, ~4N bytes [default: 250 M]."),
    clip_seconds: float | None = typer.Option(None, help="Audio: the clip length fit would use; clips much shorter or "
                                              "longer are reported [default: 5]."),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON report (data_report.json) on stdout."),
    limit: int = typer.Option(50, help="Findings shown in the table (the JSON always has all)."),
) -> None:
    """Check data before training: unreadable images, label problems, bad text, duplicates and leakage."""
    from transferkit import api

    options = {k: v for k, v in {"val_data": val_data, "test_data": test_data, "text_column": text_column,
                                 "label_column": label_column, "max_pixels": max_pixels, "task": task,
                                 "label_sep": label_sep, "label_columns": label_columns,
                                 "image_column": image_column, "clip_seconds": clip_seconds}.items()
               if v is not None}
    report = api.doctor(data, strict=strict, dedupe=dedupe, **options).to_dict()
    if as_json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        _print_doctor(report, data, limit)
    if report["fatal"]:
        from transferkit.core.errors import DataError

        strict = " (--strict makes every finding fatal)" if strict else ""
        raise DataError(f"{report['fatal']} fatal finding(s) in {data}{strict}; fit would stop before training.")


def _print_doctor(report: dict, data: str, limit: int) -> None:
    table = Table("severity", "kind", "where", "finding", title=f"data doctor: {escape(data)}", show_lines=False)
    for f in report["findings"][:limit]:
        where = f"{f['path']}:{f['line']}" if "line" in f else f["path"]
        table.add_row("[red]fatal[/]" if f["severity"] == "fatal" else "warning", f["kind"], escape(where),
                      escape(f["message"]))
    out = Console()
    if report["findings"]:
        out.print(table)
    if len(report["findings"]) > limit:
        out.print(f"... {len(report['findings']) - limit} more (--limit N, or --json for all)")
    sizes = ", ".join(f"{k} {v}" for k, v in report["sizes"].items())
    kinds = ", ".join(f"{k} {v}" for k, v in report["by_kind"].items()) or "none"
    stats = report.get("stats", {})
    out.print(escape(stats.get("task_detected") or f"task: {stats.get('task', 'classification')}"), highlight=False)
    _print_image_columns(stats.get("image_columns"))
    if stats.get("targets"):
        t = stats["targets"]
        out.print(f"targets: {t['n']} numbers, {t['distinct']} distinct, from {t['min']:g} to {t['max']:g} "
                  f"(mean {t['mean']:.4g})", highlight=False)
    out.print(f"examples: {sizes}; findings: {report['fatal']} fatal, {report['warnings']} warnings ({kinds}); "
              f"fit would leave out {report['n_skipped']} input(s) (n_skipped)", highlight=False)
