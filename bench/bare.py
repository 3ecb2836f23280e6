"""The baseline for dispatch overhead: a minimal ARI originate loop, nothing dialerd does around it.

One keep-alive pool of 16 connections (what asterisk.md measured as safe), the app's websocket
connected before the first POST (an answered call into an app without a websocket is hung up), one
``POST /channels/{id}?app=`` per call at the target rate, and a wait for every ChannelDestroyed.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import time
from dataclasses import dataclass, field

import aiohttp

from bench.stats import pct

_RUNS = itertools.count()


@dataclass
class BareResult:
    calls: int
    accepted: int = 0
    errors: int = 0
    ended: int = 0
    answered: int = 0
    http_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # this (bench) process, including its reading of the websocket

    @property
    def http_p50(self) -> float:
        return pct(self.http_ms, 50)

    @property
    def http_p99(self) -> float:
        return pct(self.http_ms, 99)


async def originate_loop(
    env: dict[str, str], numbers: list[str], rate: float, tag: str, *, limit_s: float
) -> BareResult:
    """Originate one call per number at ``rate`` calls/s; return once all ended or ``limit_s`` passed."""
    base = env["DIALERD_ARI_URL"].rstrip("/") + "/ari"
    token = base64.b64encode(f"{env['DIALERD_ARI_USER']}:{env['DIALERD_ARI_PASSWORD']}".encode()).decode()
    endpoint = env.get("DIALERD_PBX_ENDPOINT", "PJSIP/{number}@carrier")
    app = f"bench-bare-{os.getpid()}-{next(_RUNS)}"
    result = BareResult(len(numbers))
    ours: set[str] = set()
    all_ended = asyncio.Event()
    cpu0, t0 = time.process_time(), time.monotonic()
    connector = aiohttp.TCPConnector(limit=17, keepalive_timeout=10)
    async with aiohttp.ClientSession(headers={"Authorization": f"Basic {token}"}, connector=connector) as session:
        ws = await session.ws_connect(f"{base}/events", params={"app": app, "subscribeAll": "false"})

        async def read_events() -> None:
            async for msg in ws:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    continue
                event = json.loads(msg.data)
                kind = event.get("type")
                if kind == "StasisStart":
                    result.answered += 1
                elif kind == "ChannelDestroyed" and event["channel"]["id"] in ours:
                    result.ended += 1
                    if result.ended >= result.accepted and sending_done.is_set():
                        all_ended.set()

        async def originate(i: int, number: str) -> None:
            cid = f"{tag}-{i}"
            ours.add(cid)
            params = {"endpoint": endpoint.format(number=number), "app": app, "timeout": "30"}
            started = time.perf_counter()
            try:
                async with session.post(f"{base}/channels/{cid}", params=params,
                                        json={"variables": {"DIALERD_CAMPAIGN": tag}}) as resp:
                    await resp.read()
                    ok = resp.status == 200
            except aiohttp.ClientError:
                ok = False
            result.http_ms.append((time.perf_counter() - started) * 1000)
            if ok:
                result.accepted += 1
            else:
                result.errors += 1
                ours.discard(cid)

        sending_done = asyncio.Event()
        reader = asyncio.create_task(read_events(), name="bare-events")
        posts: set[asyncio.Task[None]] = set()
        start = time.monotonic()
        for i, number in enumerate(numbers):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(originate(i, number), name=f"bare-{i}")
            posts.add(task)
            task.add_done_callback(posts.discard)
        await asyncio.gather(*list(posts))
        sending_done.set()
        if result.ended >= result.accepted:
            all_ended.set()
        try:
            async with asyncio.timeout(max(1.0, limit_s - (time.monotonic() - t0))):
                await all_ended.wait()
        except TimeoutError:
            pass
        await ws.close()
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    result.seconds = time.monotonic() - t0
    result.cpu_seconds = time.process_time() - cpu0
    return result
