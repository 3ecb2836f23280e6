"""GET /api/v1/campaigns/{id}/explain on the whole daemon: the real dispatcher, follower and ledger on the
fake PBX (its calls last as long as each test programs them), SQLite and PostgreSQL.

Each test puts a campaign in one situation and checks that explain names its reason, with the figures
(pending, eligible_now, dialling) and the time it lifts where one is known.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from sqlalchemy import update

from dialerd.domain.campaign import CampaignStatus
from dialerd.domain.explain import Tally
from dialerd.domain.rules import BlockReason
from dialerd.pbx.fake import BUSY, FakeOutcome, FakePbx
from dialerd.store.repo import T_CONTACT, Store
from dialerd.store.tables import Campaign
from tests.conftest import Api, make_key, start_daemon, test_settings

pytestmark = pytest.mark.timeout(60)

HOLD = FakeOutcome(talk=3600.0)  # answered, up until the test ends: it keeps its slot
QUICK = FakeOutcome(talk=0.05)
NUMBERS = [f"+1415555{n:04d}" for n in range(100, 110)]


class Rig(Api):
    pbx: FakePbx

    async def explain(self, cid: str, tenant: str = "acme") -> dict[str, Any]:
        status, body = await self.call("GET", f"/api/v1/campaigns/{cid}/explain", tenant=tenant)
        assert status == 200, body
        return body  # type: ignore[no-any-return]

    async def campaign(self, numbers: list[str], tenant: str = "acme", **fields: Any) -> str:
        csv = "phone_number\n" + "".join(n + "\n" for n in numbers)
        status, body = await self.create(csv, tenant=tenant, **fields)
        assert status == 201, body
        return str(body["id"])

    async def act(self, cid: str, action: str, tenant: str = "acme") -> dict[str, Any]:
        status, body = await self.call("POST", f"/api/v1/campaigns/{cid}/{action}", tenant=tenant)
        assert status == 200, body
        return body  # type: ignore[no-any-return]

    async def connected(self, cid: str, n: int, tenant: str = "acme", timeout: float = 15.0) -> None:
        """Wait until ``n`` of the campaign's calls are answered."""
        deadline = time.monotonic() + timeout
        while True:
            status, body = await self.call("GET", f"/api/v1/campaigns/{cid}", tenant=tenant)
            assert status == 200, body
            if body["contacts"]["connected"] == n:
                return
            assert time.monotonic() < deadline, f"never {n} connected: {body['contacts']}"
            await asyncio.sleep(0.05)

    async def explain_until(self, cid: str, ok: Callable[[dict[str, Any]], bool], tenant: str = "acme",
                            timeout: float = 15.0) -> dict[str, Any]:
        """Poll explain until ``ok`` holds for its answer (the live state moves as calls start and end)."""
        deadline = time.monotonic() + timeout
        while not ok(body := await self.explain(cid, tenant)):
            assert time.monotonic() < deadline, f"explain never got there; last answer: {body}"
            await asyncio.sleep(0.05)
        return body


def reasons(body: dict[str, Any]) -> list[str]:
    return [b["reason"] for b in body["blocked_by"]]


def blocker(body: dict[str, Any], reason: str) -> dict[str, Any]:
    return next(b for b in body["blocked_by"] if b["reason"] == reason)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture
async def rig(db_url: str) -> AsyncIterator[Rig]:
    pbx = FakePbx(time_scale=1.0)
    for number in NUMBERS:
        pbx.program(number, HOLD)
    daemon = await start_daemon(test_settings(db_url, shutdown_grace_period=0.0), pbx)
    keys = {"acme": await make_key(daemon, "acme"), "globex": await make_key(daemon, "globex"),
            "narrow": await make_key(daemon, "narrow", concurrent_max=1),
            "slow": await make_key(daemon, "slow", calls_per_minute=1)}
    async with aiohttp.ClientSession() as session:
        api = Rig(f"http://127.0.0.1:{daemon.port}", session, keys, daemon)
        api.pbx = pbx
        await asyncio.wait_for(pbx.wait_connected(), 5)
        try:
            yield api
        finally:
            await daemon.stop()


async def test_draft_then_completed_their_status_says_it(rig: Rig) -> None:
    cid = await rig.campaign(NUMBERS[:2])
    body = await rig.explain(cid)
    assert body == {"campaign_id": cid, "status": "draft", "dialling": False, "pending": 2, "eligible_now": 2,
                    "blocked_by": []}
    await rig.act(cid, "stop")  # draft -> completed, its pending contacts cancelled
    body = await rig.explain(cid)
    assert body["status"] == "completed" and body["dialling"] is False
    assert body["pending"] == 0 and body["eligible_now"] == 0
    assert body["blocked_by"] == [{"reason": "no_pending_contacts", "next_at": None, "detail": {}}]


async def test_scheduled_lifts_at_its_start(rig: Rig) -> None:
    start = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    cid = await rig.campaign(NUMBERS[:2], scheduled_at=start.isoformat().replace("+00:00", "Z"))
    body = await rig.explain(cid)
    assert body["status"] == "scheduled" and body["dialling"] is False
    assert reasons(body) == ["scheduled"]
    assert at(blocker(body, "scheduled")["next_at"]) == start
    assert "contacts" not in blocker(body, "scheduled")  # campaign-wide: no count


async def test_campaign_concurrency_dials_and_pause_stops(rig: Rig) -> None:
    cid = await rig.campaign(NUMBERS[:3], max_concurrent_calls=2)
    await rig.act(cid, "start")
    # (acme's 600 calls a minute space starts 0.1 s apart: tenant_rate holds for that long after each.)
    body = await rig.explain_until(cid, lambda b: reasons(b) == ["campaign_concurrency"])
    assert body["dialling"] is True  # at its own cap, its calls up: it is dialling
    assert blocker(body, "campaign_concurrency")["detail"] == {"max_concurrent_calls": 2, "in_flight": 2}
    assert body["pending"] == 1 and body["eligible_now"] == 1

    await rig.act(cid, "pause")
    body = await rig.explain(cid)
    assert body["status"] == "paused" and body["dialling"] is False
    assert reasons(body) == ["paused"]  # its calls still up, but no throttle speaks for a paused campaign


async def test_last_contact_on_the_phone_is_no_pending_contacts(rig: Rig) -> None:
    cid = await rig.campaign(NUMBERS[:1], max_concurrent_calls=1)
    await rig.act(cid, "start")
    body = await rig.explain_until(cid, lambda b: reasons(b) == ["no_pending_contacts", "campaign_concurrency"])
    assert body["status"] == "running" and body["dialling"] is True and body["pending"] == 0


async def test_tenant_concurrency(rig: Rig) -> None:
    # narrow: concurrent_max 1. A's call holds the tenant's one slot; paused, A reserves none of the cap,
    # so B may start, and waits for the slot.
    a = await rig.campaign(NUMBERS[:2], tenant="narrow", max_concurrent_calls=1)
    await rig.act(a, "start", tenant="narrow")
    await rig.connected(a, 1, tenant="narrow")  # answered: a pause now leaves the call up
    await rig.act(a, "pause", tenant="narrow")
    b = await rig.campaign(NUMBERS[2:4], tenant="narrow", max_concurrent_calls=1)
    await rig.act(b, "start", tenant="narrow")
    body = await rig.explain_until(b, lambda x: reasons(x) == ["tenant_concurrency"], tenant="narrow")
    assert body["dialling"] is False and body["pending"] == 2 and body["eligible_now"] == 2
    assert blocker(body, "tenant_concurrency")["detail"] == {"concurrent_max": 1, "in_flight": 1}


async def test_tenant_rate_says_when_the_next_call_may_start(rig: Rig) -> None:
    # slow: 1 call per minute. The first call went; the second waits for the pacer.
    rig.pbx.program(NUMBERS[0], QUICK)
    cid = await rig.campaign(NUMBERS[:2], tenant="slow")
    before = datetime.now(UTC)
    await rig.act(cid, "start", tenant="slow")
    body = await rig.explain_until(cid, lambda b: "tenant_rate" in reasons(b) and b["pending"] == 1, tenant="slow")
    assert body["eligible_now"] == 1
    rate = blocker(body, "tenant_rate")
    assert rate["detail"] == {"calls_per_minute": 1}
    assert before < at(rate["next_at"]) <= before + timedelta(seconds=61)


async def test_retry_delay_lifts_at_the_earliest_retry(rig: Rig) -> None:
    rig.pbx.program(NUMBERS[0], BUSY)
    cid = await rig.campaign(NUMBERS[:1], retries_per_contact=1, retry_delay_seconds=3600)
    await rig.act(cid, "start")
    body = await rig.explain_until(cid, lambda b: reasons(b) == ["retry_delay"])
    status, page = await rig.call("GET", f"/api/v1/campaigns/{cid}/contacts")
    assert status == 200
    contact = page["contacts"][0]
    assert contact["status"] == "pending" and contact["attempts"] == 1
    assert body["status"] == "running" and body["dialling"] is False
    assert body["pending"] == 1 and body["eligible_now"] == 0
    assert body["blocked_by"] == [{"reason": "retry_delay", "contacts": 1, "next_at": contact["next_attempt_at"],
                                   "detail": {}}]


async def test_pbx_disconnected(rig: Rig) -> None:
    rig.pbx.set_connected(False)
    cid = await rig.campaign(NUMBERS[:2])
    await rig.act(cid, "start")
    body = await rig.explain(cid)
    assert body["dialling"] is False and body["eligible_now"] == 2
    assert reasons(body) == ["pbx_disconnected"]
    assert blocker(body, "pbx_disconnected")["detail"] == {"held": "pbx_down",
                                                           "last_error": "the fake PBX is disconnected"}
    rig.pbx.set_connected(True)
    # Back: its contacts are dialled (dialling once a call is up; tenant_rate may hold for 0.1 s first).
    await rig.explain_until(cid, lambda b: "pbx_disconnected" not in reasons(b) and b["dialling"])


async def test_unknown_or_another_tenants_campaign_is_404(rig: Rig) -> None:
    cid = await rig.campaign(NUMBERS[:1])
    for path, tenant in ((f"/api/v1/campaigns/{cid}/explain", "globex"),
                         ("/api/v1/campaigns/cmp_00000000000000000000/explain", "acme")):
        status, body = await rig.call("GET", path, tenant=tenant)
        assert status == 404 and body["error_id"] == "campaign_not_found"



async def test_pending_holds_is_one_grouped_read(store: Store) -> None:
    """The store's count (both backends): contacts being dialled are not pending, a retry still ahead is
    retry_delay with the earliest retry time, a retry already due is eligible."""
    now = datetime.now(UTC).replace(microsecond=0)
    cid = "cmp_" + secrets.token_hex(10)
    tenant, _ = await store.ensure_tenant("t_" + secrets.token_hex(6), "acme", 10, 60)
    await store.insert_campaign(Campaign(
        id=cid, tenant_id=tenant.id, name=cid, status=CampaignStatus.IMPORTING.value, caller_id="",
        destination="dialerd-demo,s,1", default_region="US", max_concurrent_calls=1, retries_per_contact=0,
        retry_delay_seconds=60, ring_timeout_seconds=30, import_report={}, created_by="test", scheduled_at=None,
        created_at=now, updated_at=now,
    ))
    await store.insert_contacts(cid, [{"line": i + 2, "phone_e164": n, "raw_number": n, "fields": {}}
                                      for i, n in enumerate(NUMBERS[:5])])
    await store.finish_import(cid, CampaignStatus.DRAFT, {"contacts": 5})
    assert await store.pending_holds(cid, now) == (5, {})
    contacts = sorted(await store.next_due_contacts(cid, now, 5), key=lambda c: c.id or 0)
    retry_at = {contacts[0].id: now + timedelta(hours=2), contacts[1].id: now + timedelta(hours=1),
                contacts[2].id: now - timedelta(minutes=1)}
    async with store.write() as conn:
        for contact_id, when in retry_at.items():
            await conn.execute(update(T_CONTACT).where(T_CONTACT.c.id == contact_id).values(next_attempt_at=when))
    assert await store.begin_attempt(contacts[3], "dlr-test-1") is not None  # being dialled: not pending
    pending, holds = await store.pending_holds(cid, now)
    assert pending == 4
    assert holds == {BlockReason.RETRY_DELAY: Tally(2, now + timedelta(hours=1))}
    later = now + timedelta(hours=3)  # every retry due: nothing held
    assert await store.pending_holds(cid, later) == (4, {})


# ---- the rules of issue 11: calling hours, the frequency cap, the daily caps, and the create's preflight ----

def _closed_window(now: datetime) -> tuple[str, datetime]:
    """Daily hours in UTC that are closed at ``now`` (and stay closed for an hour at least), and their next
    opening."""
    start_hour = 13 if now.hour < 11 else 1
    opening = now.replace(hour=start_hour, minute=0, second=0, microsecond=0)
    if opening <= now:
        opening += timedelta(days=1)
    return f"daily {start_hour:02d}:00-{start_hour + 1:02d}:00", opening


async def test_outside_calling_hours_lifts_at_the_opening_and_the_preflight_counts_them(rig: Rig) -> None:
    now = datetime.now(UTC)
    hours, opening = _closed_window(now)
    # Three contacts whose zone (the CSV's timezone column) is UTC, where the window is closed now.
    csv = "phone_number,timezone\n" + "".join(f"{n},UTC\n" for n in NUMBERS[:3])
    status, created = await rig.create(csv, calling_hours=hours)
    assert status == 201, created
    assert created["import"]["preflight"] == {"suppressed": 0, "outside_calling_hours": 3, "no_timezone": 0}
    cid = created["id"]
    await rig.act(cid, "start")
    body = await rig.explain_until(cid, lambda b: b["eligible_now"] == 0)
    assert body["status"] == "running" and body["dialling"] is False and body["pending"] == 3
    assert body["blocked_by"] == [{"reason": "outside_calling_hours", "contacts": 3,
                                   "next_at": opening.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                                   "detail": {}}]
    status, page = await rig.call("GET", f"/api/v1/campaigns/{cid}/contacts")
    assert status == 200
    assert {(c["attempts"], c["blocked_reason"]) for c in page["contacts"]} == {(0, "outside_calling_hours")}


async def test_frequency_cap_across_two_campaigns_of_a_tenant(rig: Rig) -> None:
    key = await make_key(rig.daemon, "capped")
    rig.keys["capped"] = key
    await rig.daemon.store.set_tenant_limits("capped", None, None,
                                             {"max_attempts_per_number": 1, "frequency_window_hours": 24})
    number = "+14155550190"
    rig.pbx.program(number, QUICK)
    first = await rig.campaign([number], tenant="capped")
    await rig.act(first, "start", tenant="capped")
    await rig.explain_until(first, lambda b: b["status"] == "completed", tenant="capped")
    second = await rig.campaign([number], tenant="capped")
    await rig.act(second, "start", tenant="capped")
    body = await rig.explain_until(second, lambda b: b["eligible_now"] == 0, tenant="capped")
    (held,) = body["blocked_by"]
    assert held["reason"] == "frequency_cap" and held["contacts"] == 1
    until = at(held["next_at"])
    assert datetime.now(UTC) + timedelta(hours=23) < until <= datetime.now(UTC) + timedelta(hours=24)
    # Another tenant's campaign to the same number is not held.
    other = await rig.campaign([number], tenant="globex")
    await rig.act(other, "start", tenant="globex")
    await rig.explain_until(other, lambda b: b["status"] == "completed", tenant="globex")


async def test_daily_calls_max_holds_the_running_campaign_until_midnight(rig: Rig) -> None:
    key = await make_key(rig.daemon, "daily")
    rig.keys["daily"] = key
    await rig.daemon.store.set_tenant_limits("daily", None, None, {"daily_calls_max": 1})
    numbers = ["+14155550191", "+14155550192"]
    for n in numbers:
        rig.pbx.program(n, QUICK)
    cid = await rig.campaign(numbers, tenant="daily")
    await rig.act(cid, "start", tenant="daily")
    body = await rig.explain_until(cid, lambda b: "daily_calls_max" in reasons(b), tenant="daily")
    assert body["status"] == "running" and body["dialling"] is False
    held = blocker(body, "daily_calls_max")
    midnight = (datetime.now(UTC) + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    assert at(held["next_at"]) == midnight
    assert held["detail"] == {"limit": 1, "used": 1, "timezone": "UTC"}
