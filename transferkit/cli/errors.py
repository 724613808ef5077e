"""How the command line ends: user mistakes as one line with exit code 2, usage mistakes as click's usage error.

Owns the typer group class of the `transferkit` app (so the console script, `python -m` and typer's CliRunner all
end the same way); imports only typer, rich and transferkit.core. Bugs keep their traceback.

typer >= 0.23 vendors click (``typer._click``), so its usage errors are not ``click.ClickException``s; they are
recognised here by their click interface (``show`` and ``exit_code``) rather than by class. The vendored
``NoSuchOption`` lists close matches as "(Possible options: ...)"; the message is rewritten to click's own
"Did you mean --data (or --val-data)?", closest first.
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from transferkit.core.errors import TransferkitError


def _is_usage_error(exc: BaseException) -> bool:
    """click's (or typer's vendored click's) ClickException: it can print itself and carries its exit code."""
    return callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int)


def _suggest(exc: BaseException) -> None:
    """An unknown option with close matches reads "No such option: --dat. Did you mean --data?"."""
    possibilities = list(getattr(exc, "possibilities", None) or [])  # closest first (difflib)
    if not possibilities or not hasattr(exc, "option_name"):
        return
    names = possibilities[0] + (f" (or {', '.join(possibilities[1:])})" if len(possibilities) > 1 else "")
    exc.message = f"{exc.message.rstrip('.')}. Did you mean {names}?"
    exc.possibilities = None


class TransferkitGroup(TyperGroup):
    """The `transferkit` command group: decides how every invocation ends (message and exit code)."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            code = result if isinstance(result, int) else 0  # typer returns Exit's code when not standalone
        except TransferkitError as exc:
            message = getattr(exc, "cli", None) or str(exc)  # a ConfigError may say it in flag names
            Console(stderr=True).print(f"[red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
            code = getattr(exc, "exit_code", 2)
        except Exception as exc:
            if _is_usage_error(exc):
                _suggest(exc)
                exc.show()
                code = exc.exit_code
            elif isinstance(exc, typer.Abort):
                print("Aborted!", file=sys.stderr)
                code = 1
            else:
                raise
        if not standalone_mode:
            return code
        sys.exit(code)
