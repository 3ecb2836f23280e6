"""Another client takes dialerd's ARI app name, against the real local Asterisk (issue 9, item 1).

What Asterisk 22.10 does (measured here, see :mod:`dialerd.pbx.ownership`): the second websocket takes
the app, the first gets ``ApplicationReplaced`` and stays open but silent; a call answered while the
app has no live client is hung up at once (hangup record ``0|SIP 200 OK|Up``, CDR lastapp ``Stasis``,
billsec 0). dialerd must hold dialling, say why, take the app back, and record every call for what it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from dialerd.pbx.ari import AriPbx
from dialerd.settings import Settings, load_settings
from tests.conftest import Api, make_key, start_daemon
from tests.daemon_proc import DaemonProc, cdr_rows, daemon_env
from tests.live import AsteriskWatch, all_contacts, live_api, numbers, pbx_settings_env, wait_status
from tests.pbx_env import local_pbx_env

pytestmark = [pytest.mark.pbx, pytest.mark.timeout(180)]

REREGISTER_AFTER = 4.0  # the daemon under test waits 4-8 s before taking its app back
HOLD_SECONDS = 2.0  # how long the intruder keeps the app


def _app(tag: str) -> str:
    return f"dialerd-takeover-{tag}-{os.getpid()}-{time.monotonic_ns() % 10**6}"


def _settings(tmp_path: Path, app: str, **overrides: Any) -> Settings:
    env = pbx_settings_env("ari", f"sqlite+aiosqlite:///{tmp_path / 'takeover.db'}")
    return load_settings(None, env=env, overrides={"ari_app": app, **overrides})


@contextlib.asynccontextmanager
async def _daemon(tmp_path: Path, app: str, tenant: tuple[int, int]) -> AsyncIterator[Api]:
    """The whole daemon on a real port, its ARI adapter built here to set the re-register delay."""
    s = _settings(tmp_path, app)
    pbx = AriPbx(s.ari_url, s.ari_user, s.ari_password, s.ari_app, s.pbx_endpoint,
                 replaced_delay=REREGISTER_AFTER)
    daemon = await start_daemon(s, pbx=pbx)
    try:
        await asyncio.wait_for(daemon.dispatcher.pbx_up.wait(), 20)
        key = await make_key(daemon, "acme", concurrent_max=tenant[0], calls_per_minute=tenant[1])
        async with aiohttp.ClientSession() as session:
            yield Api(f"http://127.0.0.1:{daemon.port}", session, {"acme": key}, daemon)
    finally:
        await daemon.stop()


async def _intruder(app: str, hold: float, seen: list[str]) -> None:
    """A plain websocket client (like wscat) on the same app name for ``hold`` seconds."""
    env = local_pbx_env()
    params = {"app": app, "api_key": f"{env['DIALERD_ARI_USER']}:{env['DIALERD_ARI_PASSWORD']}"}
    async with aiohttp.ClientSession() as session, session.ws_connect(
            f"{env['DIALERD_ARI_URL']}/ari/events", params=params) as ws:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(hold):
                async for msg in ws:
                    if msg.type is aiohttp.WSMsgType.TEXT:
                        seen.append(msg.json().get("type", "?"))


async def _health(api: Api) -> dict[str, Any]:
    async with api.session.get(f"{api.base}/health") as resp:
        body: dict[str, Any] = await resp.json()
        return body


async def _snapshot_held(api: Api, cid: str, within: float) -> dict[str, Any]:
    """The first SSE snapshot (no event line) that says dialling is held."""
    async with asyncio.timeout(within), api.session.get(
            f"{api.base}/api/v1/campaigns/{cid}/events", headers=api.auth()) as resp:
        data = ""
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("data:"):
                data += line[5:].strip()
            elif line == "" and data:
                import json

                body: dict[str, Any] = json.loads(data)
                data = ""
                if body.get("type") == "snapshot" and body.get("dialling_held"):
                    return body
    raise AssertionError("stream ended without a held snapshot")


async def _wait(predicate: Any, within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within}s: {what}")
        await asyncio.sleep(0.05)


async def test_app_taken_for_two_seconds_mid_campaign(tmp_path: Path) -> None:
    app = _app("mid")
    watch = AsteriskWatch.from_env()
    # 9X rings 3 s, then answers (hello, 4 s, hangup): the four first calls are answered while the
    # app is held or in the gap before dialerd takes it back, and Asterisk drops them.
    suffixes = [91, 92, 93, 94, 95, 96, 97, 98, 5, 6, 7, 44]
    async with _daemon(tmp_path, app, tenant=(4, 600)) as api:
        dispatcher = api.daemon.dispatcher
        states: list[tuple[float, bool]] = []
        original = dispatcher.connection_changed

        def record(connected: bool) -> None:
            states.append((time.time(), connected))
            original(connected)

        dispatcher.connection_changed = record  # the adapter calls its sink through the instance
        status, body = await api.create(numbers(suffixes), max_concurrent_calls=4, retries_per_contact=0)
        assert status == 201, body
        cid = body["id"]
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() - 1))
        watch.start()
        try:
            status, body = await api.call("POST", f"/api/v1/campaigns/{cid}/start")
            assert status == 200, body

            async def four_ringing() -> bool:
                return watch.live.get(cid, 0) >= 4

            await _wait(four_ringing, 20, "four calls up in Asterisk")
            seen: list[str] = []
            intruder = asyncio.create_task(_intruder(app, HOLD_SECONDS, seen))

            async def held() -> dict[str, Any] | None:
                h = await _health(api)
                return h if h["pbx"]["dialling_held"] == "ari_app_replaced" else None

            health = await _wait(held, 5, "/health saying the app was taken over")
            assert health["status"] == "degraded" and health["pbx"]["connected"] is False
            assert "another client took over ARI app" in health["pbx"]["last_error"]
            snap = await _snapshot_held(api, cid, 5)
            assert (snap["dialling_held"], snap["pbx_connected"]) == ("ari_app_replaced", False)
            async with api.session.get(f"{api.base}/metrics") as resp:
                text = await resp.text()
            assert 'dialerd_dialling_held{reason="ari_app_replaced"} 1.0' in text
            assert 'dialerd_dialling_held{reason="pbx_down"} 0.0' in text
            await intruder

            async def back() -> dict[str, Any] | None:
                h = await _health(api)
                return h if h["status"] == "ok" and h["pbx"]["dialling_held"] is None else None

            health = await _wait(back, 20, "the app re-registered")
            assert health["pbx"]["last_error"] is None
            final = await wait_status(api, cid, "completed", timeout=120)
            contacts = await all_contacts(api, cid)
        finally:
            await watch.stop()
        async with api.session.get(f"{api.base}/metrics") as resp:
            text = await resp.text()
        assert "dialerd_ari_app_takeovers_total 1.0" in text
        tenant_id = next(iter(dispatcher.tenant_caps()))
        assert dispatcher.tenant_in_flight(tenant_id) == 0 and dispatcher.calls_in_flight(cid) == 0
        attempts = await _attempt_rows(api, cid)
        begun = [a for c in contacts for a in await api.daemon.store.list_attempts(c["id"])]

    # Dialling held from the takeover until the app was ours again: Asterisk created no channel then
    # (0.5 s of slack for an originate request already on its way when the takeover came).
    lost = next(t for t, up in states if not up)
    resumed = next(t for t, up in states if up and t > lost)
    starts = watch.start_times(cid)
    assert not [t for t in starts if lost + 0.5 < t < resumed], (lost, resumed, starts)
    assert resumed - lost >= REREGISTER_AFTER - 0.5
    # ...and the store's: no attempt was begun then (none given back either: nothing was waiting to go).
    assert not [a for a in begun if a.created_at is not None and lost + 0.5 < a.created_at.timestamp() < resumed]
    rows = cdr_rows(since)
    # One call per contact in Asterisk's CDR (dialer legs carry our channel ids): none lost, none doubled.
    ours = sorted(r[16] for r in rows if r[16].startswith(f"dlr-{cid[4:16]}-"))
    assert ours == sorted(a["channel_id"] for a in attempts) and len(attempts) == len(suffixes)

    # Every contact ends with what Asterisk says happened to its call (the dialer leg's CDR).
    cdr = {row[16]: row for row in rows}
    by_channel = {a["channel_id"]: a for a in attempts}
    truth: dict[str, str] = {}
    for channel_id in by_channel:
        row = cdr[channel_id]
        lastapp, billsec, disposition = row[7], int(row[13]), row[14]
        if disposition == "ANSWERED" and lastapp == "Stasis" and billsec == 0:
            truth[channel_id] = "app_unavailable"  # answered, hung up at once: Stasis app not there
        elif disposition == "ANSWERED":
            truth[channel_id] = "completed"
        else:
            truth[channel_id] = "busy"
    recorded = {c: ("completed" if a["reason"] is None else a["reason"]) for c, a in by_channel.items()}
    assert recorded == truth
    assert "app_unavailable" in truth.values(), "no call was answered while the app was away"
    by_number = {c["phone_number"]: c for c in contacts}
    for a in attempts:
        contact = by_number[a["phone_number"]]
        expected = ("completed", None) if truth[a["channel_id"]] == "completed" else (
            "failed", truth[a["channel_id"]])
        assert (contact["status"], contact["failure_reason"]) == expected, contact
    assert final["contacts"].get("originated", 0) == final["contacts"].get("connected", 0) == 0


async def _attempt_rows(api: Api, cid: str) -> list[dict[str, Any]]:
    from sqlalchemy import text

    sql = text("SELECT a.channel_id, a.state, a.reason, c.phone_e164 AS phone_number FROM attempt a "
               "JOIN contact c ON c.id = a.contact_id WHERE a.campaign_id = :cid ORDER BY a.id")
    async with api.daemon.store.engine.connect() as conn:
        return [dict(r._mapping) for r in await conn.execute(sql, {"cid": cid})]


async def test_second_daemon_with_the_same_app_refuses_to_start(tmp_path: Path) -> None:
    app = _app("second")
    second = DaemonProc(daemon_env(f"sqlite+aiosqlite:///{tmp_path / 'second.db'}", app), tmp_path / "second.log")

    def refusals() -> list[str]:
        return [ln for ln in second.log_path.read_text().splitlines() if "ari_app_in_use" in ln]

    # A plain client (wscat-like) holds the app: listed with nothing subscribed, so someone holds it.
    holder = asyncio.create_task(_intruder(app, 60, []))
    try:
        async def listed() -> bool:
            watch = AsteriskWatch.from_env()  # for its URL and Authorization header
            async with aiohttp.ClientSession(headers=watch.auth) as s, s.get(
                    f"{watch.url}/ari/applications/{app}") as resp:
                return resp.status == 200

        await _wait(listed, 10, "the plain client's app listed")
        second.start(wait_pbx=False)
        assert second.wait_health() == {"exited": 75}
        assert len(refusals()) == 1 and "already registered by a live client" in refusals()[0], refusals()
    finally:
        holder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await holder

    async with live_api(tmp_path, ari_app=app, shutdown_grace_period=0.0) as api:
        # A dialerd holds it with a call up: the listing alone cannot tell a live client from calls
        # left behind by one that stopped; the first daemon's owner record says it is alive.
        status, body = await api.create(numbers([33]), max_concurrent_calls=1)
        assert status == 201, body
        status, _ = await api.call("POST", f"/api/v1/campaigns/{body['id']}/start")
        assert status == 200

        async def call_up() -> bool:
            return api.daemon.dispatcher.calls_in_flight(body["id"]) == 1

        await _wait(call_up, 20, "the call up")
        second.start(wait_pbx=False)
        assert second.wait_health() == {"exited": 75}
        assert len(refusals()) == 2 and f"held by another dialerd pid {os.getpid()}" in refusals()[1], refusals()
        assert (await _health(api))["status"] == "ok"  # the first daemon never lost its app
    # The first daemon stopped with its call still up in Asterisk: the second one starts.
    second.start(wait_pbx=True)
    try:
        assert second.alive() and len(refusals()) == 2
    finally:
        assert second.terminate() == 0


@pytest.mark.parametrize("driver", ["ari", "ami"])
async def test_health_names_a_wrong_pbx_password(tmp_path: Path, driver: str) -> None:
    wrong = {"ari_password": "not-the-password"} if driver == "ari" else {"ami_secret": "not-the-secret"}
    env = pbx_settings_env(driver, f"sqlite+aiosqlite:///{tmp_path / 'pw.db'}")
    s = load_settings(None, env=env, overrides={"ari_app": _app("pw"), **wrong})
    daemon = await start_daemon(s, pbx=None)
    try:
        async with aiohttp.ClientSession() as session:
            api = Api(f"http://127.0.0.1:{daemon.port}", session, {})

            async def error() -> dict[str, Any] | None:
                h = await _health(api)
                return h if h["pbx"]["last_error"] not in (None, "AMI not connected yet") else None

            health = await _wait(error, 20, "/health naming the PBX error")
    finally:
        await daemon.stop()
    assert health["status"] == "degraded" and health["pbx"]["dialling_held"] == "pbx_down"
    if driver == "ari":
        assert health["pbx"]["last_error"] == "ARI 401: check DIALERD_ARI_PASSWORD and ari.conf"
    else:
        assert health["pbx"]["last_error"].startswith("AMI login failed (Authentication failed)")
        assert "DIALERD_AMI_SECRET" in health["pbx"]["last_error"]


async def test_answer_dropped_while_dialerd_was_away_is_not_completed_after_restart(tmp_path: Path) -> None:
    """Stopped while a call rings (grace 0): Asterisk answers it into an app with no client and hangs up;
    the next start reconciles it from the hangup record as app_unavailable, not completed."""
    app = _app("restart")
    db = f"sqlite+aiosqlite:///{tmp_path / 'restart.db'}"
    async with live_api(tmp_path, db_url=db, ari_app=app, shutdown_grace_period=0.0) as api:
        status, body = await api.create(numbers([91]), max_concurrent_calls=1)
        assert status == 201, body
        cid = body["id"]
        status, _ = await api.call("POST", f"/api/v1/campaigns/{cid}/start")
        assert status == 200

        async def ringing() -> bool:
            (contact,) = await all_contacts(api, cid)
            return bool(contact["status"] == "originated")

        await _wait(ringing, 10, "the call ringing")
        (attempt,) = await _attempt_rows(api, cid)
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() - 10))

    async def dropped() -> bool:  # the far end answers at ~3 s; Asterisk hangs up at once
        return any(r[16] == attempt["channel_id"] for r in cdr_rows(since))

    await _wait(dropped, 15, "Asterisk ending the call")
    (row,) = [r for r in cdr_rows(since) if r[16] == attempt["channel_id"]]
    assert (row[14], row[7], row[13]) == ("ANSWERED", "Stasis", "0"), row
    async with live_api(tmp_path, db_url=db, ari_app=app) as api:
        final = await wait_status(api, cid, "completed", timeout=30)
        (contact,) = await all_contacts(api, cid)
        assert (contact["status"], contact["failure_reason"], contact["hangup_cause"]) == (
            "failed", "app_unavailable", 0), contact
        assert final["contacts"].get("failed") == 1
