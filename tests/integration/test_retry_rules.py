"""Outcome rules for retries over the API, on SQLite and PostgreSQL (issue 11 item 3): the form field and
its 400s (nothing written), PATCH, the campaign JSON, ``include=attempt_history``, and one budget per
contact decided by the follower, with the in-package fake PBX.

The rules' delays are at least 60 s; instead of waiting, a test makes a pending retry due at once (its
``next_attempt_at``) and wakes the campaign's runner, as the delay running out would.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select, update

from dialerd.client.aio import AsyncDialerd
from dialerd.client.errors import DialerdApiError
from dialerd.pbx.fake import BUSY, RING_FOREVER, FakeOutcome, FakePbx
from dialerd.store.base import T_CAMPAIGN, T_CONTACT
from dialerd.timestamps import utcnow
from tests.conftest import Api, make_key, start_daemon, test_settings
from tests.e2e.test_dialerctl import Ctl

pytestmark = pytest.mark.timeout(60)

CSV = "phone_number\n+14155551001\n+14155551002\n"


async def _count_campaigns(api: Api) -> int:
    async with api.daemon.store.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(T_CAMPAIGN))).scalar_one())


@pytest.mark.parametrize(("raw", "problem"), [
    ("invalid_number=1@60", "invalid_number is never retried"),
    ("busy=1@60; rejected=2@60", "entry 2 'rejected=2@60': rejected is never retried"),
    ("voicemail=1@60", "unknown reason 'voicemail'"),
    ("busy=1@60; busy=2@120", "busy has a rule already"),
    ("busy=3", "must be REASON=RETRIES@DELAY"),
    ("busy=11@60", "RETRIES must be from 0 to 10, got 11"),
    ("busy=1@30", "DELAY must be from 60 to 604800 seconds, got 30"),
])
async def test_bad_retry_rules_are_400_naming_the_field_and_nothing_is_written(
    offline_api: Api, raw: str, problem: str
) -> None:
    api = offline_api
    before = await _count_campaigns(api)
    for send in ("form", "json"):
        if send == "form":
            status, body = await api.create(CSV, retry_rules=raw)
        else:
            status, body = await api.call("POST", "/api/v1/campaigns", json={
                "name": "x", "retry_rules": raw, "contacts": [{"phone_number": "+14155551001"}]})
        assert status == 400, body
        assert body["error_id"] == "invalid_field" and body["details"] == {"field": "retry_rules"}
        assert body["error"].startswith("retry_rules: ") and problem in body["error"], body
    assert await _count_campaigns(api) == before


async def test_create_shows_the_canonical_rules_and_patch_changes_them(offline_api: Api) -> None:
    api = offline_api
    status, created = await api.create(CSV, retry_rules=" BUSY=3@120 ;no_answer=0@3600")
    assert status == 201, created
    assert created["retry_rules"] == "busy=3@120; no_answer=0@3600"
    cid = created["id"]
    status, got = await api.call("GET", f"/api/v1/campaigns/{cid}")
    assert status == 200 and got["retry_rules"] == "busy=3@120; no_answer=0@3600"
    status, plain = await api.create(CSV)
    assert status == 201 and plain["retry_rules"] == ""

    status, patched = await api.call("PATCH", f"/api/v1/campaigns/{cid}", json={"retry_rules": "congestion=5@60"})
    assert status == 200, patched
    assert patched["retry_rules"] == "congestion=5@60"
    status, patched = await api.call("PATCH", f"/api/v1/campaigns/{cid}", data="retry_rules=busy%3D1%4060",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200 and patched["retry_rules"] == "busy=1@60", patched
    # A bad PATCH is a 400 naming the field and changes nothing.
    status, body = await api.call("PATCH", f"/api/v1/campaigns/{cid}",
                                  json={"retry_rules": "invalid_number=1@60", "name": "renamed"})
    assert status == 400 and body["details"] == {"field": "retry_rules"}, body
    status, got = await api.call("GET", f"/api/v1/campaigns/{cid}")
    assert (got["retry_rules"], got["name"]) == ("busy=1@60", "test campaign")
    # '' removes the rules.
    status, patched = await api.call("PATCH", f"/api/v1/campaigns/{cid}", json={"retry_rules": ""})
    assert status == 200 and patched["retry_rules"] == ""


async def test_include_takes_attempt_history_only(offline_api: Api) -> None:
    api = offline_api
    status, created = await api.create(CSV)
    assert status == 201
    cid = created["id"]
    status, page = await api.call("GET", f"/api/v1/campaigns/{cid}/contacts?include=attempt_history")
    assert status == 200, page
    assert [c["attempt_history"] for c in page["contacts"]] == [[], []]  # never dialled
    status, page = await api.call("GET", f"/api/v1/campaigns/{cid}/contacts")
    assert status == 200 and all("attempt_history" not in c for c in page["contacts"])
    for bad in ("attempts", "attempt_history,calls", "ATTEMPT_HISTORY"):
        status, body = await api.call("GET", f"/api/v1/campaigns/{cid}/contacts", params={"include": bad})
        assert status == 400, (bad, body)
        assert body["details"] == {"field": "include"} and "attempt_history" in body["error"]


# ---- the follower's decision, one budget per contact -------------------------------------------------


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


def _settled(contact: dict[str, Any], attempts: int) -> bool:
    """The contact's ``attempts``-th attempt is over and recorded (pending again, or final)."""
    history = contact["attempt_history"]
    return len(history) == attempts and history[-1]["ended_at"] is not None and contact["status"] in (
        "pending", "failed", "completed")


async def _retry_now(api: Api, cid: str) -> None:
    """The pending retries fall due now, and the runner is woken (as when their delay runs out): the
    retry time and the claim gate's hold (``retry_delay`` until ``next_eligible_at``) both move."""
    async with api.daemon.store.write() as conn:
        await conn.execute(update(T_CONTACT).where(T_CONTACT.c.campaign_id == cid, T_CONTACT.c.status == "pending")
                           .values(next_attempt_at=utcnow() - timedelta(seconds=1),
                                   next_eligible_at=utcnow() - timedelta(seconds=1)))
    api.daemon.dispatcher.slots.poke(cid)


# What each number's far end does at each attempt.
SCRIPTS: dict[str, list[FakeOutcome]] = {
    # busy, busy: no_answer's budget of 1 is already spent by busy's two retries: failed, not retried.
    "+14155551001": [BUSY, BUSY, RING_FOREVER],
    # no_answer (retried: 0 < 1), busy, busy (2 retries so far = busy's 2): failed after 3 attempts, not 2 + 1.
    "+14155551002": [RING_FOREVER, BUSY, BUSY],
}
EXPECTED = {
    "+14155551001": (["busy", "busy", "no_answer"], "failed"),
    "+14155551002": (["no_answer", "busy", "busy"], "failed"),
}


async def test_budgets_do_not_stack_across_reasons(db_url: str) -> None:
    pbx = FakePbx()
    for number, script in SCRIPTS.items():
        pbx.program(number, script[0])
    async with dialling_api(db_url, pbx) as api:
        status, created = await api.create(CSV, retry_rules="busy=2@60; no_answer=1@60", retries_per_contact=5,
                                           retry_delay_seconds=600, ring_timeout_seconds=5)
        assert status == 201, created
        cid = created["id"]
        assert (await api.call("POST", f"/api/v1/campaigns/{cid}/start"))[0] == 200
        for attempt in range(1, 4):
            contacts = await _until(api, cid, lambda cs, n=attempt: all(_settled(c, n) for c in cs.values()))
            for number, script in SCRIPTS.items():
                if attempt < len(script):
                    assert contacts[number]["status"] == "pending", contacts[number]
                    pbx.program(number, script[attempt])
            if attempt < 3:
                await _retry_now(api, cid)
        status, campaign = await api.call("GET", f"/api/v1/campaigns/{cid}")
        deadline = time.monotonic() + 20
        while campaign["status"] != "completed":
            assert time.monotonic() < deadline, campaign
            await asyncio.sleep(0.02)
            status, campaign = await api.call("GET", f"/api/v1/campaigns/{cid}")
        contacts = await _contacts(api, cid)
    for number, (reasons, final) in EXPECTED.items():
        c = contacts[number]
        history = c["attempt_history"]
        assert [a["attempt"] for a in history] == [1, 2, 3]
        assert [a["failure_reason"] for a in history] == reasons == [a["outcome"] for a in history]
        assert (c["status"], c["attempts"], c["failure_reason"]) == (final, 3, reasons[-1])
        assert all(a["started_at"] <= a["ended_at"] for a in history)
        assert history[0]["sip_code"] in (486, 480)
    assert len(pbx.requests) == 6  # never a fourth attempt


# ---- the clients ----------------------------------------------------------------------------------------


async def test_the_python_client_sends_and_changes_the_rules(offline_api: Api) -> None:
    async with AsyncDialerd(offline_api.base, offline_api.keys["acme"], timeout=10) as client:
        created = await client.campaigns.create(CSV.encode(), name="ruled", retry_rules="no_answer=2@3600")
        assert created["retry_rules"] == "no_answer=2@3600"
        changed = await client.campaigns.update(created["id"], retry_rules="busy=1@60")
        assert changed["retry_rules"] == "busy=1@60"
        page = await client.campaigns.list_contacts(created["id"], include="attempt_history")
        assert [c.get("attempt_history") for c in page["contacts"]] == [[], []]
        with pytest.raises(DialerdApiError) as refused:
            await client.campaigns.create(CSV.encode(), name="bad", retry_rules="rejected=1@60")
        assert refused.value.status == 400 and refused.value.details == {"field": "retry_rules"}


async def test_dialerctl_create_takes_retry_rules(offline_api: Api, tmp_path: Path) -> None:
    (tmp_path / "c.csv").write_text(CSV)
    ctl = Ctl(offline_api, tmp_path)
    created = await ctl("campaigns", "create", "c.csv", "--name", "ctl", "--retry-rules", "busy=2@60; no_answer=0@60")
    assert created.code == 0, created.err
    cid = created.out.splitlines()[0]
    shown = await ctl("campaigns", "get", cid)
    assert shown.code == 0 and f"{'retry rules':<22}busy=2@60; no_answer=0@60\n" in shown.out, shown.out
    refused = await ctl("campaigns", "create", "c.csv", "--name", "bad", "--retry-rules", "invalid_number=1@60")
    assert refused.code != 0 and "retry_rules: entry 1 'invalid_number=1@60'" in refused.err, refused
