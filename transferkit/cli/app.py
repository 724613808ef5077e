"""The `transferkit` typer app and the console script; each command module registers itself on ``app``.

Imports typer and transferkit.cli.errors only: nothing here may pull torch, so that parsing (and `--help`) stays light.
"""
from __future__ import annotations

import typer

from transferkit.cli.errors import TransferkitGroup

app = typer.Typer(cls=TransferkitGroup, add_completion=False, no_args_is_help=True, rich_markup_mode="markdown",
                  help="Adapt pretrained models to your labeled data: fit, compare, evaluate, predict.")


def main() -> None:
    """The console script: TransferkitGroup decides the message and exit code (transferkit.cli.errors)."""
    app()
