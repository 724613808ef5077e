"""What data a run started on (recorded in its config.json), and what changed since: `fit --resume` refuses other data.

Imports transferkit.core and transferkit.data. A resume is exact only on the data the run started with: a new
class changes the head's size (the checkpoint no longer fits the model) and added or edited examples change every
remaining epoch. Each split fit trains and scores on (after the data doctor, the K-per-class subsample and the
validation split) is recorded by its size, class counts and a SHA-256 of its inputs and labels, and so is the
unlabeled target of domain adaptation (``target``: the stream it pairs with the labeled batches). Files are hashed
by their path relative to the split's folder and their bytes (not ``Examples.fingerprint``'s absolute path and
mtime), so a run started with a relative --data path resumes from the absolute one config.json records, and a
copy that keeps the bytes still counts as the same data.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.core.errors import DataError
from transferkit.data.examples import Examples


def data_identity(splits: dict[str, Examples | None], labels: Sequence[str]) -> dict[str, Any]:
    """config.json's ``data_identity``: the class names, and per split its size, class counts and content hash."""
    return {"labels": list(labels),
            "splits": {name: {"n": len(ex), "classes": ex.class_counts(), "sha256": content_sha256(ex)}
                       for name, ex in splits.items() if ex is not None}}


def content_sha256(examples: Examples) -> str:
    """A hash of the inputs (image and audio files: relative path and bytes) and labels, in order."""
    digest = hashlib.sha256(examples.modality.encode() + b"\0")
    labels = examples.labels if examples.labels is not None else [None] * len(examples)
    for item, label in zip(examples.inputs, labels):
        digest.update(_input_bytes(item, examples))
        digest.update(b"\1" if label is None else str(label).encode("utf-8") + b"\0")
    return digest.hexdigest()


def _input_bytes(item: Any, examples: Examples) -> bytes:
    if examples.modality in ("image", "audio") and isinstance(item, (str, Path)):
        base = os.path.dirname(os.path.abspath(examples.source)) if examples.image_column else examples.source
        name = os.path.relpath(item, base) if os.path.isdir(base) else str(item)  # a folder's, or a table's
        try:
            with open(item, "rb") as fh:
                content = hashlib.file_digest(fh, "sha256").digest()
        except OSError:  # gone since the data doctor looked: hashed as missing, so it reads as changed
            content = b"missing"
        return name.encode("utf-8") + b"\0" + content
    if isinstance(item, np.ndarray):
        return str(item.shape).encode() + np.ascontiguousarray(item).tobytes()
    if hasattr(item, "tobytes"):  # a PIL image
        return item.tobytes()
    return str(item).encode("utf-8") + b"\0"


def data_changes(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between two ``data_identity`` records, one sentence each; empty when the data is the same."""
    changes = []
    before, after = recorded.get("labels", []), current["labels"]
    added, removed = [c for c in after if c not in before], [c for c in before if c not in after]
    if added:
        changes.append(f"class(es) added: {', '.join(map(repr, added))}")
    if removed:
        changes.append(f"class(es) gone: {', '.join(map(repr, removed))}")
    old_splits, new_splits = recorded.get("splits", {}), current["splits"]
    for name in [s for s in ("train", "val", "test", "target") if s in old_splits or s in new_splits]:
        old, new = old_splits.get(name), new_splits.get(name)
        if old is None or new is None:
            changes.append(f"the {name} split is {'new' if old is None else 'gone'}")
        elif old["sha256"] != new["sha256"]:
            changes.append(f"{name}: {_split_change(old, new)}")
    return changes


def _split_change(old: dict[str, Any], new: dict[str, Any]) -> str:
    if old["n"] == new["n"] and old["classes"] == new["classes"]:
        return f"as many examples per class ({new['n']} in all), but different content (files replaced or edited)"
    counts = [f"'{c}' {old['classes'].get(c, 0)} -> {new['classes'].get(c, 0)}"
              for c in sorted(set(old["classes"]) | set(new["classes"]))
              if old["classes"].get(c, 0) != new["classes"].get(c, 0)]
    return f"{old['n']} -> {new['n']} examples" + (f" ({', '.join(counts[:5])})" if counts else "")


def refuse_changed_data(run_dir: Path, recorded: dict[str, Any] | None, current: dict[str, Any], data: str | None,
                        has_bundle: bool) -> None:
    """``fit --resume`` on data other than the run started on: a DataError naming what changed and the ways on.

    Runs recorded before config.json held ``data_identity`` are not checked (nothing to compare with).
    """
    changes = data_changes(recorded, current) if recorded else []
    if not changes:
        return
    if has_bundle:
        way = (f"Start a new run on the current data (another --out), or continue from this run's last bundle on it: "
               f"transferkit fit --init-from {run_dir / 'bundle'} --data {data or 'DATA'} --out NEW_RUN")
    else:
        way = ("This run never finished, so it has no bundle to continue from: put the original data back to resume "
               "it, or start a new run on the current data (another --out)")
    raise DataError(f"fit --resume {run_dir}: the data changed since this run started ({'; '.join(changes)}); a "
                    f"resumed run continues only on the data it started with. {way}.")
