"""The data doctor on images (D1-D3 of RELIABILITY.md): bad files found and left out, modes and EXIF orientations
decoded the same way, decompression bombs refused fast, duplicates and leakage found; and fit over messy folders."""
from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import transferkit
from tests.conftest import ROOT, write_digit_folder
from tests.data.badfiles import bomb_png, noise, png_bytes, write_bad_files
from transferkit.core.errors import DataError
from transferkit.data.doctor import DoctorConfig, diagnose
from transferkit.data.images import ImageDecodeError, decode_image, load_image
from transferkit.data.labels import LabelMap
from transferkit.data.loaders import make_loader
from transferkit.data.preprocess import PreprocessSpec
from transferkit.data.sources import load_source
from transferkit.strategies.base import Strategy

UNUSABLE = {"empty-file", "unreadable-image", "image-too-large"}


def _image_folder(root: Path, per_class: int, seed: int = 0, classes: tuple[str, ...] = ("a", "b")) -> Path:
    rng = np.random.default_rng(seed)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (root / name / f"{i}.png").write_bytes(png_bytes(noise(rng)))
    return root


@pytest.fixture(scope="module")
def thousand(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[Path, str]]:
    """980 good 8x8 PNGs in two classes and 20 bad files among them (4 each: zero-byte, truncated, corrupt,
    not an image under an image extension, decompression bomb). Read-only."""
    root = _image_folder(tmp_path_factory.mktemp("d1") / "data", 490)
    rng = np.random.default_rng(1)
    bad = write_bad_files(root / "a", rng, per_kind=2)
    bad.update(write_bad_files(root / "b", rng, per_kind=2))
    assert sum(1 for p in root.rglob("*") if p.is_file()) == 1000 and len(bad) == 20
    return root, bad


def test_d1_every_bad_file_is_named_and_left_out(thousand):
    root, bad = thousand
    splits = load_source(root)
    report = diagnose(splits)
    unusable = {Path(f.path): f for f in report.findings if f.kind in UNUSABLE}
    assert set(unusable) == set(bad), "exactly the 20 bad files are reported"
    for path, kind in bad.items():
        assert unusable[path].kind == kind, (path, unusable[path])
        assert unusable[path].message and unusable[path].severity == "warning"
    assert "looks like HTML" in unusable[root / "a" / "0-page.jpg"].message
    assert "decompression bomb" in unusable[root / "a" / "bomb-0.png"].message
    assert not report.fatal and report.n_skipped == 20
    assert sorted(report.to_dict()["left_out"]["train"]) == sorted(map(str, bad))
    clean = report.apply(splits)
    assert len(clean.train) == 980 and not set(clean.train.inputs) & set(map(str, bad))
    # one epoch through the training loader sees exactly the 980 good images, each once
    spec = PreprocessSpec("image", image_size=16)
    loader = make_loader(clean.train, spec, LabelMap(("a", "b")), 128, shuffle_seed=0, augment="light")
    seen = [int(i) for batch in loader for i in batch["index"]]
    assert sorted(seen) == list(range(980))


def test_d1_strict_makes_bad_files_fatal(thousand):
    report = diagnose(load_source(thousand[0]), DoctorConfig(strict=True))
    assert len(report.fatal) == 20
    with pytest.raises(DataError, match="20 fatal problem"):
        report.raise_if_fatal()


@pytest.mark.slow
def test_d1_fit_trains_on_exactly_the_good_images(thousand, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    root, bad = thousand
    val = _image_folder(tmp_path / "val", 5, seed=7)
    epochs: list[list[int]] = []
    original = Strategy.iter_batches

    def counting(self, loader, ctx):
        epochs.append([])
        for batch in original(self, loader, ctx):
            epochs[-1].extend(int(i) for i in batch["index"])
            yield batch

    monkeypatch.setattr(Strategy, "iter_batches", counting)
    run = tmp_path / "run"
    transferkit.fit(str(root), val_data=str(val), model="efficientnet_lite0", strategy="head", epochs=2, image_size=16,
                    batch_size=64, baseline=False, patience=0, out=str(run), progress=False)
    assert [sorted(e) for e in epochs] == [list(range(980))] * 2, "each epoch sees the 980 good images once"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n_train_used"] == 980 and metrics["n_skipped"] == 20
    report = json.loads((run / "data_report.json").read_text())
    assert sorted(report["left_out"]["train"]) == sorted(map(str, bad))
    assert "## Data doctor" in (run / "report.md").read_text()


def test_wrong_extension_that_decodes_is_a_warning_and_kept(tmp_path: Path):
    root = _image_folder(tmp_path / "data", 3)
    (root / "a" / "really-a-png.jpg").write_bytes(png_bytes(noise(np.random.default_rng(5))))
    report = diagnose(load_source(root))
    [finding] = report.findings
    assert finding.kind == "wrong-extension" and "PNG" in finding.message and report.n_skipped == 0


# ------------------------------------------------------------------------------------------------- D2: modes, EXIF

GREY = np.array([[0, 40, 80, 120], [160, 200, 240, 255], [10, 20, 30, 250], [5, 15, 25, 35]], dtype=np.uint8)
RGB = np.stack([GREY, 255 - GREY, np.roll(GREY, 1, axis=1)], axis=-1)
ALPHA = np.where(np.arange(16).reshape(4, 4) % 3 == 0, 0, 255).astype(np.uint8)  # transparent or opaque
WHITE = np.full(3, 255, np.uint8)


def _mode_files() -> dict[str, tuple[bytes, np.ndarray]]:
    grey_rgb = np.repeat(GREY[..., None], 3, axis=2)
    palette = Image.fromarray(RGB).quantize(colors=16, method=Image.Quantize.MEDIANCUT)
    palette_rgb = np.asarray(palette.convert("RGB"))
    cmyk = io.BytesIO()
    Image.fromarray(RGB).convert("CMYK").save(cmyk, format="TIFF")
    sixteen = io.BytesIO()
    Image.fromarray(GREY.astype(np.uint16) * 257).save(sixteen, format="PNG")
    return {
        "L": (png_bytes(GREY), grey_rgb),
        "I;16": (sixteen.getvalue(), grey_rgb),
        "LA": (png_bytes(np.stack([GREY, ALPHA], axis=-1)), np.where(ALPHA[..., None] == 0, WHITE, grey_rgb)),
        "RGBA": (png_bytes(np.dstack([RGB, ALPHA])), np.where(ALPHA[..., None] == 0, WHITE, RGB)),
        "P+transparency": (_palette_png(palette),  # palette index of the top-left pixel is transparent
                           np.where((np.asarray(palette) == np.asarray(palette)[0, 0])[..., None], WHITE, palette_rgb)),
        "CMYK": (cmyk.getvalue(), RGB),
    }


def _palette_png(palette: Image.Image) -> bytes:
    buf = io.BytesIO()
    palette.save(buf, format="PNG", transparency=int(np.asarray(palette)[0, 0]))
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["L", "I;16", "LA", "RGBA", "P+transparency", "CMYK"])
def test_d2_every_mode_becomes_the_same_rgb(mode: str, tmp_path: Path):
    data, expected = _mode_files()[mode]
    stored = Image.open(io.BytesIO(data))
    assert stored.mode.split(";")[0] in ("L", "I", "LA", "RGBA", "P", "CMYK") and stored.mode != "RGB"
    path = tmp_path / f"picture.{'tif' if mode == 'CMYK' else 'png'}"
    path.write_bytes(data)
    for decoded in (decode_image(path), decode_image(data), load_image(str(path))):
        assert decoded.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(decoded), expected)


UPRIGHT = np.zeros((6, 4, 3), np.uint8)  # taller than wide, four coloured quadrants and a marker corner
UPRIGHT[:3, :2], UPRIGHT[:3, 2:], UPRIGHT[3:, :2], UPRIGHT[3:, 2:] = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)
UPRIGHT[0, 0] = (255, 255, 255)
# EXIF orientation -> how the stored pixels relate to the upright picture (the inverse of what viewers apply)
STORED = {1: lambda u: u, 2: np.fliplr, 3: lambda u: np.rot90(u, 2), 4: np.flipud,
          5: lambda u: u.swapaxes(0, 1), 6: lambda u: np.rot90(u, 1), 7: lambda u: np.rot90(u.swapaxes(0, 1), 2),
          8: lambda u: np.rot90(u, -1)}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_d2_exif_orientations_give_the_upright_picture(orientation: int, tmp_path: Path):
    stored = Image.fromarray(np.ascontiguousarray(STORED[orientation](UPRIGHT)))
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.png"
    stored.save(path, exif=exif.tobytes())
    np.testing.assert_array_equal(np.asarray(decode_image(path)), UPRIGHT)


# ------------------------------------------------------------------------------------------------------- D3: bombs


def test_d3_bomb_is_refused_fast_from_its_header(tmp_path: Path):
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png())
    start = time.perf_counter()
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        decode_image(path)
    assert time.perf_counter() - start < 1.0
    report = diagnose(load_source(_image_folder(tmp_path / "data", 3)))
    assert not report.findings
    shutil.copy(path, tmp_path / "data" / "a" / "bomb.png")
    report = diagnose(load_source(tmp_path / "data"))
    assert [f.kind for f in report.findings] == ["image-too-large"] and report.n_skipped == 1


def test_d3_bomb_memory_growth_is_small(tmp_path: Path):
    """Peak RSS of a fresh interpreter grows < 100 MB while it refuses a 10-gigapixel PNG (and a smaller cap too)."""
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png())
    # a bare package object skips transferkit/__init__ (torch, transformers: seconds of imports, hundreds of MB)
    code = ("import resource, sys, types\nfrom pathlib import Path\npackage = types.ModuleType('transferkit')\n"
            f"package.__path__ = [{str(ROOT / 'transferkit')!r}]\nsys.modules['transferkit'] = package\n"
            "from transferkit.data.images import decode_image\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            f"for cap in (40_000_000, 1_000):\n    try:\n        decode_image(Path({str(path)!r}), cap)\n"
            "    except Exception as exc:\n        assert 'decompression bomb' in str(exc), exc\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) < 100 * 1024, f"peak RSS grew by {out.stdout.strip()} KiB"


def test_max_pixels_is_configurable(tmp_path: Path):
    root = _image_folder(tmp_path / "data", 3)
    Image.new("RGB", (9, 9), "red").save(root / "b" / "big.png")
    report = diagnose(load_source(root), DoctorConfig(max_pixels=80))
    assert [(f.kind, Path(f.path).name) for f in report.findings] == [("image-too-large", "big.png")]
    assert "80-pixel cap" in report.findings[0].message and report.n_skipped == 1


# ------------------------------------------------------------------------------------------------ leakage, images


def test_image_leakage_exact_and_near_duplicates_and_dedupe(tmp_path: Path):
    root = tmp_path / "data"
    _image_folder(root / "train", 6, seed=1)
    _image_folder(root / "test", 3, seed=2)
    source = Image.open(root / "train" / "a" / "0.png").resize((64, 64), Image.Resampling.NEAREST)
    source.save(root / "train" / "a" / "0.png")
    shutil.copy(root / "train" / "a" / "0.png", root / "test" / "a" / "copy.png")  # exact copy in test
    source.resize((60, 60), Image.Resampling.BILINEAR).save(root / "test" / "b" / "resized.jpg", quality=95)
    shutil.copy(root / "train" / "b" / "1.png", root / "train" / "b" / "again.png")  # duplicate within train
    splits = load_source(root)
    report = diagnose(splits)
    kinds = {(f.kind, Path(f.path).name) for f in report.findings}
    assert kinds == {("leakage", "copy.png"), ("near-duplicate", "resized.jpg"), ("duplicate", "again.png")}, kinds
    leak = next(f for f in report.findings if f.kind == "near-duplicate")
    assert str(root / "train" / "a" / "0.png") in leak.message and "labelled 'b' here and 'a' there" in leak.message
    assert report.n_skipped == 0 and len(report.apply(splits).test) == 8
    deduped = diagnose(splits, DoctorConfig(dedupe=True))
    clean = deduped.apply(splits)
    assert deduped.n_skipped == 3 and len(clean.train) == 12 and len(clean.test) == 6
    assert not {Path(p).name for p in clean.test.inputs} & {"copy.png", "resized.jpg"}


def test_fit_stops_before_training_on_fatal_findings(tmp_path: Path):
    root = _image_folder(tmp_path / "one", 4, classes=("only",))
    with pytest.raises(DataError, match="single-class|classification needs at least 2 classes"):
        transferkit.fit(str(root), model="efficientnet_lite0", strategy="linear-probe", out=str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()
    (root / "other").mkdir()
    (root / "other" / "x.png").write_bytes(png_bytes(noise(np.random.default_rng(3))))
    with pytest.raises(DataError, match="class 'other' has 1 usable example"):
        transferkit.fit(str(root), strategy="linear-probe", out=str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------- what an image folder lists


def test_everything_a_folder_listing_leaves_out_is_named(tmp_path: Path):
    """OS files are only counted; a text file, a PSD, a sub-folder, a stray image, a README beside the splits are
    each a finding with its path; the sub-folder's images are read as its class."""
    root = tmp_path / "data"
    _image_folder(root / "train", 3)
    _image_folder(root / "test", 2, seed=1)
    for folder in (root / "train" / "a", root / "train" / "b", root / "test" / "a", root / "test" / "b"):
        (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
        (folder / "._0.png").write_bytes(b"\0\5\x16\7\0\2\0\0Mac OS X")
    (root / "train" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (root / "__MACOSX" / "train" / "a").mkdir(parents=True)
    (root / "train" / "a" / "notes.txt").write_text("where these came from")
    (root / "train" / "a" / "layers.psd").write_bytes(b"8BPS\0\1")
    nested = root / "train" / "b" / "more" / "x.png"
    nested.parent.mkdir()
    nested.write_bytes(png_bytes(noise(np.random.default_rng(7))))
    (root / "train" / "stray.png").write_bytes(png_bytes(noise(np.random.default_rng(8))))
    (root / "README.md").write_text("# data")
    (root / "extra").mkdir()
    splits = load_source(root)
    assert splits.train.labels[splits.train.inputs.index(str(nested))] == "b"
    report = diagnose(splits)
    found = {(f.kind, Path(f.path).relative_to(root).as_posix()) for f in report.findings}
    assert found == {("unexpected-file", "train/a/notes.txt"), ("unexpected-file", "train/a/layers.psd"),
                     ("unexpected-folder", "train/b/more"), ("unexpected-file", "train/stray.png"),
                     ("unexpected-file", "README.md"), ("unexpected-folder", "extra")}, found
    messages = {Path(f.path).name: f.message for f in report.findings}
    assert "not an image file (.txt" in messages["notes.txt"] and "read as class 'b'" in messages["more"]
    assert "no class" in messages["stray.png"] and not report.fatal and report.n_skipped == 0
    assert report.stats["os_files_ignored"] == 10  # 4 x (.DS_Store, ._0.png), Thumbs.db, __MACOSX
    assert len(diagnose(splits, DoctorConfig(strict=True)).fatal) == 6


def test_class_folders_in_two_unicode_forms_are_one_class(tmp_path: Path):
    root = tmp_path / "data"
    _image_folder(root / "train", 3, classes=("cafe\u0301", "tea"))
    _image_folder(root / "val", 2, seed=1, classes=("caf\u00e9", "tea"))
    report = diagnose(load_source(root))
    assert not report.findings, report.findings  # no empty class, no unknown label, no similar names


def test_16_bit_scans_of_different_exposure_are_not_duplicates(tmp_path: Path):
    """A dark 16-bit scan (every value <= 255) used to be stretched to the brightness of a 257x brighter one."""
    root = _image_folder(tmp_path / "data", 3)
    scan = np.random.default_rng(4).integers(0, 256, (8, 8)).astype(np.uint16)
    Image.fromarray(scan).save(root / "a" / "dark.png")
    Image.fromarray(scan * 257).save(root / "b" / "bright.png")
    report = diagnose(load_source(root))
    assert not report.findings, report.findings


def test_evaluate_and_predict_read_a_folder_copied_from_a_mac(tmp_path: Path):
    root = tmp_path / "data"
    write_digit_folder(root, (0, 1), 4)
    for folder in (root, root / "0", root / "1"):
        for image in [p for p in folder.iterdir() if p.is_file()]:
            (folder / f"._{image.name}").write_bytes(b"\0\5\x16\7\0\2\0\0Mac OS X")
        (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "__MACOSX" / "0").mkdir(parents=True)
    (root / "__MACOSX" / "0" / "._0.png").write_bytes(b"\0\5\x16\7")
    run = transferkit.fit(str(root), model="efficientnet_lite0", strategy="linear-probe", image_size=32,
                          baseline=False, out=str(tmp_path / "run"), progress=False)
    assert json.loads((Path(run.run_dir) / "metrics.json").read_text())["n_skipped"] == 0
    metrics = transferkit.evaluate(run.bundle_dir, str(root), progress=False)
    assert metrics["n"] == 8
    predictions = transferkit.predict(run.bundle_dir, str(root), progress=False)
    assert len(predictions.ids) == 8 and not predictions.errors


def test_loaders_decode_with_the_cap_the_checks_used(tmp_path: Path):
    """--max-pixels reaches the loaders: an image the doctor accepted under a raised cap is never refused mid-run,
    and one refused under a lowered cap would be refused by the loader too (the cap travels with the examples)."""
    root = _image_folder(tmp_path / "imgs", per_class=3)  # 8x8 images
    splits = load_source(root)
    labels = LabelMap.from_labels(splits.train.labels, "t")
    spec = PreprocessSpec(modality="image", image_size=16)
    for cap, kept in ((8 * 8, 6), (8 * 8 - 1, 0)):
        report = diagnose(splits, DoctorConfig(max_pixels=cap, needs_val_split=False))
        train = report.apply(splits).train
        assert (train.max_pixels, len(train)) == (cap, kept)
        assert train.subset(range(len(train))).max_pixels == cap
    strict = splits.train.subset(range(len(splits.train)))
    strict.max_pixels = 8 * 8 - 1  # what a loader would meet if the checks had used a larger cap than it
    with pytest.raises(ImageDecodeError, match="pixel"):
        next(iter(make_loader(strict, spec, labels, 2)))
    loose = diagnose(splits, DoctorConfig(max_pixels=8 * 8, needs_val_split=False)).apply(splits).train
    assert next(iter(make_loader(loose, spec, labels, 2)))["pixel_values"].shape[0] == 2
