"""benchmarks/fewshot.py: the cell order, the K=1 protocol, the aims' verdicts and the shared table, on fixed rows."""
from __future__ import annotations

import pytest

from benchmarks.fewshot import cell_setup, parse_cells, verdicts
from benchmarks.label_efficiency import print_table, summarize


def row(dataset: str, k: int, strategy: str, accuracies: list[float]) -> dict:
    runs = [{"accuracy": a, "macro_f1": a, "seconds": 10.0 * (i + 1)} for i, a in enumerate(accuracies)]
    return summarize({"dataset": dataset, "labels_per_class": k, "strategy": strategy, "runs": runs})


def test_plan_keeps_the_given_order_and_defaults_to_the_aims_first():
    assert parse_cells("fashion-mnist:5,1;bbc-news:8") == [("fashion-mnist", 5), ("fashion-mnist", 1), ("bbc-news", 8)]
    assert parse_cells(None)[:2] == [("bbc-news", 8), ("fashion-mnist", 5)]
    with pytest.raises(ValueError, match="bbc-newz"):
        parse_cells("bbc-newz:8")


def test_one_shot_protocol():
    assert cell_setup("protonet", 1) == ({"backbone": "frozen"}, None)  # episodes need 2+ per class
    assert cell_setup("maml", 1)[1].startswith("not run at K=1")
    assert cell_setup("protonet", 5) == (None, None) and cell_setup("maml", 8) == (None, None)
    assert cell_setup("finetune", 1) == (None, None)


def test_summarize_means_and_population_std():
    r = row("bbc-news", 8, "finetune", [0.8, 0.9, 1.0])
    assert r["accuracy"]["mean"] == pytest.approx(0.9)
    assert r["accuracy"]["std"] == pytest.approx((0.02 / 3) ** 0.5)
    assert r["seconds"]["mean"] == pytest.approx(20.0)


def test_verdicts_compare_protonet_with_the_better_baseline():
    rows = [row("bbc-news", 8, "linear-probe", [0.90]), row("bbc-news", 8, "finetune", [0.92]),
            row("bbc-news", 8, "protonet", [0.91]), row("bbc-news", 8, "setfit", [0.95]),
            row("fashion-mnist", 5, "linear-probe", [0.60]), row("fashion-mnist", 5, "finetune", [0.55]),
            row("fashion-mnist", 5, "protonet", [0.65]),
            row("bbc-news", 1, "protonet", [0.99])]  # not an aim cell
    bbc, fm = verdicts(rows)
    assert bbc == ("bbc-news 8/class: protonet 0.910 vs best of linear-probe/finetune 0.920 (finetune): aim not met; "
                   "best few-shot strategy setfit 0.950 beats it")
    assert fm == "fashion-mnist 5/class: protonet 0.650 vs best of linear-probe/finetune 0.600 (linear-probe): aim met"
    assert verdicts(rows[:2]) == []  # no protonet row yet: no verdict


def test_table_marks_skipped_rows_and_stars_the_best_measured(capsys):
    rows = [row("fashion-mnist", 1, "linear-probe", [0.3, 0.4]), row("fashion-mnist", 1, "protonet", [0.5]),
            {"dataset": "fashion-mnist", "labels_per_class": 1, "strategy": "maml", "skipped": "not run"}]
    print_table(rows, seconds=True)
    line = capsys.readouterr().out.strip().splitlines()[-1].split()
    assert line == ["fashion-mnist", "1", "0.350±0.050", "15s", "0.500±0.000*", "10s", "n/a"]
