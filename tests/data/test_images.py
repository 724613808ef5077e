"""transferkit.data.images: which files are images, 16-bit range scaling, and the size rule (memory, draft-mode
JPEGs, bytes-per-pixel bombs) on real large images built cheaply: single-colour or row-repeated PNGs written with
streaming zlib, header-only files whose sizes are judged without decoding."""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.data.badfiles import _chunk, bomb_png
from transferkit.data import images
from transferkit.data.images import (
    ALLOWED_FORMATS,
    DEFAULT_MAX_PIXELS,
    EXTENSION_FORMATS,
    IMAGE_EXTENSIONS,
    ImageDecodeError,
    decode_image,
    load_image,
    open_image,
    size_problem,
)


def _png(width: int, height: int, first_row: bytes, bit_depth: int = 8, colour: int = 0, rows: int | None = None) -> bytes:
    """A complete PNG whose every row repeats ``first_row`` (the 'Up' filter makes later rows zeros), compressed row
    by row: a picture of hundreds of megapixels costs a few KB and no memory. ``rows`` < height truncates it."""
    packer = zlib.compressobj(9)
    parts = [packer.compress(b"\x00" + first_row)]
    up = b"\x02" + bytes(len(first_row))
    parts += [packer.compress(up) for _ in range((rows if rows is not None else height) - 1)]
    parts.append(packer.flush())
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b""))


def _opened(data: bytes) -> Image.Image:
    return open_image(io.BytesIO(data))


# ------------------------------------------------------------------------------------------- which files are images


def test_image_extensions_are_every_extension_of_the_decoded_formats():
    Image.init()
    registered = {ext: fmt for ext, fmt in Image.registered_extensions().items() if fmt in ALLOWED_FORMATS}
    assert registered == EXTENSION_FORMATS, "list every extension Pillow gives the allowed formats, and no other"
    assert set(IMAGE_EXTENSIONS) == set(EXTENSION_FORMATS) and set(ALLOWED_FORMATS) == set(EXTENSION_FORMATS.values())
    assert {".tif", ".tiff", ".gif"} <= set(IMAGE_EXTENSIONS)


@pytest.mark.parametrize("fmt", ["TIFF", "GIF", "WEBP", "BMP"])
def test_every_allowed_format_decodes(fmt: str):
    buf = io.BytesIO()
    Image.new("RGB", (5, 3), (0, 0, 255)).save(buf, format=fmt)
    decoded = decode_image(buf.getvalue())
    assert decoded.size == (5, 3) and np.abs(np.asarray(decoded)[1, 2].astype(int) - (0, 0, 255)).max() <= 3


# ------------------------------------------------------------------------------------------------------ 16-bit range


def _sixteen_bit_png(values: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(values.astype(np.uint16)).save(buf, format="PNG")
    return buf.getvalue()


def test_16_bit_images_are_scaled_by_the_format_range_not_their_brightest_pixel():
    exposure = np.array([[0, 64, 128, 255], [40, 80, 120, 250]], dtype=np.uint16)  # a dark scan: all <= 255
    dim, bright = decode_image(_sixteen_bit_png(exposure)), decode_image(_sixteen_bit_png(exposure * 257))
    assert Image.open(io.BytesIO(_sixteen_bit_png(exposure))).mode.startswith("I;16")
    np.testing.assert_array_equal(np.asarray(dim)[..., 0], np.round(exposure / 257).astype(np.uint8))  # 65535 -> 255
    np.testing.assert_array_equal(np.asarray(bright)[..., 0], exposure)
    assert np.asarray(dim).max() == 1, "a dark 16-bit scan stays dark: it was stretched as if 255 were white"
    # the same picture held as mode 'I' (32-bit) and as a uint16 array decodes the same way
    as_int32 = Image.fromarray(exposure.astype(np.int32))
    assert as_int32.mode == "I"
    np.testing.assert_array_equal(np.asarray(load_image(as_int32)), np.asarray(dim))
    np.testing.assert_array_equal(np.asarray(load_image(exposure)), np.asarray(dim))
    np.testing.assert_array_equal(np.asarray(load_image(np.dstack([exposure] * 3))), np.asarray(dim))
    over = Image.fromarray(np.array([[70_000, -5]], dtype=np.int32))  # outside 16 bits: saturates, never rescales
    assert np.asarray(load_image(over))[0, :, 0].tolist() == [255, 0]


# ---------------------------------------------------------------------------------------------------- the size rule


def test_real_large_images_pass_and_bombs_do_not():
    """Judged from the header and the file's size, without decoding: the cases of the issue at full size."""
    clip_art = _png(10_527, 16_000, bytes(10_527 * 4), colour=6, rows=1)  # header-only: RGBA, 168 MP
    assert size_problem(_opened(clip_art), 3_500_000, DEFAULT_MAX_PIXELS) is None  # a real 3.5 MB file
    jpeg = io.BytesIO()
    Image.new("RGB", (64, 48), "grey").save(jpeg, format="JPEG")
    data = jpeg.getvalue()
    sof = data.index(b"\xff\xc0") + 5  # SOF0: height, width
    phone = data[:sof] + struct.pack(">HH", 12_240, 16_320) + data[sof + 4:]  # a 200 MP photo's header
    header = _opened(phone)
    assert size_problem(header, 30_000_000, DEFAULT_MAX_PIXELS) is None
    assert header.size == (4080, 3060), "decoded at 1/4 scale (draft mode), the shorter side still >= 2048"
    assert size_problem(_opened(phone), 30_000_000, 10_000_000) is None, "a JPEG fits a small cap by draft mode too"
    # a complete single-colour 1-bit 20,000 x 20,000 PNG is 76 KB, more pixels than the cap allows
    blank = _png(20_000, 20_000, bytes(2_500), bit_depth=1)
    assert len(blank) < 100_000
    assert "pixel cap" in size_problem(_opened(blank), len(blank), DEFAULT_MAX_PIXELS)
    assert size_problem(_opened(blank), len(blank), 10**9) is None, "it is a real, complete file: a larger cap takes it"
    # the same header in a few KB cannot be a complete file: a bomb, whatever the cap
    few_kb = _png(20_000, 20_000, bytes(2_500), bit_depth=1, rows=4_000)
    assert "decompression bomb" in size_problem(_opened(few_kb), len(few_kb), 10**9)
    assert "decompression bomb" in size_problem(_opened(clip_art), len(clip_art), 10**9)


def test_bombs_are_refused_fast_whatever_the_cap():
    for data in (bomb_png(20_000, 20_000), bomb_png()):
        with pytest.raises(ImageDecodeError, match="decompression bomb") as info:
            decode_image(data, 10**12)
        assert info.value.kind == "image-too-large"


def test_a_png_over_the_old_40_mp_cap_decodes_reduced(tmp_path: Path):
    """48 MP of 8-bit grey (a 40 KB file): decoded, then reduced by an integer factor to a shorter side >= 2048."""
    row = (np.arange(8_000) // 4 % 256).astype(np.uint8).tobytes()
    path = tmp_path / "poster.png"
    path.write_bytes(_png(8_000, 6_000, row))
    decoded = decode_image(path)
    assert decoded.size == (4_000, 3_000) and decoded.mode == "RGB"
    expected = (np.arange(8_000) // 4 % 256).reshape(-1, 2).mean(axis=1)
    np.testing.assert_allclose(np.asarray(decoded)[1_500, :, 0], expected, atol=1)


def test_a_jpeg_over_the_old_40_mp_cap_decodes_at_reduced_size(tmp_path: Path):
    path = tmp_path / "photo.jpg"
    Image.new("L", (7_000, 6_000), 90).save(path, quality=80)
    decoded = decode_image(path)
    assert decoded.size == (3_500, 3_000) and abs(int(np.asarray(decoded)[100, 100, 0]) - 90) <= 2


def test_the_cap_counts_decoded_pixels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The same rule at toy sizes: a JPEG over the cap fits it by draft mode; a PNG cannot, and is refused."""
    monkeypatch.setattr(images, "WORKING_SIDE", 64)
    Image.new("RGB", (512, 384), (10, 200, 30)).save(tmp_path / "big.jpg", quality=95)
    Image.new("RGB", (512, 384), (10, 200, 30)).save(tmp_path / "big.png")
    assert decode_image(tmp_path / "big.jpg", max_pixels=20_000).size == (128, 96)
    with pytest.raises(ImageDecodeError, match="20,000-pixel cap") as info:
        decode_image(tmp_path / "big.png", max_pixels=20_000)
    assert info.value.kind == "image-too-large" and "512x384" in str(info.value)
    assert decode_image(tmp_path / "big.png").size == (86, 64)  # reduced by 384 // 64 = 6 after decoding


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_orientation_survives_the_reduction(fmt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(images, "WORKING_SIDE", 4)
    upright = np.zeros((6, 4, 3), np.uint8)
    upright[:3, :2], upright[:3, 2:], upright[3:, :2] = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    stored = np.kron(np.rot90(upright, 1), np.ones((4, 4, 1), np.uint8))  # EXIF 6: stored rotated, 4x larger
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / f"rotated.{fmt.lower()}"
    Image.fromarray(np.ascontiguousarray(stored)).save(path, format=fmt, exif=exif.tobytes())
    np.testing.assert_array_equal(np.asarray(decode_image(path)), upright)


def test_float_tiff_is_refused_not_read_black(tmp_path: Path):
    """Mode F (32-bit float) has no fixed range: 0..1 values read as 0..255 would all be black, and every such
    image would look like a duplicate of every other. It is refused with the reason, like any unreadable file."""
    path = tmp_path / "f.tif"
    Image.fromarray(np.random.default_rng(0).random((16, 16), dtype=np.float32), mode="F").save(path)
    with pytest.raises(images.ImageDecodeError, match="floating-point"):
        images.decode_image(path)
    from transferkit.data.doctor import DoctorConfig, diagnose
    from transferkit.data.sources import load_source

    for name in ("a", "b"):
        (tmp_path / "d" / name).mkdir(parents=True)
        Image.fromarray(np.full((8, 8), 40, np.uint8)).save(tmp_path / "d" / name / "ok.png")
        path.replace(tmp_path / "d" / name / "f.tif") if name == "a" else \
            Image.fromarray(np.ones((8, 8), np.float32), mode="F").save(tmp_path / "d" / name / "f.tif")
    report = diagnose(load_source(tmp_path / "d"), DoctorConfig(needs_val_split=False))
    assert sorted(Path(item["path"]).parent.name for item in report.skipped()) == ["a", "b"]
    assert all("floating-point" in item["reason"] for item in report.skipped())
