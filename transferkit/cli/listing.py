"""`transferkit list models | strategies | datasets`: the registered names with a line each.

Imports typer/rich at start; what is listed inside the command body: models and strategies from the torch-free
catalog (transferkit.core.catalog, whose names tests/core/test_catalog.py holds equal to the registries), datasets
from transferkit.data.builtins (numpy). No listing imports torch.
"""
from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from transferkit.cli.app import app


def _models() -> dict[str, str]:
    from transferkit.core.catalog import MODEL_DESCRIPTIONS

    return MODEL_DESCRIPTIONS


def _strategies() -> dict[str, str]:
    from transferkit.core.catalog import STRATEGY_SUMMARIES

    return STRATEGY_SUMMARIES


def _datasets() -> dict[str, str]:
    from transferkit.data.builtins import DATASETS

    return {f"builtin:{name}": (fn.__doc__ or "").strip().splitlines()[0] for name, fn in DATASETS.items()}


# Each table is imported only when listed: the catalog is plain strings, the datasets module pulls numpy.
TABLES = {"models": _models, "strategies": _strategies, "datasets": _datasets}


@app.command("list", epilog="Examples:\n\n    transferkit list models\n\n    transferkit list strategies")
def list_(what: str = typer.Argument(..., help="models | strategies | datasets")) -> None:
    """List registered models, strategies or built-in datasets."""
    from transferkit.core.registry import lookup

    rows = lookup(TABLES, what, "list")()
    table = Table("name", "description", title=what)
    for name, text in rows.items():
        table.add_row(escape(name), escape(text))
    Console(width=160).print(table)
