"""Re-fine-tuning a bundle on new data (``fit --init-from BUNDLE``): the starting model, the label set, and the
old-vs-new comparison that makes forgetting visible.

Top-level module (imports transferkit.config, task_choice, core, data, backbones, export and train; api calls it,
it never imports api). The bundle's backbone — architecture, weights and preprocessing — and head are the start,
for every task; the bundle must be of the fit's task (regression: the same target, and the bundle's target
mean/std stay, so its head keeps its meaning). Classes (multi-label: labels; tokens: entity types, as B-/I- tags)
the new data adds get fresh head rows after the old ones — zero for classification, the task's fresh-head init
otherwise — so old indices keep their meaning. After training, both models are scored on the new test split and
on the old run's test split (found again from the bundle's manifest when still readable) with the task's headline
metrics in the merged label space (an old model never predicts what it lacks): a drop of the new model's first
headline metric (accuracy, micro-F1, R², entity F1) on old data is forgetting, and it is reported.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from transferkit import task_choice
from transferkit.backbones.base import state_dict_sha256
from transferkit.config import FitConfig
from transferkit.core.errors import BundleError, ConfigError, DataError
from transferkit.data.examples import Examples, a_modality
from transferkit.data.loaders import make_loader
from transferkit.data.preprocess import PreprocessSpec
from transferkit.data.stream import inference_batches
from transferkit.data.targets import NumericTargets
from transferkit.export.bundle import WEIGHTS, Bundle, load_bundle
from transferkit.export.recorded import recorded_split
from transferkit.tasks import Task
from transferkit.tasks.model import TransferModel
from transferkit.train.config import TrainConfig
from transferkit.train.inference import predict_logits


@dataclass
class InitFrom:
    bundle: Bundle
    backbone_sha256: str  # of the weights training starts from (the new bundle's "pretrained_sha256")

    @property
    def old_labels(self) -> tuple[str, ...]:
        return tuple(self.bundle.label_map.names)

    def labels(self, new: Any, cfg: FitConfig) -> Any:
        """The old classes (labels, tags) in their old order, then those only the new data has; regression: the
        bundle's recorded targets (its mean/std). ConfigError for a bundle of another task or target."""
        task_choice.check_bundle_task(self.bundle.manifest, cfg, f"--init-from {self.bundle.path}")
        if isinstance(new, NumericTargets):
            return NumericTargets(**self.bundle.manifest.get("targets", {}))
        return type(new)(self.old_labels + tuple(n for n in new.names if n not in self.old_labels))

    def model(self, labels: Any, train: TrainConfig) -> TransferModel:
        """The bundle's backbone and head; head rows for added classes keep the fresh head's init (zero for
        classification: uniform among themselves); ``train``: this fit's head settings (label smoothing, loss)."""
        backbone, old = self.bundle.model.backbone, self.bundle.model.head
        backbone.preprocessing = self.bundle.preprocessing  # the architecture default is not what it was fitted at
        backbone.weights_sha256 = self.backbone_sha256  # the features cache is keyed on these weights
        task = self.bundle.model.task
        head = task.head(backbone.feature_dim, len(labels), label_smoothing=train.label_smoothing, names=labels.names,
                         loss=train.loss, huber_delta=train.huber_delta)
        if hasattr(old, "linear") and hasattr(head, "linear"):  # a prototype head (protonet) has no rows to copy:
            with torch.no_grad():  # the new fit starts from its backbone (protonet recomputes prototypes from it)
                head.linear.weight[: len(self.old_labels)] = old.linear.weight
                head.linear.bias[: len(self.old_labels)] = old.linear.bias
        model = TransferModel(backbone, head, task)
        return model.to(memory_format=torch.channels_last) if backbone.modality == "image" else model

    def record(self, labels: Any) -> dict[str, Any]:
        """What the new bundle's manifest says about where it started."""
        return {"bundle": str(self.bundle.path.resolve()), "task": self.bundle.model.task.name,
                "labels": list(self.old_labels),
                "added_labels": list(labels.names[len(self.old_labels):]),
                "backbone_sha256": self.backbone_sha256,
                "pretrained_sha256": self.bundle.manifest["backbone"].get("pretrained_sha256")}

    def compare(self, new_model: TransferModel, labels: Any, new_test: tuple[str, Examples], precision: str,
                ) -> dict[str, Any]:
        """metrics.json's ``init_from``: old and new model on the new and on the old test data."""
        new_split, new_examples = new_test
        old, where = recorded_split(self.bundle.manifest, self.bundle.path)
        out: dict[str, Any] = {**self.record(labels), "metric": new_model.task.metric_names[0],
                               "new_test": {"split": new_split, "source": new_examples.source}}
        old_model, spec = load_bundle(self.bundle.path).model, self.bundle.preprocessing  # untouched by training
        scored = _Scoring(new_model.task, labels, spec, precision)
        out["old_model_on_new_test"] = scored(old_model, self.old_labels, new_examples)
        out["new_model_on_new_test"] = scored(new_model, labels.names, new_examples)
        if old is None or old.examples.modality != new_examples.modality or old.examples.is_tokens != \
                new_examples.is_tokens:
            out["old_test"] = {"unavailable": where}
            return out
        out["old_test"] = {"split": old.split, "source": where}
        out["old_model_on_old_test"] = scored(old_model, self.old_labels, old.examples)
        out["new_model_on_old_test"] = scored(new_model, labels.names, old.examples)
        return out


def start_from(folder: str | Path, model_name: str, image_size: int | None, modality: str, strategy,
               clip_seconds: float | None = None) -> InitFrom:
    """Load the bundle to continue from, refusing combinations that would not continue it (another model, image
    size or clip length: the bundle's preprocessing and architecture are the start)."""
    folder = Path(folder)
    if not strategy.uses_pretrained_weights:
        raise ConfigError(f"--init-from continues from {folder}'s weights but --strategy {strategy.name} starts from "
                          "random ones; drop one of the two.")
    if not (folder / WEIGHTS).is_file() and folder.is_dir():
        raise BundleError(f"--init-from {folder} has no {WEIGHTS}: pass the PyTorch bundle/ folder of a run "
                          "(an ONNX export cannot be trained further).")
    bundle = load_bundle(folder)
    bb = bundle.manifest["backbone"]
    if bundle.preprocessing.modality != modality:
        raise DataError(f"--init-from {folder} is {a_modality(bundle.preprocessing.modality)} model but the data "
                        f"is {modality}.")
    if model_name not in ("auto", bb["name"]):
        raise ConfigError(f"--init-from {folder} holds a {bb['name']} model; drop --model {model_name} (the "
                          "architecture comes from the bundle).")
    if image_size is not None and image_size != bundle.preprocessing.image_size:
        raise ConfigError(f"--init-from {folder} was fitted at {bundle.preprocessing.image_size} px; drop "
                          f"--image-size {image_size} (the preprocessing comes from the bundle).")
    if clip_seconds is not None and modality == "audio" and clip_seconds != bundle.preprocessing.clip_seconds:
        raise ConfigError(f"--init-from {folder} was fitted on {bundle.preprocessing.clip_seconds:g}-second clips; "
                          f"drop --clip-seconds {clip_seconds:g} (the clip length comes from the bundle: Whisper's "
                          "encoder positions were built for it).")
    return InitFrom(bundle, state_dict_sha256(bundle.model.backbone.model))


@dataclass
class _Scoring:
    """Scores a model on labeled examples with ``task``'s headline metrics, in the merged label space ``labels``."""

    task: Task
    labels: Any
    spec: PreprocessSpec
    precision: str

    def __call__(self, model: TransferModel, model_labels: Sequence[str], examples: Examples) -> dict[str, Any]:
        """Examples whose labels the merged space lacks are left out; an old model's outputs are placed in the
        merged space with its missing classes at -1e9 (classification and tokens: never predicted; multi-label:
        never above threshold)."""
        examples = examples.subset([i for i, y in enumerate(examples.labels or []) if self._known(y, examples.source)])
        outputs, targets = self._outputs(model, examples)
        if not len(targets):
            return {"n": 0}
        merged = np.full((len(outputs), len(self.labels)), -1e9, np.float32)
        merged[:, [self.labels.names.index(name) for name in model_labels]] = outputs
        scores = self.task.metrics(targets, self.task.decode(merged))
        n = len(examples) if examples.is_tokens else len(targets)  # sentences, or the rows that could be read
        return {**{k: round(float(v), 4) for k, v in scores.items()}, "n": n}

    def _known(self, label: Any, source: str) -> bool:
        try:
            self.labels.encode([label], source)
        except DataError:
            return False
        return True

    def _outputs(self, model: TransferModel, examples: Examples) -> tuple[np.ndarray, np.ndarray]:
        if examples.is_tokens:  # sentences (text is always readable): the token loader, targets per word
            outputs, targets = predict_logits(model, make_loader(examples, self.spec, self.labels, 64), self.precision)
            return outputs, (targets if targets is not None else np.zeros((0, 2), np.int64))
        outputs, targets = [], []
        for batch in inference_batches(examples, self.spec, 64):  # unreadable images are left out
            if batch.inputs is None:
                continue
            outputs.append(predict_logits(model, [batch.inputs], self.precision)[0])
            targets += self.labels.encode([examples.labels[i] for i in batch.positions], examples.source)
        return (np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)), np.array(targets)


_NOUNS = {"classification": "classes", "multilabel": "labels", "tokens": "tags", "regression": "target"}


def init_from_notes(entry: dict[str, Any] | None) -> list[str]:
    """Report lines: where the run started, and old vs new headline metric (accuracy for classification) on both
    test sets, forgetting named."""
    if not entry:
        return []
    noun, metric = _NOUNS.get(entry.get("task", "classification"), "labels"), entry.get("metric", "accuracy")
    added = f"; added {noun}: {', '.join(entry['added_labels'])}" if entry["added_labels"] else ""
    notes = [f"Continued from the bundle {entry['bundle']} ({noun} {', '.join(entry['labels'])}{added})."]
    for data, split in (("new", entry["new_test"]), ("old", entry["old_test"])):
        old, new = entry.get(f"old_model_on_{data}_test"), entry.get(f"new_model_on_{data}_test")
        if not old or not new or metric not in old:
            notes.append(f"The old test data could not be scored: {split.get('unavailable', 'no examples')}.")
            continue
        delta = 100 * (new[metric] - old[metric])
        verdict = " — forgetting: the new model is worse on the old data" if data == "old" and delta < 0 else ""
        named = "" if metric == "accuracy" else f"{metric} "
        notes.append(f"On the {data} test data ({split['split']} of {split['source']}, n={new['n']}): old model "
                     f"{named}{old[metric]:.4f}, new model {new[metric]:.4f} ({delta:+.1f} points){verdict}.")
    return notes
