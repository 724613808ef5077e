"""benchmarks/throughput.py: the profiler breakdown, the top ops and the summaries, on fixed inputs (no timing)."""
from __future__ import annotations

import pytest

from benchmarks.throughput import breakdown, rates, summarise, top_ops


def test_breakdown_sums_top_level_events_by_prefix_and_leaves_the_rest_as_other():
    events = [("enumerate(DataLoader)#_SingleProcessDataLoaderIter.__next__", 1e6),
              ("forward", 2e6), ("autograd::engine::evaluate_function: ConvolutionBackward0", 2.5e6),
              ("autograd::engine::evaluate_function: AddmmBackward0", 0.5e6),
              ("Optimizer.step#AdamW.step", 1e6), ("Optimizer.zero_grad#AdamW.zero_grad", 0.5e6),
              ("validation", 1e6), ("aten::clone", 0.25e6), ("aten::_foreach_norm", 0.4e6), ("aten::clone", 0.25e6)]
    out = breakdown(events, wall_s=10.0)
    assert out["seconds"] == {"data loading": 1.0, "forward + loss": 2.0, "backward": 3.0, "optimizer step": 1.0,
                              "zero_grad": 0.5, "validation": 1.0, "checkpoint write": 0.0, "other": 1.5}
    assert out["share"]["backward"] == pytest.approx(0.3) and out["share"]["other"] == pytest.approx(0.15)
    assert sum(out["share"].values()) == pytest.approx(1.0)
    # unmatched top-level events are listed (summed by name, largest first) and stay inside `other`
    assert list(out["other_top_level_events"].items()) == [("aten::clone", 0.5), ("aten::_foreach_norm", 0.4)]


def test_top_ops_keeps_aten_ops_only_and_shares_of_all_self_time():
    averages = [("aten::convolution_backward", 4e6), ("validation", 1e6), ("aten::add_", 1e6),
                ("aten::mm", 3e6), ("Optimizer.step#AdamW.step", 1e6)]
    out = top_ops(averages, k=2)
    assert [o["op"] for o in out] == ["aten::convolution_backward", "aten::mm"]
    assert out[0] == {"op": "aten::convolution_backward", "self_seconds": 4.0, "self_share": 0.4}


def test_rates_split_epoch_one_from_later_epochs():
    assert rates([4.0, 2.0, 1.0], 100) == {"epoch1": 25.0, "later": 75.0, "epoch_seconds": [4.0, 2.0, 1.0]}
    assert rates([5.0], 10)["later"] is None


def test_summary_takes_the_ratio_within_each_repeat():
    runs = [{"hand": {"later": 10.0, "epoch1": 5.0}, "fit": {"later": 9.0, "epoch1": 4.0}},
            {"hand": {"later": 20.0, "epoch1": 10.0}, "fit": {"later": 20.0, "epoch1": 10.0}},
            {"hand": {"later": 5.0, "epoch1": 2.0}, "fit": {"later": 4.0, "epoch1": 2.0}}]
    out = summarise(runs)
    ratio = out["ratio_fit_over_hand"]["later"]
    assert ratio["runs"] == [0.9, 1.0, 0.8] and ratio["median"] == 0.9 and (ratio["min"], ratio["max"]) == (0.8, 1.0)
    assert out["hand"]["later"]["median"] == 10.0  # not the ratio of the medians (9 / 10 here by chance)
    assert out["ratio_fit_over_hand"]["epoch1"]["runs"] == [0.8, 1.0, 1.0]
