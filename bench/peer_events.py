"""What the multi-daemon event path costs on PostgreSQL (issue 13, item 5), in one process.

1. One event-writing transaction, sequential: plain, + the campaign's event lock, + pg_notify.
2. Concurrent writers (one Store each, as daemons are), each on its own campaign: transactions per second
   with and without pg_notify (PostgreSQL serialises the commits of notifying transactions).
3. Commit -> the hub's publish: this daemon's own commit (read at once), another daemon's (its notice,
   then the read).

    .venv/bin/python -m bench.peer_events [postgresql+asyncpg://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import sys
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from dialerd.services.events import EventHub
from dialerd.services.peers import PeerEvents
from dialerd.store.base import Transactions
from dialerd.store.db import create_engine, migrate
from dialerd.store.listen import EventListener, asyncpg_dsn
from dialerd.store.repo import Store
from dialerd.store.tables import Campaign
from dialerd.tasks import TaskOwner


async def _campaign(store: Store, tenant_id: str) -> str:
    now = datetime.now(UTC)
    c = Campaign(id="c_" + secrets.token_hex(6), tenant_id=tenant_id, name="bench", status="running",
                 caller_id="+14155550199", destination="x", default_region="US", max_concurrent_calls=5,
                 retries_per_contact=0, retry_delay_seconds=300, ring_timeout_seconds=30, import_report={},
                 created_by="bench", created_at=now, updated_at=now)
    await store.insert_campaign(c)
    return c.id


async def _write(store: Store, campaign_id: str) -> None:
    async with store.write() as conn:
        await store.tx.event(conn, campaign_id, "probe", {"at": "x"}, datetime.now(UTC))


async def _no_lock(self: Transactions, conn: Any, campaign_id: str) -> None:
    return None


async def run(admin_url: str) -> None:
    name = "notify_bench_" + secrets.token_hex(4)
    admin = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin_url.rsplit("/", 1)[0] + "/" + name
    stores: list[Store] = []
    try:
        for _ in range(4):
            engine = create_engine(url)
            await migrate(engine)
            stores.append(Store(engine))
        tenant = await stores[0].upsert_tenant("t_bench", "bench", 10, 60, defaults=(10, 60))
        campaigns = [await _campaign(stores[0], tenant.id) for _ in range(4)]

        # 1. sequential transactions
        real_lock = Transactions.event_lock
        for label, lock, notify in (("plain", False, False), ("+ lock", True, False), ("+ lock + notify", True, True)):
            Transactions.event_lock = real_lock if lock else _no_lock  # type: ignore[method-assign]
            stores[0].tx._notify = notify  # noqa: SLF001 (a bench toggling the store's own switch)
            for _ in range(200):
                await _write(stores[0], campaigns[0])
            times = []
            for _ in range(2000):
                t = time.perf_counter()
                await _write(stores[0], campaigns[0])
                times.append(time.perf_counter() - t)
            print(f"1. one transaction, {label:16s}: median {statistics.median(times) * 1e6:6.0f} us")
        Transactions.event_lock = real_lock  # type: ignore[method-assign]

        # 2. concurrent writers, a campaign each
        for notify in (False, True):
            for s in stores:
                s.tx._notify = notify  # noqa: SLF001
            count = 0
            stop = time.perf_counter() + 3.0

            async def loop(s: Store, c: str, stop: float) -> None:
                nonlocal count
                while time.perf_counter() < stop:
                    await _write(s, c)
                    count += 1

            await asyncio.gather(*(loop(s, c, stop) for s, c in zip(stores, campaigns, strict=True)))
            print(f"2. 4 writers, notify={notify!s:5}: {count / 3.0:7.0f} transactions/s")
        for s in stores:
            s.tx._notify = True  # noqa: SLF001

        # 3. commit -> publish, own and remote
        hub = EventHub()
        sub = hub.subscribe(campaigns[0])
        tasks = TaskOwner(on_crash=lambda _n, _e: None)
        published: dict[int, float] = {}
        arrived = asyncio.Event()
        real_publish = hub.publish

        def publish(events: Any) -> None:
            events = list(events)
            for ev in events:
                published[ev.id] = time.perf_counter()
            arrived.set()
            real_publish(events)

        hub.publish = publish  # type: ignore[method-assign]
        peers = PeerEvents(hub, stores[0].events_after, tasks, writer=stores[0].tx.writer)
        stores[0].publish = peers.committed
        listener = EventListener(asyncpg_dsn(stores[0].engine.url), peers.notice, peers.reconnected)
        listening = tasks.spawn("listen", listener.run(), critical=True)
        await listener.connected.wait()
        for label, writer in (("own", stores[0]), ("remote", stores[1])):
            lat = []
            for _ in range(300):
                async with writer.write() as conn:
                    ev = await writer.tx.event(conn, campaigns[0], "probe", {}, datetime.now(UTC))
                committed = time.perf_counter()
                while ev.id not in published:
                    await arrived.wait()
                    arrived.clear()
                lat.append(published[ev.id] - committed)
                sub.take()
            lat.sort()
            print(f"3. commit -> hub, {label:6s}: median {statistics.median(lat) * 1e3:.2f} ms, "
                  f"p95 {lat[int(0.95 * len(lat))] * 1e3:.2f} ms (reads {peers.reads})")
        listening.cancel()
        await tasks.cancel_all(2.0)
    finally:
        for s in stores:
            await s.close()
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


if __name__ == "__main__":
    asyncio.run(run(sys.argv[1] if len(sys.argv) > 1 else "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"))
