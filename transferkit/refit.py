"""Re-fine-tuning a bundle on new data (``fit --init-from BUNDLE``): the starting model, the label set, and the
old-vs-new comparison that makes forgetting visible.

Top-level module (imports transferkit.core, data, backbones, export and train; api calls it, it never
imports api). The bundle's backbone — architecture, weights and preprocessing — and head are the start; classes
the new data adds get fresh (zero) head rows after the old ones, so old class indices keep their meaning. After
training, both models are scored on the new test split and on the old run's test split (found again from the
bundle's manifest when still readable): a drop of the new model on old data is forgetting, and it is reported.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import accuracy_score

from transferkit.backbones.base import state_dict_sha256
from transferkit.core.errors import BundleError, ConfigError, DataError
from transferkit.core.scores import macro_f1
from transferkit.data.examples import Examples
from transferkit.data.labels import LabelMap
from transferkit.data.preprocess import PreprocessSpec
from transferkit.data.stream import inference_batches
from transferkit.export.bundle import WEIGHTS, Bundle, load_bundle
from transferkit.export.recorded import recorded_split
from transferkit.tasks.model import TransferModel
from transferkit.train.inference import predict_logits


@dataclass
class InitFrom:
    bundle: Bundle
    backbone_sha256: str  # of the weights training starts from (the new bundle's "pretrained_sha256")

    @property
    def old_labels(self) -> tuple[str, ...]:
        return tuple(self.bundle.label_map.names)

    def labels(self, new: LabelMap) -> LabelMap:
        """The old classes in their old order, then the classes only the new data has."""
        return LabelMap(self.old_labels + tuple(n for n in new.names if n not in self.old_labels))

    def model(self, labels: LabelMap, label_smoothing: float = 0.0) -> TransferModel:
        """The bundle's backbone and head; head rows for added classes start at zero (uniform among themselves)."""
        backbone, old = self.bundle.model.backbone, self.bundle.model.head
        backbone.preprocessing = self.bundle.preprocessing  # the architecture default is not what it was fitted at
        backbone.weights_sha256 = self.backbone_sha256  # the features cache is keyed on these weights
        task = self.bundle.model.task
        head = task.head(backbone.feature_dim, len(labels), label_smoothing=label_smoothing)
        with torch.no_grad():
            head.linear.weight[: len(self.old_labels)] = old.linear.weight
            head.linear.bias[: len(self.old_labels)] = old.linear.bias
        model = TransferModel(backbone, head, task)
        return model.to(memory_format=torch.channels_last) if backbone.modality == "image" else model

    def record(self, labels: LabelMap) -> dict[str, Any]:
        """What the new bundle's manifest says about where it started."""
        return {"bundle": str(self.bundle.path.resolve()), "labels": list(self.old_labels),
                "added_labels": list(labels.names[len(self.old_labels):]),
                "backbone_sha256": self.backbone_sha256,
                "pretrained_sha256": self.bundle.manifest["backbone"].get("pretrained_sha256")}

    def compare(self, new_model: TransferModel, labels: LabelMap, new_test: tuple[str, Examples], precision: str,
                ) -> dict[str, Any]:
        """metrics.json's ``init_from``: old and new model on the new and on the old test data."""
        new_split, new_examples = new_test
        old, where = recorded_split(self.bundle.manifest, self.bundle.path)
        out: dict[str, Any] = {**self.record(labels), "new_test": {"split": new_split, "source": new_examples.source}}
        old_model, spec = load_bundle(self.bundle.path).model, self.bundle.preprocessing  # untouched by training
        out["old_model_on_new_test"] = _score(old_model, self.old_labels, new_examples, labels, spec, precision)
        out["new_model_on_new_test"] = _score(new_model, labels.names, new_examples, labels, spec, precision)
        if old is None or old.examples.modality != new_examples.modality:
            out["old_test"] = {"unavailable": where}
            return out
        out["old_test"] = {"split": old.split, "source": where}
        out["old_model_on_old_test"] = _score(old_model, self.old_labels, old.examples, labels, spec, precision)
        out["new_model_on_old_test"] = _score(new_model, labels.names, old.examples, labels, spec, precision)
        return out


def start_from(folder: str | Path, model_name: str, image_size: int | None, modality: str, strategy) -> InitFrom:
    """Load the bundle to continue from, refusing combinations that would not continue it."""
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
        raise DataError(f"--init-from {folder} is a {bundle.preprocessing.modality} model but the data is {modality}.")
    if model_name not in ("auto", bb["name"]):
        raise ConfigError(f"--init-from {folder} holds a {bb['name']} model; drop --model {model_name} (the "
                          "architecture comes from the bundle).")
    if image_size is not None and image_size != bundle.preprocessing.image_size:
        raise ConfigError(f"--init-from {folder} was fitted at {bundle.preprocessing.image_size} px; drop "
                          f"--image-size {image_size} (the preprocessing comes from the bundle).")
    return InitFrom(bundle, state_dict_sha256(bundle.model.backbone.model))


def _score(model: TransferModel, model_labels: tuple[str, ...], examples: Examples, labels: LabelMap,
           spec: PreprocessSpec, precision: str) -> dict[str, Any]:
    """Accuracy and macro-F1 (over the classes in this data's labels or predictions, as everywhere) in the merged
    label space; an old model simply never predicts the classes it lacks."""
    known = [i for i, y in enumerate(examples.labels or []) if y in labels.names]
    examples = examples.subset(known)
    to_merged = np.array([labels.names.index(name) for name in model_labels])
    truth: list[int] = []
    predicted: list[int] = []
    for batch in inference_batches(examples, spec, 64):
        if batch.inputs is None:
            continue
        logits, _ = predict_logits(model, [batch.inputs], precision)
        truth += labels.encode([examples.labels[i] for i in batch.positions], examples.source)
        predicted += to_merged[model.task.decode(logits)].tolist()
    if not truth:
        return {"n": 0}
    return {"accuracy": round(float(accuracy_score(truth, predicted)), 4), "macro_f1": round(macro_f1(truth, predicted), 4),
            "n": len(truth)}


def init_from_notes(entry: dict[str, Any] | None) -> list[str]:
    """Report lines: where the run started, and old vs new accuracy on both test sets, forgetting named."""
    if not entry:
        return []
    added = f"; added classes: {', '.join(entry['added_labels'])}" if entry["added_labels"] else ""
    notes = [f"Continued from the bundle {entry['bundle']} (classes {', '.join(entry['labels'])}{added})."]
    for data, split in (("new", entry["new_test"]), ("old", entry["old_test"])):
        old, new = entry.get(f"old_model_on_{data}_test"), entry.get(f"new_model_on_{data}_test")
        if not old or not new or "accuracy" not in old:
            notes.append(f"The old test data could not be scored: {split.get('unavailable', 'no examples')}.")
            continue
        delta = 100 * (new["accuracy"] - old["accuracy"])
        verdict = " — forgetting: the new model is worse on the old data" if data == "old" and delta < 0 else ""
        notes.append(f"On the {data} test data ({split['split']} of {split['source']}, n={new['n']}): old model "
                     f"{old['accuracy']:.4f}, new model {new['accuracy']:.4f} ({delta:+.1f} points){verdict}.")
    return notes
