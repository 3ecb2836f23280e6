"""Issue 9, items 5-7 and the stored import report, over real HTTP on SQLite and PostgreSQL.

Idempotency-Key on create and the actions (a real client that times out on a big import and retries),
PATCH and its refusals, the tenant cap at create, a scheduled start deferred by the cap (field and SSE
event), ``page`` on the contacts list, the JSON create body, the one timestamp format, GET .../import.
The daemon runs with the offline PBX: nothing here needs a call.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, TypeVar

import aiohttp
import pytest

from dialerd.client import Dialerd, DialerdConnectionError
from dialerd.client._http import Call
from dialerd.timestamps import rfc3339
from tests.conftest import Api

T = TypeVar("T")
CSV = "phone_number,first_name\n+14155550100,Ann\n+14155550101,Bob\nnot a number,Cy\n"
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
KEY = "Idempotency-Key"


def assert_error(status: int, body: Any, expected_status: int, error_id: str) -> None:
    assert status == expected_status, body
    assert isinstance(body, dict) and body["error"] and body["error_id"] == error_id, body


async def poll(what: Callable[[], Awaitable[T | None]], timeout: float = 20.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = await what()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def big_csv(rows: int) -> bytes:
    """``rows`` distinct valid US numbers (New York's 212-2xx exchanges)."""
    return ("phone_number,first_name\n" + "".join(f"+1212{2000000 + i:07d},n{i}\n" for i in range(rows))).encode()


async def count_campaigns(api: Api, tenant: str = "acme") -> int:
    status, body = await api.call("GET", "/api/v1/campaigns", tenant=tenant)
    assert status == 200, body
    return int(body["total"])


async def raw_create(api: Api, csv: bytes | str, key: str | None, **fields: Any) -> tuple[int, Any, Any]:
    """A multipart create with an Idempotency-Key; a new boundary every time, as a real retry has."""
    form = aiohttp.FormData()
    fields.setdefault("name", "idem")
    for k, v in fields.items():
        form.add_field(k, str(v))
    data = csv.encode() if isinstance(csv, str) else csv
    # A file object: aiohttp warns about (and our warnings-are-errors refuses) a large body as raw bytes.
    form.add_field("contacts", io.BytesIO(data), filename="c.csv", content_type="text/csv")
    headers = {**api.auth(), **({KEY: key} if key else {})}
    async with api.session.post(api.base + "/api/v1/campaigns", data=form, headers=headers) as resp:
        return resp.status, await resp.json(), resp.headers


# ---- item 5: Idempotency-Key ------------------------------------------------------------------------


class CountingClient(Dialerd):
    """The real blocking client, counting the requests it sent and the answers it lost."""

    sent = 0
    lost = 0

    def _call(self, call: Call[T]) -> T:
        self.sent += 1
        try:
            return super()._call(call)
        except DialerdConnectionError:
            self.lost += 1
            raise


async def test_a_create_that_times_out_is_retried_with_its_key_and_makes_one_campaign(offline_api: Api) -> None:
    api = offline_api
    rows = 60000
    data = big_csv(rows)
    client = CountingClient(api.base, api.keys["acme"], timeout=0.5)
    # The import takes seconds; the client gives up on each answer after 0.5 s, sends the same request with
    # the same key again, is told it is still in progress, waits, and finally gets the first answer.
    campaign = await asyncio.to_thread(client.campaigns.create, data, name="big", default_region="US", retries=10)
    assert client.lost >= 1, "the first attempt was meant to time out"
    assert client.sent >= 2
    assert campaign["import"]["contacts"] == rows and campaign["status"] == "draft"
    assert await count_campaigns(api) == 1
    status, body = await api.call("GET", f"/api/v1/campaigns/{campaign['id']}/contacts", params={"limit": "1"})
    assert status == 200 and body["total"] == rows


async def test_same_key_same_body_replays_and_a_different_body_is_409(offline_api: Api) -> None:
    api = offline_api
    status, first, headers = await raw_create(api, CSV, "k-1", default_region="US")
    assert status == 201 and "Idempotent-Replayed" not in headers, first
    # Same fields and file, another multipart boundary: the first answer, marked as replayed.
    status, again, headers = await raw_create(api, CSV, "k-1", default_region="US")
    assert status == 201 and headers["Idempotent-Replayed"] == "true"
    assert again == first
    assert await count_campaigns(api) == 1
    # Another body (a field, or the file) with that key: refused, nothing created.
    status, body, _ = await raw_create(api, CSV, "k-1", default_region="GB")
    assert_error(status, body, 409, "idempotency_key_reused")
    status, body, _ = await raw_create(api, CSV + "+14155550102,Di\n", "k-1", default_region="US")
    assert_error(status, body, 409, "idempotency_key_reused")
    # Keys are per tenant: globex may use the same one.
    form = aiohttp.FormData()
    form.add_field("name", "idem")
    form.add_field("contacts", CSV.encode(), filename="c.csv", content_type="text/csv")
    status, body = await api.call("POST", "/api/v1/campaigns", tenant="globex", data=form, headers={KEY: "k-1"})
    assert status == 201 and body["id"] != first["id"], body
    # A failed request is not stored: nothing happened, so the key is free for the corrected request.
    status, body, _ = await raw_create(api, "phone_number\nnope\n", "k-2")
    assert_error(status, body, 400, "csv_no_valid_numbers")
    status, body, headers = await raw_create(api, CSV, "k-2", default_region="US")
    assert status == 201 and "Idempotent-Replayed" not in headers, body
    assert await count_campaigns(api) == 2
    for bad in ("", " ", "x" * 256, "caf\u00e9"):
        status, body = await api.call("POST", f"/api/v1/campaigns/{first['id']}/start", headers={KEY: bad})
        assert_error(status, body, 400, "invalid_idempotency_key")


async def test_a_retry_while_the_first_request_runs_is_409_in_progress(offline_api: Api) -> None:
    api = offline_api
    data = big_csv(60000)
    first = asyncio.create_task(raw_create(api, data, "slow", default_region="US"))
    store = api.daemon.store

    async def claimed() -> bool:
        async with store.read() as conn:
            rows = (await conn.exec_driver_sql(
                "SELECT state FROM idempotency_key WHERE idem_key = 'slow'")).all()
        return bool(rows) and rows[0][0] == "in_progress"

    await poll(claimed)
    status, body, busy_headers = await raw_create(api, data, "slow", default_region="US")
    assert_error(status, body, 409, "idempotency_key_in_progress")
    assert "retry" in body["error"]
    assert busy_headers["Retry-After"] == str(body["details"]["retry_after_seconds"])
    status, created, _ = await first
    assert status == 201, created
    status, again, headers = await raw_create(api, data, "slow", default_region="US")
    assert status == 201 and headers["Idempotent-Replayed"] == "true" and again["id"] == created["id"]
    assert await count_campaigns(api) == 1


async def test_actions_with_keys_act_once(offline_api: Api) -> None:
    api = offline_api
    cid = (await api.create(CSV, default_region="US"))[1]["id"]
    path = f"/api/v1/campaigns/{cid}"
    async with api.session.post(api.base + path + "/start", headers={**api.auth(), KEY: "start-1"}) as resp:
        assert resp.status == 200 and "Idempotent-Replayed" not in resp.headers
        started = await resp.json()
    assert started["status"] == "running"
    async with api.session.post(api.base + path + "/start", headers={**api.auth(), KEY: "start-1"}) as resp:
        assert resp.status == 200 and resp.headers["Idempotent-Replayed"] == "true"
        assert await resp.json() == started
    # The same key on another action is another request.
    status, body = await api.call("POST", path + "/pause", headers={KEY: "start-1"})
    assert_error(status, body, 409, "idempotency_key_reused")
    # A refused action (resume of a running campaign) is not stored: the key can then pause.
    status, body = await api.call("POST", path + "/resume", headers={KEY: "act-2"})
    assert status == 409 and body["error_id"] == "invalid_transition", body
    status, body = await api.call("POST", path + "/resume", headers={KEY: "act-2"})
    assert status == 409 and body["error_id"] == "invalid_transition", body
    status, body = await api.call("POST", path + "/pause", headers={KEY: "act-3"})
    assert status == 200 and body["status"] == "paused", body
    for verb in ("resume", "stop"):
        status, body = await api.call("POST", f"{path}/{verb}", headers={KEY: f"{verb}-1"})
        assert status == 200, body
        status, again = await api.call("POST", f"{path}/{verb}", headers={KEY: f"{verb}-1"})
        assert status == 200 and again == body
    assert body["status"] == "completed"
    # The client sends a key by itself on every action (and the replay of a lost answer is the answer).
    cid2 = (await api.create(CSV, default_region="US"))[1]["id"]
    client = Dialerd(api.base, api.keys["acme"])
    assert (await asyncio.to_thread(client.campaigns.start, cid2, idempotency_key="c-1"))["status"] == "running"
    replay = await asyncio.to_thread(client.campaigns.start, cid2, idempotency_key="c-1")
    assert replay["status"] == "running"
    async with api.daemon.store.read() as conn:
        keys = (await conn.exec_driver_sql("SELECT idem_key, state, response_status FROM idempotency_key")).all()
    assert ("c-1", "done", 200) in [tuple(r) for r in keys]
    assert all(state == "done" for _k, state, _s in keys)  # the refused requests left nothing behind


# ---- item 6: tenant cap at create, PATCH, deferred scheduled start ----------------------------------


async def test_create_above_the_tenant_cap_is_400_naming_both_numbers(offline_api: Api) -> None:
    status, body = await offline_api.create(CSV, default_region="US", max_concurrent_calls=11)
    assert_error(status, body, 400, "invalid_field")
    assert "11" in body["error"] and "10" in body["error"], body
    assert body["details"] == {"field": "max_concurrent_calls", "max_concurrent_calls": 11, "concurrent_max": 10}
    assert await count_campaigns(offline_api) == 0
    status, body = await offline_api.create(CSV, default_region="US", max_concurrent_calls=10)
    assert status == 201, body


EDITS: list[tuple[str, Any, Any]] = [
    ("name", "  renamed  ", "renamed"),
    ("max_concurrent_calls", 7, 7),
    ("retries_per_contact", 3, 3),
    ("retry_delay_seconds", 600, 600),
    ("ring_timeout_seconds", 45, 45),
    ("caller_id", "Sales <+14155550199>", "Sales <+14155550199>"),
    ("destination", "dialerd-demo,s,1", "dialerd-demo,s,1"),
]
BAD_EDITS: list[tuple[str, Any]] = [
    ("name", ""), ("name", "x" * 201), ("max_concurrent_calls", 0), ("max_concurrent_calls", "five"),
    ("max_concurrent_calls", ""), ("retries_per_contact", 6), ("retry_delay_seconds", 59),
    ("ring_timeout_seconds", 4), ("ring_timeout_seconds", True), ("caller_id", "a;b"), ("destination", "nonsense"),
    ("name", None), ("name", 5.5),
]


async def test_patch_changes_each_field_while_editable(offline_api: Api) -> None:
    api = offline_api
    cid = (await api.create(CSV, default_region="US"))[1]["id"]
    path = f"/api/v1/campaigns/{cid}"
    for field, value, expected in EDITS:
        status, body = await api.call("PATCH", path, json={field: value})
        assert status == 200 and body[field] == expected, (field, body)
        status, body = await api.call("GET", path)
        assert body[field] == expected, field
    # The reference API's names, and a form-encoded body.
    status, body = await api.call("PATCH", path, json={"agent_id": "stasis:app,x", "phone_number_id": "+14155550111"})
    assert status == 200 and body["destination"] == "stasis:app,x" and body["caller_id"] == "+14155550111", body
    status, body = await api.call("PATCH", path, data={"name": "by form", "max_concurrent_calls": "2"})
    assert status == 200 and (body["name"], body["max_concurrent_calls"]) == ("by form", 2), body
    # Scheduled and paused campaigns are editable too.
    status, sched = await api.create(CSV, default_region="US", scheduled_at="2099-01-01T00:00:00Z")
    status, body = await api.call("PATCH", f"/api/v1/campaigns/{sched['id']}", json={"name": "later"})
    assert status == 200 and body["status"] == "scheduled" and body["name"] == "later", body
    assert (await api.call("POST", path + "/start"))[0] == 200
    status, body = await api.call("PATCH", path, json={"name": "while running"})
    assert_error(status, body, 409, "campaign_not_editable")
    assert body["details"]["status"] == "running"
    assert (await api.call("POST", path + "/pause"))[0] == 200
    status, body = await api.call("PATCH", path, json={"ring_timeout_seconds": 20, "retries_per_contact": 1})
    assert status == 200 and (body["ring_timeout_seconds"], body["retries_per_contact"]) == (20, 1), body
    assert (await api.call("POST", path + "/stop"))[0] == 200
    status, body = await api.call("PATCH", path, json={"name": "after the end"})
    assert_error(status, body, 409, "campaign_not_editable")
    assert (await api.call("GET", path))[1]["name"] == "by form"


async def test_patch_refuses_what_create_refuses(offline_api: Api) -> None:
    api = offline_api
    cid = (await api.create(CSV, default_region="US"))[1]["id"]
    path = f"/api/v1/campaigns/{cid}"
    status, before = await api.call("GET", path)
    for field, value in BAD_EDITS:
        status, body = await api.call("PATCH", path, json={field: value})
        assert_error(status, body, 400, "invalid_field")
        assert body["details"]["field"] == field, (field, value, body)
    for body_json, error_id in (({"default_region": "GB"}, "unknown_field"), ({"scheduled_at": "2099-01-01T00:00:00Z"},
                                "unknown_field"), ({"status": "running"}, "unknown_field"), ({}, "no_changes")):
        status, body = await api.call("PATCH", path, json=body_json)
        assert_error(status, body, 400, error_id)
    status, body = await api.call("PATCH", path, json={"destination": "a,b", "agent_id": "a,b"})
    assert_error(status, body, 400, "invalid_field")
    status, body = await api.call("PATCH", path, json={"max_concurrent_calls": 11})
    assert_error(status, body, 400, "invalid_field")
    assert body["details"]["concurrent_max"] == 10 and "11" in body["error"] and "10" in body["error"]
    status, body = await api.call("PATCH", path, data=b"{not json", headers={"Content-Type": "application/json"})
    assert_error(status, body, 400, "invalid_json")
    status, body = await api.call("PATCH", path, data=b"[1]", headers={"Content-Type": "application/json"})
    assert_error(status, body, 400, "invalid_json")
    status, body = await api.call("PATCH", path, data=b"name=x", headers={"Content-Type": "text/plain"})
    assert_error(status, body, 400, "invalid_content_type")
    status, body = await api.call("PATCH", path, json={"name": "theirs"}, tenant="globex")
    assert_error(status, body, 404, "campaign_not_found")
    status, after = await api.call("GET", path)
    assert after == before  # nothing half-written


async def read_sse_until(
    api: Api, cid: str, found: Callable[[str, dict[str, Any]], bool], timeout: float = 20.0
) -> list[tuple[str, dict[str, Any]]]:
    """The stream replayed from the start, until an event that ``found`` accepts."""
    seen: list[tuple[str, dict[str, Any]]] = []
    headers = {**api.auth(), "Last-Event-ID": "0"}
    async with asyncio.timeout(timeout):
        async with api.session.get(f"{api.base}/api/v1/campaigns/{cid}/events", headers=headers) as resp:
            assert resp.status == 200
            kind = "message"
            async for raw in resp.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                    seen.append((kind, data))
                    if found(kind, data):
                        return seen
                elif line == "":
                    kind = "message"
    raise AssertionError(f"stream ended without the event: {seen}")


async def test_a_scheduled_start_held_by_the_tenant_cap_is_visible(offline_api: Api) -> None:
    api = offline_api
    api.daemon.scheduler.retry_when_full = timedelta(seconds=0.5)  # the retry, after the cap frees up
    status, full = await api.create(CSV, default_region="US", max_concurrent_calls=10)
    assert (await api.call("POST", f"/api/v1/campaigns/{full['id']}/start"))[0] == 200
    at = rfc3339(datetime.now(UTC) + timedelta(seconds=1.5))
    status, later = await api.create(CSV, default_region="US", max_concurrent_calls=5, scheduled_at=at)
    assert status == 201 and later["start_deferred"] is None, later
    path = f"/api/v1/campaigns/{later['id']}"

    async def deferred() -> dict[str, Any] | None:
        body = (await api.call("GET", path))[1]
        return body if body["start_deferred"] else None

    body = await poll(deferred)
    held = body["start_deferred"]
    assert body["status"] == "scheduled"
    assert held["reason"] == "tenant_concurrency_exceeded" and TIMESTAMP.match(held["since"]), held
    assert "10" in held["detail"] and "5" in held["detail"], held
    events = await read_sse_until(api, later["id"], lambda k, d: k == "campaign" and d.get("action") == "start_deferred")
    kind, event = events[-1]
    assert event["status"] == "scheduled" and event["reason"] == "tenant_concurrency_exceeded"
    assert TIMESTAMP.match(event["at"]) and event["detail"] == held["detail"]
    # Retries while still held keep the first "since" and write no second event.
    async def retried() -> bool:
        again = (await api.call("GET", path))[1]["start_deferred"]
        return bool(again) and again["since"] == held["since"]

    await poll(retried)
    # The cap frees up: the start goes ahead and the field clears.
    assert (await api.call("POST", f"/api/v1/campaigns/{full['id']}/stop"))[0] == 200

    async def running() -> dict[str, Any] | None:
        now = (await api.call("GET", path))[1]
        return now if now["status"] == "running" else None

    assert (await poll(running))["start_deferred"] is None
    events = await read_sse_until(api, later["id"], lambda k, d: k == "campaign" and d.get("status") == "running")
    assert sum(1 for k, d in events if k == "campaign" and d.get("action") == "start_deferred") == 1


# ---- item 7: page, JSON create, timestamps -------------------------------------------------------


async def test_contacts_page_parameter(offline_api: Api) -> None:
    api = offline_api
    csv = "phone_number\n" + "".join(f"+1415555{i:04d}\n" for i in range(250))
    cid = (await api.create(csv))[1]["id"]
    path = f"/api/v1/campaigns/{cid}/contacts"
    status, all_ = await api.call("GET", path, params={"limit": "1000"})
    ids = [c["id"] for c in all_["contacts"]]
    for page, expected, nxt in ((0, ids[:100], 1), (1, ids[100:200], 2), (2, ids[200:], None), (3, [], None)):
        status, body = await api.call("GET", path, params={"page": str(page)})
        assert status == 200, body
        assert [c["id"] for c in body["contacts"]] == expected
        assert (body["page"], body["next_page"], body["offset"], body["limit"]) == (page, nxt, page * 100, 100)
    status, body = await api.call("GET", path, params={"page": "3", "limit": "10"})
    assert [c["id"] for c in body["contacts"]] == ids[30:40] and body["next_page"] == 4
    for params in ({"page": "1", "offset": "5"}, {"page": "1", "after_id": str(ids[0])}):
        status, body = await api.call("GET", path, params=params)
        assert_error(status, body, 400, "invalid_field")
        assert body["details"]["field"] == "page" and "cannot be combined" in body["error"]
    for bad in ("-1", "x", "1.5"):
        status, body = await api.call("GET", path, params={"page": bad})
        assert_error(status, body, 400, "invalid_field")
    status, body = await api.call("GET", path)
    assert "page" not in body  # offset paging answers as before


async def test_json_create_imports_like_a_csv(offline_api: Api) -> None:
    api = offline_api
    payload = {
        "name": "from json",
        "default_region": "US",
        "max_concurrent_calls": 3,
        "agent_id": "dialerd-demo,s,1",
        "contacts": [
            {"phone_number": "+14155550100", "first_name": "Ann", "vip": True},
            {"phone_number": "(415) 555-0101", "first_name": "Bob", "score": 7},
            {"phone_number": "not a number", "first_name": "Cy"},
            {"phone_number": "+14155550100", "first_name": "Ann again"},
            {"first_name": "no number"},
            {"phone_number": 14155550102},
        ],
    }
    status, body = await api.call("POST", "/api/v1/campaigns", json=payload)
    assert status == 201, body
    report = body["import"]
    assert (report["rows_total"], report["rows_valid"], report["rows_rejected"], report["duplicates"],
            report["contacts"]) == (6, 4, 2, 1, 3), report
    assert report["custom_fields"] == ["first_name", "vip", "score"]
    assert [p["line"] for p in report["problems"]] == [4, 6]  # contacts[2] and contacts[4]
    assert (body["max_concurrent_calls"], body["destination"]) == (3, "dialerd-demo,s,1")
    status, page = await api.call("GET", f"/api/v1/campaigns/{body['id']}/contacts")
    fields = {c["phone_number"]: c["custom_fields"] for c in page["contacts"]}
    assert fields["+14155550100"] == {"first_name": "Ann", "vip": "true", "score": ""}
    assert fields["+14155550101"]["score"] == "7"
    # The same refusals as the form, as 400s naming the problem; the same size limit.
    for bad, error_id in (
        ({"name": "x"}, "missing_contacts"),
        ({"name": "x", "contacts": "phone_number\n+14155550100"}, "invalid_field"),
        ({"name": "x", "contacts": ["+14155550100"]}, "invalid_field"),
        ({"name": "x", "contacts": [{"phone_number": {"n": 1}}]}, "invalid_field"),
        ({"name": "x", "contacts": [{"phone_number": "+14155550100"}], "color": "red"}, "unknown_field"),
        ({"name": "", "contacts": [{"phone_number": "+14155550100"}]}, "invalid_field"),
        ({"name": "x", "max_concurrent_calls": "2", "contacts": [{"phone_number": "+14155550100"}]}, None),
        ({"name": "x", "max_concurrent_calls": None, "contacts": [{"phone_number": "+14155550100"}]}, "invalid_field"),
        ({"name": "x", "encoding": "cp1252", "contacts": [{"phone_number": "+14155550100"}]}, "invalid_field"),
        ({"name": "x", "contacts": [{"phone_number": "nope"}]}, "csv_no_valid_numbers"),
        ({"name": "x", "contacts": []}, "csv_no_valid_numbers"),
    ):
        status, body = await api.call("POST", "/api/v1/campaigns", json=bad)
        if error_id is None:
            assert status == 201, body  # a number in a string is read like the form's text
            continue
        assert_error(status, body, 400, error_id)
    status, body = await api.call("POST", "/api/v1/campaigns", data=b'{"name": ', headers={"Content-Type": "application/json"})
    assert_error(status, body, 400, "invalid_json")
    limit = api.daemon.settings.upload_limit_bytes
    huge = json.dumps({"name": "x", "contacts": [{"phone_number": "+14155550100", "pad": "x" * (limit + 70000)}]})
    status, body = await api.call("POST", "/api/v1/campaigns", data=io.BytesIO(huge.encode()),
                                  headers={"Content-Type": "application/json"})
    assert_error(status, body, 413, "payload_too_large")
    assert await count_campaigns(api) == 2


def test_one_timestamp_format() -> None:
    assert rfc3339(datetime(2026, 12, 2, 5, 18, 21, 123456, tzinfo=UTC)) == "2026-12-02T05:18:21.123Z"
    assert rfc3339(datetime(2026, 12, 2, 7, 18, 21, tzinfo=timezone(timedelta(hours=2)))) == "2026-12-02T05:18:21.000Z"
    assert rfc3339(datetime(5, 1, 1, tzinfo=UTC)) == "0005-01-01T00:00:00.000Z"
    with pytest.raises(ValueError):
        rfc3339(datetime(2026, 1, 1))  # noqa: DTZ001 - the naive datetime is the point


async def test_every_time_in_rest_and_sse_has_the_one_format(offline_api: Api) -> None:
    api = offline_api
    status, created = await api.create(CSV, default_region="US", scheduled_at="2099-01-01T09:00:00+02:00")
    assert status == 201
    cid = created["id"]
    assert created["scheduled_at"] == "2099-01-01T07:00:00.000Z"
    assert (await api.call("POST", f"/api/v1/campaigns/{cid}/start"))[0] == 200
    assert (await api.call("POST", f"/api/v1/campaigns/{cid}/stop"))[0] == 200
    times: list[str] = []
    status, body = await api.call("GET", f"/api/v1/campaigns/{cid}")
    times += [body[k] for k in ("scheduled_at", "created_at", "started_at", "completed_at", "updated_at")]
    status, page = await api.call("GET", f"/api/v1/campaigns/{cid}/contacts")
    times += [c["updated_at"] for c in page["contacts"]]
    events = await read_sse_until(api, cid, lambda k, d: k == "end")
    times += [d["at"] for _k, d in events]
    assert {k for k, _d in events} == {"campaign", "cancelled", "end"}
    # A snapshot (the live figures) of a running campaign.
    status, live = await api.create(CSV, default_region="US")
    assert (await api.call("POST", f"/api/v1/campaigns/{live['id']}/start"))[0] == 200
    snapshot = await read_sse_until(api, live["id"], lambda k, d: d.get("type") == "snapshot")
    times.append(snapshot[-1][1]["at"])
    assert len(times) >= 12
    for value in times:
        assert isinstance(value, str) and TIMESTAMP.match(value), value


# ---- item 8 (part): the import report stays retrievable ---------------------------------------------


async def test_the_import_report_with_every_rejected_row(offline_api: Api) -> None:
    api = offline_api
    lines = ["phone_number,first_name", "+14155550100,Ann", "+14155550100,Ann twice"]
    lines += [f"bad{i},x" for i in range(1500)]
    status, created = await api.create("\n".join(lines) + "\n", default_region="US")
    assert status == 201, created
    assert created["import"]["problems_truncated"] is True and len(created["import"]["problems"]) == 1000
    path = f"/api/v1/campaigns/{created['id']}/import"
    status, first = await api.call("GET", path, params={"limit": "1000"})
    assert status == 200, first
    assert (first["rows_total"], first["rows_rejected"], first["duplicates"], first["contacts"]) == (1502, 1500, 1, 1)
    assert first["phone_column"] == "phone_number" and first["custom_fields"] == ["first_name"]
    assert first["problems_total"] == 1500 and len(first["problems"]) == 1000 and first["next_offset"] == 1000
    assert first["problems"][0] == created["import"]["problems"][0]
    status, rest = await api.call("GET", path, params={"limit": "1000", "offset": "1000"})
    assert len(rest["problems"]) == 500 and rest["next_offset"] is None
    lines_seen = [p["line"] for p in first["problems"] + rest["problems"]]
    assert lines_seen == list(range(4, 1504))
    status, default = await api.call("GET", path)
    assert len(default["problems"]) == 100 and default["limit"] == 100
    assert_error(*(await api.call("GET", path, tenant="globex")), 404, "campaign_not_found")
    assert_error(*(await api.call("GET", path, params={"page": "1"})), 400, "unknown_parameter")
    assert_error(*(await api.call("GET", path, params={"limit": "0"})), 400, "invalid_field")
    # Deleting the campaign removes its report.
    assert (await api.call("DELETE", f"/api/v1/campaigns/{created['id']}"))[0] == 204
    assert_error(*(await api.call("GET", path)), 404, "campaign_not_found")
    async with api.daemon.store.read() as conn:
        assert (await conn.exec_driver_sql("SELECT COUNT(*) FROM import_problem")).scalar_one() == 0


# ---- the client's side of the new endpoints -----------------------------------------------------------


async def test_clients_update_import_report_page_and_json_create(offline_api: Api) -> None:
    from dialerd.client import AsyncDialerd, InvalidRequest

    api = offline_api
    client = Dialerd(api.base, api.keys["acme"])
    contacts: list[dict[str, object]] = [{"phone_number": f"+1415555{i:04d}", "n": i} for i in range(150)]
    contacts.append({"phone_number": "nope"})
    created = await asyncio.to_thread(client.campaigns.create, contacts, name="json", max_concurrent_calls=4)
    assert created["import"]["contacts"] == 150 and created["import"]["rows_rejected"] == 1
    cid = created["id"]
    changed = await asyncio.to_thread(lambda: client.campaigns.update(cid, name="renamed", ring_timeout_seconds=40))
    assert (changed["name"], changed["ring_timeout_seconds"], changed["max_concurrent_calls"]) == ("renamed", 40, 4)
    report = await asyncio.to_thread(client.campaigns.import_report, cid)
    assert report["problems_total"] == 1 and report["problems"][0]["line"] == 152
    page = await asyncio.to_thread(lambda: client.campaigns.list_contacts(cid, page=1))
    assert len(page["contacts"]) == 50 and page["next_page"] is None
    with pytest.raises(ValueError):
        client.campaigns.update(cid)  # nothing to change: refused before sending
    async with AsyncDialerd(api.base, api.keys["acme"]) as aclient:
        with pytest.raises(InvalidRequest) as caught:
            await aclient.campaigns.update(cid, max_concurrent_calls=50)
        assert caught.value.details["concurrent_max"] == 10
        again = await aclient.campaigns.create(contacts, name="json", max_concurrent_calls=4, idempotency_key="a-1")
        replay = await aclient.campaigns.create(contacts, name="json", max_concurrent_calls=4, idempotency_key="a-1")
        assert replay["id"] == again["id"]
        assert (await aclient.campaigns.start(again["id"]))["status"] == "running"
        assert (await aclient.campaigns.import_report(again["id"], limit=1))["limit"] == 1
    assert await count_campaigns(api) == 2


async def test_idempotency_rows_expire_and_a_dead_processs_claim_is_taken_over(store: Any) -> None:
    from dialerd.services.auth import create_key
    from dialerd.services.idempotency import TTL

    tenant_id, _key = await create_key(store, "acme", concurrent_max=10, calls_per_minute=60, defaults=(10, 60))
    assert await store.claim_idempotency_key(tenant_id, "k", "h1", "proc_a", TTL) is None  # claimed
    held = await store.claim_idempotency_key(tenant_id, "k", "h1", "proc_a", TTL)
    assert held is not None and held.state == "in_progress"  # the same process: still running
    # Another process finds a claim its owner never finished: that daemon is gone, the claim is taken over.
    assert await store.claim_idempotency_key(tenant_id, "k", "h2", "proc_b", TTL) is None
    await store.finish_idempotency_key(tenant_id, "k", "proc_b", 201, '{"id": "cmp_x"}', "cmp_x")
    done = await store.claim_idempotency_key(tenant_id, "k", "h2", "proc_a", TTL)
    assert done is not None and (done.state, done.response_status, done.request_hash) == ("done", 201, "h2")
    # After 24 hours the key is forgotten: a new request may use it.
    async with store.write() as conn:
        await conn.exec_driver_sql("UPDATE idempotency_key SET created_at = created_at - INTERVAL '25 hours'"
                                   if store.dialect == "postgresql" else
                                   "UPDATE idempotency_key SET created_at = datetime(created_at, '-25 hours')")
    assert await store.claim_idempotency_key(tenant_id, "k", "h3", "proc_a", TTL) is None
    # A release removes only the releasing owner's claim in progress.
    await store.release_idempotency_key(tenant_id, "k", "proc_b")
    assert (await store.claim_idempotency_key(tenant_id, "k", "h3", "proc_a", TTL)) is not None
    await store.release_idempotency_key(tenant_id, "k", "proc_a")
    assert await store.claim_idempotency_key(tenant_id, "k", "h4", "proc_a", TTL) is None
