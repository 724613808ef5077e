"""tests/tmp_cleanup.py: a module fixture's temp folder goes when its module ends; session ones and failures stay."""
from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ("pytester",)
ROOT = Path(__file__).resolve().parents[1]

FIXTURES = """
import pytest

@pytest.fixture(scope="session")
def shared(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shared")
    (folder / "x").write_text("kept")
    return folder

@pytest.fixture(scope="module")
def run(tmp_path_factory, shared):
    folder = tmp_path_factory.mktemp("run")
    (folder / "checkpoint").write_bytes(b"0" * 1000)
    return folder
"""


def _run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
         first_test: str) -> tuple[pytest.RunResult, dict[str, str]]:
    pytester.makeconftest(FIXTURES)
    pytester.makepyfile(test_a=f"def test_a(run, shared):\n    open('paths.txt', 'w').write(f'{{run}}\\n{{shared}}')\n"
                                f"    {first_test}\n",
                        test_b="def test_b():\n    pass\n")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    result = pytester.runpytest_subprocess("-p", "tests.tmp_cleanup", "-p", "no:cacheprovider")
    run, shared = (pytester.path / "paths.txt").read_text().splitlines()
    return result, {"run": run, "shared": shared}


def test_a_module_fixture_folder_is_removed_when_its_module_ends(pytester: pytest.Pytester,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    result, paths = _run(pytester, monkeypatch, "assert True")
    result.assert_outcomes(passed=2)
    assert not Path(paths["run"]).exists()
    assert (Path(paths["shared"]) / "x").read_text() == "kept"


def test_a_failure_keeps_the_module_folder_to_debug(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    result, paths = _run(pytester, monkeypatch, "assert False")
    result.assert_outcomes(passed=1, failed=1)
    assert (Path(paths["run"]) / "checkpoint").stat().st_size == 1000
