"""The task contract for single-label classification: the numbers transferkit computed before the tasks layer."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from transferkit.core.errors import UnknownNameError
from transferkit.tasks import TASKS, ClassificationHead, ClassificationTask, get_task
from transferkit.tasks.model import TransferModel

NAMES = ("cat", "dog", "fox")


@pytest.fixture
def task() -> ClassificationTask:
    return get_task("classification")


def test_registry_looks_tasks_up_by_manifest_name_with_a_hint():
    assert TASKS["classification"] is ClassificationTask
    with pytest.raises(UnknownNameError, match="Did you mean 'classification'"):
        get_task("clasification")


@pytest.mark.parametrize("k", [2, 3, 10])
def test_a_fresh_head_predicts_uniformly_so_its_loss_is_ln_k(task, k):
    head = task.head(8, k)
    assert isinstance(head, ClassificationHead)
    outputs = head(torch.randn(5, 8))
    targets = torch.tensor([0, 1, 1, 0, k - 1])
    assert task.loss(outputs, targets).item() == pytest.approx(math.log(k), abs=1e-6)
    assert torch.allclose(task.probabilities(outputs), torch.full((5, k), 1 / k))


def test_the_head_keeps_its_training_settings_and_the_task_loss_ignores_them(task):
    head = task.head(4, 3, label_smoothing=0.2)
    head.linear.bias.data = torch.tensor([2.0, 0.0, -1.0])
    outputs, targets = head(torch.zeros(2, 4)), torch.tensor([0, 2])
    assert head.label_smoothing == 0.2
    plain = torch.nn.functional.cross_entropy(outputs, targets)
    assert task.loss(outputs, targets).item() == plain.item()
    assert head.loss(outputs, targets).item() != plain.item()


def test_decode_is_argmax_on_logits_and_probabilities_alike(task):
    logits = np.array([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0], [0.0, 0.0, 5.0]], dtype=np.float32)
    assert task.decode(logits).tolist() == [1, 0, 2]
    assert task.decode(torch.from_numpy(logits)).tolist() == [1, 0, 2]
    scores = task.probabilities(torch.from_numpy(logits)).numpy()
    assert task.decode_scores(scores).tolist() == [1, 0, 2]


def test_selection_score_is_macro_f1_over_the_classes_present(task):
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0])
    expected = f1_score(y_true, y_pred, average="macro")
    assert task.selection_score(y_true, y_pred) == pytest.approx(expected)
    # a class absent from labels and predictions (here 2) does not drag the average down
    assert task.selection_score(np.array([0, 1]), np.array([0, 1])) == 1.0
    assert task.higher_is_better and task.selection_metric == "val_macro_f1"


def test_validation_row_has_the_history_keys_in_order(task):
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0]], dtype=np.float32)
    labels = np.array([0, 1, 1])
    row = task.validation(logits, labels)
    assert list(row) == ["val_loss", "val_accuracy", "val_macro_f1"]
    assert row["val_accuracy"] == pytest.approx(2 / 3)
    assert row["val_loss"] == pytest.approx(torch.nn.functional.cross_entropy(
        torch.from_numpy(logits), torch.from_numpy(labels)).item())
    assert list(task.empty_validation()) == list(row) and set(task.empty_validation().values()) == {None}


def test_improves_on_score_then_breaks_ties_on_loss(task):
    assert task.improves(0.8, 1.0, best_score=0.7, best_loss=0.1)
    assert not task.improves(0.6, 0.01, best_score=0.7, best_loss=0.1)
    assert task.improves(0.7, 0.05, best_score=0.7, best_loss=0.1)
    assert not task.improves(0.7, 0.1, best_score=0.7, best_loss=0.1)


def test_response_rows_carry_label_score_and_a_stable_top_k(task):
    scores = np.array([[0.2, 0.5, 0.3], [0.4, 0.2, 0.4]], dtype=np.float32)
    rows = task.response(scores, NAMES)
    assert rows == [{"label": "dog", "score": pytest.approx(0.5)}, {"label": "cat", "score": pytest.approx(0.4)}]
    ranked = task.response(scores, NAMES, top_k=2, digits=2)
    assert [r["label"] for r in ranked[0]["top_k"]] == ["dog", "fox"]
    assert [r["label"] for r in ranked[1]["top_k"]] == ["cat", "fox"]  # a tie keeps class order
    assert ranked[0]["score"] == 0.5 and ranked[0]["top_k"][1]["score"] == 0.3


def test_transfer_model_carries_the_task_its_head_was_built_for(task):
    class Flat(torch.nn.Module):
        def embed(self, batch):
            return batch["x"]

    model = TransferModel(Flat(), task.head(4, 3))
    assert isinstance(model.task, ClassificationTask)
    batch = {"x": torch.zeros(2, 4), "labels": torch.tensor([0, 2])}
    assert model.loss(batch).item() == pytest.approx(math.log(3))
