"""Section 5: the REST API under 20 concurrent clients while a campaign is dialling (FakePbx daemon).

Three endpoints, each hammered for a fixed time by 20 workers on a keep-alive pool: list campaigns,
get one campaign, one page (100) of its contacts. The running campaign (10,000 contacts, 20 calls/s)
keeps the dispatcher writing meanwhile; its achieved calls/s during the load is reported too.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import aiohttp

from bench.context import Ctx
from bench.daemon import DaemonProcess
from bench.fixtures import Client, Results, add_campaign, add_tenant, many_numbers, open_store
from bench.report import fmt
from bench.stats import db_time, pct

S5 = "5. API"
WORKERS = 20
RATE = 20


@dataclass
class Load:
    name: str
    path: str
    seconds: float = 0.0
    ok: int = 0
    errors: int = 0
    ms: list[float] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return self.ok / self.seconds if self.seconds else float("nan")


async def _hammer(session: aiohttp.ClientSession, base: str, key: str, load: Load, duration: float) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    stop = time.monotonic() + duration

    async def worker() -> None:
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            try:
                async with session.get(base + load.path, headers=headers) as resp:
                    await resp.read()
                    good = resp.status == 200
            except aiohttp.ClientError:
                good = False
            load.ms.append(1000 * (time.perf_counter() - t0))
            if good:
                load.ok += 1
            else:
                load.errors += 1

    t0 = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(WORKERS)))
    load.seconds = time.monotonic() - t0


async def run(ctx: Ctx) -> None:
    rep = ctx.report
    duration = 2.0 if ctx.quick else 4.0
    db = ctx.workdir / "api.db"
    async with open_store(db) as store:
        tid, key = await add_tenant(store, "api", concurrent_max=200, calls_per_minute=RATE * 60)
        numbers = many_numbers(14_000)
        cid = await add_campaign(store, tid, numbers[:10_000], name="running", max_concurrent_calls=50)
        for i in range(4):
            await add_campaign(store, tid, numbers[10_000 + i * 1000:11_000 + i * 1000], name=f"draft {i}",
                               max_concurrent_calls=5)
    loads = [Load("list campaigns", "/api/v1/campaigns"), Load("get campaign", f"/api/v1/campaigns/{cid}"),
             Load("contacts page (100)", f"/api/v1/campaigns/{cid}/contacts?limit=100&offset=5000")]
    daemon = DaemonProcess(ctx.fake_env(db), ctx.workdir, fake_scale=0.001)
    results = Results(db)
    try:
        await daemon.start()
        connector = aiohttp.TCPConnector(limit=WORKERS)
        async with aiohttp.ClientSession(connector=connector) as session:
            await Client(daemon.base, key, session).action(cid, "start")
            await asyncio.sleep(1.0)
            await daemon.profile()
            t0 = time.time()
            for load in loads:
                await _hammer(session, daemon.base, key, load, duration)
            t1 = time.time()
            profile = await daemon.profile()
            await Client(daemon.base, key, session).action(cid, "pause")
        starts = [db_time(a["created_at"]) for a in results.attempts(cid)]
        during = [s for s in starts if s is not None and t0 <= s <= t1]
    finally:
        await daemon.stop()
        results.close()
    dial_rate = len(during) / (t1 - t0)
    lines = ["| endpoint | requests/s | p50 ms | p99 ms | errors |", "|---|---|---|---|---|"]
    for load in loads:
        p99 = pct(load.ms, 99)
        rep.add(S5, f"{load.name}: requests/s, p99", f"{fmt(load.rps, 0)}/s, p99 {fmt(p99, 1)} ms"
                + (f", {load.errors} errors" if load.errors else ""))
        lines.append(f"| `GET {load.path.replace(cid, '{id}')}` | {fmt(load.rps, 0)} | {fmt(pct(load.ms, 50), 1)} | "
                     f"{fmt(p99, 1)} | {load.errors} |")
    rep.add(S5, "campaign calls/s during the API load / target", f"{fmt(dial_rate / RATE, 2)} "
            f"({fmt(dial_rate, 1)} of {RATE})", ">= 0.95 (as in 4)", dial_rate / RATE >= 0.95)
    rep.note(S5, "\n".join(lines))
    rep.note(S5, (
        f"{WORKERS} concurrent clients (aiohttp, keep-alive pool of {WORKERS}), {duration:.0f} s per endpoint, one "
        f"endpoint at a time, against the FakePbx daemon while a 10,000-contact campaign dials at {RATE} calls/s "
        "(4 more draft campaigns of 1,000 contacts make the list non-trivial). The clients run in the bench "
        "process on the same 2 cores, so requests/s is a lower bound of what the daemon could serve."))
    ctx.profiles["api"] = profile
    from bench.report import profile_md

    rep.note(S5, "Sampling profile of the daemon during the API load:\n\n" + profile_md(profile))
