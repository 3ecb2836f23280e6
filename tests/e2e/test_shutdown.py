"""SIGTERM with calls in flight: dialerd as a subprocess against the real Asterisk.

Staged shutdown (STYLE.md principle 6): stop originating -> follow live calls up to
``shutdown_grace_period`` -> close SSE -> stop HTTP -> close the PBX connection -> close the database.
Asterisk's own view (its channel list on the real ARI port, and its CDR) is the witness.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.daemon_proc import DaemonProc, cdr_rows, create_key, daemon_env, multipart
from tests.live import AsteriskWatch, numbers

pytestmark = pytest.mark.pbx

# Three calls that answer and talk 20 s (30-39) fill the campaign's cap of 3; three short ones
# (00-29) wait behind them and are still pending when SIGTERM arrives.
CAP = 3
CSV = numbers([30, 31, 32, 1, 2, 3])
PHONES = [line.split(",")[0] for line in CSV.splitlines()[1:]]
LONG, SHORT = PHONES[:CAP], PHONES[CAP:]


class Run:
    """One daemon subprocess with one campaign, plus Asterisk's channel list and the SQLite file."""

    def __init__(self, tmp_path: Path, grace: float) -> None:
        self.db = tmp_path / "dialerd.db"
        self.since = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())  # the CDR is in UTC
        env = daemon_env(f"sqlite+aiosqlite:///{self.db}", app=f"dialerd-stop-{time.monotonic_ns()}",
                         DIALERD_SHUTDOWN_GRACE_PERIOD=str(grace))
        self.key = create_key(env, "acme", concurrent_max=10, cpm=600)
        self.daemon = DaemonProc(env, tmp_path / "dialerd.log")
        self.watch = AsteriskWatch.from_env()
        self.cid = ""

    async def start_campaign(self) -> None:
        self.watch.start()
        await asyncio.to_thread(self.daemon.start)
        body, ctype = multipart({"name": "shutdown", "max_concurrent_calls": str(CAP)}, CSV)
        status, campaign = await self.call("POST", "/api/v1/campaigns", body, {"Content-Type": ctype})
        assert status == 201, campaign
        self.cid = campaign["id"]
        assert (await self.call("POST", f"/api/v1/campaigns/{self.cid}/start"))[0] == 200

    async def call(self, method: str, path: str, body: bytes | None = None,
                   headers: dict[str, str] | None = None) -> tuple[int, Any]:
        return await asyncio.to_thread(self.daemon.request, method, path, self.key, body, headers)

    def seen(self) -> set[str]:
        """Every dialer-side channel of the campaign Asterisk has shown so far (polled every 50 ms)."""
        return {ch for ch, info in self.watch.seen.items() if info["campaign"] == self.cid}

    async def live(self) -> dict[str, str]:
        """The campaign's channels on Asterisk now: channel id -> state (read from the real ARI port)."""
        async with (aiohttp.ClientSession(headers=self.watch.auth) as session,
                    session.get(f"{self.watch.url}/ari/channels") as resp):
            assert resp.status == 200
            channels = await resp.json()
        return {ch["id"]: ch["state"] for ch in channels
                if (ch.get("channelvars") or {}).get("DIALERD_CAMPAIGN") == self.cid}

    async def wait(self, what: str, check: Any, timeout: float) -> float:
        """Poll ``await check()`` until truthy; return the wall-clock time it became true."""
        deadline = time.monotonic() + timeout
        while not await check():
            assert time.monotonic() < deadline, f"{what}: not within {timeout}s (log: {self.daemon.log_path})"
            await asyncio.sleep(0.02)
        return time.time()

    async def sigterm_when_calls_are_up(self) -> tuple[float, set[str]]:
        """Start the campaign, SIGTERM once its three calls are answered; return (when, those calls)."""
        await self.start_campaign()

        async def all_up() -> bool:
            return list((await self.live()).values()) == ["Up"] * CAP

        await self.wait("three calls answered", all_up, 20)
        up = set(await self.live())
        assert self.daemon.proc is not None
        self.daemon.proc.send_signal(signal.SIGTERM)
        return time.time(), up

    async def exit_code(self, timeout: float) -> tuple[int, float]:
        assert self.daemon.proc is not None
        code = await asyncio.to_thread(self.daemon.proc.wait, timeout)
        return code, time.time()

    def rows(self, sql: str) -> list[sqlite3.Row]:
        with sqlite3.connect(self.db) as conn:
            conn.row_factory = sqlite3.Row
            return conn.execute(sql, (self.cid,)).fetchall()

    def contacts(self) -> dict[str, sqlite3.Row]:
        """Phone number -> contact row."""
        return {r["phone_e164"]: r for r in self.rows("SELECT * FROM contact WHERE campaign_id = ?")}

    def attempts(self) -> dict[str, list[sqlite3.Row]]:
        """Phone number -> its attempt rows, oldest first."""
        out: dict[str, list[sqlite3.Row]] = {}
        for r in self.rows("SELECT a.*, c.phone_e164 FROM attempt a JOIN contact c ON c.id = a.contact_id "
                           "WHERE a.campaign_id = ? ORDER BY a.id"):
            out.setdefault(r["phone_e164"], []).append(r)
        return out

    def log(self, start: int) -> list[dict[str, Any]]:
        """The JSON log records of the ``start``-th daemon start (0-based)."""
        text = self.daemon.log_path.read_text(encoding="utf-8", errors="replace")
        chunk = text.split("\n==== start ")[start + 1]
        return [json.loads(line) for line in chunk.splitlines() if line.startswith("{")]

    def cdr(self) -> list[str]:
        """Channel ids of the campaign's dialer legs in Asterisk's CDR."""
        prefix = f"dlr-{self.cid[4:16]}-"
        return sorted(r[16] for r in cdr_rows(self.since) if r[16].startswith(prefix))

    def assert_real_talk(self, attempt: sqlite3.Row) -> None:
        """dialerd's talk time is Asterisk's (CDR billsec, whole seconds) for the same channel: the call
        was followed to its real end. Not a fixed 20 s: a loaded box plays the far end's audio slower."""
        (billsec,) = [int(r[13]) for r in cdr_rows(self.since) if r[16] == attempt["channel_id"]]
        assert billsec >= 15 and abs(attempt["talk_seconds"] - billsec) <= 1.5, (dict(attempt), billsec)


def _ts(value: str | None) -> float:
    assert value is not None
    return datetime.fromisoformat(value).replace(tzinfo=UTC).timestamp()


def _index(records: list[dict[str, Any]], msg: str) -> int:
    for i, r in enumerate(records):
        if r.get("msg") == msg:
            return i
    raise AssertionError(f"no {msg!r} in the log: {[r.get('msg') for r in records]}")


@pytest.mark.timeout(90)
async def test_sigterm_stops_dialling_and_follows_live_calls_to_their_end(tmp_path: Path) -> None:
    grace = 40.0
    run = Run(tmp_path, grace)
    try:
        signalled, up_at_signal = await run.sigterm_when_calls_are_up()
        # Draining: the process is still there and still answers while it follows the calls.
        await asyncio.sleep(1.0)
        assert run.daemon.alive(), "dialerd exited without waiting for its calls"
        health = await asyncio.to_thread(run.daemon.wait_health, False, 5.0)
        assert "exited" not in health and health["status"] in ("ok", "degraded"), health

        async def no_calls() -> bool:
            return not await run.live()

        calls_done = await run.wait("the calls end on Asterisk", no_calls, grace)
        code, exited = await run.exit_code(grace + 10)
    finally:
        run.daemon.kill()
        await run.watch.stop()
    took = exited - signalled
    print(f"SIGTERM -> exit {took:.2f} s; last call ended {calls_done - signalled:.2f} s after the signal, "
          f"exit {exited - calls_done:.2f} s after it")
    assert code == 0
    assert took <= grace + 5
    # It waited for the calls (the watch polls every 50 ms), then went at once.
    assert exited >= calls_done - 0.2 and exited - calls_done < 8.0, (calls_done, exited)
    # No origination after the signal: Asterisk only ever saw the three calls that were up then.
    assert run.seen() == up_at_signal and len(up_at_signal) == CAP
    assert run.cdr() == sorted(up_at_signal)
    # Their outcomes are in the database: completed after ~20 s of talk; the rest never dialled.
    contacts, attempts = run.contacts(), run.attempts()
    for number in LONG:
        assert contacts[number]["status"] == "completed", dict(contacts[number])
        (a,) = attempts[number]
        assert a["state"] == "ended" and a["channel_id"] in up_at_signal
        run.assert_real_talk(a)
        assert _ts(a["ended_at"]) > signalled
    for number in SHORT:
        assert contacts[number]["status"] == "pending" and contacts[number]["attempts"] == 0
        assert number not in attempts
    (campaign,) = run.rows("SELECT status FROM campaign WHERE id = ?")
    assert campaign["status"] == "running"  # a shutdown is not a stop: the next start carries on
    # The staged shutdown, in order.
    records = run.log(0)
    order = [_index(records, m) for m in ("shutting down", "runner stopped", "stopped")]
    assert order == sorted(order), order
    # The "originated" record is written after the originate reply and its database write, so the last
    # call's record can follow the signal on a busy box; any such record must be one of the calls that
    # were already up on Asterisk when the signal was sent (requested before it).
    late = {r.get("channel_id") for r in records[order[0]:] if r.get("action") == "originate"}
    assert late <= up_at_signal, (late, up_at_signal)
    assert not [r for r in records if r.get("action") == "shutdown" and r.get("calls_in_flight")]


@pytest.mark.timeout(100)
async def test_short_grace_leaves_calls_up_and_the_restart_follows_them(tmp_path: Path) -> None:
    grace = 2.0
    run = Run(tmp_path, grace)
    try:
        signalled, up_at_signal = await run.sigterm_when_calls_are_up()
        code, exited = await run.exit_code(grace + 10)
        took = exited - signalled
        # Not torn down: Asterisk still has the three calls, answered, after dialerd is gone.
        assert await run.live() == dict.fromkeys(up_at_signal, "Up")
        contacts, attempts = run.contacts(), run.attempts()
        for number in LONG:
            assert contacts[number]["status"] == "connected", dict(contacts[number])
            assert [a["state"] for a in attempts[number]] == ["answered"]
        for number in SHORT:
            assert contacts[number]["status"] == "pending" and number not in attempts

        restarted = time.time()
        await asyncio.to_thread(run.daemon.start)
        status, body = await run.call("GET", f"/api/v1/campaigns/{run.cid}")
        assert status == 200 and body["status"] == "running", body
        deadline = time.monotonic() + 60
        while body["status"] != "completed":
            assert time.monotonic() < deadline, f"campaign not completed after the restart: {body['contacts']}"
            await asyncio.sleep(0.5)
            status, body = await run.call("GET", f"/api/v1/campaigns/{run.cid}")
        assert await asyncio.to_thread(run.daemon.terminate, 30) == 0
    finally:
        run.daemon.kill()
        await run.watch.stop()
    print(f"SIGTERM -> exit {took:.2f} s with grace {grace:g} s; calls left up: {len(up_at_signal)}")
    assert code == 0 and took < grace + 5, took
    first, second = run.log(0), run.log(1)
    assert [r for r in first if r.get("action") == "shutdown" and r.get("calls_in_flight") == CAP], first[-8:]
    assert [r for r in second if r.get("action") == "recover" and r.get("attempts") == CAP], second[:20]

    contacts, attempts = run.contacts(), run.attempts()
    assert {c["status"] for c in contacts.values()} == {"completed"}
    assert all(c["attempts"] == 1 for c in contacts.values())
    # The calls left up were found again and followed to their real end: ~20 s of talk in total.
    for number in LONG:
        (a,) = attempts[number]
        assert a["channel_id"] in up_at_signal and a["state"] == "ended" and a["reason"] is None, dict(a)
        assert _ts(a["answered_at"]) < signalled < restarted < _ts(a["ended_at"]), dict(a)
        run.assert_real_talk(a)
    # The pending ones were dialled after the restart, once each.
    for number in SHORT:
        (a,) = attempts[number]
        assert _ts(a["created_at"]) > restarted and a["state"] == "ended", dict(a)
    # Asterisk dialled every contact exactly once: nothing lost, nothing dialled again.
    dialled = sorted(a["channel_id"] for rows in attempts.values() for a in rows)
    assert len(dialled) == len(LONG + SHORT)
    assert run.cdr() == dialled
    assert sorted(run.seen()) == dialled
