"""Several daemons on one PostgreSQL (issue 13): the shared claim's throughput for 1, 2 and 4 daemons, the
PostgreSQL server's CPU per claim, and a daemon's CPU per call on PostgreSQL against SQLite.

    .venv/bin/python -m bench.cluster [--seconds 8] [--contacts 20000] [--rate 30] [--calls 750]
                                      [--limit-s 420] [--pg postgresql+asyncpg://postgres@127.0.0.1:5432/postgres]

**Claims.** Each daemon is a separate OS process (multiprocessing, spawn) with its own engine and
``ClusterStore``, registered under its own node id, calling ``ClusterStore.claim`` in a loop for
``--seconds`` (a ``Hold`` is slept until ``hold.until`` as a runner does). The tenant's caps are unlimited
(concurrent_max and max_concurrent_calls 10,000,000, calls_per_minute 10,000,000: the pace holds are 6 us)
so the figure is the claim path's own. Two layouts: (a) every daemon on ONE campaign of one tenant (their
claims serialise on the tenant's row lock), (b) each daemon on its own tenant's campaign (the campaigns'
contacts interleaved in id order; see the history run for why). A daemon keeps at
most 300 attempts in flight (its PBX's calls up) by ending the oldest 50 in one UPDATE when it passes 350,
so the in-flight counts stay what a PBX at capacity gives. Every run starts on fresh campaigns; at the end
no contact may hold two attempts, and the attempts must be the claims counted. The PostgreSQL CPU is
utime+stime (/proc/PID/stat) of the backends serving the run's database (``pg_stat_activity``, this
process's own backend and autovacuum excluded) before and after; the shared background processes (WAL writer,
checkpointer, background writer) serve every database on the server, and are reported beside it only.

**Daemon CPU per call.** The real daemon as a subprocess (``bench.serve`` with the in-package fake PBX,
calls of ~0.2 s) dials ``--calls`` contacts at ``--rate`` calls/s once on SQLite and once on PostgreSQL
(where it registers and claims through the shared claim); its CPU seconds from start to the campaign's
last contact final, per 1,000 calls, and the ratio; on PostgreSQL also the CPU of its backends.
Completion is polled from the database (another process: not the daemon's CPU). Bounded by ``--limit-s``.

**History.** One daemon in this process claims from the oldest and the newest of 5 campaigns in one
table (after ANALYZE), with the candidate query's plan from EXPLAIN ANALYZE of the claim's own statement.

Measured 2026-12-04 19:45 UTC on the 2-CPU dev machine, load average 2.2 at the start (other sessions'
tests beside it; four runs before at load 5-9 gave the same CPU per claim, 30-60 % lower throughput and
ratios +-0.5). Every process shares the same 2 CPUs, so more daemons add no CPU here:

    claims, 8 s each          total/s  per daemon   x1    p50/p99 ms   PG CPU/claim  daemon CPU/claim
    one tenant,  1 daemon        111      111       1.00    8.0/17.5     2.22 ms        6.2 ms
    one tenant,  2 daemons       124     62/62      1.12   15.1/25.8     2.41 ms        6.8 ms
    one tenant,  4 daemons       109     24-29      0.98   23.5/76.4     2.72 ms        7.7 ms
    own tenants, 1 daemon        105      105       1.00    8.9/15.0     2.72 ms        6.2 ms
    own tenants, 2 daemons       208    104/105     1.99    8.5/19.5     2.63 ms        6.0 ms
    own tenants, 4 daemons       170     40-45      1.62   22.8/46.7     2.79 ms        7.9 ms
    (10 statements per claim; 0 contacts with two attempts in 6,626 claims)

    history: oldest of 5 campaigns x 20,000 contacts 86.0 claims/s, newest 38.0 (x0.44): Index Scan using
    contact_pkey, Rows Removed by Filter: 80200, 18.5 ms per candidate query

    daemon, 750 calls at 30/s   achieved   CPU per 1,000 calls   x SQLite   PG backends per 1,000 calls
    SQLite                        29.1          7.33 s             1.00
    PostgreSQL                    28.5         21.29 s             2.90          5.67 s

The figures and what they mean for 10 and 100 PBXs: docs/scale-out.md, "Measurements".
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import resource
import secrets
import statistics
import sys
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import event, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bench.daemon import DaemonProcess
from bench.fixtures import Client, add_campaign, add_tenant, many_numbers, sqlite_url
from bench.stats import cpu_seconds
from dialerd.domain.call import Skipped
from dialerd.domain.rules import Hold
from dialerd.store.db import create_engine, migrate
from dialerd.store.repo import T_CAMPAIGN, Store
from dialerd.timestamps import utcnow

PG_ADMIN = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
UNLIMITED = 10_000_000
IN_FLIGHT = 300  # a daemon's attempts in flight (its PBX's calls up)
END_BATCH = 50  # ended at once, in one transaction, when a daemon passes IN_FLIGHT + END_BATCH
ORIGINATE_BATCH = 10  # claimed attempts marked originated at once (the follower's write, batched)


# ---- databases ------------------------------------------------------------------------------------


def _db_url(admin: str, name: str) -> str:
    return admin.rsplit("/", 1)[0] + "/" + name


@asynccontextmanager
async def pg_database(admin: str, label: str) -> AsyncIterator[str]:
    """A fresh database ``clbench_LABEL_HEX``, migrated; dropped afterwards."""
    name = f"clbench_{label}_{secrets.token_hex(4)}"
    eng = create_async_engine(admin, isolation_level="AUTOCOMMIT")
    async with eng.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = _db_url(admin, name)
    try:
        engine = create_engine(url)
        await migrate(engine)
        await engine.dispose()
        yield url
    finally:
        async with eng.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await eng.dispose()


async def running_campaigns(store: Store, tenant_ids: list[str], contacts: int, name: str) -> list[str]:
    """One running campaign per tenant, each with ``contacts`` pending contacts, written in one
    INSERT ... SELECT with the campaigns' contacts interleaved in id order (so that no campaign's due
    contacts sit behind all of another's: that case is ``history_run``'s)."""
    cids = [await add_campaign(store, tid, [], name=f"{name} {i}", max_concurrent_calls=UNLIMITED)
            for i, tid in enumerate(tenant_ids)]
    async with store.write() as conn:
        await conn.execute(text(
            "INSERT INTO contact (campaign_id, line, phone_e164, raw_number, fields, status, attempts)"
            " SELECT (CAST(:cids AS text[]))[1 + g % :k], g / :k + 2, '+1' || (2000000000 + g)::text,"
            " '+1' || (2000000000 + g)::text, '{}', 'pending', 0 FROM generate_series(0, :n - 1) AS g"),
            {"cids": cids, "k": len(cids), "n": contacts * len(cids)})
        await conn.execute(update(T_CAMPAIGN).where(T_CAMPAIGN.c.id.in_(cids)).values(status="running"))
    return cids


async def running_campaign(store: Store, tenant_id: str, contacts: int, name: str) -> str:
    """A running campaign with ``contacts`` pending contacts (after any other campaign's in id order)."""
    return (await running_campaigns(store, [tenant_id], contacts, name))[0]


async def analyze(engine: AsyncEngine) -> None:
    """What autovacuum does within a minute of an import: the planner's statistics (see ``history_run``)."""
    async with engine.connect() as conn:
        await (await conn.execution_options(isolation_level="AUTOCOMMIT")).execute(text("ANALYZE"))


async def backend_pids(conn: Any, db: str) -> list[int]:
    rows = await conn.execute(text(
        "SELECT pid FROM pg_stat_activity WHERE datname = :db AND pid <> pg_backend_pid()"
        " AND backend_type = 'client backend'"), {"db": db})
    return [int(r[0]) for r in rows]


async def server_pids(conn: Any) -> list[int]:
    rows = await conn.execute(text("SELECT pid FROM pg_stat_activity WHERE backend_type <> 'client backend'"))
    return [int(r[0]) for r in rows]


def cpu_of(pids: list[int]) -> dict[int, float]:
    out = {}
    for pid in pids:
        with suppress(FileNotFoundError, ProcessLookupError, PermissionError):
            out[pid] = cpu_seconds(pid)
    return out


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU spent between the samples by the processes seen at either (a new one counts from 0)."""
    return sum(after.get(pid, before.get(pid, 0.0)) - before.get(pid, 0.0) for pid in set(before) | set(after))


# ---- one claiming daemon (a child process) ---------------------------------------------------------


async def _originated(store: Store, calls: list[tuple[int, int]]) -> None:
    """What the follower writes once the PBX took the call (here for several at once): the contact leaves
    ``pending``, so the next claims' candidate query no longer passes over it."""
    async with store.write() as conn:
        await conn.execute(text("UPDATE contact SET status = 'originated' WHERE id = ANY(:ids)"),
                           {"ids": [c for c, _ in calls]})
        await conn.execute(text("UPDATE attempt SET state = 'originated', originated_at = :now WHERE id = ANY(:ids)"),
                           {"ids": [a for _, a in calls], "now": utcnow()})


async def _ended(store: Store, calls: list[tuple[int, int]]) -> None:
    """The calls' ends (several at once): the attempts leave flight, the contacts are final."""
    async with store.write() as conn:
        await conn.execute(text("UPDATE contact SET status = 'completed' WHERE id = ANY(:ids)"),
                           {"ids": [c for c, _ in calls]})
        await conn.execute(text("UPDATE attempt SET state = 'ended', ended_at = :now, reason = 'completed'"
                                " WHERE id = ANY(:ids)"), {"ids": [a for _, a in calls], "now": utcnow()})


def _worker(url: str, node_id: str, campaign_id: str, seconds: float, sync: tuple[Any, Any, Any, Any]) -> None:
    """One claiming daemon: ``sync`` = (ready, go, out, release); its connections stay open until
    ``release``, so the parent can read its backends' CPU after the run."""
    asyncio.run(_claim_loop(url, node_id, campaign_id, seconds, *sync))


async def _claim_loop(url: str, node_id: str, campaign_id: str, seconds: float, ready: Any, go: Any, out: Any,
                      release: Any) -> None:
    engine = create_engine(url)
    statements = [0]

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _count(*_: Any) -> None:
        statements[0] += 1

    store = Store(engine)
    assert store.cluster is not None, "PostgreSQL gives the store its cluster part"
    cluster = store.cluster
    seat = await cluster.register(node_id, "bench", utcnow())
    campaign = await store.get_campaign(campaign_id)
    assert campaign is not None
    dialling: list[tuple[int, int]] = []  # (contact, attempt) claimed, not yet "originated"
    flight: deque[tuple[int, int]] = deque()
    claims, holds, skipped, ended_batches, exhausted = 0, 0, 0, 0, False
    latencies: list[float] = []
    per_second: list[int] = []
    ready.set()
    await asyncio.get_running_loop().run_in_executor(None, go.wait)
    rusage0 = resource.getrusage(resource.RUSAGE_SELF)
    statements0 = statements[0]
    claim_statements = 0
    started = time.perf_counter()
    deadline = started + seconds
    next_tick, in_tick = started + 1.0, 0
    while (now := time.perf_counter()) < deadline:
        if now >= next_tick:
            per_second.append(in_tick)
            next_tick, in_tick = next_tick + 1.0, 0
        before = statements[0]
        t0 = time.perf_counter()
        got = await cluster.claim(seat, campaign, utcnow(), name_channel=lambda c: f"b-{c.id}-{c.attempts + 1}",
                                  caller_id_for=lambda c: "+14155550199")
        if isinstance(got, tuple):
            latencies.append(time.perf_counter() - t0)
            claim_statements += statements[0] - before
            claims += 1
            in_tick += 1
            dialling.append((int(got[0].id or 0), int(got[1].id or 0)))
            if len(dialling) >= ORIGINATE_BATCH:  # the PBX took them: the follower's "originated"
                await _originated(store, dialling)
                flight.extend(dialling)
                dialling.clear()
            if len(flight) > IN_FLIGHT + END_BATCH:  # calls end: the oldest leave flight together
                await _ended(store, [flight.popleft() for _ in range(END_BATCH)])
                ended_batches += 1
        elif isinstance(got, Hold):
            holds += 1
            if got.until is not None:
                await asyncio.sleep(max(0.0, (got.until - utcnow()).total_seconds()))
        elif isinstance(got, Skipped):
            skipped += 1
        else:
            exhausted = True
            break
    wall = time.perf_counter() - started
    rusage1 = resource.getrusage(resource.RUSAGE_SELF)
    total_statements = statements[0] - statements0
    latencies.sort()
    out.put({
        "node": node_id, "claims": claims, "holds": holds, "skipped": skipped, "wall": wall,
        "exhausted": exhausted, "per_second": per_second,
        "cpu": (rusage1.ru_utime - rusage0.ru_utime) + (rusage1.ru_stime - rusage0.ru_stime),
        "p50": latencies[len(latencies) // 2] if latencies else 0.0,
        "p99": latencies[int(len(latencies) * 0.99)] if latencies else 0.0,
        "statements_per_claim": claim_statements / claims if claims else 0.0,
        "statements_total": total_statements, "ended_batches": ended_batches,
    })
    await asyncio.get_running_loop().run_in_executor(None, release.wait, 120.0)
    await store.close()


# ---- the claim runs --------------------------------------------------------------------------------


@dataclass
class ClaimRun:
    layout: str  # "one tenant" or "own tenants"
    daemons: int
    seconds: float
    workers: list[dict[str, Any]] = field(default_factory=list)
    pg_cpu: float = 0.0  # the run database's backends
    pg_shared_cpu: float = 0.0  # the server's background processes (every database's)
    attempts: int = 0
    doubled: int = 0

    @property
    def claims(self) -> int:
        return sum(int(w["claims"]) for w in self.workers)

    @property
    def total_per_s(self) -> float:
        return self.claims / max(max(float(w["wall"]) for w in self.workers), 1e-9)

    @property
    def per_daemon(self) -> list[float]:
        return [w["claims"] / max(w["wall"], 1e-9) for w in self.workers]

    @property
    def pg_ms_per_claim(self) -> float:
        return 1000 * self.pg_cpu / max(self.claims, 1)

    @property
    def client_ms_per_claim(self) -> float:
        return 1000 * sum(float(w["cpu"]) for w in self.workers) / max(self.claims, 1)

    def latency(self, key: str) -> float:
        return 1000 * max(float(w[key]) for w in self.workers)


async def claim_run(url: str, layout: str, daemons: int, seconds: float, contacts: int) -> ClaimRun:
    db = url.rsplit("/", 1)[1]
    engine = create_engine(url)
    store = Store(engine)
    tag = secrets.token_hex(3)
    cids: list[str] = []
    try:
        if layout == "one tenant":
            tid = f"ten_{tag}"
            await store.ensure_tenant(tid, tid, UNLIMITED, UNLIMITED, None)
            cid = await running_campaign(store, tid, contacts, f"claims {daemons}x one tenant")
            cids = [cid] * daemons
        else:
            tids = [f"ten_{tag}_{i}" for i in range(daemons)]
            for tid in tids:
                await store.ensure_tenant(tid, tid, UNLIMITED, UNLIMITED, None)
            cids = await running_campaigns(store, tids, contacts, f"claims {daemons}x own tenant")
        await analyze(engine)
        ctx = mp.get_context("spawn")
        ready = [ctx.Event() for _ in range(daemons)]
        go, release = ctx.Event(), ctx.Event()
        out = ctx.Queue()
        procs = [ctx.Process(target=_worker, args=(url, f"bench-{tag}-{i}", cids[i], seconds,
                                                   (ready[i], go, out, release)))
                 for i in range(daemons)]
        for p in procs:
            p.start()
        loop = asyncio.get_running_loop()
        for r in ready:
            if not await loop.run_in_executor(None, r.wait, 60.0):
                raise RuntimeError("a claiming daemon did not get ready within 60 s")
        async with engine.connect() as conn:
            pids, shared = await backend_pids(conn, db), await server_pids(conn)
        before, shared_before = cpu_of(pids), cpu_of(shared)
        go.set()
        results = [await loop.run_in_executor(None, out.get, True, seconds + 60.0) for _ in procs]
        after, shared_after = cpu_of(pids), cpu_of(shared)
        release.set()
        for p in procs:
            p.join(30)
        run = ClaimRun(layout, daemons, seconds, sorted(results, key=lambda r: r["node"]),
                       pg_cpu=cpu_delta(before, after), pg_shared_cpu=cpu_delta(shared_before, shared_after))
        async with engine.connect() as conn:
            unique = sorted(set(cids))
            run.attempts = int((await conn.execute(text(
                "SELECT count(*) FROM attempt WHERE campaign_id = ANY(:c)"), {"c": unique})).scalar_one())
            run.doubled = int((await conn.execute(text(
                "SELECT count(*) FROM (SELECT contact_id FROM attempt WHERE campaign_id = ANY(:c)"
                " GROUP BY contact_id HAVING count(*) > 1) AS d"), {"c": unique})).scalar_one())
        return run
    finally:
        await store.close()


# ---- the claim on a table holding other campaigns -------------------------------------------------

HISTORY_CAMPAIGNS = 5
HISTORY_CLAIMS = 200


async def history_run(url: str, contacts: int) -> dict[str, Any]:
    """One daemon (in this process) claiming from the oldest and from the newest of HISTORY_CAMPAIGNS
    campaigns after ANALYZE: whether the candidate query walks the other campaigns' contacts (the plan's
    rows removed by its filter, from EXPLAIN ANALYZE of the claim's own statement)."""
    engine = create_engine(url)
    store = Store(engine)
    captured: dict[str, Any] = {}

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _capture(_conn: Any, _cur: Any, statement: str, params: Any, *_: Any) -> None:
        if statement.startswith("SELECT contact.id"):
            captured["sql"], captured["params"] = statement, params

    try:
        await store.ensure_tenant("ten_history", "history", UNLIMITED, UNLIMITED, None)
        cids = [await running_campaign(store, "ten_history", contacts, f"history {i}") for i in range(HISTORY_CAMPAIGNS)]
        await analyze(engine)
        assert store.cluster is not None
        seat = await store.cluster.register("bench-history", "bench", utcnow())
        out: dict[str, Any] = {}
        for label, cid in (("oldest", cids[0]), ("newest", cids[-1])):
            campaign = await store.get_campaign(cid)
            assert campaign is not None
            dialling: list[tuple[int, int]] = []
            started = time.perf_counter()
            for _ in range(HISTORY_CLAIMS):
                got = await store.cluster.claim(seat, campaign, utcnow(), name_channel=lambda c: f"h-{c.id}",
                                                caller_id_for=lambda c: None)
                if isinstance(got, tuple):
                    dialling.append((int(got[0].id or 0), int(got[1].id or 0)))
                    if len(dialling) >= ORIGINATE_BATCH:
                        await _originated(store, dialling)
                        dialling.clear()
            out[label] = HISTORY_CLAIMS / (time.perf_counter() - started)
        raw = await engine.raw_connection()
        try:
            driver = raw.driver_connection
            assert driver is not None
            async with driver.transaction():
                plan = [r[0] for r in await driver.fetch("EXPLAIN (ANALYZE) " + captured["sql"], *captured["params"])]
        finally:
            raw.close()
        scan = next((line.strip() for line in plan if "Scan" in line and "contact" in line), "?")
        removed = next((line.strip() for line in plan if "Rows Removed by Filter" in line), "no rows removed")
        took = next((line.strip() for line in plan if line.startswith("Execution Time")), "")
        out["plan"] = f"{scan.split('(')[0].strip(' ->')}; {removed}; {took}"
        return out
    finally:
        await store.close()


# ---- the daemon's CPU per call ---------------------------------------------------------------------


class Reader:
    """What the daemon wrote, read from this process (SQLite or PostgreSQL)."""

    def __init__(self, url: str) -> None:
        self.engine: AsyncEngine = create_async_engine(url)

    async def scalar(self, sql: str, **params: Any) -> Any:
        async with self.engine.connect() as conn:
            return (await conn.execute(text(sql), params)).scalar_one()

    async def unfinished(self, cid: str) -> int:
        return int(await self.scalar("SELECT COUNT(*) FROM contact WHERE campaign_id = :c AND status IN"
                                     " ('pending', 'originated', 'connected')", c=cid))

    async def attempt_times(self, cid: str) -> list[datetime]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(text("SELECT created_at FROM attempt WHERE campaign_id = :c"), {"c": cid})
            out = []
            for (value,) in rows:
                out.append(value if isinstance(value, datetime) else datetime.fromisoformat(value))
            return sorted(out)

    async def doubled(self, cid: str) -> int:
        return int(await self.scalar("SELECT COUNT(*) FROM (SELECT contact_id FROM attempt WHERE campaign_id = :c"
                                     " GROUP BY contact_id HAVING COUNT(*) > 1) AS d", c=cid))

    async def close(self) -> None:
        await self.engine.dispose()


async def _until_final(reader: Reader, cid: str, deadline: float) -> None:
    """Poll (another process's reads: not the daemon's CPU) until no contact of ``cid`` is unfinished."""
    for _ in range(1_000_000):
        if time.monotonic() >= deadline or not await reader.unfinished(cid):
            return
        await asyncio.sleep(0.25)


@dataclass
class DaemonRun:
    backend: str
    calls: int
    cpu: float  # the daemon's, start -> last contact final
    wall: float
    rate: float  # achieved, from the attempts' created_at
    doubled: int
    pg_cpu: float | None = None  # its PostgreSQL backends'

    @property
    def ms_per_call(self) -> float:
        return 1000 * self.cpu / max(self.calls, 1)


async def daemon_run(backend: str, url: str, workdir: Path, rate: int, calls: int, deadline: float) -> DaemonRun:
    engine = create_engine(url)
    await migrate(engine)
    store = Store(engine)
    try:
        tid, key = await add_tenant(store, f"cpu {backend}", concurrent_max=500, calls_per_minute=rate * 60)
        cid = await add_campaign(store, tid, many_numbers(calls), name=f"cpu per call {backend}",
                                 max_concurrent_calls=100)
    finally:
        await store.close()
    env = {"DIALERD_DATABASE_URL": url, "DIALERD_PBX_DRIVER": "fake", "DIALERD_LOG_LEVEL": "warning",
           "DIALERD_SHUTDOWN_GRACE_PERIOD": "1", "DIALERD_CLUSTER_NODE_ID": f"bench-cpu-{backend}"}
    daemon = DaemonProcess(env, workdir, fake_scale=0.2, sample=False)
    reader = Reader(url)
    pg_before: dict[int, float] = {}
    pids: list[int] = []
    try:
        await daemon.start()
        if backend == "postgresql":
            async with reader.engine.connect() as conn:
                pids = await backend_pids(conn, url.rsplit("/", 1)[1])
        async with aiohttp.ClientSession() as session:
            cpu0, t0 = daemon.cpu(), time.perf_counter()
            pg_before = cpu_of(pids)
            await Client(daemon.base, key, session).action(cid, "start")
            await _until_final(reader, cid, deadline)
            cpu, wall = daemon.cpu() - cpu0, time.perf_counter() - t0
            pg_cpu = None
            if backend == "postgresql":
                async with reader.engine.connect() as conn:
                    pids = sorted(set(pids) | set(await backend_pids(conn, url.rsplit("/", 1)[1])))
                # the reader's own backend polls too: drop the pid that served this very query
                async with reader.engine.connect() as conn:
                    mine = int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())
                pg_cpu = cpu_delta({p: c for p, c in pg_before.items() if p != mine},
                                   {p: c for p, c in cpu_of(pids).items() if p != mine})
        times = await reader.attempt_times(cid)
        achieved = (len(times) - 1) / max((times[-1] - times[0]).total_seconds(), 1e-9) if len(times) > 1 else 0.0
        return DaemonRun(backend, len(times), cpu, wall, achieved, await reader.doubled(cid), pg_cpu)
    finally:
        await reader.close()
        await daemon.stop()


# ---- the report ------------------------------------------------------------------------------------


def claims_table(runs: list[ClaimRun]) -> str:
    base = {r.layout: r.total_per_s for r in runs if r.daemons == 1}
    lines = [
        "| layout | daemons | claims/s total | per daemon | x 1 daemon | claim p50 / p99 ms | PG backend CPU ms"
        " per claim | claims/s per PG core | daemon-side CPU ms per claim | statements per claim | double attempts |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        per = " / ".join(f"{x:,.0f}" for x in r.per_daemon)
        core = 1000 / r.pg_ms_per_claim if r.pg_ms_per_claim else 0.0
        stmts = statistics.mean(w["statements_per_claim"] for w in r.workers)
        lines.append(
            f"| {r.layout} | {r.daemons} | {r.total_per_s:,.0f} | {per} | {r.total_per_s / base[r.layout]:.2f} |"
            f" {r.latency('p50'):.1f} / {r.latency('p99'):.1f} | {r.pg_ms_per_claim:.2f} | {core:,.0f} |"
            f" {r.client_ms_per_claim:.2f} | {stmts:.1f} | {r.doubled} of {r.attempts:,} attempts"
            f" ({r.claims:,} claims) |")
    return "\n".join(lines)


def daemon_table(runs: list[DaemonRun]) -> str:
    by = {r.backend: r for r in runs}
    lines = ["| backend | calls | achieved calls/s | daemon CPU s per 1,000 calls | x SQLite | PG backend CPU s"
             " per 1,000 calls | double attempts |", "|---|---|---|---|---|---|---|"]
    for r in runs:
        ratio = r.ms_per_call / by["sqlite"].ms_per_call if "sqlite" in by and by["sqlite"].ms_per_call else 0.0
        pg = "" if r.pg_cpu is None else f"{1000 * r.pg_cpu / max(r.calls, 1):.2f}"
        lines.append(f"| {r.backend} | {r.calls} | {r.rate:.1f} | {r.ms_per_call:.2f} | {ratio:.2f} | {pg} |"
                     f" {r.doubled} |")
    return "\n".join(lines)


async def run(args: argparse.Namespace, workdir: Path) -> tuple[list[ClaimRun], dict[str, Any], list[DaemonRun]]:
    deadline = time.monotonic() + args.limit_s
    claims: list[ClaimRun] = []
    for layout in ("one tenant", "own tenants"):
        for n in (1, 2, 4):
            if time.monotonic() + args.seconds + 60 > deadline:
                print(f"skipped {layout} x{n}: --limit-s", file=sys.stderr)
                continue
            async with pg_database(args.pg, "claims") as url:  # its own: no other campaign's rows
                r = await claim_run(url, layout, n, args.seconds, args.contacts)
            claims.append(r)
            print(f"claims {layout} x{n}: {r.total_per_s:,.0f}/s, PG {r.pg_ms_per_claim:.2f} ms/claim, "
                  f"per second {[w['per_second'] for w in r.workers]}", file=sys.stderr)
    async with pg_database(args.pg, "history") as url:
        history = await history_run(url, args.contacts)
    daemons: list[DaemonRun] = []
    load = os.getloadavg()
    print(f"load average before the daemon runs: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", file=sys.stderr)
    daemons.append(await daemon_run("sqlite", sqlite_url(workdir / "cpu.db"), workdir, args.rate, args.calls,
                                    deadline))
    async with pg_database(args.pg, "daemon") as url:
        daemons.append(await daemon_run("postgresql", url, workdir, args.rate, args.calls, deadline))
    return claims, history, daemons


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="each claim run's length")
    parser.add_argument("--contacts", type=int, default=20_000, help="contacts per claim campaign")
    parser.add_argument("--rate", type=int, default=30, help="the daemon runs' calls per second")
    parser.add_argument("--calls", type=int, default=750, help="calls per daemon run")
    parser.add_argument("--limit-s", type=float, default=420.0)
    parser.add_argument("--pg", default=os.environ.get("DIALERD_BENCH_PG_URL", PG_ADMIN), help="an admin URL")
    args = parser.parse_args(argv)
    load = os.getloadavg()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dialerd-bench-cluster-") as tmp:
        claims, history, daemons = asyncio.run(run(args, Path(tmp)))
    print(f"machine: {os.cpu_count()} CPUs; load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f};"
          f" {time.monotonic() - started:.0f} s")
    print(f"\nclaims on PostgreSQL, {args.seconds:g} s per run, caps unlimited "
          f"(each daemon keeps {IN_FLIGHT} attempts in flight):\n")
    print(claims_table(claims))
    shared = sum(r.pg_shared_cpu for r in claims)
    print(f"\nPostgreSQL's background processes (every database's, so partly other sessions'): {shared:.2f} s CPU "
          f"over the claim runs ({1000 * shared / max(sum(r.claims for r in claims), 1):.3f} ms per claim)")
    print(f"\nhistory: one daemon, {HISTORY_CAMPAIGNS} campaigns of {args.contacts:,} contacts in the table, "
          f"{HISTORY_CLAIMS} claims each from the oldest and the newest (after ANALYZE):\n"
          f"  oldest campaign {history['oldest']:6.1f} claims/s\n"
          f"  newest campaign {history['newest']:6.1f} claims/s  x{history['newest'] / history['oldest']:.2f}; "
          f"its candidate query: {history['plan']}")
    print(f"\ndaemon CPU per call ({args.calls} calls at {args.rate}/s, fake PBX, calls ~0.2 s):\n")
    print(daemon_table(daemons))
    bad = sum(r.doubled for r in claims) + sum(r.doubled for r in daemons)
    short = [r for r in claims if r.attempts != r.claims]
    if bad or short:
        print(f"\nFAILED: {bad} contacts with two attempts; runs whose attempts are not their claims: "
              f"{[(r.layout, r.daemons) for r in short]}")
        return 1
    print("\nno contact got two attempts; every run's attempts are its claims")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
