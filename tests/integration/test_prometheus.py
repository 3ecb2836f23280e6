"""GET /metrics over real HTTP, parsed with prometheus_client's own parser."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from dialerd.pbx.fake import FakeOutcome, FakePbx
from dialerd.services.auth import create_key
from tests.conftest import Api, OfflinePbx, start_daemon, test_settings

CSV = "phone_number\n+14155550100\n+14155550101\n"
LATENCY = "dialerd_http_request_duration_seconds"


async def scrape(api: Api) -> dict[str, list[Sample]]:
    async with api.session.get(api.base + "/metrics") as resp:  # no Authorization: /metrics is public
        assert resp.status == 200
        assert resp.content_type == "text/plain"
        text = await resp.text()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def value(samples: list[Sample], name: str, **labels: str) -> float | None:
    for s in samples:
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return None


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@pytest.fixture
async def sse_api(db_url: str) -> AsyncIterator[Api]:
    """Like offline_api, with a heartbeat short enough that a closed stream is noticed at once."""
    daemon = await start_daemon(
        test_settings(db_url, shutdown_grace_period=0.0, sse_heartbeat_interval=0.05), OfflinePbx()
    )
    async with aiohttp.ClientSession() as session:
        try:
            _tid, key = await create_key(daemon.store, "acme", concurrent_max=10, calls_per_minute=600,
                                         defaults=(10, 60))
            yield Api(f"http://127.0.0.1:{daemon.port}", session, {"acme": key}, daemon)
        finally:
            await daemon.stop()


async def test_latency_histogram_by_route_template_and_status(offline_api: Api) -> None:
    api = offline_api
    assert (await api.call("GET", "/api/v1/campaigns"))[0] == 200
    assert (await api.call("GET", "/api/v1/campaigns"))[0] == 200
    assert (await api.call("GET", "/api/v1/campaigns", tenant=None))[0] == 401
    status, created = await api.create(CSV)
    assert status == 201
    cid = created["id"]
    assert (await api.call("GET", f"/api/v1/campaigns/{cid}"))[0] == 200
    assert (await api.call("GET", "/api/v1/campaigns/cmp_nosuchcampaign"))[0] == 404
    assert (await api.call("GET", f"/api/v1/campaigns/{cid}/contacts", params={"limit": "0"}))[0] == 400
    assert (await api.call("POST", f"/api/v1/campaigns/{cid}/pause"))[0] == 409
    assert (await api.call("GET", "/api/v1/no/such/route"))[0] == 404
    assert (await api.call("PUT", "/api/v1/campaigns"))[0] == 405

    samples = (await scrape(api))[LATENCY]
    count = f"{LATENCY}_count"
    expected = [
        ("GET", "/api/v1/campaigns", "200", 2),
        ("GET", "/api/v1/campaigns", "401", 1),
        ("POST", "/api/v1/campaigns", "201", 1),
        ("GET", "/api/v1/campaigns/{id}", "200", 1),
        ("GET", "/api/v1/campaigns/{id}", "404", 1),
        ("GET", "/api/v1/campaigns/{id}/contacts", "400", 1),
        ("POST", "/api/v1/campaigns/{id}/pause", "409", 1),
        ("GET", "unmatched", "404", 1),
        ("PUT", "unmatched", "405", 1),
    ]
    for method, route, status_label, n in expected:
        assert value(samples, count, method=method, route=route, status=status_label) == n, (method, route)
        total = value(samples, f"{LATENCY}_sum", method=method, route=route, status=status_label)
        assert total is not None and 0 < total < 30
        assert value(samples, f"{LATENCY}_bucket", method=method, route=route, status=status_label, le="+Inf") == n
    # The raw URL never becomes a label (one series per route template, whatever the ids).
    routes = {s.labels["route"] for s in samples if "route" in s.labels}
    assert not any(cid in r or "nosuch" in r for r in routes), routes
    assert (await api.call("GET", "/api/v1/campaigns"))[0] == 200
    samples = (await scrape(api))[LATENCY]
    assert value(samples, count, method="GET", route="/api/v1/campaigns", status="200") == 3


async def test_offline_pbx_state_and_zero_call_counters(offline_api: Api) -> None:
    status, created = await offline_api.create(CSV)
    assert status == 201
    assert (await offline_api.call("POST", f"/api/v1/campaigns/{created['id']}/start"))[0] == 200
    families = await scrape(offline_api)
    assert families["dialerd_pbx_connected"][0].value == 0.0
    assert families["dialerd_sse_subscribers"][0].value == 0.0
    # Counters are exposed from the start: one series per outcome reason, all 0; nothing originated.
    outcomes = {s.labels["reason"]: s.value for s in families["dialerd_call_outcomes"]
                if s.name == "dialerd_call_outcomes_total"}
    assert {"completed", "busy", "no_answer", "congestion", "invalid_number", "rejected", "unreachable",
            "originate_error"} <= set(outcomes)
    assert set(outcomes.values()) == {0.0}
    assert sum(s.value for s in families["dialerd_originations"]) == 0
    # The PBX never came up, so the dispatcher has dialled for no tenant: no in-flight series yet.
    assert families["dialerd_calls_in_flight"] == []
    assert families["dialerd_tenant_cap_saturation"] == []


async def test_sse_subscribers_gauge_follows_open_streams(sse_api: Api) -> None:
    api = sse_api
    status, created = await api.create(CSV)
    assert status == 201

    async def subscribers() -> float:
        return (await scrape(api))["dialerd_sse_subscribers"][0].value

    assert await subscribers() == 0
    url = f"{api.base}/api/v1/campaigns/{created['id']}/events"
    async with api.session.get(url, headers=api.auth()) as first:
        assert first.status == 200 and first.content_type == "text/event-stream"
        assert (await first.content.readuntil(b"\n\n")).startswith(b"retry:")
        assert await subscribers() == 1
        async with api.session.get(url, headers=api.auth()) as second:
            await second.content.readuntil(b"\n\n")
            assert await subscribers() == 2
        # The server notices the closed stream at its next write (a heartbeat) and unsubscribes.

        async def one_left() -> bool:
            return await subscribers() == 1

        await eventually(one_left)

    async def none_left() -> bool:
        return await subscribers() == 0

    await eventually(none_left)


@pytest.fixture
async def fake_pbx_api(db_url: str) -> AsyncIterator[tuple[Api, FakePbx, str]]:
    pbx = FakePbx(time_scale=0.001)
    daemon = await start_daemon(test_settings(db_url, shutdown_grace_period=5.0), pbx)
    async with aiohttp.ClientSession() as session:
        try:
            tenant_id, key = await create_key(daemon.store, "acme", concurrent_max=10, calls_per_minute=6000,
                                              defaults=(10, 60))
            yield Api(f"http://127.0.0.1:{daemon.port}", session, {"acme": key}, daemon), pbx, tenant_id
        finally:
            await daemon.stop()


async def test_a_running_campaign_moves_the_call_metrics(fake_pbx_api: tuple[Api, FakePbx, str]) -> None:
    api, pbx, tenant = fake_pbx_api
    # The fake carrier decides by the last two digits: 00-29 answer, 40 busy, 60 congestion,
    # 70 not found, 80 decline. One answered call talks long enough (1 s) to be seen in flight.
    numbers = {"+14155550100": "completed", "+14155550101": "completed", "+14155550140": "busy",
               "+14155550160": "congestion", "+14155550170": "invalid_number", "+14155550180": "rejected"}
    pbx.program("+14155550101", FakeOutcome(talk=1000.0))
    status, created = await api.create("phone_number\n" + "\n".join(numbers) + "\n", max_concurrent_calls=5)
    assert status == 201, created
    cid = created["id"]
    assert (await api.call("POST", f"/api/v1/campaigns/{cid}/start"))[0] == 200

    async def only_long_call_up() -> bool:
        # Every number dialled and only the long call still up (before, a short call could be in flight
        # too, or the runner could hold a slot it was about to dial with: saturation 0.2).
        # The runner briefly holds a slot while it looks for another due contact, so the figures are
        # read from one scrape.
        families = await scrape(api)
        up = (value(families["dialerd_originations"], "dialerd_originations_total", tenant=tenant) == len(numbers)
              and value(families["dialerd_calls_in_flight"], "dialerd_calls_in_flight", tenant=tenant) == 1)
        if up:
            assert families["dialerd_pbx_connected"][0].value == 1.0
            saturation = value(families["dialerd_tenant_cap_saturation"], "dialerd_tenant_cap_saturation",
                               tenant=tenant)
            assert saturation == 0.1  # one call of the tenant's concurrent_max 10
        return up

    await eventually(only_long_call_up)

    async def finished() -> bool:
        status, body = await api.call("GET", f"/api/v1/campaigns/{cid}")
        return bool(status == 200 and body["status"] == "completed")

    await eventually(finished)
    families = await scrape(api)
    assert value(families["dialerd_originations"], "dialerd_originations_total", tenant=tenant) == len(numbers)
    outcomes: dict[str, Any] = {s.labels["reason"]: s.value for s in families["dialerd_call_outcomes"]
                                if s.name == "dialerd_call_outcomes_total"}
    expected = {reason: float(list(numbers.values()).count(reason)) for reason in outcomes}
    assert outcomes == expected
    assert value(families["dialerd_calls_in_flight"], "dialerd_calls_in_flight", tenant=tenant) == 0
    assert value(families["dialerd_tenant_cap_saturation"], "dialerd_tenant_cap_saturation", tenant=tenant) == 0
    # The requests the PBX was sent, by kind: one originate per call here.
    assert value(families["dialerd_pbx_requests"], "dialerd_pbx_requests_total", request="originate") == len(numbers)
