"""transferkit.evaluate.plots: class names in any script are drawn with their glyphs, not as empty boxes."""
from __future__ import annotations

import warnings
from collections.abc import Callable

import matplotlib
import pytest

from transferkit.evaluate import plots

NAMES = ["\u732b", "\u72ac", "\u306d\u3053", "\uace0\uc591\uc774", "caf\u00e9"]  # Chinese, Japanese, Korean, Latin


def _missing_glyphs(draw: Callable[[], str]) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert draw().startswith("data:image/png;base64,")
    return [str(w.message) for w in caught if "missing from font" in str(w.message)]


@pytest.fixture(scope="module")
def cjk_font() -> str:
    found = plots.cjk_fonts()
    if not found:
        pytest.skip("no font with CJK glyphs is installed (scripts/setup.sh installs Debian's fonts-wqy-microhei)")
    return found[0]


def test_cjk_class_names_have_their_glyphs(cjk_font: str):
    matrix = [[3, 1, 0, 0, 0], [0, 4, 0, 0, 0], [0, 0, 2, 0, 0], [0, 0, 0, 5, 0], [1, 0, 0, 0, 3]]
    assert _missing_glyphs(lambda: plots.confusion_matrix(matrix, NAMES)) == []
    assert _missing_glyphs(lambda: plots.bar_chart(dict(zip(NAMES, [4, 4, 2, 5, 4])), "\u8bad\u7ec3")) == []
    assert _missing_glyphs(lambda: plots.label_efficiency({"\u5fae\u8c03": [(10, 0.8, 0.01)]})) == []


def test_without_the_fallback_the_same_plot_misses_glyphs(cjk_font: str):
    """The check above can fail: the bare plot function, drawn with the default font alone, warns."""
    with matplotlib.rc_context({"font.family": ["DejaVu Sans"]}):
        missing = _missing_glyphs(lambda: plots.bar_chart.__wrapped__({"\u732b": 1, "dog": 2}, "counts"))
    assert missing and "DejaVu Sans" in missing[0]


def test_plots_leave_the_callers_font_settings_alone(cjk_font: str):
    before = list(matplotlib.rcParams["font.family"])
    plots.bar_chart({"\u732b": 1, "dog": 2}, "counts")
    assert matplotlib.rcParams["font.family"] == before
