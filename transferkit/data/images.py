"""Decode any supported image input into an upright RGB picture.

Imports only transferkit.core. Transparency is composited on white (not black, as a plain
``convert('RGB')`` would do); EXIF orientation is applied; grayscale becomes 3 equal channels.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


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
    with Image.open(Path(item)) as image:
        image.load()
        return to_rgb(image)
