"""Decode any supported image input into an upright RGB picture.

Imports only transferkit.core. Transparency is composited on white (not black, as a plain
``convert('RGB')`` would do); EXIF orientation is applied; grayscale becomes 3 equal channels.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from transferkit.core.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
# Formats Pillow may decode: anything else (EPS through Ghostscript, PSD, ...) is refused before decoding.
ALLOWED_FORMATS = ("PNG", "JPEG", "BMP", "WEBP", "GIF", "TIFF")
# Far below Pillow's own ~89 MP warning: a decompression bomb is refused from its header, before any pixel is decoded.
DEFAULT_MAX_PIXELS = 40_000_000


class ImageDecodeError(DataError):
    """An input that is not a decodable, allowed, reasonably sized image; ``reason`` says which."""

    def __init__(self, where: str, reason: str):
        super().__init__(f"{where}: {reason}")
        self.where, self.reason = where, reason


def to_rgb(image: Image.Image) -> Image.Image:
    image = ImageOps.exif_transpose(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        scale = 65535.0 if array.max() > 255 else 255.0
        image = Image.fromarray((array / scale * 255).round().astype(np.uint8), mode="L")
    return image.convert("RGB")


def load_image(item: Any) -> Image.Image:
    """Return an RGB PIL image from a path, a PIL image or an HxW / HxWxC uint8 array."""
    if isinstance(item, Image.Image):
        return to_rgb(item)
    if isinstance(item, np.ndarray):
        array = item if item.dtype == np.uint8 else np.clip(item, 0, 255).astype(np.uint8)
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[:, :, 0]
        return to_rgb(Image.fromarray(array))
    return decode_image(Path(item))


def decode_image(source: Path | bytes, max_pixels: int = DEFAULT_MAX_PIXELS, where: str | None = None) -> Image.Image:
    """Fully decode a file or bytes into RGB, refusing other formats and oversized images before decoding."""
    where = where or (str(source) if isinstance(source, Path) else "image")
    stream = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        with Image.open(stream, formats=ALLOWED_FORMATS) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise ImageDecodeError(where, f"{width}x{height} pixels exceeds the {max_pixels:,}-pixel cap "
                                              "(possible decompression bomb)")
            image.load()
            return to_rgb(image)
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError:  # Pillow refused the header itself: far above any cap we allow
        raise ImageDecodeError(where, f"more pixels than Pillow's own limit, so far above the {max_pixels:,}-pixel "
                                      "cap (possible decompression bomb)") from None
    except FileNotFoundError:
        raise ImageDecodeError(where, "file not found") from None
    except (OSError, SyntaxError, ValueError) as exc:
        detail = "unrecognised format" if isinstance(exc, UnidentifiedImageError) else str(exc)
        reason = "empty file" if isinstance(source, Path) and source.stat().st_size == 0 else \
            f"not a decodable {'/'.join(ALLOWED_FORMATS)} image ({detail})"
        raise ImageDecodeError(where, reason) from None
