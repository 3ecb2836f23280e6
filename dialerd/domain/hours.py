"""Calling hours: when a recipient may be called, read on the recipient's own wall clock. Pure.

Text form (form field ``calling_hours``, config ``[compliance] calling_hours``): entries separated by ``;``,
each ``DAYS HH:MM-HH:MM``. DAYS is ``daily``, a day ``mon``..``sun``, or a range ``mon-fri``; a range may
wrap past Sunday (``fri-mon`` is fri, sat, sun, mon), and one that names the same day twice (``mon-mon``)
is refused as ambiguous. Times are 24 h, ``H:MM`` or ``HH:MM``; the end is after the start (a window
never crosses midnight: ``mon 22:00-24:00; tue 00:00-02:00``), and ``24:00`` may end a window. Entries
may overlap (their union counts). Day names are read in any case; the empty text means any time.
``str()`` gives the canonical form: lower case, ``HH:MM``, ``daily`` for all seven days, ``"; "`` between
the entries in the order given.

A window is open while the recipient's wall clock reads a time inside it (``[start, end)``); daylight
saving comes from ``zoneinfo``. Hence, deliberately:

* a window that starts in the spring-forward gap opens when the gap ends (``02:30-04:00`` opens at 03:00
  on 2026-03-08 in New York), and one that lies wholly inside the gap does not open that day;
* in the fall-back fold the clock reads 01:00-02:00 twice, and a window covering it is open both times:
  the recipient lives through both hours, and each of them is inside the permitted hours.

With several zones (a number whose area code spans zones, a toll-free number), a contact may be called
only while the window is open in *every* zone.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from dialerd.domain.localtime import ONE_DAY, aware, day_start, transition, wall_instants
from dialerd.domain.rules import FieldError

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # index = datetime.weekday()
ALL_DAYS = frozenset(range(7))
END_OF_DAY = 24 * 60  # minutes; "24:00"
MAX_ENTRIES = 50
# How far ``next_opening`` looks. Weekly windows in zones whose offsets differ by DST dates can first
# coincide up to a year out (between the US and EU changes); past a year they never will.
HORIZON = timedelta(days=371)

_TIMES = re.compile(r"(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})")
_EXAMPLE = "e.g. 'mon-fri 09:00-20:00; sat 10:00-14:00'"


@dataclass(frozen=True)
class Window:
    """One entry: open on ``days`` (0 = Monday) from ``start`` to ``end``, in minutes past local midnight."""

    days: frozenset[int]
    start: int
    end: int

    def __str__(self) -> str:
        return f"{_days_text(self.days)} {_clock(self.start)}-{_clock(self.end)}"


@dataclass(frozen=True)
class CallingHours:
    """The permitted windows of a campaign; none means any time."""

    windows: tuple[Window, ...] = ()
    # weekday -> its (start, end) spans, for the per-contact checks on the claim path.
    _by_day: tuple[tuple[tuple[int, int], ...], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_day = tuple(tuple(sorted((w.start, w.end) for w in self.windows if day in w.days)) for day in range(7))
        object.__setattr__(self, "_by_day", by_day)

    @classmethod
    def parse(cls, text: str, *, field: str = "calling_hours") -> CallingHours:
        """Read the text form; raise FieldError naming ``field`` and the entry that is wrong."""
        if not text.strip():
            return cls()
        entries = text.split(";")
        if len(entries) > MAX_ENTRIES:
            raise FieldError(field, f"has {len(entries)} entries; at most {MAX_ENTRIES}")
        return cls(tuple(_entry(field, number, entry) for number, entry in enumerate(entries, 1)))

    @property
    def any_time(self) -> bool:
        return not self.windows

    def open_at_local(self, local: datetime) -> bool:
        """Whether a wall clock reading ``local`` (its date and time; the zone is not looked at) is inside."""
        minute = local.hour * 60 + local.minute
        return any(start <= minute < end for start, end in self._by_day[local.weekday()])

    def starts(self, weekday: int) -> tuple[int, ...]:
        """The minutes past midnight at which a window starts on ``weekday`` (0 = Monday)."""
        return tuple(start for start, _ in self._by_day[weekday])

    def open_in(self, zone: ZoneInfo, at: datetime) -> bool:
        """Whether the window is open in ``zone`` at the instant ``at``."""
        return self.any_time or self.open_at_local(at.astimezone(zone))

    def __str__(self) -> str:
        return "; ".join(str(w) for w in self.windows)


def _entry(field: str, number: int, entry: str) -> Window:
    where = f"entry {number} {entry.strip()!r}"
    parts = entry.split(None, 1)
    if not parts:
        raise FieldError(field, f"entry {number} is empty (a ';' too many?); {_EXAMPLE}")
    if len(parts) == 1:
        raise FieldError(field, f"{where} needs DAYS and HH:MM-HH:MM, {_EXAMPLE}")
    days = _days(field, where, parts[0].lower())
    times = "".join(parts[1].split())  # "09:00 - 20:00" reads like "09:00-20:00"
    match = _TIMES.fullmatch(times)
    if match is None:
        raise FieldError(field, f"{where}: times must be HH:MM-HH:MM (24 h), got {parts[1].strip()[:40]!r}")
    start = _minute(field, where, int(match[1]), int(match[2]), end=False)
    end = _minute(field, where, int(match[3]), int(match[4]), end=True)
    if end <= start:
        raise FieldError(
            field,
            f"{where}: the end {_clock(end)} is not after the start {_clock(start)}; a window cannot cross "
            "midnight, split it, e.g. 'mon 22:00-24:00; tue 00:00-06:00'",
        )
    return Window(days, start, end)


def _days(field: str, where: str, text: str) -> frozenset[int]:
    if text == "daily":
        return ALL_DAYS
    first, dash, last = text.partition("-")
    names = (first, last) if dash else (first,)
    for name in names:
        if name not in DAY_NAMES:
            raise FieldError(
                field, f"{where}: unknown day {name!r}; DAYS is daily, one of {', '.join(DAY_NAMES)}, or a range "
                "like mon-fri",
            )
    a = DAY_NAMES.index(first)
    if not dash:
        return frozenset({a})
    b = DAY_NAMES.index(last)
    if a == b:
        raise FieldError(field, f"{where}: the range {text} starts and ends on the same day; write {first} or daily")
    # A range runs forward from its first day and may wrap past Sunday: fri-mon is fri, sat, sun, mon.
    return frozenset((a + i) % 7 for i in range((b - a) % 7 + 1))


def _minute(field: str, where: str, hour: int, minute: int, *, end: bool) -> int:
    clock = f"{hour:02d}:{minute:02d}"
    if hour == 24 and minute == 0:
        if not end:
            raise FieldError(field, f"{where}: 24:00 may only end a window; start at 00:00")
        return END_OF_DAY
    if hour > 23 or minute > 59:
        raise FieldError(field, f"{where}: {clock} is not a time of day (00:00-23:59, or 24:00 as an end)")
    return hour * 60 + minute


def _clock(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _days_text(days: frozenset[int]) -> str:
    if days == ALL_DAYS:
        return "daily"
    # Days parsed from a range are contiguous around the week: start at the one whose eve is not in it.
    first = next(d for d in sorted(days) if (d - 1) % 7 not in days)
    last = (first + len(days) - 1) % 7
    return DAY_NAMES[first] if first == last else f"{DAY_NAMES[first]}-{DAY_NAMES[last]}"


@lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _zones(zones: Sequence[str]) -> list[ZoneInfo]:
    if not zones:
        # The caller decides this case first: the contact waits with blocked_reason no_timezone.
        raise ValueError("calling hours need at least one zone to be read in")
    return [_zone(name) for name in dict.fromkeys(zones)]


def is_open(hours: CallingHours, zones: Sequence[str], at_utc: datetime) -> bool:
    """Whether a contact in ``zones`` (IANA names) may be called at ``at_utc``: open in every zone.

    Any-time hours are open whatever the zones; otherwise ``zones`` must not be empty (ValueError).
    """
    at = aware(at_utc, "at_utc")
    if hours.any_time:
        return True
    return all(hours.open_in(zone, at) for zone in _zones(zones))


def next_opening(
    hours: CallingHours, zones: Sequence[str], after_utc: datetime, *, horizon: timedelta = HORIZON,
) -> datetime | None:
    """The earliest instant at or after ``after_utc`` (UTC) at which the window is open in every zone.

    ``after_utc`` itself when it is open already; None when no such instant comes within ``horizon``
    (windows that never coincide, e.g. ``daily 09:00-10:00`` in Honolulu and New York).
    """
    at = aware(after_utc, "after_utc")
    if hours.any_time:
        return at
    tzs = _zones(zones)
    limit = at + horizon
    # ``at`` only moves forward, and never past the answer: the common opening can be no earlier than
    # the latest of the closed zones' own next openings. Open in all zones at ``at`` ends the search.
    while at <= limit:
        closed = [zone for zone in tzs if not hours.open_in(zone, at)]
        if not closed:
            return at
        later: list[datetime] = []
        for zone in closed:
            opening = _next_in_zone(hours, zone, at, limit)
            if opening is None:
                return None
            later.append(opening)
        at = max(later)
    return None


def _next_in_zone(hours: CallingHours, zone: ZoneInfo, after: datetime, limit: datetime) -> datetime | None:
    """The first instant after ``after`` (which is closed in ``zone``) at which ``zone``'s window opens.

    Walks the local days from ``after``'s. A window can open only where the wall clock reaches its start,
    where a DST transition makes the clock jump into it, or where a new day begins; those instants are
    the candidates, and the first one found open is the answer.
    """
    day = after.astimezone(zone).date()
    start = day_start(day, zone)
    while start <= limit:
        end = day_start(day + ONE_DAY, zone)
        candidates = {start}
        jump = transition(start, end, zone)
        if jump is not None:
            candidates.add(jump)
        for minute in hours.starts(day.weekday()):
            candidates.update(wall_instants(day, minute, zone))
        for candidate in sorted(c for c in candidates if after < c < end):
            if candidate > limit:
                return None
            if hours.open_in(zone, candidate):
                return candidate
        day, start = day + ONE_DAY, end
    return None
