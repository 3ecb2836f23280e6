"""The webhooks' outbox reads and cursor writes (domain/webhooks.py has the rules).

The outbox is the ``event`` table: each state change appends its event in the transaction that makes the
change, so a kill -9 right after a commit loses no event to deliver. ``webhook_delivery`` holds each
campaign's cursor (``delivered_through``: every event up to it was delivered, or given up as dead) and the
state of the event at the head. Events of one campaign are committed in id order (one writer at a time,
store/base.py), so reading ``id > delivered_through`` never passes over an event committed later.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update

from dialerd.domain.webhooks import DeliveryState
from dialerd.store.base import T_CAMPAIGN, T_EVENT, Transactions, _row
from dialerd.store.tables import Event, WebhookDeadEvent, WebhookDelivery

T_DELIVERY = WebhookDelivery.__table__  # type: ignore[attr-defined]
T_DEAD = WebhookDeadEvent.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Target:
    """A campaign's webhook as the delivery worker needs it (the secret never leaves the daemon)."""

    campaign_id: str
    url: str
    secret: str


class WebhookStore:
    def __init__(self, tx: Transactions) -> None:
        self.tx = tx

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

    async def advance(self, campaign_id: str, through: int, at: datetime) -> None:
        """Every event up to ``through`` was delivered: move the cursor there and clear the head's failures
        (never backwards: two writes racing keep the larger)."""
        async with self.tx.write() as conn:
            row = (await conn.execute(
                select(T_DELIVERY.c.delivered_through).where(T_DELIVERY.c.campaign_id == campaign_id)
            )).first()
            if row is not None and int(row[0]) >= through:
                return
            await self._upsert(conn, campaign_id, {
                "delivered_through": through, "head_failures": 0, "head_failed_since": None,
                "last_attempt_at": at, "next_attempt_at": None,
            })

    async def failed(self, campaign_id: str, *, through: int, failures: int, since: datetime, error: str,
                     at: datetime, retry_at: datetime) -> None:
        """The head event (the one after ``through``) failed for the ``failures``-th time; retry at ``retry_at``."""
        async with self.tx.write() as conn:
            await self._upsert(conn, campaign_id, {
                "delivered_through": through, "head_failures": failures, "head_failed_since": since,
                "last_error": error, "last_attempt_at": at, "next_attempt_at": retry_at,
            })

    async def dead(self, campaign_id: str, event_id: int, *, failures: int, error: str, at: datetime) -> None:
        """Give the head event up: record it as dead and move the cursor past it, in one transaction."""
        async with self.tx.write() as conn:
            row = (await conn.execute(
                select(T_DELIVERY.c.dead).where(T_DELIVERY.c.campaign_id == campaign_id)
            )).first()
            dead = (int(row[0]) if row is not None else 0) + 1
            await conn.execute(delete(T_DEAD).where(T_DEAD.c.campaign_id == campaign_id,
                                                    T_DEAD.c.event_id == event_id))
            await conn.execute(insert(T_DEAD).values(campaign_id=campaign_id, event_id=event_id, failures=failures,
                                                     last_error=error, died_at=at))
            await self._upsert(conn, campaign_id, {
                "delivered_through": event_id, "dead": dead, "head_failures": 0, "head_failed_since": None,
                "last_error": error, "last_attempt_at": at, "next_attempt_at": None,
            })

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
