"""Fixtures shared by the evaluate tests: one tiny real image fit and one tiny real text fit (session-scoped,
so the report tests and the browser tests read the same run folders).

Both fits get a test set whose labels are deliberately wrong (each true class is filed under the next class), so
"Most confidently wrong" is guaranteed to have rows no matter how well the 1-epoch model does.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import bbc_texts, digit_arrays, write_text_csv

DIGITS = (0, 1, 2)
TOPICS = ("business", "sports", "tech")


def write_mislabeled_digits(root: Path, per_class: int = 5, offset: int = 10) -> Path:
    """root/<(d+1) % 3>/<i>.png holds images of digit d: every label is wrong."""
    for d, arrays in digit_arrays(DIGITS, per_class, offset).items():
        folder = root / str(DIGITS[(DIGITS.index(d) + 1) % len(DIGITS)])
        folder.mkdir(parents=True, exist_ok=True)
        for i, array in enumerate(arrays):
            Image.fromarray(array).save(folder / f"{d}-{offset + i}.png")
    return root


@pytest.fixture(scope="session")
def mislabeled_digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mislabeled_digits(tmp_path_factory.mktemp("digits-mislabeled") / "test")


@pytest.fixture(scope="session")
def mislabeled_texts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """3 unseen BBC texts per topic, each labelled with the next topic; returns (csv, texts)."""
    texts, topics = bbc_texts(per_class=3, offset=20)
    wrong = [TOPICS[(TOPICS.index(t) + 1) % len(TOPICS)] for t in topics]
    return write_text_csv(tmp_path_factory.mktemp("text-mislabeled") / "test.csv", texts, wrong), texts


@pytest.fixture(scope="session")
def image_run(digits_folder: Path, mislabeled_digits: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """finetune, 1 epoch, 32 px on the 3x10 digits folder (val split off it) + the mislabeled test folder."""
    from transferkit import api

    out = tmp_path_factory.mktemp("image-run") / "run"
    api.fit(str(digits_folder), model="efficientnet_lite0", strategy="finetune", epochs=1, image_size=32,
            test_data=str(mislabeled_digits), out=str(out), progress=False)
    return out


@pytest.fixture(scope="session")
def text_run(text_csv: Path, mislabeled_texts, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """linear-probe on MiniLM features of the 3x8 BBC texts + the mislabeled test csv."""
    from transferkit import api

    out = tmp_path_factory.mktemp("text-run") / "run"
    api.fit(str(text_csv), model="minilm", strategy="linear-probe", test_data=str(mislabeled_texts[0]),
            out=str(out), progress=False)
    return out
