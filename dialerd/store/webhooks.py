"""The webhooks' outbox reads and cursor writes (domain/webhooks.py has the rules).

The outbox is the ``event`` table: each state change appends its event in the transaction that makes the
change, so a kill -9 right after a commit loses no event to deliver. ``webhook_delivery`` holds each
campaign's cursor (``delivered_through``: every event up to it was delivered, or given up as dead) and the
state of the event at the head. Events of one campaign are committed in id order (one writer at a time,
store/base.py), so reading ``id > delivered_through`` never passes over an event committed later.

The lease (migration 0014): with several daemons on one database, the one named in ``lease_owner`` delivers
the campaign's events until ``lease_until``. ``take`` is one conditional statement (the lease is free, has
lapsed, or is already the caller's), and every write of the cursor or the head's state is fenced by it: it
applies only while the writer holds the lease, renews it, and tells the writer when it no longer does. Lease
times are the database's clock on PostgreSQL (the daemons' clocks need not agree) and this process's on
SQLite, which one daemon uses at a time.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, delete, func, insert, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from dialerd.domain.webhooks import DeliveryState
from dialerd.store.base import T_CAMPAIGN, T_EVENT, Transactions, _row
from dialerd.store.tables import Event, UTCDateTime, WebhookDeadEvent, WebhookDelivery
from dialerd.timestamps import utcnow

T_DELIVERY = WebhookDelivery.__table__  # type: ignore[attr-defined]
T_DEAD = WebhookDeadEvent.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Target:
    """A campaign's webhook as the delivery worker needs it (the secret never leaves the daemon)."""

    campaign_id: str
    url: str
    secret: str


@dataclass(frozen=True)
class Resume:
    """Where a worker that took a campaign's lease starts: its webhook (None: removed meanwhile), the cursor
    and the state of the head event (a backoff a previous holder began goes on)."""

    target: Target | None
    delivered_through: int
    head_failures: int
    head_failed_since: datetime | None
    next_attempt_at: datetime | None


SCAN_LIMIT = 1000  # campaigns ``due`` answers at most per call


class WebhookStore:
    def __init__(self, tx: Transactions) -> None:
        self.tx = tx

    # ---- the lease ----------------------------------------------------------------------------------

    def _now(self) -> Any:
        """The lease's clock: PostgreSQL's (one clock for every daemon), or this process's on SQLite."""
        if self.tx.dialect == "postgresql":
            return func.now()
        return literal(utcnow(), UTCDateTime())

    def _until(self, seconds: float) -> Any:
        if self.tx.dialect == "postgresql":
            return func.now() + timedelta(seconds=seconds)
        return literal(utcnow() + timedelta(seconds=seconds), UTCDateTime())

    def _available_to(self, owner: str) -> Any:
        """SQL: the delivery row's lease may be taken by ``owner`` (free, lapsed, or its own)."""
        return or_(T_DELIVERY.c.lease_owner.is_(None), T_DELIVERY.c.lease_owner == owner,
                   T_DELIVERY.c.lease_until < self._now())

    async def take(self, campaign_id: str, owner: str, seconds: float) -> bool:
        """Take (or renew) the lease on the campaign's delivery for ``seconds`` if it is free, has lapsed or
        is already ``owner``'s: one statement, which also makes the row of a campaign that had none."""
        dialect_insert = postgresql.insert if self.tx.dialect == "postgresql" else sqlite.insert
        ins = dialect_insert(T_DELIVERY).values(campaign_id=campaign_id, lease_owner=owner,
                                                lease_until=self._until(seconds))
        stmt = ins.on_conflict_do_update(
            index_elements=["campaign_id"],
            set_={"lease_owner": ins.excluded.lease_owner, "lease_until": ins.excluded.lease_until},
            where=self._available_to(owner),
        )
        async with self.tx.write() as conn:
            done = await conn.execute(stmt)
        return bool(done.rowcount)

    async def renew(self, owner: str, campaign_ids: Collection[str], seconds: float) -> set[str]:
        """Renew ``owner``'s leases on these campaigns (one statement); answer those it still held."""
        if not campaign_ids:
            return set()
        async with self.tx.write() as conn:
            rows = (await conn.execute(
                update(T_DELIVERY)
                .where(T_DELIVERY.c.lease_owner == owner, T_DELIVERY.c.campaign_id.in_(list(campaign_ids)))
                .values(lease_until=self._until(seconds))
                .returning(T_DELIVERY.c.campaign_id)
            )).all()
        return {str(r[0]) for r in rows}

    async def release(self, owner: str) -> None:
        """Free every lease ``owner`` holds (its shutdown): another daemon may take them at once."""
        async with self.tx.write() as conn:
            await conn.execute(update(T_DELIVERY).where(T_DELIVERY.c.lease_owner == owner)
                               .values(lease_owner=None, lease_until=None))

    async def forget_previous_runs(self) -> None:
        """At a daemon's start on SQLite, free every lease: one daemon uses an SQLite database at a time, so
        a lease found is a previous run's (a kill -9), and waiting for it to lapse would only delay delivery.
        On PostgreSQL a lease may be another live daemon's: nothing is freed."""
        if self.tx.dialect != "sqlite":
            return
        async with self.tx.write() as conn:
            await conn.execute(update(T_DELIVERY).where(T_DELIVERY.c.lease_owner.is_not(None))
                               .values(lease_owner=None, lease_until=None))

    async def due(self, owner: str, limit: int = SCAN_LIMIT) -> list[Target]:
        """The campaigns with a webhook, events after their cursor, and a lease ``owner`` may take: work that
        no daemon is delivering (left by one that stopped or died, or written by another daemon). One query."""
        d, e = T_DELIVERY, T_EVENT
        cursor = func.coalesce(d.c.delivered_through, 0)
        pending = select(e.c.id).where(e.c.campaign_id == T_CAMPAIGN.c.id, e.c.id > cursor).exists()
        async with self.tx.read() as conn:
            rows = (await conn.execute(
                select(T_CAMPAIGN.c.id, T_CAMPAIGN.c.webhook_url, T_CAMPAIGN.c.webhook_secret)
                .select_from(T_CAMPAIGN.outerjoin(d, d.c.campaign_id == T_CAMPAIGN.c.id))
                .where(T_CAMPAIGN.c.webhook_url.is_not(None), T_CAMPAIGN.c.status != "importing",
                       or_(d.c.campaign_id.is_(None), self._available_to(owner)), pending)
                .limit(limit)
            )).all()
        return [Target(r[0], r[1], r[2] or "") for r in rows]

    async def resume(self, campaign_id: str) -> Resume:
        """The campaign's webhook and delivery row in one read (a worker's start, once it holds the lease)."""
        async with self.tx.read() as conn:
            row = (await conn.execute(
                select(T_CAMPAIGN.c.webhook_url, T_CAMPAIGN.c.webhook_secret, T_DELIVERY.c.delivered_through,
                       T_DELIVERY.c.head_failures, T_DELIVERY.c.head_failed_since, T_DELIVERY.c.next_attempt_at)
                .select_from(T_CAMPAIGN.outerjoin(T_DELIVERY, T_DELIVERY.c.campaign_id == T_CAMPAIGN.c.id))
                .where(T_CAMPAIGN.c.id == campaign_id)
            )).first()
        if row is None:
            return Resume(None, 0, 0, None, None)
        target = Target(campaign_id, row[0], row[1] or "") if row[0] is not None else None
        return Resume(target, int(row[2] or 0), int(row[3] or 0), row[4], row[5])

    # ---- the outbox -----------------------------------------------------------------------------------

    async def targets(self) -> list[Target]:
        """Every campaign with a webhook (its events may still be waiting, whatever its status)."""
        async with self.tx.read() as conn:
            rows = (await conn.execute(
                select(T_CAMPAIGN.c.id, T_CAMPAIGN.c.webhook_url, T_CAMPAIGN.c.webhook_secret)
                .where(T_CAMPAIGN.c.webhook_url.is_not(None), T_CAMPAIGN.c.status != "importing")
            )).all()
        return [Target(r[0], r[1], r[2] or "") for r in rows]

    async def target(self, campaign_id: str) -> Target | None:
        async with self.tx.read() as conn:
            row = (await conn.execute(
                select(T_CAMPAIGN.c.webhook_url, T_CAMPAIGN.c.webhook_secret)
                .where(T_CAMPAIGN.c.id == campaign_id, T_CAMPAIGN.c.webhook_url.is_not(None))
            )).first()
        return None if row is None else Target(campaign_id, row[0], row[1] or "")

    async def state(self, campaign_id: str) -> DeliveryState:
        async with self.tx.read() as conn:
            row = (await conn.execute(select(T_DELIVERY).where(T_DELIVERY.c.campaign_id == campaign_id))).first()
            cursor = int(row.delivered_through) if row is not None else 0
            pending = (await conn.execute(
                select(func.count()).select_from(T_EVENT)
                .where(T_EVENT.c.campaign_id == campaign_id, T_EVENT.c.id > cursor)
            )).scalar_one()
        if row is None:
            return DeliveryState(0, int(pending), 0, 0, None, None, None, None)
        return DeliveryState(cursor, int(pending), int(row.dead), int(row.head_failures), row.head_failed_since,
                             row.last_error, row.last_attempt_at, row.next_attempt_at)

    async def events_after(self, campaign_id: str, after_id: int, limit: int) -> list[Event]:
        async with self.tx.read() as conn:
            rows = (await conn.execute(
                select(T_EVENT).where(T_EVENT.c.campaign_id == campaign_id, T_EVENT.c.id > after_id)
                .order_by(T_EVENT.c.id).limit(limit)
            )).all()
        return [_row(Event, r) for r in rows]

    async def _upsert(self, conn: Any, campaign_id: str, values: dict[str, Any]) -> None:
        done = await conn.execute(update(T_DELIVERY).where(T_DELIVERY.c.campaign_id == campaign_id).values(**values))
        if not done.rowcount:
            await conn.execute(insert(T_DELIVERY).values(campaign_id=campaign_id, **values))

    async def _held_write(self, conn: Any, campaign_id: str, owner: str, seconds: float,
                          values: dict[str, Any]) -> bool:
        """Write the delivery row if ``owner`` holds its lease, renewing the lease; False: it does not."""
        done = await conn.execute(
            update(T_DELIVERY).where(T_DELIVERY.c.campaign_id == campaign_id, T_DELIVERY.c.lease_owner == owner)
            .values(lease_until=self._until(seconds), **values))
        return bool(done.rowcount)

    async def advance(self, campaign_id: str, through: int, at: datetime, *, owner: str, seconds: float) -> bool:
        """Every event up to ``through`` was delivered: move the cursor there (never backwards) and clear the
        head's failures, if ``owner`` holds the lease (renewed for ``seconds``). False: the lease is gone."""
        moved = case((T_DELIVERY.c.delivered_through < through, literal(through)),
                     else_=T_DELIVERY.c.delivered_through)
        async with self.tx.write() as conn:
            return await self._held_write(conn, campaign_id, owner, seconds, {
                "delivered_through": moved, "head_failures": 0, "head_failed_since": None,
                "last_attempt_at": at, "next_attempt_at": None,
            })

    async def failed(self, campaign_id: str, *, through: int, failures: int, since: datetime, error: str,
                     at: datetime, retry_at: datetime, owner: str, seconds: float) -> bool:
        """The head event (the one after ``through``) failed for the ``failures``-th time; retry at
        ``retry_at``. Written (and the lease renewed) only while ``owner`` holds the lease."""
        async with self.tx.write() as conn:
            return await self._held_write(conn, campaign_id, owner, seconds, {
                "delivered_through": through, "head_failures": failures, "head_failed_since": since,
                "last_error": error, "last_attempt_at": at, "next_attempt_at": retry_at,
            })

    async def dead(self, campaign_id: str, event_id: int, *, failures: int, error: str, at: datetime,
                   owner: str, seconds: float) -> bool:
        """Give the head event up: record it as dead and move the cursor past it, in one transaction, while
        ``owner`` holds the lease (else nothing is written: False)."""
        async with self.tx.write() as conn:
            if not await self._held_write(conn, campaign_id, owner, seconds, {
                "delivered_through": event_id, "dead": T_DELIVERY.c.dead + 1, "head_failures": 0,
                "head_failed_since": None, "last_error": error, "last_attempt_at": at, "next_attempt_at": None,
            }):
                return False
            await conn.execute(delete(T_DEAD).where(T_DEAD.c.campaign_id == campaign_id,
                                                    T_DEAD.c.event_id == event_id))
            await conn.execute(insert(T_DEAD).values(campaign_id=campaign_id, event_id=event_id, failures=failures,
                                                     last_error=error, died_at=at))
        return True

    async def dead_events(self, campaign_id: str) -> list[int]:
        async with self.tx.read() as conn:
            rows = (await conn.execute(
                select(T_DEAD.c.event_id).where(T_DEAD.c.campaign_id == campaign_id).order_by(T_DEAD.c.event_id)
            )).all()
        return [int(r[0]) for r in rows]

    async def start_from_now(self, conn: Any, campaign_id: str) -> None:
        """In a PATCH's transaction that gives a campaign its first webhook: deliver what comes from here on
        (the events before it were never promised to anyone)."""
        last = (await conn.execute(
            select(func.coalesce(func.max(T_EVENT.c.id), 0)).where(T_EVENT.c.campaign_id == campaign_id)
        )).scalar_one()
        await self._upsert(conn, campaign_id, {"delivered_through": int(last), "head_failures": 0,
                                               "head_failed_since": None, "next_attempt_at": None})
