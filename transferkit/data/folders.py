"""What an image (or audio) folder lists: each image with its class (the NFC form of its class folder's name), the
files an operating system leaves behind ignored, and everything else left out *and named*, with the reason.

Imports only transferkit.core and transferkit.data. Every command (fit, evaluate, predict, compare, doctor) lists
folders through ``list_class_folder``, so they all see the same images. Rules:
- never listed, silently (only counted): names starting with '.' (``.DS_Store``, AppleDouble ``._x.png``, hidden
  folders such as ``.git``), ``Thumbs.db``, ``desktop.ini``, ``__MACOSX/`` and the like (``is_os_junk``);
- an image is a file whose extension the decoder reads (``IMAGE_EXTENSIONS``, any case); its content decides;
- a folder is an audio folder when it holds audio clips (``AUDIO_EXTENSIONS``) and no images (``folder_kind``);
  then the same rules list clips instead of images. A folder holding both is a DataError: one run reads one kind;
- images in sub-folders of a class folder belong to that class (as before), and each such sub-folder is reported
  (``unexpected-folder``), as is every other file left out (``unexpected-file``): a class folder says nothing
  silently. Folder names that differ only in Unicode form (macOS writes 'é' decomposed) are one class.
"""
from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from transferkit.core.errors import DataError
from transferkit.data.audio import AUDIO_EXTENSIONS
from transferkit.data.images import IMAGE_EXTENSIONS

MEDIA_EXTENSIONS = {"image": IMAGE_EXTENSIONS, "audio": AUDIO_EXTENSIONS}  # a folder's kind -> the files it lists
MEDIA_NOUNS = {"image": "image", "audio": "audio clip"}
SPLIT_DIRS = ("train", "val", "test")
OS_JUNK = frozenset({"thumbs.db", "ehthumbs.db", "ehthumbs_vista.db", "desktop.ini", "icon\r", "__macosx",
                     "$recycle.bin", "system volume information"})


@dataclass(frozen=True)
class Unexpected:
    """A file or folder inside an image folder that is not listed as an image (or is listed, but needs a word)."""

    path: Path
    kind: str  # unexpected-file | unexpected-folder
    reason: str


@dataclass
class FolderListing:
    root: Path
    classes: dict[str, list[Path]] = field(default_factory=dict)  # class name (NFC) -> its images, sorted
    folders: dict[str, Path] = field(default_factory=dict)  # class name -> its (first) folder
    loose: list[Path] = field(default_factory=list)  # images directly under root
    unexpected: list[Unexpected] = field(default_factory=list)
    ignored: int = 0  # operating-system files and hidden entries, never listed
    kind: str = "image"  # what the folder lists: "image" or "audio" (MEDIA_EXTENSIONS)


def class_name(folder_name: str) -> str:
    """The class a folder name stands for: its NFC form, so 'café' typed on macOS and on Linux is one class."""
    return unicodedata.normalize("NFC", folder_name)


def is_os_junk(name: str) -> bool:
    return name.startswith(".") or name.casefold() in OS_JUNK


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def is_media_name(name: str, kind: str = "image") -> bool:
    return os.path.splitext(name)[1].lower() in MEDIA_EXTENSIONS[kind]


def folder_kind(root: Path) -> str:
    """"audio" when the files under ``root`` (any depth, OS files skipped) include audio clips and no images, else
    "image" (also for a folder with neither, whose messages then speak of images); DataError when it holds both."""
    found: dict[str, list[Path]] = {"image": [], "audio": []}
    for top, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not is_os_junk(d))
        for name in sorted(files):
            for kind in found:
                if not is_os_junk(name) and is_media_name(name, kind):
                    found[kind].append(Path(top, name))
    images, clips = found["image"], found["audio"]
    if images and clips:
        raise DataError(f"'{root}' holds both images ({len(images)}, e.g. {images[0]}) and audio clips ({len(clips)}, "
                        f"e.g. {clips[0]}); a dataset is one or the other. Move one kind into a folder of its own.")
    return "audio" if clips else "image"


def list_class_folder(root: Path, kind: str = "image") -> FolderListing:
    """``root/<class>/**/<image>`` and the images directly under ``root``; everything else named or counted.
    ``kind`` "audio": the same, listing audio clips."""
    listing = FolderListing(root, kind=kind)
    for entry in sorted(root.iterdir()):
        if is_os_junk(entry.name):
            listing.ignored += 1
        elif entry.is_dir():
            name = class_name(entry.name)
            if name in listing.folders:
                listing.unexpected.append(Unexpected(entry, "unexpected-folder", f"'{entry.name}' and "
                                                     f"'{listing.folders[name].name}' are one name in two Unicode "
                                                     f"forms; their images are read as one class '{name}'"))
            listing.folders.setdefault(name, entry)
            listing.classes.setdefault(name, []).extend(_class_images(entry, name, listing))
        elif is_media_name(entry.name, kind):
            listing.loose.append(entry)
        else:
            listing.unexpected.append(_not_an_image(entry, "beside the class folders", kind))
    for images in listing.classes.values():
        images.sort()
    return listing


def folder_report(source: str, split: str, kind: str = "image") -> FolderListing | None:
    """The listing of a labeled split read from folder ``source`` (None if it is no folder), with what it left out:
    images beside the class folders (they have no class) and, for train/ of a split layout, what lies beside it."""
    root = Path(source)
    if not root.is_dir():
        return None
    listing = list_class_folder(root, kind)
    if listing.classes:
        listing.unexpected += [Unexpected(p, "unexpected-file", f"an {MEDIA_NOUNS[kind]} beside the class folders has "
                                          "no class, so it is not read; move it into its class folder")
                               for p in listing.loose]
    if split == "train" and root.name in SPLIT_DIRS and (root.parent / "train").is_dir():
        extras = split_root_extras(root.parent, kind)
        listing.unexpected += extras.unexpected
        listing.ignored += extras.ignored
    return listing


def images_under(root: Path, kind: str = "image") -> tuple[list[Path], FolderListing]:
    """Every image (``kind`` "audio": clip) anywhere under ``root`` (unlabeled data, for predict), sorted; OS files
    skipped."""
    listing = FolderListing(root, kind=kind)
    return sorted(_walk(root, listing)), listing


def split_root_extras(root: Path, kind: str = "image") -> FolderListing:
    """What a folder holding train/ (val/, test/) has besides those split folders: named, never read."""
    listing = FolderListing(root, kind=kind)
    for entry in sorted(root.iterdir()):
        if is_os_junk(entry.name):
            listing.ignored += 1
        elif entry.is_dir() and entry.name not in SPLIT_DIRS:
            listing.unexpected.append(Unexpected(entry, "unexpected-folder", "a folder beside train/ that is not a "
                                                 f"split ({', '.join(SPLIT_DIRS)}); it is not read"))
        elif not entry.is_dir():
            listing.unexpected.append(_not_an_image(entry, "beside the split folders", kind)
                                      if not is_media_name(entry.name, kind)
                                      else Unexpected(entry, "unexpected-file", f"an {MEDIA_NOUNS[kind]} beside the "
                                                      "split folders, in no split and no class; it is not read"))
    return listing


def _class_images(folder: Path, name: str, listing: FolderListing) -> list[Path]:
    found = _walk(folder, listing)
    nested: dict[Path, int] = {}
    for path in found:
        if path.parent != folder:
            top = folder / path.relative_to(folder).parts[0]
            nested[top] = nested.get(top, 0) + 1
    for sub, n in sorted(nested.items()):
        listing.unexpected.append(Unexpected(sub, "unexpected-folder", f"a sub-folder of class folder '{folder.name}'; "
                                             f"its {n} {MEDIA_NOUNS[listing.kind]}(s) are read as class '{name}'. "
                                             "If they are another "
                                             "class, give them their own class folder"))
    return found


def _walk(folder: Path, listing: FolderListing) -> list[Path]:
    """Images under ``folder`` at any depth, skipping OS files and hidden folders; other files reported."""
    found = []

    def unreadable(error: OSError) -> None:
        listing.unexpected.append(Unexpected(Path(error.filename or folder), "unexpected-folder",
                                             f"cannot be read ({error.strerror or error}); its "
                                             f"{MEDIA_NOUNS[listing.kind]}s are not read"))

    for top, dirs, files in os.walk(folder, onerror=unreadable):
        kept = [d for d in dirs if not is_os_junk(d)]
        listing.ignored += len(dirs) - len(kept)
        dirs[:] = sorted(kept)
        for d in kept:
            if os.path.islink(os.path.join(top, d)):  # os.walk does not follow links to folders (loops)
                listing.unexpected.append(Unexpected(Path(top, d), "unexpected-folder", "a link to a folder; links "
                                                     f"are not followed, so its {MEDIA_NOUNS[listing.kind]}s are not "
                                                     "read"))
        for name in files:
            path = Path(top, name)
            if is_os_junk(name):
                listing.ignored += 1
            elif is_media_name(name, listing.kind):
                found.append(path)
            else:
                listing.unexpected.append(_not_an_image(path, f"in '{folder.name}'", listing.kind))
    return found


def _not_an_image(path: Path, where: str, kind: str = "image") -> Unexpected:
    suffix, noun = path.suffix or "no extension", MEDIA_NOUNS[kind]
    return Unexpected(path, "unexpected-file", f"not an {noun.split()[0]} file ({suffix}; {noun}s end in "
                                               f"{', '.join(MEDIA_EXTENSIONS[kind])}) {where}; it is not read")
