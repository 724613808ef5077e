"""Decode any supported image input into an upright RGB picture, within a memory budget.

Imports only transferkit.core. Transparency is composited on white (not black, as a plain ``convert('RGB')``
would do); EXIF orientation is applied; grayscale becomes 3 equal channels; 16-bit images are scaled by their
format's range (65,535 -> 255), never by their own brightest pixel, so one exposure always decodes at one brightness.

What is bounded is memory, decided from the header before any pixel is decoded (``decode_image``):
- a JPEG is decoded at 1/2, 1/4 or 1/8 scale (Pillow's draft mode) while its shorter side stays >= WORKING_SIDE,
  and smaller (down to 1/8) where that is what fits ``max_pixels``: a 200 MP phone photo decodes as a 12 MP one;
  any other image is reduced by an integer factor to that size right after decoding;
- an image is refused when its decoded pixels exceed ``max_pixels`` (Pillow holds up to 4 bytes a pixel: the
  default, 250 M pixels, is about 1 GB);
- an image is refused as a decompression bomb when its header claims more than BOMB_PIXELS_PER_BYTE pixels per
  byte of file (above BOMB_MIN_PIXELS): no complete file holds that many (zlib compresses at most ~1032:1, so even
  a single-colour 1-bit PNG needs a byte per ~8,300 pixels; JPEG needs a bit per 8x8 block).
Pillow's own fixed pixel-count check (``Image.MAX_IMAGE_PIXELS``, which refuses real 200 MP photos) is bypassed
for these formats by opening them with their plugins directly; its global is left as it is for other code.
"""
from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import (
    BmpImagePlugin,  # noqa: F401  (importing a plugin registers its format in Image.OPEN)
    GifImagePlugin,  # noqa: F401
    Image,
    ImageFile,
    ImageOps,
    JpegImagePlugin,
    PngImagePlugin,  # noqa: F401
    TiffImagePlugin,  # noqa: F401
    UnidentifiedImageError,
    WebPImagePlugin,  # noqa: F401
)

from transferkit.core.errors import DataError

# Every extension Pillow registers for the formats decoded here (tests check the two agree): a file is listed by
# its name and decoded by its content. Anything else (EPS through Ghostscript, PSD, ...) is never decoded.
EXTENSION_FORMATS = {".png": "PNG", ".apng": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG",
                     ".jfif": "JPEG", ".bmp": "BMP", ".webp": "WEBP", ".gif": "GIF", ".tif": "TIFF", ".tiff": "TIFF"}
IMAGE_EXTENSIONS = tuple(EXTENSION_FORMATS)
ALLOWED_FORMATS = tuple(dict.fromkeys(EXTENSION_FORMATS.values()))
DEFAULT_MAX_PIXELS = 250_000_000  # decoded pixels (after draft mode): about 1 GB at Pillow's 4 bytes a pixel
WORKING_SIDE = 2048  # decoded images keep a shorter side >= this: several times what any backbone's input needs
BOMB_PIXELS_PER_BYTE = 10_000
BOMB_MIN_PIXELS = 16_000_000  # below this, decoding costs little whatever the file claims
_REDUCIBLE = ("L", "LA", "I", "F", "RGB", "RGBA", "CMYK", "YCbCr")  # modes Image.reduce accepts


class ImageDecodeError(DataError):
    """An input that is not a decodable, allowed, reasonably sized image; ``reason`` says which, ``kind`` is the
    data doctor's name for it (``unreadable-image``, ``image-too-large``, ``empty-file``)."""

    def __init__(self, where: str, reason: str, kind: str = "unreadable-image", format: str | None = None):
        super().__init__(f"{where}: {reason}")
        self.where, self.reason, self.kind, self.format = where, reason, kind, format

    def __reduce__(self) -> tuple:  # rebuilt from its fields when a decode worker sends it back
        return type(self), (self.where, self.reason, self.kind, self.format)


def to_rgb(image: Image.Image, where: str = "image") -> Image.Image:
    """Upright RGB; ImageDecodeError for 32-bit float pixels (mode F), whose range no format fixes: 0..1 and 0..255
    are both common, and reading one as the other turns a picture black or white without a word."""
    if image.mode == "F":
        raise ImageDecodeError(where, "32-bit floating-point pixels (mode F) have no fixed range (0..1 or 0..255?), "
                                      "so their brightness would be a guess; save the image as 8- or 16-bit")
    image = ImageOps.exif_transpose(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode.startswith("I;16") or image.mode == "I":
        # 16-bit PNG/TIFF: the format's range, not this image's brightest pixel. Mode 'I' (32-bit) is read with the
        # same range, brighter values saturating, so nearby exposures stay nearby.
        image = Image.fromarray(_sixteen_to_eight(np.asarray(image)), mode="L")
    return image.convert("RGB")


def _sixteen_to_eight(array: np.ndarray) -> np.ndarray:
    """0..65535 -> 0..255, rounded (65535 = 255 x 257); values outside the 16-bit range are clipped to it."""
    clipped = np.clip(array, 0, 65535).astype(np.uint32)
    return ((clipped + 128) // 257).astype(np.uint8)


def load_image(item: Any, max_pixels: int | None = None) -> Image.Image:
    """Return an RGB PIL image from a path, a PIL image or an HxW / HxWxC array (uint8, or uint16 read as 16-bit).

    A path is decoded by ``decode_image`` under ``max_pixels`` (None: DEFAULT_MAX_PIXELS)."""
    if isinstance(item, Image.Image):
        return to_rgb(item)
    if isinstance(item, np.ndarray):
        if item.dtype == np.uint16:
            array = _sixteen_to_eight(item)
        else:
            array = item if item.dtype == np.uint8 else np.clip(item, 0, 255).astype(np.uint8)
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[:, :, 0]
        return to_rgb(Image.fromarray(array))
    return decode_image(Path(item), max_pixels or DEFAULT_MAX_PIXELS)


def decode_image(source: Path | bytes, max_pixels: int = DEFAULT_MAX_PIXELS, where: str | None = None) -> Image.Image:
    """Fully decode a file or bytes into RGB, refusing other formats, bombs and oversized images before decoding."""
    return read_image(source, max_pixels, where)[0]


def read_image(source: Path | bytes, max_pixels: int = DEFAULT_MAX_PIXELS,
               where: str | None = None) -> tuple[Image.Image, str]:
    """``decode_image`` and the format the file's content has (which its extension may not say)."""
    where = where or (str(source) if isinstance(source, Path) else "image")
    fmt = None
    try:
        with _stream(source) as stream:
            size = stream.seek(0, io.SEEK_END)
            if size == 0:
                raise ImageDecodeError(where, "empty file", "empty-file")
            stream.seek(0)
            with open_image(stream) as image:
                fmt = image.format
                problem = size_problem(image, size, max_pixels)
                if problem:
                    raise ImageDecodeError(where, problem, "image-too-large", fmt)
                image.load()
                return _shrink(to_rgb(_shrink(image), where)), fmt
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError:  # Pillow's own check inside a later GIF frame or TIFF strip
        raise ImageDecodeError(where, "a frame larger than Pillow's own limit (possible decompression bomb)",
                               "image-too-large", fmt) from None
    except FileNotFoundError:
        raise ImageDecodeError(where, "file not found") from None
    except (OSError, SyntaxError, ValueError, struct.error) as exc:
        detail = "unrecognised format" if isinstance(exc, UnidentifiedImageError) else str(exc)
        raise ImageDecodeError(where, f"not a decodable {'/'.join(ALLOWED_FORMATS)} image ({detail})",
                               format=fmt) from None


def size_problem(image: Image.Image, file_bytes: int, max_pixels: int) -> str | None:
    """Why an opened, not yet decoded ``image`` must not be decoded (None: go ahead). Sets a JPEG's draft scale."""
    width, height = image.size
    pixels = width * height
    if pixels > BOMB_MIN_PIXELS and pixels > file_bytes * BOMB_PIXELS_PER_BYTE:
        return (f"{width}x{height} pixels claimed by a {file_bytes:,}-byte file: no complete image file holds "
                f"{pixels / file_bytes:,.0f} pixels a byte (a decompression bomb); not decoded")
    scale = _draft_scale(width, height, max_pixels) if isinstance(image, JpegImagePlugin.JpegImageFile) else 1
    if scale > 1:
        image.draft(None, (width // scale, height // scale))  # Pillow picks exactly this scale for this size
    decoded = image.size[0] * image.size[1]
    if decoded > max_pixels:
        reduced = f" (at 1/{scale} size, {image.size[0]}x{image.size[1]})" if scale > 1 else ""
        return (f"{width}x{height} pixels{reduced} take {_size(4 * decoded)} decoded, over the {max_pixels:,}-pixel "
                f"cap ({_size(4 * max_pixels)}; --max-pixels); not decoded")
    return None


def _size(n_bytes: int) -> str:
    value, unit = float(n_bytes), "bytes"
    for bigger in ("KB", "MB", "GB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:,.0f} {unit}" if value >= 10 or unit == "bytes" else f"{value:.1f} {unit}"


def _draft_scale(width: int, height: int, max_pixels: int) -> int:
    """The JPEG scale (1, 2, 4, 8) to decode at: as large as fits ``max_pixels`` and needs no more than a shorter
    side of WORKING_SIDE."""
    for scale in (1, 2, 4):
        fits = -(-width // scale) * -(-height // scale) <= max_pixels
        if fits and min(width, height) // (2 * scale) < WORKING_SIDE:
            return scale
    return 8


def _stream(source: Path | bytes) -> IO[bytes]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(source)
    return open(source, "rb")


def open_image(stream: IO[bytes]) -> ImageFile.ImageFile:
    """``Image.open(stream, formats=ALLOWED_FORMATS)`` without Pillow's fixed pixel-count check (see the module
    docstring): each allowed plugin is asked, in order, whether the first bytes are its format."""
    prefix = stream.read(16)
    for name in ALLOWED_FORMATS:
        factory, accept = Image.OPEN[name]
        verdict = accept(prefix) if accept else True
        if not verdict or isinstance(verdict, str):  # a str is Pillow's "not this format, because ..."
            continue
        stream.seek(0)
        try:
            return factory(stream, "")
        except (SyntaxError, IndexError, TypeError, struct.error):
            continue
    raise UnidentifiedImageError("cannot identify image file")


def _shrink(image: Image.Image) -> Image.Image:
    """Reduce a decoded image by an integer factor (an area average) while its shorter side stays >= WORKING_SIDE."""
    factor = min(image.size) // WORKING_SIDE
    if factor < 2:
        return image
    ImageOps.exif_transpose(image, in_place=True)  # first: a reduced copy keeps no TIFF orientation tag
    if image.mode == "1":
        image = image.convert("L")
    return image.reduce(factor) if image.mode in _REDUCIBLE else image
