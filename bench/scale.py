"""Section 6: a campaign of 1M contacts: insert, daemon start, memory, campaign start, page latency.

Contacts go in through ``Store.insert_contacts`` in 50,000-row batches (the import path without the CSV
parsing, which section 3 measures). The daemon is a subprocess on the real PBX; once the campaign has
dialled for a few seconds it is paused (pause leaves contacts pending; stop would write one 'cancelled'
event per pending contact, a million of them).
"""

from __future__ import annotations

import asyncio
import time

import aiohttp

from bench.context import Ctx
from bench.daemon import DaemonProcess
from bench.fixtures import Client, Results, add_campaign, add_tenant, many_numbers, open_store
from bench.report import fmt
from bench.stats import db_time, pct

S6 = "6. scale"
PAGE = 100


async def _timed(client: Client, path: str, times: int) -> tuple[list[float], object]:
    out, body = [], None
    for _ in range(times):
        t0 = time.perf_counter()
        status, body = await client.call("GET", path)
        out.append(1000 * (time.perf_counter() - t0))
        if status != 200:
            raise RuntimeError(f"GET {path}: HTTP {status} {body}")
    return out, body


async def run(ctx: Ctx) -> None:
    rep = ctx.report
    size = 50_000 if ctx.quick else 1_000_000
    if not ctx.quick and ctx.left() < 60:
        size = 300_000
    db = ctx.workdir / "scale.db"
    t0 = time.perf_counter()
    async with open_store(db) as store:
        tid, key = await add_tenant(store, "scale", concurrent_max=10, calls_per_minute=120)
        cid = await add_campaign(store, tid, many_numbers(size), name="scale", max_concurrent_calls=5, batch=50_000)
    insert_s = time.perf_counter() - t0
    daemon = DaemonProcess(ctx.ari_env(f"dialerd-bench-scale-{id(ctx)}", db), ctx.workdir)
    results = Results(db)
    try:
        startup_s = await daemon.start()
        mem_start = daemon.mem()
        async with aiohttp.ClientSession() as session:
            client = Client(daemon.base, key, session)
            get_ms, _ = await _timed(client, f"/api/v1/campaigns/{cid}", 3)
            first_ms, body = await _timed(client, f"/api/v1/campaigns/{cid}/contacts?limit={PAGE}&offset=0", 5)
            last_offset = size - PAGE
            end_ms, _ = await _timed(client, f"/api/v1/campaigns/{cid}/contacts?limit={PAGE}&offset={last_offset}", 5)
            after_ms: list[float] | None = None
            if isinstance(body, dict) and "next_after_id" in body:  # keyset pagination, when the API has it
                last_id = int(results.conn.execute(
                    "SELECT id FROM contact WHERE campaign_id = ? ORDER BY id LIMIT 1 OFFSET ?", (cid, last_offset - 1),
                ).fetchone()[0])
                after_ms, _ = await _timed(client, f"/api/v1/campaigns/{cid}/contacts?limit={PAGE}&after_id={last_id}", 5)
            t_start = time.time()
            p0 = time.perf_counter()
            await client.action(cid, "start")
            start_ms = 1000 * (time.perf_counter() - p0)
            first_call: float | None = None
            deadline = time.monotonic() + 15
            while first_call is None and time.monotonic() < deadline:
                row = results.conn.execute("SELECT MIN(created_at) FROM attempt WHERE campaign_id = ?", (cid,)).fetchone()
                first_call = db_time(row[0]) if row[0] else None
                await asyncio.sleep(0.02)
            await asyncio.sleep(3.0)
            mem_running = daemon.mem()
            await client.action(cid, "pause")
        dialled = results.attempt_count(cid)
    finally:
        await daemon.stop()
        results.close()
    label = "1M" if size == 1_000_000 else f"{size // 1000}k"
    rep.add(S6, f"insert {label} contacts via Store.insert_contacts", f"{fmt(insert_s, 1)} s ({fmt(size / insert_s, 0)} rows/s)")
    rep.add(S6, "daemon start (spawn -> /health ok, PBX connected)", f"{fmt(startup_s, 2)} s")
    rep.add(S6, "daemon RSS after start / peak while dialling", f"{fmt(mem_start['VmRSS'] / 1024, 0)} / "
            f"{fmt(mem_running['VmHWM'] / 1024, 0)} MiB")
    first = 1000 * (first_call - t_start) if first_call else float("nan")
    rep.add(S6, "campaign start: POST /start reply; first origination", f"{fmt(start_ms, 0)} ms; {fmt(first, 0)} ms")
    rep.add(S6, "GET campaign (counts over all contacts) median", f"{fmt(pct(get_ms, 50), 0)} ms")
    rep.add(S6, "contacts page at offset 0, median / max", f"{fmt(pct(first_ms, 50), 0)} / {fmt(max(first_ms), 0)} ms")
    end_med = pct(end_ms, 50)
    rep.add(S6, f"contacts page at offset {last_offset:,}, median / max", f"{fmt(end_med, 0)} / {fmt(max(end_ms), 0)} ms",
            "about offset 0", end_med <= 3 * pct(first_ms, 50) + 20)
    if after_ms is not None:
        after_med = pct(after_ms, 50)
        rep.add(S6, "contacts page at the end via after_id, median", f"{fmt(after_med, 0)} ms", "about offset 0",
                after_med <= 3 * pct(first_ms, 50) + 20)
    rep.note(S6, (
        f"{size:,} contacts in one campaign, inserted in 50,000-row batches through the Store in {fmt(insert_s, 1)} s. "
        f"The daemon (subprocess, real PBX) started in {fmt(startup_s, 2)} s and held {fmt(mem_start['VmRSS'] / 1024, 0)} MiB; "
        f"after POST /start ({fmt(start_ms, 0)} ms) the first attempt row was written {fmt(first, 0)} ms after the "
        f"request left; it dialled {dialled} calls in ~3 s at calls_per_minute 120, then was paused; peak RSS "
        f"{fmt(mem_running['VmHWM'] / 1024, 0)} MiB. Page latencies are client-side, 5 requests each: offset 0 "
        f"{', '.join(fmt(x, 0) for x in first_ms)} ms; offset {last_offset:,} {', '.join(fmt(x, 0) for x in end_ms)} ms"
        + (f"; after_id {', '.join(fmt(x, 0) for x in after_ms)} ms" if after_ms else "")
        + f". GET campaign: {', '.join(fmt(x, 0) for x in get_ms)} ms."))
