"""The multi-label task: head contract, threshold tuning and folding, metrics against scikit-learn, label-set
reading (JSON list, --label-sep, --label-columns), detection and the options it refuses."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, f1_score, hamming_loss

from transferkit.config import FitConfig
from transferkit.core.errors import ConfigError, DataError
from transferkit.data.doctor import DoctorConfig, diagnose
from transferkit.data.examples import DataSplits, Examples
from transferkit.data.multilabels import MultiLabelMap
from transferkit.data.sources import TextColumns, load_source
from transferkit.evaluate.metrics import REPORTS
from transferkit.task_choice import check_options, resolve_task, target_map, text_columns
from transferkit.tasks import get_task
from transferkit.tasks.multilabel import tune_thresholds


def test_head_outputs_one_logit_per_label_and_bce_loss_falls():
    task = get_task("multilabel")
    torch.manual_seed(0)
    x = torch.randn(64, 8)
    y = torch.stack([x[:, 0] > 0, x[:, 1] > 0, x[:, 0] + x[:, 1] > 0], 1).float()
    head = task.head(8, 3)
    assert head(x).shape == (64, 3)
    opt = torch.optim.SGD(head.parameters(), lr=0.5)
    first = head.loss(head(x), y).item()
    for _ in range(50):
        opt.zero_grad()
        head.loss(head(x), y).backward()
        opt.step()
    assert head.loss(head(x), y).item() < first / 2
    assert task.loss(head(x), y).item() == pytest.approx(head.loss(head(x), y).item(), rel=1e-5)  # no offset yet
    assert torch.equal(task.decode(head(x)), (head(x) > 0).long())


def test_tuned_thresholds_fold_into_the_head_and_decide_at_half():
    scores = np.array([[0.30, 0.9], [0.25, 0.8], [0.10, 0.7], [0.05, 0.6]])
    targets = np.array([[1, 0], [1, 0], [0, 0], [0, 0]])
    t = tune_thresholds(scores, targets)
    assert 0.1 < t[0] <= 0.25 and t[1] == 0.5  # no positive of label 2 in validation: the default
    head = get_task("multilabel").head(2, 2)
    with torch.no_grad():
        head.linear.weight.copy_(torch.eye(2))
        head.linear.bias.zero_()
    logits = torch.logit(torch.tensor(scores, dtype=torch.float32))
    head.set_thresholds(t)
    with torch.no_grad():
        shifted = head(logits)
    task = get_task("multilabel")
    expected = (scores > t).astype(np.int64)
    assert np.array_equal(task.decode(shifted).numpy(), expected)
    assert np.array_equal(task.decode_scores(task.probabilities(shifted).numpy()), expected)
    assert head.thresholds() == pytest.approx(list(t), abs=1e-4)


def test_report_agrees_with_scikit_learn():
    rng = np.random.default_rng(0)
    truth = rng.random((40, 4)) > 0.6
    truth[:, 3] = False  # a label without positives: left out of mAP
    scores = np.clip(truth * 0.5 + rng.random((40, 4)) * 0.6, 0, 1)
    predicted = scores > 0.5
    report = REPORTS["multilabel"](truth.astype(int), predicted.astype(int), ["a", "b", "c", "d"], scores,
                                   thresholds=[0.5] * 4)
    assert report["micro_f1"] == pytest.approx(f1_score(truth, predicted, average="micro"))
    assert report["macro_f1"] == pytest.approx(f1_score(truth, predicted, average="macro", zero_division=0))
    assert report["samples_f1"] == pytest.approx(f1_score(truth, predicted, average="samples", zero_division=0))
    assert report["hamming_loss"] == pytest.approx(hamming_loss(truth, predicted))
    assert report["subset_accuracy"] == pytest.approx(np.mean((truth == predicted).all(1)))
    assert report["map"] == pytest.approx(np.mean([average_precision_score(truth[:, j], scores[:, j])
                                                   for j in range(3)]))
    assert [r["label"] for r in report["per_label"]] == ["a", "b", "c", "d"] and report["n"] == 40
    assert report["per_label"][0]["threshold"] == 0.5


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_label_sets_from_json_lists_separated_cells_and_indicator_columns(tmp_path: Path):
    jsonl = _write(tmp_path / "a.jsonl", '{"text": "x", "labels": ["joy", "fear", "joy"]}\n'
                                         '{"text": "y", "labels": []}\n')
    assert load_source(jsonl, TextColumns(label="labels")).train.labels == [("fear", "joy"), ()]
    sep = _write(tmp_path / "b.csv", "text,label\nx,joy|Cafe\u0301\ny,\n")
    cfg = FitConfig(task="multilabel")
    assert load_source(sep, text_columns(cfg)).train.labels == [("Café", "joy"), ()]  # NFC, sorted
    semi = _write(tmp_path / "c.csv", "text,label\nx,a;b\n")
    assert load_source(semi, TextColumns(label_sep=";")).train.labels == [("a", "b")]
    cols = _write(tmp_path / "d.csv", "text,joy,fear\nx,1,0\ny,1,1\nz,0,0\n")
    got = load_source(cols, text_columns(FitConfig(label_columns="joy,fear"))).train.labels
    assert got == [("joy",), ("fear", "joy"), ()]
    bad = _write(tmp_path / "e.csv", "text,joy,fear\nx,1,maybe\n")
    with pytest.raises(DataError, match=r"e.csv:2: the 'fear' value \"maybe\" is not 0 or 1"):
        load_source(bad, TextColumns(label_columns=("joy", "fear")))
    with pytest.raises(DataError, match=r"no 'anger' column .*Name the right column with --label-columns"):
        load_source(cols, TextColumns(label_columns=("joy", "anger")))
    jsonl_cols = _write(tmp_path / "f.jsonl", '{"text": "x", "joy": 1}\n')
    with pytest.raises(DataError, match="--label-columns"):
        load_source(jsonl_cols, TextColumns(label_columns=("joy", "anger")))


def test_label_map_encodes_rows_and_names_unknown_labels():
    encoder = target_map("multilabel", [("a",), ("b", "c"), ()], "train.jsonl")
    assert isinstance(encoder, MultiLabelMap) and encoder.names == ("a", "b", "c")
    assert encoder.encode([("a", "c"), ()]) == [[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    with pytest.raises(DataError, match="label\\(s\\) 'z' are not among the model's labels"):
        encoder.encode([("z",)], "test.jsonl")


def test_detection_says_so_and_mismatched_task_is_refused():
    cfg, note = resolve_task(FitConfig(), [("a",), ("a", "b")])
    assert cfg.task == "multilabel" and note.startswith("task: multilabel (detected: 2 rows with a list of labels")
    with pytest.raises(ConfigError, match="--task multilabel needs a set of labels per row"):
        resolve_task(FitConfig(task="multilabel"), ["a", "b"])
    with pytest.raises(ConfigError, match="--task regression needs one label per row"):
        resolve_task(FitConfig(task="regression"), [("a",), ("b",)])


@pytest.mark.parametrize("options, words", [
    ({"labels_per_class": 4}, "--labels-per-class"),
    ({"label_smoothing": 0.1}, "--label-smoothing"),
    ({"mixup": 0.2}, "--mixup/--cutmix"),
    ({"sampler": "balanced"}, "--sampler balanced"),
    ({"class_weight": "balanced"}, "--class-weight balanced"),
])
def test_options_multilabel_refuses_say_why(options, words):
    with pytest.raises(ConfigError, match=words + ".*multi"):
        check_options(FitConfig.from_options(task="multilabel", **options))


def test_doctor_warns_on_an_empty_row_and_stops_on_an_unseen_label(tmp_path: Path):
    train = Examples("text", ["a", "b", "c", "d"], [("x",), ("y",), (), ("x", "y")], "train.jsonl",
                     lines=[1, 2, 3, 4])
    test = Examples("text", ["e"], [("z",)], "test.jsonl", lines=[1])
    report = diagnose(DataSplits(train, train, test), DoctorConfig(task="multilabel"))
    kinds = {f.kind: f for f in report.findings}
    assert kinds["no-labels"].severity != "fatal" and kinds["no-labels"].line == 3
    assert kinds["unknown-label"].severity == "fatal" and "'z'" in kinds["unknown-label"].message
    assert json.dumps(report.to_dict())  # tuples serialise


def test_distillation_targets_are_the_teachers_per_label_probabilities_at_temperature():
    """Soft term: T^2 * BCE(student / T, sigmoid(teacher / T)); its gradient vanishes where the student's logits
    equal the teacher's; a teacher's outputs are read before its thresholds; unlabeled rows are NaN rows."""
    task, t = get_task("multilabel"), 2.0
    student = torch.tensor([[0.5, -1.0, 2.0]], requires_grad=True)
    teacher = torch.tensor([[1.5, -3.0, 2.0]])
    q = torch.sigmoid(teacher / t)
    p = torch.sigmoid(student.detach() / t)
    expected = -(q * p.log() + (1 - q) * (1 - p).log()).mean() * t * t
    loss = task.distill_loss(student, teacher, t, None)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert student.grad[0, 2].item() == pytest.approx(0.0, abs=1e-7) and student.grad[0, 0].item() < 0
    head = task.head(4, 3)
    head.set_thresholds(np.array([0.3, 0.5, 0.8]))
    raw = torch.tensor([[0.2, 0.0, -1.0]])
    torch.testing.assert_close(task.raw_outputs(head, raw - head.threshold_logit), raw)  # forward's offset undone
    assert np.isnan(task.missing_target("text", 3)).all() and len(task.missing_target("text", 3)) == 3
    targets = torch.tensor([[1.0, 0.0, 1.0], [float("nan")] * 3])
    assert task.labeled(targets).tolist() == [True, False]
    check_options(FitConfig(task="multilabel", strategy="distill", teacher="t", unlabeled_data="u.jsonl"))
    check_options(FitConfig(task="multilabel", init_from="b"))
