"""The ledger's daily caps (services/slots.py): today's usage read from the store once, then counted
exactly; the day rolling over at the tenant's local midnight (a wall clock), DST days included."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dialerd.domain.rules import BlockReason
from dialerd.services.slots import Slots
from dialerd.store.tables import Tenant

pytestmark = pytest.mark.timeout(10)

NY = "America/New_York"


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


class Store:
    """A TenantReader: tenant rows and, per tenant, the attempts (start, talk seconds or None) it holds."""

    def __init__(self, **rules: int | str) -> None:
        self.row = Tenant(id="t1", name="acme", concurrent_max=10, calls_per_minute=6000, **rules)
        self.attempts: list[tuple[datetime, float | None]] = []
        self.usage_reads: list[tuple[datetime, datetime]] = []

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        return self.row if tenant_id == "t1" else None

    async def tenant_day_usage(self, tenant_id: str, start: datetime, end: datetime) -> tuple[int, float]:
        self.usage_reads.append((start, end))
        inside = [talk for at, talk in self.attempts if start <= at < end]
        return len(inside), sum(t for t in inside if t is not None)


class Wall:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _ledger(now: str, **rules: int | str) -> tuple[Slots, Store, Wall]:
    store, wall = Store(**rules), Wall(utc(now))
    return Slots(store, wall=wall), store, wall


async def _start(slots: Slots, store: Store, wall: Wall) -> bool:
    """One runner turn: re-read what is due, check the daily caps, count the start (as _step does)."""
    await slots.tenant("t1")
    if slots.daily_holds("t1"):
        return False
    slots.count_start("t1")
    store.attempts.append((wall.now, None))
    return True


async def test_the_cap_reached_at_2359_local_lifts_at_local_midnight() -> None:
    # 2026-03-02 23:59 in New York (EST, UTC-5) is 04:59 UTC on the 3rd.
    slots, store, wall = _ledger("2026-03-03T04:50", daily_calls_max=3, timezone=NY)
    store.attempts += [(utc("2026-03-02T06:00"), None)]  # 01:00 local on the 2nd: today, read from the store
    assert [await _start(slots, store, wall) for _ in range(3)] == [True, True, False]
    wall.now = utc("2026-03-03T04:59")
    (held,) = slots.daily_holds("t1")
    assert held.reason is BlockReason.DAILY_CALLS_MAX and held.until == utc("2026-03-03T05:00")
    assert held.detail == {"limit": 3, "used": 3, "timezone": NY}
    assert not await _start(slots, store, wall)
    wall.now = utc("2026-03-03T05:00")  # 00:00 local: a new day, read from the store (nothing yet)
    assert slots.daily_holds("t1") == ()
    assert [await _start(slots, store, wall) for _ in range(4)] == [True, True, True, False]
    assert store.usage_reads == [(utc("2026-03-02T05:00"), utc("2026-03-03T05:00")),
                                 (utc("2026-03-03T05:00"), utc("2026-03-04T05:00"))]


@pytest.mark.parametrize(
    ("now", "start", "end"),
    [
        ("2026-03-08T12:00", "2026-03-08T05:00", "2026-03-09T04:00"),  # spring forward: a 23 h day
        ("2026-11-01T12:00", "2026-11-01T04:00", "2026-11-02T05:00"),  # fall back: a 25 h day
    ],
)
async def test_dst_days_are_23_and_25_hours(now: str, start: str, end: str) -> None:
    slots, store, wall = _ledger(now, daily_calls_max=1, timezone=NY)
    assert await _start(slots, store, wall)
    (held,) = slots.daily_holds("t1")
    assert held.until == utc(end)
    assert store.usage_reads == [(utc(start), utc(end))]
    wall.now = utc(end) - timedelta(microseconds=1)
    assert not await _start(slots, store, wall)
    wall.now = utc(end)
    assert await _start(slots, store, wall)


async def test_a_start_given_back_is_uncounted_only_on_its_day() -> None:
    slots, _store, wall = _ledger("2026-06-01T10:00", daily_calls_max=2)
    await slots.tenant("t1")
    day = slots.count_start("t1")
    slots.uncount_start("t1", day)  # nothing was kept: not a start
    first = slots.count_start("t1")
    second = slots.count_start("t1")
    assert first == second == utc("2026-06-01T00:00") and slots.daily_holds("t1")
    wall.now = utc("2026-06-02T00:00")
    await slots.tenant("t1")  # the new day
    slots.uncount_start("t1", second)  # yesterday's start given back: today's count is untouched
    assert slots.count_start("t1") == utc("2026-06-02T00:00")
    assert slots.count_start("t1") is not None and slots.daily_holds("t1")


async def test_minutes_are_re_read_after_a_call_of_the_tenant_ends() -> None:
    slots, store, wall = _ledger("2026-06-01T10:00", daily_minutes_max=2)
    store.attempts.append((utc("2026-06-01T09:00"), 90.0))
    await slots.tenant("t1")
    assert slots.daily_holds("t1") == ()
    slots.reserve("c1", "t1")
    slots.hold("ch1", "c1", "t1")
    store.attempts.append((utc("2026-06-01T09:59"), 30.0))  # the call's end is recorded...
    await slots.tenant("t1")
    assert slots.daily_holds("t1") == ()  # ... but the ledger has not heard of it
    slots.end_call("ch1")
    await slots.tenant("t1")
    (held,) = slots.daily_holds("t1")
    assert held.reason is BlockReason.DAILY_MINUTES_MAX and held.detail["used"] == 2.0
    assert held.until == utc("2026-06-02T00:00")
    assert len(store.usage_reads) == 2


async def test_no_daily_cap_reads_no_usage_and_tenant_holds_names_the_others() -> None:
    slots, store, wall = _ledger("2026-06-01T10:00")
    await slots.tenant("t1")
    assert store.usage_reads == [] and slots.count_start("t1") is None and slots.daily_holds("t1") == ()
    store.row.concurrent_max = 1
    slots._limits["t1"].concurrent_max = 1
    slots.reserve("c1", "t1")
    assert [h.reason for h in slots.tenant_holds("t1")] == [BlockReason.TENANT_CONCURRENCY]
    store.row.daily_calls_max = 1
    slots._limits["t1"].loaded_at = -1e9  # due for a re-read: the cap set meanwhile is seen
    await slots.tenant("t1")
    slots.count_start("t1")
    assert [h.reason for h in slots.tenant_holds("t1", wall.now)] == [BlockReason.DAILY_CALLS_MAX,
                                                                      BlockReason.TENANT_CONCURRENCY]
    assert slots.tenant_holds("nobody") == ()
