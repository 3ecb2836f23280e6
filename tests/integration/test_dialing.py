"""Real calls through the local Asterisk: outcomes, caps (seen from Asterisk's side), lifecycle, SSE."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.conftest import Api
from tests.live import AsteriskWatch, all_contacts, live_api, max_in_window, numbers, read_sse, wait_status

pytestmark = pytest.mark.pbx

# last two digits -> (status, reason) the carrier table of asterisk/README.md must produce
OUTCOMES = {
    5: ("completed", None),  # 00-29 answers, hangs up after 2 s
    33: ("completed", None),  # 30-39 answers, stays 20 s
    44: ("failed", "busy"),
    55: ("failed", "no_answer"),  # rings forever; ring timeout 5 s
    66: ("failed", "congestion"),
    77: ("failed", "invalid_number"),
    88: ("failed", "rejected"),
    99: ("completed", None),  # rings 3 s, answers, hangs up after 5 s
}


async def start(api: Api, cid: str, tenant: str = "acme") -> None:
    status, body = await api.call("POST", f"/api/v1/campaigns/{cid}/start", tenant=tenant)
    assert status == 200, body


async def create(api: Api, csv: str, tenant: str = "acme", **fields: object) -> str:
    status, body = await api.create(csv, tenant=tenant, **fields)
    assert status == 201, body
    return str(body["id"])


@pytest.mark.parametrize("driver", ["ari", "ami"])
async def test_every_outcome_row(tmp_path: Path, driver: str) -> None:
    async with live_api(tmp_path, driver) as api:
        cid = await create(api, numbers(list(OUTCOMES)), max_concurrent_calls=8, ring_timeout_seconds=5,
                           caller_id="+14155550000")
        sse = asyncio.create_task(read_sse(api, cid))
        await start(api, cid)
        final = await wait_status(api, cid, "completed", timeout=90)
        events = await asyncio.wait_for(sse, 30)
        contacts = await all_contacts(api, cid)
    # The contacts list says the same as the stream.
    listed = {int(c["phone_number"][-2:]): c for c in contacts}
    for suffix, (status, reason) in OUTCOMES.items():
        assert (listed[suffix]["status"], listed[suffix]["failure_reason"]) == (status, reason), listed[suffix]
        assert listed[suffix]["attempts"] == 1 and listed[suffix]["last_attempt_at"]
    assert final["contacts"]["completed"] == 3 and final["contacts"]["failed"] == 5
    by_suffix = {}
    for e in events:
        if e.event in ("completed", "failed") and e.data:
            by_suffix[int(e.data["phone_number"][-2:])] = (e.data["status"], e.data.get("reason"), e.data)
    for suffix, (status, reason) in OUTCOMES.items():
        got_status, got_reason, data = by_suffix[suffix]
        assert (got_status, got_reason) == (status, reason), (driver, suffix, data)
        if status == "completed":
            assert data["cause"] == 16 and data["talk_seconds"] > 0
        else:
            assert data["cause"] is not None
    assert by_suffix[44][2]["sip_code"] == 486
    assert by_suffix[66][2]["sip_code"] == 503
    assert by_suffix[77][2]["sip_code"] == 404
    assert by_suffix[88][2]["sip_code"] == 603
    assert 4.0 <= by_suffix[99][2]["talk_seconds"] <= 7.0
    assert 15.0 <= by_suffix[33][2]["talk_seconds"] <= 25.0


async def test_caps_hold_from_asterisks_side(tmp_path: Path) -> None:
    """Three tenants at once, each cap checked against Asterisk's own channel list:
    a campaign cap of 3 over 30 long calls, a tenant cap of 4 shared by two campaigns, and a
    30 calls/minute pace in every 60 s window."""
    tenants = {"solo": (10, 600), "duo": (4, 600), "paced": (10, 30)}
    async with live_api(tmp_path, tenants=tenants) as api:
        solo = await create(api, numbers([30 + i % 10 for i in range(30)]), tenant="solo", max_concurrent_calls=3)
        duo_a = await create(api, numbers([30 + i % 10 for i in range(6)]), tenant="duo", max_concurrent_calls=2)
        duo_b = await create(api, numbers([31 + i % 9 for i in range(6)]), tenant="duo", max_concurrent_calls=2)
        paced = await create(api, numbers([i % 30 for i in range(40)]), tenant="paced", max_concurrent_calls=10)
        watch = AsteriskWatch.from_env()
        watch.groups = [frozenset({duo_a, duo_b})]
        watch.start()
        try:
            for cid, tenant in ((solo, "solo"), (duo_a, "duo"), (duo_b, "duo"), (paced, "paced")):
                await start(api, cid, tenant)
            # duo's budget is reserved (2 + 2 = 4): a third campaign may not start.
            extra = await create(api, numbers([1]), tenant="duo", max_concurrent_calls=1)
            status, body = await api.call("POST", f"/api/v1/campaigns/{extra}/start", tenant="duo")
            assert status == 409 and body["error_id"] == "tenant_concurrency_exceeded"
            for cid, tenant in ((paced, "paced"), (duo_a, "duo"), (duo_b, "duo"), (solo, "solo")):
                await wait_status(api, cid, "completed", timeout=300, tenant=tenant)
        finally:
            await watch.stop()
    assert watch.polls > 1000
    assert watch.max_concurrent[solo] == 3, watch.max_concurrent
    assert len(watch.start_times(solo)) == 30
    assert watch.max_by_tenant_group[frozenset({duo_a, duo_b})] == 4
    times = watch.start_times(paced)
    assert len(times) == 40
    assert max_in_window(times) <= 30
    # Smooth pacing: starts about 2 s apart, never a burst, and the pace is actually used.
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert min(gaps) > 1.5, gaps
    assert max_in_window(times) >= 28
