"""Distillation for every task (transferkit/distillation.py + each task's soft targets): a tiny teacher bundle of
the task (a MiniLM linear probe) distils into minilm-l3 with --unlabeled-data; on the unlabeled inputs the
distilled student's outputs sit closer to the teacher's than those of the same student fine-tuned on the hard
labels alone (same seed, same epochs). A teacher of another task, target or label set is refused, naming both."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import transferkit
from tests.test_multilabel_end_to_end import multilabel_texts
from tests.test_regression_end_to_end import regression_texts, write_rows
from tests.test_tokens_end_to_end import sentences, write_conll
from transferkit.core.errors import ConfigError
from transferkit.data.loaders import make_loader
from transferkit.data.sources import TextColumns, load_source
from transferkit.export.bundle import load_bundle
from transferkit.train.inference import predict_logits

STUDENT = {"model": "minilm-l3", "epochs": 2, "seed": 0, "lr": 3e-3, "progress": False, "baseline": False}


def _jsonl(path: Path, rows: list[tuple[str, list[str]]], labeled: bool = True) -> Path:
    path.write_text("".join(json.dumps({"text": t, **({"labels": y} if labeled else {})}) + "\n" for t, y in rows))
    return path


def _regression(root: Path) -> dict[str, Path]:
    rows = regression_texts(64, seed=5)
    unlabeled = root / "unlabeled.csv"
    with open(unlabeled, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([["text"], *[[t] for t, _ in rows[40:]]])
    return {"teacher": write_rows(root / "teacher.csv", regression_texts(48)),
            "labeled": write_rows(root / "labeled.csv", rows[:16]), "unlabeled": unlabeled}


def _multilabel(root: Path) -> dict[str, Path]:
    rows = multilabel_texts(64, seed=5)
    return {"teacher": _jsonl(root / "teacher.jsonl", multilabel_texts(48)),
            "labeled": _jsonl(root / "labeled.jsonl", rows[:16]),
            "unlabeled": _jsonl(root / "unlabeled.jsonl", rows[40:], labeled=False)}


def _tokens(root: Path) -> dict[str, Path]:
    rows = sentences(40, 5)
    unlabeled = root / "unlabeled.conll"
    unlabeled.write_text("\n\n".join("\n".join(w for w, _ in s) for s in rows[16:]) + "\n", encoding="utf-8")
    return {"teacher": write_conll(root / "teacher.conll", sentences(40, 0)),
            "labeled": write_conll(root / "labeled.conll", rows[:8]), "unlabeled": unlabeled}


DATA = {"regression": _regression, "multilabel": _multilabel, "tokens": _tokens}


def _soft_outputs(bundle: Path, inputs) -> np.ndarray:
    """A bundle's scores before any decision offset (multi-label: before its thresholds) on ``inputs``."""
    loaded = load_bundle(bundle)
    outputs, _ = predict_logits(loaded.model, make_loader(inputs, loaded.preprocessing, None, 64), "fp32")
    task, head = loaded.model.task, loaded.model.head
    return task.probabilities(task.raw_outputs(head, torch.from_numpy(outputs))).numpy()


@pytest.fixture(scope="module", params=sorted(DATA))
def setup(request, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp(f"kd-{request.param}")
    files = DATA[request.param](root)
    teacher = transferkit.fit(str(files["teacher"]), model="minilm", strategy="linear-probe", out=str(root / "t"),
                              progress=False, baseline=False)
    return {**files, "task": request.param, "root": root, "teacher": teacher}


@pytest.mark.slow
def test_student_moves_toward_the_teacher_on_unlabeled_inputs(setup):
    root, files = setup["root"], setup
    distilled = transferkit.fit(str(files["labeled"]), strategy="distill", teacher=str(setup["teacher"].bundle_dir),
                                unlabeled_data=str(files["unlabeled"]), out=str(root / "soft"), task=setup["task"],
                                **STUDENT)
    hard = transferkit.fit(str(files["labeled"]), strategy="finetune", out=str(root / "hard"), task=setup["task"],
                           **STUDENT)
    summary = json.loads((distilled.run_dir / "metrics.json").read_text())
    assert summary["task"] == setup["task"] and summary["n_unlabeled"] == 24
    assert any(k.startswith("teacher_") and isinstance(v, float) for k, v in summary.items())
    assert "Distilled from a teacher" in (distilled.run_dir / "report.md").read_text()
    assert all(row["train_loss"] > 0 for row in distilled.history[1:])  # the soft term never vanishes here
    inputs = load_source(str(files["unlabeled"]), TextColumns("text", "label"), labeled=False).train
    teacher = _soft_outputs(setup["teacher"].bundle_dir, inputs)
    gap_soft = np.abs(_soft_outputs(distilled.bundle_dir, inputs) - teacher).mean()
    gap_hard = np.abs(_soft_outputs(hard.bundle_dir, inputs) - teacher).mean()
    assert gap_soft < gap_hard, f"{setup['task']}: distilled {gap_soft:.4f} vs hard-label {gap_hard:.4f} from the teacher"


def test_a_teacher_of_another_task_or_label_set_is_refused(setup, tmp_path: Path):
    """The student's data is the same task with one label fewer (multi-label, tokens) or another target column
    (regression); a classifier teacher is refused for every task."""
    task, files = setup["task"], setup
    if task == "regression":
        renamed = tmp_path / "renamed.csv"
        renamed.write_text(files["labeled"].read_text().replace("text,label", "text,score", 1))
        with pytest.raises(ConfigError, match="target 'label' but this fit's target is 'score'"):
            transferkit.fit(str(renamed), label_column="score", strategy="distill", out=str(tmp_path / "r"),
                            task="regression", teacher=str(setup["teacher"].bundle_dir), **STUDENT)
    elif task == "multilabel":
        fewer = _jsonl(tmp_path / "fewer.jsonl", [(t, [x for x in y if x != "politics"] or ["sport"])
                                                  for t, y in multilabel_texts(16, seed=5)])
        with pytest.raises(ConfigError, match="labels politics, sport, weather; this data's labels are sport, weather"):
            transferkit.fit(str(fewer), strategy="distill", teacher=str(setup["teacher"].bundle_dir),
                            out=str(tmp_path / "r"), **STUDENT)
    else:
        per_only = write_conll(tmp_path / "per.conll", [[(w, t if t != "B-LOC" else "O") for w, t in s]
                                                        for s in sentences(8, 5)])
        with pytest.raises(ConfigError, match="tags O, B-LOC, I-LOC, B-PER, I-PER; this data's tags are O, B-PER"):
            transferkit.fit(str(per_only), strategy="distill", teacher=str(setup["teacher"].bundle_dir),
                            out=str(tmp_path / "r"), **STUDENT)
    classifier = tmp_path / "classes.csv"
    classifier.write_text("text,label\n" + "".join(f"w{i} x,{'ab'[i % 2]}\n" for i in range(12)))
    other = transferkit.fit(str(classifier), model="minilm", strategy="linear-probe", out=str(tmp_path / "c"),
                            progress=False, baseline=False)
    with pytest.raises(ConfigError, match=f"is a classification model but this fit is {task}"):
        transferkit.fit(str(files["labeled"]), strategy="distill", teacher=str(other.bundle_dir),
                        out=str(tmp_path / "s"), task=task, **STUDENT)


def test_audio_teacher_distils_into_the_whisper_student_at_its_clip_length(tone_folder: Path, tmp_path: Path):
    """A whisper-tiny-en linear probe (1.5-second clips) distils into whisper-tiny-en-l2: the student takes the
    teacher's clip length without --clip-seconds, and its bundle reloads and predicts as fit scored it; a student
    that reads raw waveforms (speech-embedding) is refused, naming the one that fits."""
    teacher = transferkit.fit(str(tone_folder), model="whisper-tiny-en", strategy="linear-probe", clip_seconds=1.5,
                              out=str(tmp_path / "teacher"), progress=False, baseline=False)
    student = transferkit.fit(str(tone_folder), strategy="distill", teacher=str(teacher.bundle_dir),
                              out=str(tmp_path / "student"), batch_size=4,
                              **{**STUDENT, "model": "whisper-tiny-en-l2"})
    bundle = load_bundle(student.bundle_dir)
    assert bundle.preprocessing.clip_seconds == 1.5 and bundle.manifest["backbone"]["name"] == "whisper-tiny-en-l2"
    assert len(bundle.model.backbone.model.layers) == 2
    val = transferkit.evaluate(student.bundle_dir, str(tone_folder), split="train", progress=False)
    assert val["n"] == 12  # every clip of the tone folder read through the bundle alone
    with pytest.raises(ConfigError, match=r"reads audio differently from the student model \(a "
                                          r"WhisperFeatureExtractor vs raw waveforms\)"):
        transferkit.fit(str(tone_folder), strategy="distill", teacher=str(teacher.bundle_dir),
                        out=str(tmp_path / "refused"), **{**STUDENT, "model": "speech-embedding"})
