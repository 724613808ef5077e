"""The domain-adaptation report section: target-test table, gap closed, selection table, feature projection, and
that report.html / report.md render it."""
from __future__ import annotations

import numpy as np
import pytest

from tests.evaluate.test_report import DATA_URI, decode_png, section, unit_run
from transferkit.evaluate.domain_report import (
    domain_markdown,
    domain_section,
    feature_projection,
    gap_share,
    selection_summary,
    target_test_table,
)
from transferkit.evaluate.html import render_report
from transferkit.evaluate.report import render_markdown


def test_gap_closed_is_the_share_of_source_only_to_oracle():
    table = target_test_table({"accuracy": 0.7, "macro_f1": 0.65, "n": 200}, {"accuracy": 0.5, "macro_f1": 0.4},
                              "dann", oracle_accuracy=0.9)
    assert table["gap_closed"] == pytest.approx(0.5)
    assert table["gain"] == pytest.approx(0.2)
    assert "raised target-test accuracy by 20.0 points" in table["statement"]
    assert "closed 50.0 % of the gap" in table["gap_statement"]
    assert [r["accuracy"] for r in table["rows"]] == pytest.approx([0.5, 0.7, 0.9])
    assert gap_share(0.5, 0.4, 0.9) == pytest.approx(-0.25)  # worse than source-only: negative
    worse = target_test_table({"accuracy": 0.4}, {"accuracy": 0.5}, "dann", oracle_accuracy=0.9)
    assert worse["gap_statement"].startswith("Adaptation widened the gap") and "(-25.0 % closed)" in worse["gap_statement"]


def test_no_oracle_no_gap_and_an_oracle_below_source_only_has_no_gap():
    table = target_test_table({"accuracy": 0.6}, {"accuracy": 0.7}, "coral")
    assert table["gap_closed"] is None and "No target oracle was given" in table["gap_statement"]
    assert "lowered target-test accuracy by 10.0 points" in table["statement"]
    assert len(table["rows"]) == 2
    assert gap_share(0.8, 0.85, 0.8) is None
    assert "no gap" in target_test_table({"accuracy": 0.9}, {"accuracy": 0.8}, "mmd", 0.75)["gap_statement"]


def test_projection_measures_alignment_before_and_after():
    rng = np.random.default_rng(0)
    before = (rng.normal(0, 1, (60, 16)), rng.normal(3, 1, (60, 16)))  # domains far apart
    after = (rng.normal(0, 1, (60, 16)), rng.normal(0, 1, (60, 16)))  # aligned
    projection = feature_projection(before, after, method="tsne")
    assert projection["domain_accuracy"]["before"] > 0.95
    assert projection["domain_accuracy"]["after"] < 0.7
    assert "brought the domains' features closer" in projection["statement"]
    image = decode_png(DATA_URI.match(projection["plot"]).group(1))
    assert image.width > 1.6 * image.height  # two panels side by side
    single = feature_projection(after, None, method="pca")
    assert decode_png(DATA_URI.match(single["plot"]).group(1)).width < image.width
    assert "after" not in single["domain_accuracy"]
    with pytest.raises(ValueError, match="umap"):
        feature_projection(before, method="umap")


def test_projection_samples_large_domains():
    rng = np.random.default_rng(1)
    big = (rng.normal(size=(900, 4)), rng.normal(size=(50, 4)))
    assert feature_projection(big, method="pca", max_points=100)["domain_accuracy"]["before"] <= 1.0


def test_selection_summary_lists_the_score_per_epoch():
    history = [{"epoch": 0, "dev_risk": 1.2}, {"epoch": 1, "dev_risk": 0.8}, {"epoch": 2, "dev_risk": 0.9},
               {"epoch": 3, "diverged": "x"}]
    summary = selection_summary(history, chosen=1, by_source=2)
    assert [r["epoch"] for r in summary["rows"]] == [0, 1, 2]
    assert [r["kept"] for r in summary["rows"]] == [False, True, False]
    assert "epoch 1: 0.8000" in summary["statement"] and "would have kept epoch 2" in summary["statement"]
    assert selection_summary([{"epoch": 0, "val_loss": 1.0}], chosen=0) is None


def test_report_renders_the_domain_section():
    rng = np.random.default_rng(2)
    run = unit_run("test", before_correct=5, after_correct=8, strategy="dann")
    run["domain"] = domain_section(
        target_test=target_test_table({"accuracy": 0.8, "macro_f1": 0.78, "n": 10}, {"accuracy": 0.5}, "dann", 0.9),
        selection=selection_summary([{"epoch": 0, "dev_risk": 1.0}, {"epoch": 1, "dev_risk": 0.6}], chosen=1),
        projection=feature_projection((rng.normal(size=(30, 8)), rng.normal(2, 1, (30, 8))),
                                      (rng.normal(size=(30, 8)), rng.normal(size=(30, 8))), method="pca"))
    html = section(render_report(run), "<h2>Across domains</h2>")
    assert "closed 75.0 % of the gap" in html
    assert "<td>target oracle (trained on target labels)</td><td>0.9000</td><td>–</td>" in html
    assert "<tr><td>1</td><td>0.6000</td><td>yes</td></tr>" in html
    plot = DATA_URI.search(html)
    assert plot is not None and decode_png(plot.group(1)).width > 200
    md = render_markdown(run)
    assert "## Across domains" in md and "| adapted: dann | 0.8000 | 0.7800 |" in md
    assert "Label-free selection kept epoch 1" in md
    assert domain_section() is None and domain_markdown(None) == []
    plain = unit_run("test", 5, 8)
    assert "Across domains" not in render_report(plain) and "Across domains" not in render_markdown(plain)
