"""Call-rate pacing: smooth spacing plus a hard sliding-window cap. Pure; times are plain floats."""

from __future__ import annotations

from collections import deque

WINDOW_EPSILON = 1e-6  # seconds; far below the 1 ms margin delay() adds at the window's edge


class Pacer:
    """At most ``per_minute`` starts in any 60 s window, spaced evenly (no bursts).

    ``delay(now)`` says how long to wait before the next start; ``record(now)`` notes a start.
    Even spacing alone allows per_minute + 1 starts in a closed 60 s window, so the window log
    enforces the cap exactly.
    """

    def __init__(self, per_minute: int, window: float = 60.0) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be >= 1")
        self.per_minute = per_minute
        self.window = window
        self.interval = window / per_minute
        self._starts: deque[float] = deque()

    def set_rate(self, per_minute: int) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be >= 1")
        if per_minute != self.per_minute:
            self.per_minute = per_minute
            self.interval = self.window / per_minute

    def delay(self, now: float) -> float:
        # A start leaves the window only once it is clearly older than it: ``now - window`` rounds, and a
        # start exactly one window back (as float sums of intervals land) must still count, else the
        # closed window could hold per_minute + 1 starts (found by tests/unit/test_pacing.py's fuzzing).
        while self._starts and self._starts[0] < now - self.window - WINDOW_EPSILON:
            self._starts.popleft()
        wait = 0.0
        if self._starts:
            wait = max(wait, self._starts[-1] + self.interval - now)
        if len(self._starts) >= self.per_minute:
            # The oldest start in the window must leave it (strictly) before another may begin.
            wait = max(wait, self._starts[-self.per_minute] + self.window - now + 1e-3)
        return max(0.0, wait)

    def record(self, now: float) -> None:
        self._starts.append(now)
