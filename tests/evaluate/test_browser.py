"""report.html and compare.html open in a real browser (headless Chromium via Playwright) with no console errors,
no network request, every image decoded, and a full page that is actually drawn."""
from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

VIEWPORT = {"width": 1280, "height": 720}


@pytest.fixture(scope="module")
def chromium_path() -> str:
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("no Chromium executable on PATH (chromium / chromium-browser); apt-get install chromium")
    return path


@pytest.fixture(scope="module")
def browser(chromium_path: str):
    from playwright.sync_api import Error, sync_playwright

    with sync_playwright() as p:
        try:
            instance = p.chromium.launch(executable_path=chromium_path, args=["--no-sandbox"])
        except Error as exc:  # e.g. a Chromium too old for this Playwright
            pytest.skip(f"Chromium at {chromium_path} does not start under Playwright: {str(exc).splitlines()[0]}")
        yield instance
        instance.close()


@pytest.fixture(scope="module")
def compare_html(chromium_path: str, digits_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transferkit.compare import compare

    out = tmp_path_factory.mktemp("browser-compare") / "cmp"
    compare(str(digits_folder), ["linear-probe", "scratch"], [5], seeds=1, out=str(out), progress=False,
            model="efficientnet_lite0", epochs=1, image_size=32)
    return out / "compare.html"


def open_in_browser(browser, path: Path) -> dict:
    """Load ``path`` and return what happened: errors, outside requests, images, screenshot, body font."""
    page = browser.new_page(viewport=VIEWPORT)
    errors: list[str] = []
    outside: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("request", lambda req: outside.append(req.url) if not req.url.startswith(("file:", "data:")) else None)
    page.route(lambda url: not url.startswith(("file:", "data:")), lambda route: route.abort())
    page.goto(path.resolve().as_uri(), wait_until="load")
    images = page.evaluate("""() => Array.from(document.images).map(img => ({
        alt: img.alt, complete: img.complete, width: img.naturalWidth, height: img.naturalHeight}))""")
    font = page.evaluate("() => getComputedStyle(document.body).fontFamily")
    shot = page.screenshot(full_page=True)
    page.close()
    return {"errors": errors, "outside": outside, "images": images, "font": font, "screenshot": shot}


def assert_drawn(png: bytes) -> None:
    image = Image.open(io.BytesIO(png)).convert("RGB")
    pixels = np.asarray(image)
    assert image.width == VIEWPORT["width"]
    assert image.height > VIEWPORT["height"], "the full page is not taller than one screen: content missing?"
    assert pixels.std() > 20, "the page looks blank"
    colours = np.unique(pixels.reshape(-1, 3)[::7], axis=0)
    assert len(colours) > 200, f"only {len(colours)} distinct colours: no plots drawn?"


@pytest.fixture(scope="module")
def report_page(browser, image_run: Path) -> dict:
    return open_in_browser(browser, image_run / "report.html")


@pytest.fixture(scope="module")
def compare_page(browser, compare_html: Path) -> dict:
    return open_in_browser(browser, compare_html)


def test_report_html_renders_offline_without_errors(report_page: dict):
    assert report_page["errors"] == []
    assert report_page["outside"] == []
    images = report_page["images"]
    assert len(images) >= 5  # class counts, learning curves, confusion + reliability per split, thumbnails
    broken = [img["alt"] for img in images if not img["complete"] or img["width"] == 0]
    assert broken == []
    thumbs = [img for img in images if img["alt"].endswith(".png")]
    assert thumbs and all(img["width"] == img["height"] == 32 for img in thumbs)
    assert_drawn(report_page["screenshot"])


def test_compare_html_renders_offline_without_errors(compare_page: dict):
    assert compare_page["errors"] == []
    assert compare_page["outside"] == []
    images = compare_page["images"]
    assert [img["alt"] for img in images] == ["accuracy vs labels per class"]
    assert images[0]["complete"] and images[0]["width"] > 300
    assert_drawn(compare_page["screenshot"])


@pytest.mark.parametrize("which", ["report_page", "compare_page"])
def test_inline_stylesheet_applies(which: str, request: pytest.FixtureRequest):
    """base.css sets the body font to system-ui...; an HTML-escaped <style> block drops that declaration."""
    font = request.getfixturevalue(which)["font"]
    assert "system-ui" in font, font
