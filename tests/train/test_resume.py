"""Exact resume: a run continued from any complete checkpoint ends bit-identical to the uninterrupted run.

In-process runs (api.fit) resume from chosen checkpoints of a reference run; CLI runs are stopped with SIGTERM
(clean: checkpoint, exit 143) and killed with SIGKILL (at random points, some inside a save), then resumed.
3 digit classes x 10 images at 32 px (24 train, 3 batches of 8 per epoch) through EfficientNet-Lite0.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import VENV_BIN, write_digit_folder
from transferkit import api
from transferkit.core.errors import ConfigError, DataError
from transferkit.train.checkpoint import MARKER, complete_checkpoints
from transferkit.train.data_identity import data_changes

EXE = str(VENV_BIN / "transferkit")
TIMING_KEYS = ("train_seconds", "wall_seconds", "phase_seconds", "resumed_from")
API_OPTIONS = dict(model="efficientnet_lite0", image_size=32, epochs=2, checkpoint_steps=1, keep_checkpoints=100,
                   patience=0, progress=False, seed=1)  # augment stays 'light': resume must restore the RNG


# ------------------------------------------------------------------------------------------------------- helpers


def _tensors_equal(a: Path, b: Path) -> None:
    ta, tb = load_file(str(a)), load_file(str(b))
    assert ta.keys() == tb.keys(), f"{a} vs {b}"
    different = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not different, f"{b} differs from {a} in {len(different)} tensors, e.g. {different[:3]}"


def _final_checkpoint(run: Path) -> Path:
    found = complete_checkpoints(run / "checkpoints")
    assert found, f"no complete checkpoint in {run}"
    return found[-1]


def _loop_state(folder: Path) -> dict:
    return json.loads((folder / "state.json").read_text())["loop"]


def assert_same_run(ref: Path, got: Path) -> None:
    """Bit-identical final weights (current, best, optimizer), bundle, history and metrics."""
    ref_ckpt, got_ckpt = _final_checkpoint(ref), _final_checkpoint(got)
    assert got_ckpt.name == ref_ckpt.name  # same number of saves
    names = ["model.safetensors", "best_model.safetensors", "optimizer.safetensors"]
    names += ["ema.safetensors"] if (ref_ckpt / "ema.safetensors").exists() else []
    for name in names:
        _tensors_equal(ref_ckpt / name, got_ckpt / name)
    _tensors_equal(ref / "bundle" / "model.safetensors", got / "bundle" / "model.safetensors")
    assert json.loads((got / "history.json").read_text()) == json.loads((ref / "history.json").read_text())
    ref_metrics, got_metrics = (json.loads((r / "metrics.json").read_text()) for r in (ref, got))
    for key in TIMING_KEYS:
        ref_metrics.pop(key, None), got_metrics.pop(key, None)
    assert got_metrics == ref_metrics
    state = _loop_state(got_ckpt)
    assert state["finished"] and state["history"] == json.loads((ref / "history.json").read_text())


def _copy_run_until(ref: Path, dest: Path, last: Path | None) -> Path:
    """A copy of ``ref`` as if it had stopped right after writing checkpoint ``last`` (None: before any).

    Only ``last`` is copied (a resume must need nothing else), and nothing written after training.
    """
    shutil.copytree(ref, dest, ignore=shutil.ignore_patterns("checkpoints", "bundle", "metrics.json", "history.json",
                                                             "report.md"))
    (dest / "checkpoints").mkdir()
    if last is not None:
        shutil.copytree(last, dest / "checkpoints" / last.name)
    return dest


# ----------------------------------------------------------------------------------------------- in-process resume


@pytest.fixture(scope="module", params=["finetune", "gradual", "finetune-ema"])
def reference(request, digits_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run; 'finetune-ema' also keeps a weight average, whose state must survive the resume too."""
    out = tmp_path_factory.mktemp(f"ref-{request.param}") / "run"
    strategy, _, ema = request.param.partition("-")
    api.fit(str(digits_folder), strategy=strategy, out=str(out), **API_OPTIONS, **({"ema": 0.9} if ema else {}))
    return out


POINTS = {  # (epoch, batches_done) of the checkpoint to resume from; 3 batches per epoch
    "mid_epoch": (1, 1),  # inside epoch 2 (gradual: its second stage)
    "before_boundary": (0, 3),  # the last step of epoch 1 is done, its validation and epoch-end save are not
    "epoch_end": (1, 0),  # the epoch-end checkpoint of epoch 1
}


@pytest.mark.parametrize("point", sorted(POINTS))
def test_resume_is_bit_identical(reference: Path, tmp_path: Path, point: str):
    checkpoints = complete_checkpoints(reference / "checkpoints")
    states = {(s["epoch"], s["batches_done"]): c for c in checkpoints for s in [_loop_state(c)]}
    assert len(checkpoints) == 8 and len(states) == 8, sorted(states)  # 6 steps + 2 epoch ends
    start = states[POINTS[point]]
    run = _copy_run_until(reference, tmp_path / "run", start)

    result = api.fit(resume=str(run))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["resumed_from"] == str(run / "checkpoints" / start.name)  # really resumed, not restarted
    assert result.history == json.loads((reference / "history.json").read_text())
    assert_same_run(reference, run)
    assert f"Resumed from checkpoint {run / 'checkpoints' / start.name}" in (run / "report.md").read_text()


@pytest.mark.parametrize("reference", ["gradual"], indirect=True)  # strategy-independent: one is enough
def test_resume_without_a_checkpoint_starts_over(reference: Path, tmp_path: Path):
    """Killed before its first checkpoint: --resume trains from the start, same result."""
    run = _copy_run_until(reference, tmp_path / "run", None)
    api.fit(resume=str(run))
    assert "resumed_from" not in json.loads((run / "metrics.json").read_text())
    assert_same_run(reference, run)


def test_resume_a_finished_run(reference: Path, tmp_path: Path):
    final = _final_checkpoint(reference)
    run = _copy_run_until(reference, tmp_path / "run", final)
    api.fit(resume=str(run))
    assert json.loads((run / "metrics.json").read_text())["resumed_from"] == str(run / "checkpoints" / final.name)
    assert [p.name for p in complete_checkpoints(run / "checkpoints")] == [final.name]  # nothing trained or saved
    _tensors_equal(reference / "bundle" / "model.safetensors", run / "bundle" / "model.safetensors")
    assert json.loads((run / "history.json").read_text()) == json.loads((reference / "history.json").read_text())
    ref_metrics, got_metrics = (json.loads((r / "metrics.json").read_text()) for r in (reference, run))
    for key in TIMING_KEYS:
        ref_metrics.pop(key, None), got_metrics.pop(key, None)
    assert got_metrics == ref_metrics


def test_api_resume_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="config.json"):
        api.fit(resume=str(tmp_path))
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"data": None}))
    with pytest.raises(ConfigError, match="does not record the data"):
        api.fit(resume=str(run))


# -------------------------------------------------------------------------------------------------- CLI: SIGTERM


def _cli_args(data: Path, out: Path) -> list[str]:
    return ["fit", "--data", str(data), "--model", "efficientnet_lite0", "--image-size", "32", "--epochs", "2",
            "--checkpoint-steps", "1", "--out", str(out), "--seed", "1"]


def _run_cli(args: list[str], env: dict[str, str], timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *args], capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def cli_reference(digits_folder: Path, tmp_path_factory: pytest.TempPathFactory, cli_env: dict[str, str]) -> Path:
    out = tmp_path_factory.mktemp("cli-ref") / "run"
    proc = _run_cli(_cli_args(digits_folder, out), cli_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _loop_state(_final_checkpoint(out))["step"] == 6  # 2 epochs x 3 steps
    return out


def _wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 300, poll: float = 0.002) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run exited ({proc.returncode}) before {what}:\n{err[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(poll)


def _marked(run: Path) -> list[Path]:
    """Checkpoint folders that have a COMPLETE marker (cheap: no hashing while the run is writing)."""
    d = run / "checkpoints"
    return [p for p in d.iterdir() if p.name.startswith("ckpt-") and (p / MARKER).exists()] if d.is_dir() else []


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([EXE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate()


def test_sigterm_checkpoints_and_resumes_exactly(digits_folder: Path, cli_reference: Path, tmp_path: Path,
                                                 cli_env: dict[str, str]):
    run = tmp_path / "run"
    proc = _start(_cli_args(digits_folder, run), cli_env)
    try:
        _wait_for(lambda: _marked(run), proc, "the first checkpoint")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=300)
    finally:
        _stop(proc)
    assert proc.returncode == 143, err[-3000:]
    assert "Traceback" not in err
    one_line = " ".join(err.split())
    assert "SIGTERM" in one_line and f"transferkit fit --resume {run}" in one_line, err[-2000:]
    last = _final_checkpoint(run)
    state = _loop_state(last)
    assert not state["finished"] and 1 <= state["step"] < 6
    assert not (run / "bundle").exists()

    proc = _run_cli(["fit", "--resume", str(run)], cli_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((run / "metrics.json").read_text())["resumed_from"] == str(last)
    assert_same_run(cli_reference, run)


# ------------------------------------------------------------------------------------------------- CLI: kill -9


def _staging(run: Path) -> bool:
    """The next checkpoint's files are being written."""
    return any(p.name.startswith(".staging-") for p in (run / "checkpoints").iterdir())


def _unmarked(run: Path) -> bool:
    """A checkpoint was renamed into place but its COMPLETE marker is not written yet (it is being hashed).

    (Or an old one being pruned, marker already deleted: a crash point too.) The window is short; should the
    poll miss it at every save up to the third, any save in progress will do.
    """
    saves = [p for p in (run / "checkpoints").iterdir() if p.name.startswith("ckpt-")]
    if any(not (p / MARKER).exists() for p in saves):
        return True
    return max((int(p.name[5:]) for p in saves), default=0) >= 3 and _staging(run)


KILLS = {"staging": _staging, "unmarked": _unmarked}  # when to SIGKILL, once the first checkpoint is complete


@pytest.mark.parametrize("when", sorted(KILLS))
def test_kill_9_then_resume_exactly(digits_folder: Path, cli_reference: Path, tmp_path: Path,
                                    cli_env: dict[str, str], when: str):
    run = tmp_path / "run"
    proc = _start(_cli_args(digits_folder, run), cli_env)
    try:
        _wait_for(lambda: _marked(run), proc, "the first checkpoint")
        _wait_for(lambda: _safe(KILLS[when], run), proc, f"the '{when}' moment")
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        _stop(proc)
    assert proc.returncode == -signal.SIGKILL
    complete = complete_checkpoints(run / "checkpoints")  # what a resume may use: verified by hash
    assert complete, "killed before any complete checkpoint"
    assert not _loop_state(complete[-1])["finished"]
    debris = sorted(p.name for p in (run / "checkpoints").iterdir() if p not in complete)
    print(f"killed at '{when}': newest complete {complete[-1].name}, debris {debris}", file=sys.stderr)
    if when == "staging":  # the kill landed inside a save (staged, or at worst renamed but unmarked)
        assert debris, "expected a half-written checkpoint"

    api.fit(resume=str(run))  # in-process: must match the CLI reference too
    assert json.loads((run / "metrics.json").read_text())["resumed_from"] == str(complete[-1])
    assert_same_run(cli_reference, run)
    assert sorted((run / "checkpoints").iterdir()) == complete_checkpoints(run / "checkpoints")  # debris pruned


def _safe(condition, run: Path) -> bool:
    try:
        return bool(condition(run))
    except FileNotFoundError:
        return False


# --------------------------------------------------------------------------------------------- CLI: user errors


def _cli_main(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """`transferkit ARGS` in-process (saves a ~10 s interpreter start per call); exit code and stderr."""
    from transferkit import cli

    monkeypatch.setattr(sys, "argv", ["transferkit", *args])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    err = capsys.readouterr().err
    return exc.value.code, " ".join(err.split())


def test_cli_resume_without_config(tmp_path: Path, monkeypatch, capsys):
    code, err = _cli_main(["fit", "--resume", str(tmp_path)], monkeypatch, capsys)
    assert code == 2, err
    assert "config.json" in err and "is missing" in err and "Traceback" not in err


@pytest.mark.parametrize("flags", [["--epochs", "5"], ["--lr", "0.1", "--seed", "3"], ["--bn", "train"],
                                   ["-o", "alpha=0.1"], ["--out", "elsewhere"]])
def test_cli_resume_rejects_training_flags(tmp_path: Path, monkeypatch, capsys, flags: list[str]):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    code, err = _cli_main(["fit", "--resume", str(run), *flags], monkeypatch, capsys)
    assert code == 2, err
    assert "--resume" in err and "drop" in err, err
    assert not (run / "bundle").exists()


# ------------------------------------------------------------------------------------- resume on changed data

SMALL = dict(model="efficientnet_lite0", strategy="head", image_size=32, epochs=1, patience=0, progress=False, seed=1)


@pytest.fixture
def small_run(make_digit_folder, tmp_path: Path) -> tuple[Path, Path]:
    """A finished 1-epoch run on 2 digit classes x 6 images -> (its data folder, safe to change; its run folder)."""
    data = make_digit_folder(digits=(0, 1), per_class=6)
    run = tmp_path / "run"
    api.fit(str(data), out=str(run), **SMALL)
    return data, run


def test_resume_refuses_a_new_class(small_run, monkeypatch, capsys):
    data, run = small_run
    write_digit_folder(data, (2,), 6)
    with pytest.raises(DataError, match=r"class\(es\) added: '2'") as exc:
        api.fit(resume=str(run))
    message = " ".join(str(exc.value).split())
    assert f"--init-from {run / 'bundle'} --data {data.resolve()}" in message and "another --out" in message
    code, err = _cli_main(["fit", "--resume", str(run)], monkeypatch, capsys)
    assert code == 2 and "class(es) added: '2'" in err and "Traceback" not in err


def test_resume_refuses_added_images_and_an_unfinished_run_has_no_bundle_to_offer(small_run):
    data, run = small_run
    shutil.rmtree(run / "bundle")  # as if stopped before its end: nothing to continue from with --init-from
    write_digit_folder(data, (0,), 2, offset=6)
    with pytest.raises(DataError, match=r"the data changed since this run started \(train: \d+ -> \d+ examples") as exc:
        api.fit(resume=str(run))
    message = str(exc.value)
    assert "'0' " in message and "never finished" in message and "original data back" in message
    assert "--init-from" not in message


def test_unchanged_data_resumes_from_the_recorded_absolute_path(make_digit_folder, tmp_path: Path, monkeypatch):
    """Started with a relative --data path, resumed from the absolute one config.json records: the same data."""
    make_digit_folder("digits", digits=(0, 1), per_class=6)
    monkeypatch.chdir(tmp_path)
    api.fit("digits", out="run", **SMALL)
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())
    assert recorded["data"] == str(tmp_path / "digits") and set(recorded["data_identity"]["splits"]) == {"train", "val"}
    api.fit(resume="run")
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["resumed_from"]


def test_data_changes_names_each_difference():
    def split(n: int, classes: dict[str, int], sha: str) -> dict:
        return {"n": n, "classes": classes, "sha256": sha}

    old = {"labels": ["a", "b"], "splits": {"train": split(4, {"a": 2, "b": 2}, "x"), "val": split(2, {"a": 1, "b": 1},
                                                                                                     "y")}}
    assert data_changes(old, old) == []
    edited = {"labels": ["a", "b"], "splits": {"train": split(4, {"a": 2, "b": 2}, "z"), "val": old["splits"]["val"]}}
    assert data_changes(old, edited) == ["train: as many examples per class (4 in all), but different content (files "
                                         "replaced or edited)"]
    grown = {"labels": ["a", "b", "c"], "splits": {"train": split(5, {"a": 2, "b": 2, "c": 1}, "w")}}
    assert data_changes(old, grown) == ["class(es) added: 'c'", "train: 4 -> 5 examples ('c' 0 -> 1)",
                                        "the val split is gone"]
