"""Calling hours (``dialerd/domain/hours.py``): the text form, and when a window is open in each zone.

DST dates are fixed: US spring forward 2026-03-08 and fall back 2026-11-01 (02:00 local), EU 2026-03-29
and 2026-10-25 (01:00 UTC).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from dialerd.domain.hours import CallingHours, Window, is_open, next_opening
from dialerd.domain.rules import FieldError

NY, LA = "America/New_York", "America/Los_Angeles"
BERLIN, LONDON = "Europe/Berlin", "Europe/London"
IDAHO = ("America/Boise", "America/Los_Angeles")  # +1 208: the area code spans Mountain and Pacific time


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# ---- the text form ---------------------------------------------------------------------------------

# text -> canonical form
CANONICAL = [
    ("", ""),
    ("   ", ""),
    ("mon-fri 09:00-20:00; sat 10:00-14:00", "mon-fri 09:00-20:00; sat 10:00-14:00"),
    ("daily 08:00-21:00", "daily 08:00-21:00"),
    ("mon-sun 08:00-21:00", "daily 08:00-21:00"),
    ("tue-mon 08:00-21:00", "daily 08:00-21:00"),  # a wrapping range over all seven days
    ("Mon-FRI 9:00-17:30", "mon-fri 09:00-17:30"),
    ("  sat   10:00 - 14:00 ;sun 00:00-24:00 ", "sat 10:00-14:00; sun 00:00-24:00"),
    ("fri-mon 10:00-12:00", "fri-mon 10:00-12:00"),
    ("sat-sun 10:00-12:00", "sat-sun 10:00-12:00"),
    ("sun-mon 10:00-12:00", "sun-mon 10:00-12:00"),
    ("mon 09:00-10:00; mon 09:30-11:00", "mon 09:00-10:00; mon 09:30-11:00"),  # overlaps are allowed
]


@pytest.mark.parametrize(("text", "canonical"), CANONICAL)
def test_canonical_text(text: str, canonical: str) -> None:
    hours = CallingHours.parse(text)
    assert str(hours) == canonical
    assert CallingHours.parse(str(hours)) == hours


def test_parsed_windows() -> None:
    hours = CallingHours.parse("mon-fri 09:00-20:00; sat 10:00-24:00")
    assert hours.windows == (Window(frozenset({0, 1, 2, 3, 4}), 540, 1200), Window(frozenset({5}), 600, 1440))
    assert not hours.any_time and CallingHours.parse("").any_time


def test_a_range_may_wrap_past_sunday() -> None:
    (window,) = CallingHours.parse("fri-mon 10:00-12:00").windows
    assert window.days == frozenset({4, 5, 6, 0})


# text -> the problem the message must state (after "calling_hours: ")
ERRORS = [
    ("mon-fri", "entry 1 'mon-fri' needs DAYS and HH:MM-HH:MM"),
    ("09:00-20:00", "entry 1 '09:00-20:00' needs DAYS and HH:MM-HH:MM"),
    ("mon-fri 9-17", "entry 1 'mon-fri 9-17': times must be HH:MM-HH:MM (24 h), got '9-17'"),
    ("mon 9am-5pm", "times must be HH:MM-HH:MM (24 h), got '9am-5pm'"),
    ("mon 09:00", "times must be HH:MM-HH:MM (24 h), got '09:00'"),
    ("mon 09:00-10:00 x", "times must be HH:MM-HH:MM (24 h), got '09:00-10:00 x'"),
    ("weekdays 09:00-17:00", "unknown day 'weekdays'; DAYS is daily, one of mon, tue, wed, thu, fri, sat, sun"),
    ("monday 09:00-17:00", "unknown day 'monday'"),
    ("mon-xyz 09:00-17:00", "unknown day 'xyz'"),
    ("mon- 09:00-17:00", "unknown day ''"),
    ("mon-fri-sat 09:00-17:00", "unknown day 'fri-sat'"),
    ("mon-mon 09:00-17:00", "the range mon-mon starts and ends on the same day; write mon or daily"),
    ("mon 10:00-09:00", "the end 09:00 is not after the start 10:00; a window cannot cross midnight"),
    ("mon 22:00-02:00", "the end 02:00 is not after the start 22:00"),
    ("mon 09:00-09:00", "the end 09:00 is not after the start 09:00"),
    ("mon 24:00-24:00", "24:00 may only end a window; start at 00:00"),
    ("mon 09:00-24:30", "24:30 is not a time of day (00:00-23:59, or 24:00 as an end)"),
    ("mon 09:00-25:00", "25:00 is not a time of day"),
    ("mon 09:60-10:00", "09:60 is not a time of day"),
    ("mon 09:00-10:00;", "entry 2 is empty (a ';' too many?)"),
    ("mon 09:00-10:00;; tue 09:00-10:00", "entry 2 is empty"),
    (";", "entry 1 is empty"),
    ("sat 10:00-14:00; sun 9:00-5:00", "entry 2 'sun 9:00-5:00': the end 05:00 is not after the start 09:00"),
    ("; ".join(["mon 09:00-10:00"] * 51), "has 51 entries; at most 50"),
]


@pytest.mark.parametrize(("text", "problem"), ERRORS)
def test_parse_errors_name_the_field_and_the_problem(text: str, problem: str) -> None:
    with pytest.raises(FieldError) as caught:
        CallingHours.parse(text)
    assert caught.value.field == "calling_hours"
    assert str(caught.value).startswith("calling_hours: ")
    assert problem in caught.value.problem


def test_parse_error_names_the_field_it_is_given() -> None:
    with pytest.raises(FieldError, match=r"^compliance\.calling_hours: .*unknown day") as caught:
        CallingHours.parse("xyz 09:00-10:00", field="compliance.calling_hours")
    assert caught.value.field == "compliance.calling_hours"


# ---- open or not -----------------------------------------------------------------------------------

WEEKDAYS = CallingHours.parse("mon-fri 09:00-20:00; sat 10:00-14:00")


@pytest.mark.parametrize(
    ("at", "zone", "open_"),
    [
        ("2026-03-02T14:00", NY, True),  # Mon 09:00 EST: the first minute
        ("2026-03-02T13:59", NY, False),
        ("2026-03-03T00:59", NY, True),  # Mon 19:59 EST
        ("2026-03-03T01:00", NY, False),  # Mon 20:00 EST: the end is not inside
        ("2026-03-07T15:00", NY, True),  # Sat 10:00
        ("2026-03-07T19:00", NY, False),  # Sat 14:00
        ("2026-03-01T17:00", NY, False),  # Sun
        ("2026-03-02T14:00", LA, False),  # Mon 06:00 PST
        ("2026-03-02T17:00", LA, True),
        ("2026-03-02T08:00", BERLIN, True),  # Mon 09:00 CET
        ("2026-03-02T08:59", LONDON, False),  # Mon 08:59 GMT
        ("2026-03-02T09:00", LONDON, True),
    ],
)
def test_open_in_one_zone(at: str, zone: str, open_: bool) -> None:
    assert is_open(WEEKDAYS, [zone], utc(at)) is open_


def test_24_00_joins_the_next_day() -> None:
    hours = CallingHours.parse("mon 20:00-24:00; tue 00:00-08:00")
    for at in ("2026-03-03T04:59", "2026-03-03T05:00", "2026-03-03T12:59"):  # Mon 23:59, Tue 00:00, 07:59 EST
        assert is_open(hours, [NY], utc(at))
    assert not is_open(hours, [NY], utc("2026-03-03T13:00"))
    assert next_opening(hours, [NY], utc("2026-03-03T04:59:59")) == utc("2026-03-03T04:59:59")


def test_any_time_is_always_open_and_needs_no_zone() -> None:
    hours = CallingHours.parse("")
    assert is_open(hours, [], utc("2026-03-08T07:30"))
    assert next_opening(hours, [], utc("2026-03-08T07:30")) == utc("2026-03-08T07:30")


def test_hours_without_a_zone_are_refused() -> None:
    # The caller holds such a contact back with no_timezone before asking.
    with pytest.raises(ValueError, match="at least one zone"):
        is_open(WEEKDAYS, [], utc("2026-03-02T15:00"))
    with pytest.raises(ValueError, match="at least one zone"):
        next_opening(WEEKDAYS, [], utc("2026-03-02T15:00"))


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="at_utc must be timezone-aware"):
        is_open(WEEKDAYS, [NY], datetime(2026, 3, 2, 15))
    with pytest.raises(ValueError, match="after_utc must be timezone-aware"):
        next_opening(WEEKDAYS, [NY], datetime(2026, 3, 2, 15))


def test_an_aware_time_in_any_offset_is_the_same_instant() -> None:
    at = datetime(2026, 3, 2, 9, 0, tzinfo=ZoneInfo(NY))
    assert is_open(WEEKDAYS, [NY], at)
    opening = next_opening(WEEKDAYS, [NY], at)
    assert opening == utc("2026-03-02T14:00") and opening.tzinfo is UTC


# ---- several zones: open only where every one is open ----------------------------------------------

OFFICE = CallingHours.parse("mon-fri 09:00-17:00")


@pytest.mark.parametrize(
    ("at", "open_"),
    [
        ("2026-03-02T15:59", False),
        ("2026-03-02T16:00", False),  # 09:00 in Boise (MST), 08:00 in Los Angeles
        ("2026-03-02T16:59", False),
        ("2026-03-02T17:00", True),  # 09:00 in Los Angeles too
        ("2026-03-02T23:59", True),
        ("2026-03-03T00:00", False),  # 17:00 in Boise: closed there, though Los Angeles is open till 01:00
    ],
)
def test_a_multi_zone_number_is_open_only_when_every_zone_is(at: str, open_: bool) -> None:
    assert is_open(OFFICE, IDAHO, utc(at)) is open_
    assert is_open(OFFICE, [IDAHO[0]], utc("2026-03-02T16:30"))  # either zone alone would be open


def test_next_opening_of_a_multi_zone_number_waits_for_the_last_zone() -> None:
    assert next_opening(OFFICE, IDAHO, utc("2026-03-02T12:00")) == utc("2026-03-02T17:00")
    assert next_opening(OFFICE, [IDAHO[0]], utc("2026-03-02T12:00")) == utc("2026-03-02T16:00")
    # After Monday's common window closes (00:00Z), the next is Tuesday's.
    assert next_opening(OFFICE, IDAHO, utc("2026-03-03T00:00")) == utc("2026-03-03T17:00")


def test_zones_whose_windows_never_coincide_have_no_opening() -> None:
    # 09:00-10:00 in Honolulu is 19:00-20:00 UTC; in New York 13:00-15:00 UTC whatever the season.
    hours = CallingHours.parse("daily 09:00-10:00")
    assert next_opening(hours, ["Pacific/Honolulu", NY], utc("2026-03-02T00:00")) is None
    assert next_opening(hours, ["Pacific/Honolulu", NY], utc("2026-03-02T00:00"), horizon=timedelta(days=2)) is None


def test_duplicate_zones_count_once() -> None:
    assert next_opening(OFFICE, [NY, NY], utc("2026-03-02T12:00")) == utc("2026-03-02T14:00")


# ---- the next opening, across the weekend and DST ---------------------------------------------------


@pytest.mark.parametrize(
    ("after", "zones", "expected"),
    [
        ("2026-03-02T15:00", [NY], "2026-03-02T15:00"),  # open already: itself
        ("2026-03-02T13:00", [NY], "2026-03-02T14:00"),  # later the same day
        ("2026-03-03T01:00", [NY], "2026-03-03T14:00"),  # after Monday's close: Tuesday
        ("2026-03-07T19:00", [NY], "2026-03-09T13:00"),  # Sat after 14:00: Monday 09:00, now EDT (-4)
        ("2026-03-06T01:00", [NY], "2026-03-06T14:00"),  # Thu 20:00 EST -> Fri 09:00 EST
        ("2026-03-07T01:00", [NY], "2026-03-07T15:00"),  # Fri 20:00 -> Sat 10:00
        ("2026-03-07T22:00", [LA], "2026-03-09T16:00"),  # LA Sat 14:00 PST -> Mon 09:00 PDT (-7)
        ("2026-03-28T13:00", [BERLIN], "2026-03-30T07:00"),  # Sat 14:00 CET -> Mon 09:00 CEST (+2)
        ("2026-03-28T14:00", [LONDON], "2026-03-30T08:00"),  # Sat 14:00 GMT -> Mon 09:00 BST (+1)
        ("2026-10-31T12:00", [BERLIN], "2026-10-31T12:00"),  # Sat 13:00 CET: open
        ("2026-10-31T13:00", [BERLIN], "2026-11-02T08:00"),  # Sat 14:00 CET -> Mon 09:00 CET
        ("2026-10-31T18:01", [NY], "2026-11-02T14:00"),  # Sat 14:01 EDT -> Mon 09:00 EST (-5)
    ],
)
def test_next_opening(after: str, zones: list[str], expected: str) -> None:
    assert next_opening(WEEKDAYS, zones, utc(after)) == utc(expected)


@pytest.mark.parametrize(
    ("text", "zone", "after", "opening", "closing"),
    [
        # US spring forward, 2026-03-08 02:00 EST -> 03:00 EDT (07:00 UTC).
        ("sun 02:30-04:00", NY, "2026-03-08T05:00", "2026-03-08T07:00", "2026-03-08T08:00"),  # opens as the gap ends
        ("sun 01:30-02:30", NY, "2026-03-08T05:00", "2026-03-08T06:30", "2026-03-08T07:00"),  # closed by the jump
        ("sun 09:00-17:00", NY, "2026-03-08T05:00", "2026-03-08T13:00", "2026-03-08T21:00"),
        ("sun 02:30-04:00", LA, "2026-03-08T08:00", "2026-03-08T10:00", "2026-03-08T11:00"),
        ("sun 09:00-17:00", LA, "2026-03-07T17:30", "2026-03-08T16:00", "2026-03-09T00:00"),  # Sat 09:30 PST
        # US fall back, 2026-11-01 02:00 EDT -> 01:00 EST (06:00 UTC): 01:00-02:00 happens twice.
        ("sun 01:00-02:00", NY, "2026-11-01T04:00", "2026-11-01T05:00", "2026-11-01T07:00"),  # open both hours
        ("sun 02:00-03:00", NY, "2026-11-01T04:00", "2026-11-01T07:00", "2026-11-01T08:00"),
        ("sun 01:00-02:00", LA, "2026-11-01T07:00", "2026-11-01T08:00", "2026-11-01T10:00"),
        # EU spring forward, 2026-03-29 01:00 UTC: Berlin 02:00 -> 03:00, London 01:00 -> 02:00.
        ("sun 02:30-04:00", BERLIN, "2026-03-28T23:00", "2026-03-29T01:00", "2026-03-29T02:00"),
        ("sun 09:00-17:00", BERLIN, "2026-03-28T23:00", "2026-03-29T07:00", "2026-03-29T15:00"),
        ("sun 00:30-03:00", LONDON, "2026-03-28T23:00", "2026-03-29T00:30", "2026-03-29T02:00"),
        # EU fall back, 2026-10-25 01:00 UTC: Berlin 03:00 -> 02:00, London 02:00 -> 01:00.
        ("sun 02:00-03:00", BERLIN, "2026-10-24T22:00", "2026-10-25T00:00", "2026-10-25T02:00"),
        ("sun 01:00-02:00", LONDON, "2026-10-24T22:00", "2026-10-25T00:00", "2026-10-25T02:00"),
        ("sun 09:00-17:00", LONDON, "2026-10-24T22:00", "2026-10-25T09:00", "2026-10-25T17:00"),
    ],
)
def test_dst_edges(text: str, zone: str, after: str, opening: str, closing: str) -> None:
    hours = CallingHours.parse(text)
    assert next_opening(hours, [zone], utc(after)) == utc(opening)
    assert not is_open(hours, [zone], utc(opening) - timedelta(seconds=1))
    assert is_open(hours, [zone], utc(opening))
    assert is_open(hours, [zone], utc(closing) - timedelta(seconds=1))
    assert not is_open(hours, [zone], utc(closing))


def test_the_fold_reopens_a_window_the_first_pass_left() -> None:
    # Sun 01:50 EDT, after 01:30-01:45 has passed once: the clock reads 01:30 again an hour later (EST).
    hours = CallingHours.parse("sun 01:30-01:45")
    assert next_opening(hours, [NY], utc("2026-11-01T05:50")) == utc("2026-11-01T06:30")
    assert next_opening(hours, [LONDON], utc("2026-10-25T00:50")) == utc("2026-10-25T01:30")


def test_a_window_inside_the_gap_does_not_open_that_day() -> None:
    # 02:00-02:30 never shows on New York's clocks on 2026-03-08: the next Sunday's is the first.
    hours = CallingHours.parse("sun 02:00-02:30")
    assert next_opening(hours, [NY], utc("2026-03-08T05:00")) == utc("2026-03-15T06:00")
    # London skips 01:00-02:00 on 2026-03-29.
    assert next_opening(CallingHours.parse("sun 01:00-01:30"), [LONDON], utc("2026-03-29T00:00")) == utc(
        "2026-04-05T00:00"
    )


def test_zones_on_different_dst_dates() -> None:
    # London and New York are 5 h apart, but 4 h while only the US is on summer time (2026-03-08 to
    # 03-29, and 2026-10-25 to 11-01). Only then does 12:00-13:00 in London meet 08:00-09:00 in New York.
    hours = CallingHours.parse("daily 08:00-09:00; daily 12:00-13:00")
    zones = [LONDON, NY]
    assert next_opening(hours, zones, utc("2026-03-02T00:00")) == utc("2026-03-08T12:00")
    assert next_opening(hours, zones, utc("2026-03-28T12:30")) == utc("2026-03-28T12:30")
    assert next_opening(hours, zones, utc("2026-03-28T13:00")) == utc("2026-10-25T12:00")
    assert next_opening(hours, zones, utc("2026-03-28T13:00"), horizon=timedelta(days=100)) is None


def test_next_opening_agrees_with_a_minute_by_minute_scan() -> None:
    # The candidates next_opening checks must not skip an opening: compare with the brute force.
    cases = [
        ("sun 01:00-02:00; sun 02:30-03:30; mon 00:00-01:00", NY, "2026-03-07T12:00"),
        ("sun 01:00-01:20; sun 01:40-02:00", NY, "2026-11-01T05:10"),
        ("sun 02:00-02:10; sun 03:05-03:10", BERLIN, "2026-10-24T23:30"),
        ("sat-sun 23:00-24:00; mon 00:00-00:30", LONDON, "2026-03-27T00:00"),
    ]
    for text, zone, start in cases:
        hours = CallingHours.parse(text)
        at = utc(start)
        while not is_open(hours, [zone], at):
            at += timedelta(minutes=1)
        assert next_opening(hours, [zone], utc(start)) == at, (text, zone)
