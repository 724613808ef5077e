"""The command line: parses arguments into configs and calls transferkit.api — nothing else.

One module per command (or a small group), each registering on the typer ``app`` of ``transferkit.cli.app``, in the
order `transferkit --help` lists them; shared help texts and printing helpers in ``common``. At start the package
imports typer, rich and transferkit.core only: transferkit.api and everything that pulls torch, timm, transformers,
scikit-learn, matplotlib or FastAPI is imported inside the command bodies (tests/cli/test_start.py checks it).
User mistakes (TransferkitError) print one line and exit with code 2, usage mistakes click's usage error with a
"did you mean" (exit 2); bugs keep their traceback (transferkit.cli.errors).
"""
from __future__ import annotations

# The order of registration is the order `transferkit --help` lists the commands in:
# isort: off
from transferkit.cli import fit  # noqa: F401
from transferkit.cli import compare  # noqa: F401
from transferkit.cli import evaluate  # noqa: F401  (evaluate, predict)
from transferkit.cli import deploy  # noqa: F401  (export, serve)
from transferkit.cli import doctor  # noqa: F401
from transferkit.cli import listing  # noqa: F401
from transferkit.cli import rank  # noqa: F401
from transferkit.cli import tune  # noqa: F401
from transferkit.cli import pretrain  # noqa: F401  (pretrain, enroll)
# isort: on
from transferkit.cli.app import app, main

__all__ = ["app", "main"]
