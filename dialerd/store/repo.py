"""The Store: every read and write dialerd makes, over SQLAlchemy async (SQLite or PostgreSQL).

Composed of parts: ``base.Transactions`` (the write lock, publish-after-commit, event rows) and the
call store, ``calls``: the implementation of ``ports.CallStore`` chosen once, when the Store is built
(``SqliteCalls`` on an SQLite file, ``SqlCalls`` otherwise; see ``default_calls``). Here: tenants,
keys, campaigns, contact pages and the figures the API shows, and the call store's methods, delegated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, delete, exists, func, insert, literal, literal_column, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from dialerd.domain.call import AttemptState, Skipped
from dialerd.domain.caller_id import REJECTED_SIP_CODES, CallerIdStat
from dialerd.domain.campaign import CampaignStatus
from dialerd.domain.contact import ContactStatus, SkipReason
from dialerd.domain.explain import Tally
from dialerd.domain.rules import BlockReason
from dialerd.domain.zones import ContactZones, TimezoneSource, parse_zones_text
from dialerd.store.base import (
    IN_FLIGHT_ATTEMPT_STATES,
    SHARED_READS,
    T_ATTEMPT,
    T_CAMPAIGN,
    T_CONTACT,
    T_EVENT,
    T_IDEMPOTENCY,
    T_KEY,
    T_PROBLEM,
    T_SUPPRESSION,
    T_TENANT,
    Calls,
    Transactions,
    _attempt_in_flight,
    _Merged,
    _row,
    priority_context,
)
from dialerd.store.cluster import ClusterStore
from dialerd.store.db import UNICODE_LOWER
from dialerd.store.sql_calls import UNFINISHED, SqlCalls, insert_contact_rows
from dialerd.store.sqlite_calls import SqliteCalls, sqlite_file
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
from dialerd.store.webhooks import T_DEAD, T_DELIVERY, WebhookStore
from dialerd.timestamps import rfc3339, utcnow

__all__ = [
    "SHARED_READS", "T_ATTEMPT", "T_CAMPAIGN", "T_CONTACT", "T_EVENT", "T_KEY", "T_TENANT", "CallsFactory", "Store",
    "default_calls", "priority_context",
]

CallsFactory = Callable[[Transactions], Calls]  # SqlCalls or SqliteCalls (the classes themselves)


def default_calls(engine: AsyncEngine) -> CallsFactory:
    """The call store for ``engine``'s database: the sqlite3 driver on an SQLite file (``SqliteCalls``),
    SQLAlchemy on anything else (``SqlCalls``: PostgreSQL, in-memory SQLite)."""
    return SqliteCalls if sqlite_file(engine) is not None else SqlCalls


LIKE_ESCAPE = "\\"


def escape_like(text: str) -> str:
    """``text`` as a LIKE pattern that matches it literally (with ``ESCAPE '\\'``)."""
    return text.replace(LIKE_ESCAPE, LIKE_ESCAPE * 2).replace("%", LIKE_ESCAPE + "%").replace("_", LIKE_ESCAPE + "_")


@dataclass(frozen=True)
class Appended:
    """What ``Store.append_contacts`` did. ``accepted`` False: the campaign's ``status`` (None: gone) refused
    it and nothing was written. ``after_id``: the campaign's last contact id before the append (the new
    contacts are those above it)."""

    status: str | None
    accepted: bool
    added: int = 0
    suppressed: int = 0
    after_id: int = 0


@dataclass(frozen=True, slots=True)
class ContactResult:
    """One contact's line of the results export (``Store.results_page``): the contact's outcome and, from
    its attempts, the last one's ``answered_by`` and ``caller_id`` and the last answered one's talk time."""

    id: int
    phone_e164: str
    status: str
    reason: str | None  # failure_reason, or for a skipped contact why it was skipped
    attempts: int
    last_attempt_at: datetime | None
    hangup_cause: int | None
    sip_code: int | None
    fields: dict[str, str]
    answered_by: str | None = None
    talk_seconds: float | None = None
    caller_id: str | None = None


# Attempt columns the results export shows when the attempt table has them: answered_by (answering-machine
# detection) and caller_id (caller-id pools) are added by migrations of their own features; until those
# are applied, or on a database that predates them, the export's two columns stay empty.
RESULT_ATTEMPT_COLUMNS = ("answered_by", "caller_id")


class Store:
    """Typed access to the database. One instance per daemon, built in the composition root.

    ``calls`` picks the call store's implementation (``SqlCalls`` or ``SqliteCalls``); by default
    ``default_calls(engine)``. It is chosen here, once: no method of either asks which one is in use.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        publish: Callable[[list[Event]], None] | None = None,
        *,
        calls: CallsFactory | None = None,
    ) -> None:
        self.tx = Transactions(engine, publish)
        self.calls: Calls = (calls or default_calls(engine))(self.tx)
        self.webhooks = WebhookStore(self.tx)
        # Several daemons on one PostgreSQL database (issue 13): their rows and the shared claim.
        self.cluster: ClusterStore | None = (
            ClusterStore(self.tx, self.calls) if self.tx.dialect == "postgresql" and isinstance(self.calls, SqlCalls)
            else None
        )

    @property
    def engine(self) -> AsyncEngine:
        return self.tx.engine

    @property
    def dialect(self) -> str:
        return self.tx.dialect

    @property
    def publish(self) -> Callable[[list[Event]], None] | None:
        """Called with each transaction's events right after its commit (under the write lock)."""
        return self.tx.publish

    @publish.setter
    def publish(self, publish: Callable[[list[Event]], None] | None) -> None:
        self.tx.publish = publish

    def write(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A write transaction (``Transactions.write``): commits, then publishes its events."""
        return self.tx.write()

    def read(self) -> AbstractAsyncContextManager[AsyncConnection]:
        return self.tx.read()

    async def ping(self) -> bool:
        return await self.tx.ping()

    async def close(self) -> None:
        await self.calls.close()
        await self.engine.dispose()

    # ---- the call store (ports.CallStore), as ``calls`` implements it ------------------------------

    async def next_due_contacts(self, campaign_id: str, now: datetime, limit: int) -> list[Contact]:
        return await self.calls.next_due_contacts(campaign_id, now, limit)

    async def next_retry_time(self, campaign_id: str) -> datetime | None:
        return await self.calls.next_retry_time(campaign_id)

    async def unfinished_contacts(self, campaign_id: str) -> int:
        return await self.calls.unfinished_contacts(campaign_id)

    async def begin_attempt(
        self, contact: Contact, channel_id: str, caller_id: str | None = None,
    ) -> Attempt | Skipped | None:
        return await self.calls.begin_attempt(contact, channel_id, caller_id)

    async def give_back_attempt(self, channel_id: str) -> bool:
        return await self.calls.give_back_attempt(channel_id)

    async def get_attempt(self, channel_id: str) -> Attempt | None:
        return await self.calls.get_attempt(channel_id)

    async def attempts_in_flight(self, node_id: str | None = None) -> list[Attempt]:
        return await self.calls.attempts_in_flight(node_id)

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
        return await self.calls.record_transition(
            channel_id, attempt_state=attempt_state, attempt_values=attempt_values, contact_status=contact_status,
            contact_values=contact_values, payload=payload, only_from=only_from, opt_out=opt_out,
        )

    async def list_attempts(self, contact_id: int) -> list[Attempt]:
        async with self.read() as conn:
            rows = (
                await conn.execute(
                    select(T_ATTEMPT).where(T_ATTEMPT.c.contact_id == contact_id).order_by(T_ATTEMPT.c.id)
                )
            ).all()
        return [_row(Attempt, r) for r in rows]

    async def attempts_of(self, contact_ids: Sequence[int]) -> dict[int, list[Attempt]]:
        """Every attempt of each of ``contact_ids`` (a page of contacts), oldest first; [] for none."""
        out: dict[int, list[Attempt]] = {cid: [] for cid in contact_ids}
        if not out:
            return out
        async with self.read() as conn:
            rows = (
                await conn.execute(
                    select(T_ATTEMPT).where(T_ATTEMPT.c.contact_id.in_(list(out)))
                    .order_by(T_ATTEMPT.c.contact_id, T_ATTEMPT.c.number, T_ATTEMPT.c.id)
                )
            ).all()
        for r in rows:
            attempt = _row(Attempt, r)
            out[attempt.contact_id].append(attempt)
        return out

    # ---- tenants and keys -------------------------------------------------------------------

    async def upsert_tenant(
        self,
        tenant_id: str,
        name: str,
        concurrent_max: int | None,
        calls_per_minute: int | None,
        defaults: tuple[int, int],
    ) -> Tenant:
        """Create the tenant ``name`` (with ``tenant_id``) or update the limits given."""
        async with self.write() as conn:
            row = (await conn.execute(select(T_TENANT).where(T_TENANT.c.name == name))).first()
            if row is None:
                values = {
                    "id": tenant_id,
                    "name": name,
                    "created_at": utcnow(),
                    "concurrent_max": concurrent_max or defaults[0],
                    "calls_per_minute": calls_per_minute or defaults[1],
                }
                await conn.execute(insert(T_TENANT).values(**values))
                created: Tenant = _row(Tenant, _Merged(values))
                return created
            changes: dict[str, int] = {}
            if concurrent_max is not None:
                changes["concurrent_max"] = concurrent_max
            if calls_per_minute is not None:
                changes["calls_per_minute"] = calls_per_minute
            if changes:
                await conn.execute(update(T_TENANT).where(T_TENANT.c.id == row.id).values(**changes))
            return _row(Tenant, _Merged({**dict(row._mapping), **changes}))  # type: ignore[no-any-return]

    async def tenant_day_usage(self, tenant_id: str, start: datetime, end: datetime) -> tuple[int, float]:
        """The attempts of the tenant's campaigns created in ``[start, end)`` (given back unsent ones, never
        dialled, excluded), and the talk seconds of those of them answered and ended: the usage the daily
        caps count (an attempt counts for the day it started in)."""
        started = and_(T_ATTEMPT.c.created_at >= start, T_ATTEMPT.c.created_at < end,
                       T_ATTEMPT.c.state != AttemptState.NOT_DIALLED.value)
        talk = and_(T_ATTEMPT.c.answered_at.is_not(None), T_ATTEMPT.c.ended_at.is_not(None))
        async with self.read() as conn:
            calls, seconds = (
                await conn.execute(
                    select(func.count(), func.coalesce(func.sum(T_ATTEMPT.c.talk_seconds).filter(talk), 0.0))
                    .select_from(T_ATTEMPT.join(T_CAMPAIGN, T_CAMPAIGN.c.id == T_ATTEMPT.c.campaign_id))
                    .where(T_CAMPAIGN.c.tenant_id == tenant_id, started)
                )
            ).one()
        return int(calls or 0), float(seconds or 0.0)

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        async with self.read() as conn:
            row = (await conn.execute(select(T_TENANT).where(T_TENANT.c.id == tenant_id))).first()
        return None if row is None else _row(Tenant, row)

    async def list_tenants(self) -> list[Tenant]:
        async with self.read() as conn:
            rows = (await conn.execute(select(T_TENANT).order_by(T_TENANT.c.name))).all()
        return [_row(Tenant, r) for r in rows]

    async def add_api_key(self, key_id: str, tenant_id: str, secret_hash: str, label: str) -> None:
        async with self.write() as conn:
            await conn.execute(
                insert(T_KEY).values(
                    id=key_id, tenant_id=tenant_id, secret_hash=secret_hash, label=label, created_at=utcnow()
                )
            )

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        async with self.read() as conn:
            row = (
                await conn.execute(select(T_KEY).where(T_KEY.c.id == key_id, T_KEY.c.revoked_at.is_(None)))
            ).first()
        return None if row is None else _row(ApiKey, row)

    # ---- campaigns ----------------------------------------------------------------------------

    async def insert_campaign(self, campaign: Campaign) -> None:
        async with self.write() as conn:
            await conn.execute(insert(T_CAMPAIGN).values(**campaign.model_dump()))

    async def insert_contacts(self, campaign_id: str, rows: Sequence[dict[str, Any]]) -> None:
        """Bulk-insert contacts; a number already in the campaign is skipped (duplicates collapse)."""
        await self.calls.insert_contacts(campaign_id, rows)

    async def finish_import(self, campaign_id: str, status: CampaignStatus, report: dict[str, Any]) -> None:
        async with self.write() as conn:
            await conn.execute(
                update(T_CAMPAIGN)
                .where(T_CAMPAIGN.c.id == campaign_id, T_CAMPAIGN.c.status == CampaignStatus.IMPORTING.value)
                .values(status=status.value, import_report=report, updated_at=utcnow())
            )

    async def purge_campaign(self, campaign_id: str) -> None:
        """Delete a campaign and everything it owns (in bounded chunks on big campaigns)."""
        for table in (T_DEAD, T_DELIVERY, T_EVENT, T_ATTEMPT, T_PROBLEM):
            async with self.write() as conn:
                await conn.execute(delete(table).where(table.c.campaign_id == campaign_id))
        while True:
            async with self.write() as conn:
                ids = select(T_CONTACT.c.id).where(T_CONTACT.c.campaign_id == campaign_id).limit(20000)
                result = await conn.execute(delete(T_CONTACT).where(T_CONTACT.c.id.in_(ids.scalar_subquery())))
                if not result.rowcount:
                    await conn.execute(delete(T_CAMPAIGN).where(T_CAMPAIGN.c.id == campaign_id))
                    return

    async def stale_imports(self) -> list[str]:
        """Campaigns left half-imported by a crash (their import never finished)."""
        async with self.read() as conn:
            rows = (await conn.execute(select(T_CAMPAIGN.c.id).where(T_CAMPAIGN.c.status == CampaignStatus.IMPORTING.value))).all()
        return [r[0] for r in rows]

    async def pending_zone_counts(self, campaign_id: str, after_id: int = 0) -> list[tuple[tuple[str, ...], int]]:
        """The campaign's pending contacts grouped by their zones (``contact.timezone``): one grouped read,
        a few hundred groups at most whatever the list's size (the import report's preflight).
        ``after_id``: only the contacts above that id (those an append added)."""
        c = T_CONTACT.c
        async with self.read() as conn:
            rows = (
                await conn.execute(
                    select(c.timezone, func.count())
                    .where(c.campaign_id == campaign_id, c.status == ContactStatus.PENDING.value, c.id > after_id)
                    .group_by(c.timezone)
                )
            ).all()
        return [(parse_zones_text(text), int(n)) for text, n in rows]

    async def count_contacts(self, campaign_id: str) -> int:
        async with self.read() as conn:
            return int(
                (
                    await conn.execute(
                        select(func.count()).select_from(T_CONTACT).where(T_CONTACT.c.campaign_id == campaign_id)
                    )
                ).scalar_one()
            )

    async def get_campaign(self, campaign_id: str, tenant_id: str | None = None) -> Campaign | None:
        q = select(T_CAMPAIGN).where(T_CAMPAIGN.c.id == campaign_id, T_CAMPAIGN.c.status != CampaignStatus.IMPORTING.value)
        if tenant_id is not None:
            q = q.where(T_CAMPAIGN.c.tenant_id == tenant_id)
        async with self.read() as conn:
            row = (await conn.execute(q)).first()
        return None if row is None else _row(Campaign, row)

    async def list_campaigns(
        self, tenant_id: str, limit: int, offset: int, status: str | None = None, name: str | None = None
    ) -> tuple[list[Campaign], int]:
        """A page of the tenant's campaigns, newest first; ``name`` keeps those whose name contains it
        (case-insensitive, taken literally: ``%`` and ``_`` are not wildcards)."""
        cond = and_(T_CAMPAIGN.c.tenant_id == tenant_id, T_CAMPAIGN.c.status != CampaignStatus.IMPORTING.value)
        if status is not None:
            cond = and_(cond, T_CAMPAIGN.c.status == status)
        if name:
            # Both sides lowered by the same function, so SQLite (our Unicode lower(), see db.py) and
            # PostgreSQL (its own) each agree with themselves.
            lower = getattr(func, UNICODE_LOWER) if self.dialect == "sqlite" else func.lower
            pattern = "%" + escape_like(name) + "%"
            cond = and_(cond, lower(T_CAMPAIGN.c.name).like(lower(literal(pattern)), escape=LIKE_ESCAPE))
        async with self.read() as conn:
            total = (await conn.execute(select(func.count()).select_from(T_CAMPAIGN).where(cond))).scalar_one()
            rows = (
                await conn.execute(
                    select(T_CAMPAIGN)
                    .where(cond)
                    .order_by(T_CAMPAIGN.c.created_at.desc(), T_CAMPAIGN.c.id)
                    .limit(limit)
                    .offset(offset)
                )
            ).all()
        return [_row(Campaign, r) for r in rows], int(total)

    async def campaigns_with_status(self, *statuses: CampaignStatus) -> list[Campaign]:
        async with self.read() as conn:
            rows = (
                await conn.execute(select(T_CAMPAIGN).where(T_CAMPAIGN.c.status.in_([s.value for s in statuses])))
            ).all()
        return [_row(Campaign, r) for r in rows]

    async def contact_counts(self, campaign_ids: Iterable[str]) -> dict[str, dict[str, int]]:
        ids = list(campaign_ids)
        out: dict[str, dict[str, int]] = {cid: {s.value: 0 for s in ContactStatus} for cid in ids}
        if not ids:
            return out
        async with self.read() as conn:
            rows = (
                await conn.execute(
                    select(T_CONTACT.c.campaign_id, T_CONTACT.c.status, func.count())
                    .where(T_CONTACT.c.campaign_id.in_(ids))
                    .group_by(T_CONTACT.c.campaign_id, T_CONTACT.c.status)
                )
            ).all()
        for cid, status, n in rows:
            out[cid][status] = int(n)
        return out

    async def pending_holds(self, campaign_id: str, now: datetime) -> tuple[int, dict[BlockReason, Tally]]:
        """The campaign's pending contacts (those with no attempt in flight) and, grouped by the per-contact
        reason that holds them back now, how many and the earliest time one is free. One read.

        Returns ``(pending, holds)``; ``pending - sum(holds' counts)`` are eligible now. A contact whose
        retry time (``next_attempt_at``) is still ahead waits for ``retry_delay``; one the claim gate held
        back waits for its ``blocked_reason`` until its ``next_eligible_at``.
        """
        c = T_CONTACT.c
        ahead = c.next_attempt_at > now
        # Each pending contact's hold (NULL: eligible now) and when it lifts, then counted per hold: its
        # retry time while that is ahead, else what the claim gate wrote (calling hours, no_timezone,
        # frequency cap: ``blocked_reason`` until ``next_eligible_at``; NULL: until something changes)
        # while that hold has not lifted. A contact the gate has not looked at yet counts as eligible.
        gated = and_(c.blocked_reason.is_not(None), or_(c.next_eligible_at.is_(None), c.next_eligible_at > now))
        hold = case((ahead, literal_column(f"'{BlockReason.RETRY_DELAY.value}'")), (gated, c.blocked_reason),
                    else_=None).label("hold")
        until = case((ahead, c.next_attempt_at), (gated, c.next_eligible_at), else_=None).label("until")
        per_contact = (
            select(hold, until)
            .where(c.campaign_id == campaign_id, c.status == ContactStatus.PENDING.value, ~_attempt_in_flight(c.id))
            .subquery()
        )
        async with self.read() as conn:
            rows = (
                await conn.execute(
                    select(per_contact.c.hold, func.count(), func.min(per_contact.c.until)).group_by(per_contact.c.hold)
                )
            ).all()
        pending = 0
        holds: dict[BlockReason, Tally] = {}
        for reason, n, first in rows:
            pending += int(n)
            if reason is not None:
                holds[BlockReason(reason)] = Tally(int(n), first)
        return pending, holds

    async def reserved_concurrency(self, tenant_id: str, excluding: str) -> int:
        """Sum of max_concurrent_calls over the tenant's running campaigns other than ``excluding``."""
        async with self.read() as conn:
            total = (
                await conn.execute(
                    select(func.coalesce(func.sum(T_CAMPAIGN.c.max_concurrent_calls), 0)).where(
                        T_CAMPAIGN.c.tenant_id == tenant_id,
                        T_CAMPAIGN.c.status == CampaignStatus.RUNNING.value,
                        T_CAMPAIGN.c.id != excluding,
                    )
                )
            ).scalar_one()
        return int(total)

    async def set_campaign_status(
        self,
        campaign_id: str,
        expected: CampaignStatus,
        new: CampaignStatus,
        *,
        event_payload: dict[str, Any],
        started: bool = False,
        cancel_pending: bool = False,
        only_if_done: bool = False,
    ) -> tuple[bool, list[Event]]:
        """Compare-and-set the status; optionally cancel pending contacts. Returns (changed, events).

        ``only_if_done`` (a running campaign's finish): unchanged while any contact is unfinished, read in
        this transaction under the campaign's row lock, so a finish and an append (``append_contacts``)
        racing each other are serialised: the append is refused after the finish, or the finish after
        the append (its runner then dials the new contacts).
        """
        now = utcnow()
        values: dict[str, Any] = {"status": new.value, "updated_at": now}
        if started:
            values["started_at"] = func.coalesce(T_CAMPAIGN.c.started_at, now)
        if new.terminal:
            values["completed_at"] = now
        if new is not CampaignStatus.SCHEDULED:
            values["start_deferred"] = None  # a deferred start is over once the campaign leaves scheduled
        events: list[Event] = []
        async with self.write() as conn:
            if only_if_done:
                # The lock first: on PostgreSQL an append holding it has committed once we have it, and
                # the next statement (a new snapshot in READ COMMITTED) sees its contacts.
                await self.tx.lock_campaign(conn, campaign_id=campaign_id)
                left = (await conn.execute(select(exists().where(
                    T_CONTACT.c.campaign_id == campaign_id, T_CONTACT.c.status.in_(list(UNFINISHED)))))).scalar_one()
                if left:
                    return False, []
            result = await conn.execute(
                update(T_CAMPAIGN)
                .where(T_CAMPAIGN.c.id == campaign_id, T_CAMPAIGN.c.status == expected.value)
                .values(**values)
            )
            if not result.rowcount:
                return False, []
            if cancel_pending:
                events.extend(await self._cancel_pending(conn, campaign_id, now))
            events.append(
                await self.tx.event(
                    conn, campaign_id, "campaign",
                    {**event_payload, "status": new.value, "at": rfc3339(now)}, now,
                )
            )
            if new.terminal:  # over at once when no call is up; otherwise its last call's end writes it
                end = await self.tx.end_if_over(conn, campaign_id, new.value, now)
                if end is not None:
                    events.append(end)
        return True, events

    async def _cancel_pending(self, conn: AsyncConnection, campaign_id: str, now: datetime) -> list[Event]:
        # One statement picks and changes the rows, so the events name exactly the contacts cancelled.
        result = await conn.execute(
            update(T_CONTACT)
            .where(T_CONTACT.c.campaign_id == campaign_id, T_CONTACT.c.status == ContactStatus.PENDING.value)
            .values(status=ContactStatus.CANCELLED.value, next_attempt_at=None, updated_at=now)
            .returning(T_CONTACT.c.id, T_CONTACT.c.phone_e164, T_CONTACT.c.attempts)
        )
        rows = sorted(result.all(), key=lambda r: r.id)
        if not rows:
            return []
        payloads = [
            {
                "contact_id": r.id,
                "phone_number": r.phone_e164,
                "status": "cancelled",
                "reason": "campaign_stopped",
                "attempt": r.attempts,
                "at": rfc3339(now),
            }
            for r in rows
        ]
        return await self.tx.events(conn, campaign_id, "cancelled", payloads, now)

    # ---- contacts -----------------------------------------------------------------------------

    async def list_contacts(
        self, campaign_id: str, status: str | None, limit: int, offset: int, after_id: int | None = None
    ) -> tuple[list[Contact], int]:
        """A page in id (CSV) order, and how many contacts match in all.

        ``after_id`` pages by key: the index seeks straight to the page, where ``offset`` steps over
        every skipped row (perf, docs/benchmarks.md: 1.5 s at offset 999,900 of 1M contacts on SQLite).
        """
        cond = T_CONTACT.c.campaign_id == campaign_id
        if status is not None:
            cond = and_(cond, T_CONTACT.c.status == status)
        page = cond if after_id is None else and_(cond, T_CONTACT.c.id > after_id)
        async with self.read() as conn:
            total = (await conn.execute(select(func.count()).select_from(T_CONTACT).where(cond))).scalar_one()
            rows = (
                await conn.execute(
                    select(T_CONTACT).where(page).order_by(T_CONTACT.c.id).limit(limit).offset(offset)
                )
            ).all()
        return [_row(Contact, r) for r in rows], int(total)

    async def append_contacts(
        self, campaign_id: str, tenant_id: str, batches: Iterable[Sequence[dict[str, Any]]], *,
        into: Sequence[CampaignStatus], custom_fields: Sequence[str] = (),
    ) -> Appended:
        """Add contacts to an existing campaign, all in one transaction, if its status is one of ``into``.

        The campaign's row is locked first (``lock_campaign``) and its status read under the lock, so an
        append never lands in a campaign that a stop or its runner's finish (``set_campaign_status``
        with ``only_if_done``) completed meanwhile. A number already in the campaign is skipped, so
        ``added`` counts the new contacts only; those on the tenant's suppression list are stored
        ``skipped`` (``suppressed``). ``custom_fields`` new to the campaign are appended to its import
        report's, so the results export has a column for each.
        """
        c = T_CONTACT.c
        now = utcnow()
        async with self.write() as conn:
            status = await self.tx.lock_campaign(conn, campaign_id=campaign_id)
            if status is None or status not in {s.value for s in into}:
                return Appended(status, accepted=False)
            last = int((await conn.execute(
                select(func.coalesce(func.max(c.id), 0)).where(c.campaign_id == campaign_id))).scalar_one())
            for rows in batches:
                await insert_contact_rows(conn, campaign_id, rows)
            new = and_(c.campaign_id == campaign_id, c.id > last)
            added = int((await conn.execute(select(func.count()).select_from(T_CONTACT).where(new))).scalar_one())
            suppressed = 0
            if added:
                listed = select(T_SUPPRESSION.c.number).where(T_SUPPRESSION.c.tenant_id == tenant_id)
                result = await conn.execute(
                    update(T_CONTACT)
                    .where(new, c.status == ContactStatus.PENDING.value, c.phone_e164.in_(listed))
                    .values(status=ContactStatus.SKIPPED.value, reason=SkipReason.SUPPRESSED.value, updated_at=now)
                )
                suppressed = int(result.rowcount or 0)
            report = (await conn.execute(
                select(T_CAMPAIGN.c.import_report).where(T_CAMPAIGN.c.id == campaign_id))).scalar_one() or {}
            known = list(report.get("custom_fields") or [])
            merged = known + [f for f in dict.fromkeys(custom_fields) if f not in known]
            values: dict[str, Any] = {"updated_at": now}
            if merged != known:
                values["import_report"] = {**report, "custom_fields": merged}
            await conn.execute(update(T_CAMPAIGN).where(T_CAMPAIGN.c.id == campaign_id).values(**values))
        return Appended(status, accepted=True, added=added, suppressed=suppressed, after_id=last)

    async def results_page(self, campaign_id: str, status: str | None, after_id: int, limit: int) -> list[ContactResult]:
        """The next ``limit`` contacts after ``after_id`` (keyset, in id order), each with what the results
        export shows of its attempts: two indexed reads per page, whatever the campaign's size."""
        c, a = T_CONTACT.c, T_ATTEMPT.c
        cond = [c.campaign_id == campaign_id, c.id > after_id]
        if status is not None:
            cond.append(c.status == status)
        optional = [a[name] for name in RESULT_ATTEMPT_COLUMNS if name in a]
        async with self.read() as conn:
            contacts = (await conn.execute(
                select(c.id, c.phone_e164, c.status, c.failure_reason, c.reason, c.attempts, c.last_attempt_at,
                       c.hangup_cause, c.sip_code, c.fields)
                .where(*cond).order_by(c.id).limit(limit)
            )).all()
            if not contacts:
                return []
            # The page's id range (a status filter leaves gaps: their attempts are read and dropped).
            attempts = (await conn.execute(
                select(a.contact_id, a.answered_at, a.talk_seconds, *optional)
                .where(a.campaign_id == campaign_id, a.contact_id >= contacts[0].id, a.contact_id <= contacts[-1].id)
                .order_by(a.contact_id, a.number, a.id)
            )).all()
        last: dict[int, Any] = {}
        talk: dict[int, float | None] = {}
        for row in attempts:  # ordered: the last one of each contact wins
            last[row.contact_id] = row
            if row.answered_at is not None:
                talk[row.contact_id] = row.talk_seconds
        out = []
        for r in contacts:
            final = last.get(r.id)
            extra = {name: getattr(final, name) for name in RESULT_ATTEMPT_COLUMNS if name in a} if final else {}
            out.append(ContactResult(
                id=r.id, phone_e164=r.phone_e164, status=r.status, reason=r.failure_reason or r.reason,
                attempts=r.attempts, last_attempt_at=r.last_attempt_at, hangup_cause=r.hangup_cause,
                sip_code=r.sip_code, fields=r.fields or {}, talk_seconds=talk.get(r.id), **extra,
            ))
        return out

    async def get_contact(self, contact_id: int) -> Contact | None:
        async with self.read() as conn:
            row = (await conn.execute(select(T_CONTACT).where(T_CONTACT.c.id == contact_id))).first()
        return None if row is None else _row(Contact, row)

    # ---- events ---------------------------------------------------------------------------------

    async def events_after(self, campaign_id: str, after_id: int, limit: int = 1000) -> list[Event]:
        async with self.read() as conn:
            rows = (
                await conn.execute(
                    select(T_EVENT)
                    .where(T_EVENT.c.campaign_id == campaign_id, T_EVENT.c.id > after_id)
                    .order_by(T_EVENT.c.id)
                    .limit(limit)
                )
            ).all()
        return [_row(Event, r) for r in rows]

    async def has_calls_in_flight(self, campaign_id: str) -> bool:
        """Whether an attempt of the campaign is dialling, ringing or talking (the database's view)."""
        async with self.read() as conn:
            busy = (
                await conn.execute(
                    select(exists().where(T_ATTEMPT.c.campaign_id == campaign_id,
                                          T_ATTEMPT.c.state.in_(IN_FLIGHT_ATTEMPT_STATES)))
                )
            ).scalar_one()
        return bool(busy)

    async def last_event_id(self, campaign_id: str) -> int:
        async with self.read() as conn:
            value = (
                await conn.execute(select(func.max(T_EVENT.c.id)).where(T_EVENT.c.campaign_id == campaign_id))
            ).scalar_one()
        return int(value or 0)

    async def attempt_stats(self, campaign_id: str, since: datetime) -> dict[str, float]:
        """Figures for the metrics snapshot: calls started since ``since``, answer rate, talk time."""
        ended = T_ATTEMPT.c.ended_at.is_not(None)
        async with self.read() as conn:
            row = (
                await conn.execute(
                    select(
                        func.count().filter(T_ATTEMPT.c.created_at >= since),
                        func.count().filter(ended),
                        func.count().filter(and_(ended, T_ATTEMPT.c.answered_at.is_not(None))),
                        func.avg(T_ATTEMPT.c.talk_seconds),
                    ).where(T_ATTEMPT.c.campaign_id == campaign_id)
                )
            ).one()
        started, n_ended, answered, avg_talk = row
        return {
            "calls_last_minute": int(started or 0),
            "ended": int(n_ended or 0),
            "answered": int(answered or 0),
            "avg_talk_seconds": round(float(avg_talk), 2) if avg_talk is not None else 0.0,
        }

    async def caller_id_counts(
        self, campaign_ids: Sequence[str] | None = None, *, ended_since: datetime | None = None,
    ) -> dict[str, list[CallerIdStat]]:
        """Per campaign, per caller id: its attempts (given-back ones aside), answered and rejected (SIP
        603/608), in one grouped read. ``campaign_ids``: those campaigns (each present, maybe []); None: the
        campaigns running or paused, or (with ``ended_since``) completed or failed since then."""
        a = T_ATTEMPT.c
        query = (
            select(a.campaign_id, a.caller_id, func.count(),
                   func.count().filter(a.answered_at.is_not(None)),
                   func.count().filter(a.sip_code.in_(REJECTED_SIP_CODES)))
            .where(a.caller_id.is_not(None), a.state != AttemptState.NOT_DIALLED.value)
            .group_by(a.campaign_id, a.caller_id)
            .order_by(a.campaign_id, a.caller_id)
        )
        out: dict[str, list[CallerIdStat]] = {}
        if campaign_ids is not None:
            out = {cid: [] for cid in campaign_ids}
            if not out:
                return out
            query = query.where(a.campaign_id.in_(list(out)))
        else:
            live = T_CAMPAIGN.c.status.in_([CampaignStatus.RUNNING.value, CampaignStatus.PAUSED.value])
            if ended_since is not None:
                live = or_(live, T_CAMPAIGN.c.completed_at >= ended_since)
            query = query.join(T_CAMPAIGN, T_CAMPAIGN.c.id == a.campaign_id).where(live)
        async with self.read() as conn:
            rows = (await conn.execute(query)).all()
        for cid, caller_id, attempts, answered, rejected in rows:
            out.setdefault(cid, []).append(CallerIdStat(caller_id, int(attempts), int(answered), int(rejected)))
        return out

    # ---- campaign settings, deferred starts (migration 0003) ------------------------------------

    async def update_campaign(
        self, campaign_id: str, tenant_id: str, changes: dict[str, Any], editable: Sequence[CampaignStatus]
    ) -> bool:
        """Apply ``changes`` if the campaign is (still) in an ``editable`` status; False if it is not."""
        async with self.write() as conn:
            had_webhook = None
            if changes.get("webhook_url"):
                had_webhook = (await conn.execute(
                    select(T_CAMPAIGN.c.webhook_url).where(T_CAMPAIGN.c.id == campaign_id)
                )).scalar_one_or_none()
            result = await conn.execute(
                update(T_CAMPAIGN)
                .where(T_CAMPAIGN.c.id == campaign_id, T_CAMPAIGN.c.tenant_id == tenant_id,
                       T_CAMPAIGN.c.status.in_([s.value for s in editable]))
                .values(**changes, updated_at=utcnow())
            )
            if result.rowcount and changes.get("webhook_url") and had_webhook is None:
                # A first webhook gets the events from here on; a changed URL keeps the backlog (the events a
                # wrong URL could not take go to the corrected one).
                await self.webhooks.start_from_now(conn, campaign_id)
            return bool(result.rowcount)

    async def rezone_contacts(self, campaign_id: str, fallback: ContactZones | None) -> None:
        """After a PATCH of the calling hours or the zone: lift the holds they decided (the claim gate
        decides again), and with ``fallback`` give it to the pending contacts whose zones were a fallback
        (campaign, default or none)."""
        pending = (T_CONTACT.c.campaign_id == campaign_id, T_CONTACT.c.status == ContactStatus.PENDING.value)
        async with self.write() as conn:
            if fallback is not None:
                await conn.execute(
                    update(T_CONTACT)
                    .where(*pending, or_(T_CONTACT.c.timezone_source.is_(None),
                                         T_CONTACT.c.timezone_source.in_([TimezoneSource.CAMPAIGN.value,
                                                                          TimezoneSource.DEFAULT.value])))
                    .values(timezone=fallback.text or None,
                            timezone_source=fallback.source.value if fallback.source else None)
                )
            await conn.execute(
                update(T_CONTACT)
                .where(*pending, T_CONTACT.c.blocked_reason.in_([BlockReason.OUTSIDE_CALLING_HOURS.value,
                                                                 BlockReason.NO_TIMEZONE.value]))
                .values(blocked_reason=None, next_eligible_at=None)
            )

    async def set_start_deferred(self, campaign_id: str, reason: str, detail: str) -> bool:
        """Mark a scheduled campaign's start as held back; the first time, append a campaign event.

        Returns True when the campaign was not marked deferred before (the event was written).
        """
        now = utcnow()
        async with self.write() as conn:
            row = (
                await conn.execute(
                    select(T_CAMPAIGN.c.start_deferred).where(
                        T_CAMPAIGN.c.id == campaign_id, T_CAMPAIGN.c.status == CampaignStatus.SCHEDULED.value
                    )
                )
            ).first()
            if row is None:
                return False
            previous = row[0]
            if previous and previous.get("reason") == reason:
                if previous.get("detail") != detail:  # same hold, new figures: keep "since", no new event
                    await conn.execute(update(T_CAMPAIGN).where(T_CAMPAIGN.c.id == campaign_id)
                                       .values(start_deferred={**previous, "detail": detail}))
                return False
            deferred = {"reason": reason, "since": rfc3339(now), "detail": detail}
            await conn.execute(
                update(T_CAMPAIGN).where(T_CAMPAIGN.c.id == campaign_id).values(start_deferred=deferred, updated_at=now)
            )
            await self.tx.event(
                conn, campaign_id, "campaign",
                {"action": "start_deferred", "status": CampaignStatus.SCHEDULED.value, "previous":
                 CampaignStatus.SCHEDULED.value, "reason": reason, "detail": detail, "at": rfc3339(now)}, now,
            )
            return True

    # ---- import problems (migration 0003) --------------------------------------------------------

    async def insert_import_problems(self, campaign_id: str, problems: Sequence[dict[str, Any]]) -> None:
        """Keep rejected rows (line, value, reason, code) for GET /campaigns/{id}/import."""
        if not problems:
            return
        rows = [
            {"campaign_id": campaign_id, "line": p["line"], "value": str(p["value"])[:100],
             "reason": p["reason"], "code": p["code"]}
            for p in problems
        ]
        async with self.write() as conn:
            for start in range(0, len(rows), 5000):
                await conn.execute(insert(T_PROBLEM), rows[start : start + 5000])

    async def import_problems(self, campaign_id: str, limit: int, offset: int) -> tuple[list[ImportProblem], int]:
        cond = T_PROBLEM.c.campaign_id == campaign_id
        async with self.read() as conn:
            total = (await conn.execute(select(func.count()).select_from(T_PROBLEM).where(cond))).scalar_one()
            rows = (
                await conn.execute(select(T_PROBLEM).where(cond).order_by(T_PROBLEM.c.id).limit(limit).offset(offset))
            ).all()
        return [_row(ImportProblem, r) for r in rows], int(total)

    # ---- idempotency keys (migration 0003) ---------------------------------------------------------

    async def claim_idempotency_key(
        self, tenant_id: str, key: str, request_hash: str, owner: str, ttl: timedelta
    ) -> IdempotencyKey | None:
        """Claim ``key`` for a new request (None), or return the row of the request that holds it.

        Rows older than ``ttl`` are removed first. A row still ``in_progress`` under another owner was
        left by a daemon process that is gone (it never finished nor released it): it is taken over.
        """
        now = utcnow()
        where = and_(T_IDEMPOTENCY.c.tenant_id == tenant_id, T_IDEMPOTENCY.c.idem_key == key)
        fresh = {"request_hash": request_hash, "owner": owner, "state": "in_progress", "response_status": None,
                 "response_body": None, "campaign_id": None, "created_at": now}
        async with self.write() as conn:
            await conn.execute(delete(T_IDEMPOTENCY).where(T_IDEMPOTENCY.c.created_at < now - ttl))
            row = (await conn.execute(select(T_IDEMPOTENCY).where(where))).first()
            if row is None:
                await conn.execute(insert(T_IDEMPOTENCY).values(tenant_id=tenant_id, idem_key=key, **fresh))
                return None
            if row.state == "in_progress" and row.owner != owner:
                await conn.execute(update(T_IDEMPOTENCY).where(where).values(**fresh))
                return None
            held: IdempotencyKey = _row(IdempotencyKey, row)
            return held

    async def finish_idempotency_key(
        self, tenant_id: str, key: str, owner: str, status: int, body: str, campaign_id: str | None
    ) -> None:
        async with self.write() as conn:
            await conn.execute(
                update(T_IDEMPOTENCY)
                .where(T_IDEMPOTENCY.c.tenant_id == tenant_id, T_IDEMPOTENCY.c.idem_key == key,
                       T_IDEMPOTENCY.c.owner == owner, T_IDEMPOTENCY.c.state == "in_progress")
                .values(state="done", response_status=status, response_body=body, campaign_id=campaign_id)
            )

    async def release_idempotency_key(self, tenant_id: str, key: str, owner: str) -> None:
        async with self.write() as conn:
            await conn.execute(
                delete(T_IDEMPOTENCY).where(
                    T_IDEMPOTENCY.c.tenant_id == tenant_id, T_IDEMPOTENCY.c.idem_key == key,
                    T_IDEMPOTENCY.c.owner == owner, T_IDEMPOTENCY.c.state == "in_progress",
                )
            )

    # ---- tenants and keys, for the operator's CLI (dialerd keys / dialerd tenants) ------------

    async def ensure_tenant(
        self, tenant_id: str, name: str, concurrent_max: int, calls_per_minute: int,
        rules: Mapping[str, int | str] | None = None,
    ) -> tuple[Tenant, bool]:
        """Create the tenant ``name`` unless it exists; never changes an existing one. Returns (tenant, created).

        ``rules``: its rule limits (``domain.caps.TENANT_RULES``, checked by the caller); absent ones are 0/"".
        """
        values = {
            "id": tenant_id,
            "name": name,
            "created_at": utcnow(),
            "concurrent_max": concurrent_max,
            "calls_per_minute": calls_per_minute,
            **(rules or {}),
        }
        ins = (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(T_TENANT)
        async with self.write() as conn:
            # ON CONFLICT: two `keys create` for a new tenant at once both succeed, on one tenant row.
            result = await conn.execute(ins.values(**values).on_conflict_do_nothing(index_elements=["name"]))
            row = (await conn.execute(select(T_TENANT).where(T_TENANT.c.name == name))).one()
        return _row(Tenant, row), bool(result.rowcount)

    async def get_tenant_by_name(self, name: str) -> Tenant | None:
        async with self.read() as conn:
            row = (await conn.execute(select(T_TENANT).where(T_TENANT.c.name == name))).first()
        return None if row is None else _row(Tenant, row)

    async def set_tenant_limits(
        self, name: str, concurrent_max: int | None, calls_per_minute: int | None,
        rules: Mapping[str, int | str] | None = None,
    ) -> Tenant | None:
        """Change the limits given (None keeps one; ``rules``: rule limits to set); None if there is no tenant ``name``."""
        changes: dict[str, int | str] = {
            k: v for k, v in (("concurrent_max", concurrent_max), ("calls_per_minute", calls_per_minute)) if v is not None
        }
        changes.update(rules or {})
        async with self.write() as conn:
            if changes:
                await conn.execute(update(T_TENANT).where(T_TENANT.c.name == name).values(**changes))
            row = (await conn.execute(select(T_TENANT).where(T_TENANT.c.name == name))).first()
        return None if row is None else _row(Tenant, row)

    async def list_api_keys(self, tenant_name: str | None = None) -> list[tuple[ApiKey, str]]:
        """Every key (revoked ones too) with its tenant's name, oldest first. The hashes stay in the row."""
        q = select(T_KEY, T_TENANT.c.name.label("tenant_name")).join(T_TENANT, T_TENANT.c.id == T_KEY.c.tenant_id)
        if tenant_name is not None:
            q = q.where(T_TENANT.c.name == tenant_name)
        async with self.read() as conn:
            rows = (await conn.execute(q.order_by(T_KEY.c.created_at, T_KEY.c.id))).all()
        out = []
        for r in rows:
            fields = dict(r._mapping)
            name = fields.pop("tenant_name")
            out.append((ApiKey(**fields), str(name)))
        return out

    async def revoke_api_key(self, key_id: str) -> tuple[ApiKey, bool] | None:
        """Mark the key revoked (it answers 401 from then on). (key, newly revoked), or None if unknown."""
        async with self.write() as conn:
            result = await conn.execute(
                update(T_KEY).where(T_KEY.c.id == key_id, T_KEY.c.revoked_at.is_(None)).values(revoked_at=utcnow())
            )
            row = (await conn.execute(select(T_KEY).where(T_KEY.c.id == key_id))).first()
        return None if row is None else (_row(ApiKey, row), bool(result.rowcount))

    async def active_key_counts(self) -> dict[str, int]:
        """Tenant id -> number of keys not revoked."""
        async with self.read() as conn:
            rows = (
                await conn.execute(
                    select(T_KEY.c.tenant_id, func.count()).where(T_KEY.c.revoked_at.is_(None)).group_by(T_KEY.c.tenant_id)
                )
            ).all()
        return {tid: int(n) for tid, n in rows}

    async def touch_api_key(self, key_id: str, at: datetime) -> None:
        """Record that the key authenticated a request at ``at`` (``last_used_at``, migration 0004)."""
        async with self.write() as conn:
            await conn.execute(update(T_KEY).where(T_KEY.c.id == key_id).values(last_used_at=at))

    # ---- suppression lists (do-not-call), per tenant ---------------------------------------------

    async def add_suppressions(self, tenant_id: str, numbers: Sequence[str], reasons: Sequence[str],
                               source: str) -> tuple[int, int]:
        """Put distinct E.164 ``numbers`` (each with its reason) on the tenant's list, in one transaction.

        Returns (added, already there). A number already listed keeps its reason, source and time.
        """
        now = utcnow()
        added = already = 0
        async with self.write() as conn:
            for start in range(0, len(numbers), 500):
                chunk = list(numbers[start:start + 500])
                present = set((await conn.execute(
                    select(T_SUPPRESSION.c.number).where(T_SUPPRESSION.c.tenant_id == tenant_id,
                                                         T_SUPPRESSION.c.number.in_(chunk))
                )).scalars())
                rows = [{"tenant_id": tenant_id, "number": n, "reason": r, "source": source, "created_at": now}
                        for n, r in zip(chunk, reasons[start:start + 500], strict=True) if n not in present]
                already += len(present)
                if rows:
                    dialect_insert = sqlite.insert if self.dialect == "sqlite" else postgresql.insert
                    # Another process may add one meanwhile: it is kept, and counted as added here.
                    await conn.execute(dialect_insert(T_SUPPRESSION).on_conflict_do_nothing(
                        index_elements=["tenant_id", "number"]), rows)
                    added += len(rows)
        return added, already

    async def list_suppressions(self, tenant_id: str, number: str | None, limit: int,
                                offset: int) -> tuple[list[Suppression], int]:
        """A page of the tenant's list, newest first (one entry at most when ``number`` is given)."""
        where = [T_SUPPRESSION.c.tenant_id == tenant_id]
        if number is not None:
            where.append(T_SUPPRESSION.c.number == number)
        async with self.read() as conn:
            total = (await conn.execute(select(func.count()).select_from(T_SUPPRESSION).where(*where))).scalar_one()
            rows = (await conn.execute(
                select(T_SUPPRESSION).where(*where)
                .order_by(T_SUPPRESSION.c.created_at.desc(), T_SUPPRESSION.c.number).limit(limit).offset(offset)
            )).all()
        return [_row(Suppression, r) for r in rows], int(total)

    async def delete_suppression(self, tenant_id: str, number: str) -> bool:
        """Take ``number`` off the tenant's list; False if it was not on it."""
        async with self.write() as conn:
            result = await conn.execute(
                delete(T_SUPPRESSION).where(T_SUPPRESSION.c.tenant_id == tenant_id, T_SUPPRESSION.c.number == number)
            )
        return bool(result.rowcount)

    async def skip_suppressed(self, campaign_id: str, tenant_id: str) -> int:
        """At import: every pending contact of the campaign whose number is on its tenant's list becomes
        ``skipped`` with reason ``suppressed``. Returns how many."""
        listed = select(T_SUPPRESSION.c.number).where(T_SUPPRESSION.c.tenant_id == tenant_id)
        async with self.write() as conn:
            result = await conn.execute(
                update(T_CONTACT)
                .where(T_CONTACT.c.campaign_id == campaign_id, T_CONTACT.c.status == ContactStatus.PENDING.value,
                       T_CONTACT.c.phone_e164.in_(listed))
                .values(status=ContactStatus.SKIPPED.value, reason=SkipReason.SUPPRESSED.value, updated_at=utcnow())
            )
        return int(result.rowcount or 0)
