"""Tenants, keys and campaigns written straight through dialerd's Store (no CSV upload: faster, and
``max_concurrent_calls`` may exceed the API's 100), plus read-only access to the results."""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from dialerd.domain.campaign import CampaignStatus
from dialerd.services.auth import create_key
from dialerd.services.importer import ImportReport
from dialerd.store.db import create_engine, migrate
from dialerd.store.repo import Store
from dialerd.store.tables import Campaign
from dialerd.timestamps import utcnow


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


@asynccontextmanager
async def open_store(path: Path) -> AsyncIterator[Store]:
    engine = create_engine(sqlite_url(path))
    await migrate(engine)
    store = Store(engine)
    try:
        yield store
    finally:
        await store.close()


async def add_tenant(store: Store, name: str, concurrent_max: int, calls_per_minute: int) -> tuple[str, str]:
    """(tenant id, API key)."""
    return await create_key(store, name, concurrent_max=concurrent_max, calls_per_minute=calls_per_minute,
                            defaults=(10, 60))


def short_numbers(count: int, first: int = 0) -> list[str]:
    """Distinct fictional numbers the local carrier answers and hangs up after ~2 s (suffix 00-29)."""
    out = []
    for i in range(first, first + count):
        out.append(f"+1{200 + (i // 30) % 800}55501{i % 30:02d}")
    return out


def many_numbers(count: int) -> list[str]:
    """Up to 8M distinct +1 NXX 555 XXXX numbers (for the scale runs)."""
    return [f"+1{200 + (i // 10000) % 800}555{i % 10000:04d}" for i in range(count)]


async def add_campaign(
    store: Store, tenant_id: str, numbers: Sequence[str], *, name: str, max_concurrent_calls: int,
    batch: int = 10_000, destination: str = "dialerd-demo,s,1",
) -> str:
    """Insert a draft campaign with these contacts, the way CampaignService.create does (importing first)."""
    now = utcnow()
    cid = "cmp_" + secrets.token_hex(10)
    await store.insert_campaign(Campaign(
        id=cid, tenant_id=tenant_id, name=name, status=CampaignStatus.IMPORTING.value, caller_id="", destination=destination,
        default_region="US", max_concurrent_calls=max_concurrent_calls, retries_per_contact=0,
        retry_delay_seconds=60, ring_timeout_seconds=30, import_report={}, created_by="bench",
        scheduled_at=None, created_at=now, updated_at=now,
    ))
    for start in range(0, len(numbers), batch):
        chunk = numbers[start:start + batch]
        await store.insert_contacts(cid, [
            {"line": start + i + 2, "phone_e164": n, "raw_number": n, "fields": {"ref": f"r{start + i}"}}
            for i, n in enumerate(chunk)
        ])
    n = len(numbers)
    report = ImportReport(rows_total=n, rows_valid=n, stored=n, phone_column="phone").as_json()
    await store.finish_import(cid, CampaignStatus.DRAFT, report)
    return cid


async def _poll(done: Callable[[], bool], limit_s: float) -> bool:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if done():
            return True
        await asyncio.sleep(0.1)
    return False


async def wait_finished(results: Results, cid: str, limit_s: float) -> bool:
    """Poll until no contact of ``cid`` is pending or in a call; False if ``limit_s`` passed first."""
    return await _poll(lambda: results.unfinished(cid) == 0, limit_s)


async def wait_calls_ended(results: Results, cid: str, limit_s: float) -> bool:
    """Poll until no attempt of ``cid`` is dialling, ringing or talking."""
    return await _poll(lambda: results.calls_in_progress(cid) == 0, limit_s)


class Results:
    """Read-only SQLite access to what the daemon wrote (does not touch the daemon's CPU)."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        self.conn.row_factory = sqlite3.Row

    def close(self) -> None:
        self.conn.close()

    def unfinished(self, cid: str) -> int:
        return int(self.conn.execute(
            "SELECT COUNT(*) FROM contact WHERE campaign_id = ? AND status IN ('pending', 'originated', 'connected')",
            (cid,),
        ).fetchone()[0])

    def status_counts(self, cid: str) -> dict[str, int]:
        rows = self.conn.execute("SELECT status, COUNT(*) FROM contact WHERE campaign_id = ? GROUP BY status", (cid,))
        return {r[0]: int(r[1]) for r in rows}

    def attempts(self, cid: str) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT channel_id, state, created_at, originated_at, answered_at, ended_at, reason FROM attempt"
            " WHERE campaign_id = ? ORDER BY id", (cid,),
        )
        return [dict(r) for r in rows]

    def calls_in_progress(self, cid: str) -> int:
        return int(self.conn.execute(
            "SELECT COUNT(*) FROM attempt WHERE campaign_id = ? AND state IN ('dialing', 'originated', 'answered')",
            (cid,),
        ).fetchone()[0])

    def attempt_count(self, cid: str) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM attempt WHERE campaign_id = ?", (cid,)).fetchone()[0])

    def campaign_status(self, cid: str) -> str:
        return str(self.conn.execute("SELECT status FROM campaign WHERE id = ?", (cid,)).fetchone()[0])


class Client:
    """The daemon's REST API with one tenant's key."""

    def __init__(self, base: str, key: str, session: aiohttp.ClientSession) -> None:
        self.base = base
        self.headers = {"Authorization": f"Bearer {key}"}
        self.session = session

    async def call(self, method: str, path: str) -> tuple[int, Any]:
        async with self.session.request(method, self.base + path, headers=self.headers) as resp:
            body = await resp.json() if resp.content_type == "application/json" else await resp.read()
            return resp.status, body

    async def action(self, cid: str, name: str, *, unless_over: bool = False) -> None:
        """POST the action; ``unless_over``: a campaign already completed (409) is fine (a bounded run's pause)."""
        status, body = await self.call("POST", f"/api/v1/campaigns/{cid}/{name}")
        if unless_over and status == 409 and isinstance(body, dict) and body.get("details", {}).get("status") == "completed":
            return
        if status != 200:
            raise RuntimeError(f"{name} {cid}: HTTP {status} {body}")
