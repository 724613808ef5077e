"""Images listed in a table: a CSV/JSONL column of image file paths (``images/`` + ``labels.csv``).

Imports only transferkit.core and transferkit.data. A path is read relative to the table's folder (absolute paths
and ``~`` as they are; Windows back-slashes are tried as '/' when the path does not exist as written). A column is
read as images when it is named (``--image-column``), or when it is the text column and every value names an
image file (an extension of transferkit.data.images) and at least one of those files exists: a text column of file
names whose files are all missing is a DataError naming the path tried, since reading file names as texts is never
what was meant. The images then go through the same decoder and data doctor as images in folders; a missing file
is the doctor's ``missing-image`` finding (left out, unless --strict), named with the table's file and line.
Audio clips listed in a table follow the same rules (``column_kind``): a column whose values all name audio files
(AUDIO_EXTENSIONS), or a named column with audio files and no images, is read as clips (modality "audio"); a column
naming both images and clips is a DataError.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from transferkit.core.errors import DataError
from transferkit.data.audio import AUDIO_EXTENSIONS
from transferkit.data.images import IMAGE_EXTENSIONS

_URL_PREFIXES = ("http://", "https://", "s3://", "gs://")


def resolve_image_path(table: Path, value: str) -> Path:
    """Where the file named by ``value`` in ``table`` is: relative to the table's folder unless absolute."""
    given = Path(value.strip()).expanduser()
    path = given if given.is_absolute() else Path(os.path.abspath(table.parent / given))
    if "\\" in value and not path.exists():  # written on Windows: images\cat.png
        return resolve_image_path(table, value.replace("\\", "/"))
    return path


def names_image(value: str, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> bool:
    """A value that looks like an image file's path: one line, ending in an image extension (or one of
    ``extensions``)."""
    text = value.strip()
    return bool(text) and "\n" not in text and Path(text).suffix.lower() in extensions


def column_kind(table: Path, values: Sequence[str], lines: Sequence[int], column: str, named: bool) -> str | None:
    """"image" or "audio" when ``column`` lists files of that kind (``named``: given as --image-column, so read as
    files in any case: audio when it names clips and no images), None when it holds texts."""
    clips = [i for i, v in enumerate(values) if names_image(v, AUDIO_EXTENSIONS)]
    images = [i for i, v in enumerate(values) if names_image(v)]
    if clips and images and (named or len(clips) + len(images) == len(values)):
        raise DataError(f"{table}:{lines[clips[0]]}: the '{column}' column names both audio clips (e.g. "
                        f"'{values[clips[0]].strip()}') and images (line {lines[images[0]]}: "
                        f"'{values[images[0]].strip()}'); a dataset is one or the other. Keep one kind per table.")
    if values and len(clips) == len(values):
        return "audio"
    if named:
        return "audio" if clips else "image"
    return "image" if values and len(images) == len(values) else None


def image_paths(table: Path, values: Sequence[str], lines: Sequence[int], column: str,
                named: bool, kind: str | None = "image") -> list[str] | None:
    """The resolved image (``kind`` "audio": clip) paths of ``column`` (``named``: given as --image-column), or None
    when it holds texts (``kind`` None)."""
    if kind is None or (not named and kind == "image" and not (values and all(names_image(v) for v in values))):
        return None
    noun = "image" if kind == "image" else "audio clip"
    for value, line in zip(values, lines):
        if not value.strip():
            raise DataError(f"{table}:{line}: the '{column}' value is empty; each row of an {noun.split()[0]} table "
                            f"needs the path of its {noun}. Fill it in or remove the row.")
        if value.strip().lower().startswith(_URL_PREFIXES):
            raise DataError(f"{table}:{line}: the '{column}' value {value.strip()[:80]!r} is a URL; {noun}s are not "
                            "downloaded. Download them and list their file paths (relative to the table's folder).")
    paths = [resolve_image_path(table, v) for v in values]
    if not any(p.is_file() for p in paths):
        raise DataError(f"{table}:{lines[0]}: the '{column}' column names {noun.split()[0]} files, but none of the "
                        f"{len(paths)} exists (e.g. '{values[0].strip()}', tried {paths[0]}). Paths are read relative "
                        f"to the table's folder ({Path(os.path.abspath(table.parent))}) or as absolute paths; fix "
                        "them, or move the table next to its images.")
    return [str(p) for p in paths]


def missing_image_message(table: str, value: str, tried: str) -> str:
    """The doctor's sentence for a row whose image file does not exist."""
    return (f"image '{value}' not found (tried {tried}; paths are read relative to the table's folder, "
            f"{Path(os.path.abspath(Path(table).parent))}, or as absolute paths); fix the path in the table or "
            "restore the file. Left out of the run")
