"""The store's foundation: the transactions every part of the store shares, and the event rows.

Writes that change a contact also append the matching row to ``event`` in the same transaction,
so the SSE stream replayed from the database always agrees with the contacts' state. One writer at a
time in-process (see ``Transactions.__init__``); its events are published right after its commit.
``Transactions`` is composed into the ``Store`` and into each CallStore implementation (``SqlCalls``,
``SqliteCalls``), so all of them write under one lock and publish in one order.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import and_, exists, func, insert, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from dialerd.domain.call import IN_FLIGHT
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
        self.publish = publish  # called with each transaction's events right after its commit
        self._shared_reads = asyncio.Semaphore(SHARED_READS)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction; commits on exit, rolls back on error; then publishes its events."""
        try:
            async with self._write_lock:
                self._txn_events = []
                async with self.engine.begin() as conn:
                    yield conn
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

    async def event(
        self, conn: AsyncConnection, campaign_id: str, kind: str, payload: dict[str, Any], now: datetime
    ) -> Event:
        """Append an event row in ``conn``'s write transaction; ``write`` publishes it after the commit."""
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

        Every write that can make a campaign over (``end_if_over``) takes this lock before any other, so
        that a stop and the end of its last call, or the ends of its last two calls, in two processes on
        one database, are serialised: each sees the other's commit, one of them writes the end, and
        the lock order (campaign first) cannot deadlock with a stop cancelling contacts.
        """
        row = (
            await conn.execute(select(T_CAMPAIGN.c.status).where(T_CAMPAIGN.c.id == campaign_id).with_for_update())
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

