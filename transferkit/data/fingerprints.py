"""Content fingerprints for the data doctor: each image decoded once (status, exact and perceptual hashes), texts
normalised and hashed, the near-duplicate tests that compare them, and a token count for when there is no tokenizer.

Imports only transferkit.core and transferkit.data. Exact duplicates share a hash of the decoded pixels (so a
PNG and its lossless re-save match) or of the normalised text. Near-duplicate images share a 64-bit difference
hash (dHash: the sign of horizontal gradients on a 9x8 grey thumbnail, as the `imagehash` package computes it)
*and* their 16x16 grey thumbnails differ by less than ``NEAR_IMAGE_MAD`` on average: bucketing by exact dHash
(as cleanvision does) keeps the search linear, and the thumbnail check removes the collisions that plain
low-detail images (digits, icons) produce. Near-duplicate texts have a Jaccard similarity of their word
3-shingles of at least ``NEAR_TEXT_JACCARD``, computed with sparse products between splits.
"""
from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from transferkit.data.images import ALLOWED_FORMATS, EXTENSION_FORMATS, ImageDecodeError, load_image, read_image

NEAR_IMAGE_MAD = 8.0  # mean absolute difference of 16x16 grey thumbnails, in 0-255 levels (about 3 %)
NEAR_TEXT_JACCARD = 0.8
_CACHE_SIZE = 200_000


@dataclass(frozen=True)
class ImageInfo:
    """What one decode of an image input tells: whether it is usable and, if so, its hashes."""

    kind: str | None = None  # None when usable; else empty-file | image-too-large | unreadable-image
    reason: str | None = None
    format: str | None = None  # the format Pillow read from the header (None for in-memory inputs)
    sha256: str | None = None  # of the decoded RGB pixels and their size
    dhash: int | None = None
    thumb: bytes | None = None  # 16x16 grey, for the near-duplicate check

    @property
    def ok(self) -> bool:
        return self.kind is None


_cache: OrderedDict[tuple, ImageInfo] = OrderedDict()


def image_info(item: Any, max_pixels: int) -> ImageInfo:
    """Decode ``item`` (a path, array or PIL image) once; files are cached by path, size and mtime."""
    if not isinstance(item, (str, Path)):
        return _hashes(load_image(item), None)
    path = Path(item)
    try:
        stat = path.stat()
    except OSError as exc:
        return ImageInfo("unreadable-image", f"cannot read the file ({exc.strerror or exc})")
    key = (str(path), stat.st_size, stat.st_mtime_ns, max_pixels)
    if key in _cache:
        _cache.move_to_end(key)
        return _cache[key]
    info = _decode_file(path, stat.st_size, max_pixels)
    _cache[key] = info
    if len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return info


def _decode_file(path: Path, size: int, max_pixels: int) -> ImageInfo:
    """The decoder's own rules (transferkit.data.images: formats, size, bombs), so the doctor refuses exactly what
    training would."""
    if size == 0:
        return ImageInfo("empty-file", "zero-byte file")
    try:
        image, header_format = read_image(path, max_pixels)
    except ImageDecodeError as exc:
        reason = exc.reason
        if exc.kind == "unreadable-image" and exc.format is None and "unrecognised format" in reason:
            reason = f"not a {'/'.join(ALLOWED_FORMATS)} image{_looks_like(path)}"
        return ImageInfo(exc.kind, reason, exc.format)
    return _hashes(image, header_format)


_SIGNATURES = ((b"%PDF", "a PDF document"), (b"%!PS", "PostScript/EPS, which is never decoded"),
               (b"8BPS", "a Photoshop file"), (b"PK\x03\x04", "a zip archive"), (b"\x80", "a Python pickle"),
               (b"<", "HTML or XML"))


def _looks_like(path: Path) -> str:
    try:
        with open(path, "rb") as file:
            head = file.read(64).lstrip()
    except OSError:
        return ""
    for signature, what in _SIGNATURES:
        if head.startswith(signature):
            return f" (it looks like {what})"
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return " (it looks like text)"
    return ""


def _hashes(image: Image.Image, header_format: str | None) -> ImageInfo:
    rgb = np.asarray(image)
    digest = hashlib.sha256(f"{image.width}x{image.height}\0".encode())
    digest.update(rgb.tobytes())
    if max(image.size) > 512:  # hashes need a small grey picture only: halve first (an exact area average)
        rgb = np.asarray(image.reduce(max(image.size) // 256))
    dhash, thumb = _perceptual(_grey(rgb[None]))
    return ImageInfo(None, None, header_format, digest.hexdigest(), dhash[0], thumb[0])


def image_infos(items: list[Any], max_pixels: int, chunk: int = 4096) -> list[ImageInfo]:
    """``image_info`` for each item; a stack of equal-shape uint8 arrays (built-in datasets) goes vectorised."""
    first = items[0] if items else None
    if not (isinstance(first, np.ndarray) and first.dtype == np.uint8 and (first.ndim == 2 or (
            first.ndim == 3 and first.shape[2] in (1, 3))) and all(
            isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.shape == first.shape for x in items)):
        return [image_info(item, max_pixels) for item in items]
    height, width = first.shape[:2]
    out: list[ImageInfo] = []
    for begin in range(0, len(items), chunk):
        stack = np.stack(items[begin:begin + chunk]).reshape(-1, height, width, first.shape[2] if first.ndim == 3 else 1)
        rgb = np.repeat(stack, 3, axis=3) if stack.shape[3] == 1 else stack  # what load_image makes of them
        prefix = f"{width}x{height}\0".encode()
        dhashes, thumbs = _perceptual(_grey(rgb))
        out += [ImageInfo(None, None, None, hashlib.sha256(prefix + x.tobytes()).hexdigest(), d, t)
                for x, d, t in zip(rgb, dhashes, thumbs)]
    return out


def _grey(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma with Pillow's integer rounding ('L' conversion), for a [N, H, W, 3] uint8 stack."""
    r, g, b = (rgb[..., c].astype(np.uint32) for c in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.float32)


@lru_cache(maxsize=64)
def _box(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] area-average weights: what a BOX resize does along one axis."""
    edges = np.arange(n_out + 1) * (n_in / n_out)
    j = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(edges[1:, None], j + 1) - np.maximum(edges[:-1, None], j), 0, None)
    return (overlap / (n_in / n_out)).astype(np.float32)


def _resize(grey: np.ndarray, height: int, width: int) -> np.ndarray:
    _, h, w = grey.shape
    return np.rint(_box(h, height) @ grey @ _box(w, width).T)


def _perceptual(grey: np.ndarray) -> tuple[list[int], list[bytes]]:
    """dHash (9x8 grey, sign of horizontal differences) and a 16x16 grey thumbnail per picture of the stack."""
    small = _resize(grey, 8, 9)
    bits = np.packbits((small[:, :, 1:] > small[:, :, :-1]).reshape(len(grey), -1), axis=1)
    thumbs = np.clip(_resize(grey, 16, 16), 0, 255).astype(np.uint8)
    return [int.from_bytes(row.tobytes(), "big") for row in bits], [t.tobytes() for t in thumbs]


def extension_mismatch(path: str, info: ImageInfo) -> str | None:
    """The format a decodable file really has, when its extension claims another one."""
    claimed = EXTENSION_FORMATS.get(Path(path).suffix.lower())
    real = "JPEG" if info.format == "MPO" else info.format  # a phone's multi-picture JPEG is a JPEG
    if claimed and real and real != claimed:
        return real
    return None


def near_images(a: ImageInfo, b: ImageInfo) -> bool:
    if a.dhash != b.dhash or a.thumb is None or b.thumb is None:
        return False
    diff = np.abs(np.frombuffer(a.thumb, np.uint8).astype(np.int16) - np.frombuffer(b.thumb, np.uint8))
    return float(diff.mean()) < NEAR_IMAGE_MAD


# ----------------------------------------------------------------------------------------------------------- texts

_SPACE = re.compile(r"\s+")


def normalise_text(text: str) -> str:
    """Case, Unicode form and whitespace do not make two texts different examples."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def text_sha256(text: str) -> str:
    return hashlib.sha256(normalise_text(text).encode("utf-8")).hexdigest()


# Scripts written without spaces between words (Chinese, Japanese kana, Thai, Lao, Khmer, Myanmar): a whole
# sentence is one "word" to str.split(), while a tokenizer makes about one token of each character.
_UNSPACED = re.compile("[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u2e80-\u2fdf\u3001-\u303f\u3040-\u30ff"
                       "\u3100-\u312f\u3190-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f"
                       "\U00020000-\U0003134f]")


def estimated_tokens(text: str) -> int:
    """Subword tokens estimated without a tokenizer: 1.3 x whitespace words (WordPiece on English news averages
    1.2-1.4), plus one per character of a script written without spaces."""
    unspaced = len(_UNSPACED.findall(text))
    words = len(_UNSPACED.sub(" ", text).split()) if unspaced else len(text.split())
    return int(words * 1.3 + unspaced + 0.5)


def near_text_pairs(later: list[str], earlier: list[str], chunk: int = 2_000) -> list[tuple[int, int, float]]:
    """(index in later, index in earlier, Jaccard) for pairs whose word 3-shingle sets overlap >= the threshold."""
    if not later or not earlier:
        return []
    from sklearn.feature_extraction.text import HashingVectorizer

    vectorizer = HashingVectorizer(ngram_range=(3, 3), binary=True, norm=None, alternate_sign=False,
                                   n_features=2**22, preprocessor=normalise_text, dtype=np.float32)
    x_early = vectorizer.transform(earlier).tocsr()
    size_early = np.asarray(x_early.sum(axis=1)).ravel()
    pairs = []
    for start in range(0, len(later), chunk):
        x_late = vectorizer.transform(later[start:start + chunk]).tocsr()
        size_late = np.asarray(x_late.sum(axis=1)).ravel()
        inter = (x_late @ x_early.T).tocoo()
        union = size_late[inter.row] + size_early[inter.col] - inter.data
        jaccard = np.divide(inter.data, union, out=np.zeros_like(inter.data), where=union > 0)
        for r, c, j in zip(inter.row, inter.col, jaccard):
            if j >= NEAR_TEXT_JACCARD:
                pairs.append((start + int(r), int(c), float(j)))
    return pairs
