"""Fixtures of the strategy tests: read-only tiny digit tasks (see helpers.Task)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import bbc_texts, write_digit_folder, write_text_csv
from tests.strategies.helpers import Task, text_only

BATCH16_TOPICS = ("business", "politics", "sports", "tech")


def strategy_under_test(request: pytest.FixtureRequest) -> str | None:
    """The strategy name a test is parametrised with (fixtures 'strategy'/'loop_strategy', or a 'name' argument)."""
    params = getattr(getattr(request, "node", None), "callspec", None)
    params = params.params if params is not None else {}
    for key in ("strategy", "loop_strategy", "name"):
        if isinstance(params.get(key), str):
            return params[key]
    return None


@pytest.fixture(scope="session")
def image_task(digits_folder: Path) -> Task:
    """3 classes x 10 digits, 80/20 train/val split."""
    return Task(digits_folder)


@pytest.fixture(scope="session")
def text_task(tmp_path_factory: pytest.TempPathFactory, text_csv: Path) -> Task:
    """3 BBC topics x 8 texts through MiniLM, 80/20 split: for the text-only strategies (adapter, prompt)."""
    return Task(text_csv, backbone="minilm")


@pytest.fixture
def task(request: pytest.FixtureRequest) -> Task:
    """The image task, or the text task when the test is parametrised with a text-only strategy."""
    name = strategy_under_test(request)
    return request.getfixturevalue("text_task" if name and text_only(name) else "image_task")


@pytest.fixture(scope="session")
def batch16_task(tmp_path_factory: pytest.TempPathFactory) -> Task:
    """4 classes x 4 digits = one batch of 16; train and val are the same 16 images (for lp-ft's probe)."""
    folder = write_digit_folder(tmp_path_factory.mktemp("digits16") / "data", (0, 1, 2, 3), 4)
    return Task(folder, split=0)


@pytest.fixture(scope="session")
def text_batch16_task(tmp_path_factory: pytest.TempPathFactory) -> Task:
    """4 BBC topics x 4 texts = one batch of 16 through MiniLM; train = val."""
    texts, labels = bbc_texts(per_class=4, topics=BATCH16_TOPICS)
    path = write_text_csv(tmp_path_factory.mktemp("texts16") / "texts.csv", texts, labels)
    return Task(path, split=0, backbone="minilm")
