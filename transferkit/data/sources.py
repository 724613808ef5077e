"""Turn a SRC string (image or audio folder, .csv/.jsonl of texts, a token-classification file, or builtin:NAME) into
DataSplits.

Imports only transferkit.core and transferkit.data. Every user mistake raises DataError naming the
file, line or field and the fix. CSV/JSONL files are read by transferkit.data.tables; CoNLL files and JSONL with a
``tokens`` list (and, to predict, raw .txt lines) by transferkit.data.conll.
"""
from __future__ import annotations

from pathlib import Path

from transferkit.core.errors import DataError
from transferkit.core.registry import lookup
from transferkit.data.builtins import DATASETS
from transferkit.data.conll import is_token_file, read_token_file
from transferkit.data.examples import DataSplits, Examples
from transferkit.data.folders import MEDIA_EXTENSIONS, MEDIA_NOUNS, SPLIT_DIRS, folder_kind, images_under, list_class_folder
from transferkit.data.tables import EncodingErrors, TextColumns, read_text_file


def load_source(src: str | Path, columns: TextColumns = TextColumns(), labeled: bool = True,
                encoding_errors: EncodingErrors = "strict", strict_tags: bool = False) -> DataSplits:
    """Read ``src``. With ``labeled=False`` (predict), unlabeled folders/files are accepted too. ``strict_tags``:
    token tags that do not fit their scheme are a DataError instead of being read as conlleval reads them."""
    text = str(src)
    if text.startswith("builtin:"):
        return lookup(DATASETS, text.removeprefix("builtin:"), "dataset")()
    path = Path(text).expanduser()
    if not path.exists():
        raise DataError(
            f"Data path '{path}' does not exist. Pass an image or audio folder, a .csv/.jsonl file of texts, "
            "or builtin:NAME (see `transferkit list datasets`)."
        )
    if path.is_dir():
        return _folder_splits(path, labeled, folder_kind(path))
    if is_token_file(path) or (not labeled and path.suffix.lower() == ".txt"):
        return DataSplits(train=read_token_file(path, labeled, strict_tags))
    if path.suffix.lower() in (".csv", ".jsonl"):
        return DataSplits(train=read_text_file(path, columns, labeled, encoding_errors))
    raise DataError(f"'{path}' is neither a folder of images or audio clips, a .csv/.jsonl file nor a CoNLL file of "
                    "tagged tokens (.conll, or .txt with 'token<TAB>TAG' lines); pass one of those.")


def _folder_splits(root: Path, labeled: bool, kind: str) -> DataSplits:
    if (root / "train").is_dir():
        parts = {name: _class_folder(root / name, labeled, kind) for name in SPLIT_DIRS if (root / name).is_dir()}
        return DataSplits(**parts)
    return DataSplits(train=_class_folder(root, labeled, kind))


def _class_folder(root: Path, labeled: bool, kind: str = "image") -> Examples:
    """``root/<class>/**/<image>`` -> labeled examples, listed by transferkit.data.folders' rules (OS files never,
    class = NFC folder name); images directly under ``root`` -> unlabeled (predict only). ``kind`` "audio": clips."""
    listing = list_class_folder(root, kind)
    noun, extensions = MEDIA_NOUNS[kind], ", ".join(MEDIA_EXTENSIONS[kind])
    if not listing.classes or (listing.loose and not labeled):
        paths = images_under(root, kind)[0] if not labeled else listing.loose
        if not paths:
            audio = f" or audio clips ({', '.join(MEDIA_EXTENSIONS['audio'])})" if kind == "image" else ""
            raise DataError(f"No {noun}s ({extensions}){audio} found under '{root}'.")
        if labeled:
            raise DataError(
                f"'{root}' holds {noun}s but no class folders; arrange them as {root}/<class>/<{noun.split()[0]}> "
                "so each folder name is a label."
            )
        return Examples(kind, [str(p) for p in paths], None, str(root))
    paths, labels = [], []
    for name, found in listing.classes.items():
        paths += [str(p) for p in found]
        labels += [name] * len(found)
    if not paths:
        raise DataError(
            f"The class folders under '{root}' ({', '.join(list(listing.classes)[:5])}) contain no {noun}s "
            f"with extensions {extensions}."
        )
    return Examples(kind, paths, labels, str(root))
