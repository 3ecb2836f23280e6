"""Shared fixtures: databases (SQLite and PostgreSQL), a running API, API keys."""

from __future__ import annotations

import os
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from dialerd.settings import Settings, load_settings
from dialerd.store.db import create_engine, migrate
from dialerd.store.repo import Store

PG_ADMIN_URL = os.environ.get("DIALERD_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")


async def _pg_create() -> str:
    name = "dialerd_test_" + secrets.token_hex(6)
    admin = create_async_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    await admin.dispose()
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


async def _pg_drop(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    admin = create_async_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    await admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty database URL on each backend."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'dialerd.db'}"
        return
    url = await _pg_create()
    try:
        yield url
    finally:
        await _pg_drop(url)


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database URL (the tests of several daemons on one database)."""
    url = await _pg_create()
    try:
        yield url
    finally:
        await _pg_drop(url)


@pytest.fixture
async def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'dialerd.db'}"


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    engine = create_engine(db_url)
    await migrate(engine)
    s = Store(engine)
    try:
        yield s
    finally:
        await s.close()


def test_settings(db_url: str, **overrides: Any) -> Settings:
    env = {"DIALERD_DATABASE_URL": db_url, "DIALERD_SERVER_PORT": "0", "DIALERD_LOG_LEVEL": "warning"}
    return load_settings(None, env=env, overrides=overrides)


test_settings.__test__ = False  # type: ignore[attr-defined]


@dataclass
class Api:
    """A client for the running app: base URL, a session, and a key per tenant."""

    base: str
    session: aiohttp.ClientSession
    keys: dict[str, str]
    daemon: Any = None

    def auth(self, tenant: str = "acme") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[tenant]}"}

    async def call(
        self, method: str, path: str, tenant: str | None = "acme", **kw: Any
    ) -> tuple[int, Any]:
        headers = dict(kw.pop("headers", {}))
        if tenant is not None:
            headers.update(self.auth(tenant))
        async with self.session.request(method, self.base + path, headers=headers, **kw) as resp:
            body: Any = None
            if resp.status != 204:
                raw = await resp.read()
                if resp.content_type == "application/json":
                    import json

                    body = json.loads(raw)
                else:
                    body = raw
            return resp.status, body

    async def create(
        self, csv: bytes | str, tenant: str = "acme", filename: str = "contacts.csv", **fields: Any
    ) -> tuple[int, Any]:
        form = aiohttp.FormData()
        fields.setdefault("name", "test campaign")
        for k, v in fields.items():
            form.add_field(k, str(v))
        data = csv.encode("utf-8") if isinstance(csv, str) else csv
        form.add_field("contacts", data, filename=filename, content_type="text/csv")
        return await self.call("POST", "/api/v1/campaigns", tenant=tenant, data=form)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def tmp_cwd(tmp_path: Path) -> Iterator[Path]:
    old = Path.cwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(old)


class OfflinePbx:
    """A PBX that never comes up: campaigns can run, but nothing is ever originated.

    For control-plane tests whose contacts must stay as they are while a campaign is running.
    """

    name = "offline"
    connected = False
    held_reason = "pbx_down"
    last_error = None
    takeovers = 0

    def __init__(self) -> None:
        self.originated: list[Any] = []
        self.request_counts: Counter[str] = Counter()

    async def start(self, sink: Any) -> None:
        sink.connection_changed(False)

    async def close(self) -> None:
        return None

    async def originate(self, request: Any) -> str:
        self.originated.append(request)
        raise AssertionError("the offline PBX must never be asked to originate")

    async def lookup(self, channel_id: str) -> Any:
        raise AssertionError("the offline PBX must never be asked to look up a channel")

    async def count_channels(self) -> int:
        return 0

    async def wait_connected(self) -> None:
        raise AssertionError("the offline PBX never connects")

    async def check_app_free(self) -> str | None:
        return None

    async def forget(self, channel_id: str) -> None:
        raise AssertionError("the offline PBX has no call records to forget")


async def start_daemon(settings: Settings, pbx: Any) -> Any:
    from dialerd.daemon import Daemon

    daemon = await Daemon.build(settings, pbx=pbx)
    await daemon.start()
    return daemon


async def make_key(daemon: Any, tenant: str, concurrent_max: int = 10, calls_per_minute: int = 600) -> str:
    from dialerd.services.auth import create_key

    _tid, key = await create_key(
        daemon.store, tenant, concurrent_max=concurrent_max, calls_per_minute=calls_per_minute, defaults=(10, 60)
    )
    return key


@pytest.fixture
async def offline_api(db_url: str) -> AsyncIterator[Api]:
    """The whole daemon on a real port (SQLite and PostgreSQL), with a PBX that is down."""
    daemon = await start_daemon(test_settings(db_url, shutdown_grace_period=0.0), OfflinePbx())
    keys = {t: await make_key(daemon, t) for t in ("acme", "globex")}
    async with aiohttp.ClientSession() as session:
        try:
            yield Api(f"http://127.0.0.1:{daemon.port}", session, keys, daemon)
        finally:
            await daemon.stop()
