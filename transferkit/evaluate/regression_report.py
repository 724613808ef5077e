"""report.md and report.html of a regression run: MAE, RMSE, R², Spearman per split, before vs after (ridge probe
R²), a predicted-vs-true scatter and a residual plot per split. Classification's per-class tables, confusion
matrix and calibration have no meaning for one number and are not drawn.

Imports transferkit.train (via report) and transferkit.evaluate. ``run`` is the dict transferkit.run_record builds,
with ``values`` {split: {"true": [...], "predicted": [...]}} for the plots.
"""
from __future__ import annotations

from typing import Any

from transferkit.evaluate import plots
from transferkit.evaluate.html import _css, _template, fmt
from transferkit.evaluate.metrics import headline
from transferkit.evaluate.report import _fmt, _table, config_and_curve_sections, data_doctor_section

HEADLINE = ("r2", "mae", "rmse", "spearman", "n")


def regression_before_after(before: dict[str, Any] | None, metrics: dict[str, Any], strategy: str,
                            ) -> dict[str, Any] | None:
    """Rows 'before' (ridge probe on frozen features) and 'after' (this run) on the same split: R² and MAE."""
    if before is None or before["split"] not in metrics:
        return None
    after, split = metrics[before["split"]], before["split"]
    gain = after["r2"] - before["r2"]
    statement = (f"Adapting with {strategy} {'gained' if gain >= 0 else 'lost'} {abs(gain):.3f} of {split} R² "
                 f"against the ridge probe on frozen pretrained features"
                 + ("; prefer --strategy linear-probe or more data." if gain < 0 else "."))
    return {"split": split, "gain": gain, "statement": statement,
            "rows": [{"name": "before: ridge probe on frozen pretrained features", "r2": before["r2"],
                      "mae": before["mae"]}, {"name": f"after: {strategy}", "r2": after["r2"], "mae": after["mae"]}]}


def _headline_line(split: str, m: dict[str, Any]) -> str:
    return (f"- **{split}**: R² {m['r2']:.4f}, MAE {m['mae']:.4f}, RMSE {m['rmse']:.4f}, "
            f"Spearman {m.get('spearman', 0.0):.4f} (n = {m['n']})")


def render_regression_markdown(run: dict[str, Any]) -> str:
    parts = [f"# transferkit run: {run['title']}", ""]
    parts += [_headline_line(split, m) for split, m in run["metrics"].items()]
    parts += [f"- {note}" for note in run.get("notes", [])] + [""]
    if run.get("before_after"):
        ba = run["before_after"]
        parts += ["## Before vs after adaptation", "",
                  _table(["model", f"{ba['split']} R²", f"{ba['split']} MAE"],
                         [[r["name"], _fmt(r["r2"]), _fmt(r["mae"])] for r in ba["rows"]]), "", ba["statement"], ""]
    data = run["data"]
    parts += ["## Data", "", _table(["split", "examples"], [[k, v] for k, v in data["sizes"].items()]), ""]
    if data.get("targets"):
        parts += [_table(["target", "value"], [[k, _fmt(v)] for k, v in data["targets"].items()]), ""]
    if run.get("data_doctor"):
        parts += data_doctor_section(run["data_doctor"])
    parts += config_and_curve_sections(run)
    parts += ["## Results", ""]
    for split, m in run["metrics"].items():
        parts += [f"### {split} (n = {m['n']})", "", ", ".join(f"{k} **{_fmt(v)}**" for k, v in headline(m).items()),
                  ""]
    return "\n".join(parts)


def render_regression_html(run: dict[str, Any]) -> str:
    values = run.get("values", {})
    split_plots = {split: {"scatter": plots.predicted_vs_true(v["true"], v["predicted"], f"{split}: predicted vs true"),
                           "residuals": plots.residual_plot(v["true"], v["predicted"], f"{split}: residuals")}
                   for split, v in values.items() if len(v["true"])}
    history = run.get("history") or []
    return _template("regression_report.html.j2").render(
        css=_css(), fmt=fmt, run=run, metrics=run["metrics"], headline=HEADLINE, plots=split_plots,
        curves=plots.regression_curves(history) if history else None,
        history_keys=list(dict.fromkeys(k for row in history for k in row)), history=history)
