"""A tenant's frequency cap per recipient and its daily caps: whether they hold a call back, and until when. Pure.

A limit of 0 or None is no limit. The caller counts (in the claim transaction); these decide:

* **Frequency cap** (``max_attempts_per_number`` in ``frequency_window_hours``, e.g. 3 in 24 h): the
  attempts to one number across all the tenant's campaigns that started in the last window, i.e. after
  ``window_start(now)``. At the limit, the contact waits (``frequency_cap``) until enough of them have left
  the window; an attempt started at ``t`` leaves it at ``t + window``. The cap needs both numbers set.
* **Daily caps** (``daily_calls_max`` attempts started, ``daily_minutes_max`` answered talk minutes) per
  calendar day in the tenant's ``timezone`` (UTC when unset). ``tenant_day`` gives the day's bounds in
  UTC (23 or 25 hours long on DST days). Once a cap is reached nothing new is originated until the next
  local midnight, the day's end, when it lifts by itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from dialerd.domain.localtime import aware, day_bounds
from dialerd.domain.rules import BlockReason, Hold


def limit(value: int | None) -> int | None:
    """A limit as stored or given (0 or None: none) as the limit that applies (None: none)."""
    if value is not None and value < 0:
        raise ValueError(f"a limit cannot be negative, got {value}")
    return value or None


@dataclass(frozen=True)
class FrequencyCap:
    """At most ``max_attempts`` attempts to one number in any ``window_hours``, across a tenant's campaigns."""

    max_attempts: int | None = None
    window_hours: int | None = None

    @property
    def active(self) -> bool:
        return limit(self.max_attempts) is not None and limit(self.window_hours) is not None

    @property
    def window(self) -> timedelta:
        return timedelta(hours=self.window_hours or 0)

    def window_start(self, now: datetime) -> datetime:
        """Attempts started after this instant (exclusive) count against the cap at ``now``."""
        return aware(now, "now") - self.window


def frequency_hold(cap: FrequencyCap, attempts: Iterable[datetime], now: datetime) -> Hold | None:
    """``frequency_cap`` until the number may be called again, given when its attempts started; None: free.

    ``attempts`` may include ones outside the window (they are not counted). When more than the limit are
    counted (the limit was lowered), the contact waits until enough have left, not only the oldest.
    """
    if not cap.active:
        return None
    assert cap.max_attempts is not None
    start = cap.window_start(now)
    counted = sorted(t for t in (aware(a, "attempt") for a in attempts) if t > start)
    if len(counted) < cap.max_attempts:
        return None
    # One more may start once the count is below the limit: when the (count - limit + 1)-th oldest leaves.
    leaving = counted[len(counted) - cap.max_attempts]
    return Hold(
        BlockReason.FREQUENCY_CAP,
        until=leaving + cap.window,
        detail={"max_attempts_per_number": cap.max_attempts, "frequency_window_hours": cap.window_hours,
                "attempts": len(counted)},
    )


@dataclass(frozen=True)
class DailyCaps:
    """A tenant's caps per calendar day in ``timezone`` (an IANA name; None: UTC)."""

    calls_max: int | None = None  # daily_calls_max: attempts started
    minutes_max: int | None = None  # daily_minutes_max: answered talk minutes
    timezone: str | None = None


@lru_cache(maxsize=256)
def _zone(name: str | None) -> ZoneInfo:
    return ZoneInfo(name or "UTC")


def tenant_day(at: datetime, timezone: str | None) -> tuple[datetime, datetime]:
    """The tenant's calendar day containing ``at``, as UTC ``[start, end)``; ``end`` is the next local midnight."""
    return day_bounds(at, _zone(timezone))


def daily_holds(caps: DailyCaps, *, calls_today: int, minutes_today: float, now: datetime) -> tuple[Hold, ...]:
    """The daily caps reached at ``now`` (``daily_calls_max`` first, then ``daily_minutes_max``), each
    held until the day's end; () when none is.

    ``calls_today``: attempts started within ``tenant_day(now, caps.timezone)``; ``minutes_today``: the
    answered talk minutes counted for that day.
    """
    reached = [
        (reason, cap, used)
        for reason, cap, used in ((BlockReason.DAILY_CALLS_MAX, limit(caps.calls_max), calls_today),
                                  (BlockReason.DAILY_MINUTES_MAX, limit(caps.minutes_max), minutes_today))
        if cap is not None and used >= cap
    ]
    if not reached:
        return ()
    _, end = tenant_day(now, caps.timezone)
    zone = caps.timezone or "UTC"
    return tuple(Hold(reason, until=end, detail={"limit": cap, "used": used, "timezone": zone})
                 for reason, cap, used in reached)


# ---- a tenant's rule limits as an operator sets them (``dialerd keys create`` / ``dialerd tenants set``) ----

#: The tenant limits of issue 11 beyond ``concurrent_max``/``calls_per_minute``, each with its inclusive
#: range; 0 is no limit. ``timezone`` (the day of the daily caps) is text, checked by ``check_timezone``.
TENANT_RULE_RANGES: dict[str, tuple[int, int]] = {
    "daily_calls_max": (0, 10_000_000),
    "daily_minutes_max": (0, 10_000_000),
    "max_attempts_per_number": (0, 1000),
    "frequency_window_hours": (0, 8760),
}
TENANT_RULES: tuple[str, ...] = (*TENANT_RULE_RANGES, "timezone")


def check_tenant_rules(given: dict[str, int | str | None], current: dict[str, int | str] | None = None) -> dict[str, int | str]:
    """The rule limits ``given`` (None: not given) as they are stored, or FieldError naming the first bad one.

    ``current``: the tenant's stored values, for the pair check: ``max_attempts_per_number`` and
    ``frequency_window_hours`` make one cap, so once both are known exactly one of them set is refused (a cap
    that never applies would only mislead). An empty ``timezone`` is UTC.
    """
    from dialerd.domain.rules import FieldError
    from dialerd.domain.zones import check_timezone

    out: dict[str, int | str] = {}
    for name, value in given.items():
        if value is None:
            continue
        if name == "timezone":
            out[name] = check_timezone(str(value), field=name) or ""
            continue
        if name not in TENANT_RULE_RANGES:
            raise FieldError(name, "is not a tenant limit")
        low, high = TENANT_RULE_RANGES[name]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise FieldError(name, f"must be a whole number from {low} to {high} (0 = no limit), got {value!r}")
        out[name] = value
    merged = {**(current or {}), **out}
    attempts, window = merged.get("max_attempts_per_number", 0), merged.get("frequency_window_hours", 0)
    if bool(attempts) != bool(window):
        raise FieldError(
            "max_attempts_per_number" if not attempts else "frequency_window_hours",
            "max_attempts_per_number and frequency_window_hours make one cap: set both (e.g. 3 in 24) or "
            "neither (0)",
        )
    return out
