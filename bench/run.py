"""Runs every section within the time budget, prints the table and writes docs/benchmarks.md."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import resource
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from bench import api_load, dispatch, fanout, hotpath, importing, scale
from bench.context import Ctx
from bench.docs import render
from bench.report import Report

REPO = Path(__file__).resolve().parent.parent
BUDGET_SECONDS = 360.0

SECTIONS: dict[str, Callable[[Ctx], Awaitable[None]]] = {
    "dispatch": dispatch.run,
    "hotpath": hotpath.run,
    "import": importing.run,
    "fanout": fanout.run,
    "api": api_load.run,
    "scale": scale.run,
}


def _calibrate() -> str:
    """CPU seconds of a fixed pure-Python loop (5M additions): the scale for every CPU figure."""
    t0, w0 = time.thread_time(), time.perf_counter()
    total = 0
    for i in range(5_000_000):
        total += i
    return (f"a fixed loop of 5M additions took {time.thread_time() - t0:.2f} s of CPU "
            f"({time.perf_counter() - w0:.2f} s wall)")


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


async def _main(args: argparse.Namespace) -> int:
    from tests.pbx_env import local_pbx_env

    pbx = local_pbx_env()
    workdir = Path(tempfile.mkdtemp(prefix="dialerd-bench-", dir="/var/tmp"))
    report = Report()
    started = time.monotonic()
    ctx = Ctx(pbx, workdir, report, started + BUDGET_SECONDS, quick=args.quick)
    machine = {
        "nproc": str(os.cpu_count()),
        "asterisk": pbx.get("DIALERD_PBX_ASTERISK_VERSION", "?"),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": sys.version.split()[0],
        "load_before": _loadavg(),
    }
    machine["calibration"] = _calibrate()
    timings: dict[str, float] = {}
    failed: list[str] = []
    for name, section in SECTIONS.items():
        if args.only and name not in args.only:
            continue
        t0 = time.monotonic()
        print(f"[bench] {name} ({ctx.left():.0f} s of budget left)", file=sys.stderr, flush=True)
        try:
            await section(ctx)
        except Exception:
            failed.append(name)
            traceback.print_exc()
            report.note(f"failed: {name}", "```\n" + traceback.format_exc() + "```")
        timings[name] = time.monotonic() - t0
    machine["load_after"] = _loadavg()
    machine["seconds"] = f"{time.monotonic() - started:.0f}"
    print(report.table())
    print("section seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()), file=sys.stderr)
    out = REPO / "docs" / "benchmarks.md" if not args.only else workdir / "benchmarks.md"
    analysis = (REPO / "bench" / "analysis.md").read_text(encoding="utf-8")
    out.write_text(render(report, ctx.profiles, machine, timings, analysis), encoding="utf-8")
    print(f"[bench] wrote {out}", file=sys.stderr)
    if args.keep:
        print(f"[bench] scratch kept in {workdir}", file=sys.stderr)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--only", nargs="*", choices=list(SECTIONS), help="run these sections (no docs written)")
    p.add_argument("--quick", action="store_true", help="small sizes, for trying the bench itself")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory (databases, daemon logs)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    # 1,000 SSE clients plus their server side need more descriptors than a default soft limit of 1,024.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    return asyncio.run(_main(args))
