"""Section 1b: the database work of one call, in-process, against its floor.

One call's database work as the dispatcher does it (``Store`` methods, in this order): the runner's due
contact query, the attempt written before the originate, then per PBX event the attempt read and a
transition (originated, answered, ended). Timed three ways on fresh SQLite files in this process:

* ``floor``: the same statements as plain ``sqlite3`` calls, one worker-thread hop per transaction;
* ``dialerd``: ``Store`` as the daemon builds it (SQLite file: ``SqliteCalls``, the driver, store/direct.py);
* ``sqlalchemy``: ``Store`` built with ``calls=SqlCalls``, i.e. SQLAlchemy async + aiosqlite, the call
  store PostgreSQL uses (and SQLite used before).

CPU is ``time.process_time`` (all threads, so the worker threads' SQLite work counts on every side).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import secrets
import sqlite3
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path

from bench.context import Ctx
from bench.report import fmt
from dialerd.domain.contact import ContactStatus
from dialerd.store.db import MIGRATIONS, create_engine, migrate
from dialerd.store.repo import Store
from dialerd.store.sql_calls import SqlCalls
from dialerd.store.sqlite_calls import SqliteCalls
from dialerd.store.tables import Campaign
from dialerd.timestamps import utcnow

S1B = "1b. per-call database work"


def _campaign(tenant_id: str) -> Campaign:
    now = utcnow()
    return Campaign(id="cmp_" + secrets.token_hex(10), tenant_id=tenant_id, name="hotpath", status="running",
                    caller_id="+14155550199", destination="dialerd-demo,s,1", default_region="US",
                    max_concurrent_calls=5, retries_per_contact=0, retry_delay_seconds=300, ring_timeout_seconds=30,
                    import_report={}, created_by="bench", created_at=now, updated_at=now)


def _contacts(n: int) -> list[dict[str, object]]:
    return [{"line": i + 2, "phone_e164": f"+1415555{i:04d}", "raw_number": str(i), "fields": {"n": str(i)}}
            for i in range(n)]


async def _cpu_per_call(one: Callable[[int], Awaitable[None]], calls: int) -> float:
    """CPU seconds per ``one(i)``: 10 warm-up calls (caches, first connections), then ``calls`` timed."""
    for i in range(10):
        await one(i)
    t0 = time.process_time()
    for i in range(10, calls + 10):
        await one(i)
    return (time.process_time() - t0) / calls


async def _store_calls(path: Path, calls: int, direct: bool) -> float:
    """CPU seconds per call of the Store path."""
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    await migrate(engine)
    store = Store(engine) if direct else Store(engine, calls=SqlCalls)
    assert isinstance(store.calls, SqliteCalls if direct else SqlCalls)
    try:
        tenant = await store.upsert_tenant("ten_" + secrets.token_hex(6), "bench", 10, 600, defaults=(10, 600))
        campaign = _campaign(tenant.id)
        await store.insert_campaign(campaign)
        await store.insert_contacts(campaign.id, _contacts(calls + 20))

        async def one(i: int) -> None:
            (contact,) = await store.next_due_contacts(campaign.id, utcnow(), 1)
            ch = f"dlr-bench-{i}"
            await store.begin_attempt(contact, ch)
            for state, values, status, only_from in (
                ("originated", {"originated_at": utcnow()}, ContactStatus.ORIGINATED, ("dialing",)),
                ("answered", {"answered_at": utcnow()}, ContactStatus.CONNECTED, ("originated",)),
                ("ended", {"ended_at": utcnow(), "talk_seconds": 2.0, "cause": 16, "sip_code": 200},
                 ContactStatus.COMPLETED, ("originated", "answered", "dialing")),
            ):
                await store.get_attempt(ch)
                await store.record_transition(ch, attempt_state=state, attempt_values=values,
                                              contact_status=status, contact_values={}, payload={},
                                              only_from=only_from)

        return await _cpu_per_call(one, calls)
    finally:
        await store.close()


def _schema() -> str:
    return "".join(resources.files("dialerd.store.sql").joinpath(f"{name}.sqlite.sql").read_text("utf-8")
                   for _v, name in MIGRATIONS)


async def _floor_calls(path: Path, calls: int) -> float:
    """CPU seconds per call of the same statements on plain sqlite3, one worker-thread hop per transaction."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    pool = concurrent.futures.ThreadPoolExecutor(1)
    loop = asyncio.get_running_loop()
    try:
        conn.executescript(_schema())
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON"):
            conn.execute(f"PRAGMA {pragma}")
        conn.execute("INSERT INTO tenant (id, name, concurrent_max, calls_per_minute, created_at)"
                     " VALUES ('t', 't', 10, 600, '2026-01-01 00:00:00.000000')")
        conn.execute("INSERT INTO campaign (id, tenant_id, name, status, caller_id, destination, default_region,"
                     " max_concurrent_calls, retries_per_contact, retry_delay_seconds, ring_timeout_seconds,"
                     " import_report, created_by, created_at, updated_at) VALUES ('c', 't', 'n', 'running', '1',"
                     " 'd', 'US', 5, 0, 300, 30, '{}', 'b', '2026-01-01', '2026-01-01')")
        conn.executemany("INSERT INTO contact (campaign_id, line, phone_e164, raw_number, fields, status, attempts)"
                         " VALUES ('c', ?, ?, ?, '{}', 'pending', 0)",
                         [(r["line"], r["phone_e164"], r["raw_number"]) for r in _contacts(calls + 20)])

        def txn(*statements: tuple[str, tuple[object, ...]]) -> None:
            conn.execute("BEGIN IMMEDIATE")
            for sql, params in statements:
                conn.execute(sql, params).fetchall()
            conn.execute("COMMIT")

        def now() -> str:
            return utcnow().strftime("%Y-%m-%d %H:%M:%S.%f")

        async def one(i: int) -> None:
            due = "SELECT * FROM contact WHERE campaign_id = 'c' AND status = 'pending' AND (next_attempt_at IS NULL"
            due += " OR next_attempt_at <= ?) AND NOT EXISTS (SELECT 1 FROM attempt WHERE contact_id = contact.id"
            due += " AND state IN ('dialing', 'originated', 'answered')) ORDER BY id LIMIT 1"
            (row,) = await loop.run_in_executor(pool, lambda: conn.execute(due, (now(),)).fetchall())
            cid, ch = row[0], f"ch-{i}"
            await loop.run_in_executor(pool, txn, (
                "SELECT 1 FROM attempt WHERE contact_id = ? AND state IN ('dialing', 'originated', 'answered')",
                (cid,)), ("UPDATE contact SET attempts = attempts + 1, last_attempt_at = ?, updated_at = ?"
                          " WHERE id = ? AND status = 'pending' AND attempts = 0", (now(), now(), cid)),
                ("INSERT INTO attempt (contact_id, campaign_id, number, channel_id, state, created_at)"
                 " VALUES (?, 'c', 1, ?, 'dialing', ?)", (cid, ch, now())))
            for state, frm in (("originated", "dialing"), ("answered", "originated"), ("ended", "answered")):
                await loop.run_in_executor(
                    pool, lambda: conn.execute("SELECT * FROM attempt WHERE channel_id = ?", (ch,)).fetchall())
                await loop.run_in_executor(pool, txn, (
                    "UPDATE attempt SET state = ? WHERE channel_id = ? AND state = ? RETURNING *", (state, ch, frm)),
                    ("UPDATE contact SET status = ?, updated_at = ? WHERE id = ? RETURNING phone_e164, attempts",
                     (state, now(), cid)),
                    ("INSERT INTO event (campaign_id, kind, payload, created_at) VALUES ('c', ?, ?, ?)",
                     (state, json.dumps({"contact_id": cid, "status": state, "channel_id": ch}), now())))

        return await _cpu_per_call(one, calls)
    finally:
        await loop.run_in_executor(pool, conn.close)
        pool.shutdown()


async def run(ctx: Ctx) -> None:
    calls = 100 if ctx.quick else 300
    figures: dict[str, float] = {}
    # Interleaved rounds, best of each: the three see the same machine load.
    for rnd in range(3):
        for name in ("floor", "dialerd", "sqlalchemy"):
            path = ctx.workdir / f"hot-{name}-{rnd}.db"
            cpu = (await _floor_calls(path, calls) if name == "floor"
                   else await _store_calls(path, calls, direct=name == "dialerd"))
            figures[name] = min(figures.get(name, cpu), cpu)
    floor, ours, old = figures["floor"], figures["dialerd"], figures["sqlalchemy"]
    ctx.report.add(S1B, "CPU per call: dialerd's Store / plain sqlite3 floor (same statements)",
                   f"{ours / floor:.2f}x ({fmt(ours * 1000)} vs {fmt(floor * 1000)} ms)")
    ctx.report.add(S1B, "CPU per call: SQLAlchemy path (PostgreSQL's; SQLite's before) / floor",
                   f"{old / floor:.2f}x ({fmt(old * 1000)} ms)")
    ctx.report.add(S1B, "dialerd's Store / SQLAlchemy path", f"{ours / old:.2f}")
    ctx.report.note(S1B, (
        f"{calls} calls per run, best of 3 interleaved rounds. One call = the due-contact query, the attempt "
        "written before the originate, and for each of three PBX events an attempt read and a transition "
        "(attempt, contact and event rows in one transaction), as the dispatcher issues them."))
