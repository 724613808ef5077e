"""report.md and report.html of a multi-label run: micro/macro/samples F1, subset accuracy, Hamming loss and mAP per
split, before vs after (micro-F1 and mAP of the one-vs-rest probe on frozen features and of this run), and a
per-label table (precision, recall, F1, support and the label's tuned decision threshold). The
classification report's confusion matrix and calibration have no single-label meaning here and are not drawn.

Imports transferkit.evaluate. ``run`` is the dict transferkit.run_record builds (metrics as
transferkit.evaluate.multilabel_metrics.multilabel_report returns them).
"""
from __future__ import annotations

from html import escape
from typing import Any

from transferkit.evaluate.html import _css
from transferkit.evaluate.report import (
    _fmt,
    _table,
    before_after_section,
    config_and_curve_sections,
    data_doctor_section,
)

HEADLINE = ("micro_f1", "macro_f1", "samples_f1", "subset_accuracy", "hamming_loss", "map", "n")
PER_LABEL = ("label", "precision", "recall", "f1", "support", "threshold")


def _headline_line(split: str, m: dict[str, Any]) -> str:
    return f"- **{split}**: " + ", ".join(f"{k} {_fmt(m.get(k))}" for k in HEADLINE)


def _per_label_rows(m: dict[str, Any]) -> list[list[Any]]:
    return [[_fmt(row.get(k)) for k in PER_LABEL] for row in m.get("per_label", [])]


def render_multilabel_markdown(run: dict[str, Any]) -> str:
    parts = [f"# transferkit run: {run['title']}", ""]
    parts += [_headline_line(split, m) for split, m in run["metrics"].items()]
    parts += [f"- {note}" for note in run.get("notes", [])] + [""]
    parts += before_after_section(run.get("before_after"))
    data = run["data"]
    parts += ["## Data", "", _table(["split", "examples"], [[k, v] for k, v in data["sizes"].items()]), ""]
    if data.get("label_counts"):
        parts += [_table(["label", "training rows"], [[k, v] for k, v in data["label_counts"].items()]), ""]
    if run.get("data_doctor"):
        parts += data_doctor_section(run["data_doctor"])
    parts += config_and_curve_sections(run)
    parts += ["## Results", ""]
    for split, m in run["metrics"].items():
        parts += [f"### {split} (n = {m['n']})", "", _table(list(PER_LABEL), _per_label_rows(m)), ""]
    return "\n".join(parts)


def _html_table(header: list[str] | tuple[str, ...], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_multilabel_html(run: dict[str, Any]) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(run['title'])}</title>"
             f"<style>{_css()}</style></head><body><h1>transferkit run: {escape(run['title'])}</h1>"]
    parts += ["<ul>" + "".join(f"<li>{escape(n)}</li>" for n in run.get("notes", [])) + "</ul>"]
    parts += ["<h2>Headline</h2>", _html_table(("split", *HEADLINE), [[s, *(_fmt(m.get(k)) for k in HEADLINE)]
                                                                    for s, m in run["metrics"].items()])]
    parts += before_after_html(run.get("before_after"))
    if run.get("data", {}).get("label_counts"):
        parts += ["<h2>Data</h2>", _html_table(("label", "training rows"), list(run["data"]["label_counts"].items()))]
    for split, m in run["metrics"].items():
        parts += [f"<h2>{escape(split)}: per label</h2>", _html_table(PER_LABEL, _per_label_rows(m))]
    parts += ["<h2>Configuration</h2>", _html_table(("setting", "value"), list(run["config"].items())), "</body></html>"]
    return "".join(parts)


def before_after_html(table: dict[str, Any] | None) -> list[str]:
    """The before-vs-after table of report.html (multi-label, tokens): the same rows and sentences as report.md."""
    if not table:
        return []
    first, second = table["metrics"]
    rows = [[r["name"], _fmt(r[first]), _fmt(r[second]) if r[second] is not None else "–"] for r in table["rows"]]
    notes = [table["statement"], *([table["absent"]] if table.get("absent") else [])]
    return ["<h2>Before vs after adaptation</h2>",
            _html_table(("model", *(f"{table['split']} {label}" for label in table["labels"])), rows),
            *(f"<p class='{'bad' if table['gain'] < 0 else 'good'}'>{escape(n)}</p>" for n in notes[:1]),
            *(f"<p>{escape(n)}</p>" for n in notes[1:])]
