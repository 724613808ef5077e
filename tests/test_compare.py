"""`api.compare` and `transferkit compare`: identical splits for every strategy, mean ± std per cell, transfer
gains against scratch and the pixels reference, the time budget, and the command's user errors."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import VENV_BIN, write_digit_folder, write_inverted_digits
from transferkit import api
from transferkit import compare as compare_module
from transferkit.core.errors import ConfigError

EXE = str(VENV_BIN / "transferkit")
STRATEGIES = ["linear-probe", "scratch"]
KS = [5, 10]
SEEDS = 2
OPTIONS = {"model": "efficientnet_lite0", "epochs": 1, "image_size": 32}


@pytest.fixture(scope="module")
def digits15(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes x 15 digits: a fixed 3 per class become the test set, 12 remain, so K=10 is a real subsample."""
    return write_digit_folder(tmp_path_factory.mktemp("digits15") / "data", (0, 1, 2), 15)


def spy_on_prepare_data(mp: pytest.MonkeyPatch) -> list[dict]:
    """Record what every prepare_data call (inside fit, compare and the reference) resolved to; runs the real one."""
    calls: list[dict] = []
    real = api.prepare_data

    def spy(data, cfg):
        prepared = real(data, cfg)
        calls.append({"strategy": cfg.strategy, "k": cfg.labels_per_class, "seed": cfg.train.seed, "out": cfg.out,
                      "train": tuple(prepared.train.ids), "val": tuple(prepared.val.ids),
                      "test": tuple(prepared.test.ids)})
        return prepared

    mp.setattr(api, "prepare_data", spy)
    return calls


@pytest.fixture(scope="module")
def comparison(digits15: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("compare") / "cmp"
    with pytest.MonkeyPatch.context() as mp:
        calls = spy_on_prepare_data(mp)
        summary = compare_module.compare(str(digits15), STRATEGIES, KS, seeds=SEEDS, out=str(out), progress=False, **OPTIONS)
    return SimpleNamespace(out=out, summary=summary, calls=calls,
                           saved=json.loads((out / "compare.json").read_text()))


def test_compare_json_has_a_row_per_strategy_and_k(comparison):
    saved = comparison.saved
    assert saved["reference_name"] == "pixels-logreg"
    cells = {(r["strategy"], r["labels_per_class"]): r for r in saved["rows"]}
    assert set(cells) == {(s, k) for s in [*STRATEGIES, "pixels-logreg"] for k in KS}
    for row in saved["rows"]:
        assert row["n_runs"] == SEEDS
        assert row["accuracy_std"] >= 0 and 0 <= row["accuracy_mean"] <= 1
        runs = [r for r in saved["runs"] if (r["strategy"], r["labels_per_class"]) == (row["strategy"],
                                                                                       row["labels_per_class"])]
        assert sorted(r["seed"] for r in runs) == list(range(SEEDS))
        accuracies = [r["accuracy"] for r in runs]
        assert row["accuracy_mean"] == pytest.approx(sum(accuracies) / SEEDS)
        assert row["accuracy_std"] == pytest.approx(abs(accuracies[0] - accuracies[1]) / 2)  # population std
    assert saved["skipped"] == []
    assert saved["n_test"] == 9
    assert saved["seeds"] == SEEDS
    assert comparison.summary["out"] == str(comparison.out)
    assert cells[("scratch", 5)]["trainable_params"] > cells[("linear-probe", 5)]["trainable_params"] > 0
    assert cells[("pixels-logreg", 5)]["trainable_params"] is None


def test_each_run_folder_matches_its_record(comparison):
    for run in comparison.saved["runs"]:
        if run["strategy"] == "pixels-logreg":
            assert "run_dir" not in run
            continue
        run_dir = Path(run["run_dir"])
        metrics = json.loads((run_dir / "metrics.json").read_text())
        config = json.loads((run_dir / "config.json").read_text())
        assert (run_dir / "report.html").is_file()
        assert config["strategy"] == run["strategy"]
        assert config["labels_per_class"] == run["labels_per_class"]
        assert config["train"]["seed"] == run["seed"]
        assert metrics["test"]["accuracy"] == run["accuracy"]
        assert metrics["test"]["n"] == 9  # the same fixed test set for every run


def test_strategies_and_reference_train_on_identical_examples(comparison):
    """At a given (K, seed) linear-probe, scratch and the pixels reference read exactly the same examples."""
    runs = [r for r in comparison.saved["runs"] if r["strategy"] != "pixels-logreg"]
    n_used = {}
    for run in runs:
        metrics = json.loads((Path(run["run_dir"]) / "metrics.json").read_text())
        config = json.loads((Path(run["run_dir"]) / "config.json").read_text())
        n_used.setdefault((config["labels_per_class"], config["train"]["seed"]), set()).add(metrics["n_train_used"])
    assert set(n_used) == {(k, s) for k in KS for s in range(SEEDS)}
    assert all(len(v) == 1 for v in n_used.values()), n_used
    assert n_used[(5, 0)] == {12}  # 5 per class, 1 of them held out for validation
    assert n_used[(10, 0)] == {24}  # 10 per class, 2 held out

    fits = [c for c in comparison.calls if c["out"] is not None and "/runs/" in c["out"]]
    reference = [c for c in comparison.calls if c["out"] is None]
    assert len(reference) == len(KS) * SEEDS
    assert {c["strategy"] for c in fits} == set(STRATEGIES)
    tests = {c["test"] for c in comparison.calls}
    assert len(tests) == 1 and len(next(iter(tests))) == 9
    for k in KS:
        for seed in range(SEEDS):
            seen = {(c["train"], c["val"]) for c in fits + reference if c["k"] == k and c["seed"] == seed}
            assert len(seen) == 1, f"K={k} seed={seed}: strategies read different examples"
            train, val = seen.pop()
            assert not set(train) & set(val) and not set(train) & set(next(iter(tests)))
    # each seed draws its own subsample
    k5 = {c["seed"]: c["train"] for c in fits if c["k"] == 5}
    assert k5[0] != k5[1]


def test_gains_against_scratch_and_the_reference(comparison):
    saved = comparison.saved
    cells = {(r["strategy"], r["labels_per_class"]): r for r in saved["rows"]}
    by = {(g["labels_per_class"], g["baseline"]): g for g in saved["gains"]}
    assert set(by) == {(k, b) for k in KS for b in ("scratch", "pixels-logreg")}
    for (k, base), g in by.items():
        assert g["strategy"] == "linear-probe"
        expected = 100 * (cells[("linear-probe", k)]["accuracy_mean"] - cells[(base, k)]["accuracy_mean"])
        assert g["gain_points"] == pytest.approx(expected)
        assert g["negative"] == (expected < 0)
        assert ("BELOW" in g["statement"]) == g["negative"]
        assert f"At {k} labels/class" in g["statement"]


def test_compare_html_is_written(comparison):
    page = (comparison.out / "compare.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 1  # the label-efficiency plot
    for name in [*STRATEGIES, "pixels-logreg"]:
        assert f"<tr><td>{name}</td>" in page
    for g in comparison.saved["gains"]:
        assert g["statement"] in page
    assert "http://" not in page and "https://" not in page


# ------------------------------------------------------------------------------------------------------- budget


def test_budget_skips_later_runs_but_runs_the_cheapest_first(digits15: Path, tmp_path: Path, monkeypatch):
    """A fake clock makes this deterministic: it stands still inside a run and jumps 30 s after each."""
    clock = SimpleNamespace(now=1000.0)
    monkeypatch.setattr(compare_module, "time", SimpleNamespace(perf_counter=lambda: clock.now))
    real_fit, fitted = api.fit, []

    def timed_fit(*args, **kwargs):
        result = real_fit(*args, **kwargs)
        fitted.append((kwargs["config"].strategy, kwargs["config"].labels_per_class, kwargs["config"].train.seed))
        clock.now += 30.0
        return result

    monkeypatch.setattr(api, "fit", timed_fit)
    out = tmp_path / "budget"
    summary = compare_module.compare(str(digits15), STRATEGIES, [10, 5], seeds=SEEDS, out=str(out), budget_minutes=0.001,
                          progress=False, **OPTIONS)
    assert fitted == [("linear-probe", 5, 0)]  # the smallest K, first strategy, first seed
    saved = json.loads((out / "compare.json").read_text())
    assert len(saved["skipped"]) == len(STRATEGIES) * 2 * SEEDS - 1 == len(summary["skipped"])
    assert all("budget" in s for s in saved["skipped"])
    assert any(s.startswith("scratch at 10 labels/class, seed 1") for s in saved["skipped"])
    assert not any(s.startswith("linear-probe at 5 labels/class, seed 0") for s in saved["skipped"])
    ran = [r for r in saved["runs"] if r["strategy"] in STRATEGIES]
    assert [(r["strategy"], r["labels_per_class"], r["seed"]) for r in ran] == [("linear-probe", 5, 0)]
    cells = {(r["strategy"], r["labels_per_class"]): r["n_runs"] for r in saved["rows"]}
    assert cells[("linear-probe", 5)] == 1 and ("scratch", 5) not in cells
    page = (out / "compare.html").read_text(encoding="utf-8")
    assert "Skipped runs" in page and "scratch at 10 labels/class, seed 1" in page


def test_a_run_that_diverges_is_skipped_with_its_reason(digits15: Path, tmp_path: Path, monkeypatch):
    """A strategy diverging in its first epoch (no model to keep) is listed as skipped; the comparison goes on."""
    from transferkit.core.errors import TrainingDiverged

    real_fit = api.fit

    def fit(*args, **kwargs):
        if kwargs["config"].strategy == "scratch":
            raise TrainingDiverged("Training diverged at epoch 1, step 2: the training loss became nan. Try a lower "
                                   "learning rate (--lr, now 0.001).")
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(api, "fit", fit)
    out = tmp_path / "diverged"
    compare_module.compare(str(digits15), STRATEGIES, [5], seeds=1, out=str(out), progress=False, **OPTIONS)
    saved = json.loads((out / "compare.json").read_text())
    assert saved["skipped"] == ["scratch at 5 labels/class, seed 0: Training diverged at epoch 1, step 2: the training "
                                "loss became nan. Try a lower learning rate (--lr, now 0.001)."]
    assert {r["strategy"] for r in saved["runs"]} >= {"linear-probe"}
    assert "scratch" not in {r["strategy"] for r in saved["runs"]}
    assert "Training diverged at epoch 1" in (out / "compare.html").read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------------------- CLI


def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def assert_one_line_user_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error:")
    assert "[compare]" not in proc.stdout  # no run started
    return lines[0]


def run_main(argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """`transferkit ARGS` in this process (importing transferkit in a subprocess costs ~8 s on a small CPU)."""
    from transferkit import cli

    monkeypatch.setattr("sys.argv", ["transferkit", *argv])
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("TERM", "dumb")
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_compare_help_lists_examples(monkeypatch, capsys):
    code, out, _ = run_main(["compare", "--help"], monkeypatch, capsys)
    assert code == 0
    assert "Examples" in out
    assert "transferkit compare --data builtin:digits --strategies linear-probe,finetune,scratch" in out
    assert "--budget-minutes 30" in out
    for flag in ("--strategies", "--labels-per-class", "--seeds", "--budget-minutes", "--workers"):
        assert flag in out


def test_cli_compare_bad_labels_per_class(digits_folder: Path, tmp_path: Path, monkeypatch, capsys):
    out = tmp_path / "cmp"
    code, stdout, stderr = run_main(["compare", "--data", str(digits_folder), "--labels-per-class", "ten",
                                     "--out", str(out)], monkeypatch, capsys)
    proc = subprocess.CompletedProcess([], code, stdout, stderr)
    line = assert_one_line_user_error(proc)
    assert "--labels-per-class" in line and "'ten'" in line
    assert not out.exists()


@pytest.mark.parametrize("value", ["10,0", "5,,10", "-3", "1.5"])
def test_labels_per_class_parser_rejects(value: str):
    from transferkit.cli.compare import _parse_ks
    from transferkit.core.errors import ConfigError

    with pytest.raises(ConfigError, match="--labels-per-class"):
        _parse_ks(value)


def test_labels_per_class_parser_accepts_numbers_and_all():
    from transferkit.cli.compare import _parse_ks

    assert _parse_ks("10, 100,all") == [10, 100, None]


def test_cli_compare_unknown_strategy_fails_before_any_run(cli_env: dict[str, str], digits_folder: Path,
                                                           tmp_path: Path):
    out = tmp_path / "cmp"
    proc = run_cli(["compare", "--data", str(digits_folder), "--strategies", "linear-probe,scratch,fintune",
                    "--labels-per-class", "5", "--out", str(out)], cli_env, tmp_path)
    line = assert_one_line_user_error(proc)
    assert "fintune" in line and "finetune" in line
    assert not out.exists()


def test_compare_gives_target_data_to_the_strategies_that_adapt(digits15: Path, tmp_path: Path):
    """Source-only vs adapted on identical splits: finetune trains on the source alone, coral also reads the target;
    both are scored on the labeled target test set (--test-data)."""
    target = write_inverted_digits(tmp_path / "target", (0, 1, 2), 4)
    target_test = tmp_path / "target_test"
    for d in (0, 1, 2):
        write_inverted_digits(target_test / str(d), (d,), 3, offset=150)
    with pytest.raises(ConfigError, match="none of which is compared here"):
        compare_module.compare(str(digits15), ["finetune"], [None], target_data=str(target), out=str(tmp_path / "x"),
                               **OPTIONS)
    with pytest.raises(ConfigError, match="dann need --target-data"):
        compare_module.compare(str(digits15), ["finetune", "dann"], [None], out=str(tmp_path / "y"), **OPTIONS)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()  # refused before any run
    summary = compare_module.compare(str(digits15), ["finetune", "coral"], [None], target_data=str(target),
                                     test_data=str(target_test), out=str(tmp_path / "cmp"), progress=False, **OPTIONS)
    runs = {r["strategy"]: Path(r["run_dir"]) for r in summary["runs"] if r["strategy"] in ("finetune", "coral")}
    configs = {name: json.loads((run / "config.json").read_text()) for name, run in runs.items()}
    assert configs["finetune"]["target_data"] is None and configs["coral"]["target_data"] == str(target)
    assert json.loads((runs["coral"] / "metrics.json").read_text())["n_target"] == 12
    assert {json.loads((run / "metrics.json").read_text())["test"]["n"] for run in runs.values()} == {9}
