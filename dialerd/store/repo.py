"""The Store: every read and write dialerd makes, over SQLAlchemy async (SQLite or PostgreSQL).

Writes that change a contact also append the matching row to ``event`` in the same transaction,
so the SSE stream replayed from the database always agrees with the contacts' state.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import and_, delete, exists, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from dialerd.domain.campaign import CampaignStatus
from dialerd.domain.contact import ContactStatus
from dialerd.errors import StoreError
from dialerd.store.direct import HotPath, SqliteDirect
from dialerd.store.tables import ApiKey, Attempt, Campaign, Contact, Event, Tenant, utcnow

IMPORTING = "importing"  # a campaign whose CSV is still being imported: invisible to the API

# Reads made in a priority context (the dispatcher's tasks) skip the queue the other reads (API requests,
# SSE replays and snapshots) take turns in, at most SHARED_READS at once; see Store.read.
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

IN_FLIGHT_ATTEMPT_STATES = ("dialing", "originated", "answered")
_T = TypeVar("_T")


def _row(model: Any, row: Any) -> Any:
    return model(**dict(row._mapping))


def _attempt_in_flight(contact_id: Any) -> Any:
    """SQL: the contact has an attempt that is dialling, ringing or talking."""
    return exists().where(T_ATTEMPT.c.contact_id == contact_id, T_ATTEMPT.c.state.in_(IN_FLIGHT_ATTEMPT_STATES))


class _Merged:
    """A row-like wrapper around a dict, so merged values go through ``_row`` like fetched rows."""

    def __init__(self, mapping: dict[str, Any]) -> None:
        self._mapping = mapping


class Store:
    """Typed access to the database. One instance per daemon, built in the composition root."""

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
        # SQLite file databases: the dispatcher's per-call statements go to the driver directly
        # (store/direct.py). In-memory databases are per connection, so they keep the SQLAlchemy path.
        self._direct: SqliteDirect | None = None
        self._hot: HotPath | None = None
        database = engine.url.database
        if self.dialect == "sqlite" and database and database != ":memory:" and not database.startswith("file:"):
            self._direct = SqliteDirect(database)
            self._hot = HotPath({"attempt": T_ATTEMPT, "contact": T_CONTACT, "event": T_EVENT},
                                engine.dialect, IN_FLIGHT_ATTEMPT_STATES)

    async def close(self) -> None:
        if self._direct is not None:
            await self._direct.close()
        await self.engine.dispose()

    async def _direct_read(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        assert self._direct is not None
        try:
            return await self._direct.read(fn)
        except sqlite3.Error as exc:
            raise StoreError(f"database error: {exc.__class__.__name__}") from exc

    async def _direct_write(self, fn: Callable[[sqlite3.Connection], tuple[_T, list[Event]]]) -> _T:
        """A write transaction on the direct path: the same lock and publish order as ``write``."""
        assert self._direct is not None
        try:
            async with self._write_lock:
                result, events = await self._direct.transaction(fn)
                if events and self.publish is not None:
                    self.publish(events)
        except sqlite3.Error as exc:
            raise StoreError(f"database error: {exc.__class__.__name__}") from exc
        return result

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
        if not rows:
            return
        if self.dialect == "sqlite":
            await self._insert_contacts_sqlite(campaign_id, rows)
            return
        ins = (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(T_CONTACT)
        stmt = ins.on_conflict_do_nothing(index_elements=["campaign_id", "phone_e164"])
        now = utcnow()
        values = [
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
            }
            for r in rows
        ]
        async with self.write() as conn:
            await conn.execute(stmt, values)

    async def _insert_contacts_sqlite(self, campaign_id: str, rows: Sequence[dict[str, Any]]) -> None:
        # Perf (bench/, docs/benchmarks.md): SQLAlchemy's executemany processes 13 typed binds per
        # row (~60 us per contact, more than parsing the number). Here the constant columns are
        # converted once by the columns' own bind processors, so the stored values are identical,
        # and the rows go to the driver as plain tuples. Omitted columns are NULL, as before.
        dialect = self.engine.dialect
        to_json = T_CONTACT.c.fields.type.bind_processor(dialect) or (lambda v: v)
        to_time = T_CONTACT.c.updated_at.type.bind_processor(dialect) or (lambda v: v)
        now, pending = to_time(utcnow()), ContactStatus.PENDING.value
        values = [
            (campaign_id, r["line"], r["phone_e164"], r["raw_number"][:100], to_json(r["fields"]), pending, 0, now)
            for r in rows
        ]
        sql = (
            "INSERT INTO contact (campaign_id, line, phone_e164, raw_number, fields, status, attempts, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (campaign_id, phone_e164) DO NOTHING"
        )
        async with self.write() as conn:
            await conn.exec_driver_sql(sql, values)

    async def finish_import(self, campaign_id: str, status: CampaignStatus, report: dict[str, Any]) -> None:
        async with self.write() as conn:
            await conn.execute(
                update(T_CAMPAIGN)
                .where(T_CAMPAIGN.c.id == campaign_id, T_CAMPAIGN.c.status == IMPORTING)
                .values(status=status.value, import_report=report, updated_at=utcnow())
            )

    async def purge_campaign(self, campaign_id: str) -> None:
        """Delete a campaign and everything it owns (in bounded chunks on big campaigns)."""
        for table in (T_EVENT, T_ATTEMPT):
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
            rows = (await conn.execute(select(T_CAMPAIGN.c.id).where(T_CAMPAIGN.c.status == IMPORTING))).all()
        return [r[0] for r in rows]

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
        q = select(T_CAMPAIGN).where(T_CAMPAIGN.c.id == campaign_id, T_CAMPAIGN.c.status != IMPORTING)
        if tenant_id is not None:
            q = q.where(T_CAMPAIGN.c.tenant_id == tenant_id)
        async with self.read() as conn:
            row = (await conn.execute(q)).first()
        return None if row is None else _row(Campaign, row)

    async def list_campaigns(
        self, tenant_id: str, limit: int, offset: int, status: str | None = None
    ) -> tuple[list[Campaign], int]:
        cond = and_(T_CAMPAIGN.c.tenant_id == tenant_id, T_CAMPAIGN.c.status != IMPORTING)
        if status is not None:
            cond = and_(cond, T_CAMPAIGN.c.status == status)
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
    ) -> tuple[bool, list[Event]]:
        """Compare-and-set the status; optionally cancel pending contacts. Returns (changed, events)."""
        now = utcnow()
        values: dict[str, Any] = {"status": new.value, "updated_at": now}
        if started:
            values["started_at"] = func.coalesce(T_CAMPAIGN.c.started_at, now)
        if new.terminal:
            values["completed_at"] = now
        events: list[Event] = []
        async with self.write() as conn:
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
                await self._event(
                    conn, campaign_id, "campaign",
                    {**event_payload, "status": new.value, "at": now.isoformat()}, now,
                )
            )
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
                "at": now.isoformat(),
            }
            for r in rows
        ]
        return await self._events(conn, campaign_id, "cancelled", payloads, now)

    async def _event(
        self, conn: AsyncConnection, campaign_id: str, kind: str, payload: dict[str, Any], now: datetime
    ) -> Event:
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

    async def _events(
        self,
        conn: AsyncConnection,
        campaign_id: str,
        kind: str,
        payloads: list[dict[str, Any]],
        now: datetime,
    ) -> list[Event]:
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

    async def get_contact(self, contact_id: int) -> Contact | None:
        async with self.read() as conn:
            row = (await conn.execute(select(T_CONTACT).where(T_CONTACT.c.id == contact_id))).first()
        return None if row is None else _row(Contact, row)

    async def next_due_contacts(self, campaign_id: str, now: datetime, limit: int) -> list[Contact]:
        """Pending contacts whose next attempt is due, oldest first."""
        if self._hot is not None:
            hot = self._hot
            found = await self._direct_read(
                lambda conn: hot.next_due_contacts(conn, campaign_id, now, ContactStatus.PENDING.value, limit)
            )
            return [Contact(**r) for r in found]
        async with self.read() as conn:
            rows = (
                await conn.execute(
                    select(T_CONTACT)
                    .where(
                        T_CONTACT.c.campaign_id == campaign_id,
                        T_CONTACT.c.status == ContactStatus.PENDING.value,
                        or_(T_CONTACT.c.next_attempt_at.is_(None), T_CONTACT.c.next_attempt_at <= now),
                        ~_attempt_in_flight(T_CONTACT.c.id),
                    )
                    .order_by(T_CONTACT.c.id)
                    .limit(limit)
                )
            ).all()
        return [_row(Contact, r) for r in rows]

    async def next_retry_time(self, campaign_id: str) -> datetime | None:
        """The earliest next_attempt_at among pending contacts (None if there are none waiting)."""
        async with self.read() as conn:
            value = (
                await conn.execute(
                    select(func.min(T_CONTACT.c.next_attempt_at)).where(
                        T_CONTACT.c.campaign_id == campaign_id,
                        T_CONTACT.c.status == ContactStatus.PENDING.value,
                    )
                )
            ).scalar_one()
        # func.min keeps the column type, so UTCDateTime turns it back into an aware datetime.
        return value  # type: ignore[no-any-return]

    async def unfinished_contacts(self, campaign_id: str) -> int:
        async with self.read() as conn:
            return int(
                (
                    await conn.execute(
                        select(func.count())
                        .select_from(T_CONTACT)
                        .where(
                            T_CONTACT.c.campaign_id == campaign_id,
                            T_CONTACT.c.status.in_(
                                [
                                    ContactStatus.PENDING.value,
                                    ContactStatus.ORIGINATED.value,
                                    ContactStatus.CONNECTED.value,
                                ]
                            ),
                        )
                    )
                ).scalar_one()
            )

    # ---- attempts (the dispatcher's writes) -----------------------------------------------------

    async def begin_attempt(self, contact: Contact, channel_id: str) -> Attempt | None:
        """Record the attempt *before* the originate leaves. None if the contact is no longer pending."""
        now = utcnow()
        if self._hot is not None:
            hot = self._hot
            values: dict[str, Any] = {
                "contact_id": contact.id, "campaign_id": contact.campaign_id, "number": contact.attempts + 1,
                "channel_id": channel_id, "state": "dialing", "created_at": now,
            }
            attempt_id = await self._direct_write(
                lambda conn: (hot.begin_attempt(conn, values, ContactStatus.PENDING.value, contact.attempts), [])
            )
            return None if attempt_id is None else Attempt(id=attempt_id, **values)
        async with self.write() as conn:
            # A contact whose previous attempt is still unresolved (e.g. found again after a crash and
            # not yet reconciled) stays pending but must not be dialled a second time.
            if (await conn.execute(select(_attempt_in_flight(contact.id)))).scalar_one():
                return None
            result = await conn.execute(
                update(T_CONTACT)
                .where(
                    T_CONTACT.c.id == contact.id,
                    T_CONTACT.c.status == ContactStatus.PENDING.value,
                    T_CONTACT.c.attempts == contact.attempts,
                )
                .values(attempts=T_CONTACT.c.attempts + 1, last_attempt_at=now, updated_at=now)
            )
            if not result.rowcount:
                return None
            values = {
                "contact_id": contact.id,
                "campaign_id": contact.campaign_id,
                "number": contact.attempts + 1,
                "channel_id": channel_id,
                "state": "dialing",
                "created_at": now,
            }
            attempt_id = (
                await conn.execute(insert(T_ATTEMPT).values(**values).returning(T_ATTEMPT.c.id))
            ).scalar_one()
        attempt: Attempt = _row(Attempt, _Merged({"id": int(attempt_id), **values}))
        return attempt

    async def give_back_attempt(self, channel_id: str) -> bool:
        """An attempt that never reached the PBX: mark it not_dialled and return its count to the contact.

        The contact stayed pending throughout (it only becomes originated once the PBX accepts), so no
        event is written. False if the attempt is no longer 'dialing'.
        """
        async with self.write() as conn:
            row = (
                await conn.execute(
                    select(T_ATTEMPT).where(T_ATTEMPT.c.channel_id == channel_id).with_for_update()
                )
            ).first()
            if row is None or row.state != "dialing":
                return False
            moved = await conn.execute(
                update(T_ATTEMPT)
                .where(T_ATTEMPT.c.id == row.id, T_ATTEMPT.c.state == "dialing")
                .values(state="not_dialled", reason="not_dialled")
            )
            if not moved.rowcount:
                return False
            await conn.execute(
                update(T_CONTACT)
                .where(T_CONTACT.c.id == row.contact_id, T_CONTACT.c.status == ContactStatus.PENDING.value)
                .values(attempts=func.max(T_CONTACT.c.attempts - 1, 0) if self.dialect == "sqlite"
                        else func.greatest(T_CONTACT.c.attempts - 1, 0), updated_at=utcnow())
            )
        return True

    async def get_attempt(self, channel_id: str) -> Attempt | None:
        if self._hot is not None:
            hot = self._hot
            found = await self._direct_read(lambda conn: hot.get_attempt(conn, channel_id))
            return None if found is None else Attempt(**found)
        async with self.read() as conn:
            row = (await conn.execute(select(T_ATTEMPT).where(T_ATTEMPT.c.channel_id == channel_id))).first()
        return None if row is None else _row(Attempt, row)

    async def attempts_in_flight(self) -> list[Attempt]:
        async with self.read() as conn:
            rows = (
                await conn.execute(
                    select(T_ATTEMPT)
                    .where(T_ATTEMPT.c.state.in_(IN_FLIGHT_ATTEMPT_STATES))
                    .order_by(T_ATTEMPT.c.id)
                )
            ).all()
        return [_row(Attempt, r) for r in rows]

    async def list_attempts(self, contact_id: int) -> list[Attempt]:
        async with self.read() as conn:
            rows = (
                await conn.execute(
                    select(T_ATTEMPT).where(T_ATTEMPT.c.contact_id == contact_id).order_by(T_ATTEMPT.c.id)
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
    ) -> tuple[Attempt, Event] | None:
        """Move an attempt and its contact on, and append the event, in one transaction.

        ``only_from`` lists the attempt states this move is valid from; anything else (a duplicate or
        late event) changes nothing and returns None.
        """
        now = utcnow()
        if self._hot is not None:
            return await self._direct_transition(channel_id, attempt_state, attempt_values, contact_status,
                                                 contact_values, payload, tuple(only_from), now)
        async with self.write() as conn:
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
            full = {
                "contact_id": row.contact_id,
                "phone_number": contact.phone_e164 if contact else None,
                "status": contact_status.value,
                "attempt": row.number,
                "channel_id": channel_id,
                "at": now.isoformat(),
                **payload,
            }
            event = await self._event(conn, row.campaign_id, contact_status.value, full, now)
        attempt: Attempt = _row(Attempt, row)  # RETURNING gave the row as updated
        return attempt, event

    async def _direct_transition(
        self, channel_id: str, attempt_state: str, attempt_values: dict[str, Any], contact_status: ContactStatus,
        contact_values: dict[str, Any], payload: dict[str, Any], only_from: tuple[str, ...], now: datetime,
    ) -> tuple[Attempt, Event] | None:
        """``record_transition`` on the direct path: the same three statements and the same event."""
        assert self._hot is not None
        hot = self._hot

        def event(attempt: dict[str, Any], contact: tuple[Any, ...] | None) -> tuple[str, dict[str, Any]]:
            return attempt["campaign_id"], {
                "contact_id": attempt["contact_id"],
                "phone_number": contact[0] if contact else None,
                "status": contact_status.value,
                "attempt": attempt["number"],
                "channel_id": channel_id,
                "at": now.isoformat(),
                **payload,
            }

        def run(conn: sqlite3.Connection) -> tuple[tuple[Attempt, Event] | None, list[Event]]:
            moved = hot.transition(
                conn, channel_id, only_from, {"state": attempt_state, **attempt_values},
                {"status": contact_status.value, "updated_at": now, **contact_values}, event,
            )
            if moved is None:
                return None, []
            attempt, event_id, campaign_id, full = moved
            ev = Event(id=event_id, campaign_id=campaign_id, kind=contact_status.value, payload=full, created_at=now)
            return (Attempt(**attempt), ev), [ev]

        return await self._direct_write(run)

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
