"""Real calls through the local Asterisk: outcomes, caps (seen from Asterisk's side), lifecycle, SSE."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
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
    assert watch.max_concurrent[solo] == 3, (watch.max_concurrent, watch.max_instant)
    assert len(watch.start_times(solo)) == 30
    assert watch.max_by_tenant_group[frozenset({duo_a, duo_b})] == 4
    times = watch.start_times(paced)
    assert len(times) == 40
    assert max_in_window(times) <= 30
    # Smooth pacing: starts about 2 s apart, never a burst, and the pace is actually used.
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert min(gaps) > 1.5, gaps
    assert max_in_window(times) >= 28


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


async def _wait_asterisk(watch: AsteriskWatch, cid: str, live: int, timeout: float = 30.0) -> None:
    """Wait until Asterisk shows exactly ``live`` channels of the campaign."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if watch.live.get(cid, 0) == live:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"Asterisk never showed {live} live channels for {cid}: {watch.live}")


async def test_pause_resume_stop_mid_run(tmp_path: Path) -> None:
    async with live_api(tmp_path) as api:
        cid = await create(api, numbers([30 + i % 10 for i in range(12)]), max_concurrent_calls=3)
        watch = AsteriskWatch.from_env()
        watch.start()
        try:
            await start(api, cid)
            await _wait_asterisk(watch, cid, 3)

            status, body = await api.call("POST", f"/api/v1/campaigns/{cid}/pause")
            assert status == 200 and body["status"] == "paused"
            paused_at = time.time()
            assert body["contacts"]["pending"] == 9
            # In-flight calls finish naturally (20 s), nothing new is dialled meanwhile.
            await _wait_asterisk(watch, cid, 0, timeout=40)
            await asyncio.sleep(2)
            starts = watch.start_times(cid)
            assert len(starts) == 3 and max(starts) < paused_at
            _, body = await api.call("GET", f"/api/v1/campaigns/{cid}")
            assert body["contacts"]["completed"] == 3 and body["contacts"]["pending"] == 9
            assert body["status"] == "paused"

            status, body = await api.call("POST", f"/api/v1/campaigns/{cid}/resume")
            assert status == 200 and body["status"] == "running"
            await _wait_asterisk(watch, cid, 3)

            status, body = await api.call("POST", f"/api/v1/campaigns/{cid}/stop")
            stopped_at = time.time()
            assert status == 200 and body["status"] == "completed"
            assert body["contacts"]["cancelled"] == 6 and body["contacts"]["pending"] == 0
            # The three calls in flight are not torn down: they end on their own and complete.
            await _wait_asterisk(watch, cid, 0, timeout=40)
            await asyncio.sleep(1)
        finally:
            await watch.stop()
        starts = watch.start_times(cid)
        assert len(starts) == 6 and max(starts) < stopped_at
        contacts = await all_contacts(api, cid)
        by_status: dict[str, int] = {}
        for c in contacts:
            by_status[c["status"]] = by_status.get(c["status"], 0) + 1
        assert by_status == {"completed": 6, "cancelled": 6}
        assert all(c["attempts"] == (1 if c["status"] == "completed" else 0) for c in contacts)


async def test_retries_after_delay_only_for_retryable_reasons(tmp_path: Path) -> None:
    async with live_api(tmp_path) as api:
        # busy and congestion are retried (twice), not found and declined never.
        cid = await create(api, numbers([44, 66, 77, 88]), max_concurrent_calls=4, retries_per_contact=2,
                           retry_delay_seconds=60)
        sse = asyncio.create_task(read_sse(api, cid, max_seconds=400))
        await start(api, cid)
        await wait_status(api, cid, "completed", timeout=240)
        events = await asyncio.wait_for(sse, 30)
        contacts = {int(c["phone_number"][-2:]): c for c in await all_contacts(api, cid)}
    attempts = {k: c["attempts"] for k, c in contacts.items()}
    assert attempts == {44: 3, 66: 3, 77: 1, 88: 1}
    assert {k: (c["status"], c["failure_reason"]) for k, c in contacts.items()} == {
        44: ("failed", "busy"), 66: ("failed", "congestion"), 77: ("failed", "invalid_number"),
        88: ("failed", "rejected"),
    }
    for suffix in (44, 66):
        trail = [e.data for e in events if e.data and e.data.get("phone_number", "").endswith(f"01{suffix}")]
        assert [d["status"] for d in trail] == ["originated", "pending", "originated", "pending", "originated",
                                                "failed"]
        originated = [_epoch(d["at"]) for d in trail if d["status"] == "originated"]
        ended = [_epoch(d["at"]) for d in trail if d["status"] in ("pending", "failed")]
        # Each retry starts no sooner than retry_delay_seconds after the previous attempt ended.
        assert originated[1] - ended[0] >= 60 and originated[2] - ended[1] >= 60
        assert originated[1] - ended[0] < 70 and originated[2] - ended[1] < 70
        assert [d["attempt"] for d in trail if d["status"] == "originated"] == [1, 2, 3]


async def test_sse_sees_everything_in_order_and_resumes(tmp_path: Path) -> None:
    async with live_api(tmp_path, sse_heartbeat_interval=1.0, sse_snapshot_interval=0.5) as api:
        cid = await create(api, numbers([1, 2, 44, 66, 77, 88, 90, 3, 4, 5]), max_concurrent_calls=3)
        full = asyncio.create_task(read_sse(api, cid))
        await asyncio.sleep(0.3)
        await start(api, cid)
        # A client that reads five events, goes away, and comes back with Last-Event-ID.
        first = await read_sse(api, cid, stop_after=5)
        resume_from = [e for e in first if e.id][-1].id
        await asyncio.sleep(2)
        second = await read_sse(api, cid, last_event_id=resume_from)
        everything = await asyncio.wait_for(full, 120)
        contacts = await all_contacts(api, cid)

    ids = [int(e.id) for e in everything if e.id and e.event not in (None, "end")]
    assert ids == sorted(ids) and len(ids) == len(set(ids))
    named = [e for e in everything if e.event not in (None, "end") and e.data]
    # Every transition of every contact, in a valid order, ending where the database says.
    per_contact: dict[int, list[str]] = {}
    for e in named:
        if e.event != "campaign":
            per_contact.setdefault(e.data["contact_id"], []).append(e.event)  # type: ignore[index]
    assert len(per_contact) == 10
    for c in contacts:
        trail = per_contact[c["id"]]
        assert trail[-1] == c["status"]
        assert trail in (["originated", "connected", "completed"], ["originated", "failed"]), trail
    assert [e.data["status"] for e in named if e.event == "campaign"] == ["running", "completed"]  # type: ignore[index]
    snapshots = [e.data for e in everything if e.event is None and e.data]
    assert len(snapshots) >= 3 and all(s["type"] == "snapshot" for s in snapshots)
    assert snapshots[-1]["contacts"]["total"] == 10
    assert any(e.comment == "heartbeat" for e in everything)
    assert everything[-1].event == "end" and everything[-1].data["status"] == "completed"  # type: ignore[index]
    # The reconnecting client missed nothing: its two halves are exactly the full stream.
    def transitions(evts: list[Any]) -> list[tuple[str, str]]:
        return [(e.id, e.event) for e in evts if e.id and e.event not in (None, "end")]

    joined = transitions(first) + transitions(second)
    assert joined == transitions(everything)


async def test_scheduled_campaign_starts_at_its_time(tmp_path: Path) -> None:
    async with live_api(tmp_path) as api:
        at = datetime.now(UTC) + timedelta(seconds=4)
        cid = await create(api, numbers([1, 2]), scheduled_at=at.isoformat().replace("+00:00", "Z"))
        _, body = await api.call("GET", f"/api/v1/campaigns/{cid}")
        assert body["status"] == "scheduled" and body["contacts"]["pending"] == 2
        final = await wait_status(api, cid, "completed", timeout=60)
    assert _epoch(final["started_at"]) >= at.timestamp() - 0.01
    assert _epoch(final["started_at"]) < at.timestamp() + 3
    assert final["contacts"]["completed"] == 2


async def test_call_carries_caller_id_correlation_and_custom_fields(tmp_path: Path) -> None:
    async with live_api(tmp_path) as api:
        csv = "phone_number,first_name,account\n+12125550133,Zoë,ACME-42\n"
        cid = await create(api, csv, caller_id="+14155550000", max_concurrent_calls=1)
        watch = AsteriskWatch.from_env()
        watch.start()
        try:
            await start(api, cid)
            await _wait_asterisk(watch, cid, 1)
            channel_id = next(i for i, info in watch.seen.items() if info["campaign"] == cid)
            async with aiohttp.ClientSession(headers=watch.auth) as session:
                async with session.get(f"{watch.url}/ari/channels/{channel_id}") as resp:
                    channel = await resp.json()
                values = {}
                for name in ("DIALERD_FIELD_FIRST_NAME", "DIALERD_FIELD_ACCOUNT", "DIALERD_CONTACT",
                             "DIALERD_ATTEMPT", "DIALERD_NUMBER"):
                    async with session.get(f"{watch.url}/ari/channels/{channel_id}/variable",
                                           params={"variable": name}) as resp:
                        values[name] = (await resp.json())["value"]
            contact = (await all_contacts(api, cid))[0]
            status, _ = await api.call("POST", f"/api/v1/campaigns/{cid}/stop")
            assert status == 200
        finally:
            await watch.stop()
    assert channel["caller"]["number"] == "+14155550000"
    assert channel["channelvars"]["DIALERD_CAMPAIGN"] == cid
    assert channel["channelvars"]["DIALERD_ID"] == channel_id
    assert values == {
        "DIALERD_FIELD_FIRST_NAME": "Zoë", "DIALERD_FIELD_ACCOUNT": "ACME-42", "DIALERD_CONTACT": str(contact["id"]),
        "DIALERD_ATTEMPT": "1", "DIALERD_NUMBER": "+12125550133",
    }


def _named(events: list[Any]) -> list[Any]:
    """The stored events of a stream (transitions, campaign changes, the end), without snapshots."""
    return [e for e in events if e.event is not None]


def _after_stop(events: list[Any]) -> list[tuple[str, str]]:
    """(event, number) of what a stream carried after the stop's terminal status event."""
    named = _named(events)
    stop = next(i for i, e in enumerate(named) if e.event == "campaign" and e.data["status"] == "completed")
    return [(e.event, (e.data.get("phone_number") or "")[-2:]) for e in named[stop + 1:]]


async def test_stop_with_calls_up_streams_their_outcomes_then_one_end(tmp_path: Path) -> None:
    """Stopping leaves the three calls up to end on their own; every stream shows their outcomes, and its
    one end after them: a live stream opened before the stop, a replay from 0 once everything ended, and
    a replay from the middle."""
    async with live_api(tmp_path) as api:
        # 30-39 answer and stay up ~20 s: three are up when the stop comes, three never start.
        cid = await create(api, numbers([30, 31, 32, 33, 34, 35]), max_concurrent_calls=3)
        watch = AsteriskWatch.from_env()
        watch.start()
        try:
            await start(api, cid)
            await _wait_asterisk(watch, cid, 3)
            await wait_status_counts(api, cid, connected=3)
            live = asyncio.create_task(read_sse(api, cid, last_event_id=None, max_seconds=90))
            while api.daemon.hub.subscriber_count(cid) == 0:  # noqa: ASYNC110 - no event for a new subscriber
                await asyncio.sleep(0.01)
            status, body = await api.call("POST", f"/api/v1/campaigns/{cid}/stop")
            stopped_at = time.time()
            assert status == 200 and body["status"] == "completed", body
            assert body["calls_in_flight"] == 3 and body["contacts"]["cancelled"] == 3
            # Stopped but not over: the calls are still up in Asterisk, GET counts them, the stream is open.
            assert watch.live.get(cid) == 3
            _, body = await api.call("GET", f"/api/v1/campaigns/{cid}")
            assert (body["status"], body["calls_in_flight"], body["contacts"]["connected"]) == ("completed", 3, 3)
            await asyncio.sleep(1)
            assert not live.done()
            await _wait_asterisk(watch, cid, 0, timeout=40)
            streamed = await asyncio.wait_for(live, 30)
        finally:
            await watch.stop()
        _, body = await api.call("GET", f"/api/v1/campaigns/{cid}")
        assert body["calls_in_flight"] == 0 and body["contacts"]["completed"] == 3
        replayed = await read_sse(api, cid, last_event_id="0", max_seconds=30)
        middle = next(e for e in _named(replayed) if e.event == "connected").id
        from_middle = await read_sse(api, cid, last_event_id=middle, max_seconds=30)

    assert len(watch.start_times(cid)) == 3 and max(watch.start_times(cid)) < stopped_at
    up = {"30", "31", "32"}
    for events in (streamed, replayed, from_middle):
        kinds = [e.event for e in _named(events)]
        assert kinds.count("end") == 1 and kinds[-1] == "end", kinds
        assert _named(events)[-1].data["status"] == "completed"
    # After the stop: the three calls' outcomes (talked ~20 s), then the end. The live stream opened
    # before the stop and the full replay carry the same events.
    for events in (streamed, replayed):
        after = _after_stop(events)
        assert sorted(after[:-1]) == sorted(("completed", n) for n in up) and after[-1] == ("end", ""), after
    assert [(e.id, e.event) for e in _named(streamed)] == [(e.id, e.event) for e in _named(replayed)
                                                           if int(e.id) >= int(_named(streamed)[0].id)]
    talk = [e.data["talk_seconds"] for e in _named(replayed) if e.event == "completed"]
    assert len(talk) == 3 and all(t >= 10 for t in talk), talk
    # A replay from any id: every event after it, then the end once.
    assert [e.id for e in _named(from_middle)] == [e.id for e in _named(replayed) if int(e.id) > int(middle)]


async def wait_status_counts(api: Api, cid: str, timeout: float = 30.0, **counts: int) -> dict[str, Any]:
    """Wait until the campaign's contact counts include ``counts``."""
    deadline = time.monotonic() + timeout
    while True:
        _, body = await api.call("GET", f"/api/v1/campaigns/{cid}")
        if all(body["contacts"].get(k, 0) == v for k, v in counts.items()):
            return dict(body)
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.1)
