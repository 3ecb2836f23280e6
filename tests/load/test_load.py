"""Load on the real local Asterisk: 50 campaigns of 10 tenants at once, 200 SSE readers, 20 API pollers.

Every cap is checked on Asterisk's clock, every SSE stream against the ``event`` table, every API answer
for its status; memory and event-loop lag are sampled throughout. The figures are printed and written to
``bench/out/load.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import random
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import Api
from tests.live import AsteriskWatch, all_contacts, live_api, max_in_window, numbers

pytestmark = pytest.mark.pbx

SEED = 5550100
OUT = Path(__file__).resolve().parents[2] / "bench" / "out" / "load.json"

# name -> (concurrent_max, calls_per_minute, campaigns). 50 campaigns in all. The two 60/min tenants get
# more than 60 calls each, so the hard 60 s window can bind, not only the even spacing (it does when the
# daemon keeps the pace; max_in_60s in the figures says whether it did).
TENANTS: dict[str, tuple[int, int, int]] = {
    "t0": (6, 60, 6), "t1": (7, 90, 5), "t2": (8, 120, 5), "t3": (9, 180, 4), "t4": (10, 240, 5),
    "t5": (10, 60, 6), "t6": (9, 90, 5), "t7": (8, 120, 5), "t8": (7, 180, 4), "t9": (6, 240, 5),
}
SSE_READERS = 200
SSE_LATE = 100  # of which join mid-run (replay from the database, then live)
POLLERS = 20
POLL_PAUSE = (0.25, 0.75)  # seconds between one poller's rounds of list, get, contacts
RUN_TIMEOUT = 200.0  # all campaigns must end within this (pacing alone needs ~70 s)
# Asterisk creates a channel a few ms after dialerd sends the request; on a box loaded by other test
# sessions, more, and a send held up by a preempted loop makes the next one look early by as much (the
# pace is planned, not re-measured). Starts may look closer together than the pace by at most this much
# plus half an interval: that still fails any burst (two starts together are a whole interval early, three
# at 240/min are two), while a slow box's scheduling delay is reported (pacing_slack_s), not a failure.
PACING_JITTER = 0.3
ASTERISK_TIME = "%Y-%m-%dT%H:%M:%S.%f%z"
STALL_HANG = 10.0  # seconds: a loop stall this long is a hang, not a slow box (see the last assertion)


@dataclass
class Plan:
    tenant: str
    cap: int
    suffixes: list[int]
    cid: str = ""


def _suffix(rng: random.Random) -> int:
    # Mostly answered-and-short (00-29, ~2 s); some busy, congestion and not found (immediate failures).
    if rng.random() < 0.75:
        return rng.randint(0, 29)
    return rng.choice((40, 60, 70)) + rng.randint(0, 9)


def _plan(rng: random.Random) -> list[Plan]:
    plans: list[Plan] = []
    for tenant, (cmax, cpm, n) in TENANTS.items():
        caps = [rng.randint(1, 4) for _ in range(n)]
        while sum(caps) > cmax:  # every campaign of the tenant must be able to start
            caps[caps.index(max(caps))] -= 1
        low, high = (11, 12) if cpm == 60 else (8, 12)
        plans += [Plan(tenant, cap, [_suffix(rng) for _ in range(rng.randint(low, high))]) for cap in caps]
    return plans


@dataclass
class Frame:
    event: str | None
    id: str | None
    data: dict[str, Any]
    received: float  # time.time()


@dataclass
class Stream:
    cid: str
    tenant: str
    opened: float = 0.0
    frames: list[Frame] = field(default_factory=list)  # every named event and the end, not the snapshots
    snapshots: int = 0  # counted, not kept: 200 streams' snapshots were most of this test's own heap
    status: int | None = None
    error: str | None = None

    @property
    def ended(self) -> bool:
        return bool(self.frames) and self.frames[-1].event == "end"


@dataclass
class ApiStats:
    statuses: Counter[int] = field(default_factory=Counter)
    bad: list[tuple[str, int, str]] = field(default_factory=list)  # non-2xx: path, status, body
    conn_errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def _load_average() -> list[str]:
    # Other sessions share this box and this Asterisk: the figures mean little without it.
    return Path("/proc/loadavg").read_text().split()[:3]


def _write(figures: dict[str, Any]) -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(figures, indent=2) + "\n")


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


async def _read_stream(session: aiohttp.ClientSession, api: Api, s: Stream) -> None:
    """Read one SSE stream from the start (Last-Event-ID: 0) until ``event: end``."""
    headers = {**api.auth(s.tenant), "Last-Event-ID": "0"}
    s.opened = time.time()
    try:
        async with session.get(f"{api.base}/api/v1/campaigns/{s.cid}/events", headers=headers,
                               timeout=aiohttp.ClientTimeout(total=None, sock_read=60)) as resp:
            s.status = resp.status
            if resp.status != 200:
                s.error = (await resp.read()).decode(errors="replace")[:300]
                return
            cur: dict[str, str] = {}
            async for raw in resp.content:
                line = raw.decode("utf-8").rstrip("\n")
                if line.startswith(":"):
                    continue
                if line:
                    key, _, value = line.partition(":")
                    cur[key] = value[1:] if value.startswith(" ") else value
                    continue
                if "data" in cur:
                    data = json.loads(cur["data"])
                    if cur.get("event") is None:
                        s.snapshots += 1
                    else:
                        s.frames.append(Frame(cur.get("event"), cur.get("id"), data, time.time()))
                    if cur.get("event") == "end":
                        return
                cur = {}
            s.error = "stream closed before event: end"
    except (aiohttp.ClientError, TimeoutError) as exc:
        s.error = f"{exc.__class__.__name__}: {exc}"


async def _request(session: aiohttp.ClientSession, api: Api, tenant: str, path: str, stats: ApiStats) -> Any:
    t0 = time.monotonic()
    try:
        async with session.get(api.base + path, headers=api.auth(tenant)) as resp:
            body = await resp.read()
            stats.latencies.append(time.monotonic() - t0)
            stats.statuses[resp.status] += 1
            if not 200 <= resp.status < 300:
                stats.bad.append((path, resp.status, body.decode(errors="replace")[:300]))
                return None
            return json.loads(body)
    except (aiohttp.ClientError, TimeoutError) as exc:
        stats.conn_errors.append(f"{path}: {exc.__class__.__name__}: {exc}")
        return None


async def _poller(session: aiohttp.ClientSession, api: Api, tenant: str, cids: list[str], stats: ApiStats,
                  rng: random.Random, stop: asyncio.Event) -> None:
    """An operator's dashboard: list, one campaign, its contacts; again, until told to stop."""
    while not stop.is_set():
        cid = rng.choice(cids)
        for path in ("/api/v1/campaigns?limit=50", f"/api/v1/campaigns/{cid}",
                     f"/api/v1/campaigns/{cid}/contacts?limit=1000"):
            await _request(session, api, tenant, path, stats)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), rng.uniform(*POLL_PAUSE))


async def _loop_lag(samples: list[tuple[float, float]]) -> None:
    """How late a 50 ms sleep wakes up: the event loop's blocking, as every coroutine in it feels it."""
    while True:
        t0 = time.monotonic()
        await asyncio.sleep(0.05)
        t1 = time.monotonic()
        samples.append((t1, t1 - t0 - 0.05))


@contextlib.contextmanager
def _gc_pauses(samples: list[tuple[float, int, float]]) -> Any:
    """Record every cyclic-GC pass as (monotonic end, generation, seconds): a full pass stops the loop."""
    started = [0.0]

    def note(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            samples.append((time.monotonic(), info["generation"], time.perf_counter() - started[0]))

    gc.callbacks.append(note)
    try:
        yield
    finally:
        gc.callbacks.remove(note)


async def _rss(samples: list[tuple[float, int]]) -> None:
    while True:
        samples.append((time.monotonic(), _rss_kib()))
        await asyncio.sleep(1.0)


async def _progress(api: Api, watch: AsteriskWatch, stats: ApiStats, lag: list[tuple[float, float]],
                    out: list[dict[str, Any]], ours: frozenset[str]) -> None:
    """Every 5 s: calls ended so far, our channels up in Asterisk, API requests, worst loop lag since."""
    t0 = time.monotonic()
    while True:
        await asyncio.sleep(5.0)
        now = time.monotonic()
        out.append({
            "t": round(now - t0, 1), "ended": sum(api.daemon.dispatcher.outcomes.values()),
            "live_channels": sum(n for cid, n in watch.live.items() if cid in ours),
            "api_requests": sum(stats.statuses.values()),
            "loop_lag_max_ms": round(max((x for t, x in lag if t > now - 5.0), default=0.0) * 1000, 1),
            "rss_mib": round(_rss_kib() / 1024, 1),
        })


class _Sightings(dict[str, dict[str, Any]]):
    """``AsteriskWatch.seen`` that also notes when each channel was last listed.

    The watch calls ``setdefault`` for every channel of every poll, so this sees each listing.
    """

    def setdefault(self, key: str, default: dict[str, Any] | None = None, /) -> dict[str, Any]:
        info = super().setdefault(key, default if default is not None else {})
        info["last_listed"] = time.time()
        return info


def _asterisk_time(ts: str) -> float:
    return datetime.strptime(ts, ASTERISK_TIME).timestamp()


def _lifetimes(watch: AsteriskWatch, attempts: list[Any]) -> list[tuple[float, float]]:
    """Each call's channel lifetime on Asterisk's clock: its creation time (from Asterisk's channel list)
    to its ChannelDestroyed timestamp (which dialerd stores as the attempt's ``ended_at``).

    A channel too short-lived for the watch to list (busy, congestion, not found) starts, instead, when
    dialerd wrote the attempt, before sending the request: earlier, so its lifetime only grows.
    """
    spans = []
    for a in attempts:
        assert a.ended_at is not None, a
        seen = watch.seen.get(a.channel_id)
        start = _asterisk_time(seen["created"]) if seen else a.created_at.timestamp()
        spans.append((start, a.ended_at.timestamp()))
    return spans


def _peak(spans: list[tuple[float, float]]) -> int:
    """The most spans open at one instant (a span ending when another starts does not overlap it)."""
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    best = now = 0
    for _t, step in edges:
        now += step
        best = max(best, now)
    return best


def _listed_late(watch: AsteriskWatch, attempts: list[Any]) -> float:
    """How long after its ChannelDestroyed a channel was still in Asterisk's channel list, at most."""
    late = [watch.seen[a.channel_id]["last_listed"] - a.ended_at.timestamp()
            for a in attempts if a.channel_id in watch.seen]
    return max(late, default=0.0)


def _pacing_slack(times: list[float], interval: float) -> float:
    """How much sooner than even spacing allows any run of starts happened (0 = never early).

    Over every pair i < j of starts: (j - i) * interval - (t_j - t_i), at its largest. Holds for any
    subset of the starts too, so channels too short-lived for the watch to see cannot hide a burst.
    """
    worst = 0.0
    for i in range(len(times)):
        for j in range(i + 1, len(times)):
            worst = max(worst, (j - i) * interval - (times[j] - times[i]))
    return worst


def _timeline(watch: AsteriskWatch, attempts: list[Any]) -> str:
    """A campaign's calls for a failure message: Asterisk's creation time, then dialerd's attempt times."""
    def hms(t: Any) -> str:
        return t.strftime("%H:%M:%S.%f")[:-3] if t is not None else "-"

    rows = []
    for a in sorted(attempts, key=lambda a: a.created_at):
        seen = watch.seen.get(a.channel_id) or {}
        rows.append(f"  {a.channel_id[-8:]} asterisk created {seen.get('created', 'unseen')[11:23]:12} "
                    f"dialerd attempt {hms(a.created_at)} originated {hms(a.originated_at)} "
                    f"answered {hms(a.answered_at)} ended {hms(a.ended_at)} {a.reason or ''}")
    return "\n".join(rows)


@dataclass
class Run:
    """What one load run produced, for the assertions."""

    plans: list[Plan]
    watch: AsteriskWatch
    api_stats: ApiStats = field(default_factory=ApiStats)
    streams: list[Stream] = field(default_factory=list)
    lag: list[tuple[float, float]] = field(default_factory=list)  # (monotonic, seconds late)
    rss: list[tuple[float, int]] = field(default_factory=list)  # (monotonic, KiB)
    gc: list[tuple[float, int, float]] = field(default_factory=list)  # (monotonic, generation, seconds)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    started: float = 0.0  # monotonic, when the campaigns were started
    seconds: float = 0.0  # until every campaign had ended
    table: dict[str, list[Any]] = field(default_factory=dict)  # campaign -> its event rows
    contacts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    attempts: dict[str, list[Any]] = field(default_factory=dict)
    originations: int = 0


async def _drive(tmp_path: Path, run: Run) -> None:
    """Create and start every campaign, read every stream and poll the API until all have ended."""
    plans = run.plans
    tenants = {name: (cmax, cpm) for name, (cmax, cpm, _n) in TENANTS.items()}
    side = [asyncio.create_task(_loop_lag(run.lag), name="loop-lag"), asyncio.create_task(_rss(run.rss), name="rss")]
    rng = random.Random(SEED + 1000)
    try:
        async with (live_api(tmp_path, tenants=tenants) as api,
                    aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http):
            for p in plans:
                status, body = await api.create(numbers(p.suffixes), tenant=p.tenant, name=f"load {p.tenant}",
                                                max_concurrent_calls=p.cap, caller_id="+14155550000")
                assert status == 201, body
                p.cid = str(body["id"])
            run.watch.groups = [frozenset(p.cid for p in plans if p.tenant == t) for t in tenants]
            run.watch.groups.append(frozenset(p.cid for p in plans))
            run.watch.start()
            by_tenant = {t: [p.cid for p in plans if p.tenant == t] for t in tenants}

            # Half of the readers are there before the first call, spread over every campaign.
            run.streams = [Stream(plans[i % len(plans)].cid, plans[i % len(plans)].tenant)
                           for i in range(SSE_READERS)]
            readers = [asyncio.create_task(_read_stream(http, api, s), name=f"sse-{i}")
                       for i, s in enumerate(run.streams[: SSE_READERS - SSE_LATE])]
            side += readers
            await asyncio.sleep(1.0)
            stop_polling = asyncio.Event()
            names = list(tenants)
            pollers = [asyncio.create_task(_poller(http, api, names[i % len(names)], by_tenant[names[i % len(names)]],
                                                   run.api_stats, random.Random(SEED + i), stop_polling),
                                           name=f"poller-{i}")
                       for i in range(POLLERS)]
            side += pollers

            run.started = time.monotonic()
            side.append(asyncio.create_task(
                _progress(api, run.watch, run.api_stats, run.lag, run.timeline, run.watch.groups[-1]), name="progress"))
            started = await asyncio.gather(*(api.call("POST", f"/api/v1/campaigns/{p.cid}/start", tenant=p.tenant)
                                             for p in plans))
            for (status, body), p in zip(started, plans, strict=True):
                assert status == 200 and body["status"] == "running", (p.tenant, p.cap, body)
            # The other half joins while calls are going on: replay from the table, then live.
            for i, s in enumerate(run.streams[SSE_READERS - SSE_LATE:]):
                await asyncio.sleep(rng.uniform(0.0, 0.3))
                readers.append(asyncio.create_task(_read_stream(http, api, s), name=f"sse-late-{i}"))
                side.append(readers[-1])
            try:
                async with asyncio.timeout(RUN_TIMEOUT):
                    await asyncio.gather(*readers)
            except TimeoutError:
                ended = sum(s.ended for s in run.streams)
                raise AssertionError(f"{ended}/{len(run.streams)} streams ended after {RUN_TIMEOUT}s; "
                                     f"progress: {run.timeline}") from None
            # Every stream ended; the API must agree that every campaign has.
            pending = {p.cid: p.tenant for p in plans}
            async with asyncio.timeout(30):
                while pending:
                    for cid, tenant in list(pending.items()):
                        body = await _request(http, api, tenant, f"/api/v1/campaigns/{cid}", run.api_stats)
                        if body is not None and body["status"] in ("completed", "failed"):
                            assert body["status"] == "completed", body
                            del pending[cid]
                    await asyncio.sleep(0.2)
            run.seconds = time.monotonic() - run.started
            stop_polling.set()
            await asyncio.gather(*pollers)
            await run.watch.stop()

            store = api.daemon.store
            for p in plans:
                run.table[p.cid] = await store.events_after(p.cid, 0, 100000)
                run.contacts[p.cid] = await all_contacts(api, p.cid, tenant=p.tenant)
                run.attempts[p.cid] = [a for c in run.contacts[p.cid] for a in await store.list_attempts(c["id"])]
            run.originations = api.daemon.dispatcher.originations
    finally:
        await run.watch.stop()
        for task in side:
            task.cancel()
        await asyncio.gather(*side, return_exceptions=True)


@pytest.mark.timeout(600)
async def test_fifty_campaigns_ten_tenants_under_load(tmp_path: Path) -> None:
    plans = _plan(random.Random(SEED))
    assert len(plans) == 50
    watch = AsteriskWatch.from_env()
    watch.seen = _Sightings()
    run = Run(plans, watch)
    with _gc_pauses(run.gc):
        await _drive(tmp_path, run)
    t_end = run.started + run.seconds

    # ---- no error response -------------------------------------------------------------------------
    broken = [(s.cid, s.status, s.error) for s in run.streams if s.error or not s.ended]
    assert not broken, broken[:5]
    assert not run.api_stats.conn_errors, run.api_stats.conn_errors[:5]
    assert not run.api_stats.bad, run.api_stats.bad[:5]
    assert run.api_stats.statuses[200] > 1000, run.api_stats.statuses  # the pollers really did poll

    # ---- every campaign completed, every contact dialled once -------------------------------------
    total = sum(len(p.suffixes) for p in plans)
    for p in plans:
        assert len(run.contacts[p.cid]) == len(p.suffixes)
        assert all(c["status"] in ("completed", "failed") and c["attempts"] == 1 for c in run.contacts[p.cid]), p.cid
        assert len(run.attempts[p.cid]) == len(p.suffixes)
    assert run.originations == total

    # ---- no lost transition: every stream is exactly the event table, in order --------------------
    for s in run.streams:
        named = [(f.event, f.id, f.data) for f in s.frames if f.event is not None]  # the end is a stored event too
        expected = [(ev.kind, str(ev.id), {"id": ev.id, "campaign_id": ev.campaign_id, **ev.payload})
                    for ev in run.table[s.cid]]
        assert named == expected, (s.cid, len(named), len(expected))
        assert s.frames[-1].data["status"] == "completed"
        last: dict[int, str] = {}
        for kind, _id, data in named:
            if kind not in ("campaign", "end"):
                last[data["contact_id"]] = kind
        assert last == {c["id"]: c["status"] for c in run.contacts[s.cid]}, s.cid

    # ---- caps, on Asterisk's clock ----------------------------------------------------------------
    # Asterisk's channel list can trail its own events under load: in runs on a box shared with other
    # test sessions the watch listed a channel seconds after its ChannelDestroyed, next to the call that
    # followed it, while their lifetimes never overlapped. So caps are checked on the lifetimes; the
    # list's own peaks are reported next to how late it was.
    spans = {p.cid: _lifetimes(watch, run.attempts[p.cid]) for p in plans}
    over = {p.cid: (_peak(spans[p.cid]), p.cap) for p in plans if _peak(spans[p.cid]) > p.cap}
    if over:
        raise AssertionError("campaign caps exceeded in Asterisk:\n" + "\n".join(
            f"{cid} (peak, cap) {peak}:\n{_timeline(watch, run.attempts[cid])}" for cid, peak in over.items()))
    at_cap = sum(_peak(spans[p.cid]) == p.cap for p in plans)
    assert at_cap >= 5, at_cap  # the caps were reached, not just never tested
    answered = [a for p in plans for a in run.attempts[p.cid] if a.answered_at is not None]
    unseen = [a.channel_id for a in answered if a.channel_id not in watch.seen]
    assert not unseen, unseen[:5]  # a 2 s call cannot slip between two polls 50 ms apart
    tenant_figures: dict[str, dict[str, Any]] = {}
    for t, (cmax, cpm, _n) in TENANTS.items():
        mine = [p for p in plans if p.tenant == t]
        peak = _peak([span for p in mine for span in spans[p.cid]])
        assert peak <= cmax, (t, peak, cmax)
        times = sorted(x for p in mine for x in watch.start_times(p.cid))
        window = max_in_window(times)
        assert window <= cpm, (t, window, cpm)
        slack = _pacing_slack(times, 60.0 / cpm)
        assert slack <= PACING_JITTER + 0.5 * 60.0 / cpm, (t, slack, 60.0 / cpm)
        tenant_figures[t] = {
            "concurrent_max": cmax, "calls_per_minute": cpm, "calls": sum(len(p.suffixes) for p in mine),
            "peak": peak, "listed_peak": watch.max_by_tenant_group.get(frozenset(p.cid for p in mine), 0),
            "starts_seen": len(times), "max_in_60s": window,
            "span_s": round(times[-1] - times[0], 2) if times else 0.0, "pacing_slack_s": round(slack, 3),
        }
    listed_over = sum(watch.max_concurrent.get(p.cid, 0) > p.cap for p in plans)
    listed_late = max(_listed_late(watch, run.attempts[p.cid]) for p in plans)

    # ---- memory flat, loop never blocked long -----------------------------------------------------
    t_mid = run.started + run.seconds / 2
    first = max((kib for t, kib in run.rss if run.started <= t < t_mid), default=0)
    second = max((kib for t, kib in run.rss if t_mid <= t <= t_end), default=0)
    assert first and second and second <= 1.5 * first, (first, second)
    lag = [x for t, x in run.lag if run.started <= t <= t_end]
    full_gc = [x for t, gen, x in run.gc if run.started <= t <= t_end and gen == 2]
    young_gc = [x for t, gen, x in run.gc if run.started <= t <= t_end and gen < 2]

    sse_lag = [f.received - _epoch(f.data["at"]) for s in run.streams for f in s.frames
               if f.event not in (None, "end") and "at" in f.data and _epoch(f.data["at"]) > s.opened]
    lat = run.api_stats.latencies
    all_spans = [span for p in plans for span in spans[p.cid]]
    figures: dict[str, Any] = {
        "campaigns": len(plans), "tenants": len(TENANTS), "contacts": total, "calls": run.originations,
        "answered": len(answered), "sse_readers": len(run.streams), "pollers": POLLERS,
        "run_seconds": round(run.seconds, 1), "calls_per_second": round(run.originations / run.seconds, 2),
        "peak_concurrency": _peak(all_spans), "campaigns_reaching_cap": at_cap,
        "asterisk_polls": watch.polls, "listed_peak_concurrency": watch.max_by_tenant_group.get(watch.groups[-1], 0),
        "campaigns_over_cap_in_list": listed_over, "list_trailing_destroy_s": round(listed_late, 3),
        "api_requests": sum(run.api_stats.statuses.values()),
        "api_requests_per_second": round(sum(run.api_stats.statuses.values()) / run.seconds, 1),
        "api_statuses": dict(run.api_stats.statuses),
        "api_latency_ms": {"p50": round(_pct(lat, 0.5) * 1000, 1), "p99": round(_pct(lat, 0.99) * 1000, 1),
                           "max": round(max(lat) * 1000, 1)},
        "sse_frames": sum(len(s.frames) for s in run.streams), "sse_snapshots": sum(s.snapshots for s in run.streams),
        "sse_live_events": len(sse_lag),
        "sse_lag_ms": {"p50": round(_pct(sse_lag, 0.5) * 1000, 1), "p99": round(_pct(sse_lag, 0.99) * 1000, 1),
                       "max": round(max(sse_lag, default=0.0) * 1000, 1)},
        "loop_lag_ms": {"p50": round(statistics.median(lag) * 1000, 1), "p99": round(_pct(lag, 0.99) * 1000, 1),
                        "max": round(max(lag) * 1000, 1), "samples": len(lag),
                        "max_whole_test": round(max(x for _t, x in run.lag) * 1000, 1)},
        "gc_pause_ms": {"full_passes": len(full_gc), "full_max": round(max(full_gc, default=0.0) * 1000, 1),
                        "young_max": round(max(young_gc, default=0.0) * 1000, 1),
                        "total": round((sum(full_gc) + sum(young_gc)) * 1000, 1)},
        "heap_objects_at_end": len(gc.get_objects()),
        "rss_mib": {"start": round(run.rss[0][1] / 1024, 1), "peak_first_half": round(first / 1024, 1),
                    "peak_second_half": round(second / 1024, 1), "end": round(run.rss[-1][1] / 1024, 1)},
        "load_average": _load_average(),
        "tenants_detail": tenant_figures,
        "timeline": run.timeline,
    }
    _write(figures)
    print(
        f"\nload: {run.originations} calls ({len(answered)} answered), {len(plans)} campaigns, {len(TENANTS)} tenants "
        f"in {run.seconds:.1f}s; peak {figures['peak_concurrency']} concurrent ({at_cap}/{len(plans)} campaigns "
        f"at cap); {figures['api_requests']} API requests, p99 {figures['api_latency_ms']['p99']} ms, 0 errors; "
        f"{len(run.streams)} SSE streams, lag p99 {figures['sse_lag_ms']['p99']} ms; loop lag p99 "
        f"{figures['loop_lag_ms']['p99']} ms, max {figures['loop_lag_ms']['max']} ms; "
        f"{len(full_gc)} full GC passes, longest {figures['gc_pause_ms']['full_max']} ms; RSS "
        f"{figures['rss_mib']['peak_first_half']} -> {figures['rss_mib']['peak_second_half']} MiB"
    )
    # Latency is a benchmark figure (printed above, in bench/out/load.json and in `make load`), not a
    # bound: on a slower or busier box of the same kind every figure above grows, and a 1 s stall bound
    # failed there (issue 9 item 12) while every cap, stream and answer was right. What stays asserted
    # is that nothing hangs the loop: a 10 s stall is a blocking call or a runaway pass, on any box.
    assert max(lag) < STALL_HANG, figures["loop_lag_ms"]
