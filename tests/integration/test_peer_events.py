"""Several daemons on one PostgreSQL database (issue 13, item 5): each daemon's SSE stream carries every
daemon's events with the same ids, in id order, with Last-Event-ID resume; a pause on one stops the
others' dialling; a lost LISTEN connection loses no event. Daemons are subprocesses on the fake PBX."""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select, text

from dialerd.client.sse import SseDecoder
from dialerd.store.base import T_ATTEMPT, T_EVENT, Transactions
from dialerd.store.db import create_engine, migrate
from dialerd.store.repo import Store
from tests.daemon_proc import DaemonProc, create_key, multipart
from tests.integration.test_store import make_campaign, make_tenant

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(90)]


def fake_env(db_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIALERD_")}
    env.update({"DIALERD_DATABASE_URL": db_url, "DIALERD_PBX_DRIVER": "fake", "DIALERD_LOG_LEVEL": "info",
                "PYTHONUNBUFFERED": "1"})
    return env


@pytest.fixture
async def pair(pg_url: str, tmp_path: Path) -> AsyncIterator[tuple[DaemonProc, DaemonProc, str]]:
    """Daemon A (which dials) and daemon B, on one database, and an API key (valid on both)."""
    env = fake_env(pg_url)
    engine = create_engine(pg_url)
    await migrate(engine)
    await engine.dispose()
    key = await asyncio.to_thread(create_key, env, "acme", 20, 1200)  # 20 calls per second at most
    a, b = DaemonProc(env, tmp_path / "a.log"), DaemonProc(env, tmp_path / "b.log")
    try:
        await asyncio.gather(asyncio.to_thread(b.start), asyncio.to_thread(a.start))
        yield a, b, key
    finally:
        for d in (a, b):
            await asyncio.to_thread(d.kill)


def csv_of(count: int) -> str:
    # 00-29 answer (2 s, scaled by the fake PBX to 2 ms), 40 busy, 60 congestion: every call ends at once.
    endings = ["00", "12", "40", "60", "25"]
    return "phone\n" + "".join(f"+1415555{i:02d}{endings[i % len(endings)]}\n" for i in range(count))


def create_campaign(d: DaemonProc, key: str, count: int) -> str:
    body, ctype = multipart({"name": "peers", "caller_id": "+14155550100", "max_concurrent_calls": "5"},
                            csv_of(count))
    status, created = d.request("POST", "/api/v1/campaigns", key, body, {"Content-Type": ctype})
    assert status == 201, created
    return str(created["id"])


@dataclass
class Stream:
    """An SSE client's named events: (id, kind, data, wall time received)."""

    events: list[tuple[int, str, dict[str, Any], float]] = field(default_factory=list)
    opened: asyncio.Event = field(default_factory=asyncio.Event)
    ended: bool = False


async def follow(session: aiohttp.ClientSession, d: DaemonProc, key: str, campaign_id: str, stream: Stream,
                 last_event_id: int | None = None) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    decoder = SseDecoder()
    async with session.get(f"{d.base}/api/v1/campaigns/{campaign_id}/events", headers=headers) as resp:
        assert resp.status == 200
        stream.opened.set()
        async for chunk in resp.content.iter_any():
            now = time.time()
            for frame in decoder.feed(chunk):
                if frame.event is None:  # a snapshot
                    continue
                assert frame.id is not None
                stream.events.append((int(frame.id), frame.event, json.loads(frame.data), now))
                if frame.event == "end":
                    stream.ended = True
                    return


async def table_ids(db_url: str, campaign_id: str) -> list[int]:
    engine = create_engine(db_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(select(T_EVENT.c.id).where(T_EVENT.c.campaign_id == campaign_id)
                                      .order_by(T_EVENT.c.id))
            return [int(r[0]) for r in rows]
    finally:
        await engine.dispose()


async def until(check: Callable[[], Awaitable[bool]], within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "not within the time"
        await asyncio.sleep(0.01)


def latencies(stream: Stream) -> list[float]:
    """Seconds from each call event's ``at`` (the writer's clock, in its transaction) to its frame here."""
    out = []
    for _id, kind, data, received in stream.events:
        if kind != "end" and "at" in data and "contact_id" in data:
            at = datetime.fromisoformat(data["at"].replace("Z", "+00:00")).astimezone(UTC)
            out.append(received - at.timestamp())
    return out


async def _true(value: bool) -> bool:
    return value


def report(name: str, values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[int(0.95 * (len(ordered) - 1))]
    return (f"{name}: n={len(values)} median={statistics.median(values) * 1000:.1f} ms "
            f"p95={p95 * 1000:.1f} ms max={ordered[-1] * 1000:.1f} ms")


async def test_a_stream_on_b_carries_what_a_dials_with_the_same_ids_in_order_and_resumes(
    pair: tuple[DaemonProc, DaemonProc, str], pg_url: str,
) -> None:
    a, b, key = pair
    campaign_id = await asyncio.to_thread(create_campaign, a, key, 60)
    live_b, live_a, resumed = Stream(), Stream(), Stream()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        tasks = [asyncio.create_task(follow(session, b, key, campaign_id, live_b)),
                 asyncio.create_task(follow(session, a, key, campaign_id, live_a))]
        await asyncio.wait_for(asyncio.gather(live_b.opened.wait(), live_a.opened.wait()), 10)
        status, _ = await asyncio.to_thread(a.request, "POST", f"/api/v1/campaigns/{campaign_id}/start", key)
        assert status == 200
        # A second client on B, mid-run, resuming after the 10th event B's first client had.
        await until(lambda: _true(len(live_b.events) >= 20))
        middle = live_b.events[9][0]
        tasks.append(asyncio.create_task(follow(session, b, key, campaign_id, resumed, last_event_id=middle)))
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
    ids = await table_ids(pg_url, campaign_id)
    got = [e[0] for e in live_b.events]
    assert live_b.ended and got == [i for i in ids if i > ids[0] - 1][-len(got):]
    assert got == ids[len(ids) - len(got):] and len(got) >= 60 * 2  # every call's events, then the end
    assert live_b.events[-1][1] == "end" and resumed.events[-1][1] == "end"
    assert [e[0] for e in resumed.events] == [i for i in ids if i > middle]
    assert [e[0] for e in live_a.events] == got  # the dialling daemon's own stream: the same
    print("\n" + report("A -> stream on B", latencies(live_b)) + "\n" + report("A -> stream on A", latencies(live_a)),
          file=sys.stderr)


async def test_a_pause_on_b_stops_the_dialling_on_a_within_a_second(
    pair: tuple[DaemonProc, DaemonProc, str], pg_url: str,
) -> None:
    a, b, key = pair
    campaign_id = await asyncio.to_thread(create_campaign, a, key, 400)  # 20 s of dialling at 20/s
    status, _ = await asyncio.to_thread(a.request, "POST", f"/api/v1/campaigns/{campaign_id}/start", key)
    assert status == 200
    engine = create_engine(pg_url)
    try:
        async def attempts() -> tuple[int, datetime | None]:
            async with engine.connect() as conn:
                row = (await conn.execute(select(func.count(), func.max(T_ATTEMPT.c.created_at))
                                          .where(T_ATTEMPT.c.campaign_id == campaign_id))).one()
            return int(row[0]), row[1]

        async def dialling() -> bool:
            return (await attempts())[0] >= 20

        await until(dialling)
        paused_at = time.time()
        status, body = await asyncio.to_thread(b.request, "POST", f"/api/v1/campaigns/{campaign_id}/pause", key)
        assert status == 200, body
        answered_at = time.time()
        # Nothing new for 2 s (two of A's re-reads), then the last attempt's time is final.
        count, last = await attempts()
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < 2.0:
            await asyncio.sleep(0.1)
            now_count, last = await attempts()
            if now_count != count:
                count, quiet_since = now_count, time.monotonic()
        assert last is not None
        lag = last.replace(tzinfo=UTC).timestamp() - answered_at if last.tzinfo is None else \
            last.timestamp() - answered_at
        print(f"\npause on B answered in {(answered_at - paused_at) * 1000:.0f} ms; A's last attempt "
              f"{lag * 1000:.0f} ms after the answer; {count} attempts", file=sys.stderr)
        assert lag < 1.0
        status, body = await asyncio.to_thread(a.request, "GET", f"/api/v1/campaigns/{campaign_id}", key)
        assert status == 200 and body["status"] == "paused"
    finally:
        await engine.dispose()


async def test_a_listen_connection_cut_loses_no_event_on_b(
    pair: tuple[DaemonProc, DaemonProc, str], pg_url: str,
) -> None:
    a, b, key = pair
    campaign_id = await asyncio.to_thread(create_campaign, a, key, 80)
    live_b = Stream()
    admin = create_engine(pg_url)
    assert b.proc is not None
    name = f"dialerd-listen {b.proc.pid}"

    async def listener_pid() -> int | None:
        async with admin.connect() as conn:
            return (await conn.execute(text("SELECT pid FROM pg_stat_activity WHERE application_name = :n"),
                                       {"n": name})).scalar_one_or_none()

    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            task = asyncio.create_task(follow(session, b, key, campaign_id, live_b))
            await asyncio.wait_for(live_b.opened.wait(), 10)
            status, _ = await asyncio.to_thread(a.request, "POST", f"/api/v1/campaigns/{campaign_id}/start", key)
            assert status == 200
            cuts = 0
            for seen in (10, 60, 110):  # three cuts, while A goes on writing
                await until(lambda n=seen: _true(len(live_b.events) >= n or task.done()))
                pid = await listener_pid()
                assert pid is not None
                async with admin.connect() as conn:
                    assert (await conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})).scalar_one()
                cuts += 1
                # It comes back under a new server process.
                deadline = time.monotonic() + 10
                while (await listener_pid()) in (None, pid):
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.02)
            await asyncio.wait_for(task, 60)
    finally:
        await admin.dispose()
    ids = await table_ids(pg_url, campaign_id)
    got = [e[0] for e in live_b.events]
    assert live_b.ended and got == ids[len(ids) - len(got):] and len(got) >= 160
    assert b.log_path.read_text().count("event listener connected") >= 1 + cuts
    assert (await asyncio.to_thread(b.wait_health))["database"]["listening"] is True


# ---- the event lock, with two engines (two processes' worth of connections and write locks) -----------

async def _writer(store: Store, campaign_id: str, count: int, rng: random.Random) -> None:
    for i in range(count):
        async with store.write() as conn:
            await store.tx.event(conn, campaign_id, "probe", {"i": i}, datetime.now(UTC))
            await asyncio.sleep(rng.random() * 0.004)  # the id is drawn; the commit comes a little later


async def _tail(store: Store, campaign_id: str, stop: asyncio.Event) -> tuple[list[int], list[int]]:
    """Read after the last id seen, as a stream and its Last-Event-ID resume do: what it saw, and
    the ids lower than one it had already seen (which such a reader never gets)."""
    seen: list[int] = []
    behind: list[int] = []
    mark = 0
    while True:
        done = stop.is_set()
        async with store.engine.connect() as conn:
            rows = (await conn.execute(select(T_EVENT.c.id).where(T_EVENT.c.campaign_id == campaign_id)
                                       .order_by(T_EVENT.c.id))).scalars().all()
        for i in rows:
            if i > mark:
                seen.append(i)
                mark = i
            elif i not in seen:
                behind.append(i)
        if done:
            return seen, behind
        await asyncio.sleep(0.001)


async def _race(pg_url: str) -> tuple[list[int], list[int]]:
    stores = []
    for _ in range(2):
        engine = create_engine(pg_url)
        await migrate(engine)
        stores.append(Store(engine))
    try:
        campaign_id = await make_campaign(stores[0], await make_tenant(stores[0]))
        stop = asyncio.Event()
        tail = asyncio.create_task(_tail(stores[0], campaign_id, stop))
        await asyncio.gather(*(_writer(s, campaign_id, 60, random.Random(n)) for n, s in enumerate(stores)))
        stop.set()
        return await tail
    finally:
        for s in stores:
            await s.close()


async def test_two_writers_commit_a_campaigns_events_in_id_order(pg_url: str) -> None:
    seen, behind = await _race(pg_url)
    assert behind == [] and len(seen) == 120


async def test_without_the_event_lock_a_reader_skips_ids(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The test above can fail: without the lock, ids commit out of order and the reader passes some."""

    async def no_lock(self: Transactions, conn: Any, campaign_id: str) -> None:
        return None

    monkeypatch.setattr(Transactions, "event_lock", no_lock)
    seen, behind = await _race(pg_url)
    assert behind != []


async def test_both_daemons_writing_one_campaign_give_both_streams_the_same_ids_in_order(
    pair: tuple[DaemonProc, DaemonProc, str], pg_url: str,
) -> None:
    """Pauses and resumes on B and on A in turn: each resume's daemon dials (the other's runner halted at
    the pause's notice), so both write the campaign's events, and each stream has every one, in order."""
    a, b, key = pair
    campaign_id = await asyncio.to_thread(create_campaign, a, key, 60)
    on_a, on_b = Stream(), Stream()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        tasks = [asyncio.create_task(follow(session, d, key, campaign_id, s)) for d, s in ((a, on_a), (b, on_b))]
        await asyncio.wait_for(asyncio.gather(on_a.opened.wait(), on_b.opened.wait()), 10)
        status, _ = await asyncio.to_thread(a.request, "POST", f"/api/v1/campaigns/{campaign_id}/start", key)
        assert status == 200
        for turn, d in enumerate((b, a, b, a)):
            await until(lambda n=turn: _true(len(on_b.events) >= 20 * (n + 1) or tasks[1].done()))
            if tasks[1].done():
                break
            status, body = await asyncio.to_thread(d.request, "POST", f"/api/v1/campaigns/{campaign_id}/pause", key)
            assert status == 200, body
            status, body = await asyncio.to_thread(d.request, "POST", f"/api/v1/campaigns/{campaign_id}/resume",
                                                   key)
            assert status == 200, body
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
    ids = await table_ids(pg_url, campaign_id)
    got_b = [e[0] for e in on_b.events]
    assert on_b.ended and [e[0] for e in on_a.events] == got_b == ids[len(ids) - len(got_b):]


async def _stopper(store: Store, campaign_id: str, count: int, rng: random.Random) -> None:
    """As a stop or a call's last transition: the campaign row first, then (a little later) the event."""
    for i in range(count):
        async with store.write() as conn:
            await store.tx.lock_campaign(conn, campaign_id=campaign_id)
            await asyncio.sleep(rng.random() * 0.003)
            await store.tx.event(conn, campaign_id, "probe", {"i": i}, datetime.now(UTC))


async def _lock_race(pg_url: str) -> None:
    stores = []
    for _ in range(2):
        engine = create_engine(pg_url)
        await migrate(engine)
        stores.append(Store(engine))
    try:
        campaign_id = await make_campaign(stores[0], await make_tenant(stores[0]))
        await asyncio.wait_for(asyncio.gather(_stopper(stores[0], campaign_id, 80, random.Random(1)),
                                              _writer(stores[1], campaign_id, 80, random.Random(2))), 40)
    finally:
        for s in stores:
            await s.close()


async def test_the_event_lock_and_the_campaign_row_lock_do_not_deadlock(pg_url: str) -> None:
    await _lock_race(pg_url)


async def test_with_the_row_lock_for_update_they_would(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Why lock_campaign is FOR NO KEY UPDATE: with FOR UPDATE, a writer holding the event lock waits at its
    insert (the foreign key's FOR KEY SHARE) for a lock_campaign holder that waits for the event lock."""
    from dialerd.errors import StoreError
    from dialerd.store.base import T_CAMPAIGN

    async def for_update(self: Transactions, conn: Any, *, campaign_id: Any) -> str | None:
        row = (await conn.execute(select(T_CAMPAIGN.c.status).where(T_CAMPAIGN.c.id == campaign_id)
                                  .with_for_update())).first()
        return None if row is None else str(row.status)

    monkeypatch.setattr(Transactions, "lock_campaign", for_update)
    with pytest.raises(StoreError) as raised:  # PostgreSQL's deadlock detector aborts one of them
        await _lock_race(pg_url)
    assert "deadlock" in repr(raised.value.__cause__).lower()
