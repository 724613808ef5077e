"""`transferkit doctor` and fit's --strict / --dedupe: exit codes, the JSON report on stdout, the human table."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import VENV_BIN, write_text_csv

EXE = str(VENV_BIN / "transferkit")


def run_main(argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """`transferkit ARGS` in this process (a subprocess pays seconds of imports each time)."""
    from transferkit import cli

    monkeypatch.setattr("sys.argv", ["transferkit", *argv])
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setenv("NO_COLOR", "1")
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def messy(make_digit_folder) -> Path:
    root = make_digit_folder(digits=(3, 4), per_class=4)
    (root / "3" / "empty.png").write_bytes(b"")
    (root / "4" / "fake.jpg").write_bytes(b"<html>not an image</html>")
    return root


@pytest.mark.slow
def test_doctor_subprocess_strict_json_exit_2(messy: Path, cli_env: dict[str, str]):
    """A real process: fatal findings exit 2 with one error line, and --json still prints the report on stdout."""
    proc = subprocess.run([EXE, "doctor", "--data", str(messy), "--json", "--strict"], capture_output=True,
                          text=True, env=cli_env, timeout=300)
    assert proc.returncode == 2, proc.stderr
    report = json.loads(proc.stdout)
    assert sorted(Path(f["path"]).name for f in report["findings"]) == ["empty.png", "fake.jpg"]
    assert report["fatal"] == 2 and report["n_skipped"] == 2
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_doctor_json_in_process(messy: Path, monkeypatch, capsys):
    code, out, _ = run_main(["doctor", "--data", str(messy), "--json"], monkeypatch, capsys)
    report = json.loads(out)
    assert code == 0 and report["fatal"] == 0 and report["warnings"] == 2
    assert {f["kind"] for f in report["findings"]} == {"empty-file", "unreadable-image"}


def test_doctor_table_and_fatal_exit(messy: Path, tmp_path: Path, monkeypatch, capsys):
    code, out, _ = run_main(["doctor", "--data", str(messy)], monkeypatch, capsys)
    assert code == 0
    assert "empty.png" in out and "fake.jpg" in out and "zero-byte file" in out
    assert "fit would leave out 2 input(s)" in out
    one = write_text_csv(tmp_path / "one.csv", ["first text", "second text"], ["a", "a"])
    code, out, err = run_main(["doctor", "--data", str(one)], monkeypatch, capsys)
    assert code == 2 and "single-class" in out and "Traceback" not in err


def test_doctor_test_data_and_dedupe(tmp_path: Path, monkeypatch, capsys):
    train = write_text_csv(tmp_path / "train.csv", ["alpha beta gamma", "delta epsilon", "zeta eta", "theta iota"],
                           ["x", "y", "x", "y"])
    test = write_text_csv(tmp_path / "test.csv", ["Alpha  beta gamma", "kappa lambda"], ["x", "y"])
    code, out, _ = run_main(["doctor", "--data", str(train), "--test-data", str(test), "--dedupe", "--json"],
                            monkeypatch, capsys)
    report = json.loads(out)
    assert code == 0 and [f["kind"] for f in report["findings"]] == ["leakage"]
    assert report["left_out"]["test"] == [f"{test}:2"] and report["dedupe"] is True


def test_fit_strict_stops_with_exit_2(messy: Path, tmp_path: Path, monkeypatch, capsys):
    code, _, err = run_main(["fit", "--data", str(messy), "--strategy", "linear-probe", "--strict",
                             "--out", str(tmp_path / "run")], monkeypatch, capsys)
    assert code == 2 and "fatal problem" in err and "--strict" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_help_shows_examples(monkeypatch, capsys):
    code, out, _ = run_main(["doctor", "--help"], monkeypatch, capsys)
    assert code == 0 and "transferkit doctor --data photos/" in out and "--max-pixels" in out
    code, out, _ = run_main(["fit", "--help"], monkeypatch, capsys)
    assert "--strict" in out and "--dedupe" in out
