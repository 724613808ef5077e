"""Where a run's wall time goes: named phases timed one after another (metrics.json ``phase_seconds``)."""
from __future__ import annotations

import time


class PhaseClock:
    """Wall seconds per phase, each phase ending where the next lap is taken.

    ``PhaseClock(start, "data")`` closes the first phase ("data") at construction, counted from ``start`` (a
    ``time.perf_counter()`` value); ``lap(name)`` closes the next. A name used twice adds up. ``laps``: name ->
    seconds (rounded to 10 ms), in the order first seen.
    """

    def __init__(self, start: float, first: str) -> None:
        self._last = start
        self.laps: dict[str, float] = {}
        self.lap(first)

    def lap(self, name: str) -> float:
        """Close phase ``name`` now; returns its seconds (this lap)."""
        now = time.perf_counter()
        seconds, self._last = now - self._last, now
        self.laps[name] = round(self.laps.get(name, 0.0) + seconds, 2)
        return seconds
