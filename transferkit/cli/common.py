"""What the commands share: the console, help texts declared once, -o KEY=VALUE parsing, the lines every command
that reads data prints.

Imports rich and transferkit.core only (ConfigError, inside _parse_options): no typer, no torch.
"""
from __future__ import annotations

import json

from rich.console import Console
from rich.markup import escape

console = Console(stderr=True)

TASK_HELP = "classification | multilabel | regression | tokens [default: detected from the data]."
LABEL_SEP_HELP = "Multi-label CSV: the separator between labels in a label cell [default: |]."
LABEL_COLUMNS_HELP = "Multi-label: one 0/1 column per label, comma-separated names (instead of --label-column)."
LOSS_HELP = ("Regression loss: mse | huber. Huber counts errors beyond --huber-delta linearly, so a few outlying "
             "targets pull the model less [default: mse].")
HUBER_DELTA_HELP = ("--loss huber: the delta on the standardised target, in training-target stds (outliers inflate "
                    "the std: a smaller delta resists them more) [default: 1.0].")
CLIP_SECONDS_HELP = ("Audio: crop (at random in training with --augment, else centred) or zero-pad every clip to S "
                     "seconds [default: the backbone's, 5].")
IMAGE_COLUMN_HELP = ("CSV/JSONL column of image (or audio clip) file paths, relative to the file's folder [default: "
                     "the text column when its values are image or audio files].")


# CLI flags that are strategy options (validated by the strategy's config: a strategy without one says so).
STRATEGY_FLAGS = ("bn", "unfreeze", "warmup_head_epochs")


def _parse_options(pairs: list[str]) -> dict[str, object]:
    """-o KEY=VALUE pairs -> {key: value}, values read as JSON when they parse (numbers, true, lists)."""
    from transferkit.core.errors import ConfigError

    options: dict[str, object] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"Strategy option {pair!r} is not KEY=VALUE, e.g. -o alpha=0.1.")
        try:
            options[key.replace("-", "_")] = json.loads(raw)
        except json.JSONDecodeError:
            options[key.replace("-", "_")] = raw
    return options


def _print_image_columns(columns: dict[str, str] | None) -> None:
    """The line fit, doctor and evaluate print when a table's column was read as image paths (split -> column)."""
    for column in dict.fromkeys((columns or {}).values()):
        splits = ", ".join(s for s, c in columns.items() if c == column)
        console.print(f"images: column '{escape(column)}' read as image paths ({splits}; relative to the table's "
                      "folder)", highlight=False)


def _print_left_out(skipped: list[dict[str, str]], where: str) -> None:
    """The line every command that reads a dataset prints: how many inputs it left out (n_skipped), and why."""
    if skipped:
        first = skipped[0]
        console.print(f"[yellow]n_skipped: {len(skipped)} input(s) left out[/], e.g. {escape(first['path'])}: "
                      f"{escape(first['reason'])}; all listed in {escape(where)}", highlight=False)
