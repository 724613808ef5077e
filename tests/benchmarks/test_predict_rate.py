"""benchmarks/predict_rate.py: the summaries (ratios within a repeat), the inputs it writes (no timing)."""
from __future__ import annotations

import csv

from benchmarks.predict_rate import bbc_cycled, int8_summary, rate_summary, stats, text_csv


def test_predict_over_raw_is_taken_within_each_repeat_not_from_the_medians():
    runs = [{"predict": {"items_per_s": 90.0}, "raw": {"items_per_s": 100.0}},
            {"predict": {"items_per_s": 40.0}, "raw": {"items_per_s": 50.0}},
            {"predict": {"items_per_s": 95.0}, "raw": {"items_per_s": 95.0}}]
    out = rate_summary(runs)
    assert out["predict_over_raw"]["runs"] == [0.9, 0.8, 1.0] and out["predict_over_raw"]["median"] == 0.9
    assert out["predict"]["median"] == 90.0 and out["raw"]["median"] == 95.0  # 90/95 would be a different ratio
    assert (out["raw"]["min"], out["raw"]["max"]) == (50.0, 100.0)


def test_int8_summary_gives_speedup_per_repeat_and_the_accuracy_lost_in_points():
    def row(torch_rate: float, int8_rate: float) -> dict:
        return {"torch fp32": {"items_per_s": torch_rate, "accuracy": 0.95},
                "onnx int8": {"items_per_s": int8_rate, "accuracy": 0.9455},
                "onnx fp32": {"items_per_s": torch_rate, "accuracy": 0.95}}

    out = int8_summary([row(10.0, 25.0), row(20.0, 30.0), row(8.0, 20.0)])
    assert out["onnx int8"]["speedup_vs_torch_fp32"]["runs"] == [2.5, 1.5, 2.5]
    assert out["onnx int8"]["speedup_vs_torch_fp32"]["median"] == 2.5
    assert out["onnx int8"]["accuracy_loss_points"] == 0.45
    assert out["torch fp32"]["speedup_vs_torch_fp32"]["runs"] == [1.0, 1.0, 1.0]
    assert out["onnx fp32"]["accuracy_loss_points"] == 0.0


def test_stats_rounds_and_keeps_every_run():
    assert stats([1.23456, 2.0, 0.5], 2) == {"median": 1.23, "min": 0.5, "max": 2.0, "runs": [1.23, 2.0, 0.5]}


def test_texts_are_cycled_through_every_bbc_text_and_written_as_a_csv(tmp_path):
    texts, distinct = bbc_cycled(2300)
    assert len(texts) == 2300 and texts[2225] == texts[0] and distinct == len(set(texts)) == 2127  # BBC repeats 98
    path = text_csv(texts[:3], tmp_path / "t.csv", ["a", "b", "c"])
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["text", "label"] and rows[1] == [texts[0], "a"] and len(rows) == 4
