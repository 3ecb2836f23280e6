"""The tenant's daily caps (issue 11, item 5) under the real dispatcher and follower, the fake PBX, and
GET /api/v1/call-limits (item 6); on SQLite and PostgreSQL.

daily_calls_max stops a tenant's campaigns together at exactly the cap, leaves them running, leaves
another tenant alone, and lifts at the tenant's midnight (the ledger's wall clock moved a day on);
daily_minutes_max counts the answered talk of ended calls.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from dialerd.domain.rules import BlockReason
from dialerd.pbx import fake
from dialerd.pbx.fake import FakeOutcome, FakePbx
from dialerd.services.auth import create_key
from tests.conftest import Api, start_daemon, test_settings

pytestmark = pytest.mark.timeout(60)


class Wall:
    """The ledger's calendar clock: now, plus an offset a test moves on."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


async def eventually(what: str, check: Callable[[], Awaitable[bool]], within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within}s: {what}")
        await asyncio.sleep(0.02)


async def _daemon(db_url: str, pbx: FakePbx, tenants: dict[str, dict[str, Any]]) -> tuple[Any, dict[str, str],
                                                                                            dict[str, str]]:
    daemon = await start_daemon(test_settings(db_url, shutdown_grace_period=5.0), pbx)
    keys, ids = {}, {}
    for name, rules in tenants.items():
        cmax = int(rules.pop("concurrent_max", 10))
        ids[name], keys[name] = await create_key(daemon.store, name, concurrent_max=cmax, calls_per_minute=6000,
                                                 defaults=(10, 60), rules=rules)
    return daemon, keys, ids


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def _campaign(api: Api, tenant: str, numbers: list[str], max_concurrent_calls: int) -> str:
    status, body = await api.create("phone_number\n" + "\n".join(numbers) + "\n", tenant=tenant,
                                    max_concurrent_calls=max_concurrent_calls)
    assert status == 201, body
    status, started = await api.call("POST", f"/api/v1/campaigns/{body['id']}/start", tenant=tenant)
    assert status == 200, started
    return str(body["id"])


async def _status(api: Api, tenant: str, cid: str) -> str:
    status, body = await api.call("GET", f"/api/v1/campaigns/{cid}", tenant=tenant)
    assert status == 200, body
    return str(body["status"])


def _dialled(pbx: FakePbx) -> Counter[str]:
    return Counter(r.variables["DIALERD_CAMPAIGN"] for r in pbx.requests)


async def test_daily_calls_max_stops_two_campaigns_at_exactly_n_and_lifts_at_midnight(
    db_url: str, session: aiohttp.ClientSession
) -> None:
    pbx = FakePbx(time_scale=0.001)
    daemon, keys, ids = await _daemon(db_url, pbx, {
        "acme": {"daily_calls_max": 4, "timezone": "America/New_York"}, "globex": {}})
    wall = Wall()
    daemon.slots.wall = wall
    api = Api(f"http://127.0.0.1:{daemon.port}", session, keys, daemon)
    try:
        # 5 contacts each, 4 calls a day between them: neither can finish on the first day.
        a = await _campaign(api, "acme", [f"+1415555{n:04d}" for n in range(100, 105)], 3)
        b = await _campaign(api, "acme", [f"+1415555{n:04d}" for n in range(110, 115)], 3)
        g = await _campaign(api, "globex", [f"+1415555{n:04d}" for n in range(120, 125)], 3)

        async def acme_held() -> bool:
            holds = await daemon.dispatcher.tenant_holds(ids["acme"])
            return (any(h.reason is BlockReason.DAILY_CALLS_MAX for h in holds)
                    and daemon.slots.tenant_in_flight(ids["acme"]) == 0)

        await eventually("acme held by its daily cap, its calls over", acme_held)
        await eventually("globex done", lambda: _is(api, "globex", g, "completed"))
        dialled = _dialled(pbx)
        assert dialled[a] + dialled[b] == 4 and dialled[g] == 5, dialled
        assert {await _status(api, "acme", a), await _status(api, "acme", b)} == {"running"}
        (held,) = [h for h in await daemon.dispatcher.tenant_holds(ids["acme"])
                   if h.reason is BlockReason.DAILY_CALLS_MAX]
        assert held.detail == {"limit": 4, "used": 4, "timezone": "America/New_York"}
        assert held.until is not None and held.until > wall()

        status, limits = await api.call("GET", "/api/v1/call-limits", tenant="acme")
        assert status == 200, limits
        assert limits["limits"] == {"concurrent_max": 10, "calls_per_minute": 6000, "daily_calls_max": 4,
                                    "daily_minutes_max": 0, "max_attempts_per_number": 0,
                                    "frequency_window_hours": 0, "timezone": "America/New_York"}
        assert limits["usage"]["calls_today"] == 4 and limits["usage"]["in_flight"] == 0
        assert limits["usage"]["calls_last_minute"] == 4
        status, other = await api.call("GET", "/api/v1/call-limits", tenant="globex")
        assert status == 200 and other["limits"]["daily_calls_max"] == 0 and other["limits"]["timezone"] == "UTC"
        assert other["usage"]["calls_today"] == 5
        status, bad = await api.call("GET", "/api/v1/call-limits?x=1", tenant="acme")
        assert status == 400 and bad["error_id"] == "unknown_parameter"
        assert (await api.call("GET", "/api/v1/call-limits", tenant=None))[0] == 401

        # The tenant's midnight: the held runners wake by themselves and dial 4 more, then are held again.
        wall.offset = held.until - datetime.now(UTC)
        await eventually("acme dialled 4 more", lambda: _count(pbx, {a, b}, 8))
        await eventually("acme held again", acme_held)
        assert sum(_dialled(pbx)[c] for c in (a, b)) == 8
        (held,) = [h for h in await daemon.dispatcher.tenant_holds(ids["acme"])
                   if h.reason is BlockReason.DAILY_CALLS_MAX]
        # The next midnight: the last two, and both campaigns complete.
        wall.offset = held.until - datetime.now(UTC)
        for cid in (a, b):
            await eventually(f"{cid} completed", lambda c=cid: _is(api, "acme", c, "completed"))
        dialled = _dialled(pbx)
        assert dialled[a] == dialled[b] == 5, dialled
        assert daemon.slots.daily_holds(ids["acme"]) == ()
    finally:
        await daemon.stop()


async def _count(pbx: FakePbx, campaigns: set[str], n: int) -> bool:
    return sum(_dialled(pbx)[c] for c in campaigns) >= n


async def _is(api: Api, tenant: str, cid: str, status: str) -> bool:
    return await _status(api, tenant, cid) == status


async def test_daily_minutes_max_counts_answered_talk_of_ended_calls(
    db_url: str, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fake PBX stamps its events on a clock running 100 times fast, as its calls do (time_scale 0.01):
    # a call programmed to talk 35 s is up 0.35 s and is recorded with about 35 s of talk.
    base = datetime.now(UTC)
    monkeypatch.setattr(fake, "utcnow", lambda: base + (datetime.now(UTC) - base) * 100)
    pbx = FakePbx(time_scale=0.01)
    numbers = [f"+1415555{n:04d}" for n in range(130, 134)]
    for n in numbers:
        pbx.program(n, FakeOutcome(talk=35.0))
    daemon, keys, ids = await _daemon(db_url, pbx, {"acme": {"daily_minutes_max": 1, "concurrent_max": 1}})
    api = Api(f"http://127.0.0.1:{daemon.port}", session, keys, daemon)
    try:
        cid = await _campaign(api, "acme", numbers, 1)

        async def held() -> bool:
            holds = await daemon.dispatcher.tenant_holds(ids["acme"])
            return (any(h.reason is BlockReason.DAILY_MINUTES_MAX for h in holds)
                    and daemon.slots.tenant_in_flight(ids["acme"]) == 0)

        await eventually("acme held by daily_minutes_max", held)
        # One call of ~35 s leaves the minute unused; the second reaches it; no third starts.
        assert len(pbx.requests) == 2
        assert await _status(api, "acme", cid) == "running"
        status, limits = await api.call("GET", "/api/v1/call-limits", tenant="acme")
        assert status == 200, limits
        assert limits["limits"]["daily_minutes_max"] == 1 and limits["usage"]["calls_today"] == 2
        assert 1.0 <= limits["usage"]["minutes_today"] < 2.0, limits
        (hold,) = [h for h in await daemon.dispatcher.tenant_holds(ids["acme"])
                   if h.reason is BlockReason.DAILY_MINUTES_MAX]
        assert hold.detail["limit"] == 1 and hold.detail["used"] >= 1.0 and hold.detail["timezone"] == "UTC"
    finally:
        await daemon.stop()


async def test_call_limits_through_the_clients_and_dialerctl(offline_api: Api) -> None:
    import io

    from dialerd.client import AsyncDialerd
    from dialerd.ctl import main as dialerctl
    from dialerd.services.auth import set_limits

    await set_limits(offline_api.daemon.store, "acme", concurrent_max=None, calls_per_minute=None,
                     rules={"daily_calls_max": 250, "daily_minutes_max": 90, "max_attempts_per_number": 3,
                            "frequency_window_hours": 24, "timezone": "Europe/Paris"})
    key = offline_api.keys["acme"]
    async with AsyncDialerd(offline_api.base, key) as client:
        answer = await client.call_limits()
    assert answer == {
        "limits": {"concurrent_max": 10, "calls_per_minute": 600, "daily_calls_max": 250, "daily_minutes_max": 90,
                   "max_attempts_per_number": 3, "frequency_window_hours": 24, "timezone": "Europe/Paris"},
        "usage": {"in_flight": 0, "calls_last_minute": 0, "calls_today": 0, "minutes_today": 0.0},
    }
    out = io.StringIO()
    code = await asyncio.to_thread(dialerctl, ["--url", offline_api.base, "--api-key", key, "limits", "--json"], out)
    assert code == 0 and json_of(out) == answer
    out = io.StringIO()
    key = offline_api.keys["globex"]
    code = await asyncio.to_thread(dialerctl, ["--url", offline_api.base, "--api-key", key, "limits"], out)
    lines = dict(line.split(None, 1) for line in out.getvalue().splitlines())
    assert code == 0 and lines["daily_calls_max"] == "-" and lines["timezone"] == "UTC"
    assert lines["concurrent_max"] == "10" and lines["calls_today"] == "0"


def json_of(out: Any) -> Any:
    import json

    return json.loads(out.getvalue())


async def test_the_day_count_survives_a_restart(db_url: str, session: aiohttp.ClientSession) -> None:
    pbx = FakePbx(time_scale=0.001)
    daemon, keys, ids = await _daemon(db_url, pbx, {"acme": {"daily_calls_max": 2}})
    api = Api(f"http://127.0.0.1:{daemon.port}", session, keys, daemon)

    def held(d: Any) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            holds = await d.dispatcher.tenant_holds(ids["acme"])
            return any(h.reason is BlockReason.DAILY_CALLS_MAX for h in holds) and d.slots.tenant_in_flight(
                ids["acme"]) == 0
        return check

    try:
        cid = await _campaign(api, "acme", [f"+1415555{n:04d}" for n in range(140, 144)], 2)
        await eventually("held at 2", held(daemon))
        assert len(pbx.requests) == 2
    finally:
        await daemon.stop()
    # A new daemon on the same database resumes the running campaign: today's 2 come from the store.
    again = FakePbx(time_scale=0.001)
    daemon = await start_daemon(test_settings(db_url, shutdown_grace_period=5.0), again)
    api = Api(f"http://127.0.0.1:{daemon.port}", session, keys, daemon)
    try:
        await eventually("the campaign resumed", lambda: _resumed(daemon, cid))
        await eventually("held at 2 after the restart", held(daemon))
        (hold,) = [h for h in await daemon.dispatcher.tenant_holds(ids["acme"])
                   if h.reason is BlockReason.DAILY_CALLS_MAX]
        assert hold.detail["used"] == 2 and again.requests == []
        assert await _status(api, "acme", cid) == "running"
        status, limits = await api.call("GET", "/api/v1/call-limits", tenant="acme")
        assert status == 200 and limits["usage"]["calls_today"] == 2, limits
    finally:
        await daemon.stop()


async def _resumed(daemon: Any, cid: str) -> bool:
    return cid in daemon.dispatcher.running_campaigns()
