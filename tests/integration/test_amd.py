"""Answering-machine detection over the API with the in-package fake PBX, on SQLite and PostgreSQL (issue 12
item 2): the form fields ``amd`` and ``on_machine`` and their 400s, PATCH, the campaign JSON; the fake's
555-02XX verdicts (10-49 person, 50-89 voicemail, 90-99 silence) through the follower's decision:
``answered_by`` on contacts and attempts, a machine with ``hangup`` failed with reason ``machine`` and
retried when ``retry_rules`` names it, ``voicemail:`` and ``connect`` completed, the ``connected`` event
carrying ``answered_by``. The real-Asterisk side is tests/integration/test_amd_pbx.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select, update

from dialerd.pbx.fake import FakePbx
from dialerd.store.base import T_CONTACT, T_EVENT
from dialerd.timestamps import utcnow
from tests.conftest import Api, make_key, start_daemon, test_settings

pytestmark = pytest.mark.timeout(60)

PERSON, VOICEMAIL, SILENCE = "+14155550217", "+14155550263", "+14155550294"
CSV = f"phone_number\n{PERSON}\n{VOICEMAIL}\n{SILENCE}\n"


@pytest.mark.parametrize(("field", "raw", "problem"), [
    ("amd", "yes", "must be off or on"),
    ("on_machine", "beep", "must be hangup, voicemail:SOUND or connect"),
    ("on_machine", "voicemail", "voicemail needs a sound"),
    ("on_machine", "voicemail:", "voicemail needs a sound"),
    ("on_machine", "voicemail:../../etc/passwd", "sound must be an Asterisk sound name"),
    ("on_machine", "voicemail:beep&hello", "sound must be an Asterisk sound name"),
    ("on_machine", "voicemail:beep,2", "sound must be an Asterisk sound name"),
    ("on_machine", "hangup:now", "hangup takes no argument"),
])
async def test_bad_amd_fields_are_400_naming_the_field(offline_api: Api, field: str, raw: str, problem: str) -> None:
    api = offline_api
    for send in ("form", "json"):
        if send == "form":
            status, body = await api.create(CSV, **{field: raw})
        else:
            status, body = await api.call("POST", "/api/v1/campaigns", json={
                "name": "x", field: raw, "contacts": [{"phone_number": PERSON}]})
        assert status == 400, body
        assert body["error_id"] == "invalid_field" and body["details"] == {"field": field}, body
        assert body["error"].startswith(f"{field}: ") and problem in body["error"], body


async def test_fields_default_show_in_the_campaign_and_patch_changes_them(offline_api: Api) -> None:
    api = offline_api
    status, plain = await api.create(CSV)
    assert status == 201 and (plain["amd"], plain["on_machine"]) == ("off", "hangup"), plain
    status, created = await api.create(CSV, amd="ON", on_machine="Voicemail:custom/leave-a_message-2")
    assert status == 201, created
    assert (created["amd"], created["on_machine"]) == ("on", "voicemail:custom/leave-a_message-2")
    cid = created["id"]
    status, patched = await api.call("PATCH", f"/api/v1/campaigns/{cid}", json={"on_machine": "connect"})
    assert status == 200 and patched["on_machine"] == "connect", patched
    status, patched = await api.call("PATCH", f"/api/v1/campaigns/{cid}", json={"amd": "off"})
    assert status == 200 and (patched["amd"], patched["on_machine"]) == ("off", "connect"), patched
    status, body = await api.call("PATCH", f"/api/v1/campaigns/{cid}", json={"on_machine": "voicemail:a..b"})
    assert status == 400 and body["details"] == {"field": "on_machine"}, body
    status, got = await api.call("GET", f"/api/v1/campaigns/{cid}")
    assert status == 200 and (got["amd"], got["on_machine"]) == ("off", "connect")
    status, page = await api.call("GET", f"/api/v1/campaigns/{cid}/contacts")
    assert status == 200 and {(c["answered_by"], c["amd_cause"]) for c in page["contacts"]} == {(None, None)}


# ---- dialling with the fake PBX ------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def dialling_api(db_url: str, pbx: FakePbx) -> AsyncIterator[Api]:
    daemon = await start_daemon(test_settings(db_url, shutdown_grace_period=0.0), pbx)
    try:
        async with aiohttp.ClientSession() as session:
            yield Api(f"http://127.0.0.1:{daemon.port}", session, {"acme": await make_key(daemon, "acme")}, daemon)
    finally:
        await daemon.stop()


async def _contacts(api: Api, cid: str) -> dict[str, dict[str, Any]]:
    status, page = await api.call("GET", f"/api/v1/campaigns/{cid}/contacts?include=attempt_history")
    assert status == 200, page
    return {c["phone_number"]: c for c in page["contacts"]}


async def _until(api: Api, cid: str, check: Callable[[dict[str, dict[str, Any]]], bool]) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while True:
        contacts = await _contacts(api, cid)
        if check(contacts):
            return contacts
        assert time.monotonic() < deadline, contacts
        await asyncio.sleep(0.02)


def _over(contact: dict[str, Any], attempts: int = 1) -> bool:
    history = contact["attempt_history"]
    # The contact and its attempts are two reads: the contact's status must be settled too.
    return len(history) == attempts and history[-1]["ended_at"] is not None and contact["status"] in (
        "pending", "failed", "completed")


async def _events(api: Api, cid: str) -> list[tuple[str, dict[str, Any]]]:
    async with api.daemon.store.read() as conn:
        rows = (await conn.execute(select(T_EVENT.c.kind, T_EVENT.c.payload)
                                   .where(T_EVENT.c.campaign_id == cid).order_by(T_EVENT.c.id))).all()
    return [(str(kind), dict(payload)) for kind, payload in rows]


async def _run(api: Api, **fields: Any) -> tuple[str, dict[str, dict[str, Any]]]:
    status, created = await api.create(CSV, **fields)
    assert status == 201, created
    cid = created["id"]
    assert (await api.call("POST", f"/api/v1/campaigns/{cid}/start"))[0] == 200
    return cid, await _until(api, cid, lambda cs: all(_over(c) for c in cs.values()))


@pytest.mark.parametrize("on_machine", ["hangup", "voicemail:beep", "connect"])
async def test_verdicts_per_range_and_what_a_machine_gets(db_url: str, on_machine: str) -> None:
    pbx = FakePbx()
    async with dialling_api(db_url, pbx) as api:
        cid, contacts = await _run(api, amd="on", on_machine=on_machine)
        events = await _events(api, cid)
    assert all(r.amd is not None and str(r.amd.on_machine) == on_machine for r in pbx.requests)
    person, machine, silence = contacts[PERSON], contacts[VOICEMAIL], contacts[SILENCE]
    assert (person["status"], person["answered_by"], person["amd_cause"]) == ("completed", "human", "HUMAN-800-800")
    assert (silence["status"], silence["answered_by"], silence["amd_cause"]) == ("completed", "unknown",
                                                                                 "TOOLONG-4900")
    assert (machine["answered_by"], machine["amd_cause"]) == ("machine", "LONGGREETING-1500-1500")
    [attempt] = machine["attempt_history"]
    assert (attempt["answered_by"], attempt["amd_cause"]) == ("machine", "LONGGREETING-1500-1500")
    if on_machine == "hangup":
        assert (machine["status"], machine["failure_reason"]) == ("failed", "machine")
        assert attempt["outcome"] == attempt["failure_reason"] == "machine"
    else:
        assert (machine["status"], machine["failure_reason"], attempt["outcome"]) == ("completed", None, "completed")
    # connected carries answered_by, and comes once the verdict is in; a machine the dialplan hangs up on or
    # leaves a message to is never connected to the destination (its end carries the verdict).
    by_contact: dict[int, list[tuple[str, dict[str, Any]]]] = {}
    for kind, payload in events:
        if "contact_id" in payload:
            by_contact.setdefault(int(payload["contact_id"]), []).append((kind, payload))
    kinds = {c["phone_number"]: [k for k, _ in by_contact[c["id"]]] for c in contacts.values()}
    assert kinds[PERSON] == kinds[SILENCE] == ["originated", "connected", "completed"], kinds
    connected = {c["phone_number"]: p["answered_by"] for c in contacts.values()
                 for k, p in by_contact[c["id"]] if k == "connected"}
    assert (connected[PERSON], connected[SILENCE]) == ("human", "unknown")
    ends = {c["phone_number"]: by_contact[c["id"]][-1][1]["answered_by"] for c in contacts.values()}
    assert ends == {PERSON: "human", VOICEMAIL: "machine", SILENCE: "unknown"}
    if on_machine == "hangup":
        assert kinds[VOICEMAIL] == ["originated", "failed"], kinds
    else:
        # connect: answered when the verdict came; voicemail: the answer is recorded with the end (the
        # call never went to the destination), so connected and completed come together.
        assert kinds[VOICEMAIL] == ["originated", "connected", "completed"], kinds
        assert connected[VOICEMAIL] == "machine"


async def test_amd_off_sends_no_plan_and_every_answer_is_unknown(db_url: str) -> None:
    pbx = FakePbx()
    async with dialling_api(db_url, pbx) as api:
        _cid, contacts = await _run(api)
    assert all(r.amd is None for r in pbx.requests)
    assert {(c["status"], c["answered_by"], c["amd_cause"]) for c in contacts.values()} == {
        ("completed", "unknown", None)}


async def test_machine_is_retried_when_retry_rules_name_it(db_url: str) -> None:
    pbx = FakePbx()
    async with dialling_api(db_url, pbx) as api:
        status, created = await api.create(f"phone_number\n{VOICEMAIL}\n", amd="on", retry_rules="machine=1@60",
                                           retry_delay_seconds=600)
        assert status == 201 and created["retry_rules"] == "machine=1@60", created
        cid = created["id"]
        assert (await api.call("POST", f"/api/v1/campaigns/{cid}/start"))[0] == 200
        first = await _until(api, cid, lambda cs: _over(cs[VOICEMAIL]))
        assert (first[VOICEMAIL]["status"], first[VOICEMAIL]["failure_reason"]) == ("pending", "machine")
        assert first[VOICEMAIL]["next_attempt_at"] is not None
        async with api.daemon.store.write() as conn:  # the delay runs out now
            await conn.execute(update(T_CONTACT).where(T_CONTACT.c.campaign_id == cid)
                               .values(next_attempt_at=utcnow() - timedelta(seconds=1),
                                       next_eligible_at=utcnow() - timedelta(seconds=1)))
        api.daemon.dispatcher.slots.poke(cid)
        second = await _until(api, cid, lambda cs: _over(cs[VOICEMAIL], 2))
    contact = second[VOICEMAIL]
    assert (contact["status"], contact["failure_reason"], contact["attempts"]) == ("failed", "machine", 2)
    assert [a["outcome"] for a in contact["attempt_history"]] == ["machine", "machine"]
    assert len(pbx.requests) == 2
