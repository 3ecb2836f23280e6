"""Wall-clock arithmetic in a recipient's zone, safe across daylight saving: the rules' one use of ``zoneinfo``.

Pure: no I/O of its own (``zoneinfo`` loads a zone's rules from the tz database once, then caches them).
All instants in and out are timezone-aware; the results are in UTC. Two facts of real zones shape the helpers:

* A wall time may not exist (the spring-forward gap: 02:30 on 2026-03-08 in New York) or exist twice (the
  fall-back fold: 01:30 on 2026-11-01). ``wall_instants`` answers with 0, 1 or 2 instants instead of
  guessing, and ``transition`` finds the instant a zone's offset changes, where a gap ends.
* Local midnight may not exist either (zones that change at 00:00 or 24:00, like America/Santiago), so a
  calendar day starts at its *first instant* (``day_start``), not at a computed "00:00".

The one assumption: a zone's local date never goes backwards (no fall-back jump crosses midnight). That
holds for every zone in use today; Santiago's 24:00 -> 23:00 jump stays within the same date.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

ONE_DAY = timedelta(days=1)
# How far a day's first instant may lie from its naive "00:00" guess: a day skipped or repeated by the
# date line (Pacific/Apia skipped 2011-12-30) plus the largest DST shift.
_SEARCH = 30 * 3600


def aware(value: datetime, name: str = "time") -> datetime:
    """``value`` in UTC; a naive datetime is a programming error (whose zone would it be in?)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {value!r}")
    return value.astimezone(UTC)


def _instant(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _first_true(lo: int, hi: int, holds: Callable[[int], bool]) -> int:
    """The least second in (lo, hi] where ``holds`` becomes true, given false at lo, true at hi, monotone."""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if holds(mid):
            hi = mid
        else:
            lo = mid
    return hi


def day_start(day: date, zone: ZoneInfo) -> datetime:
    """The first instant (UTC) whose local date in ``zone`` is ``day`` or later."""
    guess = datetime.combine(day, time(), tzinfo=zone).astimezone(UTC)

    def reached(seconds: int) -> bool:
        return _instant(seconds).astimezone(zone).date() >= day

    g = int(guess.timestamp())
    if reached(g) and not reached(g - 1):
        return guess  # the common case: midnight exists and is the day's first instant
    # Midnight falls in a gap (or the day was skipped): search the first instant of the new date.
    return _instant(_first_true(g - _SEARCH, g + _SEARCH, reached))


def day_bounds(at: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The local calendar day in ``zone`` containing ``at``, as UTC ``[start, end)`` (23, 24 or 25 h long)."""
    local_day = aware(at, "at").astimezone(zone).date()
    return day_start(local_day, zone), day_start(local_day + ONE_DAY, zone)


def transition(start: datetime, end: datetime, zone: ZoneInfo) -> datetime | None:
    """The instant in ``(start, end)`` at which ``zone``'s UTC offset changes, if it changes there.

    Meant for spans of about a day, which hold at most one transition in every real zone.
    """
    begin = int(aware(start).timestamp())
    last = int(aware(end).timestamp()) - 1
    offset = _instant(begin).astimezone(zone).utcoffset()
    if last <= begin or _instant(last).astimezone(zone).utcoffset() == offset:
        return None
    return _instant(_first_true(begin, last, lambda s: _instant(s).astimezone(zone).utcoffset() != offset))


def wall_instants(day: date, minute: int, zone: ZoneInfo) -> tuple[datetime, ...]:
    """The UTC instants at which ``zone``'s wall clock reads ``day`` at ``minute`` past midnight, in order.

    None for a time in a spring-forward gap, two for a time in a fall-back fold, else one.
    """
    wall = datetime.combine(day, time(minute // 60, minute % 60))
    found: list[datetime] = []
    for fold in (0, 1):
        instant = wall.replace(tzinfo=zone, fold=fold).astimezone(UTC)
        # For a wall time in a gap, zoneinfo answers an instant whose wall clock reads another time.
        if instant.astimezone(zone).replace(tzinfo=None) == wall and instant not in found:
            found.append(instant)
    return tuple(sorted(found))
