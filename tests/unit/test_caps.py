"""Frequency and daily caps (``dialerd/domain/caps.py``), with a fixed clock; DST days of 2026."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dialerd.domain.caps import DailyCaps, FrequencyCap, daily_holds, frequency_hold, limit, tenant_day
from dialerd.domain.rules import BlockReason, Hold

NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(("value", "expected"), [(None, None), (0, None), (1, 1), (100, 100)])
def test_zero_or_none_is_no_limit(value: int | None, expected: int | None) -> None:
    assert limit(value) == expected


def test_a_negative_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot be negative"):
        limit(-1)


# ---- frequency cap ----------------------------------------------------------------------------------

FLORIDA = FrequencyCap(max_attempts=3, window_hours=24)


def test_below_the_cap_is_free() -> None:
    assert frequency_hold(FLORIDA, [NOW - 23 * H, NOW - H], NOW) is None
    assert frequency_hold(FLORIDA, [], NOW) is None


def test_at_the_cap_waits_until_the_oldest_counted_attempt_leaves_the_window() -> None:
    attempts = [NOW - H, NOW - 23 * H, NOW - 10 * H]  # any order
    hold = frequency_hold(FLORIDA, attempts, NOW)
    assert hold == Hold(
        BlockReason.FREQUENCY_CAP, until=NOW + H,
        detail={"max_attempts_per_number": 3, "frequency_window_hours": 24, "attempts": 3},
    )
    # next_eligible_at is exact: free at that instant, still held a microsecond before.
    assert frequency_hold(FLORIDA, attempts, NOW + H) is None
    assert frequency_hold(FLORIDA, attempts, NOW + H - timedelta(microseconds=1)) is not None


def test_attempts_outside_the_window_do_not_count() -> None:
    # Exactly a window old: it has just left. Older ones never counted.
    attempts = [NOW - 24 * H, NOW - 30 * H, NOW - 2 * H, NOW - H]
    assert frequency_hold(FLORIDA, attempts, NOW) is None
    assert FLORIDA.window_start(NOW) == NOW - 24 * H


def test_over_the_cap_waits_until_enough_have_left() -> None:
    # Four counted against a limit of 3 (the limit was lowered): the two oldest must leave.
    attempts = [NOW - 20 * H, NOW - 15 * H, NOW - 5 * H, NOW - H]
    hold = frequency_hold(FLORIDA, attempts, NOW)
    assert hold is not None and hold.until == NOW - 15 * H + 24 * H
    assert frequency_hold(FLORIDA, attempts, NOW + 9 * H) is None
    assert frequency_hold(FLORIDA, attempts, NOW + 4 * H) is not None


def test_a_window_in_hours_spans_dst_as_elapsed_time() -> None:
    # 24 h is 24 elapsed hours, not "the same clock time tomorrow": across New York's spring forward the
    # attempt of Saturday 12:00 EST (17:00Z) leaves the window at Sunday 13:00 EDT (17:00Z).
    cap = FrequencyCap(max_attempts=1, window_hours=24)
    hold = frequency_hold(cap, [utc("2026-03-07T17:00")], utc("2026-03-08T12:00"))
    assert hold is not None and hold.until == utc("2026-03-08T17:00")


@pytest.mark.parametrize(
    "cap", [FrequencyCap(), FrequencyCap(0, 24), FrequencyCap(3, 0), FrequencyCap(3, None), FrequencyCap(None, 24)]
)
def test_the_cap_needs_both_numbers(cap: FrequencyCap) -> None:
    assert not cap.active
    assert frequency_hold(cap, [NOW] * 50, NOW) is None


def test_naive_attempt_times_are_refused() -> None:
    with pytest.raises(ValueError, match="attempt must be timezone-aware"):
        frequency_hold(FLORIDA, [datetime(2026, 3, 4, 11)], NOW)
    with pytest.raises(ValueError, match="now must be timezone-aware"):
        frequency_hold(FLORIDA, [NOW], datetime(2026, 3, 4, 12))


# ---- the tenant's day ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "zone", "start", "end", "hours"),
    [
        ("2026-03-04T12:00", None, "2026-03-04T00:00", "2026-03-05T00:00", 24),  # default UTC
        ("2026-03-04T23:59:59", "UTC", "2026-03-04T00:00", "2026-03-05T00:00", 24),
        ("2026-03-04T04:59", "America/New_York", "2026-03-03T05:00", "2026-03-04T05:00", 24),
        ("2026-03-04T05:00", "America/New_York", "2026-03-04T05:00", "2026-03-05T05:00", 24),
        # US spring forward: Sunday 2026-03-08 has 23 hours, fall back: 2026-11-01 has 25.
        ("2026-03-08T12:00", "America/New_York", "2026-03-08T05:00", "2026-03-09T04:00", 23),
        ("2026-11-01T12:00", "America/New_York", "2026-11-01T04:00", "2026-11-02T05:00", 25),
        ("2026-03-08T12:00", "America/Los_Angeles", "2026-03-08T08:00", "2026-03-09T07:00", 23),
        ("2026-11-01T12:00", "America/Los_Angeles", "2026-11-01T07:00", "2026-11-02T08:00", 25),
        # EU: 2026-03-29 and 2026-10-25.
        ("2026-03-29T12:00", "Europe/Berlin", "2026-03-28T23:00", "2026-03-29T22:00", 23),
        ("2026-10-25T12:00", "Europe/Berlin", "2026-10-24T22:00", "2026-10-25T23:00", 25),
        ("2026-03-29T12:00", "Europe/London", "2026-03-29T00:00", "2026-03-29T23:00", 23),
        ("2026-10-25T12:00", "Europe/London", "2026-10-24T23:00", "2026-10-26T00:00", 25),
        # Santiago changes at midnight: 2026-09-06 starts at 01:00 (no 00:00), 2026-04-04 ends twice at 23:00.
        ("2026-09-06T12:00", "America/Santiago", "2026-09-06T04:00", "2026-09-07T03:00", 23),
        ("2026-04-04T12:00", "America/Santiago", "2026-04-04T03:00", "2026-04-05T04:00", 25),
        ("2026-04-05T03:30", "America/Santiago", "2026-04-04T03:00", "2026-04-05T04:00", 25),  # 23:30 again
        # Apia skipped 2011-12-30 entirely: the 29th ends where the 31st begins.
        ("2011-12-29T12:00", "Pacific/Apia", "2011-12-29T10:00", "2011-12-30T10:00", 24),
    ],
)
def test_tenant_day_bounds(at: str, zone: str | None, start: str, end: str, hours: int) -> None:
    bounds = tenant_day(utc(at), zone)
    assert bounds == (utc(start), utc(end))
    assert bounds[1] - bounds[0] == timedelta(hours=hours)
    assert bounds[0] <= utc(at) < bounds[1]


# ---- daily caps ------------------------------------------------------------------------------------


def test_no_caps_no_holds() -> None:
    assert daily_holds(DailyCaps(), calls_today=10**6, minutes_today=10**6, now=NOW) == ()
    assert daily_holds(DailyCaps(0, 0), calls_today=10**6, minutes_today=10**6, now=NOW) == ()


def test_a_cap_holds_once_reached_until_the_day_ends() -> None:
    caps = DailyCaps(calls_max=100, minutes_max=60)
    assert daily_holds(caps, calls_today=99, minutes_today=59.9, now=NOW) == ()
    end = utc("2026-03-05T00:00")
    assert daily_holds(caps, calls_today=100, minutes_today=0, now=NOW) == (
        Hold(BlockReason.DAILY_CALLS_MAX, until=end, detail={"limit": 100, "used": 100, "timezone": "UTC"}),
    )
    assert daily_holds(caps, calls_today=0, minutes_today=60.5, now=NOW) == (
        Hold(BlockReason.DAILY_MINUTES_MAX, until=end, detail={"limit": 60, "used": 60.5, "timezone": "UTC"}),
    )
    both = daily_holds(caps, calls_today=101, minutes_today=61, now=NOW)
    assert [h.reason for h in both] == [BlockReason.DAILY_CALLS_MAX, BlockReason.DAILY_MINUTES_MAX]


def test_the_day_rolls_over_at_local_midnight_with_a_clock() -> None:
    # A New York tenant made its 100 calls on Saturday evening, 2026-03-07. The caps are counted over the
    # tenant's day at each tick of a fixed clock: held until Sunday 00:00 EST (05:00Z), then free; the
    # Sunday of the spring forward is 23 h long, so Monday begins at 04:00Z.
    caps = DailyCaps(calls_max=100, timezone="America/New_York")
    started = [utc("2026-03-07T23:00") + timedelta(minutes=i) for i in range(100)]

    def holds_at(now: datetime) -> tuple[Hold, ...]:
        start, end = tenant_day(now, caps.timezone)
        calls = sum(start <= t < end for t in started)
        return daily_holds(caps, calls_today=calls, minutes_today=0, now=now)

    (held,) = holds_at(utc("2026-03-08T04:59:59"))
    assert held.reason is BlockReason.DAILY_CALLS_MAX and held.until == utc("2026-03-08T05:00")
    assert holds_at(held.until) == ()
    assert tenant_day(held.until, caps.timezone) == (utc("2026-03-08T05:00"), utc("2026-03-09T04:00"))

    # The same calls on Sunday: held until Monday 00:00 EDT.
    started = [utc("2026-03-08T20:00") + timedelta(minutes=i) for i in range(100)]
    (held,) = holds_at(utc("2026-03-09T03:59"))
    assert held.until == utc("2026-03-09T04:00")
    assert holds_at(utc("2026-03-09T04:00")) == ()


def test_the_day_rolls_over_at_the_fall_back_midnight() -> None:
    # Europe/Berlin's 2026-10-25 has 25 hours: a cap reached that morning lifts at 23:00Z, not 22:00Z.
    caps = DailyCaps(calls_max=1, timezone="Europe/Berlin")
    (held,) = daily_holds(caps, calls_today=1, minutes_today=0, now=utc("2026-10-25T06:00"))
    assert held.until == utc("2026-10-25T23:00")
    assert held.detail["timezone"] == "Europe/Berlin"


# ---- the tenant's rule limits as an operator sets them ----------------------------------------------------

def test_tenant_rules_are_checked_and_canonical() -> None:
    from dialerd.domain.caps import check_tenant_rules

    given = {"daily_calls_max": 500, "daily_minutes_max": None, "max_attempts_per_number": 3,
             "frequency_window_hours": 24, "timezone": "europe/paris"}
    assert check_tenant_rules(given) == {"daily_calls_max": 500, "max_attempts_per_number": 3,
                                         "frequency_window_hours": 24, "timezone": "Europe/Paris"}
    # 0 clears a limit; the pair is checked against what is stored.
    assert check_tenant_rules({"max_attempts_per_number": 0, "frequency_window_hours": 0},
                              {"max_attempts_per_number": 3, "frequency_window_hours": 24}) == {
        "max_attempts_per_number": 0, "frequency_window_hours": 0}
    assert check_tenant_rules({"max_attempts_per_number": 5},
                              {"max_attempts_per_number": 3, "frequency_window_hours": 24}) == {
        "max_attempts_per_number": 5}


@pytest.mark.parametrize(
    ("given", "current", "field"),
    [
        ({"daily_calls_max": -1}, None, "daily_calls_max"),
        ({"daily_minutes_max": 10_000_001}, None, "daily_minutes_max"),
        ({"frequency_window_hours": 8761, "max_attempts_per_number": 1}, None, "frequency_window_hours"),
        ({"max_attempts_per_number": True, "frequency_window_hours": 1}, None, "max_attempts_per_number"),
        ({"max_attempts_per_number": 3}, None, "frequency_window_hours"),
        ({"frequency_window_hours": 0}, {"max_attempts_per_number": 3, "frequency_window_hours": 24},
         "frequency_window_hours"),
        ({"timezone": "Nowhere/Atlantis"}, None, "timezone"),
        ({"concurrent_max": 3}, None, "concurrent_max"),
    ],
)
def test_tenant_rules_refused_naming_the_field(given: dict, current: dict | None, field: str) -> None:
    from dialerd.domain.caps import check_tenant_rules
    from dialerd.domain.rules import FieldError

    with pytest.raises(FieldError) as caught:
        check_tenant_rules(given, current)
    assert caught.value.field == field
