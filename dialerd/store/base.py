"""The store's foundation: the transactions every part of the store shares, and the event rows.

Writes that change a contact also append the matching row to ``event`` in the same transaction,
so the SSE stream replayed from the database always agrees with the contacts' state. One writer at a
time in-process (see ``Transactions.__init__``); its events are published right after its commit.
``Transactions`` is composed into the ``Store`` and into each CallStore implementation (``SqlCalls``,
``SqliteCalls``), so all of them write under one lock and publish in one order.

Several processes on one PostgreSQL database (issue 13): the in-process lock orders nothing between them,
so each transaction that appends an event of a campaign first takes that campaign's *event lock* (an
advisory transaction lock, ``event_lock``), held until it commits: per campaign, id order is then commit
order in every process, and a reader that has seen id N of a campaign has seen every lower one. Each such
transaction also announces itself with ``pg_notify`` on ``EVENT_CHANNEL`` (delivered at its commit, in
commit order) for the other daemons' SSE streams and webhooks (``services/peers.py``, ``store/listen.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import and_, exists, func, insert, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from dialerd.domain.call import IN_FLIGHT, AttemptState
from dialerd.domain.campaign import END_EVENT, CampaignStatus, over
from dialerd.domain.contact import ContactStatus
from dialerd.errors import StoreError
from dialerd.ports import CallStore
from dialerd.store.tables import (
    ApiKey,
    Attempt,
    Campaign,
    Contact,
    Event,
    IdempotencyKey,
    ImportProblem,
    Suppression,
    Tenant,
)
from dialerd.timestamps import rfc3339

# PostgreSQL: the channel each event-writing transaction notifies; its payload is ``notice_payload``'s.
EVENT_CHANNEL = "dialerd_events"
# The first key of the campaigns' event locks: pg_advisory_xact_lock(EVENT_LOCK_CLASS, hashtext(campaign id)).
# The two-key space does not overlap the one-key one migrate() locks (store/db.py); two campaigns whose ids
# hash alike only share a lock (their appends are serialised, nothing more).
EVENT_LOCK_CLASS = 0x64E7

# Reads made in a priority context (the dispatcher's tasks) skip the queue the other reads (API requests,
# SSE replays and snapshots) take turns in, at most SHARED_READS at once; see Transactions.read.
SHARED_READS = 4
_PRIORITY: contextvars.ContextVar[bool] = contextvars.ContextVar("dialerd_store_priority", default=False)


def priority_context() -> contextvars.Context:
    """A copy of the current context in which Store reads skip the shared queue (for create_task)."""
    ctx = contextvars.copy_context()
    ctx.run(_PRIORITY.set, True)
    return ctx


T_TENANT = Tenant.__table__  # type: ignore[attr-defined]
T_KEY = ApiKey.__table__  # type: ignore[attr-defined]
T_CAMPAIGN = Campaign.__table__  # type: ignore[attr-defined]
T_CONTACT = Contact.__table__  # type: ignore[attr-defined]
T_ATTEMPT = Attempt.__table__  # type: ignore[attr-defined]
T_EVENT = Event.__table__  # type: ignore[attr-defined]
T_IDEMPOTENCY = IdempotencyKey.__table__  # type: ignore[attr-defined]
T_PROBLEM = ImportProblem.__table__  # type: ignore[attr-defined]
T_SUPPRESSION = Suppression.__table__  # type: ignore[attr-defined]

IN_FLIGHT_ATTEMPT_STATES = tuple(s.value for s in IN_FLIGHT)  # the domain's, as stored values
_T = TypeVar("_T")


def of_campaign(campaign_id: str) -> Any:
    """``contact.campaign_id = campaign_id`` written as a range, for the due-contact queries that read the
    campaign's first contacts in id order (with ``ORDER BY campaign_id, id``).

    With the equality, PostgreSQL drops the constant column from the ordering and walks the primary key from
    the table's first id, filtering out every other campaign's contacts: 11 ms per claim with 80,000 older
    contacts, growing with them (bench/cluster.py), under the tenant's row lock. As a range it reads
    ``ix_contact_campaign_id`` in order from the campaign's first contact: 0.05 ms, whatever else is stored.
    """
    return and_(T_CONTACT.c.campaign_id >= campaign_id, T_CONTACT.c.campaign_id <= campaign_id)


def dialing_attempt(contact: Contact, channel_id: str, caller_id: str | None, now: datetime,
                    **extra: Any) -> dict[str, Any]:
    """The row of a new attempt of ``contact``, written before its originate leaves (``extra``: the
    claiming daemon's ``node_id`` and ``node_epoch`` with several daemons)."""
    return {
        "contact_id": contact.id,
        "campaign_id": contact.campaign_id,
        "number": contact.attempts + 1,
        "channel_id": channel_id,
        "state": AttemptState.DIALING.value,
        "created_at": now,
        "caller_id": caller_id or None,
        **extra,
    }


def _row(model: Any, row: Any) -> Any:
    return model(**dict(row._mapping))


def _attempt_in_flight(contact_id: Any) -> Any:
    """SQL: the contact has an attempt that is dialling, ringing or talking."""
    return exists().where(T_ATTEMPT.c.contact_id == contact_id, T_ATTEMPT.c.state.in_(IN_FLIGHT_ATTEMPT_STATES))


def call_event_payload(
    *, contact_id: int, phone_number: str | None, status: str, attempt: int, channel_id: str, now: datetime,
    details: dict[str, Any],
) -> dict[str, Any]:
    """The payload of the event a call's transition appends (and SSE sends): the contact, its new status,
    which attempt and channel, when, then the follower's ``details`` (cause, reason, retry time...).

    Both CallStore implementations build it here, so the stored JSON is the same on either.
    """
    return {
        "contact_id": contact_id,
        "phone_number": phone_number,
        "status": status,
        "attempt": attempt,
        "channel_id": channel_id,
        "at": rfc3339(now),
        **details,
    }


def skipped_event_payload(*, contact_id: int, phone_number: str, reason: str, now: datetime) -> dict[str, Any]:
    """The payload of the ``skipped`` event a claim appends when the contact's number is suppressed
    (no attempt exists: none was made). Both CallStore implementations build it here."""
    return {"contact_id": contact_id, "phone_number": phone_number, "status": ContactStatus.SKIPPED.value,
            "reason": reason,
            "at": rfc3339(now)}


def notice_payload(writer: str, events: Sequence[Event]) -> list[str]:
    """The ``pg_notify`` payloads announcing a transaction's events: one per campaign, in the order of its
    first event, each the campaign (``c``), its first and last id in the transaction (``f``, ``l``), the
    writer (``w``: ``Transactions.writer``) and, if the transaction changed the campaign's status (a
    ``campaign`` event), the last status it wrote (``s``). A few dozen bytes (NOTIFY allows 8,000)."""
    spans: dict[str, dict[str, Any]] = {}
    for ev in events:
        span = spans.get(ev.campaign_id)
        if span is None:
            span = spans[ev.campaign_id] = {"c": ev.campaign_id, "f": ev.id, "l": ev.id, "w": writer}
        span["l"] = ev.id
        if ev.kind == "campaign" and "status" in ev.payload:
            span["s"] = ev.payload["status"]
    return [json.dumps(span, separators=(",", ":")) for span in spans.values()]


def end_event_payload(status: str, now: datetime) -> dict[str, Any]:
    """The payload of a campaign's ``end`` event: the terminal status it ended in, and when."""
    return {"status": status, "at": rfc3339(now)}


class _Merged:
    """A row-like wrapper around a dict, so merged values go through ``_row`` like fetched rows."""

    def __init__(self, mapping: dict[str, Any]) -> None:
        self._mapping = mapping


class Calls(CallStore, Protocol):
    """A CallStore implementation as the Store holds it (``SqlCalls`` or ``SqliteCalls``, chosen once when
    the Store is built): the call port, plus the contacts' bulk insert and closing its own connections."""

    async def insert_contacts(self, campaign_id: str, rows: Sequence[dict[str, Any]]) -> None:
        """Bulk-insert pending contacts; a number already in the campaign is skipped."""
        ...

    async def close(self) -> None: ...


class Transactions:
    """The engine, the write lock, publish-after-commit, and the event rows every writer appends."""

    def __init__(self, engine: AsyncEngine, publish: Callable[[list[Event]], None] | None = None) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        # One writer at a time, in-process, on both backends. On SQLite this avoids "database is
        # locked" upgrade deadlocks between pooled connections. On both, it makes event ids, commit
        # order and publish order the same order: a live SSE client can never receive event 7 before
        # event 6, and a reader of the event table never sees 7 committed while 6 is still pending.
        self._write_lock = asyncio.Lock()
        self._txn_events: list[Event] = []
        self._txn_locked: set[str] = set()  # the campaigns whose event lock this transaction holds
        self.publish = publish  # called with each transaction's events right after its commit
        self._shared_reads = asyncio.Semaphore(SHARED_READS)
        # Names this process in its notices, so a daemon tells its own commits from the others'.
        self.writer = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._notify = self.dialect == "postgresql"

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction; commits on exit, rolls back on error; then publishes its events."""
        try:
            async with self._write_lock:
                self._txn_events = []
                self._txn_locked = set()
                async with self.engine.begin() as conn:
                    yield conn
                    if self._txn_events and self._notify:
                        # Inside the transaction: PostgreSQL delivers it at the commit, in commit order,
                        # and never for a transaction that rolls back. Its price: the commits of notifying
                        # transactions take turns on one database-wide lock (bench/peer_events.py).
                        notices = notice_payload(self.writer, self._txn_events)
                        await conn.execute(select(*(func.pg_notify(EVENT_CHANNEL, n) for n in notices)))
                events, self._txn_events = self._txn_events, []
                if events and self.publish is not None:
                    self.publish(events)  # still under the lock: publish order == id order
        except SQLAlchemyError as exc:
            raise StoreError(f"database error: {exc.__class__.__name__}") from exc

    async def write_elsewhere(self, transaction: Callable[[], Awaitable[tuple[_T, list[Event]]]]) -> _T:
        """Run a write transaction made on another connection (the sqlite3 driver's, store/direct.py) under
        the same lock as ``write``, and publish the events it returns after its commit, in the same order."""
        async with self._write_lock:
            result, events = await transaction()
            if events and self.publish is not None:
                self.publish(events)
        return result

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        # Load test (tests/load): with 20 API pollers and 200 SSE streams, their reads filled the pool
        # and the event loop, the dispatcher's reads queued behind them, and dialling fell to ~2 calls/s.
        # Those reads now take turns a few at a time; the dispatcher's (priority_context) go straight on.
        gate: contextlib.AbstractAsyncContextManager[Any] = (
            contextlib.nullcontext() if _PRIORITY.get() else self._shared_reads
        )
        try:
            async with gate, self.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StoreError(f"database error: {exc.__class__.__name__}") from exc

    async def ping(self) -> bool:
        try:
            async with self.read() as conn:
                await conn.execute(select(1))
            return True
        except StoreError:
            return False

    async def event_lock(self, conn: AsyncConnection, campaign_id: str) -> None:
        """Take the campaign's event lock for the rest of ``conn``'s transaction (PostgreSQL; once per
        transaction and campaign). ``event`` and ``events`` take it before they draw an id.

        Why: ids come from one sequence, drawn at insert. Without the lock, daemon A draws 7, B draws 8
        and commits first, and a reader that saw 8 (an SSE client, its Last-Event-ID, a webhook cursor)
        skips 7 for ever. Under it, a campaign's appends in all processes commit one after the other, and
        the next one draws its ids only once the previous one is committed (and visible).

        Why it cannot deadlock: it is the last lock a transaction waits for. Writers append their events
        after their other changes, and once a transaction holds it, it only inserts event rows (new rows;
        their foreign key takes FOR KEY SHARE on the campaign row, which no writer blocks: ``lock_campaign``
        is FOR NO KEY UPDATE, status changes are plain UPDATEs), reads, and may add an opt-out with ON
        CONFLICT DO NOTHING (which waits only for a transaction inserting the same number, itself past its
        own event lock). A holder thus never waits for a transaction that waits for the lock, so no cycle
        can pass through it. Keep it so: append events last, and one campaign's events per transaction
        (two campaigns' locks taken in opposite orders by two transactions would deadlock).

        SQLite has one writing process and an exclusive write transaction: nothing to take.
        """
        if self.dialect != "postgresql" or campaign_id in self._txn_locked:
            return
        await conn.execute(select(func.pg_advisory_xact_lock(EVENT_LOCK_CLASS, func.hashtext(campaign_id))))
        self._txn_locked.add(campaign_id)

    async def event(
        self, conn: AsyncConnection, campaign_id: str, kind: str, payload: dict[str, Any], now: datetime
    ) -> Event:
        """Append an event row in ``conn``'s write transaction; ``write`` publishes it after the commit."""
        await self.event_lock(conn, campaign_id)
        result = await conn.execute(
            insert(T_EVENT)
            .values(campaign_id=campaign_id, kind=kind, payload=payload, created_at=now)
            .returning(T_EVENT.c.id)
        )
        event = Event(
            id=int(result.scalar_one()), campaign_id=campaign_id, kind=kind, payload=payload, created_at=now
        )
        self._txn_events.append(event)
        return event

    async def lock_campaign(self, conn: AsyncConnection, *, campaign_id: Any) -> str | None:
        """The campaign's status, its row locked until the transaction ends (PostgreSQL; an SQLite write
        transaction is exclusive anyway). ``campaign_id`` may be a scalar subquery.

        FOR NO KEY UPDATE, not FOR UPDATE: it conflicts with itself and with every UPDATE of the row (a
        status change), which is what the serialisation below needs, but not with the FOR KEY SHARE that
        inserting a row referencing the campaign takes (an attempt, an event). FOR UPDATE blocked those:
        a transaction holding a campaign's event lock (``event_lock``) could then wait, at its event's
        insert, for a ``lock_campaign`` holder that waits for the event lock: a deadlock.

        Every write that can make a campaign over (``end_if_over``) takes this lock before any other, so
        that a stop and the end of its last call, or the ends of its last two calls, in two processes on
        one database, are serialised: each sees the other's commit, one of them writes the end, and
        the lock order (campaign first) cannot deadlock with a stop cancelling contacts.
        """
        row = (
            await conn.execute(select(T_CAMPAIGN.c.status).where(T_CAMPAIGN.c.id == campaign_id)
                               .with_for_update(key_share=True))
        ).first()
        return None if row is None else str(row.status)

    async def end_if_over(
        self, conn: AsyncConnection, campaign_id: str, status: str | None, now: datetime
    ) -> Event | None:
        """Append the campaign's ``end`` event if this transaction made it over (``domain.campaign.over``).

        Called by each write that takes a campaign to a terminal status or a call of it out of flight,
        with the status it read under ``lock_campaign``; the end is then committed with the transition
        that made it due, so it can neither be lost (a crash right after) nor come twice.
        """
        if status is None or not CampaignStatus(status).terminal:
            return None
        busy = (
            await conn.execute(
                select(exists().where(T_ATTEMPT.c.campaign_id == campaign_id,
                                      T_ATTEMPT.c.state.in_(IN_FLIGHT_ATTEMPT_STATES)))
            )
        ).scalar_one()
        if not over(CampaignStatus(status), 1 if busy else 0):
            return None
        last = (
            await conn.execute(
                select(T_EVENT.c.kind).where(T_EVENT.c.campaign_id == campaign_id).order_by(T_EVENT.c.id.desc())
                .limit(1)
            )
        ).scalar_one_or_none()
        if last == END_EVENT:  # already over (nothing is written for a campaign after its end)
            return None
        return await self.event(conn, campaign_id, END_EVENT, end_event_payload(status, now), now)

    async def events(
        self,
        conn: AsyncConnection,
        campaign_id: str,
        kind: str,
        payloads: list[dict[str, Any]],
        now: datetime,
    ) -> list[Event]:
        """``event`` for many payloads of one kind, in batches (the contacts a stop cancels)."""
        out: list[Event] = []
        if payloads:
            await self.event_lock(conn, campaign_id)
        for chunk_start in range(0, len(payloads), 1000):
            chunk = payloads[chunk_start : chunk_start + 1000]
            rows = [{"campaign_id": campaign_id, "kind": kind, "payload": p, "created_at": now} for p in chunk]
            if self.dialect == "sqlite":
                # SQLAlchemy cannot batch INSERT..RETURNING on SQLite (it falls back to one statement
                # per row). We hold the only write transaction, so new rowids are max(id)+1, +2, ...
                first = int((await conn.execute(select(func.coalesce(func.max(T_EVENT.c.id), 0)))).scalar_one()) + 1
                await conn.execute(insert(T_EVENT), rows)
                ids = list(range(first, first + len(rows)))
            else:
                result = await conn.execute(insert(T_EVENT).returning(T_EVENT.c.id, sort_by_parameter_order=True), rows)
                ids = [int(r[0]) for r in result.all()]
            out.extend(
                Event(id=i, campaign_id=campaign_id, kind=kind, payload=p, created_at=now)
                for i, p in zip(ids, chunk, strict=True)
            )
        self._txn_events.extend(out)
        return out

