"""Pacer: at most per_minute starts in any closed 60 s window, evenly spaced, and no under-delivery."""

from __future__ import annotations

import bisect
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dialerd.domain.pacing import Pacer

WINDOW = 60.0
RATES = [1, 7, 30, 60, 100, 600]
MAX_WAITS_PER_START = 50  # a greedy caller that needs more delay() calls than this is spinning


def _run(pacer: Pacer, start: float, until: float, gaps: Iterator[float] | None = None) -> list[float]:
    """Greedy caller on a fake clock: start whenever delay() is 0, else advance the clock by the delay.

    ``gaps`` (optional) gives an extra idle time the caller spends after each start before asking again.
    Returns the start times in [start, until).
    """
    now, starts = start, list[float]()
    while True:
        for _ in range(MAX_WAITS_PER_START):
            wait = pacer.delay(now)
            assert wait >= 0.0
            if wait == 0.0:
                break
            now += wait
        else:
            raise AssertionError(f"delay() never reached 0 near t={now!r}")
        if now >= until:
            return starts
        pacer.record(now)
        starts.append(now)
        if gaps is not None:
            now += next(gaps, 0.0)


def _max_in_closed_window(starts: list[float], window: float = WINDOW) -> tuple[int, float]:
    """The largest number of starts in any [t, t + window] with t a start time, and that t."""
    best, at = 0, 0.0
    for i, t in enumerate(starts):
        count = bisect.bisect_right(starts, t + window) - i
        if count > best:
            best, at = count, t
    return best, at


def _min_gap(starts: list[float]) -> float:
    return min((b - a for a, b in zip(starts, starts[1:], strict=False)), default=float("inf"))


def _rate_per_minute(starts: list[float], begin: float, end: float) -> float:
    inside = [t for t in starts if begin <= t < end]
    return len(inside) / ((end - begin) / WINDOW)


@pytest.mark.parametrize("per_minute", RATES)
def test_greedy_caller_never_exceeds_the_cap_in_any_closed_window(per_minute: int) -> None:
    starts = _run(Pacer(per_minute), 0.0, 10 * WINDOW)
    most, at = _max_in_closed_window(starts)
    assert most <= per_minute, f"{most} starts in [{at}, {at + WINDOW}] at {per_minute}/min"


@pytest.mark.parametrize("per_minute", RATES)
def test_greedy_caller_gets_the_full_rate(per_minute: int) -> None:
    starts = _run(Pacer(per_minute), 0.0, 10 * WINDOW)
    achieved = _rate_per_minute(starts, 0.0, 10 * WINDOW)
    assert abs(achieved - per_minute) <= 0.01 * per_minute, f"{achieved}/min at {per_minute}/min"


@pytest.mark.parametrize("per_minute", RATES)
def test_starts_are_evenly_spaced(per_minute: int) -> None:
    starts = _run(Pacer(per_minute), 0.0, 10 * WINDOW)
    assert _min_gap(starts) >= WINDOW / per_minute - 1e-9


def test_first_start_is_immediate() -> None:
    pacer = Pacer(30)
    assert pacer.delay(1000.0) == 0.0


def test_delay_counts_down_from_the_last_start() -> None:
    pacer = Pacer(30)  # one start every 2 s
    pacer.record(100.0)
    assert pacer.delay(100.0) == pytest.approx(2.0)
    assert pacer.delay(101.5) == pytest.approx(0.5)
    assert pacer.delay(102.0) == 0.0
    assert pacer.delay(500.0) == 0.0


@pytest.mark.parametrize("per_minute", [0, -1])
def test_rate_below_one_is_refused(per_minute: int) -> None:
    with pytest.raises(ValueError, match="per_minute"):
        Pacer(per_minute)


@pytest.mark.parametrize("per_minute", [0, -1])
def test_set_rate_below_one_is_refused_like_the_constructor(per_minute: int) -> None:
    pacer = Pacer(60)
    pacer.record(0.0)
    try:
        pacer.set_rate(per_minute)
        outcome: type[BaseException] | None = None
    except Exception as exc:  # which exception, if any, is what this test is about
        outcome = type(exc)
    assert outcome is ValueError, f"set_rate({per_minute}) raised {outcome}, expected ValueError"
    assert pacer.per_minute == 60, "a refused rate must leave the pacer as it was"


@pytest.mark.parametrize(("before", "after"), [(60, 30), (30, 120), (600, 7), (1, 100)])
def test_set_rate_takes_effect(before: int, after: int) -> None:
    pacer = Pacer(before)
    early = _run(pacer, 0.0, 3 * WINDOW)
    pacer.set_rate(after)
    change = 3 * WINDOW
    late = _run(pacer, change, 10 * WINDOW)

    assert _min_gap(late) >= WINDOW / after - 1e-9
    most, at = _max_in_closed_window(late)
    assert most <= after, f"{most} starts in [{at}, {at + WINDOW}] after set_rate({after})"
    # Once a full window has passed since the change, the new rate is delivered in full.
    achieved = _rate_per_minute(late, change + WINDOW, 10 * WINDOW)
    assert abs(achieved - after) <= 0.01 * after, f"{achieved}/min after set_rate({after})"
    # The whole run, old rate and new, still never bursts past the larger of the two caps.
    assert _max_in_closed_window(early + late)[0] <= max(before, after)


def test_set_rate_to_the_same_value_keeps_the_schedule() -> None:
    pacer = Pacer(30)
    pacer.record(10.0)
    pacer.set_rate(30)
    assert pacer.delay(10.0) == pytest.approx(2.0)


@settings(max_examples=150, deadline=None)
@given(
    per_minute=st.integers(min_value=1, max_value=300),
    gaps=st.lists(
        st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=90.0, allow_nan=False)), max_size=400
    ),
)
def test_idle_gaps_never_break_the_window_cap(per_minute: int, gaps: list[float]) -> None:
    starts = _run(Pacer(per_minute), 0.0, 10 * WINDOW, gaps=iter(gaps))
    most, at = _max_in_closed_window(starts)
    assert most <= per_minute, f"{most} starts in [{at}, {at + WINDOW}] at {per_minute}/min"
    assert _min_gap(starts) >= WINDOW / per_minute - 1e-9


def test_a_start_one_float_rounding_past_the_window_still_counts() -> None:
    # Found by the fuzzing above (per_minute 2, idle gaps 0, 15, 0, 30 s): 90.001 + 30 rounds to just past
    # 60.001 + 60, and the start at 60.001 left the window a few femtoseconds early, so the closed window
    # [60.001, 120.001] held three starts at 2/min.
    starts = _run(Pacer(2), 0.0, 10 * WINDOW, gaps=iter([0.0, 15.0, 0.0, 30.0]))
    most, at = _max_in_closed_window(starts)
    assert most <= 2, f"{most} starts in [{at}, {at + WINDOW}]"
