"""The attempt row is durable before the originate request leaves (STYLE.md principle 7).

The ``after_attempt`` failpoint SIGKILLs dialerd right after the attempt row is committed and before
the originate request is sent. What must hold afterwards: the row is on disk (SQLite) or committed
(PostgreSQL) and visible to another connection; Asterisk never saw a channel for it; and a restarted
dialerd dials the contact exactly once (Asterisk's CDR and channel list are the witnesses).
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from dialerd.daemon import Daemon
from tests.conftest import _pg_create, _pg_drop, test_settings
from tests.daemon_proc import DaemonProc, cdr_rows, create_key, daemon_env, multipart, placed
from tests.live import AsteriskWatch, numbers

pytestmark = pytest.mark.pbx

ATTEMPT_SQL = ("SELECT a.channel_id, a.state, a.number, c.status, c.attempts FROM attempt a "
               "JOIN contact c ON c.id = a.contact_id WHERE a.campaign_id = :cid ORDER BY a.id")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'dialerd.db'}"
        return
    url = await _pg_create()
    try:
        yield url
    finally:
        await _pg_drop(url)


async def _attempts(url: str, cid: str) -> list[dict[str, Any]]:
    """The campaign's attempt rows, read through a connection of our own (not dialerd's)."""
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1]

        def read() -> list[dict[str, Any]]:
            with sqlite3.connect(path) as conn:
                conn.row_factory = sqlite3.Row
                return [dict(r) for r in conn.execute(ATTEMPT_SQL.replace(":cid", "?"), (cid,))]

        return await asyncio.to_thread(read)
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return [dict(r._mapping) for r in await conn.execute(text(ATTEMPT_SQL), {"cid": cid})]
    finally:
        await engine.dispose()


def _sqlite_file_is_wal(path: Path) -> bool:
    """The file is in WAL mode (a persistent setting) and the killed process left its -wal file."""
    assert Path(f"{path}-wal").exists(), "no write-ahead log next to the database"
    with sqlite3.connect(path) as conn:
        return bool(conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal")


async def _ari_get(watch: AsteriskWatch, path: str, **params: str) -> tuple[int, Any]:
    async with (aiohttp.ClientSession(headers=watch.auth) as session,
                session.get(f"{watch.url}/ari{path}", params=params) as resp):
        return resp.status, await resp.json(content_type=None)


@pytest.mark.timeout(90)
async def test_attempt_is_committed_before_the_originate_and_dialled_once(tmp_path: Path, database: str) -> None:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())  # the CDR is in UTC
    env = daemon_env(database, app=f"dialerd-durable-{time.monotonic_ns()}")
    key = await asyncio.to_thread(create_key, env, "acme")
    daemon = DaemonProc(env, tmp_path / "dialerd.log")
    watch = AsteriskWatch.from_env()
    watch.start()
    try:
        await asyncio.to_thread(daemon.start, {"DIALERD_FAILPOINTS": "after_attempt:1"})
        body, ctype = multipart({"name": "durable"}, numbers([5, 6]))  # answered, ~2 s each
        status, campaign = await asyncio.to_thread(
            daemon.request, "POST", "/api/v1/campaigns", key, body, {"Content-Type": ctype})
        assert status == 201, campaign
        cid = campaign["id"]
        assert (await asyncio.to_thread(daemon.request, "POST", f"/api/v1/campaigns/{cid}/start", key))[0] == 200
        assert daemon.proc is not None
        code = await asyncio.to_thread(daemon.proc.wait, 20)
        assert code == -signal.SIGKILL, f"the failpoint did not fire (exit {code}); see {daemon.log_path}"

        # Right after the kill, from a connection of our own: the attempt is committed.
        rows = await _attempts(database, cid)
        assert len(rows) == 1, rows
        (killed,) = rows
        assert killed["state"] == "dialing" and killed["number"] == 1, killed
        assert killed["status"] == "pending" and killed["attempts"] == 1, killed
        if database.startswith("sqlite"):
            assert await asyncio.to_thread(_sqlite_file_is_wal, Path(database.split(":///", 1)[1]))
        # ...and the originate never left: Asterisk has no channel, no CDR and no hangup record for it.
        await asyncio.sleep(1.5)
        assert [ch for ch, info in watch.seen.items() if info["campaign"] == cid] == []
        assert (await _ari_get(watch, f"/channels/{killed['channel_id']}"))[0] == 404
        status, record = await _ari_get(watch, "/asterisk/variable", variable=f"DIALERD_RES_{killed['channel_id']}")
        assert status == 200 and record["value"] == "", record
        assert [r for r in cdr_rows(since) if r[16] == killed["channel_id"]] == []

        # The restart gives the unsent attempt back and dials the contact once.
        await asyncio.to_thread(daemon.start)
        deadline = time.monotonic() + 40
        while True:
            status, campaign = await asyncio.to_thread(daemon.request, "GET", f"/api/v1/campaigns/{cid}", key)
            if campaign["status"] == "completed":
                break
            assert time.monotonic() < deadline, campaign
            await asyncio.sleep(0.25)
        assert await asyncio.to_thread(daemon.terminate, 30) == 0
    finally:
        daemon.kill()
        await watch.stop()
    assert campaign["contacts"]["completed"] == 2, campaign
    rows = await _attempts(database, cid)
    assert [(r["channel_id"], r["state"]) for r in rows if r["state"] == "not_dialled"] == [
        (killed["channel_id"], "not_dialled")]
    dialled = sorted(r["channel_id"] for r in rows if r["state"] != "not_dialled")
    assert len(dialled) == 2 and all(r["attempts"] == 1 and r["status"] == "completed" for r in rows), rows
    await asyncio.sleep(1.0)  # CDR rows are written as channels are destroyed
    prefix = f"dlr-{cid[4:16]}-"
    assert sorted(placed(cdr_rows(since), prefix)) == dialled
    assert sorted(ch for ch, info in watch.seen.items() if info["campaign"] == cid) == dialled


@pytest.mark.timeout(30)
async def test_sqlite_connections_run_wal_with_synchronous_full(tmp_path: Path) -> None:
    """Every connection the daemon's store hands out (read and write, several pooled) has the pragmas."""
    daemon = await Daemon.build(test_settings(f"sqlite+aiosqlite:///{tmp_path / 'd.db'}", pbx_driver="fake"))
    try:
        async with daemon.store.write() as w, daemon.store.read() as r1, daemon.store.read() as r2:
            for conn in (w, r1, r2):
                mode = (await conn.execute(text("PRAGMA journal_mode"))).scalar_one()
                sync = (await conn.execute(text("PRAGMA synchronous"))).scalar_one()
                assert (mode, sync) == ("wal", 2), (mode, sync)
    finally:
        await daemon.store.close()
