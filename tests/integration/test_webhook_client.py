"""Webhooks from the user's side (issue 12 item 6): examples/webhook_receiver.py as a subprocess on loopback,
both clients and ``dialerctl`` against the whole daemon (offline PBX, SQLite and PostgreSQL) with its webhook
pointed at that receiver: the fields at create and PATCH, the secret in no answer, ``webhook()`` and
``dialerctl webhook`` showing the deliveries the receiver acknowledged.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import secrets
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from dialerd import ctl
from dialerd.client import AsyncDialerd, Dialerd, InvalidRequest
from dialerd.domain.webhooks import signature
from tests.conftest import OfflinePbx, make_key, start_daemon, test_settings

pytestmark = pytest.mark.timeout(90)

RECEIVER = Path(__file__).resolve().parents[2] / "examples" / "webhook_receiver.py"
CSV = b"phone_number\n+14155550100\n+14155550101\n"


@dataclass
class Receiver:
    url: str
    proc: asyncio.subprocess.Process
    secret: str


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """The example receiver on a free loopback port, its secret from the environment."""
    secret = secrets.token_hex(24)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(RECEIVER), "--port", "0", env={**os.environ, "WEBHOOK_SECRET": secret},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        line = (await asyncio.wait_for(proc.stderr.readline(), 20)).decode()
        match = re.search(r"http://[\d.]+:\d+/", line)
        assert match, line
        yield Receiver(match.group(0) + "dialerd", proc, secret)
    finally:
        if proc.returncode is None:
            proc.terminate()
        await asyncio.wait_for(proc.wait(), 20)


async def stop_and_read(receiver: Receiver) -> list[dict[str, Any]]:
    """Stop the receiver; the events it printed, one JSON line each."""
    receiver.proc.terminate()
    assert receiver.proc.stdout is not None
    out = await asyncio.wait_for(receiver.proc.stdout.read(), 20)
    await asyncio.wait_for(receiver.proc.wait(), 20)
    return [json.loads(line) for line in out.decode().splitlines() if line.strip()]


async def post(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]) -> int:
    async with session.post(url, data=body, headers={"Content-Type": "application/json", **headers}) as resp:
        await resp.read()
        return resp.status


async def test_the_example_receiver_verifies_dedupes_and_prints(receiver: Receiver) -> None:
    body = json.dumps({"id": 7, "type": "contact.updated", "data": {"status": "completed"}}).encode()
    now = int(time.time())
    good = {"Dialerd-Signature": signature(receiver.secret, now, body), "Dialerd-Event-Id": "7",
            "Dialerd-Event-Type": "contact.updated"}
    async with aiohttp.ClientSession() as session:
        assert await post(session, receiver.url, body, good) == 200
        assert await post(session, receiver.url, body, good) == 200  # a redelivery: acknowledged again
        wrong_key = {**good, "Dialerd-Signature": signature("x" * 32, now, body)}
        assert await post(session, receiver.url, body, wrong_key) == 400
        assert await post(session, receiver.url, body + b" ", good) == 400  # the body changed after signing
        stale = {**good, "Dialerd-Signature": signature(receiver.secret, now - 301, body), "Dialerd-Event-Id": "8"}
        assert await post(session, receiver.url, body, stale) == 400
        assert await post(session, receiver.url, body, {**good, "Dialerd-Signature": "v1=00"}) == 400
        assert await post(session, receiver.url, body, {**good, "Dialerd-Signature": ""}) == 400
        other = json.dumps({"id": 9}).encode()
        signed = {**good, "Dialerd-Event-Id": "9", "Dialerd-Signature": signature(receiver.secret, now - 200, other)}
        assert await post(session, receiver.url, other, signed) == 200  # within the 5 minutes
    printed = await stop_and_read(receiver)
    assert [(e["id"], e["type"]) for e in printed] == [("7", "contact.updated"), ("9", "contact.updated")]
    assert printed[0]["event"]["data"] == {"status": "completed"}


@dataclass
class Rig:
    base: str
    key: str


@pytest.fixture
async def rig(db_url: str) -> AsyncIterator[Rig]:
    """The daemon (offline PBX) allowed to deliver to loopback."""
    daemon = await start_daemon(
        test_settings(db_url, shutdown_grace_period=0.0, webhooks_allow_private=True), OfflinePbx())
    try:
        yield Rig(f"http://127.0.0.1:{daemon.port}", await make_key(daemon, "acme"))
    finally:
        await daemon.stop()


def assert_no_secret(secret: str, *answers: Any) -> None:
    for answer in answers:
        text = answer if isinstance(answer, str) else json.dumps(answer)
        assert secret not in text
        assert "webhook_secret" not in text


async def wait_delivered(client: AsyncDialerd, cid: str, at_least: int = 1) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        state = dict(await client.campaigns.webhook(cid))
        if state["delivered_through"] >= at_least and state["pending"] == 0:
            return state
        assert time.monotonic() < deadline, state
        await asyncio.sleep(0.1)


async def test_clients_create_update_and_read_the_webhook(rig: Rig, receiver: Receiver) -> None:
    async with AsyncDialerd(rig.base, rig.key) as client:
        created = await client.campaigns.create(CSV, name="hooks", webhook_url=receiver.url,
                                                webhook_secret=receiver.secret, amd="on", on_machine="hangup")
        cid = created["id"]
        assert (created["webhook_url"], created["amd"], created["on_machine"]) == (receiver.url, "on", "hangup")
        await client.campaigns.start(cid)  # a state change: its event is POSTed to the receiver
        state = await wait_delivered(client, cid)
        assert state["url"] == receiver.url and state["dead"] == 0 and state["last_error"] is None
        assert state["last_attempt_at"] is not None and state["next_attempt_at"] is None
        await client.campaigns.pause(cid)
        state = await wait_delivered(client, cid, state["delivered_through"] + 1)
        updated = await client.campaigns.update(cid, on_machine="voicemail:beep", amd="on", timezone="Europe/Berlin",
                                                calling_hours="mon-fri 09:00-20:00")
        assert (updated["on_machine"], updated["timezone"]) == ("voicemail:beep", "Europe/Berlin")
        plain = await client.campaigns.create(CSV, name="no hooks")
        none = await client.campaigns.webhook(plain["id"])
        assert none == {"url": None, "delivered_through": 0, "pending": 0, "dead": 0, "last_error": None,
                        "last_attempt_at": None, "next_attempt_at": None}
        with pytest.raises(InvalidRequest) as refused:
            await client.campaigns.update(plain["id"], webhook_secret="s" * 32)  # a secret alone delivers nothing
        assert refused.value.status == 400
        answers = [created, updated, await client.campaigns.get(cid), await client.campaigns.list(), state]
    assert_no_secret(receiver.secret, *answers)

    def blocking() -> tuple[Any, Any, Any]:
        sync = Dialerd(rig.base, rig.key)
        again = sync.campaigns.create(CSV, name="sync hooks", webhook_url=receiver.url,
                                      webhook_secret=receiver.secret)
        patched = sync.campaigns.update(plain["id"], webhook_url=receiver.url, webhook_secret=receiver.secret)
        sync.campaigns.start(again["id"])
        sync.campaigns.start(plain["id"])
        return again, patched, sync.campaigns.webhook(cid)

    again, patched, state = await asyncio.to_thread(blocking)
    assert again["webhook_url"] == receiver.url and patched["webhook_url"] == receiver.url
    assert state["url"] == receiver.url and state["delivered_through"] >= 1
    assert_no_secret(receiver.secret, again, patched, state)
    async with AsyncDialerd(rig.base, rig.key) as client:
        for campaign in (again, patched):
            await wait_delivered(client, campaign["id"])
        await client.campaigns.pause(patched["id"])
        gone = await client.campaigns.update(patched["id"], webhook_url="", webhook_secret="")
        assert gone["webhook_url"] is None
        assert (await client.campaigns.webhook(patched["id"]))["url"] is None
    printed = await stop_and_read(receiver)
    ids = [e["id"] for e in printed]
    assert len(ids) == len(set(ids)) and len(ids) >= 3  # each event once, from the three campaigns


async def test_dialerctl_webhook_create_and_update(rig: Rig, receiver: Receiver, tmp_path: Path) -> None:
    contacts = tmp_path / "contacts.csv"
    contacts.write_bytes(CSV)
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text(receiver.secret + "\n", encoding="utf-8")

    def run(*argv: str) -> tuple[int, str]:
        out = io.StringIO()
        return ctl.main(["--url", rig.base, "--api-key", rig.key, *argv], out), out.getvalue()

    code, out = await asyncio.to_thread(run, "campaigns", "create", str(contacts), "--name", "ctl hooks", "--webhook-url",
                                        receiver.url, "--webhook-secret-file", str(secret_file), "--amd", "on",
                                        "--on-machine", "connect", "--json")
    assert code == 0, out
    created = json.loads(out)
    cid = created["id"]
    assert (created["webhook_url"], created["amd"], created["on_machine"]) == (receiver.url, "on", "connect")
    code, out = await asyncio.to_thread(run, "start", cid)
    assert code == 0, out
    async with AsyncDialerd(rig.base, rig.key) as client:
        await wait_delivered(client, cid)
    code, out = await asyncio.to_thread(run, "pause", cid)
    assert code == 0, out
    async with AsyncDialerd(rig.base, rig.key) as client:
        await wait_delivered(client, cid, 2)
    code, human = await asyncio.to_thread(run, "webhook", cid)
    assert code == 0
    lines = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in human.splitlines())
    assert lines["url"] == receiver.url and lines["pending"] == "0" and lines["dead"] == "0"
    assert re.fullmatch(r"event \d+", lines["delivered through"]) and lines["last error"] == "-"
    code, out = await asyncio.to_thread(run, "campaigns", "webhook", cid, "--json")
    assert code == 0 and json.loads(out)["url"] == receiver.url and json.loads(out)["delivered_through"] >= 1

    # The secret from stdin (`--webhook-secret -`), as a shell runs it: never on the command line.
    new_secret = secrets.token_hex(20)
    env = {**os.environ, "DIALERD_URL": rig.base, "DIALERD_API_KEY": rig.key}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dialerd.ctl", "update", cid, "--webhook-secret", "-", "--name", "renamed", env=env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out_b, err = await asyncio.wait_for(proc.communicate(new_secret.encode() + b"\n"), 30)
    assert proc.returncode == 0, err
    shown = out_b.decode()
    assert re.search(r"^name\s+renamed$", shown, re.M) and re.search(rf"^webhook url\s+{re.escape(receiver.url)}$",
                                                                      shown, re.M), shown
    code, out = await asyncio.to_thread(run, "update", cid, "--webhook-url", "", "--json")
    assert code == 0 and json.loads(out)["webhook_url"] is None
    code, human = await asyncio.to_thread(run, "webhook", cid)
    assert code == 0 and "has no webhook" in human and re.search(r"^url\s+-$", human, re.M)
    code, _ = await asyncio.to_thread(run, "update", cid)
    assert code == 2  # nothing to change
    code, _ = await asyncio.to_thread(run, "update", cid, "--webhook-secret-file", str(tmp_path / "missing"))
    assert code == 2
    code, _ = await asyncio.to_thread(run, "update", cid, "--webhook-secret", "short")
    assert code == 1  # the daemon refuses it (400)
    async with AsyncDialerd(rig.base, rig.key) as client:
        final = await client.campaigns.get(cid)
    assert_no_secret(receiver.secret, created, human, out, shown, final)
    assert_no_secret(new_secret, shown, final)
