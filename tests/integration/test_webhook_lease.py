"""Several daemons on one database deliver each campaign's webhook once: the lease on ``webhook_delivery``.

The store's lease on both backends (take, renew, fenced writes, release, the scan for work no daemon
delivers); then, on PostgreSQL, two ``WebhookDelivery`` instances, each with its own Store and engine as two
daemons have, and one real aiohttp receiver on loopback: with events written by both, every event arrives
exactly once; one that stops hands over at once; one that dies without freeing its leases is taken over
once they lapse, repeating only what it delivered after its last cursor write; a slow receiver is no
lapse; a stalled holder whose renewal finds the lease taken stops delivering at once. On SQLite a killed
run's lease is freed at start.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from dialerd.services.webhooks import PERSIST_EVERY, WebhookDelivery
from dialerd.store.db import create_engine, migrate
from dialerd.store.repo import Store
from dialerd.tasks import TaskOwner
from dialerd.timestamps import utcnow
from tests.conftest import _pg_create, _pg_drop, free_port
from tests.integration.test_store import make_campaign, make_tenant

pytestmark = pytest.mark.timeout(60)

SECRET = "whsec-" + "0123456789abcdef" * 2


# ---- the store's lease, both backends -------------------------------------------------------------


async def add_events(store: Store, campaign_id: str, n: int) -> list[int]:
    """Append ``n`` events, one transaction each, as the store's writers do: the campaign's row locked
    first (store/base.py lock_campaign), so one campaign's events commit in id order across daemons."""
    ids = []
    for i in range(n):
        async with store.write() as conn:
            await store.tx.lock_campaign(conn, campaign_id=campaign_id)
            ev = await store.tx.event(conn, campaign_id, "pending", {"n": i}, utcnow())
        assert ev.id is not None
        ids.append(ev.id)
    return ids


async def hooked_campaign(store: Store, url: str = "http://127.0.0.1:9/hook") -> str:
    return await make_campaign(store, await make_tenant(store), status="running", webhook_url=url,
                               webhook_secret=SECRET)


async def delivery_row(store: Store, campaign_id: str) -> dict[str, Any]:
    from dialerd.store.webhooks import T_DELIVERY

    async with store.read() as conn:
        row = (await conn.execute(T_DELIVERY.select().where(T_DELIVERY.c.campaign_id == campaign_id))).one()
    return dict(row._mapping)


async def test_the_lease_is_taken_once_renewed_fenced_and_released(store: Store) -> None:
    hooks = store.webhooks
    cid = await hooked_campaign(store)
    await add_events(store, cid, 3)
    assert [t.campaign_id for t in await hooks.due("a")] == [cid]  # no row yet: nobody delivers it
    assert await hooks.take(cid, "a", 60) and await hooks.take(cid, "a", 60)  # free, then its own
    assert not await hooks.take(cid, "b", 60)
    assert await hooks.due("b") == [] and [t.campaign_id for t in await hooks.due("a")] == [cid]
    row = await delivery_row(store, cid)
    assert row["lease_owner"] == "a" and row["delivered_through"] == 0
    assert (row["lease_until"] - utcnow()).total_seconds() > 50

    # Writes of the cursor and the head's state apply only for the holder, and renew its lease.
    now = utcnow()
    assert not await hooks.advance(cid, 2, now, owner="b", seconds=60)
    assert not await hooks.failed(cid, through=1, failures=1, since=now, error="x", at=now, retry_at=now,
                                  owner="b", seconds=60)
    assert not await hooks.dead(cid, 1, failures=1, error="x", at=now, owner="b", seconds=60)
    assert (await delivery_row(store, cid))["delivered_through"] == 0 and await hooks.dead_events(cid) == []
    assert await hooks.advance(cid, 2, now, owner="a", seconds=120)
    assert await hooks.advance(cid, 1, now, owner="a", seconds=120)  # never backwards
    row = await delivery_row(store, cid)
    assert row["delivered_through"] == 2 and (row["lease_until"] - utcnow()).total_seconds() > 100
    assert await hooks.renew("a", [cid, "cmp_none"], 60) == {cid} and await hooks.renew("b", [cid], 60) == set()

    # A lapsed lease is anyone's; the new holder's writes go through, the old holder's no longer.
    assert await hooks.take(cid, "a", 0.2)
    await asyncio.sleep(0.3)
    assert [t.campaign_id for t in await hooks.due("b")] == [cid]
    assert await hooks.take(cid, "b", 60)
    assert await hooks.renew("a", [cid], 60) == set()
    assert await hooks.dead(cid, 3, failures=4, error="HTTP 500", at=now, owner="b", seconds=60)
    assert await hooks.dead_events(cid) == [3] and (await delivery_row(store, cid))["dead"] == 1
    assert await hooks.due("a") == [] and await hooks.due("b") == []  # delivered through its last event

    await hooks.release("b")
    row = await delivery_row(store, cid)
    assert (row["lease_owner"], row["lease_until"]) == (None, None)
    assert await hooks.take(cid, "a", 60)
    await hooks.forget_previous_runs()  # frees every lease on SQLite only (one daemon per SQLite database)
    assert (await delivery_row(store, cid))["lease_owner"] == (None if store.dialect == "sqlite" else "a")


# ---- two daemons on one PostgreSQL database ----------------------------------------------------------


@dataclass
class Receiver:
    """Records each delivery with the daemon that sent it (its User-Agent); ``held`` agents hang."""

    delay: float = 0.0
    port: int = field(default_factory=free_port)
    got: list[tuple[int, str, float]] = field(default_factory=list)  # (event id, agent, monotonic time)
    held: dict[str, asyncio.Event] = field(default_factory=dict)
    runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        agent = request.headers["User-Agent"]
        self.got.append((int(request.headers["Dialerd-Event-Id"]), agent, time.monotonic()))
        if agent in self.held:
            await self.held[agent].wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.Response(status=204)

    def ids(self, agent: str | None = None) -> list[int]:
        return [i for i, a, _ in self.got if agent is None or a == agent]


@dataclass
class Daemon:
    """One daemon's part: its own engine and Store (its commits notify only its own delivery)."""

    name: str
    store: Store
    tasks: TaskOwner
    delivery: WebhookDelivery


async def start_daemon(url: str, name: str, lease: float, timeout: float = 5.0) -> Daemon:
    store = Store(create_engine(url))
    tasks = TaskOwner(name=name)
    delivery = WebhookDelivery(store.webhooks, tasks, allow_private=True, timeout=timeout, retry_for=3600,
                               lease_seconds=lease, owner=name, user_agent=name)
    store.publish = delivery.notify
    await delivery.start()
    return Daemon(name, store, tasks, delivery)


async def die(d: Daemon) -> None:
    """A kill -9, as the database sees it: the tasks end, the leases are not freed, no cursor is written."""
    await d.tasks.cancel_all(2.0)


async def stop(d: Daemon) -> None:
    await d.delivery.stop()
    await d.tasks.cancel_all(2.0)
    await d.store.close()


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    url = await _pg_create()
    engine = create_engine(url)
    await migrate(engine)
    await engine.dispose()
    try:
        yield url
    finally:
        await _pg_drop(url)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    app = web.Application()
    app.router.add_post("/hook", r.handle)
    r.runner = web.AppRunner(app, shutdown_timeout=0.1)
    await r.runner.setup()
    await web.TCPSite(r.runner, "127.0.0.1", r.port).start()
    try:
        yield r
    finally:
        for gate in r.held.values():
            gate.set()
        await r.runner.cleanup()


async def wait_for(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def cursor(store: Store, campaign_id: str) -> int:
    return int((await delivery_row(store, campaign_id))["delivered_through"])


def in_order_per_campaign(got: list[int], events: dict[str, list[int]]) -> bool:
    for ids in events.values():
        mine = set(ids)
        seen = [i for i in got if i in mine]
        if seen != sorted(seen):
            return False
    return True


async def test_on_sqlite_a_previous_runs_lease_is_freed_at_start(sqlite_url: str, receiver: Receiver) -> None:
    """One daemon per SQLite database: a lease found at start is a killed run's; delivery goes on at once
    rather than after the lapse (today's behaviour after a kill -9)."""
    engine = create_engine(sqlite_url)
    await migrate(engine)
    await engine.dispose()
    a = await start_daemon(sqlite_url, "A", lease=60.0)
    try:
        cid = await hooked_campaign(a.store, receiver.url)
        assert await a.store.webhooks.take(cid, "killed run", 60.0)
        ids = await add_events(a.store, cid, 3)
        await stop(a)
        a = await start_daemon(sqlite_url, "A again", lease=60.0)
        await wait_for(lambda: _at(a.store, cid, ids[-1]), "the restarted daemon to deliver", timeout=5)
        assert receiver.ids() == ids
    finally:
        await stop(a)


pg = pytest.mark.postgres


@pg
async def test_events_written_by_two_daemons_are_each_posted_exactly_once(pg_url: str, receiver: Receiver) -> None:
    a, b = await start_daemon(pg_url, "A", lease=2.0), await start_daemon(pg_url, "B", lease=2.0)
    try:
        campaigns = [await hooked_campaign(a.store, receiver.url) for _ in range(3)]
        await asyncio.gather(a.delivery.reload(campaigns[0]), b.delivery.reload(campaigns[1]))  # created on each

        async def write(d: Daemon, cid: str, rounds: int) -> list[int]:
            ids = []
            for _ in range(rounds):
                ids += await add_events(d.store, cid, 5)
                await asyncio.sleep(0.01)
            return ids

        written = await asyncio.gather(*(write(d, cid, 10) for cid in campaigns for d in (a, b)))
        events = {cid: sorted(written[2 * n] + written[2 * n + 1]) for n, cid in enumerate(campaigns)}
        every = sorted(i for ids in events.values() for i in ids)
        await wait_for(lambda: sorted(set(receiver.ids())) == every, "every event to arrive")
        for cid, ids in events.items():
            await wait_for(lambda cid=cid, last=ids[-1]: _at(a.store, cid, last), "the cursors to be written")
        assert len(every) == 300 and Counter(receiver.ids()).most_common(1)[0][1] == 1  # none twice
        assert in_order_per_campaign(receiver.ids(), events)
    finally:
        await stop(a)
        await stop(b)
    print(f"\ndelivered by A: {len(receiver.ids('A'))}, by B: {len(receiver.ids('B'))}")


async def _at(store: Store, campaign_id: str, through: int) -> bool:
    return await cursor(store, campaign_id) == through


@pg
async def test_a_dead_holders_campaign_is_taken_over_once_its_lease_lapses(pg_url: str, receiver: Receiver) -> None:
    lease = 1.5
    receiver.delay = 0.01
    a = await start_daemon(pg_url, "A", lease)
    b: Daemon | None = None
    try:
        cid = await hooked_campaign(a.store, receiver.url)
        await a.delivery.reload(cid)
        ids = await add_events(a.store, cid, 150)
        await wait_for(lambda: len(receiver.ids("A")) >= 60, "A to deliver a part")
        b = await start_daemon(pg_url, "B", lease)  # A holds the lease: B leaves the campaign alone
        await die(a)
        died = time.monotonic()
        persisted = await cursor(a.store, cid)
        await wait_for(lambda: set(receiver.ids()) == set(ids), "B to deliver the rest", timeout=30)
        await wait_for(lambda: _at(b.store, cid, ids[-1]), "B's cursor")

        from_b = receiver.ids("B")
        first_b = next(t for _, agent, t in receiver.got if agent == "B")
        twice = {i for i, n in Counter(receiver.ids()).items() if n > 1}
        sent_by_a = set(receiver.ids("A"))
        assert 0 < persisted < ids[-1] and from_b[0] == min(i for i in ids if i > persisted)
        assert from_b == sorted(from_b) and set(from_b) == {i for i in ids if i > persisted}
        # Sent twice: only what A delivered after its last cursor write (at most PERSIST_EVERY's worth).
        assert twice == {i for i in sent_by_a if i > persisted}
        assert lease / 3 < first_b - died < lease + lease / 3 + 1.0
        print(f"\ntakeover after {first_b - died:.2f} s; sent twice: {len(twice)} "
              f"(A's unpersisted window, at most {PERSIST_EVERY} s of deliveries)")
        await a.delivery.stop()  # a late stop of the dead one writes nothing over B's cursor or lease
        assert (await delivery_row(b.store, cid))["lease_owner"] == "B"
        assert await cursor(b.store, cid) == ids[-1]
    finally:
        await a.store.close()
        if b is not None:
            await stop(b)


@pg
async def test_a_holder_that_stops_hands_over_at_once_without_repeating(pg_url: str, receiver: Receiver) -> None:
    """The stop writes the cursor and frees the lease: the other daemon goes on within a keeper's tick (not
    after the lapse) from where the first stopped (repeating at most the POST the stop cut short)."""
    lease = 6.0
    receiver.delay = 0.01
    a, b = await start_daemon(pg_url, "A", lease), await start_daemon(pg_url, "B", lease)
    try:
        cid = await hooked_campaign(a.store, receiver.url)
        await a.delivery.reload(cid)
        ids = await add_events(a.store, cid, 100)
        await wait_for(lambda: len(receiver.ids("A")) >= 20, "A to deliver a part")
        await a.delivery.stop()
        stopped = time.monotonic()
        await wait_for(lambda: set(receiver.ids()) == set(ids), "B to deliver the rest")
        first_b = next(t for _, agent, t in receiver.got if agent == "B")
        assert first_b - stopped < lease / 3 + 1.0
        twice = [i for i, n in Counter(receiver.ids()).items() if n > 1]
        assert twice in ([], [receiver.ids("A")[-1]])  # only the POST in flight when A stopped, if any
        assert receiver.ids("B") == [i for i in ids if i >= receiver.ids("B")[0]]
        assert sorted(set(receiver.ids())) == ids
    finally:
        await stop(a)
        await stop(b)


@pg
async def test_a_slow_receiver_is_no_lapse(pg_url: str, receiver: Receiver) -> None:
    """A holder waiting on its receiver longer than the lease keeps it (the keeper renews it meanwhile)."""
    lease = 1.0
    a, b = await start_daemon(pg_url, "A", lease), await start_daemon(pg_url, "B", lease)
    try:
        cid = await hooked_campaign(a.store, receiver.url)
        await a.delivery.reload(cid)
        receiver.held["A"] = gate = asyncio.Event()
        ids = await add_events(a.store, cid, 3)
        await wait_for(lambda: receiver.ids("A") == ids[:1], "A's first try")
        await asyncio.sleep(2.5 * lease)
        gate.set()
        await wait_for(lambda: _at(a.store, cid, ids[-1]), "A to deliver everything")
        assert receiver.ids() == ids and receiver.ids("B") == []
    finally:
        await stop(a)
        await stop(b)


@pg
async def test_a_stalled_holder_finding_its_lease_taken_stops_delivering(pg_url: str, receiver: Receiver,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    lease = 1.5
    receiver.delay = 0.01
    a, b = await start_daemon(pg_url, "A", lease), await start_daemon(pg_url, "B", lease)
    try:
        cid = await hooked_campaign(a.store, receiver.url)
        await a.delivery.reload(cid)
        ids = await add_events(a.store, cid, 100)
        await wait_for(lambda: len(receiver.ids("A")) >= 20, "A to deliver a part")

        # A stalls: its POST in flight hangs and its lease keeper stops renewing (a SIGSTOP, a GC pause).
        stalled = asyncio.Event()
        receiver.held["A"] = stalled
        real_renew = a.store.webhooks.renew

        async def frozen(*args: Any) -> set[str]:
            await stalled.wait()
            return await real_renew(*args)

        monkeypatch.setattr(a.store.webhooks, "renew", frozen)
        stall_began = len(receiver.got)
        await wait_for(lambda: set(receiver.ids()) == set(ids), "B to take over and deliver the rest",
                       timeout=30)
        from_a_in_stall = [i for i, agent, _ in receiver.got[stall_began:] if agent == "A"]
        assert len(from_a_in_stall) == 1 and receiver.ids("B")  # A's one POST in flight, then B's
        stalled.set()  # A wakes up: its next renewal or cursor write finds the lease B's
        await wait_for(lambda: f"webhook:{cid}" not in a.tasks.names(), "A's worker to stop")
        await wait_for(lambda: _at(b.store, cid, ids[-1]), "B's cursor")
        await asyncio.sleep(lease / 2)
        assert [i for i, agent, _ in receiver.got[stall_began:] if agent == "A"] == from_a_in_stall
        assert (await delivery_row(b.store, cid))["lease_owner"] == "B" and await cursor(b.store, cid) == ids[-1]
        assert Counter(receiver.ids()).most_common(1)[0][1] <= 2
    finally:
        await stop(a)
        await stop(b)
