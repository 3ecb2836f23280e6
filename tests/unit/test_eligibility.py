"""One pending contact's hold (``dialerd/domain/eligibility.py``): its blocked_reason and next_eligible_at."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dialerd.domain.caps import FrequencyCap, frequency_hold
from dialerd.domain.eligibility import contact_hold
from dialerd.domain.hours import CallingHours
from dialerd.domain.rules import BlockReason, Hold

NY = ("America/New_York",)
IDAHO = ("America/Boise", "America/Los_Angeles")
WEEKDAYS = CallingHours.parse("mon-fri 09:00-20:00")
ANY_TIME = CallingHours()
MIN = timedelta(minutes=1)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


MON_NOON = utc("2026-03-02T17:00")  # 12:00 in New York
FRI_EVENING = utc("2026-03-07T00:30")  # Fri 19:30 EST: half an hour before the close


def test_a_due_contact_in_an_open_window_is_eligible() -> None:
    assert contact_hold(now=MON_NOON, hours=WEEKDAYS, zones=NY) is None
    assert contact_hold(now=MON_NOON, hours=WEEKDAYS, zones=NY, due_at=MON_NOON - MIN) is None
    assert contact_hold(now=MON_NOON, hours=ANY_TIME, zones=()) is None


def test_outside_the_window_it_waits_for_the_opening() -> None:
    hold = contact_hold(now=utc("2026-03-02T12:00"), hours=WEEKDAYS, zones=NY)
    assert hold == Hold(BlockReason.OUTSIDE_CALLING_HOURS, until=utc("2026-03-02T14:00"))


def test_a_multi_zone_number_waits_for_its_last_zone() -> None:
    hold = contact_hold(now=utc("2026-03-02T16:30"), hours=WEEKDAYS, zones=IDAHO)  # 09:30 Boise, 08:30 LA
    assert hold == Hold(BlockReason.OUTSIDE_CALLING_HOURS, until=utc("2026-03-02T17:00"))


def test_no_zone_with_calling_hours_is_no_timezone() -> None:
    assert contact_hold(now=MON_NOON, hours=WEEKDAYS, zones=()) == Hold(BlockReason.NO_TIMEZONE)


def test_a_retry_due_in_an_open_window_waits_for_its_delay() -> None:
    hold = contact_hold(now=MON_NOON, hours=WEEKDAYS, zones=NY, due_at=MON_NOON + 5 * MIN)
    assert hold == Hold(BlockReason.RETRY_DELAY, until=MON_NOON + 5 * MIN)


def test_a_retry_that_falls_due_in_a_closed_window_moves_to_the_next_opening() -> None:
    # Due at 20:10 EST on Friday: the window has closed; Monday 09:00 EDT (after the spring forward).
    hold = contact_hold(now=FRI_EVENING, hours=WEEKDAYS, zones=NY, due_at=FRI_EVENING + 40 * MIN)
    assert hold == Hold(BlockReason.OUTSIDE_CALLING_HOURS, until=utc("2026-03-09T13:00"))


def test_the_frequency_cap_lifts_then_the_window_decides() -> None:
    cap = FrequencyCap(max_attempts=1, window_hours=24)
    # Monday 06:00 in New York: the cap lifts at 08:00 (13:00Z), the window opens at 09:00.
    now = utc("2026-03-02T11:00")
    frequency = frequency_hold(cap, [utc("2026-03-01T13:00")], now)
    assert frequency is not None and frequency.until == utc("2026-03-02T13:00")
    hold = contact_hold(now=now, hours=WEEKDAYS, zones=NY, frequency=frequency)
    assert hold == Hold(BlockReason.OUTSIDE_CALLING_HOURS, until=utc("2026-03-02T14:00"))
    # In the window, the cap is the last to lift.
    frequency = frequency_hold(cap, [MON_NOON - 20 * timedelta(hours=1)], MON_NOON)
    hold = contact_hold(now=MON_NOON, hours=WEEKDAYS, zones=NY, frequency=frequency)
    assert hold is not None and frequency is not None
    assert (hold.reason, hold.until) == (BlockReason.FREQUENCY_CAP, MON_NOON + 4 * timedelta(hours=1))
    assert hold.detail == frequency.detail


@pytest.mark.parametrize(
    ("due", "lift", "reason"),
    [
        (10, 5, BlockReason.RETRY_DELAY),
        (5, 10, BlockReason.FREQUENCY_CAP),
        (7, 7, BlockReason.RETRY_DELAY),  # a tie
    ],
)
def test_the_last_rule_to_lift_is_the_reason(due: int, lift: int, reason: BlockReason) -> None:
    frequency = Hold(BlockReason.FREQUENCY_CAP, until=MON_NOON + lift * MIN)
    hold = contact_hold(now=MON_NOON, hours=ANY_TIME, zones=(), due_at=MON_NOON + due * MIN, frequency=frequency)
    assert hold is not None and (hold.reason, hold.until) == (reason, MON_NOON + max(due, lift) * MIN)


def test_a_window_that_never_opens_holds_with_no_time() -> None:
    hours = CallingHours.parse("daily 09:00-10:00")
    hold = contact_hold(now=MON_NOON, hours=hours, zones=("Pacific/Honolulu", "America/New_York"))
    assert hold == Hold(BlockReason.OUTSIDE_CALLING_HOURS, until=None)


def test_a_hold_with_no_end_stays() -> None:
    frequency = Hold(BlockReason.FREQUENCY_CAP)
    assert contact_hold(now=MON_NOON, hours=WEEKDAYS, zones=NY, frequency=frequency) is frequency
