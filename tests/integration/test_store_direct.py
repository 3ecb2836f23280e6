"""The two call stores on SQLite, SqliteCalls (the driver, store/direct.py) and SqlCalls (SQLAlchemy, as on
PostgreSQL): the same calls leave the same rows.

Two SQLite files, one Store each (one built with each implementation), the same sequence of the
dispatcher's calls on both, then every row of contact, attempt and event compared column by column
(times are compared by kind, not value: they are "now" on each side).
"""

from __future__ import annotations

import re
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dialerd.domain.campaign import CampaignStatus
from dialerd.domain.contact import ContactStatus
from dialerd.errors import StoreError
from dialerd.store.db import create_engine, migrate
from dialerd.store.repo import Store
from dialerd.store.sql_calls import SqlCalls
from dialerd.store.sqlite_calls import SqliteCalls
from dialerd.store.tables import Event
from tests.integration.test_store import make_campaign, make_tenant, number, rows

TIMES = {"last_attempt_at", "updated_at", "created_at", "originated_at", "answered_at", "ended_at"}
AT = datetime(2026, 11, 27, 3, 4, 5, 678901, tzinfo=UTC)


async def _store(path: Path, direct: bool, published: list[Event]) -> Store:
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    await migrate(engine)
    store = Store(engine, publish=published.extend, calls=SqliteCalls if direct else SqlCalls)
    assert isinstance(store.calls, SqliteCalls if direct else SqlCalls)
    return store


async def test_an_sqlite_file_gets_the_driver_and_anything_else_sqlalchemy(tmp_path: Path) -> None:
    # The choice the daemon's Store makes, once, when it is built (no call asks which one is in use).
    chosen = {}
    for name, url in (("file", f"sqlite+aiosqlite:///{tmp_path / 'f.db'}"), ("memory", "sqlite+aiosqlite://")):
        store = Store(create_engine(url))
        chosen[name] = type(store.calls)
        await store.close()
    assert chosen == {"file": SqliteCalls, "memory": SqlCalls}
    with pytest.raises(ValueError, match="needs an SQLite database file"):
        Store(create_engine("sqlite+aiosqlite://"), calls=SqliteCalls)


async def _script(store: Store) -> dict[str, Any]:
    """A run of dispatcher calls: an answered call, a failed one with a retry time, a refused duplicate."""
    tenant = await make_tenant(store)
    cid = await make_campaign(store, tenant, status="running", id="cmp_same")
    await store.insert_contacts(cid, rows([number(1), number(2), number(3)], note="x ü"))
    out: dict[str, Any] = {}
    due = await store.next_due_contacts(cid, AT, 10)
    out["due"] = [(c.id, c.phone_e164, c.fields, c.status, c.attempts) for c in due]
    first, second = due[0], due[1]
    a1 = await store.begin_attempt(first, "ch-1")
    a2 = await store.begin_attempt(second, "ch-2")
    assert a1 is not None and a2 is not None
    out["again"] = await store.begin_attempt(first, "ch-1b")  # attempts moved on: refused
    out["due_after"] = [c.id for c in await store.next_due_contacts(cid, AT, 10)]
    moves = [
        ("ch-1", "originated", {"originated_at": AT}, ContactStatus.ORIGINATED, {}, ("dialing",)),
        ("ch-1", "answered", {"answered_at": AT}, ContactStatus.CONNECTED, {}, ("originated",)),
        ("ch-1", "answered", {"answered_at": AT}, ContactStatus.CONNECTED, {}, ("originated",)),  # duplicate
        ("ch-1", "ended", {"ended_at": AT + timedelta(seconds=2), "talk_seconds": 2.0, "cause": 16, "sip_code": 200},
         ContactStatus.COMPLETED, {"hangup_cause": 16, "sip_code": 200, "failure_reason": None,
                                   "next_attempt_at": None}, ("originated", "answered", "dialing")),
        ("ch-2", "ended", {"ended_at": AT, "cause": 17, "sip_code": 486, "reason": "busy"}, ContactStatus.PENDING,
         {"failure_reason": "busy", "hangup_cause": 17, "sip_code": 486, "next_attempt_at": AT + timedelta(minutes=5)},
         ("dialing", "originated")),
        ("ch-unknown", "ended", {"ended_at": AT}, ContactStatus.FAILED, {}, ("dialing",)),
    ]
    results = []
    for channel, state, values, status, contact_values, only_from in moves:
        moved = await store.record_transition(channel, attempt_state=state, attempt_values=values,
                                              contact_status=status, contact_values=contact_values,
                                              payload={"cause": values.get("cause")}, only_from=only_from)
        results.append(None if moved is None else (moved[0].state, moved[1].kind, moved[1].id))
    out["moves"] = results
    got = await store.get_attempt("ch-1")
    assert got is not None
    out["attempt"] = got.model_dump()
    out["missing"] = await store.get_attempt("nope")
    out["due_later"] = [c.id for c in await store.next_due_contacts(cid, AT + timedelta(minutes=6), 10)]
    out["retry_at"] = await store.next_retry_time(cid)
    out["unfinished"] = await store.unfinished_contacts(cid)
    return out


def _rows(path: Path) -> dict[str, list[dict[str, Any]]]:
    with sqlite3.connect(path) as conn:
        conn.row_factory = sqlite3.Row
        out = {}
        for table in ("contact", "attempt", "event"):
            out[table] = [{k: _cell(k, r[k]) for k in r.keys()}  # noqa: SIM118 - sqlite3.Row iterates values
                          for r in conn.execute(f"SELECT * FROM {table} ORDER BY id")]
        # Stored time texts have one shape on both paths (SQLAlchemy's), so they sort and compare alike.
        out["time_shapes"] = [{"t": len(t)} for (t,) in conn.execute(
            "SELECT last_attempt_at FROM contact WHERE last_attempt_at IS NOT NULL UNION ALL "
            "SELECT ended_at FROM attempt WHERE ended_at IS NOT NULL")]
    return out


def _cell(column: str, value: Any) -> Any:
    if column in TIMES and value is not None:
        return "<time>"
    if column == "payload":  # the stored JSON text itself, with the event's own time masked
        return re.sub(r'"at": "[^"]*"', '"at": "<time>"', value)
    return value


def _strip_times(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: ("<time>" if k in TIMES | {"at"} and v is not None else _strip_times(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strip_times(v) for v in value]
    return value


async def test_direct_and_sqlalchemy_paths_leave_the_same_rows(tmp_path: Path) -> None:
    results, tables, published = {}, {}, {}
    for direct in (True, False):
        path = tmp_path / f"direct-{direct}.db"
        events: list[Event] = []
        store = await _store(path, direct, events)
        try:
            results[direct] = _strip_times(await _script(store))
        finally:
            await store.close()
        tables[direct] = _rows(path)
        published[direct] = [(e.id, e.kind, _strip_times(e.payload)) for e in events]
    assert results[True] == results[False]
    assert tables[True] == tables[False]
    assert published[True] == published[False]
    # And the script did what it says: one completed call, one busy call waiting for its retry.
    statuses = [r["status"] for r in tables[True]["contact"]]
    assert statuses == ["completed", "pending", "pending"]
    assert results[True]["moves"][2] is None and results[True]["moves"][5] is None
    assert results[True]["again"] is None and results[True]["missing"] is None
    assert results[True]["due_later"] == [2, 3] and results[True]["due_after"] == [3]
    assert results[True]["retry_at"] == AT + timedelta(minutes=5) and results[True]["unfinished"] == 2
    assert [k for _i, k, _p in published[True]] == ["originated", "connected", "completed", "pending"]


async def test_direct_path_errors_are_store_errors_and_roll_back(tmp_path: Path) -> None:
    events: list[Event] = []
    store = await _store(tmp_path / "d.db", True, events)
    try:
        tenant = await make_tenant(store)
        cid = await make_campaign(store, tenant, status="running")
        await store.insert_contacts(cid, rows([number(1)]))
        (contact,) = await store.next_due_contacts(cid, AT, 1)
        assert await store.begin_attempt(contact, "ch-1") is not None
        with pytest.raises(ValueError, match="unknown columns"):
            await store.record_transition("ch-1", attempt_state="originated", attempt_values={"nonsense": 1},
                                          contact_status=ContactStatus.ORIGINATED, contact_values={},
                                          payload={}, only_from=("dialing",))
        assert (await store.get_attempt("ch-1")).state == "dialing"  # type: ignore[union-attr]
        # A channel id used twice breaks the unique index: a StoreError, nothing written, nothing published.
        assert await store.give_back_attempt("ch-1")
        (contact,) = await store.next_due_contacts(cid, AT, 1)
        with pytest.raises(StoreError):
            await store.begin_attempt(contact, "ch-1")
        attempt = await store.get_attempt("ch-1")
        assert attempt is not None and attempt.state == "not_dialled"
        (again,) = await store.next_due_contacts(cid, AT, 1)
        assert again.attempts == contact.attempts  # the failed transaction's count was rolled back
        assert events == []
    finally:
        await store.close()


async def test_a_failed_commit_is_rolled_back_and_the_connection_stays_usable(tmp_path: Path) -> None:
    store = await _store(tmp_path / "c.db", True, [])
    assert isinstance(store.calls, SqliteCalls)
    direct = store.calls.direct
    try:
        def dangling_key(conn: sqlite3.Connection) -> None:
            # A deferred foreign key is checked at COMMIT, so it is the COMMIT that fails.
            conn.execute("PRAGMA defer_foreign_keys = ON")
            conn.execute("INSERT INTO api_key (id, tenant_id, secret_hash, label, created_at) "
                         "VALUES ('k1', 'no-such-tenant', 'h', 'l', '2026-11-27 00:00:00.000000')")

        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
            await direct.transaction(dangling_key)
        # Rolled back, and the next transaction starts cleanly on the same connection.
        def count(conn: sqlite3.Connection) -> int:
            return int(conn.execute("SELECT count(*) FROM api_key").fetchone()[0])

        assert await direct.transaction(count) == 0
        assert await direct.read(lambda conn: conn.in_transaction) is False
    finally:
        await store.close()


async def _stop_with_calls_up(store: Store) -> list[tuple[str, Any]]:
    """Two calls up, a stop, then each call ends: what each of those writes published (kind, status)."""
    tenant = await make_tenant(store)
    cid = await make_campaign(store, tenant, status="running", id="cmp_same")
    await store.insert_contacts(cid, rows([number(1), number(2)]))
    for i, contact in enumerate(await store.next_due_contacts(cid, AT, 10)):
        assert await store.begin_attempt(contact, f"ch-{i}") is not None
        assert await store.record_transition(f"ch-{i}", attempt_state="originated", attempt_values={"originated_at": AT},
                                             contact_status=ContactStatus.ORIGINATED, contact_values={}, payload={},
                                             only_from=("dialing",)) is not None
    steps: list[tuple[str, Any]] = []
    published: list[Event] = []
    store.publish = published.extend
    _changed, events = await store.set_campaign_status(cid, CampaignStatus.RUNNING, CampaignStatus.COMPLETED,
                                                       event_payload={"action": "stop"}, cancel_pending=True)
    steps.append(("stop", [e.kind for e in events]))
    for channel in ("ch-0", "ch-1", "ch-1"):  # the last one is a duplicate: nothing
        published.clear()
        await store.record_transition(channel, attempt_state="ended", attempt_values={"ended_at": AT, "cause": 16},
                                      contact_status=ContactStatus.COMPLETED, contact_values={"hangup_cause": 16},
                                      payload={"cause": 16}, only_from=("originated", "answered"))
        steps.append((channel, [(e.kind, e.payload["status"]) for e in published]))
    return steps


async def test_both_paths_write_the_end_with_the_last_call_of_a_stopped_campaign(tmp_path: Path) -> None:
    steps, tables = {}, {}
    for direct in (True, False):
        path = tmp_path / f"end-{direct}.db"
        store = await _store(path, direct, [])
        try:
            steps[direct] = await _stop_with_calls_up(store)
        finally:
            await store.close()
        tables[direct] = _rows(path)
    assert steps[True] == steps[False] == [
        ("stop", ["campaign"]),
        ("ch-0", [("completed", "completed")]),
        ("ch-1", [("completed", "completed"), ("end", "completed")]),
        ("ch-1", []),
    ]
    assert tables[True] == tables[False]
    assert [r["kind"] for r in tables[True]["event"]][-3:] == ["completed", "completed", "end"]
