"""``SqlCalls``: the call store (``ports.CallStore``) over SQLAlchemy async, on PostgreSQL or SQLite.

The Store uses it on PostgreSQL and on in-memory SQLite databases (they are per connection, so the
sqlite3 driver's own connection could not see them); an SQLite file gets ``SqliteCalls`` instead
(store/sqlite_calls.py), which runs the same statements on the driver. The store tests run both.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import case, exists, func, insert, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from dialerd.domain.call import AttemptState, Skipped, retry_after_stop
from dialerd.domain.campaign import CampaignStatus
from dialerd.domain.contact import ContactStatus, SkipReason
from dialerd.domain.suppression import OPT_OUT_REASON, SuppressionSource
from dialerd.store.base import (
    IN_FLIGHT_ATTEMPT_STATES,
    T_ATTEMPT,
    T_CAMPAIGN,
    T_CONTACT,
    T_SUPPRESSION,
    T_TENANT,
    Transactions,
    _attempt_in_flight,
    _Merged,
    _row,
    call_event_payload,
    dialing_attempt,
    of_campaign,
    skipped_event_payload,
)
from dialerd.store.direct import INSERT_CONTACTS, contact_tuples
from dialerd.store.gate import UNCOUNTED_ATTEMPT_STATE, ClaimFacts, claim_hold
from dialerd.store.tables import Attempt, Contact, Event
from dialerd.timestamps import utcnow

# When a pending contact may next be claimed (see next_retry_time).
_WAKE = case((T_CONTACT.c.blocked_reason.is_(None), T_CONTACT.c.next_attempt_at),
             else_=T_CONTACT.c.next_eligible_at)
UNFINISHED = (ContactStatus.PENDING.value, ContactStatus.ORIGINATED.value, ContactStatus.CONNECTED.value)


async def insert_contact_rows(conn: AsyncConnection, campaign_id: str, rows: Sequence[dict[str, Any]]) -> None:
    """Insert pending contacts in ``conn``'s write transaction; a number already in the campaign is skipped.

    The one bulk insert of both backends: ``SqlCalls.insert_contacts`` (an import's batch, its own
    transaction) and ``Store.append_contacts`` (every batch of an append, in one transaction).
    """
    if not rows:
        return
    dialect = conn.dialect
    if dialect.name == "sqlite":
        # The statement SqliteCalls runs on the driver (its values already converted, see there), here
        # through the pool's connection.
        await conn.exec_driver_sql(INSERT_CONTACTS, contact_tuples(dialect, campaign_id, rows)())
        return
    stmt = postgresql.insert(T_CONTACT).on_conflict_do_nothing(index_elements=["campaign_id", "phone_e164"])
    now = utcnow()
    contacts = [
        {
            "campaign_id": campaign_id,
            "line": r["line"],
            "phone_e164": r["phone_e164"],
            "raw_number": r["raw_number"][:100],
            "fields": r["fields"],
            "status": ContactStatus.PENDING.value,
            "attempts": 0,
            "updated_at": now,
            "last_attempt_at": None,
            "next_attempt_at": None,
            "failure_reason": None,
            "hangup_cause": None,
            "sip_code": None,
            "timezone": r.get("timezone"),
            "timezone_source": r.get("timezone_source"),
        }
        for r in rows
    ]
    await conn.execute(stmt, contacts)


class SqlCalls:
    """The dispatcher's and the follower's reads and writes, for every call, through SQLAlchemy."""

    def __init__(self, tx: Transactions) -> None:
        self.tx = tx

    async def close(self) -> None:
        """Nothing of its own to close: it uses the engine's pool, which the Store disposes."""

    async def next_due_contacts(self, campaign_id: str, now: datetime, limit: int) -> list[Contact]:
        """Pending contacts whose next attempt is due, oldest first."""
        async with self.tx.read() as conn:
            rows = (
                await conn.execute(
                    select(T_CONTACT)
                    .where(
                        of_campaign(campaign_id),
                        T_CONTACT.c.status == ContactStatus.PENDING.value,
                        or_(T_CONTACT.c.next_attempt_at.is_(None), T_CONTACT.c.next_attempt_at <= now),
                        # Held back by the claim gate: skipped until its next_eligible_at (never, if none).
                        or_(T_CONTACT.c.blocked_reason.is_(None), T_CONTACT.c.next_eligible_at <= now),
                        ~_attempt_in_flight(T_CONTACT.c.id),
                    )
                    .order_by(T_CONTACT.c.campaign_id, T_CONTACT.c.id)
                    .limit(limit)
                )
            ).all()
        return [_row(Contact, r) for r in rows]

    async def next_retry_time(self, campaign_id: str) -> datetime | None:
        """The earliest time a waiting pending contact may be claimed: its next_eligible_at while the gate
        holds it (none for a hold with no end), else its next_attempt_at (None if none is waiting)."""
        async with self.tx.read() as conn:
            value = (
                await conn.execute(
                    select(func.min(_WAKE)).where(
                        T_CONTACT.c.campaign_id == campaign_id,
                        T_CONTACT.c.status == ContactStatus.PENDING.value,
                    )
                )
            ).scalar_one()
        # func.min keeps the column type, so UTCDateTime turns it back into an aware datetime.
        return value  # type: ignore[no-any-return]

    async def unfinished_contacts(self, campaign_id: str) -> int:
        async with self.tx.read() as conn:
            return int(
                (
                    await conn.execute(
                        select(func.count())
                        .select_from(T_CONTACT)
                        .where(T_CONTACT.c.campaign_id == campaign_id, T_CONTACT.c.status.in_(list(UNFINISHED)))
                    )
                ).scalar_one()
            )

    async def insert_contacts(self, campaign_id: str, rows: Sequence[dict[str, Any]]) -> None:
        """Bulk-insert contacts; a number already in the campaign is skipped (duplicates collapse)."""
        if not rows:
            return
        async with self.tx.write() as conn:
            await insert_contact_rows(conn, campaign_id, rows)

    # ---- attempts (the dispatcher's writes) -----------------------------------------------------

    async def begin_attempt(
        self, contact: Contact, channel_id: str, caller_id: str | None = None,
    ) -> Attempt | Skipped | None:
        """Record the attempt *before* the originate leaves. None if the contact is no longer pending;
        ``Skipped`` (no attempt) if its number is on its tenant's suppression list now."""
        now = utcnow()
        async with self.tx.write() as conn:
            # A contact whose previous attempt is still unresolved (e.g. found again after a crash and
            # not yet reconciled) stays pending but must not be dialled a second time.
            if (await conn.execute(select(_attempt_in_flight(contact.id)))).scalar_one():
                return None
            # The list is checked in the claim's transaction: a number suppressed while the campaign
            # runs (or opted out on another campaign's call) is skipped, never dialled.
            if (await conn.execute(select(suppressed(contact.campaign_id, contact.phone_e164)))).scalar_one():
                return await self.skip_in(conn, contact, now)
            # The claim gate (store/gate.py), in this transaction: held back, it writes why and until when.
            if await self.held_in(conn, contact.id, now):
                return None
            result = await conn.execute(
                update(T_CONTACT)
                .where(
                    T_CONTACT.c.id == contact.id,
                    T_CONTACT.c.status == ContactStatus.PENDING.value,
                    T_CONTACT.c.attempts == contact.attempts,
                )
                .values(attempts=T_CONTACT.c.attempts + 1, last_attempt_at=now, updated_at=now,
                        blocked_reason=None, next_eligible_at=None)
            )
            if not result.rowcount:
                return None
            values = dialing_attempt(contact, channel_id, caller_id, now)
            attempt_id = (
                await conn.execute(insert(T_ATTEMPT).values(**values).returning(T_ATTEMPT.c.id))
            ).scalar_one()
        attempt: Attempt = _row(Attempt, _Merged({"id": int(attempt_id), **values}))
        return attempt

    async def skip_in(self, conn: AsyncConnection, contact: Contact, now: datetime) -> Skipped | None:
        reason = SkipReason.SUPPRESSED
        moved = await conn.execute(
            update(T_CONTACT)
            .where(T_CONTACT.c.id == contact.id, T_CONTACT.c.status == ContactStatus.PENDING.value,
                   T_CONTACT.c.attempts == contact.attempts)
            .values(status=ContactStatus.SKIPPED.value, reason=reason.value, next_attempt_at=None, updated_at=now)
        )
        if not moved.rowcount:
            return None
        payload = skipped_event_payload(contact_id=int(contact.id or 0), phone_number=contact.phone_e164,
                                        reason=reason.value, now=now)
        await self.tx.event(conn, contact.campaign_id, ContactStatus.SKIPPED.value, payload, now)
        return Skipped(int(contact.id or 0), reason)

    async def held_in(self, conn: Any, contact_id: int | None, now: datetime) -> bool:
        """Ask the claim gate about the pending contact; if held, write its blocked_reason and
        next_eligible_at (so the candidate query skips it until then) and answer True."""
        row = (
            await conn.execute(
                select(T_CAMPAIGN.c.calling_hours, T_CONTACT.c.timezone, T_CONTACT.c.next_attempt_at,
                       T_CONTACT.c.phone_e164, T_CAMPAIGN.c.tenant_id, T_TENANT.c.max_attempts_per_number,
                       T_TENANT.c.frequency_window_hours)
                .select_from(T_CONTACT.join(T_CAMPAIGN, T_CAMPAIGN.c.id == T_CONTACT.c.campaign_id)
                             .join(T_TENANT, T_TENANT.c.id == T_CAMPAIGN.c.tenant_id))
                .where(T_CONTACT.c.id == contact_id, T_CONTACT.c.status == ContactStatus.PENDING.value)
            )
        ).first()
        if row is None:
            return False  # no longer pending: the guarded update below finds nothing either
        facts = ClaimFacts(*row)
        attempts: list[datetime] = []
        if facts.cap.active:
            attempts = list((await conn.execute(
                select(T_ATTEMPT.c.created_at)
                .select_from(T_ATTEMPT.join(T_CONTACT, T_CONTACT.c.id == T_ATTEMPT.c.contact_id)
                             .join(T_CAMPAIGN, T_CAMPAIGN.c.id == T_ATTEMPT.c.campaign_id))
                .where(T_CONTACT.c.phone_e164 == facts.phone_e164, T_CAMPAIGN.c.tenant_id == facts.tenant_id,
                       T_ATTEMPT.c.created_at > facts.cap.window_start(now),
                       T_ATTEMPT.c.state != UNCOUNTED_ATTEMPT_STATE)
            )).scalars())
        hold = claim_hold(facts, attempts, now)
        if hold is None:
            return False
        await conn.execute(
            update(T_CONTACT).where(T_CONTACT.c.id == contact_id)
            .values(blocked_reason=hold.reason.value, next_eligible_at=hold.until)
        )
        return True

    async def give_back_attempt(self, channel_id: str) -> bool:
        """An attempt that never reached the PBX: mark it not_dialled and return its count to the contact.

        The contact stayed pending throughout (it only becomes originated once the PBX accepts), so no
        event is written. False if the attempt is no longer dialing.
        """
        async with self.tx.write() as conn:
            # The last attempt of a stopped campaign may be this one: its end is due then (end_if_over).
            status = await self.tx.lock_campaign(conn, campaign_id=self._campaign_of(channel_id))
            row = (
                await conn.execute(
                    select(T_ATTEMPT).where(T_ATTEMPT.c.channel_id == channel_id).with_for_update()
                )
            ).first()
            # From dialing only: an originated attempt's contact is originated too (a refused originate
            # is ended through record_transition, CallFollower.ended).
            if row is None or row.state != AttemptState.DIALING.value:
                return False
            moved = await conn.execute(
                update(T_ATTEMPT)
                .where(T_ATTEMPT.c.id == row.id, T_ATTEMPT.c.state == AttemptState.DIALING.value)
                .values(state=AttemptState.NOT_DIALLED.value, reason=AttemptState.NOT_DIALLED.value)
            )
            if not moved.rowcount:
                return False
            await conn.execute(
                update(T_CONTACT)
                .where(T_CONTACT.c.id == row.contact_id, T_CONTACT.c.status == ContactStatus.PENDING.value)
                .values(attempts=func.max(T_CONTACT.c.attempts - 1, 0) if self.tx.dialect == "sqlite"
                        else func.greatest(T_CONTACT.c.attempts - 1, 0), updated_at=utcnow())
            )
            await self.tx.end_if_over(conn, row.campaign_id, status, utcnow())
        return True

    @staticmethod
    def _campaign_of(channel_id: str) -> Any:
        """SQL: the id of the campaign the attempt ``channel_id`` belongs to."""
        return select(T_ATTEMPT.c.campaign_id).where(T_ATTEMPT.c.channel_id == channel_id).scalar_subquery()

    async def get_attempt(self, channel_id: str) -> Attempt | None:
        async with self.tx.read() as conn:
            row = (await conn.execute(select(T_ATTEMPT).where(T_ATTEMPT.c.channel_id == channel_id))).first()
        return None if row is None else _row(Attempt, row)

    async def attempts_in_flight(self, node_id: str | None = None) -> list[Attempt]:
        mine = (or_(T_ATTEMPT.c.node_id == node_id, T_ATTEMPT.c.node_id.is_(None)) if node_id is not None
                else literal(True))
        async with self.tx.read() as conn:
            rows = (
                await conn.execute(
                    select(T_ATTEMPT)
                    .where(T_ATTEMPT.c.state.in_(IN_FLIGHT_ATTEMPT_STATES), mine)
                    .order_by(T_ATTEMPT.c.id)
                )
            ).all()
        return [_row(Attempt, r) for r in rows]

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
        """Move an attempt and its contact on, and append the event, in one transaction.

        ``only_from`` lists the attempt states this move is valid from; anything else (a duplicate or
        late event) changes nothing and returns None. ``opt_out``: the contact's number joins its
        tenant's suppression list (source ``opt_out``) in the same transaction.
        """
        now = utcnow()
        # A call out of flight may be its campaign's last after a stop: the end is then due (end_if_over).
        final = attempt_state not in IN_FLIGHT_ATTEMPT_STATES
        async with self.tx.write() as conn:
            status = await self.tx.lock_campaign(conn, campaign_id=self._campaign_of(channel_id)) if final else None
            if final:  # a retry decided before a stop that committed meanwhile is cancelled (domain/call.py)
                contact_status, contact_values, payload = retry_after_stop(
                    contact_status, contact_values, payload,
                    status is not None and CampaignStatus(status).terminal)
            # Perf (docs/benchmarks.md): three statements, not five; this runs three times per call.
            # The conditional UPDATE both takes the row lock (PostgreSQL re-checks its WHERE after
            # waiting for a concurrent writer) and tests the state, as SELECT FOR UPDATE + UPDATE did;
            # RETURNING hands back the moved row, so no separate SELECT of the attempt or the contact.
            row = (
                await conn.execute(
                    update(T_ATTEMPT)
                    .where(T_ATTEMPT.c.channel_id == channel_id, T_ATTEMPT.c.state.in_(only_from))
                    .values(state=attempt_state, **attempt_values)
                    .returning(*T_ATTEMPT.c)
                )
            ).first()
            if row is None:  # unknown, or not in an only_from state (duplicate/late event, other writer)
                return None
            contact = (
                await conn.execute(
                    update(T_CONTACT)
                    .where(T_CONTACT.c.id == row.contact_id)
                    .values(status=contact_status.value, updated_at=now, **contact_values)
                    .returning(T_CONTACT.c.phone_e164, T_CONTACT.c.attempts)
                )
            ).first()
            full = call_event_payload(
                contact_id=row.contact_id, phone_number=contact.phone_e164 if contact else None,
                status=contact_status.value, attempt=row.number, channel_id=channel_id, now=now, details=payload,
            )
            event = await self.tx.event(conn, row.campaign_id, contact_status.value, full, now)
            if opt_out and contact is not None:
                await conn.execute(self._suppress(row.campaign_id, contact.phone_e164, now))
            if final:
                await self.tx.end_if_over(conn, row.campaign_id, status, now)
        attempt: Attempt = _row(Attempt, row)  # RETURNING gave the row as updated
        return attempt, event

    def _suppress(self, campaign_id: str, number: str, now: datetime) -> Any:
        """SQL: put ``number`` on the list of ``campaign_id``'s tenant as an opt-out (kept if already there)."""
        dialect_insert = sqlite.insert if self.tx.dialect == "sqlite" else postgresql.insert
        tenant = select(T_CAMPAIGN.c.tenant_id).where(T_CAMPAIGN.c.id == campaign_id)
        return (
            dialect_insert(T_SUPPRESSION)
            .from_select(
                ["tenant_id", "number", "reason", "source", "created_at"],
                select(tenant.scalar_subquery(), literal(number), literal(OPT_OUT_REASON),
                       literal(SuppressionSource.OPT_OUT.value), literal(now, T_SUPPRESSION.c.created_at.type)),
            )
            .on_conflict_do_nothing(index_elements=["tenant_id", "number"])
        )


def suppressed(campaign_id: str, number: str) -> Any:
    """SQL: ``number`` is on the suppression list of ``campaign_id``'s tenant."""
    tenant = select(T_CAMPAIGN.c.tenant_id).where(T_CAMPAIGN.c.id == campaign_id).scalar_subquery()
    return exists().where(T_SUPPRESSION.c.tenant_id == tenant, T_SUPPRESSION.c.number == number)
