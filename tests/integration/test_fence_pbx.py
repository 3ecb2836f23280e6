"""The PBX behaviour the stalled-daemon fence relies on (issue 13 item 4; docs/fencing.md), on the real Asterisk.

- Kicking the ARI app is no fence: an originate into an app nobody holds, also right after a kick, is
  accepted and reaches the far end.
- ``[dialerd-fence]``: an originate whose epoch equals ``DIALERD_FENCE_<key>`` ends exactly like a direct
  PJSIP one (cause, state, hangup record, StasisStart); one with another epoch, or while the global is unset,
  is refused before any carrier leg exists (cause 52, ``DIALERD_FENCED``, no far-end CDR row).
- The ordering: after :func:`fence_out` returns, an attempt that is neither in ``GET /channels/{id}`` nor
  has a hangup record never reaches the carrier, with originates racing the fence; and a process
  SIGSTOPped between its commit and its POST is refused when it is continued after the fence.

The far end's CDR row (``dcontext`` ``carrier-in``) is the witness of an INVITE; each call has its own
caller number, which the far end records as ``src``.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import itertools
import json
import os
import random
import secrets
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from dialerd.domain.causes import parse_tech_cause
from dialerd.pbx.ari_client import AriClient
from dialerd.pbx.fence import (
    FENCED_CAUSE,
    arm,
    fence_out,
    fence_variable,
    fenced_epoch,
    fenced_target,
    read_fence,
    record_is_fenced,
)
from dialerd.pbx.records import HANGUP_HANDLER, HANGUP_HANDLER_VAR, ID_VAR, global_name
from tests.pbx_env import REPO, local_pbx_env

pytestmark = [pytest.mark.pbx, pytest.mark.timeout(180)]

CDR_SRC, CDR_DST, CDR_DCONTEXT = 1, 2, 3
BUSY, CONGESTION, RINGS, ANSWERS = "+14155550141", "+14155550162", "+14155550152", "+14155550106"
# Caller numbers never repeat across runs (the CDR file keeps every run's rows): a random 13-digit base.
_caller = itertools.count(random.randrange(10**11, 9 * 10**12))


class Lab:
    """Raw ARI on the local PBX: an app with its websocket, originates, per-channel events, CDR look-ups."""

    def __init__(self, env: dict[str, str], session: aiohttp.ClientSession, client: AriClient) -> None:
        self.env, self.session, self.client = env, session, client
        self.base = env["DIALERD_ARI_URL"] + "/ari"
        self.tag = secrets.token_hex(3)
        self.app = f"dialerd-fence-test-{self.tag}"
        self.events: dict[str, list[dict[str, Any]]] = {}
        self._ended: dict[str, asyncio.Event] = {}
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ids = itertools.count()

    async def connect(self) -> None:
        self._ws = await self.session.ws_connect(self.base + "/events", params={"app": self.app, "subscribeAll": "false"})
        self._reader = asyncio.create_task(self._read(self._ws))

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            event = json.loads(msg.data)
            cid = str((event.get("channel") or {}).get("id") or "")
            self.events.setdefault(cid, []).append(event)
            if event.get("type") == "ChannelDestroyed":
                self._ended.setdefault(cid, asyncio.Event()).set()

    def new_id(self) -> str:
        return f"fence-{self.tag}-{next(self._ids):05d}"

    def new_call(self) -> tuple[str, str]:
        """A channel id and a caller number of its own (the far end's CDR ``src``)."""
        return self.new_id(), f"+1{next(_caller):013d}"

    async def originate(self, number: str, *, key: str | None = None, epoch: int | None = None,
                        app: str | None = None, timeout: int = 30,
                        call: tuple[str, str] | None = None) -> tuple[str, str]:
        """Direct PJSIP when ``key`` is None, else through [dialerd-fence]; returns (channel id, caller)."""
        cid, caller = call or self.new_call()
        self._ended.setdefault(cid, asyncio.Event())
        dial = f"PJSIP/{number}@carrier"
        variables = {ID_VAR: cid, HANGUP_HANDLER_VAR: HANGUP_HANDLER}
        params: dict[str, str | int] = {"endpoint": dial, "app": app or self.app, "timeout": timeout,
                                        "callerId": caller}
        if key is not None:
            target = fenced_target(dial, number, key, 0 if epoch is None else epoch)
            if epoch is None:
                del target.variables["DIALERD_EPOCH"]
            variables.update(target.variables)
            params.update(endpoint=target.endpoint, formats=target.formats)
        await self.client.request("POST", f"/channels/{cid}", params=params, body={"variables": variables})
        return cid, caller

    async def ended(self, cid: str, timeout: float = 45.0) -> dict[str, Any]:
        await asyncio.wait_for(self._ended.setdefault(cid, asyncio.Event()).wait(), timeout)
        return next(e for e in self.events[cid] if e["type"] == "ChannelDestroyed")

    def saw(self, cid: str, kind: str) -> bool:
        return any(e["type"] == kind for e in self.events.get(cid, []))

    async def record(self, cid: str) -> str:
        reply = await self.client.request("GET", "/asterisk/variable", params={"variable": global_name(cid)})
        return str(reply.get("value") or "")

    async def lookup(self, cid: str) -> str:
        """What a reconciling daemon concludes: live, record, or absent (never placed)."""
        async with self.session.get(f"{self.base}/channels/{cid}") as resp:
            if resp.status == 200:
                return "live"
        return "record" if await self.record(cid) else "absent"

    def far_end_rows(self, caller: str) -> int:
        path = Path(self.env["DIALERD_PBX_CDR"])
        if not path.exists():
            return 0
        with path.open(newline="") as fh:
            return sum(1 for r in csv.reader(fh) if len(r) > CDR_DCONTEXT and r[CDR_DCONTEXT] == "carrier-in"
                       and r[CDR_SRC] == caller)

    async def wait_far_end(self, caller: str, timeout: float = 10.0) -> int:
        """The far end's CDR rows for ``caller``, once at least one is written (rows come at hang-up)."""
        async with asyncio.timeout(timeout):
            while not (n := self.far_end_rows(caller)):  # noqa: ASYNC110 - a file, no event
                await asyncio.sleep(0.05)
        return n


@pytest.fixture
async def lab() -> AsyncIterator[Lab]:
    env = local_pbx_env()
    token = base64.b64encode(f"{env['DIALERD_ARI_USER']}:{env['DIALERD_ARI_PASSWORD']}".encode()).decode()
    client = AriClient(env["DIALERD_ARI_URL"], env["DIALERD_ARI_USER"], env["DIALERD_ARI_PASSWORD"], "unused")
    await client.open()
    async with aiohttp.ClientSession(headers={"Authorization": f"Basic {token}"}) as session:
        lab = Lab(env, session, client)
        await lab.connect()
        try:
            yield lab
        finally:
            await lab.close()
            await client.close()


async def _app_status(lab: Lab, app: str) -> int:
    async with lab.session.get(f"{lab.base}/applications/{app}") as resp:
        return resp.status


async def test_kicking_the_ari_app_does_not_stop_an_originate(lab: Lab) -> None:
    """Mechanism A refuted: Asterisk dials into an app that no websocket holds, also right after a kick."""
    ghost = f"dialerd-fence-ghost-{lab.tag}"
    assert await _app_status(lab, ghost) == 404
    cid, caller = await lab.originate(RINGS, app=ghost, timeout=2)  # HTTP 200 (request() raises otherwise)
    assert await lab.wait_far_end(caller) == 1  # the INVITE reached the far end

    kicked = f"dialerd-fence-kicked-{lab.tag}"
    first = await lab.session.ws_connect(lab.base + "/events", params={"app": kicked, "subscribeAll": "false"})
    second = await lab.session.ws_connect(lab.base + "/events", params={"app": kicked, "subscribeAll": "false"})
    replaced = json.loads((await asyncio.wait_for(first.receive(), 5)).data)
    assert replaced["type"] == "ApplicationReplaced"
    await second.close()
    async with asyncio.timeout(5):
        while await _app_status(lab, kicked) != 404:  # noqa: ASYNC110 - REST state, no event
            await asyncio.sleep(0.05)
    assert not first.closed  # the replaced websocket stays open, silent
    cid, caller = await lab.originate(RINGS, app=kicked, timeout=2)
    assert await lab.wait_far_end(caller) == 1  # the stale originate after the kick still dialled
    await first.close()


async def test_fenced_originate_ends_like_a_direct_one(lab: Lab) -> None:
    key = f"t{lab.tag}a"
    await arm(lab.client, key, 3)
    rows = [(BUSY, 30), (CONGESTION, 30), (RINGS, 3), (ANSWERS, 30)]
    calls = [(number, await lab.originate(number, timeout=timeout), await lab.originate(
        number, key=key, epoch=3, timeout=timeout)) for number, timeout in rows]
    for number, (direct, d_caller), (fenced, f_caller) in calls:
        d_end, f_end = await lab.ended(direct), await lab.ended(fenced)
        assert (f_end["cause"], f_end["channel"]["state"]) == (d_end["cause"], d_end["channel"]["state"]), number
        assert f_end["channel"]["name"].startswith("Local/") and fenced_epoch(f_end["channel"]) is None
        assert lab.saw(fenced, "StasisStart") == lab.saw(direct, "StasisStart") == (number == ANSWERS)
        d_rec, f_rec = (await lab.record(direct)).split("|"), (await lab.record(fenced)).split("|")
        assert (f_rec[0], f_rec[2]) == (d_rec[0], d_rec[2]), number  # cause, state
        assert parse_tech_cause(f_rec[1]) == parse_tech_cause(d_rec[1]), (number, f_rec, d_rec)
        if number != ANSWERS and number != RINGS:  # the carrier leg's SIP response, relayed by the dialplan
            assert f_end["channel"]["channelvars"]["DIALERD_LEG_TECH"] == d_rec[1]
        assert await lab.wait_far_end(d_caller) == 1 and await lab.wait_far_end(f_caller) == 1, number


async def test_fence_refuses_other_epochs_an_unset_global_and_after_fence_out(lab: Lab) -> None:
    key = f"t{lab.tag}b"
    refused = []
    await arm(lab.client, key, 5)
    assert await read_fence(lab.client, key) == "5"
    refused.append((await lab.originate(BUSY, key=key, epoch=4), "4"))  # an older epoch
    refused.append((await lab.originate(BUSY, key=key, epoch=None), "none"))  # no epoch at all
    await fence_out(lab.client, key, 6)
    assert await read_fence(lab.client, key) == "fenced-6"
    refused.append((await lab.originate(BUSY, key=key, epoch=5), "5"))  # the stale originate after the fence
    await lab.client.request("POST", "/asterisk/variable", params={"variable": fence_variable(key)})  # unset
    assert await read_fence(lab.client, key) is None  # as after an Asterisk restart: fail closed
    refused.append((await lab.originate(BUSY, key=key, epoch=5), "5"))
    await arm(lab.client, key, 7)  # a fresh registration dials again
    (allowed, allowed_caller) = await lab.originate(BUSY, key=key, epoch=7)

    assert (await lab.ended(allowed))["cause"] == 17
    assert await lab.wait_far_end(allowed_caller) == 1  # written after every refused call's would have been
    for (cid, caller), epoch in refused:
        end = await lab.ended(cid)
        assert (end["cause"], end["channel"]["state"], fenced_epoch(end["channel"])) == (FENCED_CAUSE, "Down", epoch)
        assert not lab.saw(cid, "StasisStart")
        record = await lab.record(cid)
        assert record_is_fenced(record) and record.startswith(f"{FENCED_CAUSE}|FENCED|Down|"), record
        assert lab.far_end_rows(caller) == 0  # no INVITE


async def test_after_fence_out_an_attempt_found_absent_is_never_dialled(lab: Lab) -> None:
    """Originates race the fence; every attempt a reconciler finds absent after fence_out ends refused."""
    outcomes: dict[tuple[str, str], int] = {}
    for round_ in range(3):
        key = f"t{lab.tag}r{round_}"
        await arm(lab.client, key, 9)
        issued: list[tuple[str, str]] = []
        stop = asyncio.Event()

        async def originator(key: str = key, issued: list[tuple[str, str]] = issued,
                             stop: asyncio.Event = stop) -> None:
            while not stop.is_set():
                call = lab.new_call()
                issued.append(call)  # committed before it is sent, as dialerd does: a taker sees it
                await lab.originate(random.choice((BUSY, RINGS)), key=key, epoch=9, timeout=1, call=call)

        workers = [asyncio.create_task(originator()) for _ in range(6)]
        await asyncio.sleep(random.uniform(0.2, 0.5))
        await fence_out(lab.client, key, 10)
        # What a taker sees: every attempt committed so far (some POSTs still on their way), read after
        # fence_out as docs/fencing.md requires.
        seen = dict(zip([c for c, _ in issued], await asyncio.gather(*(lab.lookup(c) for c, _ in issued)),
                        strict=True))
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.gather(*workers)
        for cid, _caller in issued:
            await lab.ended(cid)
        # The witness of a dial is the far end's CDR row, not the record: a refused call whose ;1 ends
        # first (its 1 s timeout on a loaded box) records 19|Down without FENCED. A later call is the
        # barrier: once its row is written, the rows of every earlier call are too.
        await arm(lab.client, key, 11)
        _, barrier = await lab.originate(BUSY, key=key, epoch=11)
        await lab.wait_far_end(barrier)
        for cid, caller in issued:
            verdict = seen.get(cid, "later")
            outcome = "dialled" if lab.far_end_rows(caller) else "refused"
            outcomes[verdict, outcome] = outcomes.get((verdict, outcome), 0) + 1
            assert not (verdict in ("absent", "later") and outcome == "dialled"), (cid, verdict, outcomes)
    assert outcomes.get(("live", "dialled"), 0) + outcomes.get(("record", "dialled"), 0) > 0, outcomes
    assert outcomes.get(("later", "refused"), 0) > 0, outcomes


# A daemon in miniature: "commits" the attempt (prints its id), stops itself (SIGSTOP) before the POST, and
# sends the POST once continued; prints the HTTP status.
_STALLED = """
import asyncio, json, os, signal, sys
from dialerd.pbx.ari_client import AriClient
from dialerd.pbx.fence import fenced_target
url, user, password, app, cid, caller, number, key, epoch = sys.argv[1:]
async def main():
    client = AriClient(url, user, password, app)
    await client.open()
    target = fenced_target(f"PJSIP/{number}@carrier", number, key, int(epoch))
    variables = {"DIALERD_ID": cid, "CHANNEL(hangup_handler_push)": "dialerd-hh,s,1", **target.variables}
    params = {"endpoint": target.endpoint, "formats": target.formats, "app": app, "callerId": caller}
    print(cid, flush=True)
    os.kill(os.getpid(), signal.SIGSTOP)  # stalled between the commit and the originate
    try:
        await client.request("POST", f"/channels/{cid}", params=params, body={"variables": variables})
        print("sent", flush=True)
    finally:
        await client.close()
asyncio.run(main())
"""


def _stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0] == "T"


async def test_a_daemon_stopped_between_commit_and_originate_is_refused_when_it_wakes(lab: Lab) -> None:
    key = f"t{lab.tag}s"
    await arm(lab.client, key, 11)
    cid, caller = lab.new_call()
    env = lab.env
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _STALLED, env["DIALERD_ARI_URL"], env["DIALERD_ARI_USER"], env["DIALERD_ARI_PASSWORD"],
        lab.app, cid, caller, BUSY, key, "11", stdout=asyncio.subprocess.PIPE, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout is not None
    try:
        assert (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip() == cid  # committed
        async with asyncio.timeout(10):
            while not _stopped(proc.pid):  # noqa: ASYNC110 - a process state, no event
                await asyncio.sleep(0.02)
        # The taker: bump (here: just a new epoch), fence, reconcile.
        await fence_out(lab.client, key, 12)
        assert await lab.lookup(cid) == "absent"  # so the taker gives the attempt back
        os.kill(proc.pid, signal.SIGCONT)
        assert (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip() == "sent"  # HTTP 200
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    end = await lab.ended(cid)
    assert (end["cause"], fenced_epoch(end["channel"])) == (FENCED_CAUSE, "11")
    assert record_is_fenced(await lab.record(cid))
    await arm(lab.client, key, 13)  # the node's next incarnation dials again
    _, barrier = await lab.originate(BUSY, key=key, epoch=13)
    assert await lab.wait_far_end(barrier) == 1  # written after the late originate's would have been
    assert lab.far_end_rows(caller) == 0  # the late originate sent no INVITE
