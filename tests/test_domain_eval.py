"""fit --target-data end to end with label-free selection (DEV) and --target-test: the epoch is chosen without target
labels (shuffling them changes nothing the selection sees), and metrics.json, report.md and report.html carry the
"Across domains" section (source-only vs adapted, gap closed, the features in 2-D)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import digit_arrays, write_digit_folder
from transferkit import api
from transferkit.core.errors import ConfigError, DataError

FIT = dict(model="efficientnet_lite0", image_size=32, epochs=2, progress=False, seed=0, patience=0, batch_size=8)


def write_inverted(root: Path, per_class: int, offset: int, labeled: bool, shuffle_seed: int | None = None) -> Path:
    """Digits 0-2 as white ink on black (another look than the source's), in class folders when ``labeled``;
    ``shuffle_seed`` files each image under a random class instead of its own."""
    rng = np.random.default_rng(shuffle_seed) if shuffle_seed is not None else None
    for d, arrays in digit_arrays((0, 1, 2), per_class, offset).items():
        for i, array in enumerate(arrays):
            label = int(rng.integers(3)) if rng is not None else d
            folder = root / str(label) if labeled else root
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(255 - array).save(folder / f"{d}_{offset + i}.png")
    return root


@pytest.fixture(scope="module")
def domains(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("domains")
    return {"source": write_digit_folder(root / "source", (0, 1, 2), 10),
            "target": write_inverted(root / "target", 8, 100, labeled=False),
            "test": write_inverted(root / "test", 5, 150, labeled=True),
            "shuffled": write_inverted(root / "shuffled", 5, 150, labeled=True, shuffle_seed=3)}


@pytest.fixture(scope="module")
def adapted(domains: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("adapted") / "run"
    api.fit(str(domains["source"]), strategy="self-train", target_data=str(domains["target"]),
            target_test=str(domains["test"]), target_oracle=0.95, out=str(out), **FIT)
    return out


def test_dev_selects_the_epoch_and_metrics_say_which_and_why(adapted: Path):
    metrics = json.loads((adapted / "metrics.json").read_text())
    history = json.loads((adapted / "history.json").read_text())
    risks = [row["dev_risk"] for row in history]
    assert len(risks) == 3 and all(np.isfinite(risks))
    kept = metrics["domain"]["selection"]["kept_epoch"]
    assert kept == metrics["best_epoch"] == int(np.argmin(risks))  # the lowest DEV estimate, not val macro-F1
    assert metrics["domain"]["selection"]["scores"] == {str(r["epoch"]): r["dev_risk"] for r in history}
    test = metrics["domain"]["target_test"]
    assert test["adapted"]["n"] == 15 and 0 <= test["source_only"]["accuracy"] <= 1
    assert test["gain"] == pytest.approx(test["adapted"]["accuracy"] - test["source_only"]["accuracy"])
    assert set(metrics["domain"]["domain_accuracy"]) == {"before", "after"}


def test_the_report_shows_the_domain_section(adapted: Path):
    html = (adapted / "report.html").read_text()
    section = html[html.index("<h2>Across domains</h2>"):]
    section = section[: section.index("<h2>", 10)]
    assert "source-only: linear probe on frozen pretrained features" in section
    assert "target oracle (trained on target labels)" in section and "the gap between source-only" in section
    assert re.search(r'<img class="plot" src="data:image/png;base64,[A-Za-z0-9+/=]{2000,}"', section)
    assert "Label-free selection kept epoch" in section and "no target label was used" in section
    md = (adapted / "report.md").read_text()
    assert "## Across domains" in md and "| adapted: self-train |" in md
    assert "chosen by deep embedded validation (DEV) without target labels" in md


def test_shuffled_target_test_labels_change_nothing_the_selection_sees(domains, adapted: Path, tmp_path: Path):
    out = tmp_path / "shuffled"
    api.fit(str(domains["source"]), strategy="self-train", target_data=str(domains["target"]),
            target_test=str(domains["shuffled"]), out=str(out), **FIT)
    first = json.loads((adapted / "history.json").read_text())
    second = json.loads((out / "history.json").read_text())
    assert [r["dev_risk"] for r in second] == [r["dev_risk"] for r in first]
    assert [r["val_loss"] for r in second] == [r["val_loss"] for r in first]
    a, b = (json.loads((run / "metrics.json").read_text())["domain"] for run in (adapted, out))
    assert a["selection"]["kept_epoch"] == b["selection"]["kept_epoch"]
    # the labels were read (for the report): shuffling them moves the target-test accuracy
    assert a["target_test"]["adapted"]["accuracy"] != b["target_test"]["adapted"]["accuracy"]


def test_target_test_refusals(domains, tmp_path: Path):
    with pytest.raises(ConfigError, match="needs 'target_data'"):
        api.fit(str(domains["source"]), strategy="coral", target_test=str(domains["test"]), **FIT)
    with pytest.raises(ConfigError, match="'target_oracle' parameter must be an accuracy"):
        api.fit(str(domains["source"]), strategy="coral", target_data=str(domains["target"]),
                target_test=str(domains["test"]), target_oracle=1.5, **FIT)
    with pytest.raises(DataError, match=r"--target-test \(labeled target test data\): .*no class folders"):
        api.fit(str(domains["source"]), strategy="coral", target_data=str(domains["target"]),
                target_test=str(domains["target"]), out=str(tmp_path / "run"), **FIT)



def test_cli_refuses_target_test_alone_and_prints_the_kept_epoch(domains, adapted: Path, cli_env, monkeypatch):
    import io

    from rich.console import Console

    from tests.test_cli import assert_user_error, run
    from transferkit.cli import fit as cli

    alone = run(["fit", "--data", str(domains["source"]), "--strategy", "coral", "--target-test", str(domains["test"])],
                cli_env)
    assert_user_error(alone)
    assert "--target-test needs --target-data" in alone.stderr
    buffer = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=buffer, width=200, no_color=True))
    cli._print_domain(json.loads((adapted / "metrics.json").read_text())["domain"])
    printed = buffer.getvalue()
    assert re.search(r"label-free selection \(DEV, no target labels\): kept epoch [012]", printed)
    assert re.search(r"target test: accuracy \d\.\d{4} adapted vs \d\.\d{4} source-only \(n=15\), -?\d+\.\d % of "
                     r"the gap to the oracle closed", printed)
