"""Fixtures of the strategy tests: read-only tiny digit tasks (see helpers.Task)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import write_digit_folder
from tests.strategies.helpers import Task


@pytest.fixture(scope="session")
def task(digits_folder: Path) -> Task:
    """3 classes x 10 digits, 80/20 train/val split."""
    return Task(digits_folder)


@pytest.fixture(scope="session")
def batch16_task(tmp_path_factory: pytest.TempPathFactory) -> Task:
    """4 classes x 4 digits = one batch of 16; train and val are the same 16 images (for lp-ft's probe)."""
    folder = write_digit_folder(tmp_path_factory.mktemp("digits16") / "data", (0, 1, 2, 3), 4)
    return Task(folder, split=0)
