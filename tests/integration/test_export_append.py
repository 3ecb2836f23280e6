"""The results export (GET .../contacts?format=csv) and appending contacts (POST .../contacts) on the whole
daemon, SQLite and PostgreSQL: on the offline PBX for the control plane, on the fake PBX where calls must
end (attempt columns, a running campaign dialling what was appended, one that ran out completing).
Both clients and ``dialerctl`` (in-process, the blocking client in a worker thread) at the end.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import secrets
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import update

from dialerd import ctl
from dialerd.client import AsyncDialerd, Conflict, Dialerd, NotFound
from dialerd.domain.campaign import ACCEPTS_CONTACTS, CampaignStatus
from dialerd.pbx.fake import BUSY, FakeOutcome, FakePbx
from dialerd.services import results
from dialerd.store.repo import T_CAMPAIGN, T_CONTACT, Store
from dialerd.store.tables import Campaign
from dialerd.timestamps import utcnow
from tests.conftest import Api, make_key, start_daemon, test_settings

pytestmark = pytest.mark.timeout(60)

HEADER = list(results.RESULT_COLUMNS)
CSV_TEXT = (
    "phone_number,first_name,note,status\n"
    "+14155550100,Ann,fine,vip\n"
    '+14155550101,Bob,"=HYPERLINK(""http://evil.example/"",""x"")",\n'
    "+14155550102,Cy,@SUM(1),\n"
    "+14155550103,Dee,+14155550199,\n"  # a plain E.164 number in a custom field stays as it is
    "+14155550104,Eve,-1+1,\n"
)


def rows_of(body: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(body.decode("utf-8"), newline="")))


async def create(api: Api, text: str, tenant: str = "acme", **fields: Any) -> str:
    status, body = await api.create(text, tenant=tenant, **fields)
    assert status == 201, body
    return str(body["id"])


async def append(api: Api, cid: str, text: str | bytes, tenant: str = "acme", **fields: str) -> tuple[int, Any]:
    form = aiohttp.FormData()
    for key, value in fields.items():
        form.add_field(key, value)
    form.add_field("contacts", text.encode() if isinstance(text, str) else text, filename="more.csv",
                   content_type="text/csv")
    return await api.call("POST", f"/api/v1/campaigns/{cid}/contacts", tenant=tenant, data=form)


async def export(api: Api, cid: str, tenant: str = "acme", **params: str) -> list[list[str]]:
    status, body = await api.call("GET", f"/api/v1/campaigns/{cid}/contacts", tenant=tenant,
                                  params={"format": "csv", **params})
    assert status == 200, body
    return rows_of(body)


async def counts(api: Api, cid: str) -> dict[str, int]:
    status, body = await api.call("GET", f"/api/v1/campaigns/{cid}")
    assert status == 200, body
    return dict(body["contacts"])


# ---- the store, both backends ------------------------------------------------------------------------------


def contact_row(number: str, line: int, **fields: str) -> dict[str, Any]:
    return {"line": line, "phone_e164": number, "raw_number": number, "fields": fields}


async def test_store_append_and_finish_exclude_each_other(store: Store) -> None:
    tenant, _ = await store.ensure_tenant("t_" + secrets.token_hex(4), "acme", 10, 60)
    now = utcnow()
    cid = "cmp_" + secrets.token_hex(10)
    await store.insert_campaign(Campaign(
        id=cid, tenant_id=tenant.id, name="x", status=CampaignStatus.RUNNING.value, caller_id="",
        destination="ctx,s,1", default_region="US", max_concurrent_calls=1, retries_per_contact=0,
        retry_delay_seconds=60, ring_timeout_seconds=30, import_report={"custom_fields": ["a"]}, created_by="t",
        created_at=now, updated_at=now,
    ))
    await store.insert_contacts(cid, [contact_row("+14155550100", 2, a="1")])
    done = await store.append_contacts(cid, tenant.id, [[contact_row("+14155550100", 2), contact_row("+14155550101", 3, b="2")],
                                                        [contact_row("+14155550101", 4)]],
                                       into=ACCEPTS_CONTACTS, custom_fields=["a", "b"])
    assert done.accepted and done.status == "running" and done.added == 1 and done.suppressed == 0
    assert (await store.get_campaign(cid)).import_report["custom_fields"] == ["a", "b"]  # type: ignore[union-attr]
    page = await store.results_page(cid, None, done.after_id, 10)
    assert [(r.phone_e164, r.fields) for r in page] == [("+14155550101", {"b": "2"})]
    assert page[0].answered_by is None and page[0].caller_id is None and page[0].talk_seconds is None
    # A finish while a contact is pending changes nothing; once every one is final it completes.
    finish = {"event_payload": {"action": "finish"}, "only_if_done": True}
    assert await store.set_campaign_status(cid, CampaignStatus.RUNNING, CampaignStatus.COMPLETED, **finish) == (False, [])
    async with store.write() as conn:
        await conn.execute(update(T_CONTACT).where(T_CONTACT.c.campaign_id == cid).values(status="completed"))
    changed, _events = await store.set_campaign_status(cid, CampaignStatus.RUNNING, CampaignStatus.COMPLETED, **finish)
    assert changed
    late = await store.append_contacts(cid, tenant.id, [[contact_row("+14155550102", 2)]], into=ACCEPTS_CONTACTS)
    assert not late.accepted and late.status == "completed" and late.added == 0
    assert await store.count_contacts(cid) == 2
    assert [r.status for r in await store.results_page(cid, "completed", 0, 1)] == ["completed"]
    assert len(await store.results_page(cid, "completed", 0, 10)) == 2


# ---- the export -----------------------------------------------------------------------------------------


async def test_export_has_every_contact_across_pages_with_custom_columns(
    offline_api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(results, "EXPORT_PAGE", 2)  # five contacts: three pages
    cid = await create(offline_api, CSV_TEXT)
    status, raw = await offline_api.call("GET", f"/api/v1/campaigns/{cid}/contacts", params={"format": "csv"})
    assert status == 200
    rows = rows_of(raw)
    # Custom fields in the file's order; one named like a result column is prefixed.
    assert rows[0] == [*HEADER, "first_name", "note", "custom.status"]
    assert [r[0] for r in rows[1:]] == [f"+1415555010{i}" for i in range(5)]
    ann = dict(zip(rows[0], rows[1], strict=True))
    assert ann["status"] == "pending" and ann["attempts"] == "0" and ann["first_name"] == "Ann"
    assert ann["custom.status"] == "vip" and ann["talk_seconds"] == "" and ann["last_attempt_at"] == ""
    # Every cell quoted, CRLF line ends.
    assert raw.startswith(b'"phone_number","status","reason"') and raw.count(b"\r\n") == 6


async def test_export_cells_are_formula_neutralised(offline_api: Api) -> None:
    cid = await create(offline_api, CSV_TEXT)
    rows = await export(offline_api, cid)
    notes = {r[0]: r[len(HEADER) + 1] for r in rows[1:]}
    assert notes["+14155550101"] == "'=HYPERLINK(\"http://evil.example/\",\"x\")"
    assert notes["+14155550102"] == "'@SUM(1)"
    assert notes["+14155550103"] == "+14155550199"
    assert notes["+14155550104"] == "'-1+1"
    assert all(not r[0].startswith("'") for r in rows[1:])  # the E.164 numbers stay machine-readable


async def test_export_status_filter_accept_header_and_refusals(offline_api: Api) -> None:
    status, _ = await offline_api.call("POST", "/api/v1/suppressions", json={"numbers": ["+14155550102"]})
    assert status == 200
    cid = await create(offline_api, CSV_TEXT)
    skipped = await export(offline_api, cid, status="skipped")
    assert [(r[0], r[1], r[2]) for r in skipped[1:]] == [("+14155550102", "skipped", "suppressed")]
    assert len(await export(offline_api, cid, status="pending")) == 1 + 4
    path = f"/api/v1/campaigns/{cid}/contacts"
    status, raw = await offline_api.call("GET", path, headers={"Accept": "text/csv"})
    assert status == 200 and rows_of(raw)[0][:3] == HEADER[:3] and len(rows_of(raw)) == 6
    for accept in ("application/json", "text/csv;q=0.5, application/json", "*/*", ""):
        status, body = await offline_api.call("GET", path, headers={"Accept": accept})
        assert status == 200 and isinstance(body, dict) and body["total"] == 5, accept
    status, body = await offline_api.call("GET", path, params={"format": "xml"})
    assert status == 400 and body["details"]["field"] == "format", body
    status, body = await offline_api.call("GET", path, params={"format": "csv", "limit": "2"})
    assert status == 400 and body["error_id"] == "invalid_parameter", body
    status, body = await offline_api.call("GET", path, params={"format": "csv", "status": "nope"})
    assert status == 400 and body["details"]["field"] == "status", body
    status, body = await offline_api.call("GET", path, tenant="globex", params={"format": "csv"})
    assert status == 404 and body["error_id"] == "campaign_not_found", body


# ---- appending ---------------------------------------------------------------------------------------


async def test_append_counts_duplicates_against_existing_contacts(offline_api: Api) -> None:
    cid = await create(offline_api, "phone_number,first_name\n+14155550100,Ann\n+14155550101,Bob\n")
    more = ("phone_number,first_name,city\n+14155550101,Bob again,Paris\n+14155550102,Cy,Rome\n"
            "+14155550102,Cy twice,Rome\nnot a number,Dee,Oslo\n+14155550103,Eve,Kyiv\n")
    status, body = await append(offline_api, cid, more)
    assert status == 200, body
    report = body["import"]
    assert (report["rows_total"], report["rows_valid"], report["rows_rejected"]) == (5, 4, 1)
    assert (report["contacts"], report["duplicates"]) == (2, 2)  # Bob was there; Cy's second row
    assert [p["line"] for p in report["problems"]] == [5]
    assert body["status"] == "draft" and body["campaign_id"] == cid
    assert body["contacts"]["total"] == 4 and body["contacts"]["pending"] == 4
    rows = await export(offline_api, cid)
    # The appended file's new column gets a column of its own; Bob kept his first row's fields.
    assert rows[0][-2:] == ["first_name", "city"]
    assert [(r[0], r[-2], r[-1]) for r in rows[1:]] == [
        ("+14155550100", "Ann", ""), ("+14155550101", "Bob", ""), ("+14155550102", "Cy", "Rome"),
        ("+14155550103", "Eve", "Kyiv")]
    # The same file again adds nothing: all duplicates.
    status, body = await append(offline_api, cid, more)
    assert status == 200 and body["import"]["contacts"] == 0 and body["import"]["duplicates"] == 4, body


async def test_append_to_scheduled_and_paused_skips_suppressed_numbers(offline_api: Api) -> None:
    assert (await offline_api.call("POST", "/api/v1/suppressions", json={"numbers": ["+14155550109"]}))[0] == 200
    scheduled = await create(offline_api, "phone_number\n+14155550100\n", scheduled_at="2099-01-01T00:00:00Z")
    status, body = await append(offline_api, scheduled, "phone_number\n+14155550108\n+14155550109\n")
    assert status == 200 and body["status"] == "scheduled", body
    assert body["import"]["suppressed"] == 1 and body["contacts"]["skipped"] == 1 and body["contacts"]["total"] == 3
    paused_us = await create(offline_api, "phone_number\n+14155550100\n", default_region="US")
    for action in ("start", "pause"):  # the offline PBX: it runs without dialling
        assert (await offline_api.call("POST", f"/api/v1/campaigns/{paused_us}/{action}"))[0] == 200
    # The campaign's default_region reads the national number; phone_column names the file's column.
    status, body = await append(offline_api, paused_us, "phone,note\n(415) 555-0111,x\n", phone_column="phone")
    assert status == 200 and body["status"] == "paused" and body["import"]["contacts"] == 1, body
    assert body["import"]["phone_column"] == "phone"


async def test_append_refusals_write_nothing(offline_api: Api) -> None:
    api = offline_api
    cid = await create(api, "phone_number\n+14155550100\n")
    before = await counts(api, cid)
    status, body = await append(api, cid, "phone_number\nnope\n")
    assert status == 400 and body["error_id"] == "csv_no_valid_numbers", body
    status, body = await append(api, cid, "name\nAnn\n")
    assert status == 400 and body["error_id"].startswith("csv_"), body
    status, body = await append(api, cid, "phone_number\n+14155550101\n", first_name="x")
    assert status == 400 and body["error_id"] == "unknown_field", body
    status, body = await api.call("POST", f"/api/v1/campaigns/{cid}/contacts", json={"contacts": []})
    assert status == 400 and body["error_id"] == "invalid_content_type", body
    # Valid rows, then a quote that never closes: refused whole, though earlier batches parsed fine.
    api.daemon.campaigns.import_batch_size = 2
    broken = "phone_number\n+14155550101\n+14155550102\n+14155550103\n\"+14155550104\n+14155550105\n"
    status, body = await append(api, cid, broken)
    assert status == 400 and body["error_id"] == "csv_malformed", body
    assert await counts(api, cid) == before
    status, body = await append(api, "cmp_00000000000000000000", "phone_number\n+14155550101\n")
    assert status == 404 and body["error_id"] == "campaign_not_found", body
    status, body = await append(api, cid, "phone_number\n+14155550101\n", tenant="globex")
    assert status == 404, body
    # Completed (stopped) and failed campaigns: 409, saying to create a new one.
    assert (await api.call("POST", f"/api/v1/campaigns/{cid}/stop"))[0] == 200
    status, body = await append(api, cid, "phone_number\n+14155550101\n")
    assert status == 409 and body["error_id"] == "campaign_not_appendable", body
    assert "create a new campaign" in body["error"] and body["details"]["status"] == "completed"
    failed = await create(api, "phone_number\n+14155550100\n")
    async with api.daemon.store.write() as conn:
        await conn.execute(update(T_CAMPAIGN).where(T_CAMPAIGN.c.id == failed).values(status="failed"))
    status, body = await append(api, failed, "phone_number\n+14155550101\n")
    assert status == 409 and body["details"]["status"] == "failed", body
    assert (await counts(api, failed))["total"] == 1


# ---- on the fake PBX: calls end --------------------------------------------------------------------------

HOLD = FakeOutcome(talk=3600.0)  # up until the test ends
QUICK = FakeOutcome(talk=0.2)


@pytest.fixture
async def fake_api(db_url: str) -> AsyncIterator[Api]:
    pbx = FakePbx(time_scale=1.0)
    pbx.program("+14155550100", HOLD)
    pbx.program("+14155550142", BUSY)
    for n in range(1, 10):
        pbx.program(f"+1415555011{n}", QUICK)
    daemon = await start_daemon(test_settings(db_url, shutdown_grace_period=0.0), pbx)
    keys = {"acme": await make_key(daemon, "acme")}
    async with aiohttp.ClientSession() as session:
        await asyncio.wait_for(pbx.wait_connected(), 5)
        try:
            yield Api(f"http://127.0.0.1:{daemon.port}", session, keys, daemon)
        finally:
            await daemon.stop()


async def until(api: Api, cid: str, ok: Any, what: str, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status, body = await api.call("GET", f"/api/v1/campaigns/{cid}")
        assert status == 200, body
        if ok(body):
            return dict(body)
        assert time.monotonic() < deadline, f"never {what}: {body['status']} {body['contacts']}"
        await asyncio.sleep(0.05)


async def test_a_running_campaign_dials_appended_contacts_and_exports_their_outcomes(fake_api: Api) -> None:
    api = fake_api
    cid = await create(api, "phone_number\n+14155550100\n")
    assert (await api.call("POST", f"/api/v1/campaigns/{cid}/start"))[0] == 200
    await until(api, cid, lambda b: b["contacts"]["connected"] == 1, "connected")  # its call stays up
    status, body = await append(api, cid, "phone_number\n+14155550111\n+14155550142\n+14155550100\n")
    assert status == 200 and body["status"] == "running", body
    assert body["import"]["contacts"] == 2 and body["import"]["duplicates"] == 1
    await until(api, cid, lambda b: b["contacts"]["completed"] == 1 and b["contacts"]["failed"] == 1,
                "the appended ones dialled")
    rows = {r[0]: dict(zip(HEADER, r, strict=False)) for r in (await export(api, cid))[1:]}
    answered, busy = rows["+14155550111"], rows["+14155550142"]
    assert answered["status"] == "completed" and answered["attempts"] == "1" and answered["last_attempt_at"]
    assert float(answered["talk_seconds"]) > 0 and answered["reason"] == ""
    assert (busy["status"], busy["reason"], busy["hangup_cause"], busy["sip_code"]) == ("failed", "busy", "17", "486")
    assert busy["talk_seconds"] == ""
    # Filled once the attempt table has the column (caller-id pools, AMD); empty until then.
    assert answered["caller_id"] == "" or answered["caller_id"].startswith(("+", "'"))
    assert rows["+14155550100"]["status"] == "connected"


async def test_a_campaign_that_ran_out_of_contacts_refuses_an_append(fake_api: Api) -> None:
    api = fake_api
    cid = await create(api, "phone_number\n+14155550112\n")
    assert (await api.call("POST", f"/api/v1/campaigns/{cid}/start"))[0] == 200
    await until(api, cid, lambda b: b["status"] == "completed", "completed")
    status, body = await append(api, cid, "phone_number\n+14155550113\n")
    assert status == 409 and body["error_id"] == "campaign_not_appendable", body
    assert "ran out of contacts" in body["error"] and "create a new campaign" in body["error"]
    assert (await counts(api, cid))["total"] == 1


async def test_appends_racing_the_last_call_never_strand_contacts(fake_api: Api) -> None:
    """Each append lands before the finish (and is dialled) or after it (409): never in a completed campaign."""
    api = fake_api
    cid = await create(api, "phone_number\n+14155550114\n")
    assert (await api.call("POST", f"/api/v1/campaigns/{cid}/start"))[0] == 200
    accepted = 0
    for n in range(5, 10):
        status, body = await append(api, cid, f"phone_number\n+1415555011{n}\n")
        assert status in (200, 409), body
        accepted += status == 200
    final = await until(api, cid, lambda b: b["status"] == "completed", "completed")
    assert final["contacts"]["pending"] == 0 and final["contacts"]["total"] == 1 + accepted
    assert final["contacts"]["completed"] == 1 + accepted


# ---- the clients and dialerctl ---------------------------------------------------------------------------


async def test_clients_and_dialerctl_export_and_append(offline_api: Api, tmp_path: Path) -> None:
    api = offline_api
    key = api.keys["acme"]
    cid = await create(api, CSV_TEXT)
    async with AsyncDialerd(api.base, key) as client:
        appended = await client.campaigns.append(cid, b"phone_number\n+14155550100\n+14155550120\n")
        assert appended["import"]["contacts"] == 1 and appended["import"]["duplicates"] == 1
        binary = io.BytesIO()
        size = await client.campaigns.export_csv(cid, binary, status="pending")
        assert size == len(binary.getvalue()) and len(rows_of(binary.getvalue())) == 1 + 6
        with pytest.raises(NotFound):
            await client.campaigns.export_csv("cmp_00000000000000000000", io.BytesIO())
    more = tmp_path / "more.csv"
    more.write_text("phone_number\n+14155550121\n", encoding="utf-8")

    def blocking() -> tuple[int, str]:
        client = Dialerd(api.base, key)
        answer = client.campaigns.append(cid, str(more))
        text = io.StringIO()
        client.campaigns.export_csv(cid, text)
        return answer["import"]["contacts"], text.getvalue()

    added, text = await asyncio.to_thread(blocking)
    assert added == 1 and len(rows_of(text.encode())) == 1 + 7

    def run(*argv: str) -> tuple[int, str]:
        out = io.StringIO()
        return ctl.main(["--url", api.base, "--api-key", key, *argv], out), out.getvalue()

    code, out = await asyncio.to_thread(run, "append", cid, str(more))
    assert code == 0 and "appended 0 contacts" in out and "1 duplicates" in out, out
    code, out = await asyncio.to_thread(run, "export", cid)
    assert code == 0 and rows_of(out.encode())[0][:2] == ["phone_number", "status"] and len(rows_of(out.encode())) == 8
    target = tmp_path / "results.csv"
    code, _ = await asyncio.to_thread(run, "campaigns", "export", cid, "--status", "pending", "-o", str(target))
    assert code == 0 and rows_of(target.read_bytes()) == rows_of(out.encode())
    assert (await api.call("POST", f"/api/v1/campaigns/{cid}/stop"))[0] == 200
    with pytest.raises(Conflict):
        await asyncio.to_thread(Dialerd(api.base, key).campaigns.append, cid, str(more))
    code, _ = await asyncio.to_thread(run, "append", cid, str(tmp_path / "missing.csv"))
    assert code == 2


async def test_dialerctl_export_to_a_redirected_stdout_writes_the_daemons_bytes(offline_api: Api,
                                                                             tmp_path: Path) -> None:
    """``dialerctl export ID > results.csv`` as a shell runs it: stdout is a file, written as bytes."""
    cid = await create(offline_api, CSV_TEXT)
    status, expected = await offline_api.call("GET", f"/api/v1/campaigns/{cid}/contacts", params={"format": "csv"})
    assert status == 200
    target = tmp_path / "results.csv"
    env = {**os.environ, "DIALERD_URL": offline_api.base, "DIALERD_API_KEY": offline_api.keys["acme"]}
    with target.open("wb") as stdout:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "dialerd.ctl", "export", cid, env=env,
                                                    stdout=stdout, stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err
    assert target.read_bytes() == expected  # CRLF and UTF-8 as the daemon sent them
