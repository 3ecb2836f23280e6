"""Call-rate pacing: smooth spacing plus a hard sliding-window cap. Pure; times are plain floats."""

from __future__ import annotations

from collections import deque


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
        while self._starts and self._starts[0] < now - self.window:
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
