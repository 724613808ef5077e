"""report.md / report.html of a token-classification run: the CoNLL paper table per split, entity-type confusion,
the worst sentences (gold vs predicted spans), before vs after (entity F1 of the per-word probe on frozen features
and of this run) and the validation history.

Imports transferkit.evaluate only (plain dicts in, text out; seqeval reads the spans). The metrics are
transferkit.evaluate.token_metrics' report per split; the HTML is the same tables, escaped, with no scripts.
"""
from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from seqeval.metrics.sequence_labeling import get_entities

from transferkit.evaluate.multilabel_report import before_after_html
from transferkit.evaluate.report import before_after_section

_COLUMNS = ("precision", "recall", "f1", "support")


def _rows(metrics: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """(name, cells) per entity type, then the micro and macro averages."""
    rows = [(kind, [f"{v[c]:.3f}" if c != "support" else str(v[c]) for c in _COLUMNS])
            for kind, v in sorted(metrics.get("per_type", {}).items())]
    support = str(metrics.get("n_entities", ""))
    for name, prefix in (("micro avg", "entity"), ("macro avg", "macro")):
        if f"{prefix}_f1" in metrics:
            rows.append((name, [f"{metrics[f'{prefix}_{c}']:.3f}" for c in _COLUMNS[:3]] + [support]))
    return rows


def worst_sentences(words: Sequence[Sequence[str]], gold: Sequence[Sequence[str]], guess: Sequence[Sequence[str]],
                    k: int = 5) -> list[dict[str, Any]]:
    """The ``k`` sentences with the most entity errors (gold spans missed + predicted spans not in gold), each with
    its text marked up both ways: ``[New York]geo-loc``."""
    rows = []
    for w, g, p in zip(words, gold, guess):
        gold_spans, guess_spans = set(get_entities(list(g))), set(get_entities(list(p)))
        errors = len(gold_spans ^ guess_spans)
        if errors:
            rows.append({"errors": errors, "gold": _marked(w, gold_spans), "predicted": _marked(w, guess_spans)})
    return sorted(rows, key=lambda r: -r["errors"])[:k]


def _marked(words: Sequence[str], spans: set[tuple[str, int, int]]) -> str:
    out = list(words)
    for kind, start, end in spans:
        out[start] = "[" + out[start]
        out[end] = out[end] + "]" + kind
    return " ".join(out)


def render_token_markdown(run: dict[str, Any]) -> str:
    lines = [f"# {run['title']}", "", f"model {run['model']}, strategy {run['strategy']}, token classification", ""]
    lines += [f"- {note}" for note in run.get("notes", [])] + ([""] if run.get("notes") else [])
    lines += before_after_section(run.get("before_after"))
    for split, metrics in run["metrics"].items():
        lines += [f"## {split}: entity F1 {metrics.get('entity_f1', 0):.3f} (seqeval default mode), strict IOB2 "
                  f"{metrics.get('strict', {}).get('entity_f1', 0):.3f}, token accuracy "
                  f"{metrics.get('token_accuracy', 0):.3f}, {metrics.get('n', 0)} sentences", "",
                  "| type | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        lines += [f"| {name} | " + " | ".join(cells) + " |" for name, cells in _rows(metrics)]
        confusion = metrics.get("type_confusion", {})
        if confusion:
            lines += ["", "Gold entity type -> predicted type of the same span ('-': no entity with that span):", ""]
            lines += [f"- {gold}: " + ", ".join(f"{k} {n}" for k, n in counts.items())
                      for gold, counts in confusion.items()]
        worst = run.get("worst", {}).get(split, [])
        if worst:
            lines += ["", "Worst sentences (most entity errors), gold then predicted:", ""]
            for row in worst:
                lines += [f"- {row['errors']} error(s): gold `{row['gold']}`", f"  predicted `{row['predicted']}`"]
        lines.append("")
    if run.get("history"):
        lines += ["## history", "", "| epoch | train loss | val loss | val entity F1 |", "|---|---|---|---|"]
        for row in run["history"]:
            cells = [row.get("epoch"), row.get("train_loss"), row.get("val_loss"), row.get("val_entity_f1")]
            lines.append("| " + " | ".join(f"{c:.4f}" if isinstance(c, float) else str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def render_token_html(run: dict[str, Any]) -> str:
    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(run['title'])}</title>",
             f"<h1>{html.escape(run['title'])}</h1><p>model {html.escape(str(run['model']))}, strategy "
             f"{html.escape(run['strategy'])}, token classification</p>"]
    parts += [f"<p>{html.escape(note)}</p>" for note in run.get("notes", [])]
    parts += before_after_html(run.get("before_after"))
    for split, metrics in run["metrics"].items():
        parts.append(f"<h2>{html.escape(split)}: entity F1 {metrics.get('entity_f1', 0):.3f}</h2><table border=1>"
                     "<tr><th>type</th>" + "".join(f"<th>{c}</th>" for c in _COLUMNS) + "</tr>")
        parts += ["<tr><td>" + html.escape(name) + "</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
                  for name, cells in _rows(metrics)]
        parts.append("</table>")
    return "\n".join(parts) + "\n"
