"""Bad and tricky image files for the data-doctor tests, built in memory (no fixtures on disk)."""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def png_bytes(array: np.ndarray, **save: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", **save)
    return buf.getvalue()


def noise(rng: np.random.Generator, size: int = 8) -> np.ndarray:
    """A random RGB picture: distinct for every draw, so the tiny folders hold no accidental duplicates."""
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG header claiming ``width`` x ``height`` 1-bit pixels, with a few bytes of data: 10 gigapixels that
    a decoder would have to allocate before noticing the stream is short."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
            + _chunk(b"IEND", b""))


def truncated_png(rng: np.random.Generator) -> bytes:
    data = png_bytes(noise(rng))
    return data[: len(data) // 2]


def corrupt_png(rng: np.random.Generator) -> bytes:
    """The pixel data overwritten with garbage (same length): the chunk checksum no longer matches."""
    data = bytearray(png_bytes(noise(rng)))
    start = data.index(b"IDAT") + 4
    data[start:start + 40] = rng.integers(0, 256, 40, dtype=np.uint8).tobytes()
    return bytes(data)


NOT_IMAGES = {  # content that is no image at all, under an image extension
    "page.jpg": b"<html><body>not an image</body></html>",
    "doc.png": b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n",
    "vector.jpg": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n",  # EPS: Pillow would run Ghostscript
    "notes.png": b"just some text that someone saved with the wrong name\n",
}


def write_bad_files(folder: Path, rng: np.random.Generator, per_kind: int = 4) -> dict[Path, str]:
    """``per_kind`` files of each bad kind (zero-byte, truncated, corrupt, not an image, bomb) -> expected kind."""
    folder.mkdir(parents=True, exist_ok=True)
    made: dict[Path, str] = {}
    not_images = list(NOT_IMAGES.items())
    for i in range(per_kind):
        files = {
            f"zero-{i}.png": (b"", "empty-file"),
            f"truncated-{i}.png": (truncated_png(rng), "unreadable-image"),
            f"corrupt-{i}.png": (corrupt_png(rng), "unreadable-image"),
            f"{i}-{not_images[i % len(not_images)][0]}": (not_images[i % len(not_images)][1], "unreadable-image"),
            f"bomb-{i}.png": (bomb_png(), "image-too-large"),
        }
        for name, (data, kind) in files.items():
            (folder / name).write_bytes(data)
            made[folder / name] = kind
    return made
