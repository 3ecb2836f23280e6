"""The dispatcher's per-call statements on SQLite, at the driver level, one thread hop per transaction.

Perf (docs/benchmarks.md, section 1): every call makes one attempt write, three transitions and two
attempt reads. Through SQLAlchemy async + aiosqlite each statement is built, compiled (cache lookup),
its values processed, and handed to aiosqlite's thread and back, with several event-loop wake-ups per
statement: ~11 ms of CPU per call on this machine (``bench/hotpath.py``). The same transactions as plain
functions on a dedicated ``sqlite3`` connection, run whole in its own thread, cost a fraction of that.

Values go through the columns' own SQLAlchemy bind and result processors, so what is stored and read
back is exactly what the SQLAlchemy path stores and reads (the store's tests run every operation on
both CallStore implementations: ``SqliteCalls``, which runs these, and ``SqlCalls``). Only
``SqliteCalls`` runs them, under the store's write lock around every write transaction (one writer
in-process).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Table
from sqlalchemy.engine import Dialect

from dialerd.domain.campaign import END_EVENT
from dialerd.domain.contact import ContactStatus
from dialerd.store.base import T_CONTACT, end_event_payload
from dialerd.store.db import SQLITE_PRAGMAS
from dialerd.store.gate import UNCOUNTED_ATTEMPT_STATE, ClaimFacts, claim_hold
from dialerd.timestamps import utcnow

T = TypeVar("T")

# The contacts' bulk insert on SQLite (SqliteCalls on the driver, SqlCalls through the pool).
# Perf (bench/, docs/benchmarks.md): SQLAlchemy's executemany processes 13 typed binds per row
# (~60 us per contact, more than parsing the number). Here the constant columns are converted once by
# the columns' own bind processors, so the stored values are identical, and the rows go to the driver
# as plain tuples. Omitted columns are NULL.
INSERT_CONTACTS = (
    "INSERT INTO contact (campaign_id, line, phone_e164, raw_number, fields, status, attempts, updated_at,"
    " timezone, timezone_source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (campaign_id, phone_e164) DO NOTHING"
)


def contact_tuples(dialect: Dialect, campaign_id: str,
                   rows: Sequence[dict[str, Any]]) -> Callable[[], list[tuple[Any, ...]]]:
    """The parameters of ``INSERT_CONTACTS`` for ``rows``, built when the returned function is called
    (SqliteCalls calls it in the driver's thread, so the importer parses its next batch meanwhile)."""
    to_json = T_CONTACT.c.fields.type.bind_processor(dialect) or (lambda v: v)
    to_time = T_CONTACT.c.updated_at.type.bind_processor(dialect) or (lambda v: v)
    now, pending = to_time(utcnow()), ContactStatus.PENDING.value

    def values() -> list[tuple[Any, ...]]:
        return [
            (campaign_id, r["line"], r["phone_e164"], r["raw_number"][:100], to_json(r["fields"]), pending, 0, now,
             r.get("timezone"), r.get("timezone_source"))
            for r in rows
        ]

    return values


class Codec:
    """One table's columns with SQLAlchemy's value conversions for the dialect."""

    def __init__(self, table: Table, dialect: Dialect) -> None:
        self.names = [c.name for c in table.c]
        self.star = ", ".join(self.names)
        self._bind = {c.name: c.type.dialect_impl(dialect).bind_processor(dialect) for c in table.c}
        self._result = [(c.name, c.type.dialect_impl(dialect).result_processor(dialect, None)) for c in table.c]
        self._result_by_name = dict(self._result)

    def bind(self, name: str, value: Any) -> Any:
        proc = self._bind[name]
        return value if proc is None or value is None else proc(value)

    def row_value(self, name: str, value: Any) -> Any:
        """One column's stored value as Python (as SQLAlchemy reads it)."""
        proc = self._result_by_name[name]
        return value if proc is None or value is None else proc(value)

    def row(self, values: sqlite3.Row | tuple[Any, ...]) -> dict[str, Any]:
        """A row selected as ``SELECT {star}`` (or ``RETURNING {star}``) as a dict of Python values."""
        return {name: (value if proc is None or value is None else proc(value))
                for (name, proc), value in zip(self._result, values, strict=True)}


class SqliteDirect:
    """A dedicated sqlite3 connection used from one thread of its own."""

    def __init__(self, path: str) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="dialerd-sqlite")
        self._path = path
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:  # in the worker thread
        if self._conn is None:
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False, timeout=30)
            for pragma in SQLITE_PRAGMAS:
                conn.execute(pragma)
            self._conn = conn
        return self._conn

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, lambda: fn(self._connection()))

    async def transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one write transaction (BEGIN IMMEDIATE ... COMMIT; ROLLBACK if it raises).

        The transaction runs to its end in the worker thread even if the awaiting task is cancelled.
        """
        def run() -> T:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # also when COMMIT itself failed: never leave it open
                    conn.execute("ROLLBACK")
                raise
            return result

        return await asyncio.get_running_loop().run_in_executor(self._pool, run)

    async def close(self) -> None:
        def close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await asyncio.get_running_loop().run_in_executor(self._pool, close)
        self._pool.shutdown(wait=True)


class HotPath:
    """The per-call statements as plain functions of a sqlite3 connection (run by ``SqliteDirect``).

    Each mirrors an ``SqlCalls`` method's SQLAlchemy statements one for one; see there for the why.
    """

    def __init__(self, tables: dict[str, Table], dialect: Dialect, in_flight_states: tuple[str, ...]) -> None:
        self.attempt = Codec(tables["attempt"], dialect)
        self.contact = Codec(tables["contact"], dialect)
        self.event = Codec(tables["event"], dialect)
        self._in_flight = ", ".join(f"'{s}'" for s in in_flight_states)  # constants from the store, not input

    def get_attempt(self, conn: sqlite3.Connection, channel_id: str) -> dict[str, Any] | None:
        row = conn.execute(f"SELECT {self.attempt.star} FROM attempt WHERE channel_id = ?", (channel_id,)).fetchone()
        return None if row is None else self.attempt.row(row)

    def next_due_contacts(self, conn: sqlite3.Connection, campaign_id: str, now: Any, status: str,
                          limit: int) -> list[dict[str, Any]]:
        rows = conn.execute(
            f"SELECT {self.contact.star} FROM contact WHERE campaign_id = ? AND status = ?"
            " AND (next_attempt_at IS NULL OR next_attempt_at <= ?)"
            " AND (blocked_reason IS NULL OR next_eligible_at <= ?)"
            f" AND NOT EXISTS (SELECT 1 FROM attempt WHERE attempt.contact_id = contact.id"
            f" AND attempt.state IN ({self._in_flight})) ORDER BY contact.id LIMIT ?",
            (campaign_id, status, self.contact.bind("next_attempt_at", now), self.contact.bind("next_eligible_at", now),
             limit),
        ).fetchall()
        return [self.contact.row(r) for r in rows]

    def next_retry_time(self, conn: sqlite3.Connection, campaign_id: str, pending: str) -> Any:
        row = conn.execute(
            "SELECT min(CASE WHEN blocked_reason IS NULL THEN next_attempt_at ELSE next_eligible_at END)"
            " FROM contact WHERE campaign_id = ? AND status = ?", (campaign_id, pending)).fetchone()
        return None if row[0] is None else self.contact.row_value("next_attempt_at", row[0])

    def count_contacts(self, conn: sqlite3.Connection, campaign_id: str, statuses: tuple[str, ...]) -> int:
        marks = ", ".join("?" * len(statuses))
        row = conn.execute(f"SELECT count(*) FROM contact WHERE campaign_id = ? AND status IN ({marks})",
                           (campaign_id, *statuses)).fetchone()
        return int(row[0])

    def suppressed(self, conn: sqlite3.Connection, campaign_id: str, number: str) -> bool:
        """``suppressed`` of store/sql_calls.py: the number is on the list of the campaign's tenant."""
        row = conn.execute(
            "SELECT 1 FROM suppression WHERE tenant_id = (SELECT tenant_id FROM campaign WHERE id = ?)"
            " AND number = ? LIMIT 1", (campaign_id, number),
        ).fetchone()
        return row is not None

    def skip(self, conn: sqlite3.Connection, contact_id: int, pending: str, attempts: int, skipped: str,
             reason: str, now: Any) -> bool:
        """``SqlCalls.skip_in``'s update: the pending contact becomes skipped; False if it moved on meanwhile."""
        at = self.contact.bind("updated_at", now)
        moved = conn.execute(
            "UPDATE contact SET status = ?, reason = ?, next_attempt_at = NULL, updated_at = ?"
            " WHERE id = ? AND status = ? AND attempts = ?",
            (skipped, reason, at, contact_id, pending, attempts),
        )
        return bool(moved.rowcount)

    def suppress(self, conn: sqlite3.Connection, campaign_id: str, number: str, reason: str, source: str,
                 now: Any) -> None:
        """``SqlCalls._suppress``: the number joins the list of the campaign's tenant (kept if already there)."""
        conn.execute(
            "INSERT INTO suppression (tenant_id, number, reason, source, created_at)"
            " SELECT tenant_id, ?, ?, ?, ? FROM campaign WHERE id = ? ON CONFLICT (tenant_id, number) DO NOTHING",
            (number, reason, source, self.contact.bind("updated_at", now), campaign_id),
        )

    def insert_event(self, conn: sqlite3.Connection, campaign_id: str, kind: str, payload: dict[str, Any],
                     now: Any) -> int:
        return self._insert(conn, "event", self.event, {
            "campaign_id": campaign_id, "kind": kind, "payload": payload, "created_at": now,
        })

    def attempt_busy(self, conn: sqlite3.Connection, contact_id: int) -> bool:
        return conn.execute(
            f"SELECT 1 FROM attempt WHERE contact_id = ? AND state IN ({self._in_flight}) LIMIT 1", (contact_id,),
        ).fetchone() is not None

    def begin_attempt(self, conn: sqlite3.Connection, values: dict[str, Any], pending: str,
                      attempts: int) -> int | None:
        """Count the attempt on the contact and insert it; None if the contact moved on meanwhile."""
        if self.attempt_busy(conn, values["contact_id"]):
            return None
        if self._held(conn, values["contact_id"], values["created_at"], pending):
            return None
        now = self.contact.bind("updated_at", values["created_at"])
        moved = conn.execute(
            "UPDATE contact SET attempts = attempts + 1, last_attempt_at = ?, updated_at = ?,"
            " blocked_reason = NULL, next_eligible_at = NULL WHERE id = ? AND status = ? AND attempts = ?",
            (now, now, values["contact_id"], pending, attempts),
        )
        if not moved.rowcount:
            return None
        return self._insert(conn, "attempt", self.attempt, values)

    def _held(self, conn: sqlite3.Connection, contact_id: int, now: datetime, pending: str) -> bool:
        """``SqlCalls.held_in``: the claim gate (store/gate.py); if held, write why and until when."""
        row = conn.execute(
            "SELECT campaign.calling_hours, contact.timezone, contact.next_attempt_at, contact.phone_e164,"
            " campaign.tenant_id, tenant.max_attempts_per_number, tenant.frequency_window_hours FROM contact"
            " JOIN campaign ON campaign.id = contact.campaign_id JOIN tenant ON tenant.id = campaign.tenant_id"
            " WHERE contact.id = ? AND contact.status = ?", (contact_id, pending),
        ).fetchone()
        if row is None:
            return False
        facts = ClaimFacts(row[0], row[1], self.contact.row_value("next_attempt_at", row[2]), *row[3:])
        attempts: list[datetime] = []
        if facts.cap.active:
            found = conn.execute(
                "SELECT attempt.created_at FROM attempt JOIN contact ON contact.id = attempt.contact_id"
                " JOIN campaign ON campaign.id = attempt.campaign_id WHERE contact.phone_e164 = ?"
                " AND campaign.tenant_id = ? AND attempt.created_at > ? AND attempt.state != ?",
                (facts.phone_e164, facts.tenant_id, self.attempt.bind("created_at", facts.cap.window_start(now)),
                 UNCOUNTED_ATTEMPT_STATE),
            ).fetchall()
            attempts = [self.attempt.row_value("created_at", r[0]) for r in found]
        hold = claim_hold(facts, attempts, now)
        if hold is None:
            return False
        conn.execute("UPDATE contact SET blocked_reason = ?, next_eligible_at = ? WHERE id = ?",
                     (hold.reason.value, self.contact.bind("next_eligible_at", hold.until), contact_id))
        return True

    def transition(self, conn: sqlite3.Connection, channel_id: str, only_from: tuple[str, ...],
                   attempt_sets: dict[str, Any], contact_sets: dict[str, Any],
                   event: Callable[[dict[str, Any], tuple[Any, ...] | None], tuple[str, dict[str, Any]]],
                   ) -> tuple[dict[str, Any], int, str, dict[str, Any]] | None:
        """Move the attempt (if in one of ``only_from``) and its contact; append the event.

        ``event(attempt, contact_row)`` builds the event's (campaign_id, payload) from the moved rows.
        Returns (attempt as updated, event id, campaign id, payload), or None if nothing moved.
        """
        sets, params = self._sets(self.attempt, attempt_sets)
        marks = ", ".join("?" * len(only_from))
        row = conn.execute(
            f"UPDATE attempt SET {sets} WHERE channel_id = ? AND state IN ({marks}) RETURNING {self.attempt.star}",
            (*params, channel_id, *only_from),
        ).fetchone()
        if row is None:
            return None
        attempt = self.attempt.row(row)
        sets, params = self._sets(self.contact, contact_sets)
        contact = conn.execute(
            f"UPDATE contact SET {sets} WHERE id = ? RETURNING phone_e164, attempts",
            (*params, attempt["contact_id"]),
        ).fetchone()
        campaign_id, payload = event(attempt, contact)
        event_id = self._insert(conn, "event", self.event, {
            "campaign_id": campaign_id, "kind": contact_sets["status"], "payload": payload,
            "created_at": contact_sets["updated_at"],
        })
        return attempt, event_id, campaign_id, payload

    def campaign_of_attempt_terminal(self, conn: sqlite3.Connection, channel_id: str,
                                     terminal: tuple[str, ...]) -> bool:
        """Whether the campaign of the attempt ``channel_id`` is in a terminal status (in this transaction)."""
        row = conn.execute(
            "SELECT campaign.status FROM attempt JOIN campaign ON campaign.id = attempt.campaign_id"
            " WHERE attempt.channel_id = ?", (channel_id,),
        ).fetchone()
        return row is not None and row[0] in terminal

    def end_if_over(self, conn: sqlite3.Connection, campaign_id: str, now: Any,
                    terminal: tuple[str, ...]) -> tuple[int, dict[str, Any]] | None:
        """``Transactions.end_if_over``: append the ``end`` event if the campaign is terminal with no attempt
        in flight and not over already. Returns (event id, payload), or None."""
        row = conn.execute("SELECT status FROM campaign WHERE id = ?", (campaign_id,)).fetchone()
        if row is None or row[0] not in terminal:
            return None
        busy = conn.execute(
            f"SELECT 1 FROM attempt WHERE campaign_id = ? AND state IN ({self._in_flight}) LIMIT 1", (campaign_id,)
        ).fetchone()
        if busy is not None:
            return None
        last = conn.execute("SELECT kind FROM event WHERE campaign_id = ? ORDER BY id DESC LIMIT 1",
                            (campaign_id,)).fetchone()
        if last is not None and last[0] == END_EVENT:
            return None
        payload = end_event_payload(row[0], now)
        event_id = self._insert(conn, "event", self.event, {
            "campaign_id": campaign_id, "kind": END_EVENT, "payload": payload, "created_at": now,
        })
        return event_id, payload

    @staticmethod
    def _sets(codec: Codec, values: dict[str, Any]) -> tuple[str, list[Any]]:
        unknown = [k for k in values if k not in codec.names]
        if unknown:
            raise ValueError(f"unknown columns {unknown}")
        return ", ".join(f"{k} = ?" for k in values), [codec.bind(k, v) for k, v in values.items()]

    @staticmethod
    def _insert(conn: sqlite3.Connection, table: str, codec: Codec, values: dict[str, Any]) -> int:
        unknown = [k for k in values if k not in codec.names]
        if unknown:
            raise ValueError(f"unknown columns {unknown}")
        cur = conn.execute(
            f"INSERT INTO {table} ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
            [codec.bind(k, v) for k, v in values.items()],
        )
        assert cur.lastrowid is not None
        return cur.lastrowid
