"""The regression task contract: standardised head answering in the user's units, MSE or Huber, R² selection,
{"value"} rows; detection of numeric targets; the encoder's and the doctor's refusals; options regression refuses,
and --loss, which only regression takes."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import r2_score

from transferkit.config import FitConfig
from transferkit.core.errors import ConfigError, DataError
from transferkit.data.doctor import DoctorConfig, diagnose
from transferkit.data.examples import DataSplits, Examples
from transferkit.data.sources import load_source
from transferkit.data.splits import held_out_split
from transferkit.data.targets import NumericTargets, detect_task
from transferkit.strategies.base import StrategyContext
from transferkit.strategies.linear_probe import LinearProbeConfig, fit_probe_head
from transferkit.task_choice import check_options, resolve_task, with_task_loss
from transferkit.tasks import TASKS, RegressionHead, RegressionTask, get_task


@pytest.fixture
def task() -> RegressionTask:
    return get_task("regression")


def test_registry_and_a_fresh_head_predicting_the_training_mean_in_the_users_units(task):
    assert TASKS["regression"] is RegressionTask
    head = task.head(8, 1)
    assert isinstance(head, RegressionHead)
    head.set_target_scale(50.0, 10.0)
    outputs = head(torch.randn(4, 8))
    assert outputs.shape == (4, 1)
    assert torch.allclose(outputs, torch.full((4, 1), 50.0))
    targets = torch.tensor([40.0, 60.0, 50.0, 30.0])
    # the training loss is on standardised values: (t - 50) / 10 -> mean of (-1, 1, 0, -2)^2
    assert head.loss(outputs, targets).item() == pytest.approx((1 + 1 + 0 + 4) / 4)
    assert task.loss(outputs, targets).item() == pytest.approx((100 + 100 + 0 + 400) / 4)  # plain MSE, in units


def test_metrics_selection_and_response_rows(task):
    y = np.array([1.0, 2.0, 3.0, 4.0])
    p = np.array([1.5, 2.0, 2.5, 4.0])
    m = task.metrics(y, p)
    assert m["r2"] == pytest.approx(r2_score(y, p))
    assert m["mae"] == pytest.approx(0.25)
    assert task.selection_metric == "val_r2" and task.higher_is_better
    assert task.selection_score(y, p) == pytest.approx(r2_score(y, p))
    row = task.validation(p[:, None].astype(np.float32), y.astype(np.float32))
    assert set(row) == {"val_loss", "val_r2", "val_mae", "val_rmse"}
    assert task.response(np.array([[1.23456789], [-2.0]]), ("value",), top_k=3, digits=3) == [
        {"value": 1.235}, {"value": -2.0}]
    assert task.row_fields == ("value",)


@pytest.mark.parametrize("labels, expected", [
    ([f"{0.37 * i:.2f}" for i in range(60)], "regression"),  # fractional values, many distinct
    ([str(i) for i in range(100)], "regression"),  # integers, all distinct
    ([str(i % 5 + 1) for i in range(200)], "classification"),  # star ratings 1..5
    ([str(i % 30) for i in range(3000)], "classification"),  # 30 integer codes, each repeated 100 times
    (["cat", "1.5", "2"] * 10, "classification"),
    # a small file of scores: 12 rows, non-integer, every value distinct
    (["-0.648", "-0.767", "0.312", "1.05", "-2.039", "0.445", "-0.089", "0.7", "1.9", "-1.25", "0.033", "2.4"],
     "regression"),
    (["1", "2", "3", "4", "5", "1", "2", "3", "4", "5", "1", "2"], "classification"),  # few star ratings
    (["0.5", "1.5", "0.5", "1.5", "0.5", "1.5", "0.5", "1.5"], "classification"),  # few codes, repeated
    (["0.5", "1.5", "2.5"], "classification"),  # too few rows to tell
])
def test_detection_rule(labels, expected):
    guess = detect_task(labels)
    assert guess.name == expected
    if expected == "regression":
        assert guess.reason.startswith(f"task: regression (detected: {len(labels)} numeric labels")
        assert "pass --task classification to override" in guess.reason


def test_the_encoder_refuses_non_numbers_and_constants():
    with pytest.raises(DataError, match=r"row 2 has target 'nan', which is not a finite number"):
        NumericTargets().encode(["1.5", "nan", "2"], "data.csv")
    with pytest.raises(DataError, match="every training target is 3"):
        NumericTargets.from_labels(["3", "3.0", "3"], "data.csv")
    t = NumericTargets.from_labels(["1", "2", "3", "4"], "data.csv")
    assert (t.mean, t.std, len(t)) == (2.5, pytest.approx(np.std([1, 2, 3, 4])), 1)


def test_doctor_names_bad_and_constant_targets_with_file_and_line(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("text,label\na b,1.5\nc d,inf\ne f,x\ng h,2\n", encoding="utf-8")
    report = diagnose(load_source(path), DoctorConfig(task="regression"))
    bad = [f for f in report.findings if f.kind == "bad-target"]
    assert [f.line for f in bad] == [3, 4] and all(f.severity == "fatal" for f in bad)
    assert "not a finite number" in bad[0].message
    constant = Examples("text", ["a", "b", "c"], ["2", "2", "2"], "c.csv")
    kinds = {f.kind for f in diagnose(DataSplits(constant), DoctorConfig(task="regression")).findings}
    assert "constant-target" in kinds and "single-class" not in kinds


@pytest.mark.parametrize("options, words", [
    ({"labels_per_class": 5}, "--labels-per-class keeps K examples of each class"),
    ({"label_smoothing": 0.1}, "--label-smoothing"),
    ({"mixup": 0.2}, "--mixup/--cutmix"),
    ({"sampler": "balanced"}, "--sampler balanced"),
    ({"class_weight": "balanced"}, "--class-weight balanced"),
])
def test_options_regression_refuses_say_why(options, words):
    cfg = FitConfig.from_options(task="regression", **options)
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
        check_options(cfg)
    check_options(FitConfig.from_options(task="classification", **options))  # the same options are fine there


def test_task_option_is_checked_and_detection_fills_it():
    with pytest.raises(ConfigError, match="'task' parameter must be one of classification, multilabel, regression"):
        FitConfig(task="regresion")
    cfg, note = resolve_task(FitConfig(), [str(i / 7) for i in range(50)])
    assert cfg.task == "regression" and note.startswith("task: regression (detected: 50 numeric labels")
    cfg, note = resolve_task(FitConfig(task="classification"), [str(i / 7) for i in range(50)])
    assert cfg.task == "classification" and note == ""
    with pytest.raises(ConfigError, match="detected as numeric targets; pass --task classification"):
        resolve_task(FitConfig(labels_per_class=5), [str(i / 7) for i in range(50)])


def test_regression_validation_split_is_random_and_seeded():
    ex = Examples("text", [f"t{i}" for i in range(40)], [str(i / 3) for i in range(40)], "d")
    train, val = held_out_split(ex, 0.25, 0, "regression")
    assert (len(train), len(val)) == (30, 10)
    assert held_out_split(ex, 0.25, 0, "regression")[1].inputs == val.inputs
    assert set(train.inputs).isdisjoint(val.inputs)


def test_ridge_probe_head_recovers_a_linear_target_in_units():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 6)).astype(np.float32)
    y = 100 + 20 * x[:, 0] - 5 * x[:, 3] + rng.normal(scale=0.1, size=120)
    ctx = StrategyContext(n_classes=1, seed=0, features=lambda s: (x[:80], y[:80]) if s == "train" else (x[80:], y[80:]))
    head = RegressionTask().head(6)
    head.set_target_scale(float(y[:80].mean()), float(y[:80].std()))
    info = fit_probe_head(head, ctx, LinearProbeConfig())
    assert info["val_r2"] > 0.99
    with torch.inference_mode():
        predicted = head(torch.from_numpy(x[80:]))[:, 0].numpy()
    assert r2_score(y[80:], predicted) == pytest.approx(info["val_r2"], abs=1e-4)


def test_distillation_target_is_the_teachers_standardised_prediction_and_unlabeled_rows_are_nan():
    """Soft term: MSE between standardised student and teacher predictions (T has no meaning for a number);
    --unlabeled-data rows encode to NaN and carry no hard label."""
    task, head = RegressionTask(), RegressionHead(4)
    head.set_target_scale(10.0, 2.0)
    student, teacher = torch.tensor([[10.0], [14.0]]), torch.tensor([[12.0], [14.0]])
    assert task.distill_loss(student, teacher, 4.0, head).item() == pytest.approx(((1.0 - 0.0) ** 2 + 0) / 2)
    assert task.distill_loss(teacher, teacher, 4.0, head).item() == 0.0
    assert math.isnan(task.missing_target("a text", 1))
    assert task.labeled(torch.tensor([1.5, float("nan")])).tolist() == [True, False]
    check_options(FitConfig(task="regression", strategy="distill", teacher="t", unlabeled_data="u.csv"))
    check_options(FitConfig(task="regression", init_from="b"))


def test_huber_head_loss_is_linear_beyond_delta_on_the_standardised_target(task):
    """--loss huber: torch's Huber on (t - mean) / std; residuals of 1, 1, 0 and 3 target stds."""
    outputs, targets = torch.full((4, 1), 50.0), torch.tensor([40.0, 60.0, 50.0, 80.0])
    for delta, expected in ((1.0, (0.5 + 0.5 + 0 + (3 - 0.5)) / 4), (2.0, (0.5 + 0.5 + 0 + 2 * (3 - 1)) / 4)):
        head = task.head(8, 1, loss="huber", huber_delta=delta)
        head.set_target_scale(50.0, 10.0)
        assert head.loss(outputs, targets).item() == pytest.approx(expected)
    mse = task.head(8, 1, loss=None)  # None: the default, MSE
    mse.set_target_scale(50.0, 10.0)
    assert mse.loss(outputs, targets).item() == pytest.approx((1 + 1 + 0 + 9) / 4)


@pytest.mark.parametrize("task_name, own", [("classification", "classification trains with cross-entropy"),
                                            ("multilabel", "multi-label trains with per-label sigmoid/BCE"),
                                            ("tokens", "token classification trains with cross-entropy per token")])
def test_loss_option_is_regressions_alone(task_name, own):
    with pytest.raises(ConfigError, match=rf"--loss \(mse \| huber\) chooses regression's loss, and {own}; drop it"):
        check_options(FitConfig.from_options(task=task_name, loss="huber"))
    check_options(FitConfig.from_options(task=task_name))


def test_huber_is_refused_with_the_closed_form_ridge_probe_and_its_delta_without_huber():
    with pytest.raises(ConfigError, match="linear-probe strategy fits its ridge head in closed form, which minimises "
                                          "squared error; use the head strategy"):
        check_options(FitConfig.from_options(task="regression", strategy="linear-probe", loss="huber"))
    for strategy in ("head", "lp-ft", "finetune"):  # trained by the loop (lp-ft: after its ridge start)
        check_options(FitConfig.from_options(task="regression", strategy=strategy, loss="huber", huber_delta=0.5))
    check_options(FitConfig.from_options(task="regression", strategy="linear-probe", loss="mse"))
    with pytest.raises(ConfigError, match=r"'huber_delta' parameter of TrainConfig applies only with loss='huber'"):
        FitConfig.from_options(task="regression", huber_delta=0.5)
    with pytest.raises(ConfigError, match=r"'loss' parameter of TrainConfig must be None or one of \('mse', 'huber'\)"):
        FitConfig.from_options(loss="l1")
    for delta in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ConfigError, match=f"'huber_delta' parameter of TrainConfig must be a finite float > 0. "
                                              f"Got {delta!r}"):
            FitConfig.from_options(loss="huber", huber_delta=delta)


@pytest.mark.parametrize("options, python, cli", [
    ({"strategy": "linear-probe", "loss": "huber"}, "loss='huber' trains the head", "--loss huber trains the head"),
    ({"huber_delta": 0.2}, "applies only with loss='huber'", "--huber-delta applies only with --loss huber. Got "
                                                             "--huber-delta 0.2 without it"),
    ({"loss": "hubber"}, "'loss' parameter of TrainConfig", "--loss must be mse or huber. Got 'hubber'"),
    ({"loss": "huber", "huber_delta": math.inf}, "finite float > 0", "--huber-delta must be a finite number > 0"),
])
def test_loss_messages_speak_the_python_names_and_the_command_lines_flags(options, python, cli):
    with pytest.raises(ConfigError) as caught:
        check_options(FitConfig.from_options(task="regression", **options))
    assert python in str(caught.value) and "--" not in str(caught.value)
    assert cli in caught.value.cli and "=" not in caught.value.cli


def test_regressions_loss_is_written_out_and_other_tasks_keep_none():
    assert with_task_loss(FitConfig(task="regression")).train.loss == "mse"
    assert with_task_loss(FitConfig.from_options(task="regression", loss="huber")).train.loss == "huber"
    assert with_task_loss(FitConfig(task="classification")).train.loss is None
