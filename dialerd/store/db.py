"""Engine creation and versioned schema migrations for SQLite and PostgreSQL."""

from __future__ import annotations

import logging
from importlib import resources
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from dialerd.errors import ConfigError
from dialerd.timestamps import utcnow

log = logging.getLogger("dialerd.store")

# Migrations are ordered SQL files per dialect in dialerd/store/sql: NNNN_name.<dialect>.sql.
MIGRATIONS: list[tuple[int, str]] = [
    (1, "0001_initial"),
    (2, "0002_contact_page_index"),
    (3, "0003_api_contract"),
    (4, "0004_api_key_last_used"),
    (5, "0005_suppressions"),
    (6, "0006_retry_rules"),
    (7, "0007_tenant_limits"),
    (8, "0008_calling_hours"),
    (9, "0009_attempt_day_index"),  # the daily caps' count of a tenant's day
    (10, "0010_caller_id_pools"),  # caller-id pools: the strategy, each attempt's caller id
    (11, "0011_amd"),  # answering-machine detection (issue 12)
    (12, "0012_webhooks"),  # webhooks: the target and secret, each campaign's delivery cursor (issue 12)
    (13, "0013_cluster"),  # several daemons: their rows and epochs, each attempt's daemon (issue 13)
    (14, "0014_webhook_lease"),  # the daemon delivering a campaign's webhook, and until when (issue 13)
    (15, "0015_node_fence"),  # the PBX fence key of each daemon (issue 13 item 4)
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


def create_engine(url: str) -> AsyncEngine:
    """Build the async engine for ``url`` (sqlite+aiosqlite or postgresql+asyncpg)."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"setting database_url: not a database URL ({exc})", key="database_url") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.drivername != "sqlite+aiosqlite":
            parsed = parsed.set(drivername="sqlite+aiosqlite")
        engine = create_async_engine(parsed, connect_args={"timeout": 30})
        _sqlite_pragmas(engine)
        return engine
    if backend == "postgresql":
        if parsed.drivername != "postgresql+asyncpg":
            parsed = parsed.set(drivername="postgresql+asyncpg")
        return create_async_engine(parsed, pool_size=10, max_overflow=10, pool_pre_ping=True)
    raise ConfigError(
        f"setting database_url: unsupported database {backend!r} (use sqlite or postgresql)",
        key="database_url",
    )


# Every SQLite connection dialerd opens runs these: the engine's pool (below) and the sqlite3 driver's
# connection of store/direct.py. WAL: readers never block the writer. synchronous=FULL: a committed
# transaction (e.g. the attempt row written before an originate leaves) survives power loss, not only
# a crash.
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=30000",
)


def _sqlite_pragmas(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        for pragma in SQLITE_PRAGMAS:
            cur.execute(pragma)
        cur.close()
        # SQLite's own lower() folds ASCII only; the campaign name search must match "été" with "ÉTÉ" on
        # SQLite as PostgreSQL's lower() does (Store.list_campaigns).
        dbapi_conn.create_function(UNICODE_LOWER, 1, _unicode_lower, deterministic=True)


UNICODE_LOWER = "dialerd_lower"


def _unicode_lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


async def migrate(engine: AsyncEngine) -> int:
    """Apply every migration newer than the database's version; return the resulting version."""
    dialect = engine.dialect.name
    # The same column types SQLModel declares for SchemaVersion on each backend.
    timestamp = "TIMESTAMP WITH TIME ZONE" if dialect == "postgresql" else "DATETIME"
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                f"version INTEGER NOT NULL PRIMARY KEY, applied_at {timestamp} NOT NULL)"
            )
        )
    async with engine.begin() as conn:
        if dialect == "postgresql":
            # Two daemons starting together must not both apply a migration.
            await conn.execute(text("SELECT pg_advisory_xact_lock(7263451)"))
        current = await _current_version(conn)
        if current > SCHEMA_VERSION:
            raise ConfigError(
                f"database schema version {current} is newer than this dialerd ({SCHEMA_VERSION}); upgrade dialerd",
                key="database_url",
            )
        for version, name in MIGRATIONS:
            if version <= current:
                continue
            sql = resources.files("dialerd.store.sql").joinpath(f"{name}.{dialect}.sql").read_text("utf-8")
            for statement in _statements(sql):
                await conn.execute(text(statement))
            await conn.execute(
                text("INSERT INTO schema_version (version, applied_at) VALUES (:v, :t)"),
                {"v": version, "t": utcnow() if dialect == "postgresql" else _sqlite_time()},
            )
            log.info("applied migration", extra={"action": "migrate", "version": version})
            current = version
    return current


async def _current_version(conn: AsyncConnection) -> int:
    row = (await conn.execute(text("SELECT MAX(version) FROM schema_version"))).first()
    return int(row[0]) if row and row[0] is not None else 0


def _sqlite_time() -> str:
    # How SQLAlchemy's DateTime stores UTC on SQLite (UTCDateTime strips the zone): one format throughout.
    return utcnow().replace(tzinfo=None).isoformat(sep=" ")


def _statements(sql: str) -> list[str]:
    lines = [ln for ln in sql.splitlines() if not ln.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
