"""The ARI and AMI adapters against the real local Asterisk (``asterisk/local-pbx``).

Numbers are ``+1415555 01XX``; the carrier's far end acts on the last two digits (see
``asterisk/conf/extensions.conf``). The Asterisk is shared with other test sessions, so every test uses
its own channel ids and ARI application name, counts only its own channels, and cuts connections
through a local TCP proxy instead of restarting Asterisk.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import secrets
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from dialerd.domain.call import CallEvent, CallEventKind, Destination, OriginateRequest
from dialerd.domain.causes import classify
from dialerd.domain.contact import FailureReason as R
from dialerd.pbx.ami import AmiPbx
from dialerd.pbx.ari import EVENT_TYPES as ARI_EVENT_TYPES
from dialerd.pbx.ari import AriPbx
from dialerd.ports import OriginateError
from tests.pbx_env import local_pbx_env, pbx_cli

pytestmark = [pytest.mark.pbx, pytest.mark.timeout(60)]

Adapter = AriPbx | AmiPbx
DRIVERS = ["ari", "ami"]
DEMO = Destination.parse("dialerd-demo,s,1")
RUN = secrets.token_hex(3)


class Sink:
    """Records what an adapter reports; lets a test wait for one kind of event on one channel."""

    def __init__(self) -> None:
        self.events: list[CallEvent] = []
        self.states: list[bool] = []
        self._seen: dict[tuple[str, CallEventKind], asyncio.Event] = {}
        self._state_changed = asyncio.Event()

    def call_event(self, event: CallEvent) -> None:
        self.events.append(event)
        self._flag(event.channel_id, event.kind).set()

    def connection_changed(self, connected: bool) -> None:
        self.states.append(connected)
        self._state_changed.set()

    def _flag(self, cid: str, kind: CallEventKind) -> asyncio.Event:
        return self._seen.setdefault((cid, kind), asyncio.Event())

    async def wait(self, cid: str, kind: CallEventKind, within: float = 15.0) -> CallEvent:
        async with asyncio.timeout(within):
            await self._flag(cid, kind).wait()
        return next(e for e in self.events if e.channel_id == cid and e.kind is kind)

    async def wait_nth(self, cid: str, kind: CallEventKind, n: int, within: float = 15.0) -> CallEvent:
        async with asyncio.timeout(within):
            while len(found := [e for e in self.events if e.channel_id == cid and e.kind is kind]) < n:
                self._flag(cid, kind).clear()
                await self._flag(cid, kind).wait()
        return found[n - 1]

    async def wait_state(self, connected: bool, within: float) -> None:
        async with asyncio.timeout(within):
            while not self.states or self.states[-1] is not connected:
                self._state_changed.clear()
                await self._state_changed.wait()

    def kinds(self, cid: str) -> list[CallEventKind]:
        return [e.kind for e in self.events if e.channel_id == cid]


class Proxy:
    """A loopback TCP forwarder a test can cut (connections reset, port closed) or freeze (silent)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._thawed = asyncio.Event()
        self._thawed.set()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    def freeze(self, frozen: bool) -> None:
        (self._thawed.clear if frozen else self._thawed.set)()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            await self._thawed.wait()  # frozen: hold the bytes, the peer sees a silent open connection
            writer.write(data)
            await writer.drain()
        writer.transport.abort()


def build(driver: str, *, via: Proxy | None = None, endpoint: str | None = None) -> Adapter:
    env = local_pbx_env()
    endpoint = endpoint or env["DIALERD_PBX_ENDPOINT"]
    if driver == "ari":
        url = env["DIALERD_ARI_URL"] if via is None else f"http://127.0.0.1:{via.port}"
        return AriPbx(
            url,
            env["DIALERD_ARI_USER"],
            env["DIALERD_ARI_PASSWORD"],
            f"dialerd-it-{RUN}-{secrets.token_hex(2)}",  # never steal the "dialerd" app of a running daemon
            endpoint,
            request_timeout=2.0,
            reconnect_max_delay=2.0,
            heartbeat=1.0,
        )
    host, port = (
        (env["DIALERD_AMI_HOST"], int(env["DIALERD_AMI_PORT"])) if via is None else ("127.0.0.1", via.port)
    )
    return AmiPbx(
        host,
        port,
        env["DIALERD_AMI_USER"],
        env["DIALERD_AMI_SECRET"],
        endpoint,
        action_timeout=2.0,
        ping_interval=1.0,
    )


def proxy_for(driver: str) -> Proxy:
    env = local_pbx_env()
    if driver == "ari":
        url = urlsplit(env["DIALERD_ARI_URL"])
        return Proxy(url.hostname or "127.0.0.1", url.port or 80)
    return Proxy(env["DIALERD_AMI_HOST"], int(env["DIALERD_AMI_PORT"]))


@contextlib.asynccontextmanager
async def running(pbx: Adapter) -> AsyncIterator[Sink]:
    sink = Sink()
    await pbx.start(sink)
    try:
        async with asyncio.timeout(10):
            await pbx.wait_connected()
        yield sink
    finally:
        await pbx.close()


def cid(driver: str, label: str) -> str:
    return f"it-{RUN}-{driver}-{label}-{secrets.token_hex(2)}"


def call(
    channel_id: str, suffix: str, *, ring_timeout: int = 4, dest: Destination = DEMO, **variables: str
) -> OriginateRequest:
    return OriginateRequest(channel_id, f"+1415555{suffix}", "+15550001", dest, ring_timeout, variables)


def hang_up(channel_name: str) -> None:
    pbx_cli(local_pbx_env(), f"channel request hangup {channel_name}")


# (last four digits, expected reason or None for answered, what the row is)
ROWS = [
    ("0105", None, "00-29 answer, hang up after 2 s"),
    ("0129", None, "00-29 answer, hang up after 2 s"),
    ("0135", None, "30-39 answer, stay 20 s (hung up by the test once answered)"),
    ("0145", R.BUSY, "40-49 busy 486"),
    ("0155", R.NO_ANSWER, "50-59 ring forever, ring timeout 4 s"),
    ("0165", R.CONGESTION, "60-69 congestion 503"),
    ("0175", R.INVALID_NUMBER, "70-79 not found 404"),
    ("0185", R.REJECTED, "80-89 decline 603"),
    ("0195", None, "90-99 ring 3 s, answer, hang up after 5 s"),
]


@pytest.mark.parametrize("driver", DRIVERS)
async def test_every_carrier_row_is_classified(driver: str) -> None:
    pbx = build(driver)
    async with running(pbx) as sink:
        loop = asyncio.get_running_loop()
        ids = {suffix: cid(driver, suffix) for suffix, _, _ in ROWS}
        started = loop.time()
        names = await asyncio.gather(*(pbx.originate(call(ids[s], s)) for s in ids))
        await sink.wait(ids["0135"], CallEventKind.ANSWERED)
        await asyncio.to_thread(hang_up, names[list(ids).index("0135")])  # the 20 s row: answered is enough
        await sink.wait(ids["0195"], CallEventKind.ANSWERED)
        rang_for = loop.time() - started
        ends = {s: await sink.wait(ids[s], CallEventKind.ENDED) for s in ids}

    assert {s: classify(e).reason for s, e in ends.items()} == {s: reason for s, reason, _ in ROWS}
    assert all(classify(ends[s]).answered for s, reason, _ in ROWS if reason is None)
    assert all(name.startswith("PJSIP/carrier-") for name in names)
    assert (ends["0145"].cause, ends["0145"].tech_cause, ends["0145"].state) == (17, 486, "Down")
    assert (ends["0155"].cause, ends["0155"].state, ends["0155"].alerted) == (19, "Ringing", True)
    assert 2.5 <= rang_for <= 5.0  # 90-99 rings 3 s before answering
    assert sink.kinds(ids["0195"]) == [CallEventKind.PROGRESS, CallEventKind.ANSWERED, CallEventKind.ENDED]


@pytest.mark.parametrize("driver", DRIVERS)
async def test_live_call_lookup_variables_and_hangup_record(driver: str) -> None:
    pbx = build(driver)
    weird = 'a,b "c" (d) \\e;f=g'
    async with running(pbx) as sink:
        channel_id = cid(driver, "live")
        name = await pbx.originate(call(channel_id, "0135", DIALERD_CAMPAIGN="camp-it", CUSTOM_FIELD=weird))
        await sink.wait(channel_id, CallEventKind.ANSWERED)
        live = await pbx.lookup(channel_id)
        channels = await pbx.count_channels()
        shown = await asyncio.to_thread(pbx_cli, local_pbx_env(), f"core show channel {name}")
        await asyncio.to_thread(hang_up, name)
        end = await sink.wait(channel_id, CallEventKind.ENDED)
        after = await pbx.lookup(channel_id)
        await pbx.forget(channel_id)
        # ARI deletes records later (on a later call's hangup, else after FORGET_IDLE_S): wait for it.
        forgotten = await pbx.lookup(channel_id)
        for _ in range(100):
            if forgotten.ended is None:
                break
            await asyncio.sleep(0.1)
            forgotten = await pbx.lookup(channel_id)

    assert (live.live, live.answered, live.ended) == (True, True, None)
    assert channels >= 2  # ours and its far-end leg, plus whatever other sessions run
    assert f"CUSTOM_FIELD={weird}" in shown.splitlines()
    assert "DIALERD_CAMPAIGN=camp-it" in shown and f"DIALERD_ID={channel_id}" in shown
    assert classify(end).answered and end.state == "Up"
    assert after.live is False and after.ended is not None
    assert (after.ended.cause, after.ended.state, classify(after.ended).answered) == (end.cause, "Up", True)
    assert (forgotten.live, forgotten.ended) == (False, None)
    # What the PBX was sent, as /metrics counts it (dialerd_pbx_requests_total): one originate.
    sent = pbx.request_counts
    if driver == "ari":
        assert sent["POST /channels/{id}"] == 1 and sent["GET /channels/{id}"] >= 3, sent
        assert not [k for k in sent if channel_id in k], "ids never become labels"
    else:
        assert sent["Originate"] == 1, sent


async def test_ari_hangup_records_are_deleted_by_later_calls_not_one_request_each() -> None:
    """Issue 14 (ARI requests per call): a stored outcome's hangup record rides on the next originate as
    DIALERD_FORGET, and [dialerd-hh] deletes it (global and AstDB copy) when that call ends. The first
    carrying call of a connection also carries a probe record proving the dialplan does it."""
    pbx = build("ari")
    assert isinstance(pbx, AriPbx)
    env = local_pbx_env()
    async with running(pbx) as sink:
        ids = [cid("ari", f"fg{i}") for i in range(4)]
        await pbx.originate(call(ids[0], "0140"))  # busy: ends at once
        first = await sink.wait(ids[0], CallEventKind.ENDED)
        assert first.cause == 17 and (await pbx.lookup(ids[0])).ended is not None
        await pbx.forget(ids[0])  # its outcome is stored: the next call takes its record along
        before = dict(pbx.request_counts)
        await pbx.originate(call(ids[1], "0140"))  # carries the probe and ids[0]
        await sink.wait(ids[1], CallEventKind.ENDED)
        for _ in range(100):  # the probe's check runs after the carrier's end
            if pbx._forget_in_dialplan is not None:
                break
            await asyncio.sleep(0.05)
        assert pbx._forget_in_dialplan is True, "this repository's [dialerd-hh] deletes the records it is given"
        assert (await pbx.lookup(ids[0])).ended is None
        db = await asyncio.to_thread(pbx_cli, env, f"database get dialerd {ids[0]}")
        assert "not found" in db.lower(), f"the AstDB copy is deleted too: {db!r}"
        # Steady state: forget costs no request; the next originates carry the records.
        for prev, nxt in zip(ids[1:], ids[2:], strict=False):
            await pbx.forget(prev)
            await pbx.originate(call(nxt, "0140"))
            await sink.wait(nxt, CallEventKind.ENDED)
        assert (await pbx.lookup(ids[1])).ended is None and (await pbx.lookup(ids[2])).ended is None
        sent = {k: v - before.get(k, 0) for k, v in pbx.request_counts.items()}
        # The probe: one set before the carrying call and one read after it; no delete per call.
        assert sent["POST /asterisk/variable"] == 1 and sent["POST /channels/{id}"] == 3, sent
        await pbx.forget(ids[3])  # the last one: no originate follows, so it goes over REST once idle
        for _ in range(100):
            if (await pbx.lookup(ids[3])).ended is None:
                break
            await asyncio.sleep(0.1)
        assert (await pbx.lookup(ids[3])).ended is None


@pytest.mark.parametrize("driver", DRIVERS)
async def test_duplicate_live_channel_id_is_refused(driver: str) -> None:
    first, second = build(driver), build(driver)
    async with running(first) as sink, running(second):
        channel_id = cid(driver, "dup")
        await first.originate(call(channel_id, "0155"))
        await sink.wait(channel_id, CallEventKind.PROGRESS)
        with pytest.raises(OriginateError) as same_process:
            await first.originate(call(channel_id, "0105"))
        with pytest.raises(OriginateError) as other_process:  # Asterisk itself refuses (ARI 409, AMI no channel)
            await second.originate(call(channel_id, "0105"))
        end = await sink.wait(channel_id, CallEventKind.ENDED)
        await first.originate(call(channel_id, "0145"))  # the id is free again once the channel is gone
        again = await sink.wait_nth(channel_id, CallEventKind.ENDED, 2)

    assert same_process.value.maybe_dialled is False and other_process.value.maybe_dialled is False
    assert classify(end).reason is R.NO_ANSWER  # the live call was not disturbed by the duplicates
    assert classify(again).reason is R.BUSY


@pytest.mark.parametrize("driver", DRIVERS)
async def test_unknown_endpoint_is_not_dialled(driver: str) -> None:
    pbx = build(driver, endpoint="PJSIP/{number}@no-such-trunk")
    async with running(pbx) as sink:
        channel_id = cid(driver, "nochan")
        with pytest.raises(OriginateError) as refused:
            await pbx.originate(call(channel_id, "0105"))
        found = await pbx.lookup(channel_id)
    assert refused.value.maybe_dialled is False
    assert (found.live, found.ended, sink.kinds(channel_id)) == (False, None, [])


@pytest.mark.parametrize("driver", DRIVERS)
async def test_answered_call_is_moved_to_a_stasis_destination(driver: str) -> None:
    env = local_pbx_env()
    target = f"dialerd-it-target-{RUN}"
    token = base64.b64encode(f"{env['DIALERD_ARI_USER']}:{env['DIALERD_ARI_PASSWORD']}".encode()).decode()
    url = env["DIALERD_ARI_URL"] + "/ari/events"
    pbx = build(driver)
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Basic {token}"}) as http,
        http.ws_connect(url, params={"app": target, "subscribeAll": "false"}) as ws,
        running(pbx) as sink,
    ):
        channel_id = cid(driver, "stasis")
        await pbx.originate(call(channel_id, "0105", dest=Destination.parse(f"stasis:{target},one,two")))
        async with asyncio.timeout(10):
            start = await _next_event(ws, "StasisStart")
        end = await sink.wait(channel_id, CallEventKind.ENDED)  # still reported after leaving our hands
    assert (start["channel"]["id"], start["args"]) == (channel_id, ["one", "two"])
    assert classify(end).answered and sink.kinds(channel_id)[-2:] == [CallEventKind.ANSWERED, CallEventKind.ENDED]


async def _next_event(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict[str, Any]:
    async for msg in ws:
        event = json.loads(msg.data)
        if event.get("type") == kind:
            return dict(event)
    raise AssertionError(f"websocket closed before {kind}")


@pytest.mark.parametrize("driver", DRIVERS)
async def test_reconnects_after_the_connection_is_cut(driver: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dialerd.pbx")
    proxy = proxy_for(driver)
    await proxy.start()
    pbx = build(driver, via=proxy)
    async with running(pbx) as sink:
        loop = asyncio.get_running_loop()
        ringing = cid(driver, "cut")
        await pbx.originate(call(ringing, "0155"))  # ends (ring timeout 4 s) while we are cut off
        started = loop.time()
        await sink.wait(ringing, CallEventKind.PROGRESS)
        await proxy.cut()
        await sink.wait_state(False, within=5)
        down = pbx.connected
        with pytest.raises(OriginateError) as refused:
            await pbx.originate(call(cid(driver, "refused"), "0105"))
        await asyncio.sleep(max(0.0, started + 5.0 - loop.time()))
        await proxy.start()
        await sink.wait_state(True, within=8)
        missed = await sink.wait(ringing, CallEventKind.ENDED)  # from the hangup record, on reconnect
        after = cid(driver, "after")
        await pbx.originate(call(after, "0145"))
        busy = await sink.wait(after, CallEventKind.ENDED)
        up = pbx.connected
    await proxy.cut()

    retries = [r for r in caplog.records if "retry" in r.getMessage() or "Not able to reconnect" in r.getMessage()]
    assert (down, up, sink.states[:3]) == (False, True, [True, False, True])
    assert 1 <= len(retries) <= 10  # about 5 s down: backed off (ARI) or 1 s apart (panoramisk), no spinning
    assert refused.value.maybe_dialled is False
    assert (classify(missed).reason, missed.cause, missed.state) == (R.NO_ANSWER, 19, "Ringing")
    assert classify(busy).reason is R.BUSY


@pytest.mark.parametrize("driver", DRIVERS)
async def test_a_silent_connection_is_detected(driver: str) -> None:
    proxy = proxy_for(driver)
    await proxy.start()
    pbx = build(driver, via=proxy)
    async with running(pbx) as sink:
        loop = asyncio.get_running_loop()
        proxy.freeze(True)  # packets held, sockets open: only a heartbeat / ping can tell
        frozen_at = loop.time()
        await sink.wait_state(False, within=8)
        detected_after = loop.time() - frozen_at
        proxy.freeze(False)
        await sink.wait_state(True, within=10)
        channel_id = cid(driver, "thawed")
        await pbx.originate(call(channel_id, "0145"))
        busy = await sink.wait(channel_id, CallEventKind.ENDED)
    await proxy.cut()

    assert detected_after < 5.0 and sink.states[:3] == [True, False, True]
    assert classify(busy).reason is R.BUSY


async def test_ari_app_filters_events_and_keeps_no_subscriptions() -> None:
    pbx = build("ari")
    assert isinstance(pbx, AriPbx)
    async with running(pbx) as sink:
        channel_id = cid("ari", "filter")
        await pbx.originate(call(channel_id, "0105"))
        await sink.wait(channel_id, CallEventKind.ENDED)
        # Asterisk drops the app's subscription as it destroys the channel, a moment after the hangup
        # event we act on (on a loaded box, that moment can be seen): poll, bounded.
        for _ in range(50):
            app = await pbx.client.request("GET", f"/applications/{pbx.app}")
            if not app["channel_ids"]:
                break
            await asyncio.sleep(0.1)
    assert {f["type"] for f in app["events_allowed"]} == set(ARI_EVENT_TYPES)
    assert app["channel_ids"] == []  # nothing left subscribed once the call is gone


@pytest.mark.parametrize("driver", DRIVERS)
async def test_an_unanswered_originate_is_maybe_dialled(driver: str) -> None:
    proxy = proxy_for(driver)
    await proxy.start()
    pbx = build(driver, via=proxy)
    async with running(pbx) as sink:
        channel_id = cid(driver, "maybe")
        proxy.freeze(True)  # the request leaves but its reply never comes back
        with pytest.raises(OriginateError) as unknown:
            await pbx.originate(call(channel_id, "0145"))
        proxy.freeze(False)  # ... and the held request reaches Asterisk late: the call was dialled
        await sink.wait_state(True, within=10)
        for _ in range(25):  # the late request may still be ringing busy: poll for its record
            if (found := await pbx.lookup(channel_id)).ended is not None:
                break
            await asyncio.sleep(0.2)
    await proxy.cut()

    assert unknown.value.maybe_dialled is True
    assert found.ended is not None and classify(found.ended).reason is R.BUSY
