"""The Store and its migrations against real SQLite and PostgreSQL: schema, constraints, every write's guard.

The ``store`` tests run on each call store a backend can have: on SQLite the sqlite3 driver's
(``SqliteCalls``, as the daemon builds it) and SQLAlchemy's (``SqlCalls``), on PostgreSQL ``SqlCalls``.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    Integer,
    String,
    UniqueConstraint,
    event,
    func,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError
from sqlalchemy.types import TypeDecorator, TypeEngine
from sqlmodel import SQLModel

from dialerd.domain.campaign import CampaignStatus
from dialerd.domain.contact import ContactStatus
from dialerd.errors import ConfigError, Conflict, InvalidInput, NotFound, StoreError, Unauthorized
from dialerd.services.auth import Authenticator, create_key, revoke_key, set_limits
from dialerd.store import db, tables
from dialerd.store.db import SCHEMA_VERSION, create_engine, migrate
from dialerd.store.repo import T_ATTEMPT, T_CAMPAIGN, T_CONTACT, T_EVENT, T_KEY, T_TENANT, Store
from dialerd.store.sql_calls import SqlCalls
from dialerd.store.sqlite_calls import SqliteCalls
from dialerd.store.tables import Campaign, Contact, Event
from dialerd.timestamps import utcnow
from tests.conftest import _pg_create, _pg_drop

METADATA = SQLModel.metadata
assert tables.Tenant.__tablename__ in METADATA.tables  # the models are registered on this metadata



@pytest.fixture(params=[
    pytest.param("sqlite", id="sqlite-SqliteCalls"),
    pytest.param("sqlite-sql", id="sqlite-SqlCalls"),
    pytest.param("postgres", id="postgres-SqlCalls", marks=pytest.mark.postgres),
])
async def store(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[Store]:
    """A migrated Store on a fresh database, with each call store its backend can have (see above)."""
    url = await _pg_create() if request.param == "postgres" else f"sqlite+aiosqlite:///{tmp_path / 'dialerd.db'}"
    engine = create_engine(url)
    try:
        await migrate(engine)
        s = Store(engine, calls=SqlCalls) if request.param == "sqlite-sql" else Store(engine)
        assert isinstance(s.calls, SqliteCalls if request.param == "sqlite" else SqlCalls)
        try:
            yield s
        finally:
            await s.close()
    finally:
        await engine.dispose()
        if request.param == "postgres":
            await _pg_drop(url)


# ---- helpers ---------------------------------------------------------------------------------------


async def make_tenant(store: Store, name: str = "acme") -> str:
    tenant = await store.upsert_tenant("t_" + secrets.token_hex(6), name, 10, 60, defaults=(10, 60))
    return tenant.id


def campaign_model(tenant_id: str, *, status: str = "draft", **overrides: Any) -> Campaign:
    now = utcnow()
    values: dict[str, Any] = {
        "id": "cmp_" + secrets.token_hex(10),
        "tenant_id": tenant_id,
        "name": "store test",
        "status": status,
        "caller_id": "+14155550199",
        "destination": "sales,100,1",
        "default_region": "US",
        "max_concurrent_calls": 5,
        "retries_per_contact": 0,
        "retry_delay_seconds": 300,
        "ring_timeout_seconds": 30,
        "import_report": {},
        "created_by": "ktest",
        "created_at": now,
        "updated_at": now,
    }
    values.update(overrides)
    return Campaign(**values)


async def make_campaign(store: Store, tenant_id: str, *, status: str = "draft", **overrides: Any) -> str:
    campaign = campaign_model(tenant_id, status=status, **overrides)
    await store.insert_campaign(campaign)
    return campaign.id


def number(i: int) -> str:
    return f"+1415{i:07d}"


def rows(numbers: list[str], first_line: int = 2, **fields: str) -> list[dict[str, Any]]:
    return [
        {"line": first_line + i, "phone_e164": n, "raw_number": n, "fields": dict(fields)}
        for i, n in enumerate(numbers)
    ]


async def insert_many(store: Store, campaign_id: str, count: int, batch: int = 2000) -> None:
    for start in range(0, count, batch):
        await store.insert_contacts(campaign_id, rows([number(i) for i in range(start, min(count, start + batch))]))


async def all_contacts(store: Store, campaign_id: str) -> list[Contact]:
    contacts, total = await store.list_contacts(campaign_id, None, 100_000, 0)
    assert len(contacts) == total
    return contacts


async def count(store: Store, table: Any, campaign_id: str | None = None) -> int:
    q = select(func.count()).select_from(table)
    if campaign_id is not None:
        q = q.where(table.c.campaign_id == campaign_id)
    async with store.read() as conn:
        return int((await conn.execute(q)).scalar_one())


async def set_status(store: Store, contact_ids: list[int], status: ContactStatus) -> None:
    async with store.write() as conn:
        await conn.execute(update(T_CONTACT).where(T_CONTACT.c.id.in_(contact_ids)).values(status=status.value))


def assert_utc(value: datetime | None, near: datetime | None = None) -> None:
    assert value is not None
    assert value.tzinfo is not None and value.utcoffset() == timedelta(0), value
    if near is not None:
        assert abs(value - near) < timedelta(minutes=1), (value, near)


# ---- migrations ------------------------------------------------------------------------------------


def _type_shape(type_: TypeEngine[Any], dialect: str) -> tuple[Any, ...]:
    """A backend-neutral description of a column type: kind, length, and time zone on PostgreSQL."""
    if isinstance(type_, TypeDecorator):
        type_ = type_.impl_instance
    if isinstance(type_, DateTime):
        # SQLite has no zoned timestamps (UTCDateTime adds the zone back); PostgreSQL must store them.
        return ("datetime", bool(type_.timezone)) if dialect == "postgresql" else ("datetime",)
    for kind, cls in (("int", Integer), ("str", String), ("float", Float), ("json", JSON)):
        if isinstance(type_, cls):
            return (kind, type_.length) if isinstance(type_, String) else (kind,)
    return ("other", type_.__class__.__name__)


def _reflect(conn: Connection) -> dict[str, Any]:
    insp = inspect(conn)
    dialect = conn.dialect.name
    schema: dict[str, Any] = {}
    for name in insp.get_table_names():
        indexes = {
            (ix["name"], tuple(ix["column_names"]), bool(ix["unique"]))
            for ix in insp.get_indexes(name)
            if not ix.get("duplicates_constraint")  # PostgreSQL lists a unique constraint's index too
        }
        schema[name] = {
            "columns": {c["name"]: bool(c["nullable"]) for c in insp.get_columns(name)},
            "types": {c["name"]: _type_shape(c["type"], dialect) for c in insp.get_columns(name)},
            "primary_key": tuple(insp.get_pk_constraint(name)["constrained_columns"]),
            "indexes": indexes,
            "unique": {tuple(uq["column_names"]) for uq in insp.get_unique_constraints(name)},
            "named_unique": {uq["name"] for uq in insp.get_unique_constraints(name) if uq["name"]
                             and uq["name"].startswith("uq_")},
            "foreign_keys": {
                (tuple(fk["constrained_columns"]), fk["referred_table"], tuple(fk["referred_columns"]),
                 fk["options"].get("ondelete"))
                for fk in insp.get_foreign_keys(name)
            },
        }
    return schema


def _declared(dialect: str) -> dict[str, Any]:
    schema: dict[str, Any] = {}
    for table in METADATA.sorted_tables:
        uniques = [c for c in table.constraints if isinstance(c, UniqueConstraint)]
        schema[table.name] = {
            "columns": {c.name: bool(c.nullable) for c in table.columns},
            "types": {c.name: _type_shape(c.type, dialect) for c in table.columns},
            "primary_key": tuple(c.name for c in table.primary_key.columns),
            "indexes": {(ix.name, tuple(c.name for c in ix.columns), bool(ix.unique)) for ix in table.indexes},
            "unique": {tuple(c.name for c in uq.columns) for uq in uniques},
            "named_unique": {uq.name for uq in uniques if isinstance(uq.name, str) and uq.name.startswith("uq_")},
            "foreign_keys": {
                (tuple(fk.parent.name for fk in fkc.elements), fkc.referred_table.name,
                 tuple(fk.column.name for fk in fkc.elements), fkc.ondelete)
                for fkc in table.foreign_key_constraints
            },
        }
    return schema


async def test_migrations_create_exactly_the_declared_schema_and_are_idempotent(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(lambda c: inspect(c).get_table_names()) == []
        assert await migrate(engine) == SCHEMA_VERSION == db.MIGRATIONS[-1][0]
        async with engine.connect() as conn:
            first = await conn.run_sync(_reflect)
        declared = _declared(engine.dialect.name)
        assert set(first) == set(declared)
        for name in declared:
            for aspect in ("columns", "primary_key", "indexes", "unique", "named_unique", "foreign_keys"):
                assert first[name][aspect] == declared[name][aspect], (name, aspect)

        assert await migrate(engine) == SCHEMA_VERSION
        async with engine.connect() as conn:
            assert await conn.run_sync(_reflect) == first
            versions = (await conn.execute(text("SELECT version FROM schema_version ORDER BY version"))).scalars().all()
        assert versions == [version for version, _ in db.MIGRATIONS]
    finally:
        await engine.dispose()


async def test_a_newer_schema_is_refused(store: Store) -> None:
    async with store.write() as conn:
        await conn.execute(
            tables.SchemaVersion.__table__.insert().values(version=SCHEMA_VERSION + 1, applied_at=utcnow())  # type: ignore[attr-defined]
        )
    with pytest.raises(ConfigError) as caught:
        await migrate(store.engine)
    assert caught.value.details["key"] == "database_url"
    assert f"version {SCHEMA_VERSION + 1} is newer" in caught.value.message
    async with store.read() as conn:
        versions = (await conn.execute(text("SELECT version FROM schema_version ORDER BY version"))).scalars().all()
    assert versions == [*(version for version, _ in db.MIGRATIONS), SCHEMA_VERSION + 1]


async def test_a_version_1_database_is_upgraded_in_place(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = create_engine(db_url)
    try:
        monkeypatch.setattr(db, "MIGRATIONS", db.MIGRATIONS[:1])
        monkeypatch.setattr(db, "SCHEMA_VERSION", 1)
        assert await migrate(engine) == 1
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO tenant (id, name, concurrent_max, calls_per_minute, created_at) "
                                    "VALUES ('ten_old', 'old', 5, 60, :t)"), {"t": utcnow()})
            indexes = await conn.run_sync(lambda c: {i["name"] for i in inspect(c).get_indexes("contact")})
        assert "ix_contact_campaign_id" not in indexes
        monkeypatch.undo()
        assert await migrate(engine) == SCHEMA_VERSION
        async with engine.connect() as conn:
            indexes = await conn.run_sync(lambda c: {i["name"] for i in inspect(c).get_indexes("contact")})
            names = (await conn.execute(text("SELECT name FROM tenant"))).scalars().all()
        assert "ix_contact_campaign_id" in indexes and names == ["old"]
    finally:
        await engine.dispose()


PRAGMAS_SET = {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1, "busy_timeout": 30000}  # 2: FULL


async def test_sqlite_pragmas_hold_on_every_new_connection(sqlite_url: str) -> None:
    engine = create_engine(sqlite_url)
    try:
        await migrate(engine)
        await engine.dispose()  # the pool is empty: the next connections are new ones
        async with engine.connect() as one, engine.connect() as two:
            for conn in (one, two):
                found = {name: (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar() for name in PRAGMAS_SET}
                assert found == PRAGMAS_SET
    finally:
        await engine.dispose()
    # The sqlite3 driver's own connection (SqliteCalls) runs the same list.
    store = Store(create_engine(sqlite_url))
    try:
        assert isinstance(store.calls, SqliteCalls)
        found = await store.calls.direct.read(
            lambda conn: {name: conn.execute(f"PRAGMA {name}").fetchone()[0] for name in PRAGMAS_SET})
        assert found == PRAGMAS_SET
        assert [p.split()[1].split("=")[0] for p in db.SQLITE_PRAGMAS] == list(PRAGMAS_SET)  # none untested
    finally:
        await store.close()


async def test_foreign_keys_are_enforced_and_cascade(store: Store) -> None:
    with pytest.raises(StoreError):
        await store.insert_contacts("cmp_missing", rows([number(1)]))
    assert await count(store, T_CONTACT) == 0
    tenant_id = await make_tenant(store)
    cid = await make_campaign(store, tenant_id)
    await store.insert_contacts(cid, rows([number(1), number(2)]))
    async with store.write() as conn:
        await conn.execute(T_TENANT.delete().where(T_TENANT.c.id == tenant_id))
    assert (await count(store, T_CAMPAIGN), await count(store, T_CONTACT)) == (0, 0)


# ---- tenants and keys ------------------------------------------------------------------------------


async def test_tenant_upsert_creates_updates_and_keeps_limits(store: Store) -> None:
    created = await store.upsert_tenant("t_one", "acme", 5, None, defaults=(10, 60))
    assert (created.id, created.name, created.concurrent_max, created.calls_per_minute) == ("t_one", "acme", 5, 60)
    assert_utc(created.created_at, utcnow())

    # Same name: the existing tenant (and its id) is updated, only with the limits given.
    updated = await store.upsert_tenant("t_two", "acme", 20, None, defaults=(10, 60))
    assert (updated.id, updated.concurrent_max, updated.calls_per_minute) == ("t_one", 20, 60)
    kept = await store.upsert_tenant("t_three", "acme", None, None, defaults=(99, 99))
    assert (kept.id, kept.concurrent_max, kept.calls_per_minute) == ("t_one", 20, 60)
    changed = await store.upsert_tenant("t_four", "acme", None, 120, defaults=(99, 99))
    assert (changed.concurrent_max, changed.calls_per_minute) == (20, 120)

    stored = await store.get_tenant("t_one")
    assert stored is not None
    assert (stored.name, stored.concurrent_max, stored.calls_per_minute) == ("acme", 20, 120)
    assert stored.created_at == created.created_at
    assert [t.id for t in await store.list_tenants()] == ["t_one"]
    assert await store.get_tenant("t_two") is None


async def test_api_keys_are_stored_hashed_and_revoked_keys_are_gone(store: Store) -> None:
    tenant_id, key = await create_key(store, "acme", concurrent_max=3, calls_per_minute=30, defaults=(10, 60))
    key_id = key.split("_")[1]
    secret = key.split("_", 2)[2]
    async with store.read() as conn:
        stored_rows = [dict(r._mapping) for r in (await conn.execute(select(T_KEY))).all()]
        tenant_rows = [dict(r._mapping) for r in (await conn.execute(select(T_TENANT))).all()]
    assert len(stored_rows) == 1
    record = stored_rows[0]
    assert record["id"] == key_id and record["tenant_id"] == tenant_id
    assert record["secret_hash"] == hashlib.sha256(key.encode()).hexdigest()
    for row in stored_rows + tenant_rows:
        assert not any(secret in str(value) for value in row.values()), row

    auth = Authenticator(store)
    who = await auth.authenticate(f"Bearer {key}")
    assert (who.tenant_id, who.key_id) == (tenant_id, key_id)
    got = await store.get_api_key(key_id)
    assert got is not None and got.revoked_at is None

    async with store.write() as conn:
        await conn.execute(update(T_KEY).where(T_KEY.c.id == key_id).values(revoked_at=utcnow()))
    assert await store.get_api_key(key_id) is None
    with pytest.raises(Unauthorized):
        await auth.authenticate(f"Bearer {key}")
    # A second key for the same tenant still works: revocation is per key.
    same_tenant, other = await create_key(store, "acme", concurrent_max=None, calls_per_minute=None,
                                          defaults=(10, 60))
    assert same_tenant == tenant_id
    assert (await auth.authenticate(f"Bearer {other}")).tenant_id == tenant_id


# ---- contacts --------------------------------------------------------------------------------------


async def test_insert_contacts_collapses_duplicates_within_and_across_batches(store: Store) -> None:
    cid = await make_campaign(store, await make_tenant(store))
    other = await make_campaign(store, await make_tenant(store, "globex"))
    batch = [
        {"line": 2, "phone_e164": number(1), "raw_number": "(415) 000-0001", "fields": {"n": "first"}},
        {"line": 3, "phone_e164": number(2), "raw_number": number(2), "fields": {"n": "b"}},
        {"line": 4, "phone_e164": number(1), "raw_number": "4150000001", "fields": {"n": "again"}},
    ]
    await store.insert_contacts(cid, batch)
    await store.insert_contacts(cid, rows([number(2), number(3), number(3)], first_line=5))
    await store.insert_contacts(cid, [])
    await store.insert_contacts(other, rows([number(1)]))  # the same number in another campaign is its own

    contacts = await all_contacts(store, cid)
    assert [(c.phone_e164, c.line) for c in contacts] == [(number(1), 2), (number(2), 3), (number(3), 6)]
    first = contacts[0]
    assert first.raw_number == "(415) 000-0001" and first.fields == {"n": "first"}  # the first one is kept
    assert all(c.status == "pending" and c.attempts == 0 for c in contacts)
    assert await store.count_contacts(cid) == 3
    assert await store.count_contacts(other) == 1


async def test_raw_number_is_cut_to_the_column_width(store: Store) -> None:
    cid = await make_campaign(store, await make_tenant(store))
    raw = "+1 415 000 0001 " + "x" * 200
    await store.insert_contacts(cid, [{"line": 2, "phone_e164": number(1), "raw_number": raw, "fields": {}}])
    (contact,) = await all_contacts(store, cid)
    assert contact.raw_number == raw[:100]


async def test_contact_counts_per_status(store: Store) -> None:
    tenant_id = await make_tenant(store)
    a = await make_campaign(store, tenant_id)
    b = await make_campaign(store, tenant_id)
    await insert_many(store, a, 10)
    await store.insert_contacts(b, rows([number(100)]))
    ids = [c.id for c in await all_contacts(store, a)]
    await set_status(store, ids[:2], ContactStatus.FAILED)  # type: ignore[arg-type]
    await set_status(store, ids[2:5], ContactStatus.COMPLETED)  # type: ignore[arg-type]

    counts = await store.contact_counts(iter([a, b, "cmp_unknown"]))
    zero = {s.value: 0 for s in ContactStatus}
    assert counts[a] == {**zero, "pending": 5, "failed": 2, "completed": 3}
    assert counts[b] == {**zero, "pending": 1}
    assert counts["cmp_unknown"] == zero
    assert await store.contact_counts([]) == {}


async def test_list_contacts_orders_pages_and_filters(store: Store) -> None:
    cid = await make_campaign(store, await make_tenant(store))
    await store.insert_contacts(cid, rows([number(i) for i in (9, 3, 7, 1, 5)]))  # file order, not number order
    contacts = await all_contacts(store, cid)
    ids = [int(c.id or 0) for c in contacts]
    assert ids == sorted(ids)
    assert [c.phone_e164 for c in contacts] == [number(i) for i in (9, 3, 7, 1, 5)]

    page, total = await store.list_contacts(cid, None, 2, 0)
    assert total == 5 and [c.id for c in page] == ids[:2]
    page, total = await store.list_contacts(cid, None, 2, 4)
    assert total == 5 and [c.id for c in page] == ids[4:]
    page, total = await store.list_contacts(cid, None, 2, 10)
    assert total == 5 and page == []

    await set_status(store, [ids[1], ids[3]], ContactStatus.FAILED)
    failed, total = await store.list_contacts(cid, "failed", 10, 0)
    assert total == 2 and [c.id for c in failed] == [ids[1], ids[3]]
    pending, total = await store.list_contacts(cid, "pending", 1, 1)
    assert total == 3 and [c.id for c in pending] == [ids[2]]
    assert await store.list_contacts("cmp_unknown", None, 10, 0) == ([], 0)


# ---- campaign status -------------------------------------------------------------------------------


async def test_set_campaign_status_is_compare_and_set(store: Store) -> None:
    cid = await make_campaign(store, await make_tenant(store))
    before = await store.get_campaign(cid)
    assert before is not None

    changed, events = await store.set_campaign_status(
        cid, CampaignStatus.RUNNING, CampaignStatus.PAUSED, event_payload={"action": "pause"}
    )
    assert (changed, events) == (False, [])
    assert await store.get_campaign(cid) == before
    assert await count(store, T_EVENT) == 0

    changed, events = await store.set_campaign_status(
        cid, CampaignStatus.DRAFT, CampaignStatus.RUNNING, event_payload={"action": "start"}, started=True
    )
    assert changed and [e.kind for e in events] == ["campaign"]
    assert events[0].payload.items() >= {"action": "start", "status": "running"}.items()
    running = await store.get_campaign(cid)
    assert running is not None and running.status == "running" and running.completed_at is None
    assert_utc(running.started_at, utcnow())

    # Pause and start again: started_at keeps the first start.
    for expected, new in ((CampaignStatus.RUNNING, CampaignStatus.PAUSED),
                          (CampaignStatus.PAUSED, CampaignStatus.RUNNING)):
        changed, _ = await store.set_campaign_status(cid, expected, new, event_payload={}, started=True)
        assert changed
    again = await store.get_campaign(cid)
    assert again is not None and again.started_at == running.started_at

    # Two writers racing from the same read: exactly one wins.
    results = await asyncio.gather(*(
        store.set_campaign_status(cid, CampaignStatus.RUNNING, CampaignStatus.PAUSED, event_payload={"n": i})
        for i in range(5)
    ))
    assert sorted(changed for changed, _ in results) == [False] * 4 + [True]
    assert await count(store, T_EVENT, cid) == 4  # start, pause, start, and the one winning pause


async def test_stop_cancels_exactly_the_pending_contacts_with_one_event_each(store: Store) -> None:
    tenant_id = await make_tenant(store)
    cid = await make_campaign(store, tenant_id, status="running")
    bystander = await make_campaign(store, tenant_id, status="running")
    await insert_many(store, cid, 1200)  # more than one chunk (1,000) of event inserts
    await store.insert_contacts(bystander, rows([number(1), number(2)]))
    ids = [c.id for c in await all_contacts(store, cid)]
    others = {ids[0]: ContactStatus.ORIGINATED, ids[10]: ContactStatus.CONNECTED,
              ids[1100]: ContactStatus.FAILED, ids[-1]: ContactStatus.COMPLETED}
    for contact_id, status in others.items():
        await set_status(store, [contact_id], status)  # type: ignore[list-item]
    pending_ids = [i for i in ids if i not in others]

    changed, events = await store.set_campaign_status(
        cid, CampaignStatus.RUNNING, CampaignStatus.COMPLETED, event_payload={"action": "stop"},
        cancel_pending=True,
    )
    assert changed
    # No attempt is in flight (the two busy contacts are set by hand): the campaign is over at once.
    assert [e.kind for e in events] == ["cancelled"] * len(pending_ids) + ["campaign", "end"]
    assert [e.payload["contact_id"] for e in events[:-2]] == pending_ids
    event_ids = [e.id for e in events]
    assert all(a < b for a, b in zip(event_ids, event_ids[1:], strict=False))  # type: ignore[operator]
    sample = events[5].payload
    assert sample["status"] == "cancelled" and sample["reason"] == "campaign_stopped" and sample["attempt"] == 0
    assert sample["phone_number"] == number(ids.index(sample["contact_id"]))

    stored_events = await store.events_after(cid, 0, limit=10_000)
    assert [(e.id, e.kind, e.payload) for e in stored_events] == [(e.id, e.kind, e.payload) for e in events]
    after = {c.id: c.status for c in await all_contacts(store, cid)}
    assert {i for i, s in after.items() if s == "cancelled"} == set(pending_ids)
    assert all(after[i] == s.value for i, s in others.items())
    assert (await store.contact_counts([bystander]))[bystander]["pending"] == 2
    assert await store.events_after(bystander, 0) == []
    done = await store.get_campaign(cid)
    assert done is not None and done.status == "completed"
    assert_utc(done.completed_at, utcnow())

    # A second stop finds nothing to do: no more events, nothing cancelled twice.
    changed, events = await store.set_campaign_status(
        cid, CampaignStatus.RUNNING, CampaignStatus.COMPLETED, event_payload={}, cancel_pending=True
    )
    assert (changed, events) == (False, [])
    assert await count(store, T_EVENT, cid) == len(pending_ids) + 2


# ---- the end of a campaign -------------------------------------------------------------------------


async def _call_up(store: Store, contact: Contact, channel_id: str) -> None:
    assert await store.begin_attempt(contact, channel_id) is not None
    assert await store.record_transition(
        channel_id, attempt_state="originated", attempt_values={"originated_at": utcnow()},
        contact_status=ContactStatus.ORIGINATED, contact_values={}, payload={}, only_from=("dialing",),
    ) is not None


async def _hang_up(store: Store, channel_id: str, *, only_from: tuple[str, ...] = ("originated",)) -> list[str]:
    """End the call as completed; the kinds of the events its transaction wrote."""
    published: list[Event] = []
    store.publish = published.extend
    try:
        await store.record_transition(
            channel_id, attempt_state="ended", attempt_values={"ended_at": utcnow(), "cause": 16},
            contact_status=ContactStatus.COMPLETED, contact_values={"hangup_cause": 16}, payload={},
            only_from=only_from,
        )
    finally:
        store.publish = None
    return [e.kind for e in published]


async def test_a_stop_with_calls_up_ends_with_the_last_call_once(store: Store) -> None:
    cid = await make_campaign(store, await make_tenant(store), status="running")
    await store.insert_contacts(cid, rows([number(i) for i in range(4)]))
    contacts = await all_contacts(store, cid)
    for i, contact in enumerate(contacts[:2]):
        await _call_up(store, contact, f"ch-{i}")
    # The third is being dialled (never confirmed): it counts as in flight until given back.
    assert await store.begin_attempt(contacts[2], "ch-2") is not None

    changed, events = await store.set_campaign_status(
        cid, CampaignStatus.RUNNING, CampaignStatus.COMPLETED, event_payload={"action": "stop"}, cancel_pending=True,
    )
    # The contact being dialled is still pending, so it is cancelled too; but its attempt and two calls
    # are up: not over yet.
    assert changed and [e.kind for e in events] == ["cancelled", "cancelled", "campaign"]
    assert await store.has_calls_in_flight(cid)
    assert await _hang_up(store, "ch-0") == ["completed"]
    assert await store.give_back_attempt("ch-2")  # never reached the PBX; writes no event of its own
    assert [e.kind for e in await store.events_after(cid, 0)][-1] == "completed"
    # The last call's outcome and the end, in one transaction.
    assert await _hang_up(store, "ch-1") == ["completed", "end"]
    assert not await store.has_calls_in_flight(cid)
    # A late duplicate of that end changes nothing and writes no second end.
    assert await _hang_up(store, "ch-1", only_from=("originated", "answered")) == []
    kinds = [e.kind for e in await store.events_after(cid, 0)]
    assert kinds.count("end") == 1 and kinds[-2:] == ["completed", "end"]
    end = (await store.events_after(cid, 0))[-1]
    assert end.payload["status"] == "completed" and end.payload["at"]


async def test_a_retry_decided_before_a_stop_that_committed_first_is_cancelled(store: Store) -> None:
    """The follower decides a busy call's retry from the campaign it read while it ran; the operator's stop
    commits before that write. Under the write's lock the retry is cancelled: nothing pending is left in
    the completed campaign, its event says campaign_stopped, and the campaign's end comes with it."""
    cid = await make_campaign(store, await make_tenant(store), status="running")
    await store.insert_contacts(cid, rows([number(1)]))
    (contact,) = await all_contacts(store, cid)
    await _call_up(store, contact, "ch-1")
    changed, _ = await store.set_campaign_status(
        cid, CampaignStatus.RUNNING, CampaignStatus.COMPLETED, event_payload={"action": "stop"}, cancel_pending=True,
    )
    assert changed
    retry_at = utcnow() + timedelta(seconds=600)
    published: list[Event] = []
    store.publish = published.extend
    try:
        moved = await store.record_transition(
            "ch-1", attempt_state="ended", attempt_values={"ended_at": utcnow(), "cause": 17, "reason": "busy"},
            contact_status=ContactStatus.PENDING,
            contact_values={"hangup_cause": 17, "failure_reason": "busy", "next_attempt_at": retry_at,
                            "next_eligible_at": retry_at, "blocked_reason": "retry_delay"},
            payload={"reason": "busy", "cause": 17, "retry_at": "later"}, only_from=("originated",),
        )
    finally:
        store.publish = None
    assert moved is not None
    assert [e.kind for e in published] == ["cancelled", "end"]
    assert published[0].payload["reason"] == "campaign_stopped" and published[0].payload["last_failure"] == "busy"
    assert "retry_at" not in published[0].payload
    (after,) = await all_contacts(store, cid)
    assert (after.status, after.failure_reason, after.next_attempt_at, after.blocked_reason) == (
        "cancelled", "busy", None, None)
    assert await store.unfinished_contacts(cid) == 0


async def test_the_end_comes_with_the_given_back_attempt_when_it_was_the_last(store: Store) -> None:
    cid = await make_campaign(store, await make_tenant(store), status="running")
    await store.insert_contacts(cid, rows([number(1)]))
    (contact,) = await all_contacts(store, cid)
    assert await store.begin_attempt(contact, "ch-1") is not None
    changed, events = await store.set_campaign_status(
        cid, CampaignStatus.RUNNING, CampaignStatus.FAILED, event_payload={"action": "fail"},
    )
    assert changed and [e.kind for e in events] == ["campaign"]
    published: list[Event] = []
    store.publish = published.extend
    assert await store.give_back_attempt("ch-1")
    assert [(e.kind, e.payload["status"]) for e in published] == [("end", "failed")]
    assert not await store.give_back_attempt("ch-1")
    assert [e.kind for e in await store.events_after(cid, 0)] == ["campaign", "end"]


async def test_only_a_terminal_campaign_ends(store: Store) -> None:
    cid = await make_campaign(store, await make_tenant(store), status="running")
    await store.insert_contacts(cid, rows([number(1), number(2)]))
    first, _second = await all_contacts(store, cid)
    await _call_up(store, first, "ch-1")
    assert await _hang_up(store, "ch-1") == ["completed"]  # running, nothing in flight: not over
    changed, events = await store.set_campaign_status(
        cid, CampaignStatus.RUNNING, CampaignStatus.PAUSED, event_payload={"action": "pause"},
    )
    assert changed and [e.kind for e in events] == ["campaign"]
    changed, events = await store.set_campaign_status(
        cid, CampaignStatus.PAUSED, CampaignStatus.COMPLETED, event_payload={"action": "stop"}, cancel_pending=True,
    )
    assert [e.kind for e in events] == ["cancelled", "campaign", "end"]


# ---- attempts --------------------------------------------------------------------------------------


async def test_begin_attempt_writes_the_attempt_and_refuses_stale_contacts(store: Store) -> None:
    cid = await make_campaign(store, await make_tenant(store), status="running")
    await store.insert_contacts(cid, rows([number(1), number(2)]))
    first, second = await all_contacts(store, cid)

    attempt = await store.begin_attempt(first, "chan-1")
    assert attempt is not None
    assert (attempt.contact_id, attempt.campaign_id, attempt.number, attempt.state) == (first.id, cid, 1, "dialing")
    assert attempt.channel_id == "chan-1" and attempt.id is not None
    assert await store.get_attempt("chan-1") == attempt
    fresh = await store.get_contact(first.id)  # type: ignore[arg-type]
    assert fresh is not None and fresh.attempts == 1 and fresh.status == "pending"
    assert_utc(fresh.last_attempt_at, utcnow())

    # While that attempt is unresolved the contact stays pending, but is not dialled a second time.
    assert await store.begin_attempt(fresh, "chan-1x") is None
    assert await store.next_due_contacts(cid, utcnow(), 10) == [second]
    # The call fails and the contact goes back to pending for a retry.
    back = await store.record_transition(
        "chan-1", attempt_state="ended", attempt_values={"ended_at": utcnow(), "reason": "busy"},
        contact_status=ContactStatus.PENDING, contact_values={"next_attempt_at": None}, payload={},
        only_from=("dialing",),
    )
    assert back is not None
    # The stale copy (attempts == 0) loses the optimistic check: no second attempt row.
    assert await store.begin_attempt(first, "chan-1b") is None
    assert await store.get_attempt("chan-1b") is None
    # With the fresh copy it may go again (the retry): attempt number 2.
    retry = await store.begin_attempt(fresh, "chan-1c")
    assert retry is not None and retry.number == 2

    # A contact that is no longer pending is refused even with its current attempts count.
    await set_status(store, [second.id], ContactStatus.CANCELLED)  # type: ignore[list-item]
    assert await store.begin_attempt(second, "chan-2") is None
    after = await store.get_contact(second.id)  # type: ignore[arg-type]
    assert after is not None and after.attempts == 0 and after.last_attempt_at is None
    assert [a.channel_id for a in await store.list_attempts(first.id)] == ["chan-1", "chan-1c"]  # type: ignore[arg-type]
    assert await store.list_attempts(second.id) == []  # type: ignore[arg-type]
    assert await count(store, T_ATTEMPT) == 2
    assert [e.kind for e in await store.events_after(cid, 0)] == ["pending"]  # beginning one writes no event


async def test_record_transition_respects_only_from(store: Store) -> None:
    cid = await make_campaign(store, await make_tenant(store), status="running")
    await store.insert_contacts(cid, rows([number(1)]))
    (contact,) = await all_contacts(store, cid)
    assert await store.begin_attempt(contact, "chan-1") is not None

    at = utcnow()
    result = await store.record_transition(
        "chan-1", attempt_state="originated", attempt_values={"originated_at": at, "channel_name": "PJSIP/x-1"},
        contact_status=ContactStatus.ORIGINATED, contact_values={}, payload={"extra": 1}, only_from=("dialing",),
    )
    assert result is not None
    attempt, event = result
    assert attempt.state == "originated" and attempt.channel_name == "PJSIP/x-1"
    assert event.kind == "originated" and event.campaign_id == cid
    assert event.payload["contact_id"] == contact.id and event.payload["phone_number"] == number(1)
    assert event.payload["attempt"] == 1 and event.payload["channel_id"] == "chan-1" and event.payload["extra"] == 1
    stored = await store.get_attempt("chan-1")
    assert stored is not None and stored.state == "originated" and stored.originated_at == at

    snapshot = (await store.get_contact(contact.id), await store.get_attempt("chan-1"))  # type: ignore[arg-type]
    # The same event again, and a late one that no longer applies: nothing changes, no event.
    duplicate = await store.record_transition(
        "chan-1", attempt_state="originated", attempt_values={"originated_at": utcnow()},
        contact_status=ContactStatus.ORIGINATED, contact_values={}, payload={}, only_from=("dialing",),
    )
    late = await store.record_transition(
        "chan-1", attempt_state="answered", attempt_values={"answered_at": utcnow()},
        contact_status=ContactStatus.CONNECTED, contact_values={}, payload={}, only_from=("dialing",),
    )
    unknown = await store.record_transition(
        "chan-nope", attempt_state="ended", attempt_values={}, contact_status=ContactStatus.FAILED,
        contact_values={}, payload={}, only_from=("dialing", "originated"),
    )
    assert (duplicate, late, unknown) == (None, None, None)
    assert (await store.get_contact(contact.id), await store.get_attempt("chan-1")) == snapshot  # type: ignore[arg-type]
    assert [e.id for e in await store.events_after(cid, 0)] == [event.id]

    ended = await store.record_transition(
        "chan-1", attempt_state="ended", attempt_values={"ended_at": utcnow(), "cause": 17, "reason": "busy"},
        contact_status=ContactStatus.FAILED, contact_values={"failure_reason": "busy", "hangup_cause": 17},
        payload={"reason": "busy"}, only_from=("originated",),
    )
    assert ended is not None and ended[1].id > event.id  # type: ignore[operator]
    final = await store.get_contact(contact.id)  # type: ignore[arg-type]
    assert final is not None and (final.status, final.failure_reason, final.hangup_cause) == ("failed", "busy", 17)


async def test_events_after_pages_in_strictly_increasing_ids(store: Store) -> None:
    tenant_id = await make_tenant(store)
    a = await make_campaign(store, tenant_id, status="running")
    b = await make_campaign(store, tenant_id, status="running")
    for cid in (a, b):
        await store.insert_contacts(cid, rows([number(i) for i in range(12)]))
    # Interleave the two campaigns' events so that ids of one campaign are not contiguous.
    for expected, new in ((CampaignStatus.RUNNING, CampaignStatus.PAUSED),
                          (CampaignStatus.PAUSED, CampaignStatus.RUNNING)):
        for cid in (a, b):
            assert (await store.set_campaign_status(cid, expected, new, event_payload={}))[0]
    for cid in (b, a):
        assert (await store.set_campaign_status(cid, CampaignStatus.RUNNING, CampaignStatus.COMPLETED,
                                                event_payload={}, cancel_pending=True))[0]

    seen: list[int] = []
    after = 0
    while page := await store.events_after(a, after, limit=5):
        assert len(page) <= 5
        assert all(e.campaign_id == a for e in page)
        seen.extend(e.id for e in page)  # type: ignore[misc]
        after = page[-1].id  # type: ignore[assignment]
    assert len(seen) == 2 + 12 + 1 + 1  # pause, resume, 12 cancelled, completed, end
    assert all(x < y for x, y in zip(seen, seen[1:], strict=False))
    assert seen == [e.id for e in await store.events_after(a, 0, limit=1000)]
    assert await store.last_event_id(a) == seen[-1]
    assert await store.events_after(a, seen[-1]) == []
    assert await store.events_after(a, seen[3], limit=2) == (await store.events_after(a, 0))[4:6]
    assert not set(seen) & {e.id for e in await store.events_after(b, 0)}
    assert await store.last_event_id("cmp_unknown") == 0


async def test_attempt_stats(store: Store) -> None:
    cid = await make_campaign(store, await make_tenant(store), status="running")
    empty = await make_campaign(store, await make_tenant(store, "globex"), status="running")
    await store.insert_contacts(cid, rows([number(i) for i in range(5)]))
    contacts = await all_contacts(store, cid)
    for i, contact in enumerate(contacts):
        assert await store.begin_attempt(contact, f"chan-{i}") is not None
    now = utcnow()
    changes: dict[str, dict[str, Any]] = {
        # answered and ended: counts as ended and answered, with talk time
        "chan-0": {"state": "ended", "answered_at": now, "ended_at": now, "talk_seconds": 10.0},
        "chan-1": {"state": "ended", "answered_at": now, "ended_at": now, "talk_seconds": 20.5},
        # ended without an answer
        "chan-2": {"state": "ended", "ended_at": now},
        # answered, still talking: not ended, not in the answer rate yet
        "chan-3": {"state": "answered", "answered_at": now},
        # started two minutes ago (outside the window), still dialing
        "chan-4": {"created_at": now - timedelta(minutes=2)},
    }
    async with store.write() as conn:
        for channel, values in changes.items():
            await conn.execute(update(T_ATTEMPT).where(T_ATTEMPT.c.channel_id == channel).values(**values))

    stats = await store.attempt_stats(cid, now - timedelta(seconds=60))
    assert stats == {"calls_last_minute": 4, "ended": 3, "answered": 2, "avg_talk_seconds": 15.25}
    assert await store.attempt_stats(empty, now - timedelta(seconds=60)) == {
        "calls_last_minute": 0, "ended": 0, "answered": 0, "avg_talk_seconds": 0.0,
    }
    assert (await store.attempt_stats(cid, now + timedelta(seconds=5)))["calls_last_minute"] == 0
    assert [a.channel_id for a in await store.attempts_in_flight()] == ["chan-3", "chan-4"]


# ---- import bookkeeping and purge ------------------------------------------------------------------


async def test_stale_imports_are_the_importing_campaigns_and_stay_hidden(store: Store) -> None:
    tenant_id = await make_tenant(store)
    importing = await make_campaign(store, tenant_id, status=CampaignStatus.IMPORTING.value)
    visible = await make_campaign(store, tenant_id)
    finished = await make_campaign(store, tenant_id, status=CampaignStatus.IMPORTING.value)
    await store.finish_import(finished, CampaignStatus.SCHEDULED, {"contacts": 0, "note": "fertig ✓"})

    assert sorted(await store.stale_imports()) == [importing]
    assert await store.get_campaign(importing) is None
    listed, total = await store.list_campaigns(tenant_id, 10, 0)
    assert total == 2 and {c.id for c in listed} == {visible, finished}
    done = await store.get_campaign(finished)
    assert done is not None and done.status == "scheduled" and done.import_report == {"contacts": 0, "note": "fertig ✓"}

    # finish_import only finishes an import: a campaign already visible is left alone.
    await store.finish_import(visible, CampaignStatus.SCHEDULED, {"x": 1})
    untouched = await store.get_campaign(visible)
    assert untouched is not None and untouched.status == "draft" and untouched.import_report == {}


async def test_purge_removes_a_big_campaign_and_everything_it_owns(store: Store) -> None:
    tenant_id = await make_tenant(store)
    doomed = await make_campaign(store, tenant_id, status="running")
    kept = await make_campaign(store, tenant_id, status="running")
    big = 20_500  # more than one purge chunk of 20,000
    started = time.monotonic()
    await insert_many(store, doomed, big, batch=5000)
    await store.insert_contacts(kept, rows([number(i) for i in range(3)]))
    for cid in (doomed, kept):
        contact = (await store.list_contacts(cid, None, 1, 0))[0][0]
        assert await store.begin_attempt(contact, f"chan-{cid}") is not None
        await store.record_transition(
            f"chan-{cid}", attempt_state="originated", attempt_values={}, contact_status=ContactStatus.ORIGINATED,
            contact_values={}, payload={}, only_from=("dialing",),
        )
        await store.set_campaign_status(cid, CampaignStatus.RUNNING, CampaignStatus.PAUSED, event_payload={})
    assert await store.count_contacts(doomed) == big

    await store.purge_campaign(doomed)
    assert time.monotonic() - started < 40
    async with store.read() as conn:
        assert (await conn.execute(select(T_CAMPAIGN.c.id))).scalars().all() == [kept]
    for table in (T_CONTACT, T_ATTEMPT, T_EVENT):
        assert await count(store, table, doomed) == 0, table.name
    assert (await count(store, T_CONTACT, kept), await count(store, T_ATTEMPT, kept)) == (3, 1)
    assert await count(store, T_EVENT, kept) == 2
    await store.purge_campaign(doomed)  # purging what is gone is harmless
    await store.purge_campaign(kept)
    assert [await count(store, t) for t in (T_CAMPAIGN, T_CONTACT, T_ATTEMPT, T_EVENT)] == [0, 0, 0, 0]


# ---- types: time zones and JSON --------------------------------------------------------------------


async def test_timestamps_come_back_as_aware_utc(store: Store) -> None:
    tenant_id = await make_tenant(store)
    plus_two = timezone(timedelta(hours=2))
    scheduled = datetime(2031, 1, 1, 9, 0, 0, 123456, tzinfo=plus_two)
    cid = await make_campaign(store, tenant_id, status="running", scheduled_at=scheduled)
    await store.insert_contacts(cid, rows([number(1)]))
    (contact,) = await all_contacts(store, cid)
    attempt = await store.begin_attempt(contact, "chan-1")
    assert attempt is not None
    async with store.write() as conn:  # the call is over: the contact is due again at next_attempt_at
        await conn.execute(update(T_ATTEMPT).where(T_ATTEMPT.c.channel_id == "chan-1").values(state="ended"))
    retry_at = datetime(2031, 6, 1, 12, 30, tzinfo=timezone(timedelta(hours=-7)))
    async with store.write() as conn:
        await conn.execute(update(T_CONTACT).where(T_CONTACT.c.id == contact.id).values(next_attempt_at=retry_at))
    await store.set_campaign_status(cid, CampaignStatus.RUNNING, CampaignStatus.PAUSED, event_payload={},
                                    started=True)
    now = utcnow()

    campaign = await store.get_campaign(cid)
    assert campaign is not None
    assert campaign.scheduled_at == scheduled
    assert_utc(campaign.scheduled_at)
    assert campaign.scheduled_at is not None
    assert campaign.scheduled_at.hour == 7 and campaign.scheduled_at.microsecond == 123456
    for value in (campaign.created_at, campaign.updated_at, campaign.started_at):
        assert_utc(value, now)
    fresh = await store.get_contact(contact.id)  # type: ignore[arg-type]
    assert fresh is not None
    assert_utc(fresh.last_attempt_at, now)
    assert_utc(fresh.updated_at, now)
    assert_utc(fresh.next_attempt_at)
    assert fresh.next_attempt_at == retry_at
    stored_attempt = await store.get_attempt("chan-1")
    assert stored_attempt is not None
    assert_utc(stored_attempt.created_at, now)
    (event,) = await store.events_after(cid, 0)
    assert_utc(event.created_at, now)
    tenant = await store.get_tenant(tenant_id)
    assert tenant is not None
    assert_utc(tenant.created_at, now)
    next_retry = await store.next_retry_time(cid)
    assert next_retry == retry_at
    assert_utc(next_retry)
    due = await store.next_due_contacts(cid, datetime(2031, 6, 1, 19, 30, 1, tzinfo=UTC), 10)
    assert [c.id for c in due] == [contact.id]
    assert await store.next_due_contacts(cid, datetime(2031, 6, 1, 19, 29, 59, tzinfo=UTC), 10) == []

    # The column holds UTC itself, not local time: on SQLite the text, on PostgreSQL the instant.
    async with store.read() as conn:
        raw = (await conn.execute(text("SELECT scheduled_at FROM campaign WHERE id = :id"), {"id": cid})).scalar_one()
    if store.dialect == "sqlite":
        assert str(raw).startswith("2031-01-01 07:00:00.123456")
    else:
        assert raw == scheduled


async def test_naive_datetimes_are_refused(store: Store) -> None:
    tenant_id = await make_tenant(store)
    naive = datetime(2031, 1, 1, 9, 0)
    with pytest.raises(StoreError):
        await store.insert_campaign(campaign_model(tenant_id, scheduled_at=naive))
    assert await count(store, T_CAMPAIGN) == 0


async def test_json_fields_round_trip_unicode(store: Store) -> None:
    cid = await make_campaign(
        store, await make_tenant(store), import_report={"custom_fields": ["név", "город"], "note": "✓ 100%"}
    )
    fields = {
        "name": "Zoë Ångström-Núñez",
        "город": "Москва",
        "city": "東京",
        "emoji": "📞☎️",
        "quote": 'He said "hi", then \\left',
        "rtl": "مرحبا",
        "empty": "",
        "nul-ish": "a\tb\nc",
    }
    await store.insert_contacts(cid, [{"line": 2, "phone_e164": number(1), "raw_number": "٠١٢", "fields": fields}])
    (contact,) = await all_contacts(store, cid)
    assert contact.fields == fields
    assert contact.raw_number == "٠١٢"
    assert (await store.get_contact(contact.id)).fields == fields  # type: ignore[arg-type, union-attr]
    campaign = await store.get_campaign(cid)
    assert campaign is not None and campaign.import_report == {"custom_fields": ["név", "город"], "note": "✓ 100%"}



# ---- races between concurrent writers (kept last: they fail on PostgreSQL, see the docstrings) -------


async def test_concurrent_duplicate_transitions_apply_once(store: Store) -> None:
    """The same call end reported twice at once (ARI event and reconciliation) is applied once.

    BUG on PostgreSQL (dialerd/store/repo.py, Store.record_transition: ``if row is None or row.state not
    in only_from`` then ``update(T_ATTEMPT).where(T_ATTEMPT.c.id == row.id)``): the attempt's state
    is read with a plain SELECT and checked against ``only_from`` in Python, then updated by id only. On
    SQLite the in-process write lock serialises writers; on PostgreSQL two transactions both read
    'dialing', both pass, both update, and each appends an event: 5 concurrent duplicates -> 5 results,
    5 'failed' events (expected 1). The UPDATE needs ``AND state IN only_from`` (checking rowcount) or
    the SELECT needs FOR UPDATE.
    """
    cid = await make_campaign(store, await make_tenant(store), status="running")
    await store.insert_contacts(cid, rows([number(1)]))
    (contact,) = await all_contacts(store, cid)
    assert await store.begin_attempt(contact, "chan-1") is not None
    results = await asyncio.gather(*(
        store.record_transition(
            "chan-1", attempt_state="ended", attempt_values={"ended_at": utcnow(), "reason": "busy"},
            contact_status=ContactStatus.FAILED, contact_values={"failure_reason": "busy"}, payload={},
            only_from=("dialing",),
        )
        for _ in range(5)
    ))
    assert sum(result is not None for result in results) == 1
    assert [e.kind for e in await store.events_after(cid, 0)] == ["failed"]


async def test_stop_events_match_the_contacts_cancelled_despite_a_concurrent_writer(store: Store) -> None:
    """While stop cancels pending contacts, a call outcome for another contact commits in between.

    BUG on PostgreSQL (dialerd/store/repo.py, Store._cancel_pending): the pending
    contacts are SELECTed (for the events), then cancelled by a separate
    ``UPDATE ... WHERE status = 'pending'``. Under READ COMMITTED a contact that turns pending in
    between (a retryable failure put back to pending) is cancelled with no event, and one that left
    pending in between (a late 'originated') gets a 'cancelled' event while it is not cancelled.
    Expected: the events name exactly the contacts cancelled (UPDATE ... RETURNING, or SELECT FOR UPDATE).
    On SQLite the concurrent writer is locked out, so the invariant holds there.
    """
    cid = await make_campaign(store, await make_tenant(store), status="running")
    await store.insert_contacts(cid, rows([number(i) for i in range(4)]))
    ids = [c.id for c in await all_contacts(store, cid)]
    await set_status(store, ids[:2], ContactStatus.ORIGINATED)  # type: ignore[arg-type]
    fired: list[bool] = []

    def interleave(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if fired or not statement.startswith("UPDATE contact SET status"):
            return
        fired.append(False)  # also keeps this hook from firing on its own statements
        # Between _cancel_pending's SELECT and its UPDATE: another writer commits two call outcomes.
        with store.engine.sync_engine.connect() as other:
            timeout = 200 if store.dialect == "sqlite" else None
            if timeout is not None:
                other.exec_driver_sql(f"PRAGMA busy_timeout={timeout}")
                other.commit()
            try:
                other.execute(update(T_CONTACT).where(T_CONTACT.c.id == ids[0]).values(status="pending"))
                other.execute(update(T_CONTACT).where(T_CONTACT.c.id == ids[2]).values(status="originated"))
                other.commit()
                fired[0] = True
            except OperationalError:
                other.rollback()  # SQLite: the stop's transaction holds the write lock
            finally:
                if timeout is not None:
                    other.exec_driver_sql("PRAGMA busy_timeout=30000")
                    other.commit()

    event.listen(store.engine.sync_engine, "before_cursor_execute", interleave)
    try:
        changed, events = await store.set_campaign_status(
            cid, CampaignStatus.RUNNING, CampaignStatus.COMPLETED, event_payload={}, cancel_pending=True
        )
    finally:
        event.remove(store.engine.sync_engine, "before_cursor_execute", interleave)
    assert changed and fired == [store.dialect == "postgresql"]
    cancelled = {int(c.id or 0) for c in await all_contacts(store, cid) if c.status == "cancelled"}
    announced = [e.payload["contact_id"] for e in events if e.kind == "cancelled"]
    assert sorted(announced) == sorted(cancelled)



async def test_stop_writes_its_events_in_batches(store: Store) -> None:
    """Cancelling many contacts inserts their events a chunk at a time, not one statement per contact.

    BUG on SQLite (dialerd/store/repo.py, Store._events): ``insert(T_EVENT).returning(...,
    sort_by_parameter_order=True)`` with a list of 1,000 parameter sets makes SQLAlchemy fall back to one
    INSERT per row on SQLite (no insert sentinel it can sort by), so stopping a 2,500-contact campaign runs
    2,500 INSERT statements (20,000 contacts: 20,000 statements, ~6.5 s holding the only write lock, which
    every call outcome waits behind). PostgreSQL batches them (3 statements here).
    """
    cid = await make_campaign(store, await make_tenant(store), status="running")
    await insert_many(store, cid, 2500)
    inserts: list[str] = []

    def watch(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("INSERT INTO event"):
            inserts.append(statement)

    event.listen(store.engine.sync_engine, "before_cursor_execute", watch)
    try:
        changed, events = await store.set_campaign_status(
            cid, CampaignStatus.RUNNING, CampaignStatus.COMPLETED, event_payload={}, cancel_pending=True
        )
    finally:
        event.remove(store.engine.sync_engine, "before_cursor_execute", watch)
    assert changed and len(events) == 2502  # 2,500 cancelled, the status, the end
    assert len(inserts) <= 10, f"{len(inserts)} INSERT statements for {len(events)} events"


# Kept last: it fails on SQLite (see its docstring), and -x should not hide the tests above.
async def test_column_types_match_the_declared_types(db_url: str) -> None:
    """Every column has the declared kind (and length; zoned timestamps on PostgreSQL).

    BUG (dialerd/store/db.py, migrate(): the hand-written ``CREATE TABLE IF NOT EXISTS schema_version``):
    ``applied_at`` is declared ``TIMESTAMP WITH TIME ZONE`` on every dialect, which SQLite does not know
    (NUMERIC affinity, reflected as NUMERIC, where tables.SchemaVersion declares UTCDateTime = DATETIME), and
    the row is written as ``utcnow().isoformat()`` ("2026-01-01T10:00:00.123+00:00") instead of the format
    UTCDateTime writes everywhere else ("2026-01-01 10:00:00.123000"), so text comparisons mix formats.
    """
    engine = create_engine(db_url)
    try:
        await migrate(engine)
        async with engine.connect() as conn:
            reflected = await conn.run_sync(_reflect)
        declared = _declared(engine.dialect.name)
        mismatches = {
            f"{table}.{column}": (reflected[table]["types"][column], shape)
            for table in declared
            for column, shape in declared[table]["types"].items()
            if reflected[table]["types"].get(column) != shape
        }
        assert mismatches == {}
    finally:
        await engine.dispose()


async def test_the_last_two_calls_ending_in_two_processes_write_one_end(db_url: str) -> None:
    """Two Stores on one database (two daemons): each ends one of the stopped campaign's last two calls at
    the same moment. The campaign row lock orders them, so exactly one writes the end, never none or two."""
    stores = []
    for _ in range(2):
        engine = create_engine(db_url)
        await migrate(engine)
        stores.append(Store(engine))
    try:
        a, b = stores
        for round_ in range(5):
            cid = await make_campaign(a, await make_tenant(a, f"t{round_}"), status="running")
            await a.insert_contacts(cid, rows([number(1), number(2)]))
            first, second = await all_contacts(a, cid)
            await _call_up(a, first, f"ch-{round_}-a")
            await _call_up(a, second, f"ch-{round_}-b")
            changed, _ = await a.set_campaign_status(cid, CampaignStatus.RUNNING, CampaignStatus.COMPLETED,
                                                     event_payload={"action": "stop"}, cancel_pending=True)
            assert changed
            await asyncio.gather(_hang_up(a, f"ch-{round_}-a"), _hang_up(b, f"ch-{round_}-b"))
            kinds = [e.kind for e in await a.events_after(cid, 0)]
            assert kinds.count("end") == 1 and kinds[-1] == "end", kinds
    finally:
        for s in stores:
            await s.close()


# ---- operator CLI: ensure_tenant, limits, key listing and revocation (issue 9, item 8) ----------------


async def test_ensure_tenant_creates_once_and_never_changes_limits(store: Store) -> None:
    created, new = await store.ensure_tenant("t_one", "acme", 5, 50)
    assert new and (created.id, created.concurrent_max, created.calls_per_minute) == ("t_one", 5, 50)
    again, new = await store.ensure_tenant("t_two", "acme", 99, 99)
    assert not new
    assert (again.id, again.concurrent_max, again.calls_per_minute) == ("t_one", 5, 50)
    assert [t.id for t in await store.list_tenants()] == ["t_one"]


async def test_ensure_tenant_from_concurrent_callers_gives_one_row(store: Store) -> None:
    results = await asyncio.gather(*(store.ensure_tenant(f"t_{i}", "acme", 5, 50) for i in range(8)))
    assert len({t.id for t, _ in results}) == 1
    assert sum(new for _, new in results) == 1
    assert await count(store, T_TENANT) == 1


async def test_create_key_refuses_different_limits_for_an_existing_tenant(store: Store) -> None:
    tenant_id, _ = await create_key(store, "acme", concurrent_max=5, calls_per_minute=50, defaults=(10, 60))
    with pytest.raises(Conflict) as refused:
        await create_key(store, "acme", concurrent_max=6, calls_per_minute=None, defaults=(10, 60))
    assert "tenants set --tenant acme --concurrent-max 6" in refused.value.message
    assert await count(store, T_KEY) == 1, "nothing minted"
    same, _ = await create_key(store, "acme", concurrent_max=5, calls_per_minute=50, defaults=(10, 60))
    assert same == tenant_id
    tenant = await store.get_tenant(tenant_id)
    assert tenant is not None and (tenant.concurrent_max, tenant.calls_per_minute) == (5, 50)


async def test_set_limits_changes_only_what_is_given(store: Store) -> None:
    await create_key(store, "acme", concurrent_max=5, calls_per_minute=50, defaults=(10, 60))
    changed = await set_limits(store, "acme", concurrent_max=None, calls_per_minute=70)
    assert (changed.concurrent_max, changed.calls_per_minute) == (5, 70)
    stored = await store.get_tenant_by_name("acme")
    assert stored is not None and (stored.concurrent_max, stored.calls_per_minute) == (5, 70)
    with pytest.raises(NotFound):
        await set_limits(store, "nobody", concurrent_max=3, calls_per_minute=None)
    with pytest.raises(InvalidInput):
        await set_limits(store, "acme", concurrent_max=0, calls_per_minute=None)
    assert await store.set_tenant_limits("nobody", 1, 1) is None


async def test_revoked_keys_stay_listed_and_answer_unauthorized(store: Store) -> None:
    _, first = await create_key(store, "acme", concurrent_max=None, calls_per_minute=None, defaults=(10, 60))
    _, second = await create_key(store, "globex", concurrent_max=None, calls_per_minute=None, defaults=(10, 60))
    first_id = first.split("_")[1]
    key, newly = await revoke_key(store, first_id)
    assert newly and key.revoked_at is not None
    assert_utc(key.revoked_at, utcnow())
    again, newly = await revoke_key(store, first)  # the whole key works too
    assert not newly and again.revoked_at == key.revoked_at
    with pytest.raises(NotFound):
        await revoke_key(store, "k0000000000000000")
    auth = Authenticator(store)
    with pytest.raises(Unauthorized):
        await auth.authenticate(f"Bearer {first}")
    assert (await auth.authenticate(f"Bearer {second}")).key_id == second.split("_")[1]
    listed = [(k.id, tenant, k.revoked_at is not None) for k, tenant in await store.list_api_keys()]
    assert listed == [(first_id, "acme", True), (second.split("_")[1], "globex", False)]
    assert [k.id for k, _ in await store.list_api_keys("globex")] == [second.split("_")[1]]
    counts = await store.active_key_counts()
    assert sorted(counts.values()) == [1]


async def test_last_used_is_written_at_most_once_a_minute_per_key(store: Store) -> None:
    _, key = await create_key(store, "acme", concurrent_max=None, calls_per_minute=None, defaults=(10, 60))
    _, other = await create_key(store, "acme", concurrent_max=None, calls_per_minute=None, defaults=(10, 60))
    key_id = key.split("_")[1]
    now = [1000.0]
    auth = Authenticator(store, clock=lambda: now[0])
    writes: list[str] = []
    touch = store.touch_api_key

    async def counting(kid: str, at: datetime) -> None:
        writes.append(kid)
        await touch(kid, at)

    store.touch_api_key = counting  # type: ignore[method-assign]
    before = utcnow()
    for _ in range(5):
        await auth.authenticate(f"Bearer {key}")
    assert writes == [key_id]
    stored = await store.get_api_key(key_id)
    assert stored is not None and stored.last_used_at is not None
    assert_utc(stored.last_used_at, before)
    await auth.authenticate(f"Bearer {other}")
    assert writes == [key_id, other.split("_")[1]], "per key"
    now[0] += 61
    await auth.authenticate(f"Bearer {key}")
    assert writes == [key_id, other.split("_")[1]], "the stored time is under a minute old: no second write"
    # A new daemon (fresh memory) a minute after the stored use writes again.
    async with store.write() as conn:
        await conn.execute(update(T_KEY).where(T_KEY.c.id == key_id)
                           .values(last_used_at=utcnow() - timedelta(seconds=120)))
    await Authenticator(store).authenticate(f"Bearer {key}")
    assert writes[-1] == key_id and len(writes) == 3
    refreshed = await store.get_api_key(key_id)
    assert refreshed is not None and refreshed.last_used_at is not None
    assert_utc(refreshed.last_used_at, utcnow())
