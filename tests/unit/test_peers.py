"""services/peers.py with a real hub and an in-memory event table: where marks start, what is read and
published, in what order, and what halts a runner."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from dialerd.services.events import EventHub, Subscription
from dialerd.services.peers import PeerEvents
from dialerd.store.listen import Notice
from dialerd.store.tables import Event
from dialerd.tasks import TaskOwner

ME, OTHER = "me-1", "other-2"


class Table:
    """The event table: committed rows, read as ``Store.events_after`` does."""

    def __init__(self) -> None:
        self.rows: list[Event] = []
        self.reads = 0

    def add(self, campaign_id: str, kind: str = "x", **payload: object) -> Event:
        ev = Event(id=len(self.rows) + 1, campaign_id=campaign_id, kind=kind, payload=dict(payload),
                   created_at=datetime.now(UTC))
        self.rows.append(ev)
        return ev

    async def after(self, campaign_id: str, after: int, limit: int) -> list[Event]:
        self.reads += 1
        await asyncio.sleep(0)
        assert all(r.id is not None for r in self.rows)
        return [r for r in self.rows if r.campaign_id == campaign_id and (r.id or 0) > after][:limit]


def rig() -> tuple[Table, EventHub, PeerEvents, list[str]]:
    table, hub, halted = Table(), EventHub(), []
    peers = PeerEvents(hub, table.after, TaskOwner(on_crash=lambda _n, _e: None), writer=ME,
                       halted=halted.append)
    return table, hub, peers, halted


def notice(ev: Event, writer: str = OTHER, status: str | None = None) -> Notice:
    assert ev.id is not None
    return Notice(ev.campaign_id, ev.id, ev.id, writer, status)


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def ids(sub: Subscription) -> list[int]:
    frames = sub.take()
    assert frames is not None
    return [f.id for f in frames]


async def test_a_campaign_nobody_watches_is_never_read() -> None:
    table, _hub, peers, _ = rig()
    peers.notice(notice(table.add("c1")))
    peers.committed([table.add("c1")])
    await settle()
    assert table.reads == 0


async def test_the_first_notice_starts_the_mark_and_own_commits_are_read_at_once_after() -> None:
    table, hub, peers, _ = rig()
    sub = hub.subscribe("c1")
    own = table.add("c1")
    peers.committed([own])  # no mark yet: another daemon's earlier commit may still be on its way
    await settle()
    assert table.reads == 0
    peers.notice(notice(own, writer=ME))
    await settle()
    assert ids(sub) == [own.id]
    second = table.add("c1")
    peers.committed([second])
    await settle()
    assert ids(sub) == [second.id]
    reads = table.reads
    peers.notice(notice(second, writer=ME))  # already published: no read
    await settle()
    assert table.reads == reads


async def test_a_remote_commit_whose_notice_comes_late_is_published_before_a_later_own_one() -> None:
    table, hub, peers, _ = rig()
    sub = hub.subscribe("c1")
    first = table.add("c1")
    peers.notice(notice(first))
    await settle()
    assert ids(sub) == [first.id]
    remote = table.add("c1")  # committed on another daemon; its notice is still on its way
    own = table.add("c1")
    peers.committed([own])
    await settle()
    peers.notice(notice(remote))
    await settle()
    assert ids(sub) == [remote.id, own.id]


async def test_after_the_streams_all_leave_a_new_one_starts_from_the_next_notice() -> None:
    table, hub, peers, _ = rig()
    sub = hub.subscribe("c1")
    peers.notice(notice(table.add("c1")))
    await settle()
    hub.unsubscribe(sub)
    for _ in range(5):
        table.add("c1")  # nobody watching here, nothing read
    again = hub.subscribe("c1")
    peers.committed([table.add("c1")])  # the old mark is void: no backlog is read
    await settle()
    assert again.take() == []
    nxt = table.add("c1")
    peers.notice(notice(nxt))
    await settle()
    assert ids(again) == [nxt.id]


async def test_a_reconnect_sends_every_stream_to_the_table() -> None:
    table, hub, peers, _ = rig()
    sub = hub.subscribe("c1")
    peers.notice(notice(table.add("c1")))
    await settle()
    sub.take()
    peers.reconnected()
    assert sub.wakeup.is_set()
    assert sub.take() is None  # the stream replays from its own last id
    assert sub.take() == []


async def test_a_remote_pause_halts_but_not_one_older_than_a_status_seen_here() -> None:
    table, _hub, peers, halted = rig()
    pause = table.add("c1", "campaign", status="paused")
    peers.notice(notice(pause, status="paused"))
    assert halted == ["c1"]
    stale = table.add("c1", "campaign", status="paused")  # another daemon's pause ...
    resume = table.add("c1", "campaign", status="running")  # ... then this one's resume, seen first
    peers.committed([resume])
    peers.notice(notice(stale, status="paused"))
    assert halted == ["c1"]
    peers.notice(notice(table.add("c1", "campaign", status="running"), status="running"))
    peers.notice(notice(table.add("c1", "campaign", status="completed"), status="completed"))
    assert halted == ["c1", "c1"]
    peers.notice(notice(table.add("c1", "campaign", status="completed"), writer=ME, status="completed"))
    assert halted == ["c1", "c1"]  # its own: the local stop already halted it
