"""Local presence through the real Asterisk: the caller id each call goes out with, as Asterisk sees it.

A campaign with a pool of five numbers (two in 212, one each in 312, 415 and 617) and
``caller_id_strategy=local_presence`` dials contacts in those area codes. An ARI client of its own (an app
name no one else uses, ``subscribeAll``) records every channel event while the campaign runs: for the
dialer legs (``DIALERD_CAMPAIGN`` in channelvars) Asterisk's CallerIDNum of the originated channel, and
for the simulated carrier's far-end legs (``PJSIP/farend-...`` in ``[carrier-in]``) the caller number
that arrived in the INVITE. Each must be the pool number of the contact's area code (of the two 212
numbers, the one sharing more leading digits), and the attempt's ``caller_id`` the same. The 603 of a
555-0188 number shows as a rejection in ``caller_id_stats``. ARI and AMI, SQLite.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import Api
from tests.live import live_api, wait_status
from tests.pbx_env import local_pbx_env

pytestmark = [pytest.mark.pbx, pytest.mark.timeout(120)]

POOL = ["+12125550100", "+12125550120", "+13125550100", "+14155550100", "+16175550100"]
# contact -> the pool number local presence must choose (the carrier: 00-29 answer, 80-89 reject with 603)
LOCAL = {
    "+12125550105": "+12125550100",  # shares 212555010 with ...0100, only 21255501 with ...0120
    "+12125550125": "+12125550120",  # and the other way round
    "+13125550107": "+13125550100",
    "+13125550188": "+13125550100",  # 603 Decline: a rejection
    "+14155550109": "+14155550100",
    "+16175550111": "+16175550100",
}


@asynccontextmanager
async def channel_events() -> AsyncIterator[list[dict[str, Any]]]:
    """Every channel snapshot in Asterisk's events while the block runs (an app of its own, subscribeAll)."""
    env = local_pbx_env()
    token = base64.b64encode(f"{env['DIALERD_ARI_USER']}:{env['DIALERD_ARI_PASSWORD']}".encode()).decode()
    app = f"callerid-watch-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    seen: list[dict[str, Any]] = []
    async with aiohttp.ClientSession(headers={"Authorization": f"Basic {token}"}) as session:
        ws = await session.ws_connect(f"{env['DIALERD_ARI_URL']}/ari/events",
                                      params={"app": app, "subscribeAll": "true"})

        async def read() -> None:
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    event = json.loads(msg.data)
                    if isinstance(event.get("channel"), dict):
                        seen.append(event["channel"])

        reader = asyncio.create_task(read(), name="ari-watch")
        try:
            yield seen
        finally:
            await ws.close()
            await asyncio.wait_for(reader, 5)


def far_end_callers(seen: list[dict[str, Any]]) -> dict[str, set[str]]:
    """The dialled number -> the caller numbers that arrived on far-end legs for it."""
    out: dict[str, set[str]] = {}
    for ch in seen:
        plan = ch.get("dialplan") or {}
        number = (ch.get("caller") or {}).get("number")
        if ch["name"].startswith("PJSIP/farend-") and plan.get("context") == "carrier-in" and number:
            out.setdefault(plan.get("exten", ""), set()).add(number)
    return out


def dialer_callers(seen: list[dict[str, Any]], cid: str) -> dict[str, set[str]]:
    """The contact id -> the CallerIDNum of the campaign's originated channels for it."""
    out: dict[str, set[str]] = {}
    for ch in seen:
        variables = ch.get("channelvars") or {}
        number = (ch.get("caller") or {}).get("number")
        if variables.get("DIALERD_CAMPAIGN") == cid and number:
            out.setdefault(variables.get("DIALERD_CONTACT", ""), set()).add(number)
    return out


async def contacts_with_history(api: Api, cid: str) -> list[dict[str, Any]]:
    status, body = await api.call("GET", f"/api/v1/campaigns/{cid}/contacts?include=attempt_history&limit=100")
    assert status == 200, body
    return body["contacts"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("driver", ["ari", "ami"])
async def test_local_presence_reaches_the_far_end(tmp_path: Path, driver: str) -> None:
    csv = "phone_number\n" + "".join(f"{n}\n" for n in LOCAL)
    async with live_api(tmp_path, driver) as api, channel_events() as seen:
        status, created = await api.create(csv, caller_id=",".join(POOL), caller_id_strategy="local_presence",
                                           max_concurrent_calls=3, ring_timeout_seconds=10)
        assert status == 201, created
        cid = created["id"]
        status, body = await api.call("POST", f"/api/v1/campaigns/{cid}/start")
        assert status == 200, body
        done = await wait_status(api, cid, "completed", timeout=60)
        contacts = await contacts_with_history(api, cid)

    by_number = {c["phone_number"]: c for c in contacts}
    far = far_end_callers(seen)
    dialer = dialer_callers(seen, cid)
    for number, local in LOCAL.items():
        contact = by_number[number]
        [attempt] = contact["attempt_history"]
        assert attempt["caller_id"] == local, (number, attempt)
        # Asterisk's side: the originated channel's CallerIDNum, and what reached the far end. Another
        # session may dial the same test number meanwhile, but never with one of this pool's numbers.
        assert dialer.get(str(contact["id"])) == {local}, (number, dialer)
        assert local in far.get(number, set()), (number, far.get(number))
        assert far[number] & set(POOL) == {local}, (number, far[number])
    assert by_number["+13125550188"]["status"] == "failed" and by_number["+13125550188"]["sip_code"] == 603

    stats = {s["caller_id"]: (s["attempts"], s["answered"], s["rejected"]) for s in done["caller_id_stats"]}
    assert stats == {"+12125550100": (1, 1, 0), "+12125550120": (1, 1, 0), "+13125550100": (2, 1, 1),
                     "+14155550100": (1, 1, 0), "+16175550100": (1, 1, 0)}
    assert [s["caller_id"] for s in done["caller_id_stats"]] == POOL
