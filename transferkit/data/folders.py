"""What an image folder lists: each image with its class (the NFC form of its class folder's name), the files
an operating system leaves behind ignored, and everything else left out *and named*, with the reason.

Imports only transferkit.core and transferkit.data. Every command (fit, evaluate, predict, compare, doctor) lists
folders through ``list_class_folder``, so they all see the same images. Rules:
- never listed, silently (only counted): names starting with '.' (``.DS_Store``, AppleDouble ``._x.png``, hidden
  folders such as ``.git``), ``Thumbs.db``, ``desktop.ini``, ``__MACOSX/`` and the like (``is_os_junk``);
- an image is a file whose extension the decoder reads (``IMAGE_EXTENSIONS``, any case); its content decides;
- images in sub-folders of a class folder belong to that class (as before), and each such sub-folder is reported
  (``unexpected-folder``), as is every other file left out (``unexpected-file``): a class folder says nothing
  silently. Folder names that differ only in Unicode form (macOS writes 'é' decomposed) are one class.
"""
from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from transferkit.data.images import IMAGE_EXTENSIONS

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


def class_name(folder_name: str) -> str:
    """The class a folder name stands for: its NFC form, so 'café' typed on macOS and on Linux is one class."""
    return unicodedata.normalize("NFC", folder_name)


def is_os_junk(name: str) -> bool:
    return name.startswith(".") or name.casefold() in OS_JUNK


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def list_class_folder(root: Path) -> FolderListing:
    """``root/<class>/**/<image>`` and the images directly under ``root``; everything else named or counted."""
    listing = FolderListing(root)
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
        elif is_image_name(entry.name):
            listing.loose.append(entry)
        else:
            listing.unexpected.append(_not_an_image(entry, "beside the class folders"))
    for images in listing.classes.values():
        images.sort()
    return listing


def folder_report(source: str, split: str) -> FolderListing | None:
    """The listing of a labeled split read from folder ``source`` (None if it is no folder), with what it left out:
    images beside the class folders (they have no class) and, for train/ of a split layout, what lies beside it."""
    root = Path(source)
    if not root.is_dir():
        return None
    listing = list_class_folder(root)
    if listing.classes:
        listing.unexpected += [Unexpected(p, "unexpected-file", "an image beside the class folders has no class, so "
                                          "it is not read; move it into its class folder") for p in listing.loose]
    if split == "train" and root.name in SPLIT_DIRS and (root.parent / "train").is_dir():
        extras = split_root_extras(root.parent)
        listing.unexpected += extras.unexpected
        listing.ignored += extras.ignored
    return listing


def images_under(root: Path) -> tuple[list[Path], FolderListing]:
    """Every image anywhere under ``root`` (unlabeled data, for predict), sorted; OS files skipped."""
    listing = FolderListing(root)
    return sorted(_walk(root, listing)), listing


def split_root_extras(root: Path) -> FolderListing:
    """What a folder holding train/ (val/, test/) has besides those split folders: named, never read."""
    listing = FolderListing(root)
    for entry in sorted(root.iterdir()):
        if is_os_junk(entry.name):
            listing.ignored += 1
        elif entry.is_dir() and entry.name not in SPLIT_DIRS:
            listing.unexpected.append(Unexpected(entry, "unexpected-folder", "a folder beside train/ that is not a "
                                                 f"split ({', '.join(SPLIT_DIRS)}); it is not read"))
        elif not entry.is_dir():
            listing.unexpected.append(_not_an_image(entry, "beside the split folders") if not is_image_name(entry.name)
                                      else Unexpected(entry, "unexpected-file", "an image beside the split folders, "
                                                      "in no split and no class; it is not read"))
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
                                             f"its {n} image(s) are read as class '{name}'. If they are another "
                                             "class, give them their own class folder"))
    return found


def _walk(folder: Path, listing: FolderListing) -> list[Path]:
    """Images under ``folder`` at any depth, skipping OS files and hidden folders; other files reported."""
    found = []

    def unreadable(error: OSError) -> None:
        listing.unexpected.append(Unexpected(Path(error.filename or folder), "unexpected-folder",
                                             f"cannot be read ({error.strerror or error}); its images are not read"))

    for top, dirs, files in os.walk(folder, onerror=unreadable):
        kept = [d for d in dirs if not is_os_junk(d)]
        listing.ignored += len(dirs) - len(kept)
        dirs[:] = sorted(kept)
        for d in kept:
            if os.path.islink(os.path.join(top, d)):  # os.walk does not follow links to folders (loops)
                listing.unexpected.append(Unexpected(Path(top, d), "unexpected-folder", "a link to a folder; "
                                                     "links are not followed, so its images are not read"))
        for name in files:
            path = Path(top, name)
            if is_os_junk(name):
                listing.ignored += 1
            elif is_image_name(name):
                found.append(path)
            else:
                listing.unexpected.append(_not_an_image(path, f"in '{folder.name}'"))
    return found


def _not_an_image(path: Path, where: str) -> Unexpected:
    suffix = path.suffix or "no extension"
    return Unexpected(path, "unexpected-file", f"not an image file ({suffix}; images end in "
                                               f"{', '.join(IMAGE_EXTENSIONS)}) {where}; it is not read")
