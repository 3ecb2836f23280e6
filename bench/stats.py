"""Small figures helpers: percentiles, /proc readings, timestamps from the database and from Asterisk."""

from __future__ import annotations

import math
import os
from datetime import UTC, datetime
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank), or NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def main_thread_cpu_seconds(pid: int) -> float:
    """CPU time of the process's main thread (the event loop) alone."""
    fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def mem_kb(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak) of process ``pid``, in KiB."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def db_time(value: str | None) -> float | None:
    """A timestamp column as stored by dialerd in SQLite (naive UTC text) -> epoch seconds."""
    if value is None:
        return None
    return datetime.fromisoformat(value).replace(tzinfo=UTC).timestamp()


def ari_time(value: str) -> float:
    """An ARI timestamp (``2025-01-01T00:00:00.123+0000``) -> epoch seconds."""
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant (an end at t closes before a start at t opens)."""
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda p: (p[0], p[1]))
    best = cur = 0
    for _, step in points:
        cur += step
        best = max(best, cur)
    return best


def max_in_window(times: list[float], window: float) -> int:
    """The most events inside any closed window of ``window`` seconds."""
    ordered = sorted(times)
    best = j = 0
    for i, t in enumerate(ordered):
        while ordered[j] < t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


def rate(times: list[float]) -> float:
    """Events per second over the span of ``times`` ((n - 1) gaps over first..last)."""
    if len(times) < 2:
        return math.nan
    span = max(times) - min(times)
    return (len(times) - 1) / span if span > 0 else math.nan
