"""AMD's verdicts on the simulated carrier's 555-02XX ranges: N calls of each kind, a table of what AMD said.

    .venv/bin/python -m bench.amd_verdicts [--calls 20] [--parallel 30]

Each call is a raw ARI originate into this script's own app (loopback, the local Asterisk of
``tests/pbx_env.py``; set DIALERD_PBX_CACHE for another one). On answer it is continued into
``[dialerd-amd]`` with ``DIALERD_AMD_APP`` set, so the verdict comes back in a second StasisStart
(``["amd", AMDSTATUS, AMDCAUSE]``); the call is then hung up, as the verdict is all we measure. Bounded:
at most ``--parallel`` calls at a time, each given ``PER_CALL_S`` seconds, the whole run ``RUN_LIMIT_S``.
The verdict time is from StasisStart (answer) to the verdict's StasisStart, both Asterisk's timestamps.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp

from bench.stats import pct

# The ranges of asterisk/conf/extensions.conf; the numbers of one kind cycle through its range.
KINDS: dict[str, range] = {"person": range(10, 50), "voicemail": range(50, 90), "silence": range(90, 100)}
PER_CALL_S = 15.0  # AMD gives up after totalAnalysisTime (5 s) plus Answer()'s 0.5 s
RUN_LIMIT_S = 300.0


@dataclass
class Call:
    kind: str
    number: str
    channel_id: str
    http_status: int = 0
    answered_at: datetime | None = None
    verdict_at: datetime | None = None
    status: str = "none"  # no verdict (not answered, no second StasisStart in time)
    cause: str = ""
    error: str = ""  # the reply body of a refused originate
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def verdict_s(self) -> float | None:
        if self.answered_at is None or self.verdict_at is None:
            return None
        return (self.verdict_at - self.answered_at).total_seconds()


def _ts(event: dict[str, Any]) -> datetime:
    return datetime.strptime(event["timestamp"], "%Y-%m-%dT%H:%M:%S.%f%z")


async def _read_events(ws: aiohttp.ClientWebSocketResponse, session: aiohttp.ClientSession, base: str,
                       calls: dict[str, Call]) -> None:
    async for msg in ws:
        if msg.type != aiohttp.WSMsgType.TEXT:
            continue
        event = json.loads(msg.data)
        call = calls.get((event.get("channel") or {}).get("id", ""))
        if call is None:
            continue
        if event["type"] == "StasisStart" and not event.get("args"):
            call.answered_at = _ts(event)
            params = {"context": "dialerd-amd", "extension": "s", "priority": "1"}
            async with session.post(f"{base}/channels/{call.channel_id}/continue", params=params):
                pass
        elif event["type"] == "StasisStart":
            call.verdict_at = _ts(event)
            _, call.status, call.cause = (list(event["args"]) + ["", "", ""])[:3]
            async with session.delete(f"{base}/channels/{call.channel_id}"):
                pass
        elif event["type"] == "ChannelDestroyed":
            call.ended.set()


async def _one(session: aiohttp.ClientSession, base: str, app: str, call: Call, slots: asyncio.Semaphore) -> None:
    async with slots:
        body = {
            "endpoint": f"PJSIP/{call.number}@carrier", "app": app, "channelId": call.channel_id, "timeout": 10,
            "variables": {"DIALERD_ID": call.channel_id, "DIALERD_AMD_APP": app},
        }
        async with session.post(f"{base}/channels", json=body) as resp:
            call.http_status = resp.status
            if call.http_status != 200:
                call.error = (await resp.text())[:200]
                return
        try:
            async with asyncio.timeout(PER_CALL_S):
                await call.ended.wait()
        except TimeoutError:
            async with session.delete(f"{base}/channels/{call.channel_id}"):
                pass


async def measure(env: dict[str, str], per_kind: int, parallel: int) -> list[Call]:
    base = env["DIALERD_ARI_URL"].rstrip("/") + "/ari"
    token = base64.b64encode(f"{env['DIALERD_ARI_USER']}:{env['DIALERD_ARI_PASSWORD']}".encode()).decode()
    app = f"{env['DIALERD_ARI_APP']}-amd-bench-{os.getpid()}"
    tag = uuid.uuid4().hex[:8]
    # Fixed-width ids: Asterisk refuses (409) an id that is a case-insensitive PREFIX of a live channel's
    # id (measured: "x-1" while "x-13" is up), so "...-person-1" would clash with "...-person-13".
    calls = [
        Call(kind, f"+1415555{200 + digits[i % len(digits)]:04d}", f"amdb-{tag}-{kind}-{i:03d}")
        for kind, digits in KINDS.items() for i in range(per_kind)
    ]
    by_id = {c.channel_id: c for c in calls}
    slots = asyncio.Semaphore(parallel)
    # A pool of 16 keep-alive connections: ARI's listen backlog is 10, a burst of new ones gets refused.
    connector = aiohttp.TCPConnector(limit=16)
    async with aiohttp.ClientSession(headers={"Authorization": f"Basic {token}"}, connector=connector) as session:
        ws = await session.ws_connect(f"{base}/events", params={"app": app})
        reader = asyncio.create_task(_read_events(ws, session, base, by_id), name="ari-events")
        try:
            async with asyncio.timeout(RUN_LIMIT_S):
                await asyncio.gather(*(_one(session, base, app, c, slots) for c in calls))
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            await ws.close()
    return calls


def table(calls: list[Call]) -> str:
    """A Markdown table: per kind, the verdict counts, the causes seen and the verdict time."""
    statuses = ["HUMAN", "MACHINE", "NOTSURE", "HANGUP", "none"]
    lines = [
        "| kind | calls | " + " | ".join(statuses) + " | AMDCAUSE (count) | verdict after answer p50 / max |",
        "|---|---|" + "---|" * len(statuses) + "---|---|",
    ]
    for kind in KINDS:
        mine = [c for c in calls if c.kind == kind]
        counts = Counter(c.status for c in mine)
        causes = Counter(c.cause for c in mine if c.cause)
        times = [t for c in mine if (t := c.verdict_s) is not None]
        timing = f"{pct(times, 50):.2f} / {max(times):.2f} s" if times else "-"
        cause_text = ", ".join(f"`{cause}` ({n})" for cause, n in causes.most_common()) or "-"
        lines.append(f"| {kind} | {len(mine)} | " + " | ".join(str(counts[s]) for s in statuses)
                     + f" | {cause_text} | {timing} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.amd_verdicts", description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20, help="calls per kind (default 20)")
    parser.add_argument("--parallel", type=int, default=30, help="calls at a time (default 30)")
    args = parser.parse_args(argv)
    if not 1 <= args.calls <= 200 or not 1 <= args.parallel <= 100:
        parser.error("--calls must be 1-200 and --parallel 1-100")
    from tests.pbx_env import local_pbx_env

    env = local_pbx_env()
    calls = asyncio.run(measure(env, args.calls, args.parallel))
    print(f"Asterisk {env.get('DIALERD_PBX_ASTERISK_VERSION', '?')}, {args.calls} calls per kind, "
          f"{args.parallel} at a time")
    print(table(calls))
    refused = Counter(c.http_status for c in calls if c.http_status != 200)
    if refused:
        print("originates refused (HTTP status: count): " + ", ".join(f"{s}: {n}" for s, n in refused.items()))
        for c in calls:
            if c.http_status != 200:
                print(f"  {c.channel_id} {c.number}: {c.http_status} {c.error}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
