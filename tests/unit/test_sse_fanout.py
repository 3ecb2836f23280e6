"""SSE fan-out: frames encoded once and shared, coalesced wake-ups, one write per wake-up, lag caught up.

The hub is driven directly; the stream (``api/events.py``) runs against an in-memory response, store and
metrics, so every byte it writes and every write() call can be checked.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiohttp import web

from dialerd.api.context import SERVICES
from dialerd.api.events import _Stream
from dialerd.services.events import (
    FLUSH_DELAY_MAX,
    WAKE_BATCH,
    EventHub,
    Frame,
    Subscription,
    flush_delay,
    sse_frame,
)
from dialerd.store.tables import Event

pytestmark = pytest.mark.timeout(10)
CID = "cmp_fanout"
AT = "2025-01-01T00:00:00+00:00"


def transition(event_id: int, kind: str = "connected", campaign_id: str = CID) -> Event:
    return Event(id=event_id, campaign_id=campaign_id, kind=kind,
                 payload={"contact_id": event_id, "status": kind, "at": AT})


def status_event(event_id: int, status: str = "completed") -> Event:
    return Event(id=event_id, campaign_id=CID, kind="campaign", payload={"status": status})


def final(event_id: int, status: str = "completed") -> Event:
    """The campaign's end event: written once it is terminal and its last call has ended."""
    return Event(id=event_id, campaign_id=CID, kind="end", payload={"status": status, "at": AT})


def wire(event_id: int, kind: str = "connected") -> bytes:
    """The frame of ``transition(event_id, kind)``, spelled out as the SSE spec and the old stream had it."""
    return (f'id: {event_id}\nevent: {kind}\ndata: {{"id":{event_id},"campaign_id":"{CID}",'
            f'"contact_id":{event_id},"status":"{kind}","at":"{AT}"}}\n\n').encode()


# ---- frames ----------------------------------------------------------------------------------------------


def test_frames_keep_the_sse_format_byte_for_byte() -> None:
    assert Frame.of(transition(7)) == Frame(7, wire(7), ends=False)
    assert sse_frame(None, {"type": "snapshot", "status": "running"}, 7) == (
        b'id: 7\ndata: {"type":"snapshot","status":"running"}\n\n')
    assert sse_frame("end", {"campaign_id": CID, "status": "deleted"}, None) == (
        f'event: end\ndata: {{"campaign_id":"{CID}","status":"deleted"}}\n\n'.encode())


@pytest.mark.parametrize("status", ["completed", "failed"])
def test_the_stored_end_event_is_the_end_frame(status: str) -> None:
    frame = Frame.of(final(9, status))
    assert frame.ends
    assert frame.data == (f'id: 9\nevent: end\ndata: {{"id":9,"campaign_id":"{CID}","status":"{status}",'
                          f'"at":"{AT}"}}\n\n').encode()


@pytest.mark.parametrize("status", ["running", "paused", "completed", "failed"])
def test_no_campaign_status_ends_the_stream_itself(status: str) -> None:
    # A stop leaves calls up: their outcomes come after the terminal status, and the end after them.
    frame = Frame.of(status_event(9, status))
    assert not frame.ends and b"event: end" not in frame.data


# ---- hub ---------------------------------------------------------------------------------------------------


def pending(sub: Subscription) -> list[int]:
    frames = sub.take()
    assert frames is not None
    return [f.id for f in frames]


async def test_each_event_is_encoded_once_and_shared_by_every_subscriber() -> None:
    hub = EventHub()
    a, b = hub.subscribe(CID), hub.subscribe(CID)
    hub.publish([transition(1), transition(2)])
    fa, fb = a.take(), b.take()
    assert fa is not None and fb is not None
    assert [f.id for f in fa] == [1, 2]
    assert all(x is y for x, y in zip(fa, fb, strict=True))
    assert a.take() == [] and b.take() == []


async def test_events_reach_only_their_campaign_and_only_later_subscribers() -> None:
    hub = EventHub()
    hub.publish([transition(1)])  # nobody listens: nothing is kept
    a, other = hub.subscribe(CID), hub.subscribe("cmp_other")
    hub.publish([transition(2), transition(3, campaign_id="cmp_other"), transition(4)])
    late = hub.subscribe(CID)
    hub.publish([transition(5)])
    assert pending(a) == [2, 4, 5]
    assert pending(other) == [3]
    assert pending(late) == [5]


async def test_a_subscriber_further_behind_than_the_log_is_lagged_then_level() -> None:
    hub = EventHub(queue_size=10)
    sub, keeping_up = hub.subscribe(CID), hub.subscribe(CID)
    hub.publish([transition(i) for i in range(1, 11)])
    assert pending(keeping_up) == list(range(1, 11))  # exactly a full log is not lagged
    hub.publish([transition(11)])
    assert sub.take() is None  # 11 behind, with room for 10: catch up from the database
    assert pending(keeping_up) == [11]
    hub.publish([transition(12)])
    assert pending(sub) == [12] and pending(keeping_up) == [12]


async def test_publish_wakes_nobody_itself_and_one_flush_wakes_everyone() -> None:
    hub = EventHub()
    subs = [hub.subscribe(CID) for _ in range(3 * WAKE_BATCH + 1)]
    hub.publish([transition(1)])
    hub.publish([transition(2)])
    assert not any(s.wakeup.is_set() for s in subs)  # publish only appends and arms the campaign's timer
    await asyncio.gather(*(s.wakeup.wait() for s in subs))
    assert all(pending(s) == [1, 2] for s in subs)


async def test_subscribers_are_woken_a_batch_per_loop_turn() -> None:
    hub = EventHub()
    subs = [hub.subscribe(CID) for _ in range(2 * WAKE_BATCH)]
    hub.publish([transition(1)])
    await subs[0].wakeup.wait()
    # This task resumes in the loop turn after the first batch was woken, before the second batch is:
    # whatever else is ready (the dispatcher) gets its turn in between.
    assert all(s.wakeup.is_set() for s in subs[:WAKE_BATCH])
    assert not any(s.wakeup.is_set() for s in subs[WAKE_BATCH:])
    await subs[-1].wakeup.wait()


def test_the_flush_delay_grows_with_the_subscribers_and_is_capped() -> None:
    delays = [flush_delay(n) for n in (1, 10, 100, 1000, 100_000)]
    assert delays == sorted(delays) and delays[0] < 0.001
    assert delays[-1] == FLUSH_DELAY_MAX


async def test_the_last_unsubscribe_forgets_the_campaign() -> None:
    hub = EventHub()
    a, b = hub.subscribe(CID), hub.subscribe(CID)
    hub.publish([transition(1)])  # arms a flush for two subscribers
    assert hub.subscriber_count(CID) == 2 and hub.subscriber_count() == 2
    hub.unsubscribe(a)
    hub.unsubscribe(b)
    hub.unsubscribe(b)
    assert hub.subscriber_count(CID) == 0 and hub.subscriber_count() == 0
    again = hub.subscribe(CID)
    assert again.take() == []  # a fresh log: nothing from before
    hub.unsubscribe(again)


async def test_close_all_wakes_every_subscriber_at_once() -> None:
    hub = EventHub()
    subs = [hub.subscribe(CID), hub.subscribe("cmp_other")]
    hub.close_all()
    assert all(s.wakeup.is_set() for s in subs)


# ---- stream ------------------------------------------------------------------------------------------------


class Response:
    """Records each write() separately; ``next_write`` reads them back one by one."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.read = 0
        self.wrote = asyncio.Event()

    async def write(self, data: bytes) -> None:
        self.writes.append(data)
        self.wrote.set()

    async def next_write(self) -> bytes:
        while len(self.writes) <= self.read:
            self.wrote.clear()
            await self.wrote.wait()
        self.read += 1
        return self.writes[self.read - 1]


class Store:
    """The event table, as the campaign service exposes it to the stream: ``committed`` holds what a
    replay can read."""

    def __init__(self, events: list[Event] | None = None) -> None:
        self.committed = list(events or [])
        self.during_replay: list[Event] = []  # committed and published while the next replay reads
        self.hub: EventHub | None = None

    async def events_after(self, campaign_id: str, after_id: int, limit: int) -> list[Event]:
        if self.during_replay:
            self.committed += self.during_replay
            assert self.hub is not None
            self.hub.publish(self.during_replay)
            self.during_replay = []
        rows = [e for e in self.committed if e.campaign_id == campaign_id and (e.id or 0) > after_id]
        return rows[:limit]

    async def end_state(self, campaign_id: str) -> tuple[str | None, bool]:
        # CampaignService.end_state: the campaign's status and whether calls are still up.
        return "completed", self.in_flight

    in_flight = False


class Metrics:
    async def snapshot(self, campaign_id: str) -> dict[str, Any]:
        return {"type": "snapshot", "status": "running"}


SNAPSHOT = sse_frame(None, {"type": "snapshot", "status": "running"}, 0)


class Rig:
    def __init__(self, hub: EventHub, store: Store | None = None, *, snapshot: float = 3600.0,
                 heartbeat: float = 3600.0) -> None:
        self.hub = hub
        self.store = store or Store()
        self.store.hub = hub
        self.resp = Response()
        self.transport = SimpleNamespace(closing=False)
        self.transport.is_closing = lambda: self.transport.closing
        settings = SimpleNamespace(sse_snapshot_interval=snapshot, sse_heartbeat_interval=heartbeat)
        svc = SimpleNamespace(settings=settings, campaigns=self.store, metrics=Metrics(), hub=hub)
        self.request = cast(web.Request, SimpleNamespace(app={SERVICES: svc}, transport=self.transport))

    def stream(self, last_id: int = 0, terminal: bool = False) -> tuple[_Stream, asyncio.Task[None]]:
        stream = _Stream(self.request, cast(web.StreamResponse, self.resp), self.hub.subscribe(CID), last_id)
        task = asyncio.create_task(stream.run(CID, terminal_at_start=terminal))
        return stream, task

    def output(self) -> bytes:
        return b"".join(self.resp.writes)


async def test_each_wake_up_writes_all_pending_frames_in_one_write() -> None:
    rig = Rig(EventHub())
    _stream, task = rig.stream()
    assert await rig.resp.next_write() == SNAPSHOT  # live from the start: nothing to replay
    for i in (1, 2, 3):
        rig.hub.publish([transition(i, "originated")])
    assert await rig.resp.next_write() == wire(1, "originated") + wire(2, "originated") + wire(3, "originated")
    rig.hub.publish([transition(4), final(5)])
    assert await rig.resp.next_write() == wire(4) + Frame.of(final(5)).data
    await task  # the end frame ended it
    end = f'id: 5\nevent: end\ndata: {{"id":5,"campaign_id":"{CID}","status":"completed","at":"{AT}"}}\n\n'.encode()
    assert rig.resp.writes[-1].endswith(end)


async def test_a_terminal_status_with_calls_up_keeps_the_stream_open_until_the_end() -> None:
    rig = Rig(EventHub())
    _stream, task = rig.stream()
    await rig.resp.next_write()  # the opening snapshot
    rig.hub.publish([status_event(1, "completed")])
    assert await rig.resp.next_write() == Frame.of(status_event(1, "completed")).data
    rig.hub.publish([transition(2, "completed"), transition(3, "failed")])
    assert await rig.resp.next_write() == wire(2, "completed") + wire(3, "failed")
    assert not task.done()
    rig.hub.publish([final(4)])
    await task
    assert rig.resp.writes[-1] == Frame.of(final(4)).data


async def test_a_replay_of_a_finished_campaign_ends_with_its_stored_end_once() -> None:
    events = [transition(1, "originated"), status_event(2), transition(3, "completed"), final(4)]
    for start in (0, 2, 3):
        rig = Rig(EventHub(), Store(events))
        _stream, task = rig.stream(last_id=start, terminal=True)
        await task
        assert rig.output() == b"".join(Frame.of(e).data for e in events if (e.id or 0) > start)
        assert rig.output().count(b"event: end") == 1


async def test_resuming_after_the_end_gets_an_end_again_and_nothing_else() -> None:
    rig = Rig(EventHub(), Store([status_event(1), final(2)]))
    _stream, task = rig.stream(last_id=2, terminal=True)
    await task
    assert rig.output() == sse_frame("end", {"campaign_id": CID, "status": "completed"}, 2)


async def test_a_stopped_campaign_with_calls_up_goes_live_until_its_end() -> None:
    store = Store([status_event(1)])
    store.in_flight = True
    rig = Rig(EventHub(), store)
    _stream, task = rig.stream(last_id=0, terminal=True)
    assert await rig.resp.next_write() == Frame.of(status_event(1)).data
    assert await rig.resp.next_write() == sse_frame(None, {"type": "snapshot", "status": "running"}, 1)
    rig.hub.publish([transition(2, "completed"), final(3)])
    await task
    assert rig.resp.writes[-1] == wire(2, "completed") + Frame.of(final(3)).data


async def test_a_resuming_stream_replays_after_its_id_in_one_write_per_page() -> None:
    rig = Rig(EventHub(), Store([transition(i) for i in range(1, 6)]))
    _stream, task = rig.stream(last_id=2)
    replay = await rig.resp.next_write()
    assert replay == wire(3) + wire(4) + wire(5)
    assert await rig.resp.next_write() == sse_frame(None, {"type": "snapshot", "status": "running"}, 5)
    rig.hub.publish([final(6)])
    await task
    assert rig.resp.writes[-1] == Frame.of(final(6)).data


async def test_a_lagged_stream_catches_up_from_the_database_without_duplicates() -> None:
    hub = EventHub(queue_size=10)
    rig = Rig(hub)
    stream, task = rig.stream()
    await rig.resp.next_write()  # the opening snapshot
    burst = [transition(i) for i in range(1, 26)]
    rig.store.committed += burst
    # One more transition commits while the catch-up reads: it is both in the page and in the hub.
    rig.store.during_replay = [transition(26)]
    hub.publish(burst)  # 25 at once, with room for 10
    assert await rig.resp.next_write() == b"".join(wire(i) for i in range(1, 27))
    hub.publish([transition(27), final(28)])
    await task
    assert stream.last_id == 28
    assert rig.output() == SNAPSHOT + b"".join(wire(i) for i in range(1, 28)) + Frame.of(final(28)).data


async def test_snapshots_and_heartbeats_keep_coming_while_nothing_happens() -> None:
    rig = Rig(EventHub(), snapshot=0.01, heartbeat=0.01)
    _stream, task = rig.stream()
    while rig.output().count(b": heartbeat\n\n") < 3 or rig.output().count(b'"type":"snapshot"') < 4:
        await rig.resp.next_write()
    rig.hub.publish([final(1)])
    await task


async def test_a_stream_whose_client_left_stops_at_its_next_wake_up() -> None:
    rig = Rig(EventHub())
    _stream, task = rig.stream()
    await rig.resp.next_write()
    rig.transport.closing = True
    rig.hub.publish([transition(1)])
    await task
    assert rig.resp.writes == [SNAPSHOT]
