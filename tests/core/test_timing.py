from __future__ import annotations

import time

from transferkit.core.timing import PhaseClock


def test_laps_are_consecutive_and_a_repeated_name_adds_up(monkeypatch) -> None:
    now = iter([10.0, 12.5, 13.0, 16.0])
    monkeypatch.setattr(time, "perf_counter", lambda: next(now))
    clock = PhaseClock(9.0, "data")  # 9 -> 10
    assert clock.lap("train") == 2.5
    clock.lap("data")  # 12.5 -> 13
    clock.lap("evaluate")  # 13 -> 16
    assert clock.laps == {"data": 1.5, "train": 2.5, "evaluate": 3.0}
    assert list(clock.laps) == ["data", "train", "evaluate"]
