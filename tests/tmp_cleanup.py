"""Free the disk of a fixture's temp folders when the fixture ends, not when the session ends.

pytest keeps every ``tmp_path_factory.mktemp`` folder until the session is over (the ``failed`` retention policy in
pyproject.toml only removes a passed test's own ``tmp_path``). Module-scoped fixtures here train runs whose
checkpoints weigh tens of MB each, and over the whole suite they filled the CI machine's disk (stop 23: "No space
left on device" from 27 tests near the end). So: each folder a fixture makes is remembered with that fixture, and
removed when pytest tears the fixture down (a module fixture at the end of its module), unless a test failed
meanwhile (kept to debug). Session-scoped fixtures' folders stay, as before.
"""
from __future__ import annotations

import shutil
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

_making: list[Any] = []  # the fixture definitions being set up, innermost last
_made: dict[int, tuple[list[Path], int]] = {}  # id(fixturedef) -> (folders it made, failures when it started)


def _remember(path: Path) -> Path:
    if _making and _making[-1].scope != "session":
        _made.setdefault(id(_making[-1]), ([], 0))[0].append(path)
    return path


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: Any, request: pytest.FixtureRequest) -> Generator[None, Any, Any]:
    _making.append(fixturedef)
    _made[id(fixturedef)] = ([], request.session.testsfailed)
    try:
        return (yield)
    finally:
        _making.pop()


def pytest_fixture_post_finalizer(fixturedef: Any, request: pytest.FixtureRequest) -> None:
    folders, failures_before = _made.pop(id(fixturedef), ([], 0))
    if request.session.testsfailed > failures_before:
        return
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.hookimpl(trylast=True)  # after pytest's tmpdir plugin has made the factory
def pytest_configure(config: pytest.Config) -> None:
    factory = config._tmp_path_factory
    make = factory.mktemp
    factory.mktemp = lambda basename, numbered=True: _remember(make(basename, numbered))  # type: ignore[method-assign]
