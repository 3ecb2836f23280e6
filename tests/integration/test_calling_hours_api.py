"""Calling hours over HTTP (issue 11), on SQLite and PostgreSQL: the form fields calling_hours and timezone
(create and PATCH, 400s naming the field with nothing written), the zones resolved at import (the CSV's
timezone column, an unknown one rejecting its row, the number's zones, the campaign's, the configured
default) and the contacts' JSON."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from tests.conftest import Api, OfflinePbx, make_key, start_daemon, test_settings
from tests.integration.test_api import assert_error, created, db_counts
from tests.live import all_contacts, wait_status

CSV = (
    "phone_number,timezone,name\n"
    "+14155550100,europe/berlin,column\n"  # the column wins over the number's zone, in the database's spelling
    "+14155550101,,number\n"  # Los Angeles, from the number
    "+16055550102,,two zones\n"  # Denver and North Dakota's Center
    "+80012345678,,no zone of its own\n"  # international freephone: phonenumbers gives none
    "+14155550104,Mars/Olympus_Mons,bad\n"
)


@pytest.mark.parametrize(("field", "value", "problem"), [
    ("calling_hours", "mon-fri 9-17", "times must be HH:MM-HH:MM"),
    ("calling_hours", "funday 09:00-17:00", "unknown day 'funday'"),
    ("calling_hours", "mon 17:00-09:00", "is not after the start"),
    ("timezone", "Mars/Olympus_Mons", "is not an IANA time zone name"),
    ("timezone", "New York", "did you mean America/New_York"),
])
async def test_a_malformed_field_is_a_400_naming_it_and_nothing_is_written(
    offline_api: Api, field: str, value: str, problem: str,
) -> None:
    before = await db_counts(offline_api)
    status, body = await offline_api.create(CSV, **{field: value})
    assert_error(status, body, 400, "invalid_field")
    assert body["details"]["field"] == field and body["error"].startswith(f"{field}: ") and problem in body["error"]
    assert await db_counts(offline_api) == before


async def test_create_resolves_each_contacts_zones_and_rejects_an_unknown_one(offline_api: Api) -> None:
    body = await created(offline_api, CSV, calling_hours="Mon-Fri 9:00-20:00;sat 10:00-14:00",
                         timezone="asia/tokyo")
    assert (body["calling_hours"], body["timezone"]) == ("mon-fri 09:00-20:00; sat 10:00-14:00", "Asia/Tokyo")
    report = body["import"]
    assert (report["rows_valid"], report["rows_rejected"]) == (4, 1)
    (problem,) = report["problems"]
    assert (problem["line"], problem["code"], problem["value"]) == (6, "unknown_timezone", "Mars/Olympus_Mons")
    assert "not an IANA time zone name" in problem["reason"]
    contacts = {c["custom_fields"]["name"]: c for c in await all_contacts(offline_api, body["id"])}
    assert {name: (c["timezone"], c["timezone_source"]) for name, c in contacts.items()} == {
        "column": ("Europe/Berlin", "column"),
        "number": ("America/Los_Angeles", "number"),
        "two zones": ("America/Denver,America/North_Dakota/Center", "number"),
        "no zone of its own": ("Asia/Tokyo", "campaign"),
    }
    for c in contacts.values():  # not yet examined by the claim gate
        assert (c["status"], c["next_eligible_at"], c["blocked_reason"]) == ("pending", None, None)
    assert contacts["column"]["custom_fields"]["timezone"] == "europe/berlin"  # the cell stays a custom field
    status, page = await offline_api.call("GET", f"/api/v1/campaigns/{body['id']}/import")
    assert status == 200 and page["problems"][0]["code"] == "unknown_timezone"


async def test_without_a_zone_the_contact_has_none_and_defaults_apply(offline_api: Api) -> None:
    body = await created(offline_api, "phone_number\n+80012345678\n")
    assert (body["calling_hours"], body["timezone"]) == ("", None)
    (contact,) = await all_contacts(offline_api, body["id"])
    assert (contact["timezone"], contact["timezone_source"]) == (None, None)


@pytest.fixture
async def configured_api(db_url: str) -> AsyncIterator[Api]:
    settings = test_settings(db_url, shutdown_grace_period=0.0, compliance_calling_hours="daily 08:00-21:00",
                             compliance_default_timezone="Europe/London")
    daemon = await start_daemon(settings, OfflinePbx())
    keys = {"acme": await make_key(daemon, "acme")}
    async with aiohttp.ClientSession() as session:
        try:
            yield Api(f"http://127.0.0.1:{daemon.port}", session, keys, daemon)
        finally:
            await daemon.stop()


async def test_the_configured_hours_and_zone_are_the_defaults(configured_api: Api) -> None:
    body = await created(configured_api, "phone_number\n+80012345678\n")
    assert (body["calling_hours"], body["timezone"]) == ("daily 08:00-21:00", None)
    (contact,) = await all_contacts(configured_api, body["id"])
    assert (contact["timezone"], contact["timezone_source"]) == ("Europe/London", "default")


async def patch(api: Api, cid: str, **changes: Any) -> tuple[int, Any]:
    return await api.call("PATCH", f"/api/v1/campaigns/{cid}", json=changes)


async def test_patch_changes_the_hours_and_the_fallback_zone(offline_api: Api) -> None:
    body = await created(offline_api, CSV, calling_hours="daily 09:00-17:00")
    cid = body["id"]
    status, changed = await patch(offline_api, cid, calling_hours="sat-sun 10:00-12:00", timezone="Australia/Perth")
    assert status == 200, changed
    assert (changed["calling_hours"], changed["timezone"]) == ("sat-sun 10:00-12:00", "Australia/Perth")
    contacts = {c["custom_fields"]["name"]: c for c in await all_contacts(offline_api, cid)}
    # Only the contact whose zone was a fallback follows the campaign's; the column's and the number's stay.
    assert contacts["no zone of its own"]["timezone"] == "Australia/Perth"
    assert contacts["no zone of its own"]["timezone_source"] == "campaign"
    assert contacts["column"]["timezone"] == "Europe/Berlin"
    assert contacts["number"]["timezone"] == "America/Los_Angeles"
    for field, value in (("calling_hours", "daily 25:00-26:00"), ("timezone", "Nowhere/Land")):
        status, error = await patch(offline_api, cid, **{field: value})
        assert_error(status, error, 400, "invalid_field")
        assert error["details"]["field"] == field
    status, same = await offline_api.call("GET", f"/api/v1/campaigns/{cid}")
    assert (same["calling_hours"], same["timezone"]) == ("sat-sun 10:00-12:00", "Australia/Perth")
    status, cleared = await patch(offline_api, cid, timezone="")
    assert status == 200 and cleared["timezone"] is None


async def test_the_runner_sleeps_until_the_opening_and_dials_then(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The dispatcher's wake-up is the held contact's next_eligible_at: no busy loop before it, no missed
    opening. The claim's clock (the dispatcher's and the call stores' utcnow) runs 1.5 s before 09:00."""
    from dialerd.pbx.fake import FakePbx
    from dialerd.services import dispatcher
    from dialerd.store import sql_calls, sqlite_calls
    from tests.integration.test_campaign_end import api_on

    opening = datetime(2030, 1, 7, 9, 0, tzinfo=UTC)
    shift = opening - timedelta(seconds=1.5) - datetime.now(UTC)
    for module in (dispatcher, sql_calls, sqlite_calls):
        monkeypatch.setattr(module, "utcnow", lambda: datetime.now(UTC) + shift)
    async with api_on(db_url, FakePbx()) as api:
        queries = 0
        calls = api.daemon.store.calls
        due = calls.next_due_contacts

        async def counted(*args: Any) -> Any:
            nonlocal queries
            queries += 1
            return await due(*args)

        monkeypatch.setattr(calls, "next_due_contacts", counted)
        body = await created(api, "phone_number,timezone\n+14155550100,UTC\n", calling_hours="daily 09:00-10:00")
        status, started = await api.call("POST", f"/api/v1/campaigns/{body['id']}/start")
        assert status == 200, started
        final = await wait_status(api, body["id"], "completed", timeout=30)
        (contact,) = await all_contacts(api, body["id"])
    assert final["contacts"]["completed"] == 1 and contact["attempts"] == 1
    assert datetime.fromisoformat(contact["last_attempt_at"].replace("Z", "+00:00")) >= opening
    assert queries <= 6, queries  # held once, then one sleep to the opening (not a poll every few ms)
