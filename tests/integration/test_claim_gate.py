"""The claim gate on both call stores (issue 11): calling hours in each contact's zones and the frequency cap,
decided in the claim transaction, written as the contact's blocked_reason and next_eligible_at.

The clock is the stores' ``utcnow`` (patched per test): the attempt's created_at and the gate read the same
instant, so the frequency cap counts attempts at the times the test chose.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dialerd.domain.contact import ContactStatus
from dialerd.domain.zones import ContactZones, TimezoneSource
from dialerd.store import sql_calls, sqlite_calls
from dialerd.store.db import create_engine, migrate
from dialerd.store.repo import Store
from dialerd.store.sql_calls import SqlCalls
from dialerd.store.sqlite_calls import SqliteCalls
from dialerd.store.tables import Contact
from tests.conftest import _pg_create, _pg_drop
from tests.integration.test_store import campaign_model

HOURS = "daily 09:00-17:00"
# Tuesday 2026-03-10, two days after the US spring forward: New York is UTC-4, Los Angeles UTC-7.
T0 = datetime(2026, 3, 10, 3, 0, tzinfo=UTC)  # 23:00 in New York (Monday): closed
NY_OPENS = datetime(2026, 3, 10, 13, 0, tzinfo=UTC)  # 09:00 EDT
LA_OPENS = datetime(2026, 3, 10, 16, 0, tzinfo=UTC)  # 09:00 PDT


@pytest.fixture(params=[
    pytest.param("sqlite", id="sqlite-SqliteCalls"),
    pytest.param("sqlite-sql", id="sqlite-SqlCalls"),
    pytest.param("postgres", id="postgres-SqlCalls", marks=pytest.mark.postgres),
])
async def store(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[Store]:
    url = await _pg_create() if request.param == "postgres" else f"sqlite+aiosqlite:///{tmp_path / 'dialerd.db'}"
    engine = create_engine(url)
    try:
        await migrate(engine)
        s = Store(engine, calls=SqlCalls) if request.param == "sqlite-sql" else Store(engine)
        assert isinstance(s.calls, SqliteCalls if request.param == "sqlite" else SqlCalls)
        try:
            yield s
        finally:
            await s.close()
    finally:
        await engine.dispose()
        if request.param == "postgres":
            await _pg_drop(url)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    c = Clock(T0)
    for module in (sql_calls, sqlite_calls):
        monkeypatch.setattr(module, "utcnow", c)
    yield c


async def tenant(store: Store, name: str = "acme", **limits: int) -> str:
    t = await store.upsert_tenant("t_" + secrets.token_hex(6), name, 10, 60, defaults=(10, 60))
    if limits:
        await store.set_tenant_limits(name, None, None, limits)
    return t.id


async def campaign(store: Store, tenant_id: str, contacts: list[tuple[str, str | None]], hours: str = HOURS) -> str:
    c = campaign_model(tenant_id, status="running", calling_hours=hours)
    await store.insert_campaign(c)
    await store.insert_contacts(c.id, [
        {"line": i + 2, "phone_e164": number, "raw_number": number, "fields": {}, "timezone": zones,
         "timezone_source": "column" if zones else None}
        for i, (number, zones) in enumerate(contacts)
    ])
    return c.id


async def contacts_of(store: Store, campaign_id: str) -> list[Contact]:
    found, _ = await store.list_contacts(campaign_id, None, 100, 0)
    return found


async def claim(store: Store, campaign_id: str, now: datetime) -> Contact | None:
    """What the dispatcher does: the first candidate, then the attempt (None if held or none due)."""
    due = await store.next_due_contacts(campaign_id, now, 1)
    if not due:
        return None
    attempt = await store.begin_attempt(due[0], f"ch-{secrets.token_hex(6)}")
    return due[0] if attempt is not None else None


async def test_closed_window_holds_until_the_next_opening_and_then_claims(store: Store, clock: Clock) -> None:
    cid = await campaign(store, await tenant(store), [("+12125550100", "America/New_York")])
    assert await claim(store, cid, clock.now) is None
    (held,) = await contacts_of(store, cid)
    assert (held.blocked_reason, held.next_eligible_at, held.attempts) == ("outside_calling_hours", NY_OPENS, 0)
    # The candidate query skips it until then, and the runner's wake-up is that opening.
    assert await store.next_due_contacts(cid, clock.now, 10) == []
    assert await store.next_retry_time(cid) == NY_OPENS
    clock.now = NY_OPENS
    assert await claim(store, cid, clock.now) is not None
    (claimed,) = await contacts_of(store, cid)
    assert (claimed.blocked_reason, claimed.next_eligible_at, claimed.attempts) == (None, None, 1)


async def test_a_multi_zone_contact_waits_for_every_zone(store: Store, clock: Clock) -> None:
    cid = await campaign(store, await tenant(store), [("+12125550100", "America/New_York,America/Los_Angeles")])
    clock.now = NY_OPENS + timedelta(hours=1)  # open in New York, 07:00 in Los Angeles
    assert await claim(store, cid, clock.now) is None
    (held,) = await contacts_of(store, cid)
    assert (held.blocked_reason, held.next_eligible_at) == ("outside_calling_hours", LA_OPENS)
    clock.now = LA_OPENS
    assert await claim(store, cid, clock.now) is not None


async def test_open_contacts_are_claimed_while_closed_ones_are_held(store: Store, clock: Clock) -> None:
    clock.now = NY_OPENS + timedelta(hours=1)
    cid = await campaign(store, await tenant(store), [("+12125550100", "America/Los_Angeles"),
                                                      ("+12125550101", "America/New_York")])
    claimed = await claim(store, cid, clock.now)  # the first candidate is held, so one more query
    assert claimed is None
    claimed = await claim(store, cid, clock.now)
    assert claimed is not None and claimed.phone_e164 == "+12125550101"
    la, ny = await contacts_of(store, cid)
    assert (la.blocked_reason, la.next_eligible_at) == ("outside_calling_hours", LA_OPENS)
    assert (ny.attempts, ny.blocked_reason) == (1, None)


async def test_no_zone_waits_with_no_time_and_is_not_reexamined(store: Store, clock: Clock) -> None:
    cid = await campaign(store, await tenant(store), [("+12125550100", None)])
    assert await claim(store, cid, clock.now) is None
    (held,) = await contacts_of(store, cid)
    assert (held.blocked_reason, held.next_eligible_at) == ("no_timezone", None)
    assert await store.next_due_contacts(cid, clock.now, 10) == []
    assert await store.next_retry_time(cid) is None  # no wake-up: nothing lifts by itself
    # A PATCH of the zone gives it the campaign's and lifts the hold (CampaignService.update).
    await store.rezone_contacts(cid, ContactZones(("America/New_York",), TimezoneSource.CAMPAIGN))
    (moved,) = await contacts_of(store, cid)
    assert (moved.timezone, moved.timezone_source, moved.blocked_reason) == ("America/New_York", "campaign", None)


async def test_any_time_hours_need_no_zone(store: Store, clock: Clock) -> None:
    cid = await campaign(store, await tenant(store), [("+12125550100", None)], hours="")
    assert await claim(store, cid, clock.now) is not None


async def test_a_retry_due_in_a_closed_window_moves_to_the_next_opening(store: Store, clock: Clock) -> None:
    cid = await campaign(store, await tenant(store), [("+12125550100", "America/New_York")])
    clock.now = NY_OPENS + timedelta(hours=7, minutes=50)  # 16:50 in New York
    contact = await claim(store, cid, clock.now)
    assert contact is not None
    (attempt,) = await store.attempts_in_flight()
    retry_at = clock.now + timedelta(minutes=20)  # 17:10: after the window closes
    # What the follower writes for a retried failure (services/following.py).
    await store.record_transition(
        attempt.channel_id, attempt_state="failed", attempt_values={"reason": "busy"},
        contact_status=ContactStatus.PENDING,
        contact_values={"failure_reason": "busy", "next_attempt_at": retry_at, "next_eligible_at": retry_at,
                        "blocked_reason": "retry_delay"},
        payload={}, only_from=["dialing"],
    )
    (waiting,) = await contacts_of(store, cid)
    assert (waiting.blocked_reason, waiting.next_eligible_at) == ("retry_delay", retry_at)
    assert await store.next_retry_time(cid) == retry_at
    clock.now = retry_at
    assert await claim(store, cid, clock.now) is None
    (held,) = await contacts_of(store, cid)
    assert (held.blocked_reason, held.next_eligible_at) == ("outside_calling_hours", NY_OPENS + timedelta(days=1))
    assert await store.next_retry_time(cid) == NY_OPENS + timedelta(days=1)


async def test_the_frequency_cap_counts_a_numbers_attempts_across_the_tenants_campaigns(
    store: Store, clock: Clock,
) -> None:
    acme = await tenant(store, "acme", max_attempts_per_number=2, frequency_window_hours=24)
    other = await tenant(store, "globex", max_attempts_per_number=2, frequency_window_hours=24)
    number = "+12125550100"
    first, second, third = [await campaign(store, acme, [(number, "UTC")], hours="") for _ in range(3)]
    elsewhere = await campaign(store, other, [(number, "UTC")], hours="")
    start = clock.now
    assert await claim(store, first, clock.now) is not None
    clock.now = start + timedelta(hours=1)
    assert await claim(store, second, clock.now) is not None
    clock.now = start + timedelta(hours=2)
    assert await claim(store, third, clock.now) is None
    (held,) = await contacts_of(store, third)
    # Two attempts in the last 24 h: one more may start when the oldest leaves the window.
    assert (held.blocked_reason, held.next_eligible_at) == ("frequency_cap", start + timedelta(hours=24))
    assert await claim(store, elsewhere, clock.now) is not None  # another tenant's attempts never count
    clock.now = start + timedelta(hours=24)
    assert await claim(store, third, clock.now) is not None


async def test_the_frequency_cap_and_the_hours_together(store: Store, clock: Clock) -> None:
    acme = await tenant(store, "acme", max_attempts_per_number=1, frequency_window_hours=24)
    number = "+12125550100"
    clock.now = NY_OPENS + timedelta(hours=7)  # 16:00 in New York
    first = await campaign(store, acme, [(number, "America/New_York")])
    second = await campaign(store, acme, [(number, "America/New_York")])
    assert await claim(store, first, clock.now) is not None
    assert await claim(store, second, clock.now) is None
    (held,) = await contacts_of(store, second)
    # The cap lifts at 16:00 tomorrow, inside the window: the cap is what it waits for.
    assert (held.blocked_reason, held.next_eligible_at) == ("frequency_cap", clock.now + timedelta(days=1))
