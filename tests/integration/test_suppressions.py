"""Suppression lists (issue 11 item 2) over real HTTP on SQLite and PostgreSQL: the three endpoints, bad
input, tenant isolation, the list applied at import and at claim time while running, and opt-out at hangup
(the fake PBX's 555-0200..0209 range). The real-Asterisk proofs are in test_suppressions_pbx.py."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from sqlalchemy import func, select

from dialerd import ctl
from dialerd.client import AsyncDialerd, Dialerd
from dialerd.client.errors import DialerdApiError
from dialerd.pbx.fake import FakeOutcome, FakePbx
from dialerd.store.base import T_SUPPRESSION
from tests.conftest import Api, make_key, start_daemon, test_settings
from tests.live import read_sse


def assert_error(status: int, body: Any, expected: int, error_id: str) -> None:
    assert status == expected, body
    assert body["error_id"] == error_id, body


async def add(api: Api, tenant: str = "acme", **body: Any) -> dict[str, Any]:
    status, answer = await api.call("POST", "/api/v1/suppressions", tenant=tenant, json=body)
    assert status == 200, answer
    return dict(answer)


async def listed(api: Api, tenant: str = "acme", **params: Any) -> dict[str, Any]:
    status, answer = await api.call("GET", "/api/v1/suppressions", tenant=tenant, params=params)
    assert status == 200, answer
    return dict(answer)


async def rows_stored(api: Api) -> int:
    async with api.daemon.store.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(T_SUPPRESSION))).scalar_one())


async def test_add_list_lookup_and_delete(offline_api: Api) -> None:
    answer = await add(offline_api, numbers=["(415) 555-0100", "+14155550101", "+1 415 555 0100", "n/a", "415"],
                       reason="asked by letter", default_region="US")
    assert (answer["added"], answer["already"], answer["duplicates"]) == (2, 0, 1)
    assert answer["rejected_total"] == 2
    assert [(r["index"], r["input"]) for r in answer["rejected"]] == [(3, "n/a"), (4, "415")]
    assert all(r["reason"] for r in answer["rejected"])
    again = await add(offline_api, numbers=["+14155550101", "+14155550102"], reason="other")
    assert (again["added"], again["already"], again["duplicates"], again["rejected"]) == (1, 1, 0, [])
    page = await listed(offline_api)
    assert page["total"] == 3 and page["next_offset"] is None
    entries = {e["number"]: e for e in page["suppressions"]}
    assert entries["+14155550101"]["reason"] == "asked by letter"  # kept as first added
    assert entries["+14155550102"]["source"] == "api" and entries["+14155550102"]["created_at"].endswith("Z")
    # number= is normalised like contacts' numbers, with default_region.
    one = await listed(offline_api, number="415 555 0100", default_region="US")
    assert [e["number"] for e in one["suppressions"]] == ["+14155550100"] and one["total"] == 1
    first = await listed(offline_api, limit=2)
    assert len(first["suppressions"]) == 2 and first["next_offset"] == 2
    rest = await listed(offline_api, limit=2, offset=2)
    assert len(rest["suppressions"]) == 1 and rest["next_offset"] is None
    status, _ = await offline_api.call("DELETE", "/api/v1/suppressions/" + quote("+14155550100", safe=""))
    assert status == 204
    status, body = await offline_api.call("DELETE", "/api/v1/suppressions/" + quote("+14155550100", safe=""))
    assert_error(status, body, 404, "suppression_not_found")
    assert (await listed(offline_api))["total"] == 2


async def test_csv_upload_takes_number_or_phone_and_reports_lines(offline_api: Api) -> None:
    for header in ("number", "phone"):
        form = aiohttp.FormData()
        form.add_field("reason", "list from the CRM")
        form.add_field("default_region", "US")
        csv = f"{header},reason\n4155550110,\nnot a number,\n+14155550111,moved away\n4155550110,\n"
        form.add_field("file", csv.encode(), filename="dnc.csv", content_type="text/csv")
        status, answer = await offline_api.call("POST", "/api/v1/suppressions", data=form)
        assert status == 200, answer
        assert answer["rejected_total"] == 1 and answer["rejected"][0]["line"] == 3, answer
        assert answer["duplicates"] == 1
        assert answer["added"] + answer["already"] == 2
    page = {e["number"]: e for e in (await listed(offline_api))["suppressions"]}
    assert page["+14155550110"] == {**page["+14155550110"], "source": "import", "reason": "list from the CRM"}
    assert page["+14155550111"]["reason"] == "moved away"


@pytest.mark.parametrize(("body", "error_id"), [
    ({"numbers": ["+14155550100"], "colour": "red"}, "unknown_field"),
    ({"numbers": []}, "invalid_field"),
    ({"numbers": "+14155550100"}, "invalid_field"),
    ({"numbers": [14155550100]}, "invalid_field"),
    ({"numbers": ["n/a", ""]}, "no_valid_numbers"),
    ({"numbers": ["+14155550100"], "default_region": "ZZ"}, "invalid_field"),
    ({"numbers": ["+14155550100"], "reason": "x" * 201}, "invalid_field"),
    ({"reason": "no numbers"}, "invalid_field"),
])
async def test_bad_input_is_400_and_writes_nothing(offline_api: Api, body: dict[str, Any], error_id: str) -> None:
    status, answer = await offline_api.call("POST", "/api/v1/suppressions", json=body)
    assert_error(status, answer, 400, error_id)
    assert await rows_stored(offline_api) == 0


async def test_bad_requests_name_the_problem(offline_api: Api) -> None:
    status, body = await offline_api.call("POST", "/api/v1/suppressions", data=b"x", headers={"Content-Type": "text/plain"})
    assert_error(status, body, 400, "invalid_content_type")
    status, body = await offline_api.call("POST", "/api/v1/suppressions", data=b"{", headers={"Content-Type": "application/json"})
    assert_error(status, body, 400, "invalid_json")
    big = b'{"numbers": ["' + b"1" * (2 * 1024 * 1024) + b'"]}'
    status, body = await offline_api.call("POST", "/api/v1/suppressions", data=io.BytesIO(big),
                                          headers={"Content-Type": "application/json"})
    assert_error(status, body, 413, "payload_too_large")
    form = aiohttp.FormData()
    form.add_field("reason", "r")
    form.add_field("file", b"first_name\nAnn\n", filename="x.csv", content_type="text/csv")
    status, body = await offline_api.call("POST", "/api/v1/suppressions", data=form)
    assert status == 400 and body["error_id"].startswith("csv_"), body
    form = aiohttp.FormData()
    form.add_field("other", b"r", filename="x.txt")  # a file part makes it multipart
    status, body = await offline_api.call("POST", "/api/v1/suppressions", data=form)
    assert_error(status, body, 400, "unknown_field")
    status, body = await offline_api.call("GET", "/api/v1/suppressions", params={"number": "n/a"})
    assert_error(status, body, 400, "invalid_field")
    status, body = await offline_api.call("GET", "/api/v1/suppressions", params={"colour": "red"})
    assert_error(status, body, 400, "unknown_parameter")
    status, body = await offline_api.call("DELETE", "/api/v1/suppressions/banana")
    assert_error(status, body, 400, "invalid_field")
    assert await rows_stored(offline_api) == 0


async def test_lists_are_per_tenant(offline_api: Api) -> None:
    await add(offline_api, numbers=["+14155550100"], reason="acme's")
    assert (await listed(offline_api, tenant="globex"))["total"] == 0
    status, body = await offline_api.call("DELETE", "/api/v1/suppressions/%2B14155550100", tenant="globex")
    assert_error(status, body, 404, "suppression_not_found")
    # globex imports the number acme suppressed: it stays dialable for globex.
    form_csv = "phone_number\n+14155550100\n+14155550101\n"
    status, body = await offline_api.create(form_csv, tenant="globex")
    assert status == 201, body
    assert body["import"]["suppressed"] == 0 and body["contacts"]["pending"] == 2
    status, body = await offline_api.create(form_csv, tenant="acme")
    assert status == 201, body
    assert body["import"]["suppressed"] == 1
    assert (body["contacts"]["pending"], body["contacts"]["skipped"]) == (1, 1)


async def test_import_skips_suppressed_numbers(offline_api: Api) -> None:
    await add(offline_api, numbers=["4155550101"], default_region="US")
    csv = "phone_number\n+14155550100\n(415) 555-0101\n+14155550102\n"
    status, body = await offline_api.create(csv, default_region="US")
    assert status == 201, body
    assert body["import"]["suppressed"] == 1 and body["import"]["contacts"] == 3
    assert body["contacts"]["skipped"] == 1 and body["contacts"]["pending"] == 2
    cid = body["id"]
    status, page = await offline_api.call("GET", f"/api/v1/campaigns/{cid}/contacts", params={"status": "skipped"})
    assert status == 200, page
    [skipped] = page["contacts"]
    assert (skipped["phone_number"], skipped["reason"], skipped["failure_reason"]) == ("+14155550101", "suppressed", None)
    status, page = await offline_api.call("GET", f"/api/v1/campaigns/{cid}/contacts", params={"status": "pending"})
    assert all(c["reason"] is None for c in page["contacts"]) and page["total"] == 2
    status, stored = await offline_api.call("GET", f"/api/v1/campaigns/{cid}/import")
    assert stored["suppressed"] == 1


# ---- the dispatcher, with the fake PBX --------------------------------------------------------------


@asynccontextmanager
async def fake_api(db_url: str, pbx: FakePbx) -> AsyncIterator[Api]:
    daemon = await start_daemon(test_settings(db_url, shutdown_grace_period=0.0), pbx)
    keys = {t: await make_key(daemon, t) for t in ("acme", "globex")}
    try:
        async with aiohttp.ClientSession() as session:
            yield Api(f"http://127.0.0.1:{daemon.port}", session, keys, daemon)
    finally:
        await daemon.stop()


async def poll(api: Api, cid: str, check: Callable[[dict[str, Any]], bool], timeout: float = 30.0,
               tenant: str = "acme") -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status, body = await api.call("GET", f"/api/v1/campaigns/{cid}", tenant=tenant)
        assert status == 200, body
        if check(body):
            return dict(body)
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.05)


async def test_number_suppressed_while_running_is_skipped_at_claim(db_url: str) -> None:
    pbx = FakePbx(connected=False)  # running, but nothing is claimed until the PBX is up
    async with fake_api(db_url, pbx) as api:
        csv = "phone_number\n+14155550100\n+14155550101\n+14155550102\n"
        status, body = await api.create(csv, max_concurrent_calls=1)
        assert status == 201 and body["contacts"]["pending"] == 3, body
        cid = body["id"]
        # Another tenant's list never applies.
        await add(api, tenant="globex", numbers=["+14155550100", "+14155550101", "+14155550102"])
        sse = asyncio.create_task(read_sse(api, cid, max_seconds=60))
        status, body = await api.call("POST", f"/api/v1/campaigns/{cid}/start")
        assert status == 200 and body["status"] == "running", body
        await add(api, numbers=["+14155550101"], reason="called in")
        pbx.set_connected(True)
        final = await poll(api, cid, lambda b: b["status"] == "completed")
        events = await asyncio.wait_for(sse, 60)
    assert (final["contacts"]["completed"], final["contacts"]["skipped"]) == (2, 1), final
    assert final["progress"] == 1.0
    assert sorted(r.number for r in pbx.requests) == ["+14155550100", "+14155550102"]
    skipped = [e for e in events if e.event == "skipped"]
    assert len(skipped) == 1
    assert skipped[0].data == {**skipped[0].data, "phone_number": "+14155550101", "status": "skipped",
                               "reason": "suppressed"}
    assert [e.event for e in events if e.event][-1] == "end"


async def test_opt_out_at_hangup_joins_the_list_and_delete_lets_it_be_dialled_again(db_url: str) -> None:
    pbx = FakePbx()
    async with fake_api(db_url, pbx) as api:
        csv = "phone_number\n+14155550203\n+14155550105\n"
        status, body = await api.create(csv)
        assert status == 201, body
        cid = body["id"]
        await api.call("POST", f"/api/v1/campaigns/{cid}/start")
        final = await poll(api, cid, lambda b: b["status"] == "completed")
        assert final["contacts"]["completed"] == 2, final
        page = await listed(api)
        assert [(e["number"], e["source"], e["reason"]) for e in page["suppressions"]] == [
            ("+14155550203", "opt_out", "opt-out during call")]
        assert (await listed(api, tenant="globex"))["total"] == 0
        # A new campaign skips it; after DELETE another one dials it.
        status, body = await api.create(csv)
        assert body["import"]["suppressed"] == 1, body
        status, _ = await api.call("DELETE", "/api/v1/suppressions/%2B14155550203")
        assert status == 204
        pbx.program("+14155550203", FakeOutcome(talk=1.0))
        status, body = await api.create(csv)
        assert body["import"]["suppressed"] == 0, body
        again = body["id"]
        await api.call("POST", f"/api/v1/campaigns/{again}/start")
        final = await poll(api, again, lambda b: b["status"] == "completed")
        assert final["contacts"]["completed"] == 2 and final["contacts"]["skipped"] == 0
        assert [r.number for r in pbx.requests].count("+14155550203") == 2


# ---- the Python client --------------------------------------------------------------------------------


def _sync_calls(client: Dialerd) -> tuple[Any, ...]:
    added = client.suppressions.add(b"phone\n+14155550120\n", reason="csv")
    page = client.suppressions.list("+14155550120")
    client.suppressions.delete("+14155550120")
    with pytest.raises(DialerdApiError) as gone:
        client.suppressions.delete("+14155550120")
    return added, page, gone.value.error_id


async def test_client_methods(offline_api: Api) -> None:
    async with AsyncDialerd(offline_api.base, offline_api.keys["acme"], timeout=10) as client:
        added = await client.suppressions.add(["4155550110", "n/a"], reason="asked", default_region="US")
        assert (added["added"], added["rejected_total"], added["rejected"][0]["index"]) == (1, 1, 1)
        page = await client.suppressions.list(limit=10)
        assert [(e["number"], e["source"]) for e in page["suppressions"]] == [("+14155550110", "api")]
        await client.suppressions.delete("+14155550110")
        assert (await client.suppressions.list("+14155550110"))["total"] == 0
    with Dialerd(offline_api.base, offline_api.keys["acme"]) as sync:
        added, page, error_id = await asyncio.to_thread(_sync_calls, sync)
    assert added["added"] == 1 and page["suppressions"][0]["source"] == "import"
    assert error_id == "suppression_not_found"


def _ctl(api: Api, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = ctl.main(["--url", api.base, "--api-key", api.keys["acme"], *argv], out=out)
    return code, out.getvalue()


async def test_dialerctl_suppressions(offline_api: Api, tmp_path: Path) -> None:
    code, text = await asyncio.to_thread(_ctl, offline_api, "suppressions", "add", "4155550130", "n/a",
                                         "--reason", "asked", "--default-region", "US")
    assert code == 0 and text.startswith("added 1, already listed 0, duplicates 0, rejected 1"), text
    assert "#1: 'n/a'" in text
    csv = tmp_path / "dnc.csv"
    csv.write_text("phone\n+14155550131\n")
    code, text = await asyncio.to_thread(_ctl, offline_api, "suppressions", "add", "--file", str(csv), "--json")
    assert code == 0 and json.loads(text)["added"] == 1
    code, text = await asyncio.to_thread(_ctl, offline_api, "suppressions", "list")
    rows = [line.split()[:2] for line in text.splitlines()]
    assert code == 0 and rows == [["+14155550131", "import"], ["+14155550130", "api"]], text
    code, text = await asyncio.to_thread(_ctl, offline_api, "suppressions", "delete", "+14155550130")
    assert (code, text.strip()) == (0, "+14155550130 removed")
    code, _ = await asyncio.to_thread(_ctl, offline_api, "suppressions", "delete", "+14155550130")
    assert code == 1
    code, _ = await asyncio.to_thread(_ctl, offline_api, "suppressions", "add")
    assert code == 2
