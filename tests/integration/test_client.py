"""``dialerd.client`` against the running daemon: every method of both clients, every error class from a
real error answer (``offline_api``, both databases), and the event stream end to end through the local
Asterisk, including connections cut under it.

The blocking client runs in a worker thread (``asyncio.to_thread``): the daemon it talks to runs in the
test's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dialerd.client import (
    AsyncDialerd,
    CampaignEvent,
    Conflict,
    ContactEvent,
    Dialerd,
    DialerdApiError,
    DialerdConnectionError,
    End,
    Event,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    Snapshot,
    Unauthorized,
)
from dialerd.client.sse import EventStream
from tests.conftest import Api, free_port
from tests.live import live_api, numbers

pytestmark = pytest.mark.timeout(60)

CSV = (
    "phone_number,first_name\n"
    "+14155550100,Ann\n"
    "(415) 555-0101,Bob\n"  # national format: needs default_region
    "+14155550102,Cy\n"
    "not a number,Dee\n"  # rejected, reported by line
    "+14155550100,Ann again\n"  # duplicate, collapsed
)


def nonzero(counts: Any) -> dict[str, int]:
    return {k: v for k, v in dict(counts).items() if v}


# ---- control plane --------------------------------------------------------------------------------


async def test_async_client_every_method(offline_api: Api, tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text(CSV)
    async with AsyncDialerd(offline_api.base, offline_api.keys["acme"], timeout=10) as client:
        created = await client.campaigns.create(
            path, name="from a path", caller_id="+14155550000", destination="dialerd-demo,s",
            max_concurrent_calls=3, retries_per_contact=2, retry_delay_seconds=120, ring_timeout_seconds=15,
            default_region="US",
        )  # fmt: skip
        cid = created["id"]
        assert created["status"] == "draft" and created["name"] == "from a path"
        assert (created["caller_id"], created["destination"]) == ("+14155550000", "dialerd-demo,s,1")
        assert (created["max_concurrent_calls"], created["retries_per_contact"]) == (3, 2)
        assert (created["retry_delay_seconds"], created["ring_timeout_seconds"]) == (120, 15)
        report = created["import"]
        assert (report["rows_total"], report["contacts"], report["rows_rejected"], report["duplicates"]) == (5, 3, 1, 1)
        assert [(p["line"], p["value"]) for p in report.get("problems", [])] == [(5, "not a number")]

        later = datetime.now(UTC) + timedelta(hours=1)
        scheduled = await client.campaigns.create(io.BytesIO(b"phone_number\n+14155550103\n"), name="later",
                                                  scheduled_at=later)
        assert scheduled["status"] == "scheduled"
        assert datetime.fromisoformat(str(scheduled["scheduled_at"])) == later.replace(microsecond=later.microsecond // 1000 * 1000)
        from_bytes = await client.campaigns.create(b"phone_number\n+14155550104\n", name="bytes")

        assert nonzero((await client.campaigns.get(cid))["contacts"]) == {"total": 3, "pending": 3}
        page = await client.campaigns.list()
        assert page["total"] == 3 and {c["id"] for c in page["campaigns"]} == {cid, scheduled["id"], from_bytes["id"]}
        assert [c["id"] for c in (await client.campaigns.list(status="scheduled"))["campaigns"]] == [scheduled["id"]]
        one = await client.campaigns.list(limit=1, offset=1)
        assert (len(one["campaigns"]), one["limit"], one["offset"]) == (1, 1, 1)

        contacts = await client.campaigns.list_contacts(cid, limit=2)
        assert [c["phone_number"] for c in contacts["contacts"]] == ["+14155550100", "+14155550101"]
        assert contacts["next_offset"] == 2 and contacts["total"] == 3
        assert contacts["contacts"][1]["custom_fields"] == {"first_name": "Bob"}
        every = [c async for c in client.campaigns.iter_contacts(cid, page_size=1)]
        assert [c["line"] for c in every] == [2, 3, 4]
        assert (await client.campaigns.list_contacts(cid, status="failed"))["contacts"] == []

        # The offline PBX never dials, so every lifecycle step is observable.
        assert (await client.campaigns.start(cid))["status"] == "running"
        why = await client.campaigns.explain(cid)  # the offline PBX: nothing can be dialled
        assert (why["status"], why["dialling"], why["pending"], why["eligible_now"]) == ("running", False, 3, 3)
        assert [b["reason"] for b in why["blocked_by"]] == ["pbx_disconnected"]
        assert (await client.campaigns.pause(cid))["status"] == "paused"
        assert (await client.campaigns.resume(cid))["status"] == "running"
        stopped = await client.campaigns.stop(cid)
        assert stopped["status"] == "completed" and nonzero(stopped["contacts"]) == {"total": 3, "cancelled": 3}

        # A finished campaign's stream replays its history and ends.
        events = [e async for e in client.campaigns.events(cid, last_event_id=0)]
        assert [(e.previous, e.status) for e in events if isinstance(e, CampaignEvent)] == [
            ("draft", "running"), ("running", "paused"), ("paused", "running"), ("running", "completed")
        ]  # fmt: skip
        cancelled = [e for e in events if isinstance(e, ContactEvent)]
        assert sorted(e.contact_id for e in cancelled) == sorted(c["id"] for c in every)
        assert {(e.status, e.reason) for e in cancelled} == {("cancelled", "campaign_stopped")}
        end = events[-1]
        assert isinstance(end, End) and (end.campaign_id, end.status) == (cid, "completed")
        ids = [e.id for e in events if isinstance(e, ContactEvent | CampaignEvent)]
        assert ids == sorted(set(ids))
        # Resuming after an id gives exactly the rest.
        rest = [e async for e in client.campaigns.events(cid, last_event_id=ids[2])]
        assert [e.id for e in rest if isinstance(e, ContactEvent | CampaignEvent)] == ids[3:]

        await client.campaigns.delete(cid)
        with pytest.raises(NotFound):
            await client.campaigns.get(cid)
        assert (await client.health())["status"] in ("ok", "degraded")


def _sync_every_method(client: Dialerd, csv_path: Path) -> dict[str, Any]:
    """The blocking client's whole surface; returns what it saw for the test to check."""
    seen: dict[str, Any] = {}
    with csv_path.open("rb") as f:
        created = client.campaigns.create(f, name="sync", default_region="US", max_concurrent_calls=2)
    cid = created["id"]
    seen["created"] = created
    seen["get"] = client.campaigns.get(cid)
    seen["list"] = client.campaigns.list(status="draft", limit=10, offset=0)
    seen["page"] = client.campaigns.list_contacts(cid, status="pending", limit=2, offset=1)
    seen["all"] = list(client.campaigns.iter_contacts(cid, page_size=2))
    seen["explain"] = client.campaigns.explain(cid)
    seen["lifecycle"] = [
        client.campaigns.start(cid)["status"], client.campaigns.pause(cid)["status"],
        client.campaigns.resume(cid)["status"], client.campaigns.stop(cid)["status"],
    ]  # fmt: skip
    seen["events"] = list(client.campaigns.events(cid, last_event_id=0))
    client.campaigns.delete(cid)
    try:
        client.campaigns.get(cid)
    except NotFound as exc:
        seen["gone"] = exc
    return seen


async def test_sync_client_every_method(offline_api: Api, tmp_path: Path) -> None:
    path = tmp_path / "contacts.csv"
    path.write_text(CSV)
    with Dialerd(offline_api.base, offline_api.keys["acme"]) as client:
        seen = await asyncio.to_thread(_sync_every_method, client, path)
    cid = seen["created"]["id"]
    assert seen["created"]["import"]["rows_rejected"] == 1 and seen["created"]["max_concurrent_calls"] == 2
    assert seen["get"]["contacts"]["pending"] == 3
    assert [c["id"] for c in seen["list"]["campaigns"]] == [cid]
    assert [c["line"] for c in seen["page"]["contacts"]] == [3, 4] and seen["page"]["next_offset"] is None
    assert [c["line"] for c in seen["all"]] == [2, 3, 4]
    assert seen["explain"] == {"campaign_id": cid, "status": "draft", "dialling": False, "pending": 3,
                               "eligible_now": 3, "blocked_by": []}
    assert seen["lifecycle"] == ["running", "paused", "running", "completed"]
    events: list[Event] = seen["events"]
    assert sum(isinstance(e, ContactEvent) and e.status == "cancelled" for e in events) == 3
    assert isinstance(events[-1], End) and events[-1].status == "completed"
    assert seen["gone"].status == 404 and seen["gone"].error_id == "campaign_not_found"


async def test_the_environment_supplies_url_and_key(offline_api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIALERD_URL", offline_api.base + "/")
    monkeypatch.setenv("DIALERD_API_KEY", offline_api.keys["globex"])
    async with AsyncDialerd() as client:
        await client.campaigns.create(b"phone_number\n+14155550100\n", name="globex's")
    page = await asyncio.to_thread(lambda: Dialerd().campaigns.list())
    assert [c["name"] for c in page["campaigns"]] == ["globex's"]
    # Explicit arguments win over the environment.
    acme = await asyncio.to_thread(lambda: Dialerd(api_key=offline_api.keys["acme"]).campaigns.list())
    assert acme["total"] == 0


async def _errors_async(api: Api) -> list[DialerdApiError]:
    out: list[DialerdApiError] = []
    async with AsyncDialerd(api.base, api.keys["acme"]) as client, AsyncDialerd(api.base, "dlr_bogus") as bad:
        draft = await client.campaigns.create(b"phone_number\n+14155550100\n", name="draft")
        running = await client.campaigns.create(b"phone_number\n+14155550101\n", name="running")
        await client.campaigns.start(running["id"])
        limit = api.daemon.settings.upload_limit_bytes
        calls: list[Any] = [
            lambda: bad.campaigns.list(),
            lambda: client.campaigns.get("cmp_does_not_exist"),
            lambda: client.campaigns.create(b"phone_number\n+14155550100\n", name="x", max_concurrent_calls=0),
            lambda: client.campaigns.list(status="bogus"),
            lambda: client.campaigns.pause(draft["id"]),
            lambda: client.campaigns.delete(running["id"]),
            lambda: client.campaigns.create(b"phone_number\n" + b"+14155550100\n" * (limit // 13 + 10), name="big"),
        ]
        for call in calls:
            try:
                await call()
            except DialerdApiError as exc:
                out.append(exc)
        with pytest.raises(NotFound) as stream_error:
            async for _ in client.campaigns.events("cmp_does_not_exist"):
                pass
        out.append(stream_error.value)
    return out


def _errors_sync(api: Api, ids: dict[str, str]) -> list[DialerdApiError]:
    out: list[DialerdApiError] = []
    client = Dialerd(api.base, api.keys["acme"])
    limit = api.daemon.settings.upload_limit_bytes
    calls: list[Any] = [
        lambda: Dialerd(api.base, "dlr_bogus").campaigns.list(),
        lambda: client.campaigns.get("cmp_does_not_exist"),
        lambda: client.campaigns.create(b"phone_number\n+14155550100\n", name="x", max_concurrent_calls=0),
        lambda: client.campaigns.list(status="bogus"),
        lambda: client.campaigns.pause(ids["draft"]),
        lambda: client.campaigns.delete(ids["running"]),
        lambda: client.campaigns.create(b"phone_number\n" + b"+14155550100\n" * (limit // 13 + 10), name="big"),
        lambda: list(client.campaigns.events("cmp_does_not_exist")),
    ]
    for call in calls:
        try:
            call()
        except DialerdApiError as exc:
            out.append(exc)
    return out


EXPECTED_ERRORS = [
    (Unauthorized, 401, "unauthorized"),
    (NotFound, 404, "campaign_not_found"),
    (InvalidRequest, 400, "invalid_field"),
    (InvalidRequest, 400, "invalid_field"),
    (Conflict, 409, "invalid_transition"),
    (Conflict, 409, "campaign_running"),
    (PayloadTooLarge, 413, "payload_too_large"),
    (NotFound, 404, "campaign_not_found"),
]


async def test_every_error_class_from_real_answers(offline_api: Api) -> None:
    async_errors = await _errors_async(offline_api)
    async with AsyncDialerd(offline_api.base, offline_api.keys["acme"]) as client:
        by_name = {c["name"]: c["id"] for c in (await client.campaigns.list())["campaigns"]}
    sync_errors = await asyncio.to_thread(_errors_sync, offline_api, by_name)
    for errors in (async_errors, sync_errors):
        assert [(type(e), e.status, e.error_id) for e in errors] == EXPECTED_ERRORS
        assert all(isinstance(e.message, str) and e.message and e.error_id in str(e) for e in errors)
        invalid = errors[2]
        assert invalid.details == {"field": "max_concurrent_calls"} and "max_concurrent_calls" in invalid.message


async def test_unreachable_daemon_and_bad_arguments() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with AsyncDialerd(dead, "k", timeout=5) as client:
        with pytest.raises(DialerdConnectionError):
            await client.campaigns.list()
        with pytest.raises(DialerdConnectionError):
            async for _ in client.campaigns.events("cmp_x"):
                pass
    with pytest.raises(DialerdConnectionError):
        await asyncio.to_thread(lambda: Dialerd(dead, "k", timeout=5).campaigns.get("cmp_x"))
    with pytest.raises(ValueError, match="timezone"):
        await AsyncDialerd(dead).campaigns.create(b"x", name="n", scheduled_at=datetime(2030, 1, 1))
    with pytest.raises(ValueError, match="http"):
        Dialerd("localhost:8080")
    with pytest.raises(ValueError, match="non-empty"):
        Dialerd(dead).campaigns.get("")


def test_stream_decoding_and_reconnect_policy_without_a_daemon() -> None:
    """The decoder and the policy the live tests rely on, on inputs a server could send but dialerd does not
    (CR and CRLF line ends, frames split anywhere, an id on a frame with no data)."""
    raw = (
        b"retry: 1500\r\n\r\nid: 7\r\nevent: failed\r\ndata: {\"id\": 7, \"contact_id\": 3, \"status\": \"failed\",\r\n"
        b'data: "reason": "busy", "cause": 17, "sip_code": 486}\r\n\r\n: heartbeat\n\nid: 5\nevent: failed\n'
        b'data: {"id": 5, "contact_id": 2, "status": "failed"}\n\nid: 8\r\r'
        b'data: {"type":"snapshot","status":"running"}\r\revent: end\ndata: {"campaign_id":"c","status":"completed"}\n\n'
        b"data: after the end\n\n"
    )
    for size in (1, 2, 5, len(raw)):
        stream = EventStream("c", None, max_reconnects=2)
        stream.connected()
        events: list[Event] = []
        for i in range(0, len(raw), size):
            events += stream.feed(raw[i : i + size])
        # The replayed id 5 (at or below one already delivered) is dropped; nothing after End is read.
        assert [type(e) for e in events] == [ContactEvent, Snapshot, End], size
        failed = events[0]
        assert isinstance(failed, ContactEvent)
        assert (failed.id, failed.contact_id, failed.reason, failed.cause, failed.sip_code) == (7, 3, "busy", 17, 486)
        assert stream.ended and stream.request_headers()["Last-Event-ID"] == "8"
    # Delays follow the server's retry hint and double; the third consecutive failure gives up.
    assert (stream.lost(None), stream.lost(OSError("reset"))) == (1.5, 3.0)
    with pytest.raises(DialerdConnectionError, match="2 reconnects failed"):
        stream.lost(None)



def test_a_stop_status_does_not_end_the_stream_only_the_end_does() -> None:
    """A stop with calls up: the terminal ``campaign`` event, then the calls' outcomes, then ``end``. The
    reader goes on past the terminal status, resumes after it if cut there, and stops at the end."""
    from dialerd.services.events import Frame
    from dialerd.store.tables import Event as Stored

    def wire(event_id: int, kind: str, **payload: Any) -> bytes:
        return Frame.of(Stored(id=event_id, campaign_id="c", kind=kind, payload=payload)).data

    stop = wire(10, "campaign", status="completed", previous="running", action="stop")
    outcomes = wire(11, "completed", contact_id=1, status="completed") + wire(12, "failed", contact_id=2,
                                                                               status="failed", reason="busy")
    end = wire(13, "end", status="completed")
    stream = EventStream("c", 9)
    stream.connected()
    first = stream.feed(stop)
    assert [type(e) for e in first] == [CampaignEvent] and not stream.ended
    # Cut right after the stop: the reconnect resumes after it, and the outcomes still come.
    assert stream.lost(None) > 0 and stream.request_headers()["Last-Event-ID"] == "10"
    stream.connected()
    rest = stream.feed(stop + outcomes + end + wire(14, "completed", contact_id=3, status="completed"))
    assert [type(e) for e in rest] == [ContactEvent, ContactEvent, End]  # the replayed stop is dropped
    last = rest[-1]
    assert isinstance(last, End) and (last.id, last.status) == (13, "completed") and stream.ended

# ---- end to end through the local Asterisk ------------------------------------------------------------

# 00-29 answer for ~2 s, 42 busy, 63 congestion, 75 not found, 85 declined (asterisk/README.md).
OUTCOMES = {0: ("completed", None), 1: ("completed", None), 42: ("failed", "busy"), 63: ("failed", "congestion"),
            75: ("failed", "invalid_number"), 85: ("failed", "rejected")}  # fmt: skip


def _ari_app() -> str:
    # One websocket per ARI app name: our own keeps other sessions' dialerds from taking our events.
    return f"dialerd-test-client-{os.getpid()}"


def _trails(events: list[Event]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for e in events:
        if isinstance(e, ContactEvent):
            out.setdefault(e.contact_id, []).append(e.status)
    return out


@pytest.mark.pbx
async def test_events_see_every_transition_and_match_the_contacts(tmp_path: Path) -> None:
    async with live_api(tmp_path, ari_app=_ari_app()) as api, AsyncDialerd(api.base, api.keys["acme"]) as client:
        campaign = await client.campaigns.create(numbers(list(OUTCOMES)).encode(), name="e2e",
                                                 max_concurrent_calls=6, ring_timeout_seconds=8)
        cid = campaign["id"]
        await client.campaigns.start(cid)
        events = [e async for e in client.campaigns.events(cid, last_event_id=0)]
        contacts = [c async for c in client.campaigns.iter_contacts(cid)]
        page = await client.campaigns.list_contacts(cid, status="failed")

    assert isinstance(events[-1], End) and events[-1].status == "completed"
    assert [(e.previous, e.status) for e in events if isinstance(e, CampaignEvent)] == [
        ("draft", "running"), ("running", "completed")
    ]  # fmt: skip
    assert any(isinstance(e, Snapshot) and e.status == "running" for e in events)
    trails = _trails(events)
    assert sorted(trails) == sorted(c["id"] for c in contacts) and len(contacts) == 6
    last: dict[int, ContactEvent] = {}
    for e in events:
        if isinstance(e, ContactEvent):
            last[e.contact_id] = e
    for c in contacts:
        expected_status, expected_reason = OUTCOMES[int(c["phone_number"][-2:])]
        assert trails[c["id"]] == (
            ["originated", "connected", "completed"] if expected_status == "completed" else ["originated", "failed"]
        ), (c, trails[c["id"]])
        final = last[c["id"]]
        assert (c["status"], c["failure_reason"]) == (expected_status, expected_reason)
        assert (final.status, final.reason, final.cause, final.sip_code, final.phone_number) == (
            c["status"], c["failure_reason"], c["hangup_cause"], c["sip_code"], c["phone_number"]
        )  # fmt: skip
    assert {c["id"] for c in page["contacts"]} == {c["id"] for c in contacts if c["status"] == "failed"}
    assert page["total"] == 4


class CuttingProxy:
    """A TCP proxy in front of the daemon that can cut every open connection, and notes each request's
    ``Last-Event-ID`` header, so the clients' reconnects are observed from outside."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.last_event_ids: list[str | None] = []
        self.cuts = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()  # aborting both ends lets every connection's task finish on its own
        await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), 5)
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut(self) -> None:
        self.cuts += bool(self._writers)
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers |= {writer, up_writer}
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if b"/events" in head.split(b"\r\n", 1)[0]:
                match = re.search(rb"(?im)^last-event-id: *(\S+)", head)
                self.last_event_ids.append(match.group(1).decode() if match else None)
            up_writer.write(head)
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            for w in (writer, up_writer):
                w.transport.abort()
                self._writers.discard(w)

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while chunk := await src.read(65536):
                dst.write(chunk)
                await dst.drain()
        dst.transport.abort()


def _sync_read(client: Dialerd, cid: str, out: list[Event]) -> None:
    for event in client.campaigns.events(cid, last_event_id=0, reconnect_delay=0.1, max_reconnects=10):
        out.append(event)


def _sync_read_in_two_goes(client: Dialerd, cid: str) -> tuple[list[Event], list[Event]]:
    """Read five transitions, walk away, come back with the last id seen."""
    first: list[Event] = []
    stream: Iterator[Event] = client.campaigns.events(cid, last_event_id=0)
    for event in stream:
        first.append(event)
        if sum(isinstance(e, ContactEvent) for e in first) == 5:
            break
    last_id = [e.id for e in first if isinstance(e, ContactEvent)][-1]
    return first, list(client.campaigns.events(cid, last_event_id=last_id))


@pytest.mark.pbx
async def test_a_dropped_stream_resumes_and_misses_nothing(tmp_path: Path) -> None:
    async with live_api(tmp_path, ari_app=_ari_app()) as api:
        port = int(api.base.rsplit(":", 1)[1])
        async with AsyncDialerd(api.base, api.keys["acme"]) as direct:
            cid = (await direct.campaigns.create(
                numbers([0, 1, 2, 42, 3, 63, 4, 75, 5, 85]).encode(), name="cut", max_concurrent_calls=3,
            ))["id"]  # fmt: skip
        async with CuttingProxy(port) as proxy, AsyncDialerd(proxy.url, api.keys["acme"]) as via_proxy:
            sync_events: list[Event] = []
            sync_task = asyncio.create_task(asyncio.to_thread(
                _sync_read, Dialerd(proxy.url, api.keys["acme"], timeout=5), cid, sync_events
            ))  # fmt: skip
            async_events: list[Event] = []

            async def read_async() -> None:
                async for event in via_proxy.campaigns.events(cid, last_event_id=0, reconnect_delay=0.1):
                    async_events.append(event)

            async_task = asyncio.create_task(read_async())
            await asyncio.sleep(0.5)
            await via_proxy.campaigns.start(cid)

            async def cutter() -> None:
                while True:
                    await asyncio.sleep(1.2)
                    proxy.cut()

            cutting = asyncio.create_task(cutter())
            try:
                two_goes = await asyncio.to_thread(_sync_read_in_two_goes, Dialerd(api.base, api.keys["acme"]), cid)
                await asyncio.wait_for(asyncio.gather(async_task, sync_task), 45)
            finally:
                cutting.cancel()
        async with AsyncDialerd(api.base, api.keys["acme"]) as direct:
            reference = [e async for e in direct.campaigns.events(cid, last_event_id=0)]
            contacts = [c async for c in direct.campaigns.iter_contacts(cid)]

    def transitions(events: list[Event]) -> list[tuple[int, str]]:
        return [(e.id, e.status) for e in events if isinstance(e, ContactEvent | CampaignEvent)]

    expected = transitions(reference)
    assert len(expected) == 6 * 3 + 4 * 2 + 2  # answered: 3 transitions, failed: 2, the campaign: 2
    assert sorted(_trails(reference)) == sorted(c["id"] for c in contacts)
    # The connections really were cut mid-stream, and every reconnect resumed after what was delivered.
    assert proxy.cuts >= 3
    resumed = [i for i in proxy.last_event_ids if i not in (None, "0")]
    assert len(resumed) >= 4 and all(int(i) > 0 for i in resumed)
    for got in (async_events, sync_events):
        assert transitions(got) == expected
        assert isinstance(got[-1], End) and got[-1].status == "completed"
    first, second = two_goes
    assert transitions(first) + transitions(second) == expected
