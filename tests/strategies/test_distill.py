"""Knowledge distillation: the KD loss, the teacher adapter, the unlabeled stream, and a seeded gain over
training the same student on the hard labels alone."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.conftest import bbc_texts, write_text_csv
from transferkit import api
from transferkit.core.errors import ConfigError
from transferkit.data.labels import NO_LABEL
from transferkit.data.preprocess import PreprocessSpec, image_transform
from transferkit.strategies import StrategyContext, build_strategy
from transferkit.strategies.distill import Teacher, kd_loss
from transferkit.tasks import ClassificationHead, ClassificationTask

IMAGE = PreprocessSpec(modality="image", image_size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
IMAGENET = PreprocessSpec(modality="image", image_size=32)


def test_kd_loss_is_the_t_squared_scaled_kl_divergence():
    student, teacher = torch.randn(5, 4), torch.randn(5, 4)
    t = 3.0
    p, q = (student / t).softmax(-1), (teacher / t).softmax(-1)
    expected = (q * (q.log() - p.log())).sum(-1).mean() * t * t
    assert kd_loss(student, teacher, t).item() == pytest.approx(expected.item(), rel=1e-5)
    assert kd_loss(teacher, teacher, t).item() == pytest.approx(0.0, abs=1e-6)


class Echo(nn.Module):
    """A stand-in teacher: returns fixed logits per batch and records what it was given."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits, self.seen = logits, None
        self.head = nn.Identity()

    def forward(self, batch: dict) -> torch.Tensor:
        self.seen = batch
        return self.logits


def test_teacher_answers_in_the_student_label_order():
    logits = torch.tensor([[1.0, 2.0, 3.0]])
    teacher = Teacher(Echo(logits), ["cat", "dog", "fox"], ["fox", "cat"], IMAGE, IMAGE)
    out = teacher({"pixel_values": torch.zeros(1, 3, 32, 32)})
    assert out.tolist() == [[3.0, 1.0]]


def test_teacher_without_a_student_label_is_refused():
    with pytest.raises(ConfigError, match="owl"):
        Teacher(Echo(torch.zeros(1, 2)), ["cat", "dog"], ["cat", "owl"], IMAGE, IMAGE)


def test_teacher_of_another_modality_is_refused():
    with pytest.raises(ConfigError, match="text"):
        Teacher(Echo(torch.zeros(1, 2)), ["a", "b"], ["a", "b"], IMAGE, PreprocessSpec(modality="text"))


def test_teacher_sees_pixels_in_its_own_normalisation():
    """The student's tensor, mapped to the teacher's mean/std, equals the teacher's own preprocessing."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    from PIL import Image

    as_student = image_transform(IMAGE)(Image.fromarray(image)).unsqueeze(0)
    as_teacher = image_transform(IMAGENET)(Image.fromarray(image)).unsqueeze(0)
    echo = Echo(torch.zeros(1, 2))
    Teacher(echo, ["a", "b"], ["a", "b"], IMAGENET, IMAGE)({"pixel_values": as_student})
    torch.testing.assert_close(echo.seen["pixel_values"], as_teacher, atol=1e-5, rtol=0)


class Fixed(nn.Module):
    """A 'model' whose logits are given: enough to check what the distillation loss adds up."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = nn.Parameter(logits.clone())
        self.head = ClassificationHead(2, logits.shape[1])
        self.task = ClassificationTask()  # the distillation loss is the task's (KD for classification)

    def forward(self, batch: dict) -> torch.Tensor:
        return self.logits


def test_unlabeled_examples_get_the_soft_term_only():
    """Rows labeled NO_LABEL (from --unlabeled-data) add no hard-label loss; labeled rows add (1 - alpha) CE."""
    student, teacher = torch.randn(4, 3), torch.randn(4, 3)
    strategy = build_strategy("distill", {"alpha": 0.7, "temperature": 2.0})
    ctx = StrategyContext(n_classes=3, seed=0, teacher=Echo(teacher))
    labels = torch.tensor([2, NO_LABEL, 0, NO_LABEL])
    loss = strategy.training_step(Fixed(student), {"labels": labels}, ctx)
    expected = 0.7 * kd_loss(student, teacher, 2.0) + 0.3 * F.cross_entropy(student[[0, 2]], labels[[0, 2]])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    unlabeled_only = strategy.training_step(Fixed(student), {"labels": torch.full((4,), NO_LABEL)}, ctx)
    assert unlabeled_only.item() == pytest.approx(0.7 * kd_loss(student, teacher, 2.0).item(), rel=1e-5)


def test_distill_needs_a_teacher_and_only_distill_takes_one(text_csv: Path, tmp_path: Path):
    with pytest.raises(ConfigError, match="--teacher"):
        api.fit(str(text_csv), model="minilm-l3", strategy="distill", out=str(tmp_path / "a"), progress=False)
    with pytest.raises(ConfigError, match="only used by"):
        api.fit(str(text_csv), strategy="finetune", teacher=str(tmp_path), out=str(tmp_path / "b"), progress=False)
    with pytest.raises(ConfigError, match="unlabeled-data"):
        api.fit(str(text_csv), strategy="finetune", unlabeled_data=str(text_csv), out=str(tmp_path / "c"),
                progress=False)


@pytest.fixture(scope="module")
def kd_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """BBC News, 4 topics: a teacher set (12/topic), the student's labels (2/topic), unlabeled texts (16/topic)
    and a test set (12/topic), all disjoint."""
    root = tmp_path_factory.mktemp("kd")
    topics = ("business", "politics", "sports", "tech")
    parts = {"teacher": (12, 0), "labeled": (2, 12), "unlabeled": (16, 14), "test": (12, 30)}
    out = {}
    for name, (per_class, offset) in parts.items():
        texts, labels = bbc_texts(per_class=per_class, topics=topics, offset=offset)
        out[name] = write_text_csv(root / f"{name}.csv", texts, labels if name != "unlabeled" else None)
    return out


@pytest.mark.slow
def test_distillation_beats_hard_label_training_of_the_same_student(kd_data: dict[str, Path], tmp_path: Path):
    """Seed 0: minilm-l3 with 2 labels per topic (8 texts), 4 epochs. Fine-tuned on the hard labels alone it
    reaches 0.81 test accuracy; distilled from a MiniLM linear-probe teacher (0.98) with 64 unlabeled texts
    added to its training set, 0.96 (4 topics, 48 test texts). The test asks for a 10-point gain: the
    measured gain is 15 points, and the student keeps 98 % of the teacher's accuracy."""
    common = {"model": "minilm-l3", "test_data": str(kd_data["test"]), "epochs": 4, "seed": 0, "progress": False,
              "baseline": False, "val_data": str(kd_data["labeled"])}
    teacher = api.fit(str(kd_data["teacher"]), model="minilm", strategy="linear-probe", out=str(tmp_path / "teacher"),
                      test_data=str(kd_data["test"]), progress=False, baseline=False)
    hard = api.fit(str(kd_data["labeled"]), strategy="finetune", out=str(tmp_path / "hard"), **common)
    soft = api.fit(str(kd_data["labeled"]), strategy="distill", teacher=str(teacher.bundle_dir),
                   unlabeled_data=str(kd_data["unlabeled"]), out=str(tmp_path / "soft"), **common)
    m = json.loads((soft.run_dir / "metrics.json").read_text())
    hard_acc, soft_acc = hard.metrics["test"]["accuracy"], soft.metrics["test"]["accuracy"]
    assert soft_acc >= hard_acc + 0.10, f"distilled {soft_acc} vs hard-label {hard_acc}"
    assert m["n_unlabeled"] == 64 and m["n_train_used"] == 8
    assert m["teacher_accuracy"] == pytest.approx(teacher.metrics["test"]["accuracy"])
    assert m["speedup_vs_teacher"] > 1.0 and math.isfinite(m["speedup_vs_teacher"])
    report = (soft.run_dir / "report.md").read_text()
    assert "Student vs teacher" in report


@pytest.mark.slow
def test_image_student_distils_at_the_teacher_image_size(digits_folder: Path, tmp_path: Path):
    """efficientnet_lite0-slim from a Lite0 teacher: the student reads the teacher's 32 px unless told otherwise,
    and is measured faster than its teacher on the same batches."""
    teacher = api.fit(str(digits_folder), model="efficientnet_lite0", strategy="linear-probe", image_size=32,
                      out=str(tmp_path / "teacher"), progress=False, baseline=False)
    student = api.fit(str(digits_folder), model="efficientnet_lite0-slim", strategy="distill", epochs=1,
                      teacher=str(teacher.bundle_dir), out=str(tmp_path / "student"), progress=False, baseline=False)
    manifest = json.loads((student.bundle_dir / "transferkit.json").read_text())
    assert manifest["preprocessing"]["image_size"] == 32
    assert manifest["backbone"]["architecture"]["stage_depths"] == [1] * 7
    metrics = json.loads((student.run_dir / "metrics.json").read_text())
    assert metrics["speedup_vs_teacher"] > 1.0
    assert metrics["teacher_accuracy"] == teacher.metrics["val"]["accuracy"]  # the same val split, same inputs
    reloaded = api.evaluate(student.bundle_dir, str(digits_folder), split="train", progress=False)
    assert reloaded["n"] == 30
