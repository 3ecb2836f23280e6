"""``SqliteCalls``: the call store (``ports.CallStore``) on an SQLite file, through the sqlite3 driver.

Perf (docs/benchmarks.md, sections 1 and 1b): the per-call statements as plain sqlite3 calls on a
dedicated connection, one thread hop per transaction (store/direct.py), took dispatching from 0.35 to
0.95 of the bare loop at 50 calls/s. They are ``SqlCalls``' statements one for one, and leave the
same rows (tests/integration/test_store_direct.py). The two that are rare (an attempt given back, the
attempts in flight after a restart) keep SqlCalls' SQLAlchemy statements; the write lock both share
(``Transactions``) orders them with the driver's writes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from dialerd.domain.call import AttemptState, Skipped, retry_after_stop
from dialerd.domain.campaign import END_EVENT, CampaignStatus
from dialerd.domain.contact import ContactStatus, SkipReason
from dialerd.domain.suppression import OPT_OUT_REASON, SuppressionSource
from dialerd.errors import StoreError
from dialerd.store.base import (
    IN_FLIGHT_ATTEMPT_STATES,
    T_ATTEMPT,
    T_CONTACT,
    T_EVENT,
    Transactions,
    call_event_payload,
    skipped_event_payload,
)
from dialerd.store.direct import INSERT_CONTACTS, HotPath, SqliteDirect, contact_tuples
from dialerd.store.sql_calls import UNFINISHED, SqlCalls
from dialerd.store.tables import Attempt, Contact, Event
from dialerd.timestamps import utcnow

TERMINAL_STATUSES = tuple(s.value for s in CampaignStatus if s.terminal)
_T = TypeVar("_T")


def sqlite_file(engine: AsyncEngine) -> str | None:
    """The path of the engine's SQLite database file; None for any other database, in-memory SQLite
    included (its databases are per connection, so a connection of our own would see another one)."""
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database and database != ":memory:" and not database.startswith("file:"):
        return database
    return None


class SqliteCalls:
    """The dispatcher's and the follower's reads and writes, for every call, on the sqlite3 driver."""

    def __init__(self, tx: Transactions) -> None:
        path = sqlite_file(tx.engine)
        if path is None:
            raise ValueError(f"SqliteCalls needs an SQLite database file, not {tx.engine.url!r}")
        self.tx = tx
        self.direct = SqliteDirect(path)
        self._sql = SqlCalls(tx)  # for the two rare operations, see the module docstring
        self._statements = HotPath({"attempt": T_ATTEMPT, "contact": T_CONTACT, "event": T_EVENT},
                            tx.engine.dialect, IN_FLIGHT_ATTEMPT_STATES)

    async def close(self) -> None:
        await self.direct.close()

    async def _read(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        try:
            return await self.direct.read(fn)
        except sqlite3.Error as exc:
            raise StoreError(f"database error: {exc.__class__.__name__}") from exc

    async def _write(self, fn: Callable[[sqlite3.Connection], tuple[_T, list[Event]]]) -> _T:
        """A write transaction on the driver: the same lock and publish order as ``Transactions.write``."""
        try:
            return await self.tx.write_elsewhere(lambda: self.direct.transaction(fn))
        except sqlite3.Error as exc:
            raise StoreError(f"database error: {exc.__class__.__name__}") from exc

    async def next_due_contacts(self, campaign_id: str, now: datetime, limit: int) -> list[Contact]:
        """Pending contacts whose next attempt is due, oldest first."""
        stmts = self._statements
        found = await self._read(
            lambda conn: stmts.next_due_contacts(conn, campaign_id, now, ContactStatus.PENDING.value, limit)
        )
        return [Contact(**r) for r in found]

    async def next_retry_time(self, campaign_id: str) -> datetime | None:
        """The earliest next_attempt_at among pending contacts (None if there are none waiting)."""
        stmts = self._statements
        found: datetime | None = await self._read(
            lambda conn: stmts.next_retry_time(conn, campaign_id, ContactStatus.PENDING.value)
        )
        return found

    async def unfinished_contacts(self, campaign_id: str) -> int:
        stmts = self._statements
        return await self._read(lambda conn: stmts.count_contacts(conn, campaign_id, UNFINISHED))

    async def insert_contacts(self, campaign_id: str, rows: Sequence[dict[str, Any]]) -> None:
        """Bulk-insert contacts; a number already in the campaign is skipped (duplicates collapse)."""
        if not rows:
            return
        values = contact_tuples(self.tx.engine.dialect, campaign_id, rows)

        # The tuples (and the fields' JSON) are built in the driver's thread, so the importer's next
        # batch is parsed meanwhile (importer.py overlaps the two).
        def insert(conn: sqlite3.Connection) -> tuple[None, list[Event]]:
            conn.executemany(INSERT_CONTACTS, values())
            return None, []

        await self._write(insert)

    async def begin_attempt(
        self, contact: Contact, channel_id: str, caller_id: str | None = None,
    ) -> Attempt | Skipped | None:
        """Record the attempt *before* the originate leaves. None if the contact is no longer pending;
        ``Skipped`` (no attempt) if its number is on its tenant's suppression list now (as SqlCalls)."""
        now = utcnow()
        stmts = self._statements
        values: dict[str, Any] = {
            "contact_id": contact.id, "campaign_id": contact.campaign_id, "number": contact.attempts + 1,
            "channel_id": channel_id, "state": AttemptState.DIALING.value, "created_at": now,
            "caller_id": caller_id or None,
        }
        pending, contact_id = ContactStatus.PENDING.value, int(contact.id or 0)

        def run(conn: sqlite3.Connection) -> tuple[int | Skipped | None, list[Event]]:
            if stmts.attempt_busy(conn, contact_id):
                return None, []
            if stmts.suppressed(conn, contact.campaign_id, contact.phone_e164):
                reason = SkipReason.SUPPRESSED
                if not stmts.skip(conn, contact_id, pending, contact.attempts, ContactStatus.SKIPPED.value,
                                  reason.value, now):
                    return None, []
                payload = skipped_event_payload(contact_id=contact_id, phone_number=contact.phone_e164,
                                                reason=reason.value, now=now)
                kind = ContactStatus.SKIPPED.value
                event_id = stmts.insert_event(conn, contact.campaign_id, kind, payload, now)
                return Skipped(contact_id, reason), [Event(id=event_id, campaign_id=contact.campaign_id, kind=kind,
                                                           payload=payload, created_at=now)]
            return stmts.begin_attempt(conn, values, pending, contact.attempts), []

        claimed = await self._write(run)
        if claimed is None or isinstance(claimed, Skipped):
            return claimed
        return Attempt(id=claimed, **values)

    async def give_back_attempt(self, channel_id: str) -> bool:
        """An attempt that never reached the PBX: mark it not_dialled and return its count to the contact
        (SqlCalls' statements: a refused originate is rare, so it has no driver-level version)."""
        return await self._sql.give_back_attempt(channel_id)

    async def get_attempt(self, channel_id: str) -> Attempt | None:
        stmts = self._statements
        found = await self._read(lambda conn: stmts.get_attempt(conn, channel_id))
        return None if found is None else Attempt(**found)

    async def attempts_in_flight(self, node_id: str | None = None) -> list[Attempt]:
        """SqlCalls' statement: read once after a restart, so it has no driver-level version."""
        return await self._sql.attempts_in_flight(node_id)

    async def record_transition(
        self,
        channel_id: str,
        *,
        attempt_state: str,
        attempt_values: dict[str, Any],
        contact_status: ContactStatus,
        contact_values: dict[str, Any],
        payload: dict[str, Any],
        only_from: Sequence[str],
        opt_out: bool = False,
    ) -> tuple[Attempt, Event] | None:
        """Move an attempt and its contact on, and append the event, in one transaction: SqlCalls'
        three statements and the same event (``only_from`` and ``opt_out`` as there)."""
        now = utcnow()
        # A call out of flight may be its campaign's last after a stop: the end is then due (end_if_over).
        final = attempt_state not in IN_FLIGHT_ATTEMPT_STATES
        stmts, moves_from = self._statements, tuple(only_from)

        def run(conn: sqlite3.Connection) -> tuple[tuple[Attempt, Event] | None, list[Event]]:
            status, values, details = contact_status, contact_values, payload
            if final and status is ContactStatus.PENDING:  # as SqlCalls: a retry after a stop is cancelled
                status, values, details = retry_after_stop(
                    status, values, details, stmts.campaign_of_attempt_terminal(conn, channel_id, TERMINAL_STATUSES))

            def event(attempt: dict[str, Any], contact: tuple[Any, ...] | None) -> tuple[str, dict[str, Any]]:
                return attempt["campaign_id"], call_event_payload(
                    contact_id=attempt["contact_id"], phone_number=contact[0] if contact else None,
                    status=status.value, attempt=attempt["number"], channel_id=channel_id, now=now,
                    details=details,
                )

            moved = stmts.transition(
                conn, channel_id, moves_from, {"state": attempt_state, **attempt_values},
                {"status": status.value, "updated_at": now, **values}, event,
            )
            if moved is None:
                return None, []
            attempt, event_id, campaign_id, full = moved
            ev = Event(id=event_id, campaign_id=campaign_id, kind=status.value, payload=full, created_at=now)
            events = [ev]
            if opt_out and full.get("phone_number"):
                stmts.suppress(conn, campaign_id, full["phone_number"], OPT_OUT_REASON,
                               SuppressionSource.OPT_OUT.value, now)
            if final:  # the same check as Transactions.end_if_over, in this transaction
                end = stmts.end_if_over(conn, campaign_id, now, TERMINAL_STATUSES)
                if end is not None:
                    end_id, end_payload = end
                    events.append(Event(id=end_id, campaign_id=campaign_id, kind=END_EVENT, payload=end_payload,
                                        created_at=now))
            return (Attempt(**attempt), ev), events

        return await self._write(run)
