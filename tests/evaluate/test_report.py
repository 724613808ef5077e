"""Reports: the gain sentences (report.py), comparison aggregation (comparison.py), the HTML renderer (html.py),
and what a real tiny image fit and text fit write (report.html, report.md, metrics.json)."""
from __future__ import annotations

import base64
import html as htmllib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transferkit.evaluate import comparison
from transferkit.evaluate.html import (
    SNIPPET_CHARS,
    confident_errors,
    inputs_summary,
    render_compare,
    render_report,
    thumbnail,
)
from transferkit.evaluate.metrics import classification_metrics
from transferkit.evaluate.multilabel_report import render_multilabel_html
from transferkit.evaluate.report import (
    before_after_notes,
    before_after_section,
    before_after_table,
    no_before_after_note,
    render_markdown,
)
from transferkit.evaluate.token_report import render_token_markdown

NAMES = ["cat", "dog", "fox"]
DATA_URI = re.compile(r"data:image/png;base64,([A-Za-z0-9+/=]+)")


def decode_png(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    assert image.format == "PNG"
    image.load()
    return image


def attribute_urls(html: str) -> list[str]:
    return re.findall(r"""\b(?:src|href)\s*=\s*["']?([^"'\s>]*)""", html, flags=re.I)


def section(html: str, heading: str) -> str:
    """The HTML from ``heading`` up to the next h2/h3."""
    start = html.index(heading) + len(heading)
    end = re.search(r"<h[23][ >]", html[start:])
    return html[start: start + end.start()] if end else html[start:]


# ------------------------------------------------------------------------------------------- before vs after


def metrics_with_accuracy(correct: int, n: int = 10) -> dict:
    y = np.arange(n) % 3
    pred = y.copy()
    pred[correct:] = (y[correct:] + 1) % 3
    p = np.full((n, 3), 0.1)
    p[np.arange(n), pred] = 0.8
    return classification_metrics(y, pred, NAMES, p)


def unit_run(split: str, before_correct: int, after_correct: int, strategy: str = "finetune") -> dict:
    after = metrics_with_accuracy(after_correct)
    metrics = {split: after}
    before = {"split": split, **metrics_with_accuracy(before_correct)}
    counts = {"train": {"cat": 4, "dog": 4, "fox": 4}, split: {"cat": 4, "dog": 3, "fox": 3}}
    return {"title": "unit", "model": "efficientnet_lite0", "strategy": strategy, "created": "2024-01-01T00:00:00",
            "metrics": metrics, "notes": before_after_notes(before, metrics, strategy),
            "data": {"sizes": {"train": 12, split: 10}, "class_counts": counts, "inputs_summary": ""},
            "history": [], "config": {"seed": 0}, "environment": {"python": "3"}, "trainable_params": 10,
            "total_params": 100, "before_after": before_after_table(before, metrics, strategy), "errors": {}}


def test_negative_gain_is_stated_in_words():
    run = unit_run("test", before_correct=9, after_correct=7)
    table = run["before_after"]
    assert table["gain"] == pytest.approx(-0.2)
    assert table["statement"].startswith("Negative transfer gain")
    assert "20.0 points below" in table["statement"]
    assert [r["accuracy"] for r in table["rows"]] == pytest.approx([0.9, 0.7])
    md = render_markdown(run)
    assert "Negative transfer gain: finetune is 20.0 points below the frozen-feature linear probe" in md
    assert "| before: linear probe on frozen pretrained features | 0.9000 |" in md
    assert "| after: finetune | 0.7000 |" in md
    page = render_report(run)
    assert re.search(r'<p class="bad">Negative transfer gain: finetune is 20\.0 points below', page)


def test_positive_gain_has_a_plus_sign():
    run = unit_run("test", before_correct=6, after_correct=7)
    statement = run["before_after"]["statement"]
    assert "+10.0 points" in statement and "Negative" not in statement and "below" not in statement
    assert statement in render_markdown(run)
    assert '<p class="good">Adapting with finetune gained +10.0 points' in render_report(run)


def test_no_before_after_without_a_before_or_its_split():
    after = {"test": metrics_with_accuracy(7)}
    assert before_after_table(None, after, "finetune") is None
    assert before_after_table({"split": "val", **metrics_with_accuracy(5)}, after, "finetune") is None
    assert before_after_notes(None, after, "finetune") == []


def test_before_after_table_in_html_names_the_split_it_compares_on():
    """A run without a test set compares on val; the HTML table header must not claim 'test'."""
    run = unit_run("val", before_correct=9, after_correct=7)
    md_header = re.search(r"## Before vs after adaptation\n\n(\|.*\|)", render_markdown(run)).group(1)
    assert "val accuracy" in md_header
    table = section(render_report(run), "<h2>Before vs after adaptation</h2>")
    assert "val accuracy" in table and "test accuracy" not in table, table


def test_multilabel_before_after_gives_micro_f1_and_map_and_says_why_map_is_absent():
    before = {"split": "test", "micro_f1": 0.8, "map": 0.9}
    metrics = {"test": {"micro_f1": 0.7, "map": None, "n": 10}}
    table = before_after_table(before, metrics, "head", "multilabel")
    assert table["gain"] == pytest.approx(-0.1) and table["labels"] == ["micro-F1", "mAP"]
    assert table["statement"] == ("Negative transfer gain: head is 0.100 of test micro-F1 below the frozen-feature "
                                  "one-vs-rest logistic probe; adapting the backbone hurt here, so prefer "
                                  "--strategy linear-probe or more data.")
    assert table["absent"].startswith("No mAP for after: it needs per-label scores")
    md = "\n".join(before_after_section(table))
    assert "| model | test micro-F1 | test mAP |" in md
    assert "| before: one-vs-rest logistic probe on frozen pretrained features | 0.8000 | 0.9000 |" in md
    assert "| after: head | 0.7000 | – |" in md and table["absent"] in md
    page = render_multilabel_html({"title": "t", "metrics": metrics, "config": {}, "before_after": table})
    assert "<th>test mAP</th>" in page and "class='bad'>Negative transfer gain: head is 0.100" in page


def test_tokens_before_after_gains_in_entity_f1():
    before = {"split": "val", "entity_f1": 0.5, "token_accuracy": 0.9}
    metrics = {"val": {"entity_f1": 0.75, "entity_precision": 0.75, "entity_recall": 0.75, "token_accuracy": 0.95,
                       "n": 4}}
    table = before_after_table(before, metrics, "lora", "tokens")
    assert table["statement"] == ("Adapting with lora gained +0.250 of val entity F1 over the frozen-feature "
                                  "per-word logistic probe.")
    assert "absent" not in table and before_after_notes(before, metrics, "lora", "tokens") == [table["statement"]]
    md = render_token_markdown({"title": "t", "model": "minilm", "strategy": "lora", "metrics": metrics,
                                "before_after": table})
    assert "| model | val entity F1 | val token accuracy |" in md and "| after: lora | 0.7500 | 0.9500 |" in md


@pytest.mark.parametrize(("strategy", "pretrained", "baseline", "reason"), [
    ("linear-probe", True, True, "this run is the frozen-feature probe"),
    ("scratch", False, True, "scratch starts from random weights"),
    ("lora", True, False, "turned off (baseline=False)"),
    ("lora", True, True, None),
])
def test_a_missing_before_after_says_why(strategy, pretrained, baseline, reason):
    notes = no_before_after_note(strategy, pretrained, baseline)
    assert notes == [] if reason is None else reason in notes[0]


def test_report_css_is_not_html_escaped():
    """The stylesheet is inlined in <style>, where the browser does not decode entities: quotes must stay quotes."""
    from importlib import resources

    css = resources.files("transferkit.evaluate").joinpath("templates", "base.css").read_text("utf-8")
    assert '"' in css  # font-family: ... "Segoe UI" ...
    for page in (render_report(unit_run("test", 9, 7)), render_compare(compare_summary())):
        style = re.search(r"<style>(.*?)</style>", page, re.S).group(1)
        assert style.strip() == css.strip()


# ------------------------------------------------------------------------------------------- comparison


def record(strategy, k, seed, accuracy, macro_f1=None, seconds=1.0, params=None):
    return {"strategy": strategy, "labels_per_class": k, "seed": seed, "accuracy": accuracy,
            "macro_f1": accuracy if macro_f1 is None else macro_f1, "seconds": seconds, "trainable_params": params}


RUNS = [
    record("linear-probe", 5, 0, 0.6, 0.5, 2.0, 30), record("linear-probe", 5, 1, 0.8, 0.7, 4.0, 30),
    record("scratch", 5, 0, 0.75, params=1000), record("scratch", 5, 1, 0.75, params=1000),
    record("pixels-logreg", 5, 0, 0.5), record("pixels-logreg", 5, 1, 0.7),
    record("linear-probe", None, 0, 0.9, params=30), record("scratch", None, 0, 0.8, params=1000),
    record("pixels-logreg", None, 0, 0.95),
    record("linear-probe", 10, 0, 0.85, params=30), record("linear-probe", 10, 1, 0.95, params=30),
    record("scratch", 10, 0, 0.85, params=1000), record("scratch", 10, 1, 0.85, params=1000),
    record("pixels-logreg", 10, 0, 0.7), record("pixels-logreg", 10, 1, 0.7),
]


def test_summarize_mean_and_std_per_strategy_and_k():
    rows = comparison.summarize(RUNS)
    assert [(r["labels_per_class"], r["strategy"]) for r in rows] == [
        (5, "linear-probe"), (5, "pixels-logreg"), (5, "scratch"), (10, "linear-probe"), (10, "pixels-logreg"),
        (10, "scratch"), (None, "linear-probe"), (None, "pixels-logreg"), (None, "scratch")]
    lp5 = rows[0]
    assert lp5["n_runs"] == 2
    assert lp5["accuracy_mean"] == pytest.approx(0.7)
    assert lp5["accuracy_std"] == pytest.approx(0.1)  # population std over seeds (ddof=0)
    assert lp5["macro_f1_mean"] == pytest.approx(0.6)
    assert lp5["seconds_mean"] == pytest.approx(3.0)
    assert lp5["trainable_params"] == 30
    scratch5 = rows[2]
    assert scratch5["accuracy_std"] == 0.0 and scratch5["accuracy_mean"] == pytest.approx(0.75)
    assert rows[1]["trainable_params"] is None
    assert rows[6]["n_runs"] == 1 and rows[6]["accuracy_std"] == 0.0
    assert all(r["accuracy_std"] >= 0 for r in rows)
    assert json.loads(json.dumps(rows)) == rows  # compare.json-ready


def test_gains_state_negative_transfer_plainly():
    rows = comparison.summarize(RUNS)
    out = comparison.gains(rows, "scratch", "pixels-logreg")
    by = {(g["labels_per_class"], g["baseline"]): g for g in out}
    assert {g["strategy"] for g in out} == {"linear-probe"}  # the baselines are not compared with each other
    assert set(by) == {(k, b) for k in (5, 10, None) for b in ("scratch", "pixels-logreg")}

    below_scratch = by[(5, "scratch")]
    assert below_scratch["gain_points"] == pytest.approx(-5.0)
    assert below_scratch["negative"] is True
    assert below_scratch["statement"].startswith("At 5 labels/class, linear-probe is 5.0 points BELOW scratch")
    over_ref = by[(5, "pixels-logreg")]
    assert over_ref["gain_points"] == pytest.approx(10.0) and over_ref["negative"] is False
    assert "+10.0 points over pixels-logreg" in over_ref["statement"] and "BELOW" not in over_ref["statement"]
    below_ref = by[(None, "pixels-logreg")]
    assert below_ref["negative"] is True and "5.0 points BELOW pixels-logreg" in below_ref["statement"]
    assert below_ref["statement"].startswith("At all labels")
    assert by[(10, "scratch")]["gain_points"] == pytest.approx(5.0)
    for g in out:
        assert g["negative"] == (g["gain_points"] < 0)
        assert ("BELOW" in g["statement"]) == g["negative"]


def test_gains_without_scratch_compare_with_the_reference_only():
    rows = comparison.summarize([r for r in RUNS if r["strategy"] != "scratch"])
    out = comparison.gains(rows, None, "pixels-logreg")
    assert {g["baseline"] for g in out} == {"pixels-logreg"} and len(out) == 3


def test_series_leaves_out_k_none_and_keeps_mean_and_std():
    s = comparison.series(comparison.summarize(RUNS))
    assert set(s) == {"linear-probe", "scratch", "pixels-logreg"}
    assert [k for k, _, _ in s["linear-probe"]] == [5, 10]
    assert s["linear-probe"][0] == pytest.approx((5, 0.7, 0.1))
    assert s["linear-probe"][1] == pytest.approx((10, 0.9, 0.05))
    assert all(k is not None for points in s.values() for k, _, _ in points)


def compare_summary(runs=RUNS) -> dict:
    rows = comparison.summarize(runs)
    return {"title": "cmp", "data": "in memory", "model": "efficientnet_lite0", "seeds": 2, "n_test": 9,
            "rows": rows, "gains": comparison.gains(rows, "scratch", "pixels-logreg"), "skipped": [],
            "series": comparison.series(rows), "reference_name": "pixels-logreg", "config": {"seed": 0}}


def test_render_compare_shows_rows_gains_and_plot():
    page = render_compare(compare_summary())
    assert len(DATA_URI.findall(page)) == 1
    decode_png(DATA_URI.search(page).group(1))
    assert "5.0 points BELOW scratch" in page
    assert re.search(r'<li class="bad">At 5 labels/class, linear-probe is 5\.0 points BELOW scratch', page)
    assert "0.7000 ± 0.1000" in page
    assert "Skipped runs" not in page
    with_skips = render_compare({**compare_summary(), "skipped": ["scratch at 10 labels/class, seed 1: over budget"]})
    assert "Skipped runs" in with_skips and "seed 1: over budget" in with_skips


def test_render_compare_labels_all_labels_rows_as_all():
    """K=None means 'all labels' (the CLI prints 'all'); the HTML table must not print Python's None."""
    page = render_compare(compare_summary())
    cells = re.findall(r"<tr><td>linear-probe</td><td>([^<]*)</td>", page)
    assert cells[:2] == ["5", "10"]
    assert cells[2] == "all", cells


def test_token_comparison_names_entity_f1_and_keeps_a_missing_second_metric_out_of_the_mean():
    runs = [{"strategy": "head", "labels_per_class": None, "seed": s, "entity_f1": f, "token_accuracy": a,
             "seconds": 1.0, "trainable_params": 5} for s, (f, a) in enumerate([(0.4, 0.9), (0.6, None)])]
    runs.append({"strategy": "word-crf", "labels_per_class": None, "seed": 0, "entity_f1": 0.7, "token_accuracy": None,
                 "seconds": 0.1, "trainable_params": None})
    rows = comparison.summarize(runs, "tokens")
    head = next(r for r in rows if r["strategy"] == "head")
    assert head["entity_f1_mean"] == pytest.approx(0.5) and head["entity_f1_std"] == pytest.approx(0.1)
    assert head["token_accuracy_mean"] == pytest.approx(0.9)
    gain = comparison.gains(rows, None, "word-crf", "tokens")[0]
    assert gain["negative"] and gain["statement"] == ("At all labels, head is 0.200 of entity F1 BELOW word-crf: "
                                                      "negative transfer, the pretrained model did not help here.")
    page = render_compare({**compare_summary(runs=[]), "rows": rows, "gains": [gain], "series": {},
                           "reference_name": "word-crf", "metric": "entity_f1", "second_metric": "token_accuracy"})
    assert "<th>test entity F1</th><th>token accuracy</th>" in page
    assert re.search(r"<tr><td>word-crf</td><td>all</td><td>0\.7000 ± 0\.0000</td>\s*<td>–</td>", page)


# ------------------------------------------------------------------------------------------- html helpers


def test_confident_errors_are_the_most_confident_wrong_predictions():
    y = np.array([0, 1, 2, 0, 1, 2])
    p = np.array([[0.9, 0.05, 0.05],   # right
                  [0.7, 0.2, 0.1],     # wrong 0.7
                  [0.05, 0.9, 0.05],   # wrong 0.9
                  [0.2, 0.5, 0.3],     # wrong 0.5
                  [0.1, 0.8, 0.1],     # right
                  [0.6, 0.3, 0.1]])    # wrong 0.6
    texts = [f"text {i} " + "x" * 400 for i in range(6)]
    rows = confident_errors(texts, [f"id{i}" for i in range(6)], y, p, NAMES, "text", n=3)
    assert [r["id"] for r in rows] == ["id2", "id1", "id5"]
    assert [r["confidence"] for r in rows] == pytest.approx([0.9, 0.7, 0.6])
    assert rows[0]["true"] == "fox" and rows[0]["predicted"] == "dog"
    assert rows[0]["text"] == texts[2][:SNIPPET_CHARS] + "…"
    short = confident_errors(["short"] * 6, [str(i) for i in range(6)], y, p, NAMES, "text")
    assert len(short) == 4 and short[0]["text"] == "short"
    assert confident_errors(texts, [str(i) for i in range(6)], p.argmax(1), p, NAMES, "text") == []


def test_thumbnails_are_small_pngs_and_unreadable_inputs_give_none(tmp_path: Path):
    array = (np.random.default_rng(0).uniform(size=(300, 200, 3)) * 255).astype(np.uint8)
    uri = thumbnail(array)
    image = decode_png(DATA_URI.fullmatch(uri).group(1))
    assert max(image.size) == 96 and image.size == (64, 96)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    assert thumbnail(broken) == ""
    rows = confident_errors([array, broken], ["a", "b"], np.array([1, 1]), np.array([[0.9, 0.1], [0.8, 0.2]]),
                            ["x", "y"], "image")
    assert rows[0]["thumbnail"].startswith("data:image/png;base64,") and rows[1]["thumbnail"] == ""


def test_inputs_summary_for_texts_and_images(tmp_path: Path):
    from transferkit.data.examples import Examples

    texts = Examples("text", ["one two", "one two three four", "a b c d e f g h i j"], ["x", "y", "x"], "t")
    assert inputs_summary(texts) == "Text length in words: median 4, 95th percentile 9, longest 10."
    images = Examples("image", [np.zeros((10, 20), np.uint8), np.zeros((30, 40), np.uint8),
                                np.zeros((5, 6), np.uint8)], ["x", "y", "x"], "i")
    summary = inputs_summary(images)
    assert "smallest 6x5" in summary and "median 20x10" in summary and "largest 40x30" in summary


# ------------------------------------------------------------------------------------------- a real image fit


def test_image_report_html_is_self_contained_and_complete(image_run: Path):
    page = (image_run / "report.html").read_text(encoding="utf-8")
    metrics = json.loads((image_run / "metrics.json").read_text())

    urls = attribute_urls(page)
    assert urls, "no src/href attributes found at all"
    assert not [u for u in urls if not u.startswith(("data:", "#"))], "report.html refers to external resources"
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, flags=re.I)
    assert "<link" not in page and "<script" not in page and "@import" not in page

    plots = re.findall(r'<img class="plot" src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([^"]*)"', page)
    assert len(plots) >= 3
    alts = [alt for _, alt in plots]
    for alt in ("learning curves", "confusion matrix test", "reliability diagram test", "confusion matrix val",
                "data summary plot"):
        assert alt in alts, alts
    for b64, _ in plots:
        assert decode_png(b64).size[0] > 100
    assert "<h2>Learning curves</h2>" in page
    assert "<h2>Results: test (n = 15)</h2>" in page and "<h2>Results: val (n = 6)</h2>" in page

    # before vs after: the numbers of metrics.json, and a gain sentence with the right sign
    before, after = metrics["before_adaptation"], metrics["test"]
    assert before["split"] == "test"
    table = section(page, "<h2>Before vs after adaptation</h2>")
    assert f"<td>before: linear probe on frozen pretrained features</td><td>{before['accuracy']:.4f}</td>" in table
    assert f"<td>after: finetune</td><td>{after['accuracy']:.4f}</td>" in table
    points = 100 * (after["accuracy"] - before["accuracy"])
    if points < 0:
        assert f"Negative transfer gain: finetune is {-points:.1f} points below" in htmllib.unescape(table)
    else:
        assert f"gained {points:+.1f} points of test accuracy" in table

    # class counts: 10 per class, 2 split off for validation; the mislabeled test folder has 5 per class
    assert "<tr><th>class</th><th>train</th><th>val</th><th>test</th></tr>" in page
    for name in ("0", "1", "2"):
        assert f"<tr><td>{name}</td><td>8</td><td>2</td><td>5</td></tr>" in page
    assert "Image sizes (first 24 training images, width x height): smallest 32x32" in page

    # most confidently wrong: every test error (at most 12), most confident first, each with a thumbnail
    errors = section(page, "<h3>Most confidently wrong (test)</h3>")
    figures = re.findall(r"<figure>(.*?)</figure>", errors, re.S)
    cm = np.array(after["confusion_matrix"])
    assert len(figures) == min(12, int(cm.sum() - np.trace(cm))) > 0
    confidences = [float(re.search(r"\((\d\.\d\d)\)<br>", f).group(1)) for f in figures]
    assert confidences == sorted(confidences, reverse=True)
    for figure in figures:
        thumb = re.search(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', figure)
        assert thumb, figure
        image = decode_png(thumb.group(1))
        assert image.size == (32, 32) and np.asarray(image).std() > 10  # a digit, not an empty square
        true, predicted = re.findall(r"<b>([^<]*)</b>", figure)
        assert true != predicted


def test_image_run_metrics_json_and_markdown_agree(image_run: Path):
    metrics = json.loads((image_run / "metrics.json").read_text())
    md = (image_run / "report.md").read_text(encoding="utf-8")
    for split in ("test", "val"):
        m = metrics[split]
        assert f"- **{split}**: accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f} (n = {m['n']})" in md
        assert 0 <= m["ece"] <= 1
        assert 0 <= m["accuracy"] <= m["top2_accuracy"] <= 1
        assert sum(m["reliability"]["count"]) == m["n"]
        assert m["averages"]["micro"]["f1"] == pytest.approx(m["accuracy"])
    before = metrics["before_adaptation"]
    assert set(before) >= {"split", "accuracy", "macro_f1"} and 0 <= before["accuracy"] <= 1
    assert f"| before: linear probe on frozen pretrained features | {before['accuracy']:.4f} |" in md
    assert "Most confidently wrong:" in md
    assert "## Before vs after adaptation" in md and "| model | test accuracy | test macro-F1 |" in md


# ------------------------------------------------------------------------------------------- a real text fit


def test_text_report_shows_snippets_and_length_histogram(text_run: Path, text_csv: Path, mislabeled_texts):
    from transferkit import api
    from transferkit.config import FitConfig

    csv_path, test_texts = mislabeled_texts
    page = (text_run / "report.html").read_text(encoding="utf-8")
    metrics = json.loads((text_run / "metrics.json").read_text())
    assert not [u for u in attribute_urls(page) if not u.startswith(("data:", "#"))]

    # a linear probe is its own "before": no before-vs-after table
    assert "before_adaptation" not in metrics and "Before vs after" not in page
    assert {"ece", "top2_accuracy"} <= set(metrics["test"])

    errors = section(page, "<h3>Most confidently wrong (test)</h3>")
    assert "<img" not in errors
    snippets = [htmllib.unescape(s) for s in re.findall(r'<div class="snippet">(.*?)</div>', errors, re.S)]
    cm = np.array(metrics["test"]["confusion_matrix"])
    assert len(snippets) == min(12, int(cm.sum() - np.trace(cm))) >= 3
    for snippet in snippets:
        assert snippet.endswith("…") and len(snippet) == SNIPPET_CHARS + 1  # the texts are 300 characters
        assert any(t.startswith(snippet[:-1]) for t in test_texts), snippet[:60]

    # the text-length histogram sits next to the class-count bar chart, and the sentence describes the train split
    assert page.count('alt="data summary plot"') == 2
    prepared = api.prepare_data(str(text_csv), FitConfig.from_options(model="minilm", strategy="linear-probe",
                                                                      test_data=str(csv_path)))
    words = np.array([len(t.split()) for t in prepared.train.inputs])
    sentence = (f"Text length in words: median {int(np.median(words))}, 95th percentile "
                f"{int(np.percentile(words, 95))}, longest {int(words.max())}.")
    assert sentence in page
    assert len(prepared.train) == metrics["n_train_used"]

    md = (text_run / "report.md").read_text(encoding="utf-8")
    m = metrics["test"]
    assert f"- **test**: accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f} (n = {m['n']})" in md
    assert sentence in md
    md_errors = md.split("Most confidently wrong:")[1]
    assert snippets[0][:40].replace("|", "/") in md_errors
