"""Running dialerd against the real local Asterisk, and watching Asterisk's own view of the calls."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from dialerd.settings import load_settings
from tests.conftest import Api, make_key, start_daemon
from tests.pbx_env import local_pbx_env

_APP_SEQ = itertools.count()


def pbx_settings_env(driver: str, db_url: str) -> dict[str, str]:
    env = {k: v for k, v in local_pbx_env().items() if k.startswith("DIALERD_") and not k.startswith("DIALERD_PBX_")}
    env.update({
        "DIALERD_PBX_ENDPOINT": local_pbx_env()["DIALERD_PBX_ENDPOINT"],
        "DIALERD_PBX_DRIVER": driver,
        "DIALERD_DATABASE_URL": db_url,
        "DIALERD_SERVER_PORT": "0",
        "DIALERD_LOG_LEVEL": "warning",
        "DIALERD_SSE_SNAPSHOT_INTERVAL": "2",
    })
    return env


@contextlib.asynccontextmanager
async def live_api(
    tmp_path: Path,
    driver: str = "ari",
    db_url: str | None = None,
    tenants: dict[str, tuple[int, int]] | None = None,
    **overrides: Any,
) -> AsyncIterator[Api]:
    """The daemon on a real port, dialling through the local Asterisk with ``driver``.

    ``tenants`` maps tenant name -> (concurrent_max, calls_per_minute).
    """
    url = db_url or f"sqlite+aiosqlite:///{tmp_path / 'live.db'}"
    # An ARI app of its own: Asterisk gives each app name one websocket, so sharing one with another
    # daemon on the same PBX (another test session, a developer's dialerd) would steal its events.
    overrides.setdefault("ari_app", f"dialerd-test-{os.getpid()}-{next(_APP_SEQ)}")
    settings = load_settings(None, env=pbx_settings_env(driver, url), overrides=overrides)
    daemon = await start_daemon(settings, pbx=None)
    try:
        await asyncio.wait_for(daemon.dispatcher.pbx_up.wait(), 20)
        keys = {}
        for name, (cmax, cpm) in (tenants or {"acme": (10, 600)}).items():
            keys[name] = await make_key(daemon, name, concurrent_max=cmax, calls_per_minute=cpm)
        async with aiohttp.ClientSession() as session:
            yield Api(f"http://127.0.0.1:{daemon.port}", session, keys, daemon)
    finally:
        await daemon.stop()


async def wait_status(api: Api, cid: str, *statuses: str, timeout: float = 120.0, tenant: str = "acme") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        status, body = await api.call("GET", f"/api/v1/campaigns/{cid}", tenant=tenant)
        assert status == 200, body
        if body["status"] in statuses:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"campaign {cid} still {body['status']} after {timeout}s: {body['contacts']}")
        await asyncio.sleep(0.25)


async def all_contacts(api: Api, cid: str, tenant: str = "acme") -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        status, body = await api.call("GET", f"/api/v1/campaigns/{cid}/contacts?limit=1000&offset={len(out)}",
                                      tenant=tenant)
        assert status == 200, body
        out.extend(body["contacts"])
        if body["next_offset"] is None:
            return out


@dataclass
class SseEvent:
    event: str | None
    id: str | None
    data: dict[str, Any] | None
    comment: str | None = None


async def read_sse(
    api: Api, cid: str, *, last_event_id: str | None = "0", tenant: str = "acme", until_end: bool = True,
    max_seconds: float = 300.0, stop_after: int | None = None,
) -> list[SseEvent]:
    """Read the campaign's SSE stream into a list of events (and heartbeat comments)."""
    headers = api.auth(tenant)
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    events: list[SseEvent] = []
    timeout = aiohttp.ClientTimeout(total=max_seconds)
    async with api.session.get(f"{api.base}/api/v1/campaigns/{cid}/events", headers=headers,
                               timeout=timeout) as resp:
        assert resp.status == 200
        cur: dict[str, Any] = {}
        async for raw in resp.content:
            line = raw.decode("utf-8").rstrip("\n")
            if line.startswith(":"):
                events.append(SseEvent(None, None, None, comment=line[1:].strip()))
            elif line == "":
                if "data" in cur:
                    events.append(SseEvent(cur.get("event"), cur.get("id"), json.loads(cur["data"])))
                    if until_end and cur.get("event") == "end":
                        return events
                    if stop_after is not None and len([e for e in events if e.id]) >= stop_after:
                        return events
                cur = {}
            else:
                key, _, value = line.partition(":")
                cur[key] = value[1:] if value.startswith(" ") else value
    return events


@dataclass
class AsteriskWatch:
    """Polls Asterisk's own channel list; records, per campaign, each dialer-side channel's lifetime.

    Only channels carrying DIALERD_CAMPAIGN (the dialer legs, via ari.conf channelvars) count, so the
    carrier's far-end legs are not double counted.

    Concurrency counts a channel at a poll only if the next poll still lists it. Asterisk's channel list
    (a cache fed by another thread) can still hold a channel for a moment after its ChannelDestroyed has
    reached dialerd, which may already have dialled the next call: a one-poll ghost, measured here at
    up to cap + 1 under load. A real cap breach lasts a whole call (seconds, many polls) and is caught.
    ``max_instant`` keeps the raw per-poll peak for reporting.
    """

    url: str
    auth: dict[str, str]  # the Authorization header
    interval: float = 0.05
    seen: dict[str, dict[str, Any]] = field(default_factory=dict)  # channel id -> info
    max_concurrent: dict[str, int] = field(default_factory=dict)  # campaign -> peak (ghost-free)
    max_instant: dict[str, int] = field(default_factory=dict)  # campaign -> raw per-poll peak
    _prev: dict[str, set[str]] = field(default_factory=dict)  # campaign -> channel ids at the last poll
    live: dict[str, int] = field(default_factory=dict)  # campaign -> channels at the last poll
    max_by_tenant_group: dict[frozenset[str], int] = field(default_factory=dict)
    groups: list[frozenset[str]] = field(default_factory=list)
    polls: int = 0
    _task: asyncio.Task[None] | None = None

    @classmethod
    def from_env(cls) -> AsteriskWatch:
        env = local_pbx_env()
        token = base64.b64encode(f"{env['DIALERD_ARI_USER']}:{env['DIALERD_ARI_PASSWORD']}".encode()).decode()
        return cls(env["DIALERD_ARI_URL"], {"Authorization": f"Basic {token}"})

    async def _run(self) -> None:
        async with aiohttp.ClientSession(headers=self.auth) as session:
            while True:
                async with session.get(f"{self.url}/ari/channels") as resp:
                    # A failed poll means Asterisk itself is in trouble: the test must not go on blind.
                    assert resp.status == 200, f"GET /ari/channels answered {resp.status}"
                    channels = await resp.json()
                self.polls += 1
                ids: dict[str, set[str]] = {}
                for ch in channels:
                    campaign = (ch.get("channelvars") or {}).get("DIALERD_CAMPAIGN")
                    if not campaign or (ch.get("channelvars") or {}).get("DIALERD_ID") not in (None, "", ch["id"]):
                        continue  # not a dialer leg (through the PBX fence, its Local ;2 copies the variables)
                    ids.setdefault(campaign, set()).add(ch["id"])
                    info = self.seen.setdefault(ch["id"], {"campaign": campaign, "created": ch["creationtime"],
                                                           "number": (ch.get("dialplan") or {}).get("exten"),
                                                           "contact": ch["channelvars"].get("DIALERD_CONTACT")})
                    info["last_state"] = ch["state"]
                self.live = {c: len(v) for c, v in ids.items()}
                for campaign, n in self.live.items():
                    self.max_instant[campaign] = max(self.max_instant.get(campaign, 0), n)
                # The previous poll, counting only the channels that are still listed now.
                held = {c: len(v & ids.get(c, set())) for c, v in self._prev.items()}
                for campaign, n in held.items():
                    self.max_concurrent[campaign] = max(self.max_concurrent.get(campaign, 0), n)
                for group in self.groups:
                    total = sum(n for c, n in held.items() if c in group)
                    self.max_by_tenant_group[group] = max(self.max_by_tenant_group.get(group, 0), total)
                self._prev = ids
                await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="asterisk-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def start_times(self, campaign: str) -> list[float]:
        """Creation times (epoch seconds, Asterisk's clock) of the campaign's dialer channels."""
        return sorted(
            datetime.strptime(i["created"], "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
            for i in self.seen.values() if i["campaign"] == campaign
        )


def max_in_window(times: list[float], window: float = 60.0) -> int:
    """The most starts inside any closed window of ``window`` seconds."""
    best = 0
    j = 0
    for i, t in enumerate(times):
        while times[j] < t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


def numbers(suffixes: list[int] | range) -> str:
    """A CSV of distinct fictional +1 NXX 555-01XX numbers; the carrier's far end decides the outcome
    by the last two digits (see asterisk/README.md). Area codes vary so suffixes may repeat."""
    return "phone_number,ref\n" + "".join(f"+1{201 + i}55501{s:02d},r{i}\n" for i, s in enumerate(suffixes))
