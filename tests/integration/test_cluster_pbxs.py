"""Several daemons, each beside its own real Asterisk, on one PostgreSQL database (issue 13).

Two named local PBXs (``asterisk/local-pbx up --name``), three dialerd subprocesses (two share the first PBX
with distinct ARI apps), one campaign: it is created on one daemon and started on another; all dial it.
An SSE client on the third daemon receives every event of the campaign, whichever daemon wrote it.
Midway one daemon is SIGKILLed: the other takes it over (its heartbeat lapsed) and reconciles the calls it
left up on its PBX, which end there and free their capacity, while it carries the campaign on alone; then
the killed daemon restarts and rejoins. Asterisk's own records are the witnesses: both PBXs' channel lists,
polled throughout, never hold more of the campaign's calls together than its cap; both PBXs' CDRs together
hold each placed attempt's channel exactly once; every contact ends final, placed once.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import csv
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from dialerd.store.base import T_ATTEMPT, T_CONTACT, T_EVENT
from dialerd.store.db import create_engine
from tests.conftest import Api
from tests.daemon_proc import DaemonProc, create_key, daemon_env, multipart
from tests.integration.test_local_pbx_named import _lp, _session_lock
from tests.live import SseEvent, numbers, read_sse
from tests.pbx_env import parse_exports

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(300)]

NAMES = ("cluster-a", "cluster-b")
CDR_CHANNEL, CDR_DSTCHANNEL, CDR_UNIQUEID = 5, 6, 16  # Master.csv columns
CONTACTS = 240  # the kill-and-stall test's campaign
BIG_CAP = 12  # its cap
A_STALLS_AT = 30
CAP = 6


@pytest.fixture(scope="module")
def pbxs() -> Iterator[dict[str, dict[str, str]]]:
    with _session_lock():
        envs: dict[str, dict[str, str]] = {}
        try:
            for name in NAMES:
                # One ARI user and password on both: a daemon taking the other over reaches its PBX with its own.
                proc = _lp("up", "--name", name, *(("--credentials-of", NAMES[0]) if name != NAMES[0] else ()))
                assert proc.returncode == 0, proc.stderr
                envs[name] = parse_exports(proc.stdout)
            yield envs
        finally:
            for name in envs:
                _lp("down", "--name", name, timeout=60)


def node_env(db_url: str, pbx: dict[str, str], node: str) -> dict[str, str]:
    env = daemon_env(db_url, app=f"dialerd-{node}", DIALERD_CLUSTER_NODE_ID=node,
                     DIALERD_CLUSTER_HEARTBEAT_INTERVAL="0.5", DIALERD_CLUSTER_LAPSE="2")
    env.update({k: pbx[k] for k in ("DIALERD_ARI_URL", "DIALERD_ARI_USER", "DIALERD_ARI_PASSWORD",
                                    "DIALERD_PBX_ENDPOINT")})
    return env


def _auth(pbx: dict[str, str]) -> dict[str, str]:
    token = base64.b64encode(f"{pbx['DIALERD_ARI_USER']}:{pbx['DIALERD_ARI_PASSWORD']}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@dataclass
class ClusterWatch:
    """Polls every PBX's channel list together; the campaign's dialer channels on all of them at once.

    As ``tests/live.AsteriskWatch``: a channel counts at a poll only if the next poll still lists it (a
    channel list can hold a channel a moment after its end reached dialerd, which may have dialled the next
    one: a one-poll ghost; a real breach lasts a whole call)."""

    pbxs: list[dict[str, str]]
    campaign_id: str = ""
    peak: int = 0
    peak_raw: int = 0
    per_pbx_seen: list[set[str]] = field(default_factory=list)
    polls: int = 0
    _task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        self.per_pbx_seen = [set() for _ in self.pbxs]
        prev: set[str] = set()
        async with aiohttp.ClientSession() as session:
            while True:
                lists = await asyncio.gather(*(self._channels(session, p) for p in self.pbxs))
                now: set[str] = set()
                for i, ids in enumerate(lists):
                    self.per_pbx_seen[i] |= ids
                    now |= ids
                self.polls += 1
                self.peak_raw = max(self.peak_raw, len(now))
                self.peak = max(self.peak, len(prev & now))
                prev = now
                await asyncio.sleep(0.05)

    async def _channels(self, session: aiohttp.ClientSession, pbx: dict[str, str]) -> set[str]:
        async with session.get(f"{pbx['DIALERD_ARI_URL']}/ari/channels", headers=_auth(pbx)) as resp:
            assert resp.status == 200, f"GET /ari/channels answered {resp.status}"
            channels = await resp.json()
        # Through the PBX fence a call is three channels: the Local ;1 (id = the attempt's channel id), its
        # ;2 (id "<id>;2", the variables copied) and the carrier leg: count the ;1 only.
        return {ch["id"] for ch in channels
                if (ch.get("channelvars") or {}).get("DIALERD_CAMPAIGN") == self.campaign_id
                and (ch.get("channelvars") or {}).get("DIALERD_ID") == ch["id"]}

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def cdr_rows(pbx: dict[str, str], prefix: str) -> list[list[str]]:
    path = Path(pbx["DIALERD_PBX_CDR"])
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8", errors="replace") as fh:
        return [row for row in csv.reader(fh) if len(row) > CDR_UNIQUEID and row[CDR_UNIQUEID].startswith(prefix)]


def cdr_ids(pbx: dict[str, str], prefix: str) -> list[str]:
    """The channel ids of the calls that reached the carrier, once per call, from the PBX's CDR.

    Direct: the PJSIP channel's row (uniqueid = the channel id). Through the PBX fence: the row of the
    Local ;2 (uniqueid "<id>;2") whose Dial() created a carrier leg (dstchannel PJSIP/...); the ;1 row, and
    the ;2 row of an originate the fence refused (no dstchannel), are not calls to the carrier."""
    placed = []
    for row in cdr_rows(pbx, prefix):
        uid, channel, dst = row[CDR_UNIQUEID], row[CDR_CHANNEL], row[CDR_DSTCHANNEL]
        if uid.endswith(";2"):
            if dst.startswith("PJSIP/"):
                placed.append(uid.removesuffix(";2"))
        elif not channel.startswith("Local/"):
            placed.append(uid)
    return placed


def fence_refused(pbx: dict[str, str], channel_id: str) -> bool | None:
    """Whether the originate of ``channel_id`` reached the PBX and its fence refused it (a ;2 row with no
    carrier leg); None when the PBX never saw it."""
    rows = [r for r in cdr_rows(pbx, channel_id) if r[CDR_UNIQUEID] in (channel_id, f"{channel_id};2")]
    if not rows:
        return None
    return not any(r[CDR_UNIQUEID].endswith(";2") and r[CDR_DSTCHANNEL].startswith("PJSIP/") for r in rows)


async def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await asyncio.to_thread(predicate)
        if value:
            return value
        await asyncio.sleep(0.2)
    raise AssertionError(f"not within {timeout} s: {what}")


async def in_flight_of(pg_url: str, node: str) -> list[str]:
    engine = create_engine(pg_url)
    try:
        async with engine.connect() as conn:
            return list((await conn.execute(
                select(T_ATTEMPT.c.state).where(T_ATTEMPT.c.node_id == node,
                                                T_ATTEMPT.c.state.in_(("dialing", "originated", "answered")))
            )).scalars())
    finally:
        await engine.dispose()


async def unsent_of(pg_url: str, node: str) -> list[str]:
    """The channel ids of the attempts ``node`` committed and has not sent (still dialling)."""
    engine = create_engine(pg_url)
    try:
        async with engine.connect() as conn:
            return list((await conn.execute(
                select(T_ATTEMPT.c.channel_id).where(T_ATTEMPT.c.node_id == node, T_ATTEMPT.c.state == "dialing")
            )).scalars())
    finally:
        await engine.dispose()


async def test_three_daemons_on_two_pbxs_one_killed_one_stalled_the_campaign_completes_placed_once(
    pbxs: dict[str, dict[str, str]], pg_url: str, tmp_path: Path
) -> None:
    a_env = node_env(pg_url, pbxs["cluster-a"], "node-a")
    a_env["DIALERD_FAILPOINTS"] = f"after_attempt:{A_STALLS_AT}:stop"  # a freezes with an attempt unsent
    b_env = node_env(pg_url, pbxs["cluster-b"], "node-b")
    c_env = node_env(pg_url, pbxs["cluster-a"], "node-c")  # beside a, on the same PBX
    key = create_key(a_env, "acme", concurrent_max=BIG_CAP + 2, cpm=600)
    a = DaemonProc(a_env, tmp_path / "a.log")
    b = DaemonProc(b_env, tmp_path / "b.log")
    c = DaemonProc(c_env, tmp_path / "c.log")
    watch = ClusterWatch([pbxs["cluster-a"], pbxs["cluster-b"]])
    stream: asyncio.Task[list[SseEvent]] | None = None
    try:
        await asyncio.to_thread(a.start)
        await asyncio.to_thread(b.start)
        await asyncio.to_thread(c.start)
        session = aiohttp.ClientSession()
        body, ctype = multipart({"name": "two pbxs", "max_concurrent_calls": str(BIG_CAP),
                                 "retries_per_contact": "0"}, numbers([i % 30 for i in range(CONTACTS)]))
        status, created = await asyncio.to_thread(a.request, "POST", "/api/v1/campaigns", key, body,
                                                  {"Content-Type": ctype})
        assert status == 201, created
        cid = created["id"]
        watch.campaign_id = cid
        watch.start()
        stream = asyncio.create_task(read_sse(Api(c.base, session, {"acme": key}), cid, max_seconds=240))
        # Started on the other daemon: the API answers on every daemon with the same data.
        status, started = await asyncio.to_thread(b.request, "POST", f"/api/v1/campaigns/{cid}/start", key)
        assert status == 200, started

        def health_both() -> dict[str, Any] | None:
            health = b.wait_health()
            nodes = {n["node_id"]: n for n in health.get("cluster", {}).get("nodes", [])}
            # (a may be frozen at its failpoint already: its row then lapses)
            return health if {"node-b", "node-c"} <= {k for k, n in nodes.items() if n["alive"]} else None

        health = await wait_for(health_both, 10, "the daemons alive in /health")
        assert health["cluster"]["node_id"] == "node-b"

        # b is killed with calls up on its PBX; a takes it over and follows those calls to their end.
        await wait_for(lambda: len(watch.per_pbx_seen[1]) >= 8 and watch.polls and asyncio.run(
            in_flight_of(pg_url, "node-b")), 60, "b has dialled and has calls up")
        b.kill()
        killed_with = await in_flight_of(pg_url, "node-b")

        def taken() -> bool:
            nodes = {n["node_id"]: n for n in c.wait_health()["cluster"]["nodes"]}
            return nodes["node-b"]["state"] in ("taken", "gone") and not nodes["node-b"]["alive"]

        await wait_for(taken, 20, "a takes the killed b over")
        # Every call b had placed ends on b's PBX and is recorded by a taker; an attempt b had committed but
        # perhaps not sent is given back once b's PBX fence refuses b (docs/fencing.md).
        await wait_for(lambda: not asyncio.run(in_flight_of(pg_url, "node-b")), 30,
                       "a taker reconciled the calls b left up")
        print(f"\nb killed with {len(killed_with)} attempts in flight ({sorted(killed_with)}); a taker reconciled them")
        await asyncio.to_thread(b.start)  # b rejoins under a new epoch
        rejoined = {n["node_id"]: n for n in b.wait_health()["cluster"]["nodes"]}["node-b"]
        assert rejoined["state"] == "up" and rejoined["epoch"] >= 3, rejoined

        # a freezes at its attempt A_STALLS_AT, committed, unsent; it is taken over while frozen, its PBX
        # fenced against it, and that attempt given back; resumed, its late originate (if it sends it before
        # it notices) is refused by its PBX, and it exits fenced; its calls are followed to their ends.
        def a_stalled() -> bool:
            assert a.proc is not None
            return Path(f"/proc/{a.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"

        await wait_for(a_stalled, 120, f"a stops at its attempt {A_STALLS_AT}")
        frozen = await unsent_of(pg_url, "node-a")
        assert len(frozen) == 1, f"a froze holding one committed, unsent attempt: {frozen}"

        def a_taken() -> bool:
            nodes = {n["node_id"]: n for n in c.wait_health()["cluster"]["nodes"]}
            return nodes["node-a"]["state"] == "taken"

        await wait_for(a_taken, 30, "the frozen a is taken over")
        # The taker fenced a out on its PBX, so it gives a's committed, unsent attempt back (not dialled):
        # its contact is dialled again by a daemon alive.
        await wait_for(lambda: not asyncio.run(in_flight_of(pg_url, "node-a")), 30,
                       "a's calls reconciled and its unsent attempt given back")
        assert a.proc is not None
        a.proc.send_signal(signal.SIGCONT)  # a sends its late originate (refused by its PBX) or stops first
        assert await asyncio.to_thread(a.proc.wait, 30) == 1, "a, fenced, exits non-zero"

        def done() -> dict[str, Any] | None:
            status, view = c.request("GET", f"/api/v1/campaigns/{cid}", key)
            assert status == 200, view
            return view if view["status"] == "completed" else None

        view = await wait_for(done, 240, "the campaign completes")
        await watch.stop()
        assert view["progress"] == 1.0, view
        frames = await asyncio.wait_for(stream, 30)

        engine = create_engine(pg_url)
        try:
            async with engine.connect() as conn:
                attempts = (await conn.execute(
                    select(T_ATTEMPT.c.contact_id, T_ATTEMPT.c.channel_id, T_ATTEMPT.c.node_id, T_ATTEMPT.c.state)
                    .where(T_ATTEMPT.c.campaign_id == cid)
                )).all()
                statuses = (await conn.execute(
                    select(T_CONTACT.c.status).where(T_CONTACT.c.campaign_id == cid)
                )).scalars().all()
                event_ids = (await conn.execute(
                    select(T_EVENT.c.id).where(T_EVENT.c.campaign_id == cid).order_by(T_EVENT.c.id)
                )).scalars().all()
        finally:
            await engine.dispose()
        assert len(statuses) == CONTACTS and set(statuses) <= {"completed", "failed"}, statuses
        # Attempts given back unsent (the kill, or an originate the PBX never saw) reached no PBX.
        states = {r.channel_id: r.state for r in attempts}
        assert states[frozen[0]] == "not_dialled", "the frozen daemon's unsent attempt was given back"
        late = fence_refused(pbxs["cluster-a"], frozen[0])
        assert late in (True, None), "a's late originate never reached the carrier"
        attempts = [r for r in attempts if r.state != "not_dialled"]
        assert len(attempts) == CONTACTS and len({r.contact_id for r in attempts}) == CONTACTS, \
            "each contact was placed exactly once"
        by_node = {n: sum(1 for r in attempts if r.node_id == n) for n in ("node-a", "node-b", "node-c")}
        assert all(by_node.values()), f"every daemon dialled: {by_node}"
        # The third daemon's stream: every event of the campaign, whoever wrote it, in id order, ending with end.
        sse_ids: list[int] = []
        for f in frames:  # events (a snapshot, event-less, repeats the last id; so may the closing end)
            if f.id is not None and f.event is not None and (not sse_ids or int(f.id) != sse_ids[-1]):
                sse_ids.append(int(f.id))
        assert sse_ids == list(event_ids), (len(sse_ids), len(event_ids))
        assert frames[-1].event == "end"
        # Asterisk's witnesses: each attempt's channel in exactly one PBX's CDR, once; and on the PBX of the
        # daemon that placed it.
        prefix = f"dlr-{cid[4:16]}-"
        cdr_a, cdr_b = cdr_ids(pbxs["cluster-a"], prefix), cdr_ids(pbxs["cluster-b"], prefix)
        union = cdr_a + cdr_b
        assert sorted(union) == sorted(r.channel_id for r in attempts), "every attempt placed once, no other call"
        assert {r.channel_id for r in attempts if r.node_id in ("node-a", "node-c")} == set(cdr_a)
        assert {r.channel_id for r in attempts if r.node_id == "node-b"} == set(cdr_b)
        assert watch.polls > 50 and watch.peak > 1, (watch.polls, watch.peak)
        assert watch.peak <= BIG_CAP, \
            f"the campaign's cap held on the sum of both PBXs: peak {watch.peak} (raw {watch.peak_raw})"
        print(f"\nattempts by daemon {by_node}; peak calls on both PBXs {watch.peak} (raw {watch.peak_raw}) "
              f"of cap {BIG_CAP}; {watch.polls} polls; {len(sse_ids)} events on c's stream; a's late originate "
              f"{'refused by its PBX fence' if late else 'never sent'}")
    finally:
        await watch.stop()
        if stream is not None and not stream.done():
            stream.cancel()
        await session.close()
        if a.proc is not None and a.alive():
            a.proc.send_signal(signal.SIGCONT)
        for d in (a, b, c):
            if d.alive():
                await asyncio.to_thread(d.terminate, 30)


STALL_CONTACTS = 30


@pytest.mark.parametrize("fence", [True, False], ids=["fence", "no-fence"])
async def test_a_daemon_stalled_between_commit_and_originate_is_taken_over_and_dials_nothing_twice(
    pbxs: dict[str, dict[str, str]], pg_url: str, tmp_path: Path, fence: bool
) -> None:
    """b stops itself (SIGSTOP) at its 4th attempt, committed but not yet sent; a takes it over while it is
    frozen; then b is resumed. b's next heartbeat or claim finds its epoch moved on and it exits (fenced);
    a finishes the campaign; each contact is placed once.

    With the PBX fence (the default): a fences b out on b's PBX, then gives the unsent attempt back, and
    dials its contact itself; b's late originate, if b sends it before it notices, is refused by its own
    PBX (no carrier leg). Without it (``[cluster] fence = false``): the attempt is never given back (a taker
    does not decide "never placed" for a sender that may be alive), so the contact is placed by b's late
    send, which a follows to its end on b's PBX."""
    a_env = node_env(pg_url, pbxs["cluster-a"], "node-a")
    b_env = node_env(pg_url, pbxs["cluster-b"], "node-b")
    b_env["DIALERD_FAILPOINTS"] = "after_attempt:4:stop"
    if not fence:
        a_env["DIALERD_CLUSTER_FENCE"] = b_env["DIALERD_CLUSTER_FENCE"] = "false"
    key = create_key(a_env, "acme", concurrent_max=CAP + 2, cpm=600)
    a = DaemonProc(a_env, tmp_path / "a.log")
    b = DaemonProc(b_env, tmp_path / "b.log")
    watch = ClusterWatch([pbxs["cluster-a"], pbxs["cluster-b"]])
    try:
        await asyncio.to_thread(a.start)
        await asyncio.to_thread(b.start)
        body, ctype = multipart({"name": "stall", "max_concurrent_calls": str(CAP), "retries_per_contact": "0"},
                                numbers([i % 30 for i in range(STALL_CONTACTS)]))
        status, created = await asyncio.to_thread(b.request, "POST", "/api/v1/campaigns", key, body,
                                                  {"Content-Type": ctype})
        assert status == 201, created
        cid = created["id"]
        watch.campaign_id = cid
        watch.start()
        status, _ = await asyncio.to_thread(b.request, "POST", f"/api/v1/campaigns/{cid}/start", key)
        assert status == 200

        def stalled() -> bool:
            assert b.proc is not None
            state = Path(f"/proc/{b.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            return state == "T"

        await wait_for(stalled, 60, "b stops at its 4th committed attempt")
        frozen = await unsent_of(pg_url, "node-b")
        assert len(frozen) == 1, f"b froze holding one committed, unsent attempt: {frozen}"

        def taken() -> bool:
            nodes = {n["node_id"]: n for n in a.wait_health()["cluster"]["nodes"]}
            return nodes["node-b"]["state"] in ("taken", "gone")

        await wait_for(taken, 20, "a takes the frozen b over")
        if fence:  # b's PBX refuses b now: the unsent attempt is given back, its contact dialled again
            await wait_for(lambda: not asyncio.run(in_flight_of(pg_url, "node-b")), 30,
                           "b's calls reconciled and its unsent attempt given back")
        else:  # the committed, unsent attempt stays in flight (its sender may be alive)
            await wait_for(lambda: asyncio.run(in_flight_of(pg_url, "node-b")) == ["dialing"], 30,
                           "only b's unsent attempt is left in flight")
        assert b.proc is not None
        b.proc.send_signal(signal.SIGCONT)  # b wakes holding its committed attempt
        code = await asyncio.to_thread(b.proc.wait, 30)
        assert code == 1, f"b, fenced, exits non-zero: {code}"
        assert '"action": "fenced"' in (tmp_path / "b.log").read_text()

        def done() -> dict[str, Any] | None:
            status, view = a.request("GET", f"/api/v1/campaigns/{cid}", key)
            assert status == 200, view
            return view if view["status"] == "completed" else None

        await wait_for(done, 240, "the campaign completes")
        await watch.stop()
        engine = create_engine(pg_url)
        try:
            async with engine.connect() as conn:
                every = (await conn.execute(
                    select(T_ATTEMPT.c.contact_id, T_ATTEMPT.c.channel_id, T_ATTEMPT.c.node_id, T_ATTEMPT.c.state)
                    .where(T_ATTEMPT.c.campaign_id == cid)
                )).all()
        finally:
            await engine.dispose()
        late = fence_refused(pbxs["cluster-b"], frozen[0])
        if fence:
            assert {r.channel_id: r.state for r in every}[frozen[0]] == "not_dialled"
            assert late in (True, None), "b's late originate never reached the carrier"
        attempts = [r for r in every if r.state != "not_dialled"]
        assert len(attempts) == STALL_CONTACTS and len({r.contact_id for r in attempts}) == STALL_CONTACTS, \
            "each contact placed exactly once"
        prefix = f"dlr-{cid[4:16]}-"
        cdr_a, cdr_b = cdr_ids(pbxs["cluster-a"], prefix), cdr_ids(pbxs["cluster-b"], prefix)
        assert sorted(cdr_a + cdr_b) == sorted(r.channel_id for r in attempts), "no call placed twice or unrecorded"
        assert watch.peak <= CAP, f"peak {watch.peak} (raw {watch.peak_raw}) of cap {CAP}"
        outcome = ("refused by b's PBX fence" if late else "never sent") if fence else "placed by b, followed by a"
        print(f"\nstalled with {frozen} ({'fence' if fence else 'no fence'}): late originate {outcome}; "
              f"b placed {len(cdr_b)}, a {len(cdr_a)}; peak {watch.peak} of {CAP}")
    finally:
        await watch.stop()
        if b.proc is not None and b.alive():
            b.proc.send_signal(signal.SIGCONT)
        for d in (a, b):
            if d.alive():
                await asyncio.to_thread(d.terminate, 30)


async def test_a_pbx_dies_its_daemon_stops_claiming_and_says_why_the_other_carries_on(
    pbxs: dict[str, dict[str, str]], pg_url: str, tmp_path: Path
) -> None:
    """PBX b stops mid-run: daemon b claims nothing more and its /health (and its row, seen from a) says
    pbx_down; a goes on dialling alone; PBX b comes back on the same ports, b reconnects and reconciles the
    calls it had there (lost with the PBX: recorded, never redialled); the campaign completes."""
    a_env = node_env(pg_url, pbxs["cluster-a"], "node-a")
    b_env = node_env(pg_url, pbxs["cluster-b"], "node-b")
    key = create_key(a_env, "acme", concurrent_max=CAP + 2, cpm=600)
    a = DaemonProc(a_env, tmp_path / "a.log")
    b = DaemonProc(b_env, tmp_path / "b.log")
    try:
        await asyncio.to_thread(a.start)
        await asyncio.to_thread(b.start)
        body, ctype = multipart({"name": "pbx dies", "max_concurrent_calls": str(CAP), "retries_per_contact": "0"},
                                numbers([i % 30 for i in range(STALL_CONTACTS)]))
        status, created = await asyncio.to_thread(a.request, "POST", "/api/v1/campaigns", key, body,
                                                  {"Content-Type": ctype})
        assert status == 201, created
        cid = created["id"]
        status, _ = await asyncio.to_thread(a.request, "POST", f"/api/v1/campaigns/{cid}/start", key)
        assert status == 200
        await wait_for(lambda: len(asyncio.run(in_flight_of(pg_url, "node-b"))) >= 1, 60, "b has calls up")
        down = await asyncio.to_thread(_lp, "down", "--name", "cluster-b", timeout=60)
        assert down.returncode == 0, down.stderr

        def b_says_why() -> bool:
            health = b.wait_health(pbx=False)
            nodes = {n["node_id"]: n for n in a.wait_health()["cluster"]["nodes"]}
            return (health["pbx"]["dialling_held"] == "pbx_down" and health["status"] == "degraded"
                    and nodes["node-b"]["held_reason"] == "pbx_down" and nodes["node-b"]["alive"])

        await wait_for(b_says_why, 30, "b's /health and its row say pbx_down")
        placed_by_b = await _placed(pg_url, cid, "node-b")

        # a keeps dialling while b claims nothing.
        a_before = await _placed(pg_url, cid, "node-a")
        await wait_for(lambda: asyncio.run(_placed(pg_url, cid, "node-a")) >= a_before + 3, 60, "a dials on")
        assert await _placed(pg_url, cid, "node-b") == placed_by_b, "b claimed nothing without its PBX"
        up = await asyncio.to_thread(_lp, "up", "--name", "cluster-b", "--credentials-of", NAMES[0])
        assert up.returncode == 0, up.stderr

        def done() -> dict[str, Any] | None:
            status, view = a.request("GET", f"/api/v1/campaigns/{cid}", key)
            assert status == 200, view
            return view if view["status"] == "completed" else None

        await wait_for(done, 240, "the campaign completes")
        assert await in_flight_of(pg_url, "node-b") == [], "b reconciled its calls once its PBX was back"
        engine = create_engine(pg_url)
        try:
            async with engine.connect() as conn:
                placed = [r for r in (await conn.execute(
                    select(T_ATTEMPT.c.contact_id, T_ATTEMPT.c.state).where(T_ATTEMPT.c.campaign_id == cid)
                )).all() if r.state != "not_dialled"]
        finally:
            await engine.dispose()
        assert len(placed) == len({r.contact_id for r in placed}) == STALL_CONTACTS, "each contact placed once"
        print(f"\nb placed {placed_by_b} before its PBX died; a carried the rest")
    finally:
        for d in (a, b):
            if d.alive():
                await asyncio.to_thread(d.terminate, 30)
        await asyncio.to_thread(_lp, "up", "--name", "cluster-b", "--credentials-of", NAMES[0])


async def _placed(pg_url: str, cid: str, node: str) -> int:
    engine = create_engine(pg_url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(
                select(T_ATTEMPT.c.state).where(T_ATTEMPT.c.campaign_id == cid, T_ATTEMPT.c.node_id == node)
            )).scalars().all()
    finally:
        await engine.dispose()
    return sum(1 for s in rows if s != "not_dialled")
