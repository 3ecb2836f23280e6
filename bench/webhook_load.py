"""Webhooks under load: the dispatcher's rate with no webhook, with a fast receiver and with one that takes
2 s per answer (same run, same daemon, same rate), and how many events/s one campaign's webhook drains.

    .venv/bin/python -m bench.webhook_load [--rate 50] [--calls 500] [--drain 5000] [--limit-s 300]

The daemon is a subprocess on the in-package fake PBX (calls of ~0.2 s), SQLite; the receivers are aiohttp
servers in this process on loopback. Dial rate = (attempts - 1) / (last attempt - first attempt), from the
attempt rows. The slow receiver holds each campaign's head event 2 s (one request at a time per campaign,
in order): the point is that the dispatcher does not wait on it. The drain figure: a campaign with
``--drain`` pending contacts is stopped, which writes one ``cancelled`` event per contact at once; the fast
receiver's arrival rate for those is the webhook's throughput. Bounded by ``--limit-s`` for the whole run.

Measured 2026-12-03 on the 2-CPU dev machine while a full test suite ran beside it (defaults): no webhook
46.6 calls/s, fast receiver 48.0 (x1.030), 2 s receiver 47.4 (x1.017; 7 events delivered meanwhile);
drain 5,005 events at 1,987 events/s.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import aiohttp
from aiohttp import web
from sqlalchemy import update

from bench.daemon import DaemonProcess, free_port
from bench.fixtures import Client, Results, add_campaign, add_tenant, many_numbers, open_store, sqlite_url
from dialerd.store.repo import T_CAMPAIGN

SECRET = "bench-webhook-secret-0123456789"


class Receiver:
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.port = free_port()
        self.arrivals: list[float] = []
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        if self.delay:
            await asyncio.sleep(self.delay)
        self.arrivals.append(time.monotonic())
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def _until(done: Callable[[], bool], deadline: float) -> None:
    """Poll ``done`` until it holds or ``deadline`` (monotonic) has passed."""
    while time.monotonic() < deadline:
        if done():
            return
        await asyncio.sleep(0.05)


def _rate(times: list[datetime]) -> float:
    times = sorted(times)
    if len(times) < 2:
        return 0.0
    return (len(times) - 1) / max((times[-1] - times[0]).total_seconds(), 1e-9)


async def run(rate: int, calls: int, drain: int, limit_s: float, workdir: Path) -> dict[str, float]:
    deadline = time.monotonic() + limit_s
    db = workdir / "webhooks.db"
    fast, slow = Receiver(0.0), Receiver(2.0)
    modes = {"none": None, "fast": fast, "slow": slow}
    cids: dict[str, str] = {}
    async with open_store(db) as store:
        tid, key = await add_tenant(store, "hooks", concurrent_max=200, calls_per_minute=rate * 60)
        for i, mode in enumerate(modes):
            cids[mode] = await add_campaign(store, tid, many_numbers(calls * 3)[i * calls:(i + 1) * calls],
                                            name=f"webhook {mode}", max_concurrent_calls=100)
        cids["drain"] = await add_campaign(store, tid, many_numbers(calls * 3 + drain)[calls * 3:],
                                           name="webhook drain", max_concurrent_calls=1)
        async with store.write() as conn:
            for mode, receiver in [*modes.items(), ("drain", fast)]:
                if receiver is not None:
                    await conn.execute(update(T_CAMPAIGN).where(T_CAMPAIGN.c.id == cids[mode]).values(
                        webhook_url=receiver.url, webhook_secret=SECRET))
    env = {"DIALERD_DATABASE_URL": sqlite_url(db), "DIALERD_PBX_DRIVER": "fake", "DIALERD_LOG_LEVEL": "warning",
           "DIALERD_SHUTDOWN_GRACE_PERIOD": "1", "DIALERD_WEBHOOKS_ALLOW_PRIVATE": "true"}
    daemon = DaemonProcess(env, workdir, fake_scale=0.2, sample=False)
    await fast.start()
    await slow.start()
    await daemon.start()
    results = Results(db)
    figures: dict[str, float] = {}
    try:
        async with aiohttp.ClientSession() as session:
            client = Client(daemon.base, key, session)
            for mode in modes:
                await client.action(cids[mode], "start")
                await _until(lambda cid=cids[mode]: results.unfinished(cid) == 0, deadline)
                times = [datetime.fromisoformat(a["created_at"]) for a in results.attempts(cids[mode])]
                figures[f"rate_{mode}"] = _rate(times)
                figures[f"attempts_{mode}"] = len(times)
            figures["slow_received"] = len(slow.arrivals)
            before = len(fast.arrivals)
            await client.action(cids["drain"], "start")
            await client.action(cids["drain"], "stop")
            await _until(lambda: len(fast.arrivals) - before >= drain, deadline)
            got = fast.arrivals[before:]
            figures["drain_events"] = len(got)
            figures["drain_per_s"] = (len(got) - 1) / max(got[-1] - got[0], 1e-9) if len(got) > 1 else 0.0
    finally:
        results.close()
        await daemon.stop()
        await fast.stop()
        await slow.stop()
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.webhook_load", description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=50, help="the tenant's calls per second")
    parser.add_argument("--calls", type=int, default=500, help="calls per run")
    parser.add_argument("--drain", type=int, default=5000, help="events the drain run makes")
    parser.add_argument("--limit-s", type=float, default=300.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dialerd-bench-webhooks-") as tmp:
        f = asyncio.run(run(args.rate, args.calls, args.drain, args.limit_s, Path(tmp)))
    none = f["rate_none"] or 1e-9
    print(
        f"dispatch at a {args.rate}/s tenant rate, {args.calls} calls each (fake PBX, SQLite):\n"
        f"  no webhook           {f['rate_none']:6.1f} calls/s ({f['attempts_none']:.0f} attempts)\n"
        f"  fast receiver        {f['rate_fast']:6.1f} calls/s  x{f['rate_fast'] / none:.3f} of no webhook\n"
        f"  2 s receiver         {f['rate_slow']:6.1f} calls/s  x{f['rate_slow'] / none:.3f} of no webhook "
        f"({f['slow_received']:.0f} events delivered meanwhile, one at a time)\n"
        f"drain: {f['drain_events']:.0f} events to a fast loopback receiver at {f['drain_per_s']:,.0f} events/s",
        file=sys.stdout,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
