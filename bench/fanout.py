"""Section 4: SSE fan-out. 0, 100 and 1,000 subscribers on a running campaign; dialerd on the FakePbx.

The FakePbx (``time_scale`` 0.001: a 2 s call lasts 2 ms) isolates dialerd from Asterisk. Each run is
a fresh campaign of the same size at the same target rate (calls_per_minute 1,200 = 20 calls/s). The
subscribers are raw asyncio protocols in this (bench) process, each one HTTP/1.1 GET of
``/campaigns/{id}/events``; they timestamp every chunk on arrival and parse afterwards, so reading costs
the client next to nothing during the run. Latency = arrival time - the event's ``at`` (stamped by
``Store.record_transition`` when the transition is written, before its commit), same clock.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp

from bench.context import Ctx
from bench.daemon import DaemonProcess
from bench.fixtures import Client, Results, add_campaign, add_tenant, open_store, short_numbers, wait_finished
from bench.report import fmt, profile_md
from bench.stats import db_time, pct, rate

S4 = "4. SSE fan-out"
RATE = 20
_DATA = re.compile(rb"event: ([a-z_]+)\r?\ndata: (\{.*\})")


class _Subscriber(asyncio.Protocol):
    def __init__(self, keep: bool) -> None:
        self.keep = keep
        self.chunks: list[tuple[float, bytes]] = []
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if not self.ready.done():
            self.ready.set_result(None)
        if self.keep:
            self.chunks.append((time.time(), data))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed before the first byte"))

    def latencies(self) -> list[float]:
        """Milliseconds from each event's ``at`` to the arrival of the chunk that completed it."""
        out: list[float] = []
        buf = b""
        for arrived, data in self.chunks:
            buf += data
            while (end := buf.find(b"\n\n")) >= 0:
                frame, buf = buf[:end], buf[end + 2:]
                m = _DATA.search(frame)
                if m is None or m.group(1) == b"end":
                    continue
                at = json.loads(m.group(2)).get("at")
                if isinstance(at, str):
                    out.append(1000 * (arrived - datetime.fromisoformat(at).timestamp()))
        return out


@dataclass
class FanoutRun:
    subscribers: int
    cid: str
    achieved: float = float("nan")
    calls: int = 0
    latencies: list[float] = field(default_factory=list)
    sampled: int = 0
    events: int = 0
    lost: int = 0
    connect_s: float = 0.0
    profile: dict[str, Any] | None = None


async def _subscribe(port: int, key: str, cid: str, count: int, keep_every: int) -> list[_Subscriber]:
    loop = asyncio.get_running_loop()
    request = (f"GET /api/v1/campaigns/{cid}/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               f"Authorization: Bearer {key}\r\nAccept: text/event-stream\r\n\r\n").encode()
    subs: list[_Subscriber] = []
    for start in range(0, count, 50):  # in batches: the listen backlog is finite
        batch = [_Subscriber(keep=(start + i) % keep_every == 0) for i in range(min(50, count - start))]
        for sub in batch:
            await loop.create_connection(lambda s=sub: s, "127.0.0.1", port)  # type: ignore[misc]
            assert sub.transport is not None
            sub.transport.write(request)
        async with asyncio.timeout(60):
            await asyncio.gather(*(s.ready for s in batch))
        subs.extend(batch)
    return subs


async def run(ctx: Ctx) -> None:
    calls = 60 if ctx.quick else RATE * 6
    counts = [0, 100, 1000]
    db = ctx.workdir / "fanout.db"
    async with open_store(db) as store:
        tid, key = await add_tenant(store, "fanout", concurrent_max=200, calls_per_minute=RATE * 60)
        runs = [FanoutRun(n, await add_campaign(store, tid, short_numbers(calls), name=f"fanout {n}",
                                                max_concurrent_calls=100)) for n in counts]
    daemon = DaemonProcess(ctx.fake_env(db), ctx.workdir, fake_scale=0.001)
    results = Results(db)
    try:
        await daemon.start()
        async with aiohttp.ClientSession() as session:
            client = Client(daemon.base, key, session)
            for r in runs:
                keep_every = 1 if r.subscribers <= 100 else 4
                t0 = time.monotonic()
                subs = await _subscribe(daemon.port, key, r.cid, r.subscribers, keep_every)
                r.connect_s = time.monotonic() - t0
                await asyncio.sleep(0.5)
                for s in subs:
                    s.chunks.clear()  # the opening frames and snapshot are not part of the measurement
                await daemon.profile()
                await client.action(r.cid, "start")
                await wait_finished(results, r.cid, calls / RATE * 1.5 + 5)
                await asyncio.sleep(0.5)  # the last events' delivery
                r.profile = await daemon.profile()
                starts = [db_time(a["created_at"]) for a in results.attempts(r.cid)]
                r.calls = len(starts)
                r.achieved = rate([s for s in starts if s is not None])
                r.events = int(results.conn.execute(
                    "SELECT COUNT(*) FROM event WHERE campaign_id = ? AND kind IS NOT NULL", (r.cid,)
                ).fetchone()[0])
                kept = [s for s in subs if s.keep]
                r.sampled = len(kept)
                r.lost = sum(s.lost for s in subs)
                for s in kept:
                    r.latencies.extend(s.latencies())
                    s.chunks.clear()
                for s in subs:
                    if s.transport is not None:
                        s.transport.close()
                await asyncio.sleep(1.0)  # let the daemon notice the closed streams before the next run
    finally:
        await daemon.stop()
        results.close()
    _report(ctx, runs, calls)


def _report(ctx: Ctx, runs: list[FanoutRun], calls: int) -> None:
    rep = ctx.report
    base = runs[0].achieved
    goals = {100: 20.0, 1000: 100.0}
    lines = ["| subscribers | connect s | achieved calls/s | vs 0 subscribers | events | deliveries measured "
             "(sampled subscribers) | latency p50 / p99 / max ms | streams dropped |", "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        ratio = r.achieved / base if base == base and base else float("nan")
        p50, p99 = pct(r.latencies, 50), pct(r.latencies, 99)
        lines.append(f"| {r.subscribers} | {fmt(r.connect_s, 1)} | {fmt(r.achieved, 1)} | {fmt(ratio, 3)} | "
                     f"{r.events} | {len(r.latencies)} of {r.events * r.sampled} ({r.sampled}) | "
                     f"{fmt(p50, 1)} / {fmt(p99, 1)} / {fmt(max(r.latencies, default=float('nan')), 1)} | {r.lost} |")
        if r.subscribers:
            goal = goals[r.subscribers]
            rep.add(S4, f"delivery latency p50/p99, {r.subscribers} subscribers",
                    f"{fmt(p50, 1)} / {fmt(p99, 1)} ms", f"p99 < {goal:.0f} ms",
                    p99 < goal and len(r.latencies) >= r.events * r.sampled)
            rep.add(S4, f"dispatcher calls/s with {r.subscribers} subscribers / without",
                    f"{fmt(ratio, 3)} ({fmt(r.achieved, 1)} vs {fmt(base, 1)})", ">= 0.95", ratio >= 0.95)
    rep.note(S4, "\n".join(lines))
    rep.note(S4, (
        f"Each run: a fresh campaign of {calls} contacts at calls_per_minute {RATE * 60} ({RATE} calls/s), "
        "FakePbx with time_scale 0.001 (every call answered, ~2 ms long: 3 events per call), daemon as a "
        "subprocess (JSON logs at info, as in production). Achieved calls/s from the attempt rows' created_at. "
        "With 1,000 subscribers every 4th one keeps what it receives (250 measured); all of them read."))
    worst = runs[-1]
    ctx.profiles[f"fanout {worst.subscribers}"] = worst.profile
    rep.note(S4, f"Sampling profile of the daemon during the {worst.subscribers}-subscriber run:\n\n"
                 + profile_md(worst.profile))
