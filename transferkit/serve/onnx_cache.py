"""ONNX exports of a PyTorch bundle made on demand for predict (`--runtime onnx`, `--int8`), cached by content.

Imports transferkit.core, transferkit.data and transferkit.export. Each export is the one `transferkit export`
writes, with the same parity check, made once per bundle content (the SHA-256 of its weights and manifest) and
precision under ``$TRANSFERKIT_CACHE/onnx/<sha256>-<fp32|int8>/`` — never inside the user's bundle — and reused
while those bytes are unchanged. Static int8 (CNNs) calibrates on the bundle's recorded training inputs when they
are readable, as export does; otherwise on inputs spread over the data being predicted. Which export is used,
where, and what it was calibrated on is logged once per load (logger ``transferkit.serve.onnx_cache``, INFO).
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from transferkit.core.errors import BundleError
from transferkit.data.examples import Examples
from transferkit.export.bundle import ADAPTER_WEIGHTS, MANIFEST, WEIGHTS, read_manifest
from transferkit.export.onnx import ONNX_FILE, export_onnx

LOG = logging.getLogger(__name__)
HASH_CHARS = 24  # of the hex SHA-256 in the folder name: unique enough, and short enough to read


def cache_root() -> Path:
    """``$TRANSFERKIT_CACHE/onnx`` (default ``~/.cache/transferkit/onnx``); not created here."""
    return Path(os.environ.get("TRANSFERKIT_CACHE", Path.home() / ".cache" / "transferkit")) / "onnx"


def content_hash(bundle_dir: Path) -> str:
    """SHA-256 over the files that decide the model's outputs: weights, adapter (if any) and manifest."""
    digest = hashlib.sha256()
    for name in (WEIGHTS, ADAPTER_WEIGHTS, MANIFEST):
        path = Path(bundle_dir) / name
        if path.is_file():
            digest.update(name.encode() + b"\0")
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def _usable(folder: Path) -> bool:
    try:
        return (folder / ONNX_FILE).is_file() and read_manifest(folder).get("runtime") == "onnx"
    except BundleError:
        return False


def _describe(entry: dict[str, Any]) -> str:
    """What the export is, in words: its precision, and for static int8 what it was calibrated on."""
    q = entry.get("int8")
    if not q:
        return "fp32"
    calibration = q.get("calibration")
    where = f", calibrated on {calibration['n']} inputs of {calibration['inputs']}" if calibration else ""
    return f"int8 ({q['method']}{where})"


def cached_export(bundle_dir: Path, int8: bool, calibration: Examples | None = None) -> Path:
    """The folder of an ONNX export of ``bundle_dir`` (int8 or fp32), made now if the cache does not hold one.
    ``calibration``: inputs static int8 calibrates on when the bundle's own training inputs cannot be read."""
    bundle_dir = Path(bundle_dir)
    target = cache_root() / f"{content_hash(bundle_dir)[:HASH_CHARS]}-{'int8' if int8 else 'fp32'}"
    if _usable(target):
        LOG.info("using the cached %s ONNX export of %s: %s", _describe(read_manifest(target)["onnx"]), bundle_dir,
                 target)
        return target
    LOG.info("exporting %s to ONNX%s once, into %s (reused while the bundle is unchanged)", bundle_dir,
             " int8" if int8 else "", target)
    entry = export_onnx(bundle_dir, target, int8=int8, calibration=calibration)
    LOG.info("using the new %s ONNX export: %s", _describe(entry), target)
    return target
