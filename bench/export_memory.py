"""The results export's memory on a big campaign: the daemon's RSS during the CSV download vs before it.

    .venv/bin/python -m bench.export_memory [--contacts 1000000] [--limit-s 900]

The contacts go straight in through the store (``bench.fixtures.add_campaign``, one custom field each)
into an SQLite file; the daemon is a subprocess on the in-package fake PBX (nothing is dialled), so its
memory is its own (/proc/<pid>). Its VmRSS is sampled every 20 ms while ``GET .../contacts?format=csv``
streams every contact to this script, which counts the bytes and lines and throws them away. Printed:
rows, bytes, seconds, rows/s, RSS before, the peak during (sampled, and VmHWM if it rose), the delta in
MB and the ratio peak/before. Flat memory means the delta stays a few MB whatever the campaign's size.
Bounded: the insert, the start and the download each stop the run once ``--limit-s`` has passed.

Measured 2026-12-02 on the 2-CPU dev machine (SQLite): 1,000,000 contacts, 60.9 MB of CSV in 22.2 s
(45,098 rows/s); daemon RSS 91.3 MB before, peak 91.4 MB during (+0.1 MB, x1.00).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from sqlalchemy import update

from bench.daemon import DaemonProcess
from bench.fixtures import add_campaign, add_tenant, many_numbers, open_store, sqlite_url
from bench.stats import mem_kb
from dialerd.store.repo import T_CAMPAIGN

SAMPLE_S = 0.02


async def _sample(pid: int, peak: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], mem_kb(pid).get("VmRSS", 0))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SAMPLE_S)


async def run(contacts: int, limit_s: float, workdir: Path) -> dict[str, float]:
    deadline = time.monotonic() + limit_s
    db = workdir / "export.db"
    t0 = time.perf_counter()
    async with open_store(db) as store:
        tenant_id, key = await add_tenant(store, "export", concurrent_max=10, calls_per_minute=60)
        cid = await add_campaign(store, tenant_id, many_numbers(contacts), name="export", max_concurrent_calls=5,
                                 batch=50_000)
        async with store.write() as conn:  # the fixture's report names no custom field: the export's column
            await conn.execute(update(T_CAMPAIGN).where(T_CAMPAIGN.c.id == cid).values(
                import_report={"custom_fields": ["ref"], "contacts": contacts}))
    insert_s = time.perf_counter() - t0
    if time.monotonic() > deadline:
        raise SystemExit(f"the insert alone took {insert_s:.0f} s, past --limit-s")
    env = {"DIALERD_DATABASE_URL": sqlite_url(db), "DIALERD_PBX_DRIVER": "fake", "DIALERD_LOG_LEVEL": "warning",
           "DIALERD_SHUTDOWN_GRACE_PERIOD": "1"}
    daemon = DaemonProcess(env, workdir, fake_scale=0.001, sample=False)
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            url = f"{daemon.base}/api/v1/campaigns/{cid}/contacts?format=csv"
            headers = {"Authorization": f"Bearer {key}"}
            # A warm-up page first: the before figure includes what any request's first use allocates.
            async with session.get(f"{daemon.base}/api/v1/campaigns/{cid}/contacts?limit=1000", headers=headers) as r:
                await r.read()
            before = mem_kb(daemon.pid)
            peak, stop = [before["VmRSS"]], asyncio.Event()
            sampler = asyncio.create_task(_sample(daemon.pid, peak, stop))
            size = lines = 0
            t1 = time.perf_counter()
            timeout = aiohttp.ClientTimeout(total=max(1.0, deadline - time.monotonic()))
            async with session.get(url, headers=headers, timeout=timeout) as resp:
                if resp.status != 200:
                    raise SystemExit(f"export: HTTP {resp.status} {await resp.text()}")
                async for chunk in resp.content.iter_chunked(256 * 1024):
                    size += len(chunk)
                    lines += chunk.count(b"\r\n")
            export_s = time.perf_counter() - t1
            stop.set()
            await sampler
            after = mem_kb(daemon.pid)
    finally:
        await daemon.stop()
    rows = lines - 1  # the header
    if rows != contacts:
        raise SystemExit(f"exported {rows} rows of {contacts} contacts")
    hwm_rose = after["VmHWM"] > before["VmHWM"]
    peak_kb = max(peak[0], after["VmHWM"]) if hwm_rose else peak[0]
    return {
        "contacts": contacts, "insert_s": insert_s, "bytes": size, "export_s": export_s,
        "rows_per_s": rows / export_s, "rss_before_mb": before["VmRSS"] / 1024, "rss_peak_mb": peak_kb / 1024,
        "delta_mb": (peak_kb - before["VmRSS"]) / 1024, "ratio": peak_kb / before["VmRSS"],
        "rss_after_mb": after["VmRSS"] / 1024,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.export_memory", description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--limit-s", type=float, default=900.0, help="give up after this many seconds")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dialerd-bench-export-") as tmp:
        figures = asyncio.run(run(args.contacts, args.limit_s, Path(tmp)))
    print(
        f"export of {figures['contacts']:,.0f} contacts: {figures['bytes'] / 1e6:.1f} MB of CSV in "
        f"{figures['export_s']:.1f} s ({figures['rows_per_s']:,.0f} rows/s; insert took {figures['insert_s']:.0f} s)\n"
        f"daemon RSS: {figures['rss_before_mb']:.1f} MB before, peak {figures['rss_peak_mb']:.1f} MB during "
        f"(+{figures['delta_mb']:.1f} MB, x{figures['ratio']:.2f}), {figures['rss_after_mb']:.1f} MB after",
        file=sys.stdout,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
