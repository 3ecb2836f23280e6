"""The simulated carrier's +1 NXX 555-02XX ranges (issues 11 and 12) and the dialer-side contexts they exercise.

One number of each range is dialled through raw ARI, all at once (the 20 s voicemail bounds the run):
- 00-09 routed to the demo destination [dialerd-demo]: the far end presses 9, so the dialerd-originated
  channel carries DIALERD_OPT_OUT=1 in the ChannelDestroyed event (channelvars), which is where dialerd
  takes every call's outcome from;
- 10-49, 50-89 and 90-99 routed through [dialerd-amd]: AMDSTATUS/AMDCAUSE as asterisk/README.md measured,
  the verdict both in the second StasisStart (DIALERD_AMD_APP set) and in ChannelDestroyed's channelvars;
  the 90-99 call takes the default exit into [dialerd-demo] instead of returning to Stasis.
Durations come from Asterisk's own event timestamps (StasisStart = answer, ChannelDestroyed = end).
The AMI path (Originate straight into a context) is checked too: its Hangup event carries the same
variables as ChanVariable headers (manager.conf channelvars).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
import pytest
from panoramisk import Manager
from panoramisk.message import Message

from tests.pbx_env import local_pbx_env

pytestmark = pytest.mark.pbx

RUN_DEADLINE_S = 40.0  # the longest call lasts ~20.5 s
AMI_DEADLINE_S = 20.0  # the AMI calls last ~3.5 and ~8.3 s


@dataclass(frozen=True)
class Row:
    name: str
    number: str
    context: str  # where the answered call is continued
    talk_s: tuple[float, float]  # answer -> ChannelDestroyed, from Asterisk's timestamps
    amd_status: str = ""  # expected AMDSTATUS ("" = AMD does not run)
    amd_cause_prefix: str = ""
    amd_app: bool = False  # set DIALERD_AMD_APP: [dialerd-amd] returns the verdict into our app


ROWS = [
    Row("opt-out", "+14155550205", "dialerd-demo", (2.5, 4.5)),
    Row("person", "+14155550217", "dialerd-amd", (7.5, 9.5), "HUMAN", "HUMAN-", amd_app=True),
    Row("voicemail", "+14155550263", "dialerd-amd", (19.5, 21.5), "MACHINE", "LONGGREETING-", amd_app=True),
    Row("silence", "+14155550294", "dialerd-amd", (7.5, 9.5), "NOTSURE", "TOOLONG-"),
]


@dataclass
class Call:
    row: Row
    channel_id: str
    http_status: int = 0
    answered_at: datetime | None = None
    amd_args: list[str] | None = None  # args of the second StasisStart: ["amd", status, cause]
    opt_out_at: datetime | None = None  # ChannelVarset DIALERD_OPT_OUT=1
    destroyed: dict[str, Any] | None = None
    hh_record: str = ""  # what [dialerd-hh] wrote to DIALERD_RES_<id>
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def talk_s(self) -> float:
        assert self.answered_at is not None and self.destroyed is not None
        return (_ts(self.destroyed) - self.answered_at).total_seconds()


def _ts(event: dict[str, Any]) -> datetime:
    """Asterisk's timestamp of an ARI event, e.g. 2026-12-02T16:23:06.413+0000."""
    return datetime.strptime(event["timestamp"], "%Y-%m-%dT%H:%M:%S.%f%z")


def _auth_headers(env: dict[str, str]) -> dict[str, str]:
    token = base64.b64encode(f"{env['DIALERD_ARI_USER']}:{env['DIALERD_ARI_PASSWORD']}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def _test_app(env: dict[str, str]) -> str:
    # One websocket per ARI app name: never share one with a running dialerd or another session.
    return f"{env['DIALERD_ARI_APP']}-carrier-test-{os.getpid()}"


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
            params = {"context": call.row.context, "extension": "s", "priority": "1"}
            async with session.post(f"{base}/ari/channels/{call.channel_id}/continue", params=params) as resp:
                assert resp.status == 204, await resp.text()
        elif event["type"] == "StasisStart":
            call.amd_args = list(event["args"])  # back from [dialerd-amd]; stay here until the far end hangs up
        elif (event["type"] == "ChannelVarset" and event.get("variable") == "DIALERD_OPT_OUT"
              and event.get("value") == "1"):
            call.opt_out_at = call.opt_out_at or _ts(event)
        elif event["type"] == "ChannelDestroyed":
            call.destroyed = event
            call.done.set()


async def _originate(session: aiohttp.ClientSession, base: str, app: str, call: Call) -> None:
    variables = {"CHANNEL(hangup_handler_push)": "dialerd-hh,s,1", "DIALERD_ID": call.channel_id}
    if call.row.amd_app:
        variables["DIALERD_AMD_APP"] = app
    body = {"endpoint": f"PJSIP/{call.row.number}@carrier", "app": app, "channelId": call.channel_id,
            "timeout": 10, "variables": variables}
    async with session.post(f"{base}/ari/channels", json=body) as resp:
        call.http_status = resp.status


async def _dial_all(env: dict[str, str]) -> dict[str, Call]:
    base, app = env["DIALERD_ARI_URL"], _test_app(env)
    tag = uuid.uuid4().hex[:8]
    calls = {c.channel_id: c for c in (Call(row, f"carrier-{tag}-{row.name}") for row in ROWS)}
    async with aiohttp.ClientSession(headers=_auth_headers(env)) as session:
        # Subscribe before originating: an answered call into an app without a websocket is hung up.
        ws = await session.ws_connect(f"{base}/ari/events", params={"app": app})
        reader = asyncio.create_task(_read_events(ws, session, base, calls), name="ari-events")
        try:
            await asyncio.gather(*(_originate(session, base, app, c) for c in calls.values()))
            async with asyncio.timeout(RUN_DEADLINE_S):
                await asyncio.gather(*(c.done.wait() for c in calls.values() if c.http_status == 200))
        finally:
            reader.cancel()
            await ws.close()
            for cid, call in calls.items():
                params = {"variable": f"DIALERD_RES_{cid}"}
                async with session.get(f"{base}/ari/asterisk/variable", params=params) as resp:
                    call.hh_record = (await resp.json()).get("value", "") if resp.status == 200 else ""
                async with session.post(f"{base}/ari/asterisk/variable", params=params):
                    pass  # unset: globals live until Asterisk restarts
    return calls


@pytest.fixture(scope="module")
def calls() -> dict[str, Call]:
    return asyncio.run(_dial_all(local_pbx_env()))


def _call(calls: dict[str, Call], name: str) -> Call:
    return next(c for c in calls.values() if c.row.name == name)


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_each_range_is_answered_and_ends_when_the_far_end_hangs_up(calls: dict[str, Call], row: Row) -> None:
    call = _call(calls, row.name)
    assert call.http_status == 200
    assert call.destroyed is not None, f"no ChannelDestroyed for {row.name}"
    assert call.destroyed["cause"] == 16, call.destroyed
    assert call.destroyed["channel"]["state"] == "Up"
    assert call.answered_at is not None, "every 02XX number answers"
    assert row.talk_s[0] <= call.talk_s <= row.talk_s[1], f"{row.name} lasted {call.talk_s:.2f} s"
    cause, tech, state = call.hh_record.split("|")[:3]
    assert (cause, tech, state) == ("16", "SIP 200 OK", "Up"), call.hh_record


def test_pressing_9_in_the_demo_destination_marks_the_channel_opted_out(calls: dict[str, Call]) -> None:
    call = _call(calls, "opt-out")
    assert call.destroyed is not None and call.answered_at is not None
    # What dialerd reads at hangup: the channel in ChannelDestroyed (ari.conf channelvars).
    assert call.destroyed["channel"]["channelvars"]["DIALERD_OPT_OUT"] == "1"
    assert call.opt_out_at is not None, "ChannelVarset DIALERD_OPT_OUT=1 on the dialerd-originated channel"
    # The far end sends the digit 1 s after answering (+ up to 0.5 s that Answer() waits for media).
    assert 0.8 <= (call.opt_out_at - call.answered_at).total_seconds() <= 2.0


@pytest.mark.parametrize("row", [r for r in ROWS if not r.amd_status], ids=lambda r: r.name)
def test_calls_that_skip_amd_carry_no_verdict(calls: dict[str, Call], row: Row) -> None:
    call = _call(calls, row.name)
    assert call.destroyed is not None
    assert call.destroyed["channel"]["channelvars"]["AMDSTATUS"] == ""


@pytest.mark.parametrize("row", [r for r in ROWS if r.amd_status], ids=lambda r: r.name)
def test_amd_verdict_per_range(calls: dict[str, Call], row: Row) -> None:
    call = _call(calls, row.name)
    assert call.destroyed is not None
    channelvars = call.destroyed["channel"]["channelvars"]
    assert channelvars["AMDSTATUS"] == row.amd_status, channelvars
    assert channelvars["AMDCAUSE"].startswith(row.amd_cause_prefix), channelvars
    assert channelvars["DIALERD_OPT_OUT"] == ""
    if row.amd_app:
        assert call.amd_args == ["amd", row.amd_status, channelvars["AMDCAUSE"]]
    else:
        assert call.amd_args is None, "without DIALERD_AMD_APP the call goes on to [dialerd-demo]"


async def _ami_hangups(env: dict[str, str], originates: dict[str, tuple[str, str]]) -> dict[str, dict[str, str]]:
    """AMI Originate each channel id -> (number, context); return each one's Hangup ChanVariables."""
    manager = Manager(host=env["DIALERD_AMI_HOST"], port=int(env["DIALERD_AMI_PORT"]),
                      username=env["DIALERD_AMI_USER"], secret=env["DIALERD_AMI_SECRET"], ping_delay=0)
    await manager.connect()
    loop = asyncio.get_running_loop()
    hangups: dict[str, asyncio.Future[Message]] = {cid: loop.create_future() for cid in originates}

    def on_hangup(_: Manager, msg: Message) -> None:
        future = hangups.get(str(msg.get("Uniqueid", "")))
        if future is not None and not future.done():
            future.set_result(msg)

    manager.register_event("Hangup", on_hangup)
    try:
        for cid, (number, context) in originates.items():
            reply = await asyncio.wait_for(manager.send_action({
                "Action": "Originate", "Channel": f"PJSIP/{number}@carrier", "Context": context, "Exten": "s",
                "Priority": "1", "Async": "true", "ChannelId": cid, "Timeout": "10000",
                "Variable": f"DIALERD_ID={cid}",
            }), 10)
            first = reply[0] if isinstance(reply, list) else reply
            assert first.get("Response") == "Success", first
        async with asyncio.timeout(AMI_DEADLINE_S):
            messages = {cid: await future for cid, future in hangups.items()}
    finally:
        manager.close()
    # ChanVariable: NAME=value, one header per variable in manager.conf channelvars
    return {cid: dict(v.split("=", 1) for v in msg["ChanVariable"]) for cid, msg in messages.items()}


async def test_ami_hangup_event_carries_the_opt_out_and_the_amd_verdict() -> None:
    tag = uuid.uuid4().hex[:8]
    opt_out, person = f"carrier-ami-{tag}-opt-out", f"carrier-ami-{tag}-person"
    variables = await _ami_hangups(local_pbx_env(), {
        opt_out: ("+14155550201", "dialerd-demo"),
        person: ("+14155550248", "dialerd-amd"),
    })
    assert variables[opt_out]["DIALERD_OPT_OUT"] == "1"
    assert variables[opt_out]["AMDSTATUS"] == ""
    assert (variables[person]["AMDSTATUS"], variables[person]["DIALERD_OPT_OUT"]) == ("HUMAN", "")
    assert variables[person]["AMDCAUSE"].startswith("HUMAN-")
