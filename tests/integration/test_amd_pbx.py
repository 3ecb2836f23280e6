"""Answering-machine detection against the real local Asterisk, through ARI and AMI (issue 12 item 2), on
SQLite and PostgreSQL.

Three campaigns with ``amd=on`` run at once on the simulated carrier's 555-02XX ranges:
- ``on_machine=hangup``: a person (10-49) completes as ``human``, silence without RTP (90-99) as
  ``unknown``, a voicemail (50-89) fails with reason ``machine`` right after the verdict (~2.2 s);
- ``on_machine=voicemail:beep``: the voicemail completes as ``machine``; [dialerd-amd] waited for the
  greeting to end and played ``beep`` (seen in Asterisk's own Newexten events for the dialer channel),
  then hung up well before the far end would have (~20 s);
- ``on_machine=connect``: the voicemail completes as ``machine`` and went to the destination
  ([dialerd-demo], its Background seen in Newexten), lasting as long as the far end keeps the line.
The ``connected`` event of each call that reaches the destination carries ``answered_by``.
A separate AMI connection (no event filter) records which dialplan applications each dialer channel ran.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from panoramisk import Manager
from panoramisk.message import Message

from tests.conftest import Api
from tests.live import all_contacts, live_api, read_sse, wait_status
from tests.pbx_env import local_pbx_env

pytestmark = [pytest.mark.pbx, pytest.mark.timeout(120)]

PERSON, VOICEMAIL, SILENCE = "+14155550221", "+14155550271", "+14155550296"


class DialplanWatch:
    """Every application each channel runs (AMI Newexten), by channel id (Uniqueid); names in lower case
    (Asterisk spells them as the dialplan does, e.g. BackGround)."""

    def __init__(self) -> None:
        env = local_pbx_env()
        self.manager = Manager(host=env["DIALERD_AMI_HOST"], port=int(env["DIALERD_AMI_PORT"]),
                               username=env["DIALERD_AMI_USER"], secret=env["DIALERD_AMI_SECRET"], ping_delay=0)
        self.apps: dict[str, list[tuple[str, str, str]]] = {}  # channel id -> (context, application, data)

    def _on_newexten(self, _: Manager, msg: Message) -> None:
        self.apps.setdefault(str(msg.get("Uniqueid", "")), []).append(
            (str(msg.get("Context", "")), str(msg.get("Application", "")).lower(), str(msg.get("AppData", ""))))

    async def __aenter__(self) -> DialplanWatch:
        self.manager.register_event("Newexten", self._on_newexten)
        await self.manager.connect()
        return self

    async def __aexit__(self, *_: object) -> None:
        self.manager.close()


async def _start(api: Api, csv: str, on_machine: str) -> str:
    status, body = await api.create(csv, amd="on", on_machine=on_machine, max_concurrent_calls=3,
                                    caller_id="+14155550000")
    assert status == 201, body
    assert (body["amd"], body["on_machine"]) == ("on", on_machine)
    cid = str(body["id"])
    status, started = await api.call("POST", f"/api/v1/campaigns/{cid}/start")
    assert status == 200, started
    return cid


async def _finish(api: Api, cid: str) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    events = await read_sse(api, cid, max_seconds=60)
    await wait_status(api, cid, "completed", timeout=60)
    contacts = {c["phone_number"]: c for c in await all_contacts(api, cid)}
    status, page = await api.call("GET", f"/api/v1/campaigns/{cid}/contacts?include=attempt_history")
    assert status == 200, page
    for c in page["contacts"]:
        contacts[c["phone_number"]] = c
    return contacts, [e.data for e in events if e.event == "connected" and e.data is not None]


def _apps(watch: DialplanWatch, contact: dict[str, Any]) -> list[tuple[str, str, str]]:
    [attempt] = contact["attempt_history"]
    return watch.apps.get(attempt["channel_id"], [])


@pytest.mark.parametrize("driver", ["ari", "ami"])
async def test_amd_verdicts_and_on_machine_through_asterisk(tmp_path: Path, driver: str, db_url: str) -> None:
    async with DialplanWatch() as watch, live_api(tmp_path, driver, db_url=db_url) as api:
        hangup = await _start(api, f"phone_number\n{PERSON}\n{VOICEMAIL}\n{SILENCE}\n", "hangup")
        voicemail = await _start(api, f"phone_number\n{VOICEMAIL}\n", "voicemail:beep")
        connect = await _start(api, f"phone_number\n{VOICEMAIL}\n", "connect")
        (by_hangup, connected_h), (by_vm, connected_vm), (by_connect, connected_c) = await asyncio.gather(
            _finish(api, hangup), _finish(api, voicemail), _finish(api, connect))

    person, machine, silence = by_hangup[PERSON], by_hangup[VOICEMAIL], by_hangup[SILENCE]
    assert (person["status"], person["answered_by"]) == ("completed", "human"), person
    assert person["amd_cause"].startswith("HUMAN-")
    assert (silence["status"], silence["answered_by"]) == ("completed", "unknown"), silence
    assert silence["amd_cause"].startswith("TOOLONG-")
    assert (machine["status"], machine["failure_reason"], machine["answered_by"]) == ("failed", "machine",
                                                                                      "machine"), machine
    assert machine["amd_cause"].startswith("LONGGREETING-")
    assert machine["attempt_history"][0]["outcome"] == "machine"
    # connected carries the verdict; the machine hung up on was never connected.
    assert sorted(e["answered_by"] for e in connected_h) == ["human", "unknown"], connected_h
    # Hung up by [dialerd-amd] right after the verdict: no sound, no destination.
    machine_apps = [app for _, app, _ in _apps(watch, machine)]
    assert "amd" in machine_apps and "playback" not in machine_apps and "background" not in machine_apps
    assert ("dialerd-demo", "background", "hello-world,m") in _apps(watch, person)  # the destination

    left = by_vm[VOICEMAIL]
    assert (left["status"], left["answered_by"]) == ("completed", "machine"), left
    assert left["amd_cause"].startswith("LONGGREETING-")
    assert connected_vm == [] or [e["answered_by"] for e in connected_vm] == ["machine"]
    apps = _apps(watch, left)
    names = [app for _, app, _ in apps]
    # The greeting's end awaited, then the sound, then the hang-up; never the destination.
    assert names.index("amd") < names.index("waitforsilence") < names.index("playback"), apps
    assert ("dialerd-amd", "playback", "beep") in apps and "background" not in names
    # The greeting (8.5 s) + beep + 2 s of silence + the sound: well before the far end's 20 s.
    talk = left["attempt_history"][0]["talk_seconds"]
    assert 9.0 <= talk <= 16.0, left

    routed = by_connect[VOICEMAIL]
    assert (routed["status"], routed["answered_by"]) == ("completed", "machine"), routed
    assert [e["answered_by"] for e in connected_c] == ["machine"], connected_c
    assert ("dialerd-demo", "background", "hello-world,m") in _apps(watch, routed)
    assert routed["attempt_history"][0]["talk_seconds"] >= 17.0, routed  # the far end ends it (~20 s)
