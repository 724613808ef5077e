"""Usage mistakes on every command: click's short usage error, a "did you mean", exit code 2, no traceback."""
from __future__ import annotations

import subprocess

import pytest
import typer
from typer.testing import CliRunner

from tests.conftest import VENV_BIN
from transferkit.cli import app


def _commands(group: object, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
    """(command path, command) for every registered command and sub-command of the app."""
    found = []
    for name, command in getattr(group, "commands", {}).items():
        found.append(((*path, name), command))
        found += _commands(command, (*path, name))
    return found


COMMANDS = _commands(typer.main.get_command(app))


def _misspelled(command: object) -> tuple[str, str]:
    """(a misspelling of the command's first long option, that option): '--data' -> '--dat'."""
    names = [opt for param in command.params for opt in param.opts if opt.startswith("--")]
    names += ["--help"]
    return names[0][:-1], names[0]


def test_every_command_is_covered():
    assert {path[0] for path, _ in COMMANDS} >= {"fit", "compare", "evaluate", "predict", "export", "serve", "doctor",
                                                 "list"}


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_misspelled_option_is_a_usage_error(path: tuple[str, ...], command: object):
    typo, meant = _misspelled(command)
    result = CliRunner().invoke(app, [*path, typo, "x"])
    output = result.output
    assert result.exit_code == 2, output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in output, output
    assert f"No such option: {typo}" in output and f"Did you mean {meant}" in output, output
    assert len(output.strip().splitlines()) <= 5, output


def test_misspelled_option_in_a_real_process(cli_env: dict[str, str]):
    proc = subprocess.run([str(VENV_BIN / "transferkit"), "fit", "--dat", "x"], capture_output=True, text=True,
                          env=cli_env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "No such option: --dat. Did you mean" in proc.stderr and "--data" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 5, proc.stderr


def test_misspelled_command_and_bad_value():
    runner = CliRunner()
    result = runner.invoke(app, ["fitt"])
    assert result.exit_code == 2 and "Did you mean 'fit'" in result.output, result.output
    result = runner.invoke(app, ["fit", "--epochs", "many"])
    assert result.exit_code == 2 and "--epochs" in result.output and "Traceback" not in result.output
