"""PBX outage: dialerd's connection to Asterisk is cut mid-campaign through a proxy, then restored.

Asterisk itself is shared with other test sessions and never stopped: the cut happens in
:class:`tests.tcp_proxy.TcpProxy`, between dialerd and Asterisk's ARI (or AMI) port. Asterisk's own
view comes from the real ARI port (:class:`tests.live.AsteriskWatch`) and its CDR.
"""

from __future__ import annotations

import asyncio
import calendar
import json
import logging
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from dialerd.settings import load_settings
from tests.conftest import Api, make_key, start_daemon
from tests.daemon_proc import cdr_rows
from tests.live import AsteriskWatch, all_contacts, live_api, numbers, pbx_settings_env, wait_status
from tests.pbx_env import local_pbx_env
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.pbx

OUTAGE_S = 8.0
# The first two contacts answer and talk 20 s (30-39): answered before the cut, they end after it.
# The other 38 answer and hang up after ~2 s (00-29): some end during the outage, unseen.
LONG = [30, 31]
SUFFIXES = LONG + [i % 30 for i in range(38)]
STABLE_BEFORE_CUT_S = 6.0  # ARI resets its backoff after a connection lived 5 s: cut after that
# The cut comes while an originate request is on the wire: it reaches Asterisk, its reply is lost.
ORIGINATE = {"ari": b"POST /ari/channels/", "ami": b"Action: Originate"}


def _upstream(driver: str) -> int:
    env = local_pbx_env()
    if driver == "ari":
        return int(urlsplit(env["DIALERD_ARI_URL"]).port or 0)
    return int(env["DIALERD_AMI_PORT"])


def _through(driver: str, proxy: TcpProxy) -> dict[str, Any]:
    if driver == "ari":
        return {"ari_url": proxy.url}
    return {"ami_host": "127.0.0.1", "ami_port": proxy.port}


async def _until(what: str, check: Any, timeout: float, interval: float = 0.05) -> float:
    """Poll ``check()`` (sync or async) until truthy; return the time it took (bounded by ``timeout``)."""
    started = time.monotonic()
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout}s")
        await asyncio.sleep(interval)


async def _first_snapshot(api: Api, cid: str, timeout: float = 10.0) -> dict[str, Any]:
    """Open the campaign's SSE stream (live, no replay) and return its first metrics snapshot."""
    async with (
        asyncio.timeout(timeout),
        api.session.get(f"{api.base}/api/v1/campaigns/{cid}/events", headers=api.auth()) as resp,
    ):
        assert resp.status == 200
        async for raw in resp.content:
            line = raw.decode("utf-8").rstrip("\n")
            if line.startswith("data: "):
                data: dict[str, Any] = json.loads(line[len("data: "):])
                if data.get("type") == "snapshot":
                    return data
    raise AssertionError("the SSE stream ended without a snapshot")


async def _metric(api: Api, name: str) -> float:
    async with api.session.get(f"{api.base}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"metric {name} not exported")


def _new_channels(watch: AsteriskWatch, cid: str, after: float, before: float = float("inf")) -> list[float]:
    return [t for t in watch.start_times(cid) if after < t < before]


@pytest.mark.timeout(150)
@pytest.mark.parametrize("driver", ["ari", "ami"])
async def test_outage_pauses_dialling_and_resumes_without_loss(
    tmp_path: Path, driver: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dialerd")
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())  # the CDR is written in UTC (usegmtime)
    proxy = TcpProxy("127.0.0.1", _upstream(driver))
    await proxy.start()
    watch = AsteriskWatch.from_env()
    watch.start()
    try:
        async with live_api(tmp_path, driver, tenants={"acme": (10, 120)}, **_through(driver, proxy)) as api:
            connected_at = time.monotonic()
            daemon = api.daemon
            status, body = await api.create(numbers(SUFFIXES), max_concurrent_calls=4, ring_timeout_seconds=10)
            assert status == 201, body
            cid = body["id"]
            assert (await api.call("POST", f"/api/v1/campaigns/{cid}/start"))[0] == 200
            contacts = {c["id"]: c for c in await all_contacts(api, cid)}
            long_ids = sorted(contacts)[: len(LONG)]  # dialled first (oldest first)

            async def long_calls_answered() -> bool:
                for contact_id in long_ids:
                    attempts = await daemon.store.list_attempts(contact_id)
                    if not attempts or attempts[-1].answered_at is None:
                        return False
                return True

            await _until("both long calls answered", long_calls_answered, 20)
            await asyncio.sleep(max(0.0, connected_at + STABLE_BEFORE_CUT_S - time.monotonic()))

            # ---- the cut, while an originate request is on the wire -----------------------------
            await asyncio.wait_for(proxy.arm(ORIGINATE[driver]).wait(), 10)
            cut_wall, cut = time.time(), time.monotonic()
            dropped = proxy.cut()
            assert dropped >= 1, "dialerd had no connection through the proxy"
            noticed = await _until("dialerd notices the cut", lambda: not daemon.pbx.connected, 6, 0.005)
            originations_at_cut = daemon.dispatcher.originations

            # (b) the API keeps answering and says the PBX is down.
            started = time.monotonic()
            status, health = await api.call("GET", "/health", tenant=None)
            assert status == 200, health
            assert health["status"] == "degraded" and health["pbx"]["connected"] is False, health
            assert health["database"]["ok"] is True
            status, campaign = await api.call("GET", f"/api/v1/campaigns/{cid}")
            assert status == 200 and campaign["status"] == "running", campaign
            status, page = await api.call("GET", f"/api/v1/campaigns/{cid}/contacts?limit=1000")
            assert status == 200 and len(page["contacts"]) == len(SUFFIXES)
            api_seconds = time.monotonic() - started
            assert api_seconds < 2.0, f"the API took {api_seconds:.2f}s while the PBX was down"
            snapshot = await _first_snapshot(api, cid)
            assert snapshot["pbx_connected"] is False and snapshot["status"] == "running", snapshot
            assert await _metric(api, "dialerd_pbx_connected") == 0.0

            await asyncio.sleep(max(0.0, cut + OUTAGE_S - time.monotonic()))
            # (a) nothing was originated while the connection was down.
            assert daemon.dispatcher.originations == originations_at_cut
            assert not daemon.pbx.connected, "dialerd reconnected through a refusing proxy"
            restore_wall, restore = time.time(), time.monotonic()
            during_outage = proxy.attempts(cut, restore, refused=True)
            proxy.forward()

            # (c) dialling resumes on its own.
            reconnect = await _until("dialerd reconnects", lambda: daemon.pbx.connected, 20, 0.01)
            await _until("a new call on Asterisk", lambda: _new_channels(watch, cid, restore_wall), 20)
            resume = min(_new_channels(watch, cid, restore_wall)) - restore_wall  # Asterisk's creation time

            snapshot = await _first_snapshot(api, cid)
            assert snapshot["pbx_connected"] is True, snapshot

            final = await wait_status(api, cid, "completed", timeout=90)
            listed = await all_contacts(api, cid)
            attempts = {c["id"]: await daemon.store.list_attempts(c["id"]) for c in listed}
            logged = [(r.name, getattr(r, "action", None)) for r in caplog.records]
            unknown = {str(getattr(r, "channel_id", "")) for r in caplog.records
                       if getattr(r, "action", None) == "originate_error" and getattr(r, "maybe_dialled", False)}
            retry_action = "ari_ws_retry" if driver == "ari" else "ami_disconnected"
            retries = sum(1 for r in caplog.records
                          if getattr(r, "action", None) == retry_action and cut_wall < r.created < restore_wall)
    finally:
        await watch.stop()
        await proxy.close()

    report = (f"{driver}: noticed {noticed * 1000:.0f} ms after the cut; in {OUTAGE_S:g} s {retries} "
              f"disconnect/retry lines logged, {during_outage} TCP connections refused by the proxy; reconnected "
              f"{reconnect:.2f} s and first new call {resume:.2f} s after the restore; "
              f"originates cut mid-request: {len(unknown)}")
    print(report)
    # (a) Asterisk's side: no channel of the campaign was created while the connection was down
    # (0.5 s of slack for a request already on the wire when the proxy cut it).
    assert _new_channels(watch, cid, cut_wall + 0.5, restore_wall) == [], report
    # ...and the database's: every attempt begun after the cut was given back unsent.
    for contact_attempts in attempts.values():
        for a in contact_attempts:
            assert a.created_at is not None
            if cut_wall + 0.05 < a.created_at.timestamp() < restore_wall:
                assert a.state == "not_dialled", (a, report)
    # (c) resumes within a few seconds, and everything ends exactly once.
    assert resume < 15.0, report
    counts = {k: v for k, v in final["contacts"].items() if v}
    # The ARI call cut mid-originate may have been answered while our app had no websocket: Asterisk
    # hung it up at once (cause 0), an abandoned call recorded as app_unavailable, never as completed.
    dropped = [c for c in listed if c["failure_reason"] == "app_unavailable"]
    assert len(dropped) <= len(unknown) and (driver == "ari" or not dropped), (dropped, unknown)
    assert counts == {"total": len(SUFFIXES), "completed": len(SUFFIXES) - len(dropped),
                      **({"failed": len(dropped)} if dropped else {})}, final
    assert all(c["status"] == "completed" and c["attempts"] == 1 for c in listed if c not in dropped), listed
    await asyncio.sleep(1.0)  # CDR rows are written as channels are destroyed
    dialled = [a for contact_attempts in attempts.values() for a in contact_attempts if a.state != "not_dialled"]
    by_id = {a.channel_id: a.contact_id for a in dialled}
    assert sorted(a.contact_id for a in dialled) == sorted(attempts), "a contact was dialled twice or never"
    prefix = f"dlr-{cid[4:16]}-"
    rows = [r for r in cdr_rows(since) if r[16].startswith(prefix)]
    assert sorted(r[16] for r in rows) == sorted(by_id), f"Asterisk's CDR disagrees with the attempts: {rows}"
    # The CDR's start column (whole seconds, UTC) says the same as the watch about the outage window.
    starts = [calendar.timegm(time.strptime(r[9], "%Y-%m-%d %H:%M:%S")) for r in rows]
    assert not [t for t in starts if cut_wall + 1 < t < restore_wall - 1], (starts, report)
    seen = [ch for ch, info in watch.seen.items() if info["campaign"] == cid]
    assert set(seen) <= set(by_id) and len(seen) >= len(SUFFIXES) - 2, seen  # polled: a 0 s call may slip
    # The originate cut mid-request was reconciled, never redialled: that contact has one attempt and
    # Asterisk dialled it once.
    assert unknown, "the cut did not catch an originate request in flight"
    for channel_id in unknown:
        contact_id = by_id[channel_id]
        assert [a.channel_id for a in attempts[contact_id]] == [channel_id], attempts[contact_id]
        assert [r[16] for r in rows].count(channel_id) == 1
    # Every answered call shows its talk time (~2 s, ~20 s), also those answered and ended unseen during
    # the outage, whose times come from the hangup record. Not the ARI call cut mid-originate: answered
    # while its events were lost, it was either hung up by Asterisk at once (our app had no websocket:
    # cause 0) or left unrouted in our app until the far end hung up, before we were back; either way
    # nothing recorded when it was answered.
    for a in dialled:
        if not (driver == "ari" and a.channel_id in unknown):
            assert a.talk_seconds is not None and a.talk_seconds >= 0.5, a
    # The calls in flight at the cut were followed to their real end, after the restore.
    for contact_id in long_ids:
        (a,) = [x for x in attempts[contact_id] if x.state != "not_dialled"]
        assert a.state == "ended" and a.reason is None, a
        assert a.answered_at is not None and a.answered_at.timestamp() < cut_wall, a
        assert a.ended_at is not None and a.ended_at.timestamp() > restore_wall, a
        # Asterisk's own talk time (CDR billsec, whole seconds; ~20 s, more on a loaded box).
        (billsec,) = [int(r[13]) for r in rows if r[16] == a.channel_id]
        assert a.talk_seconds is not None and billsec >= 15 and abs(a.talk_seconds - billsec) <= 1.5, (a, billsec)
    # (d) a bounded backoff (each refused try is logged), and the disconnect is in the log.
    assert 1 <= during_outage <= 20, report
    assert 1 <= retries <= 10, report
    actions = [action for _name, action in logged]
    down = actions.index("pbx_disconnected")
    assert "pbx_connected" in actions[down:], "no pbx_connected after the disconnect"


@pytest.mark.timeout(60)
async def test_api_answers_while_the_pbx_refuses_from_the_start(tmp_path: Path) -> None:
    """A daemon that cannot reach ARI at all still serves the API and never originates."""
    proxy = TcpProxy("127.0.0.1", _upstream("ari"))
    await proxy.start()
    proxy.refuse()
    try:
        settings = load_settings(
            None, env=pbx_settings_env("ari", f"sqlite+aiosqlite:///{tmp_path / 'down.db'}"),
            overrides={"ari_url": proxy.url, "ari_app": f"dialerd-outage-{time.monotonic_ns()}"},
        )
        daemon = await start_daemon(settings, pbx=None)
        try:
            key = await make_key(daemon, "acme")
            async with aiohttp.ClientSession() as session:
                api = Api(f"http://127.0.0.1:{daemon.port}", session, {"acme": key}, daemon)
                status, body = await api.create(numbers([1, 2, 3]))
                assert status == 201, body
                cid = body["id"]
                assert (await api.call("POST", f"/api/v1/campaigns/{cid}/start"))[0] == 200
                opened = time.monotonic()
                await asyncio.sleep(6.0)
                status, health = await api.call("GET", "/health", tenant=None)
                assert status == 200 and health["status"] == "degraded" and not health["pbx"]["connected"]
                contacts = await all_contacts(api, cid)
                assert [c["status"] for c in contacts] == ["pending"] * 3
                assert all(c["attempts"] == 0 for c in contacts), contacts
                assert daemon.dispatcher.originations == 0
                tries = proxy.attempts(opened)
        finally:
            await daemon.stop()
    finally:
        await proxy.close()
    # Backoff from the first failure: 0.25-0.5, 0.5-1, 1-2, 2-4 s... a handful in 6 s, never a spin.
    assert 2 <= tries <= 10, tries


@pytest.mark.timeout(60)
async def test_call_answered_while_its_events_are_lost_still_reaches_its_destination(tmp_path: Path) -> None:
    """The link dies after the originate left: Asterisk answers, and StasisStart is lost with the link.

    Asterisk replays nothing on reconnect, so only a reconcile can tell that the call is up, parked in
    our Stasis app, and must still be sent on to the campaign's destination (else: dead air).
    """
    proxy = TcpProxy("127.0.0.1", _upstream("ari"))
    await proxy.start()
    watch = AsteriskWatch.from_env()
    try:
        async with live_api(tmp_path, "ari", ari_url=proxy.url) as api:
            status, body = await api.create(numbers([35]))  # answers at once, talks 20 s
            assert status == 201, body
            cid = body["id"]
            fired = proxy.arm(ORIGINATE["ari"])
            assert (await api.call("POST", f"/api/v1/campaigns/{cid}/start"))[0] == 200
            await asyncio.wait_for(fired.wait(), 10)
            # Replies and events are lost from here; give Asterisk time to answer and emit StasisStart.
            await asyncio.sleep(0.5)
            proxy.cut()
            await asyncio.sleep(3.0)
            proxy.forward()
            await _until("dialerd reconnects", lambda: api.daemon.pbx.connected, 20, 0.01)
            (contact,) = await all_contacts(api, cid)
            (attempt,) = await api.daemon.store.list_attempts(contact["id"])

            async def where() -> dict[str, Any]:
                status, channel = await _ari_channel(watch, attempt.channel_id)
                assert status == 200, f"the call is gone: {channel}"
                return dict(channel["dialplan"])

            # Routed means it left our Stasis app for the destination, dialerd-demo.
            async def routed() -> bool:
                return bool((await where())["context"] == "dialerd-demo")

            try:
                await _until("the answered call is routed", routed, 8, 0.2)
            except AssertionError as exc:
                raise AssertionError(f"{exc}; the call sits at {await where()}") from None
            status, _ = await _ari_delete(watch, attempt.channel_id)  # hang up: no need to wait 20 s
            assert status == 204
            final = await wait_status(api, cid, "completed", timeout=20)
            (attempt,) = await api.daemon.store.list_attempts(contact["id"])
    finally:
        await proxy.close()
    assert final["contacts"]["completed"] == 1, final
    assert attempt.state == "ended" and attempt.answered_at is not None, attempt


async def _ari_channel(watch: AsteriskWatch, channel_id: str) -> tuple[int, Any]:
    async with (aiohttp.ClientSession(headers=watch.auth) as session,
                session.get(f"{watch.url}/ari/channels/{channel_id}") as resp):
        return resp.status, await resp.json(content_type=None)


async def _ari_delete(watch: AsteriskWatch, channel_id: str) -> tuple[int, Any]:
    async with (aiohttp.ClientSession(headers=watch.auth) as session,
                session.delete(f"{watch.url}/ari/channels/{channel_id}") as resp):
        return resp.status, await resp.read()
