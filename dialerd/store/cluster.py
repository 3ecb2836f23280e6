"""Several daemons on one PostgreSQL database (issue 13): the daemons' rows, and the claim that hands each
due contact to exactly one of them within every cap counted across all of them.

**The claim** is one transaction:

1. the claiming daemon's row ``FOR SHARE``: its epoch must still be the one it registered with (``Fenced``
   otherwise). A takeover or a second process under the same id raises the epoch with an ``UPDATE``, which
   waits for this lock: either the claim commits first (and the attempt is there for whoever takes over),
   or it reads the raised epoch and writes nothing;
2. the tenant's row ``FOR UPDATE``: the tenant's claims are serialised across daemons, so the counts read
   next cannot change before the attempt is written (two daemons can never both take the tenant's last
   slot, or both the same pace instant);
3. the figures (``domain.cluster.ClusterFigures``): attempts in flight of the campaign and of the tenant,
   the tenant's starts in the last minute and its pace, today's usage when a daily cap is set; the domain
   decides (``cluster_hold``);
4. the first due contact ``FOR UPDATE SKIP LOCKED``, then the same checks as a single daemon's claim (the
   suppression list, the claim gate) and the attempt row, stamped with the daemon's id and epoch, and the
   tenant's new ``pace_at``.

An attempt is in flight from that commit until the PBX's end of the call is recorded, so the counts of
step 3 are never below the channels up on all PBXs together: the caps hold on the PBXs' side.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from dialerd.domain.call import Skipped
from dialerd.domain.caps import DailyCaps, limit, tenant_day
from dialerd.domain.cluster import RATE_WINDOW, ClusterFigures, Fenced, NodeView, Seat, cluster_hold, next_pace
from dialerd.domain.contact import ContactStatus
from dialerd.domain.rules import Hold
from dialerd.store.base import (
    IN_FLIGHT_ATTEMPT_STATES,
    T_ATTEMPT,
    T_CAMPAIGN,
    T_CONTACT,
    T_TENANT,
    Transactions,
    _attempt_in_flight,
    _Merged,
    _row,
    dialing_attempt,
    of_campaign,
)
from dialerd.store.gate import UNCOUNTED_ATTEMPT_STATE
from dialerd.store.sql_calls import SqlCalls, suppressed
from dialerd.store.tables import Attempt, Campaign, Contact, DialerNode

T_NODE = DialerNode.__table__  # type: ignore[attr-defined]

# Candidates the claim gate holds back (calling hours, frequency cap) are marked and passed over in the
# claim's transaction; after this many the claim ends (with nothing) and the runner asks again at once.
GATE_PASSES = 20


class ClusterStore:
    """The daemons' rows and the cluster-wide claim (PostgreSQL only; see the module docstring)."""

    def __init__(self, tx: Transactions, calls: SqlCalls) -> None:
        self.tx = tx
        self.calls = calls

    # ---- the daemons ------------------------------------------------------------------------------

    async def register(self, node_id: str, pbx: str, now: datetime, *, fence_key: str | None = None) -> Seat:
        """Join (or rejoin) under ``node_id``: a new epoch, one above any before it under this id.

        ``fence_key``: the Asterisk global its PBX checks each originate's epoch against (``pbx/fence.py``);
        None when it dials without the fence, so a taker never gives its unsent attempts back."""
        async with self.tx.write() as conn:
            stmt = pg_insert(T_NODE).values(id=node_id, epoch=1, pbx=pbx, state="up", held_reason=None,
                                            calls_in_flight=0, started_at=now, heartbeat_at=now,
                                            fence_key=fence_key)
            stmt = stmt.on_conflict_do_update(
                index_elements=[T_NODE.c.id],
                set_={"epoch": T_NODE.c.epoch + 1, "pbx": pbx, "state": "up", "held_reason": None,
                      "calls_in_flight": 0, "started_at": now, "heartbeat_at": now, "fence_key": fence_key},
            )
            epoch = (await conn.execute(stmt.returning(T_NODE.c.epoch))).scalar_one()
        return Seat(node_id, int(epoch))

    async def rearm(self, seat: Seat) -> Seat | None:
        """A new epoch for this daemon before it arms its PBX's fence (docs/fencing.md, "arming" step 2):
        compare-and-set from the epoch it holds, so it fails (None) once a taker (or a newer process under
        the same id) has raised it: this daemon is fenced then and must never arm again."""
        async with self.tx.write() as conn:
            epoch = (await conn.execute(
                update(T_NODE).where(T_NODE.c.id == seat.node_id, T_NODE.c.epoch == seat.epoch,
                                     T_NODE.c.state == "up")
                .values(epoch=T_NODE.c.epoch + 1).returning(T_NODE.c.epoch)
            )).scalar_one_or_none()
        return None if epoch is None else Seat(seat.node_id, int(epoch))

    async def epoch_of(self, node_id: str) -> int | None:
        """The epoch the row holds now (arming step 4 reads it again after the PBX took the new one)."""
        async with self.tx.read() as conn:
            epoch = (await conn.execute(select(T_NODE.c.epoch).where(T_NODE.c.id == node_id))).scalar_one_or_none()
        return None if epoch is None else int(epoch)

    async def heartbeat(self, seat: Seat, now: datetime, *, held_reason: str | None, calls_in_flight: int) -> bool:
        """Note that the daemon lives; False if its epoch moved on (it is fenced)."""
        async with self.tx.write() as conn:
            moved = await conn.execute(
                update(T_NODE).where(T_NODE.c.id == seat.node_id, T_NODE.c.epoch == seat.epoch)
                .values(heartbeat_at=now, state="up", held_reason=held_reason, calls_in_flight=calls_in_flight)
            )
        return bool(moved.rowcount)

    async def leave(self, seat: Seat, now: datetime) -> None:
        """A clean stop: the row says ``stopped`` (its epoch stays, so nothing dials under it again)."""
        async with self.tx.write() as conn:
            await conn.execute(
                update(T_NODE).where(T_NODE.c.id == seat.node_id, T_NODE.c.epoch == seat.epoch)
                .values(state="stopped", heartbeat_at=now, calls_in_flight=0)
            )

    async def take_over(self, node: NodeView, taker: str, now: datetime, lapse: timedelta) -> bool:
        """Take the lapsed daemon ``node`` over: raise its epoch (so nothing more is claimed under the one it
        had: the claim's fence) and mark it ``taken``, if its row is still as read (that state and epoch, the
        heartbeat older than ``lapse``). A ``taken`` row lapses too when its taker stops touching it (the
        taker died mid-way): it is taken over again. True for exactly one taker; False if the daemon came
        back or another daemon took it first."""
        async with self.tx.write() as conn:
            moved = await conn.execute(
                update(T_NODE)
                .where(T_NODE.c.id == node.node_id, T_NODE.c.epoch == node.epoch, T_NODE.c.state == node.state,
                       T_NODE.c.state.in_(("up", "taken")), T_NODE.c.heartbeat_at < now - lapse)
                .values(epoch=T_NODE.c.epoch + 1, state="taken", heartbeat_at=now,
                        held_reason=f"taken over by {taker}"[:40])
            )
        return bool(moved.rowcount)

    async def touch_taken(self, node_id: str, epoch: int, now: datetime, *, done: bool = False) -> bool:
        """The taker of ``node_id`` (under ``epoch``) is at work: its row's heartbeat moves on (so no other
        daemon takes it over again); ``done``: its calls are all reconciled, the row says ``gone``. False if
        the row moved on (the daemon rejoined, or another taker took it)."""
        async with self.tx.write() as conn:
            moved = await conn.execute(
                update(T_NODE).where(T_NODE.c.id == node_id, T_NODE.c.epoch == epoch, T_NODE.c.state == "taken")
                .values(heartbeat_at=now, **({"state": "gone"} if done else {}))
            )
        return bool(moved.rowcount)

    async def attempts_of(self, node_id: str) -> list[Attempt]:
        """The attempts ``node_id`` placed that are still in flight, oldest first."""
        async with self.tx.read() as conn:
            rows = (await conn.execute(
                select(T_ATTEMPT).where(T_ATTEMPT.c.node_id == node_id,
                                        T_ATTEMPT.c.state.in_(IN_FLIGHT_ATTEMPT_STATES))
                .order_by(T_ATTEMPT.c.id)
            )).all()
        return [_row(Attempt, r) for r in rows]

    async def nodes(self) -> list[NodeView]:
        async with self.tx.read() as conn:
            rows = (await conn.execute(select(T_NODE).order_by(T_NODE.c.id))).all()
        return [NodeView(r.id, int(r.epoch), r.pbx, r.state, r.held_reason, int(r.calls_in_flight), r.heartbeat_at,
                         r.fence_key) for r in rows]

    # ---- the claim --------------------------------------------------------------------------------

    async def claim(
        self,
        seat: Seat,
        campaign: Campaign,
        now: datetime,
        name_channel: Callable[[Contact], str],
        caller_id_for: Callable[[Contact], str | None],
        today: datetime | None = None,
    ) -> tuple[Contact, Attempt] | Skipped | Hold | None:
        """Claim the campaign's first due contact for this daemon and commit its attempt (see the module
        docstring); a ``Hold`` when a cap counted across the daemons says wait (``until`` when to look
        again); ``Skipped`` for a suppressed number (skipped in this transaction); None if none is due.
        Raises ``Fenced`` if this daemon's epoch moved on. ``today``: the instant whose calendar day the
        daily caps count (default ``now``)."""
        async with self.tx.write() as conn:
            current = (await conn.execute(
                select(T_NODE.c.epoch).where(T_NODE.c.id == seat.node_id).with_for_update(read=True)
            )).scalar_one_or_none()
            if current != seat.epoch:
                raise Fenced(seat.node_id, seat.epoch, None if current is None else int(current))
            tenant = (await conn.execute(
                select(T_TENANT).where(T_TENANT.c.id == campaign.tenant_id).with_for_update()
            )).first()
            if tenant is None:
                return None
            figures = await self._figures(conn, campaign, tenant, now, now if today is None else today)
            hold = cluster_hold(figures, now, today)
            if hold is not None:
                return hold
            for _ in range(GATE_PASSES):
                row = (await conn.execute(
                    select(T_CONTACT)
                    .where(
                        of_campaign(campaign.id),
                        T_CONTACT.c.status == ContactStatus.PENDING.value,
                        or_(T_CONTACT.c.next_attempt_at.is_(None), T_CONTACT.c.next_attempt_at <= now),
                        or_(T_CONTACT.c.blocked_reason.is_(None), T_CONTACT.c.next_eligible_at <= now),
                        ~_attempt_in_flight(T_CONTACT.c.id),
                    )
                    .order_by(T_CONTACT.c.campaign_id, T_CONTACT.c.id)
                    .limit(1)
                    .with_for_update(skip_locked=True, of=T_CONTACT)
                )).first()
                if row is None:
                    return None
                contact: Contact = _row(Contact, row)
                if (await conn.execute(select(suppressed(contact.campaign_id, contact.phone_e164)))).scalar_one():
                    return await self.calls.skip_in(conn, contact, now)
                if await self.calls.held_in(conn, contact.id, now):
                    continue  # marked with its hold: the next candidate, in this transaction
                channel_id = name_channel(contact)
                caller_id = caller_id_for(contact) or None
                await conn.execute(
                    update(T_CONTACT).where(T_CONTACT.c.id == contact.id)
                    .values(attempts=T_CONTACT.c.attempts + 1, last_attempt_at=now, updated_at=now,
                            blocked_reason=None, next_eligible_at=None)
                )
                values = dialing_attempt(contact, channel_id, caller_id, now, node_id=seat.node_id,
                                         node_epoch=seat.epoch)
                attempt_id = (
                    await conn.execute(insert(T_ATTEMPT).values(**values).returning(T_ATTEMPT.c.id))
                ).scalar_one()
                await conn.execute(
                    update(T_TENANT).where(T_TENANT.c.id == tenant.id)
                    .values(pace_at=next_pace(tenant.pace_at, now, tenant.calls_per_minute))
                )
                attempt: Attempt = _row(Attempt, _Merged({"id": int(attempt_id), **values}))
                return contact, attempt
        return None

    @staticmethod
    async def _figures(conn: AsyncConnection, campaign: Campaign, t: Any, now: datetime,
                       today: datetime) -> ClusterFigures:
        """The claim's figures, read under the tenant's row lock (``t``: the tenant's row)."""
        tenant_of = T_ATTEMPT.join(T_CAMPAIGN, T_CAMPAIGN.c.id == T_ATTEMPT.c.campaign_id)
        in_flight = T_ATTEMPT.c.state.in_(IN_FLIGHT_ATTEMPT_STATES)
        ours, theirs = (await conn.execute(
            select(func.count().filter(T_ATTEMPT.c.campaign_id == campaign.id), func.count())
            .select_from(tenant_of)
            .where(T_CAMPAIGN.c.tenant_id == campaign.tenant_id, in_flight)
        )).one()
        counted = T_ATTEMPT.c.state != UNCOUNTED_ATTEMPT_STATE
        last_minute, oldest = (await conn.execute(
            select(func.count(), func.min(T_ATTEMPT.c.created_at))
            .select_from(tenant_of)
            .where(T_CAMPAIGN.c.tenant_id == campaign.tenant_id, T_ATTEMPT.c.created_at > now - RATE_WINDOW,
                   counted)
        )).one()
        daily = DailyCaps(limit(t.daily_calls_max), limit(t.daily_minutes_max), t.timezone or None)
        calls_today, minutes_today = 0, 0.0
        if daily.calls_max is not None or daily.minutes_max is not None:
            start, end = tenant_day(today, daily.timezone)
            talk = and_(T_ATTEMPT.c.answered_at.is_not(None), T_ATTEMPT.c.ended_at.is_not(None))
            calls, seconds = (await conn.execute(
                select(func.count(), func.coalesce(func.sum(T_ATTEMPT.c.talk_seconds).filter(talk), 0.0))
                .select_from(tenant_of)
                .where(T_CAMPAIGN.c.tenant_id == campaign.tenant_id, T_ATTEMPT.c.created_at >= start,
                       T_ATTEMPT.c.created_at < end, counted)
            )).one()
            calls_today, minutes_today = int(calls or 0), round(float(seconds or 0.0) / 60.0, 3)
        return ClusterFigures(
            max_concurrent_calls=campaign.max_concurrent_calls,
            concurrent_max=t.concurrent_max,
            calls_per_minute=t.calls_per_minute,
            campaign_in_flight=int(ours or 0),
            tenant_in_flight=int(theirs or 0),
            tenant_last_minute=int(last_minute or 0),
            oldest_in_minute=oldest,
            pace_at=t.pace_at,
            daily=daily,
            calls_today=calls_today,
            minutes_today=minutes_today,
        )
