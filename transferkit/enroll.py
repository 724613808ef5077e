"""`transferkit enroll`: add classes (or more examples of known ones) to a protonet bundle without training.

Top-level module (imports transferkit.task_choice, core, data, export and tasks; cli calls it, it never imports
api). The bundle's backbone embeds the labeled examples, with the bundle's own preprocessing and precision; each
class's examples are folded into its prototype (transferkit.tasks.prototypes: a running mean, so enrolling more
examples of a known class refines it and a new class gets the mean of its examples), and the updated model is
written as a new bundle. The label list grows (new classes after the old ones, so old indices keep their
meaning) and the manifest's ``enrolled`` list records each enrollment: the data, examples per class, the classes
added, and when. The user's bundle is rewritten only with ``in_place=True``.

Refusals (ConfigError/DataError, exit 2 in the CLI): a bundle whose head is not a prototype head (only protonet
bundles have class prototypes), an output folder that exists (or is the bundle, without ``in_place``), data of
another modality, a class folder with no usable example (empty, or every file unreadable). The recorded test
metrics are those of the bundle before enrolling: the manifest keeps them under their old key, and the
``enrolled`` entry says they predate the new classes.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from transferkit import task_choice
from transferkit.core.errors import ConfigError, DataError
from transferkit.core.runtime import autocast
from transferkit.data.doctor import DoctorConfig, diagnose_inputs
from transferkit.data.examples import Examples, check_modality
from transferkit.data.loaders import make_loader
from transferkit.data.sources import load_source
from transferkit.export.bundle import MANIFEST, load_bundle, recorded_precision, refuse_onnx_export, save_bundle
from transferkit.tasks.prototypes import PrototypeHead


@dataclass
class EnrollResult:
    bundle: Path  # the written bundle
    added: list[str]  # classes new to the bundle
    examples: dict[str, int]  # examples enrolled per class (new and known ones)
    skipped: list[dict[str, str]]  # inputs left out (unreadable)


def enroll(bundle: str | Path, data: str | Path, out: str | Path | None = None, in_place: bool = False,
           text_column: str | None = None, label_column: str | None = None, image_column: str | None = None,
           strict: bool = False) -> EnrollResult:
    """Fold the labeled examples of ``data`` into the prototypes of the protonet ``bundle``; write the result to
    ``out`` (a new folder), or over ``bundle`` itself with ``in_place``. Raises ConfigError (not a prototype
    bundle, no/occupied output) and DataError (another modality, a class without usable examples)."""
    source = Path(bundle)
    refuse_onnx_export(source, "enroll into")
    target = _target(source, out, in_place)
    loaded = load_bundle(source)
    head = loaded.model.head
    if not isinstance(head, PrototypeHead):
        strategy = (loaded.manifest.get("strategy") or {}).get("name", "?")
        raise ConfigError(f"{source} has a {type(head).__name__} ({strategy} bundle), not class prototypes: enroll "
                          f"adds classes to protonet bundles only. Fit one with --strategy protonet (-o "
                          f"backbone=frozen for the closed form), or re-fine-tune this one with transferkit fit "
                          f"--init-from {source} --data NEW_DATA.")
    columns = task_choice.bundle_columns(loaded.manifest, text_column, label_column, image_column)
    examples, skipped = _usable_examples(data, columns, loaded.preprocessing.modality, strict)
    counts = {name: examples.labels.count(name) for name in sorted(set(examples.labels))}
    old = list(loaded.label_map.names)
    added = [name for name in counts if name not in old]
    names = old + added
    features = _embed(loaded, examples)
    grown = head.grown(len(names))
    grown.add_examples(features, torch.tensor([names.index(y) for y in examples.labels]))
    loaded.model.head = grown
    manifest = {k: v for k, v in loaded.manifest.items() if k != "format_version"}
    manifest["labels"] = names
    manifest["enrolled"] = [*manifest.get("enrolled", []), {
        "data": str(data), "examples": counts, "added_labels": added, "n_skipped": len(skipped),
        "from_bundle": str(source.resolve()), "created": datetime.now().isoformat(timespec="seconds"),
        "note": "metrics were measured before this enrollment"}]
    save_bundle(target, loaded.model.eval(), manifest)
    return EnrollResult(target, added, counts, skipped)


def _target(source: Path, out: str | Path | None, in_place: bool) -> Path:
    """Where the enrolled bundle goes: ``out``, or the bundle itself only when ``in_place`` says so."""
    if in_place:
        if out is not None and Path(out).resolve() != source.resolve():
            raise ConfigError(f"--in-place rewrites {source} itself; drop --out {out} (or drop --in-place).")
        return source
    if out is None:
        raise ConfigError(f"enroll writes a new bundle: pass --out NEW_FOLDER, or --in-place to update {source} "
                          "itself.")
    out = Path(out)
    if out.resolve() == source.resolve():
        raise ConfigError(f"--out {out} is the bundle itself; pass --in-place to update it, or another --out.")
    if out.exists():
        raise ConfigError(f"--out {out} already exists; choose a new folder (enroll never overwrites one).")
    return out


def _usable_examples(data: str | Path, columns: Any, modality: str, strict: bool
                     ) -> tuple[Examples, list[dict[str, str]]]:
    """The labeled examples of ``data`` without the unreadable ones; DataError for a class left with none."""
    splits = load_source(data, columns, encoding_errors="replace")
    parts = [p for p in (splits.train, splits.val, splits.test) if p is not None]
    examples = parts[0] if len(parts) == 1 else Examples(parts[0].modality, [x for p in parts for x in p.inputs],
                                                         [y for p in parts for y in p.labels or []], parts[0].source,
                                                         [i for p in parts for i in p.ids])
    check_modality(examples, modality)
    if not examples.labels:
        raise DataError(f"{examples.source}: enroll needs labeled examples (root/<class>/... or a label column).")
    report = diagnose_inputs({"enroll": examples}, DoctorConfig(strict=strict))
    report.raise_if_fatal()
    left_out = set(report.left_out("enroll"))
    usable = examples.subset([i for i in range(len(examples)) if i not in left_out])
    empty = sorted(_declared_classes(data) | set(examples.labels) - set(usable.labels or []))
    if empty:
        raise DataError(f"{examples.source}: class {', '.join(repr(c) for c in empty)} has no usable example "
                        f"(empty, or no file could be read); add a few readable labeled examples of it, or remove "
                        f"it from the data.")
    return usable, report.skipped()


def _declared_classes(data: str | Path) -> set[str]:
    """Class folders of an image/audio folder that hold no file at all (they list no example, but name a class)."""
    root = Path(data)
    if not root.is_dir():
        return set()
    return {unicodedata.normalize("NFC", d.name) for d in root.iterdir()
            if d.is_dir() and not d.name.startswith(".") and not any(f.is_file() for f in d.rglob("*"))}


@torch.no_grad()
def _embed(loaded: Any, examples: Examples) -> torch.Tensor:
    """[n, d] backbone features of ``examples``, in the precision the bundle predicts in."""
    model = loaded.model.eval()
    precision = recorded_precision(loaded.manifest, loaded.path / MANIFEST)
    device = next(model.parameters()).device
    chunks = []
    for batch in make_loader(examples, loaded.preprocessing, None, 64):
        inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        with autocast(precision, device):
            chunks.append(model.backbone.embed(inputs).float())
    return torch.cat(chunks) if chunks else torch.zeros(0, model.backbone.feature_dim)


def summary_lines(result: EnrollResult) -> list[str]:
    """What the CLI prints: per class the examples enrolled (new classes marked), and where the bundle is."""
    lines = [f"{name}: {n} example{'s' if n != 1 else ''}{' (new class)' if name in result.added else ''}"
             for name, n in result.examples.items()]
    if result.skipped:
        lines.append(f"left out {len(result.skipped)} unreadable input(s), e.g. {result.skipped[0]['path']}: "
                     f"{result.skipped[0]['reason']}")
    return [*lines, f"bundle: {result.bundle}"]


__all__ = ["EnrollResult", "enroll", "summary_lines"]
