"""Calling hours against the real Asterisk (issue 11): with hours chosen around the current real time, the
contacts whose window is open are dialled and the others are not (seen in Asterisk's channel list), each held
one with ``next_eligible_at`` = its next opening; a number with several zones is dialled only when every
one of them is open. On SQLite (the sqlite3 driver's claim) and PostgreSQL (SQLAlchemy's).

The zones (December: no DST anywhere involved): Pacific/Kiritimati UTC+14 and Pacific/Pago_Pago UTC-11 (the
same wall clock, one hour apart) from the CSV's timezone column; +1 970 (America/Denver, UTC-7) and +1 605
(America/Denver and America/North_Dakota/Center, UTC-6) from the number. Two daily windows, in minutes of
local time around now: E1 = [Kiritimati - 10, Kiritimati + 20] and E2 = [Denver - 50, Denver + 30]. Now,
E1 holds Kiritimati's clock and E2 Denver's; Pago Pago (Kiritimati - 60) and Center (Denver + 60) are in
neither. Pago Pago reaches E1's start 50 minutes after the current minute began; Denver and Center are open
together only while Denver reads E2's first 20 minutes (Center is 60 ahead), next at tomorrow's E2 start.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import Api
from tests.live import AsteriskWatch, all_contacts, live_api

pytestmark = pytest.mark.pbx

KIRITIMATI, PAGO_PAGO = "Pacific/Kiritimati", "Pacific/Pago_Pago"
OPEN_K, CLOSED_P = "+12015550105", "+12025550106"  # 555-01 00-29: answered, hung up after 2 s
DENVER_ONLY, DENVER_AND_CENTER, BOTH_OPEN = "+19705550107", "+16055550108", "+16055550109"


def window(center: datetime, zone: str, before: int, after: int) -> str:
    """``daily`` entries covering [local - before, local + after) minutes in ``zone``, split at midnight."""
    local = center.astimezone(ZoneInfo(zone))
    minute = local.hour * 60 + local.minute
    start, end = minute - before, minute + after
    spans = [(start % 1440, end % 1440)] if start // 1440 == end // 1440 else [(start % 1440, 1440), (0, end % 1440)]
    return "; ".join(f"daily {a // 60:02d}:{a % 60:02d}-{b // 60:02d}:{b % 60:02d}" for a, b in spans if b > a)


def rfc(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


async def create(api: Api, csv: str, hours: str) -> str:
    status, body = await api.create(csv, calling_hours=hours, max_concurrent_calls=4, caller_id="+14155550000",
                                    default_region="US")
    assert status == 201, body
    return str(body["id"])


async def settled(api: Api, cid: str, dialled: set[str], held: set[str], timeout: float = 60.0) -> dict[str, Any]:
    """Wait until the dialled contacts are completed and the held ones carry a blocked_reason."""
    deadline = time.monotonic() + timeout
    while True:
        contacts = {c["phone_number"]: c for c in await all_contacts(api, cid)}
        if all(contacts[n]["status"] == "completed" for n in dialled) and all(
            contacts[n]["blocked_reason"] for n in held
        ):
            return contacts
        assert time.monotonic() < deadline, contacts
        await asyncio.sleep(0.2)


async def test_open_zones_are_dialled_and_closed_ones_wait_for_their_opening(tmp_path: Path, db_url: str) -> None:
    now = datetime.now(UTC)
    minute = now.replace(second=0, microsecond=0)
    if now.second >= 50:  # the window is built from this minute: keep the run inside it
        await asyncio.sleep(60 - now.second)
        now = datetime.now(UTC)
        minute = now.replace(second=0, microsecond=0)
    hours = f"{window(minute, KIRITIMATI, 10, 20)}; {window(minute, 'America/Denver', 50, 30)}"
    wide = window(minute, "America/Denver", 10, 90)  # Denver and Center both open now
    csv = (f"phone_number,timezone\n{OPEN_K},{KIRITIMATI}\n{CLOSED_P},{PAGO_PAGO}\n{DENVER_ONLY},\n"
           f"{DENVER_AND_CENTER},\n")
    async with live_api(tmp_path, db_url=db_url) as api:
        narrow_id = await create(api, csv, hours)
        wide_id = await create(api, f"phone_number\n{BOTH_OPEN}\n", wide)
        watch = AsteriskWatch.from_env()
        watch.start()
        try:
            for cid in (narrow_id, wide_id):
                status, body = await api.call("POST", f"/api/v1/campaigns/{cid}/start")
                assert status == 200, body
            narrow = await settled(api, narrow_id, {OPEN_K, DENVER_ONLY}, {CLOSED_P, DENVER_AND_CENTER})
            wide_contacts = await settled(api, wide_id, {BOTH_OPEN}, set())
        finally:
            await watch.stop()
    # Asterisk saw exactly the contacts whose windows are open, each once.
    dialled = sorted(str(i["contact"]) for i in watch.seen.values() if i["campaign"] == narrow_id)
    assert dialled == sorted(str(narrow[n]["id"]) for n in (OPEN_K, DENVER_ONLY)), (dialled, narrow)
    assert [i["contact"] for i in watch.seen.values() if i["campaign"] == wide_id] == [
        str(wide_contacts[BOTH_OPEN]["id"])]
    assert narrow[OPEN_K]["timezone"] == KIRITIMATI and narrow[OPEN_K]["timezone_source"] == "column"
    assert (narrow[DENVER_AND_CENTER]["timezone"], narrow[DENVER_AND_CENTER]["timezone_source"]) == (
        "America/Denver,America/North_Dakota/Center", "number")
    for number in (OPEN_K, DENVER_ONLY):
        assert (narrow[number]["attempts"], narrow[number]["next_eligible_at"],
                narrow[number]["blocked_reason"]) == (1, None, None)
    pago, multi = narrow[CLOSED_P], narrow[DENVER_AND_CENTER]
    assert (pago["status"], pago["attempts"], pago["blocked_reason"]) == ("pending", 0, "outside_calling_hours")
    assert pago["next_eligible_at"] == rfc(minute + timedelta(minutes=50))
    assert (multi["status"], multi["attempts"], multi["blocked_reason"]) == ("pending", 0, "outside_calling_hours")
    assert multi["next_eligible_at"] == rfc(minute - timedelta(minutes=50) + timedelta(days=1))
