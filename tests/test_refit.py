"""fit --init-from BUNDLE: continue from a bundle's weights and head on new data (same labels or added classes),
and score old and new model on old and new test data so forgetting shows."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

import transferkit
from tests.conftest import VENV_BIN, write_digit_folder
from transferkit.core.errors import ConfigError, DataError
from transferkit.export.bundle import load_bundle

COMPARISONS = ("old_model_on_new_test", "new_model_on_new_test", "old_model_on_old_test", "new_model_on_old_test")


@pytest.fixture(scope="module")
def old_run(tmp_path_factory: pytest.TempPathFactory) -> transferkit.api.FitResult:
    """A linear probe on digits 0-2 with its own test folder (recorded in the bundle's manifest)."""
    root = tmp_path_factory.mktemp("refit")
    write_digit_folder(root / "old" / "train", (0, 1, 2), 10, offset=0)
    write_digit_folder(root / "old" / "test", (0, 1, 2), 5, offset=10)
    return transferkit.fit(str(root / "old"), model="efficientnet_lite0", strategy="linear-probe", image_size=32,
                           out=str(root / "old-run"), progress=False)


def _new_data(root: Path, digits: tuple[int, ...]) -> Path:
    write_digit_folder(root / "train", digits, 8, offset=20)
    write_digit_folder(root / "test", digits, 4, offset=30)
    return root


def _refit(old_run, data: Path, out: Path, **options) -> tuple[transferkit.api.FitResult, dict]:
    options = {"strategy": "finetune", "epochs": 1, "batch_size": 16, "lr": 1e-9, **options}
    result = transferkit.fit(str(data), init_from=str(old_run.bundle_dir), out=str(out), progress=False, **options)
    return result, json.loads((out / "metrics.json").read_text())


def test_same_labels_continues_from_the_bundle(old_run, tmp_path: Path):
    """With a negligible learning rate the new model is the old one: same scores on the old test data, which a
    fresh head (uniform predictions) or the ImageNet backbone alone could not reproduce."""
    result, metrics = _refit(old_run, _new_data(tmp_path / "new", (0, 1, 2)), tmp_path / "run")
    entry = metrics["init_from"]
    assert all(entry[key]["n"] > 0 for key in COMPARISONS)
    assert entry["old_test"]["split"] == "test" and entry["new_test"]["split"] == "test"
    assert entry["added_labels"] == [] and entry["labels"] == ["0", "1", "2"]
    assert entry["new_model_on_old_test"]["accuracy"] == entry["old_model_on_old_test"]["accuracy"] > 0.5
    assert entry["new_model_on_new_test"]["accuracy"] == entry["old_model_on_new_test"]["accuracy"]
    old, new = load_bundle(old_run.bundle_dir), load_bundle(result.bundle_dir)
    assert torch.allclose(new.model.head.linear.weight, old.model.head.linear.weight, atol=1e-5)
    assert new.manifest["init_from"]["bundle"] == str(Path(old_run.bundle_dir).resolve())
    assert new.manifest["preprocessing"]["image_size"] == 32
    report = (Path(result.run_dir) / "report.md").read_text()
    assert "Continued from the bundle" in report and "On the old test data" in report


def test_added_class_extends_the_head(old_run, tmp_path: Path):
    result, metrics = _refit(old_run, _new_data(tmp_path / "new", (0, 1, 2, 3)), tmp_path / "run",
                             strategy="head", lr=1e-3, epochs=2)
    entry = metrics["init_from"]
    assert entry["added_labels"] == ["3"]
    old, new = load_bundle(old_run.bundle_dir), load_bundle(result.bundle_dir)
    assert new.label_map.names == ("0", "1", "2", "3")  # old classes keep their indices
    assert new.model.head.linear.weight.shape[0] == 4
    assert torch.equal(new.model.backbone.model.conv_stem.weight, old.model.backbone.model.conv_stem.weight)
    assert entry["old_model_on_new_test"]["n"] == entry["new_model_on_new_test"]["n"] == 16
    assert entry["old_model_on_new_test"]["accuracy"] <= 0.75  # the old model never predicts class 3
    assert entry["old_model_on_old_test"]["n"] == 15


def test_old_test_data_gone(old_run, tmp_path: Path):
    moved = Path(old_run.run_dir).parent / "old"
    hidden = moved.with_name("old-hidden")
    moved.rename(hidden)
    try:
        _, metrics = _refit(old_run, _new_data(tmp_path / "new", (0, 1, 2)), tmp_path / "run", epochs=1)
    finally:
        hidden.rename(moved)
    entry = metrics["init_from"]
    assert "not readable" in entry["old_test"]["unavailable"]
    assert "new_model_on_old_test" not in entry and entry["new_model_on_new_test"]["n"] == 12


def test_refused_combinations(old_run, tmp_path: Path, text_csv: Path):
    data = _new_data(tmp_path / "new", (0, 1, 2))
    with pytest.raises(ConfigError, match="random ones"):
        _refit(old_run, data, tmp_path / "a", strategy="scratch")
    with pytest.raises(ConfigError, match="drop --image-size"):
        _refit(old_run, data, tmp_path / "b", image_size=64)
    with pytest.raises(ConfigError, match="drop --model"):
        _refit(old_run, data, tmp_path / "c", model="minilm")
    with pytest.raises(DataError, match="is an image model but the data is text"):
        _refit(old_run, text_csv, tmp_path / "d")


@pytest.mark.slow
def test_cli_flag(old_run, tmp_path: Path, cli_env: dict[str, str]):
    data = _new_data(tmp_path / "new", (0, 1, 2))
    proc = subprocess.run([str(VENV_BIN / "transferkit"), "fit", "--data", str(data), "--init-from",
                           str(old_run.bundle_dir), "--strategy", "scratch", "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, env=cli_env, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--init-from" in proc.stderr and "scratch" in proc.stderr


# ------------------------------------------------------------------ regression, multi-label and tokens


def _task_data(task: str, root: Path) -> tuple[Path, Path]:
    """(old training data, new training data) for ``task``; the new data adds a label (multi-label) or an entity
    type (tokens)."""
    from tests.test_distillation import _jsonl
    from tests.test_multilabel_end_to_end import multilabel_texts
    from tests.test_regression_end_to_end import regression_texts, write_rows
    from tests.test_tokens_end_to_end import sentences, write_conll

    root.mkdir(parents=True, exist_ok=True)
    if task == "regression":
        return (write_rows(root / "old.csv", regression_texts(48)),
                write_rows(root / "new.csv", regression_texts(40, seed=7)))
    if task == "multilabel":
        new = [(t + " song", [*y, "music"]) if i % 3 == 0 else (t, y) for i, (t, y) in
               enumerate(multilabel_texts(36, seed=7))]
        return _jsonl(root / "old.jsonl", multilabel_texts(48)), _jsonl(root / "new.jsonl", new)
    new = [[(w, t) for w, t in s[:-1]] + [("Acme", "B-ORG"), ("Corp", "I-ORG")] if i % 3 == 0 else s
           for i, s in enumerate(sentences(30, 7))]
    return write_conll(root / "old.conll", sentences(40, 0)), write_conll(root / "new.conll", new)


ADDED = {"regression": [], "multilabel": ["music"], "tokens": ["B-ORG", "I-ORG"]}
METRIC = {"regression": "r2", "multilabel": "micro_f1", "tokens": "entity_f1"}


@pytest.mark.parametrize("task", sorted(ADDED))
def test_init_from_continues_a_bundle_of_every_task(task: str, tmp_path: Path):
    """The bundle's labels first, then the ones the new data adds; with a negligible learning rate the new model
    scores like the old one on the new data's labels it knows (regression: same target scale, same numbers)."""
    old_data, new_data = _task_data(task, tmp_path / "data")
    old = transferkit.fit(str(old_data), model="minilm", strategy="linear-probe", task=task, out=str(tmp_path / "old"),
                          progress=False, baseline=False)
    new, metrics = _refit(old, new_data, tmp_path / "new", task=task, strategy="head", baseline=False)
    entry = metrics["init_from"]
    assert entry["task"] == task and entry["metric"] == METRIC[task] and entry["added_labels"] == ADDED[task]
    before, after = load_bundle(old.bundle_dir), load_bundle(new.bundle_dir)
    assert after.label_map.names == before.label_map.names + tuple(ADDED[task])
    assert after.manifest["init_from"]["labels"] == list(before.label_map.names)
    n_old = len(before.label_map)
    torch.testing.assert_close(after.model.head.linear.weight[:n_old], before.model.head.linear.weight, atol=1e-5,
                               rtol=0)
    old_score, new_score = entry["old_model_on_new_test"], entry["new_model_on_new_test"]
    assert old_score["n"] == new_score["n"] > 0
    if task == "regression":
        assert after.manifest["targets"] == before.manifest["targets"]
        assert new_score["mae"] == pytest.approx(old_score["mae"], abs=1e-3)  # the old head, in the old units
        assert new_score["r2"] == pytest.approx(old_score["r2"], rel=1e-3)
    else:  # the old model never predicts what it lacks; both know the old labels alike
        assert METRIC[task] in old_score and METRIC[task] in new_score
    report = (Path(new.run_dir) / "report.md").read_text()
    assert "Continued from the bundle" in report


def test_init_from_a_bundle_of_another_task_is_refused_naming_both(tmp_path: Path):
    old_data, _ = _task_data("regression", tmp_path / "reg")
    _, new_data = _task_data("multilabel", tmp_path / "ml")
    old = transferkit.fit(str(old_data), model="minilm", strategy="linear-probe", out=str(tmp_path / "old"),
                          progress=False, baseline=False)
    with pytest.raises(ConfigError, match="is a regression model but this fit is multilabel"):
        transferkit.fit(str(new_data), init_from=str(old.bundle_dir), strategy="head", out=str(tmp_path / "new"),
                        progress=False)


def test_init_from_a_huber_regression_bundle_keeps_its_task_and_loss(tmp_path: Path):
    """New labels that detection alone would read as classes (a few integer values) continue a regression bundle as
    regression, with the bundle's Huber loss and delta; --loss given by name still wins."""
    from tests.test_regression_end_to_end import regression_texts, write_rows

    old_data = write_rows(tmp_path / "old.csv", regression_texts(48))
    codes = write_rows(tmp_path / "codes.csv", [(t, round(y)) for t, y in regression_texts(40, seed=7)])
    assert transferkit.api.doctor(str(codes)).stats["task"] == "classification"  # without the bundle
    old = transferkit.fit(str(old_data), model="minilm", strategy="head", epochs=1, loss="huber", huber_delta=0.5,
                          out=str(tmp_path / "old"), progress=False, baseline=False)
    new, _ = _refit(old, codes, tmp_path / "new", strategy="head", baseline=False)
    manifest = load_bundle(new.bundle_dir).manifest
    assert manifest["task"] == "regression"
    assert (manifest["train_config"]["loss"], manifest["train_config"]["huber_delta"]) == ("huber", 0.5)
    mse, _ = _refit(old, codes, tmp_path / "mse", strategy="head", loss="mse", baseline=False)
    assert load_bundle(mse.bundle_dir).manifest["train_config"]["loss"] == "mse"


def test_init_from_an_audio_bundle_keeps_its_clip_length(tone_folder: Path, tmp_path: Path):
    """The bundle's clip length (Whisper's encoder positions) is the start: used without --clip-seconds, and a
    different --clip-seconds is refused with the length the bundle was fitted on."""
    old = transferkit.fit(str(tone_folder), model="whisper-tiny-en", strategy="linear-probe", clip_seconds=1.5,
                          out=str(tmp_path / "old"), progress=False, baseline=False)
    new = transferkit.fit(str(tone_folder), strategy="finetune", init_from=str(old.bundle_dir), epochs=1,
                          batch_size=4, out=str(tmp_path / "new"), progress=False, baseline=False)
    bundle = load_bundle(new.bundle_dir)
    assert bundle.preprocessing.clip_seconds == 1.5
    assert bundle.model.backbone.model.config.max_source_positions == 75  # 1.5 s of 20 ms positions
    assert json.loads((new.run_dir / "metrics.json").read_text())["init_from"]["bundle"] == str(old.bundle_dir.resolve())
    with pytest.raises(ConfigError, match=r"was fitted on 1.5-second clips; drop --clip-seconds 2 "):
        transferkit.fit(str(tone_folder), strategy="finetune", init_from=str(old.bundle_dir), clip_seconds=2.0,
                        out=str(tmp_path / "refused"), progress=False)
