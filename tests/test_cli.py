"""The `transferkit` command, run as a real subprocess: exit codes, one-line errors, and one end-to-end run."""
from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import VENV_BIN, write_text_csv

EXE = str(VENV_BIN / "transferkit")


def run(args: list[str], env: dict[str, str], cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def assert_user_error(proc: subprocess.CompletedProcess) -> None:
    """A user mistake: exit code 2, no traceback, and an error message on stderr."""
    assert proc.returncode == 2, f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    assert proc.stderr.strip()


@pytest.mark.parametrize("what,expected", [
    ("models", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "mobilenetv2", "minilm"]),
    ("strategies", ["linear-probe", "finetune", "scratch"]),
    ("datasets", ["builtin:digits", "builtin:bbc-news", "builtin:fashion-mnist"]),
])
def test_list(what: str, expected: list[str], cli_env: dict[str, str]):
    proc = run(["list", what], cli_env)
    assert proc.returncode == 0, proc.stderr
    for name in expected:
        assert name in proc.stdout


def test_list_unknown_what(cli_env: dict[str, str]):
    proc = run(["list", "modles"], cli_env)
    assert_user_error(proc)
    assert "Did you mean 'models'" in proc.stderr


def test_fit_missing_data(cli_env: dict[str, str], tmp_path: Path):
    proc = run(["fit", "--data", "/no/such", "--out", str(tmp_path / "run")], cli_env, cwd=tmp_path)
    assert_user_error(proc)
    assert "/no/such" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_error_messages_are_printed_verbatim(cli_env: dict[str, str], tmp_path: Path):
    """Paths and values in messages are user text, not console markup: '[b]' must survive, '[/x]' must not crash."""
    for name in ("/no/such/[b]dir", "/no/such/[/x]dir"):
        proc = run(["fit", "--data", name, "--out", str(tmp_path / "run")], cli_env, cwd=tmp_path)
        assert_user_error(proc)
        assert name in proc.stderr.replace("\n", "")


def test_fit_misspelled_strategy(cli_env: dict[str, str], text_csv: Path, tmp_path: Path):
    proc = run(["fit", "--data", str(text_csv), "--strategy", "finetuen", "--out", str(tmp_path / "run")], cli_env,
               cwd=tmp_path)
    assert_user_error(proc)
    assert "Did you mean 'finetune'" in proc.stderr


def test_fit_csv_without_label_column(cli_env: dict[str, str], tmp_path: Path):
    path = write_text_csv(tmp_path / "nolabels.csv", ["one text", "another text"], None)
    proc = run(["fit", "--data", str(path), "--out", str(tmp_path / "run")], cli_env, cwd=tmp_path)
    assert_user_error(proc)
    assert str(path) in proc.stderr.replace("\n", "")
    assert "--label-column" in proc.stderr


def test_fit_evaluate_predict_text(cli_env: dict[str, str], text_csv: Path, tmp_path: Path):
    """fit a MiniLM linear probe on the tiny CSV, then score it and predict with the saved bundle."""
    run_dir = tmp_path / "run"
    proc = run(["fit", "--data", str(text_csv), "--model", "minilm", "--strategy", "linear-probe",
                "--out", str(run_dir)], cli_env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    bundle = run_dir / "bundle"
    assert (bundle / "model.safetensors").is_file()
    assert (bundle / "tokenizer").is_dir()
    assert "macro-F1" in proc.stderr

    proc = run(["evaluate", "--bundle", str(bundle), "--data", str(text_csv), "--json"], cli_env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(proc.stdout)
    assert metrics["n"] == 24
    assert 0.0 <= metrics["macro_f1"] <= 1.0
    assert metrics["accuracy"] >= 0.75  # 20 of the 24 texts were its training data; topics separate easily

    unlabeled = write_text_csv(tmp_path / "new.csv", ["The striker scored twice in the cup final.",
                                                      "The new phone has a faster chip.",
                                                      "Profits at the firm rose by 5%."], None)
    out = tmp_path / "predictions.csv"
    proc = run(["predict", "--bundle", str(bundle), "--data", str(unlabeled), "--out", str(out)], cli_env,
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    with open(out, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    assert reader.fieldnames == ["text", "label", "score"]
    assert len(rows) == 3
    assert [r["text"] for r in rows] == ["The striker scored twice in the cup final.",
                                         "The new phone has a faster chip.", "Profits at the firm rose by 5%."]
    assert all(r["label"] in {"business", "sports", "tech"} for r in rows)
    assert all(0.0 < float(r["score"]) <= 1.0 for r in rows)
