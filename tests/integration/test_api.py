"""Every endpoint of campaigns-api.md and every documented status code, over real HTTP, on both databases."""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select

from dialerd.store.repo import T_CAMPAIGN, T_CONTACT, T_EVENT
from tests.conftest import Api

CSV = "phone_number,first_name\n+14155550100,Ann\n+14155550101,Bob\n+14155550102,Cy\n"


async def created(api: Api, csv: str = CSV, tenant: str = "acme", **fields: Any) -> dict[str, Any]:
    status, body = await api.create(csv, tenant=tenant, **fields)
    assert status == 201, body
    return body  # type: ignore[no-any-return]


async def db_counts(api: Api) -> tuple[int, int, int]:
    async with api.daemon.store.read() as conn:
        campaigns = (await conn.execute(select(func.count()).select_from(T_CAMPAIGN))).scalar_one()
        contacts = (await conn.execute(select(func.count()).select_from(T_CONTACT))).scalar_one()
        events = (await conn.execute(select(func.count()).select_from(T_EVENT))).scalar_one()
    return campaigns, contacts, events


def assert_error(status: int, body: Any, expected_status: int, error_id: str | None = None) -> None:
    assert status == expected_status, body
    assert isinstance(body, dict) and body["error"] and body["error_id"], body
    assert "details" in body
    if error_id is not None:
        assert body["error_id"] == error_id, body


# ---- auth ----------------------------------------------------------------------------------------


async def test_missing_and_bad_keys_are_401(offline_api: Api) -> None:
    status, body = await offline_api.call("GET", "/api/v1/campaigns", tenant=None)
    assert_error(status, body, 401, "unauthorized")
    for header in ("Bearer nope", "Basic abc", "Bearer dlr_kdeadbeefdeadbeef_xxxx", "Bearer "):
        status, body = await offline_api.call("GET", "/api/v1/campaigns", tenant=None,
                                              headers={"Authorization": header})
        assert_error(status, body, 401, "unauthorized")
    # A real key id with a wrong secret is refused too.
    good = offline_api.keys["acme"]
    forged = good.rsplit("_", 1)[0] + "_" + "A" * 32
    status, body = await offline_api.call("GET", "/api/v1/campaigns", tenant=None,
                                          headers={"Authorization": f"Bearer {forged}"})
    assert_error(status, body, 401, "unauthorized")


async def test_unknown_route_and_method_are_json(offline_api: Api) -> None:
    status, body = await offline_api.call("GET", "/api/v1/nope")
    assert_error(status, body, 404, "route_not_found")
    status, body = await offline_api.call("PUT", "/api/v1/campaigns")
    assert_error(status, body, 405, "method_not_allowed")
    async with offline_api.session.put(offline_api.base + "/api/v1/campaigns", headers=offline_api.auth()) as resp:
        assert set(resp.headers["Allow"].split(",")) >= {"GET", "POST"}


# ---- create -------------------------------------------------------------------------------------


async def test_create_returns_201_draft_with_defaults_and_report(offline_api: Api) -> None:
    body = await created(offline_api, default_region="US")
    assert body["status"] == "draft"
    assert body["id"].startswith("cmp_")
    assert body["max_concurrent_calls"] == 5
    assert body["retries_per_contact"] == 0
    assert body["retry_delay_seconds"] == 300
    assert body["scheduled_at"] is None
    assert body["contacts"]["total"] == 3 and body["contacts"]["pending"] == 3
    assert body["import"]["rows_valid"] == 3 and body["import"]["problems"] == []
    assert body["import"]["custom_fields"] == ["first_name"]
    assert body["created_at"].endswith("Z")


async def test_create_takes_every_field(offline_api: Api) -> None:
    at = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    body = await created(
        offline_api, name="Spring renewals", caller_id="+14155550199", destination="sales,100,2",
        max_concurrent_calls=7, retries_per_contact=2, retry_delay_seconds=120, ring_timeout_seconds=25,
        scheduled_at=at.isoformat().replace("+00:00", "Z"), default_region="gb",
    )
    assert body["status"] == "scheduled"
    assert body["name"] == "Spring renewals"
    assert body["caller_id"] == "+14155550199"
    assert body["destination"] == "sales,100,2"
    assert (body["max_concurrent_calls"], body["retries_per_contact"], body["retry_delay_seconds"]) == (7, 2, 120)
    assert body["ring_timeout_seconds"] == 25
    assert body["default_region"] == "GB"
    assert datetime.fromisoformat(body["scheduled_at"]) == at


async def test_create_accepts_reference_field_names(offline_api: Api) -> None:
    body = await created(offline_api, agent_id="stasis:voicebot,en", phone_number_id="+14155550111")
    assert body["destination"] == "stasis:voicebot,en"
    assert body["caller_id"] == "+14155550111"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_concurrent_calls", "0"), ("max_concurrent_calls", "101"), ("max_concurrent_calls", "five"),
        ("retries_per_contact", "6"), ("retries_per_contact", "-1"), ("retry_delay_seconds", "59"),
        ("ring_timeout_seconds", "2"), ("scheduled_at", "2020-01-01T00:00:00Z"), ("scheduled_at", "tomorrow"),
        ("scheduled_at", "2031-01-01T09:00:00"), ("default_region", "XX"), ("destination", "nocomma"),
        ("destination", "stasis:"), ("destination", "a,b,c,d"), ("name", ""), ("name", "x" * 201),
        ("caller_id", "bad;id"),
    ],
)
async def test_create_rejects_bad_fields_naming_them(offline_api: Api, field: str, value: str) -> None:
    status, body = await offline_api.create(CSV, **{field: value})
    assert_error(status, body, 400, "invalid_field")
    assert body["details"]["field"] == field
    assert field in body["error"]
    assert await db_counts(offline_api) == (0, 0, 0)


async def test_create_rejects_unknown_and_repeated_fields(offline_api: Api) -> None:
    status, body = await offline_api.create(CSV, colour="blue")
    assert_error(status, body, 400, "unknown_field")
    assert "colour" in body["error"]
    form = aiohttp.FormData()
    form.add_field("name", "a")
    form.add_field("name", "b")
    form.add_field("contacts", CSV.encode(), filename="c.csv")
    status, body = await offline_api.call("POST", "/api/v1/campaigns", data=form)
    assert_error(status, body, 400, "invalid_field")
    status, body = await offline_api.create(CSV, destination="a,b", agent_id="c,d")
    assert_error(status, body, 400, "invalid_field")
    assert await db_counts(offline_api) == (0, 0, 0)


async def test_create_needs_multipart_with_contacts(offline_api: Api) -> None:
    status, body = await offline_api.call("POST", "/api/v1/campaigns", data=b"name=x",
                                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert_error(status, body, 400, "invalid_content_type")
    # JSON is the other create body (item 7 of issue 9): without its contacts array it is refused as such.
    status, body = await offline_api.call("POST", "/api/v1/campaigns", json={"name": "x"})
    assert_error(status, body, 400, "missing_contacts")
    form = aiohttp.FormData()
    form.add_field("name", "no file")
    form.add_field("x", b"", filename="x")  # force multipart
    status, body = await offline_api.call("POST", "/api/v1/campaigns",
                                          data=aiohttp.FormData({"name": "no file"}, default_to_multipart=True))
    assert_error(status, body, 400, "missing_contacts")
    status, body = await offline_api.call(
        "POST", "/api/v1/campaigns", data=b"--XYZ\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nabc",
        headers={"Content-Type": "multipart/form-data; boundary=XYZ"},
    )
    assert status == 400, body
    status, body = await offline_api.call(
        "POST", "/api/v1/campaigns", data=b"garbage without boundaries",
        headers={"Content-Type": "multipart/form-data"},
    )
    assert status == 400, body
    assert await db_counts(offline_api) == (0, 0, 0)


async def test_oversized_upload_is_413_and_writes_nothing(offline_api: Api) -> None:
    limit = offline_api.daemon.settings.upload_limit_bytes
    row = b"+14155550100,padding-" + b"x" * 80 + b"\n"
    big = b"phone_number,pad\n" + row * (limit // len(row) + 10)
    form = aiohttp.FormData()
    form.add_field("name", "too big")
    form.add_field("contacts", io.BytesIO(big), filename="c.csv", content_type="text/csv")
    status, body = await offline_api.call("POST", "/api/v1/campaigns", data=form)
    assert_error(status, body, 413, "payload_too_large")

    # Without a Content-Length (chunked), the limit is enforced while the file streams in.
    boundary = "dialerdtestboundary"
    head = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nchunked\r\n"
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"contacts\"; filename=\"c.csv\"\r\n"
        "Content-Type: text/csv\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    async def body_chunks() -> Any:
        yield head
        for i in range(0, len(big), 1 << 20):
            yield big[i : i + (1 << 20)]
        yield tail

    status, body = await offline_api.call(
        "POST", "/api/v1/campaigns", data=body_chunks(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert_error(status, body, 413, "payload_too_large")
    assert await db_counts(offline_api) == (0, 0, 0)


# ---- read ----------------------------------------------------------------------------------------


async def test_get_and_list(offline_api: Api) -> None:
    status, body = await offline_api.call("GET", "/api/v1/campaigns")
    assert status == 200 and body["campaigns"] == [] and body["total"] == 0
    ids = [(await created(offline_api, name=f"c{i}"))["id"] for i in range(3)]
    status, body = await offline_api.call("GET", f"/api/v1/campaigns/{ids[0]}")
    assert status == 200 and body["id"] == ids[0] and body["name"] == "c0"
    status, body = await offline_api.call("GET", "/api/v1/campaigns?limit=2")
    assert status == 200 and body["total"] == 3 and len(body["campaigns"]) == 2
    status, page2 = await offline_api.call("GET", "/api/v1/campaigns?limit=2&offset=2")
    assert len(page2["campaigns"]) == 1
    seen = {c["id"] for c in body["campaigns"]} | {c["id"] for c in page2["campaigns"]}
    assert seen == set(ids)
    status, body = await offline_api.call("GET", "/api/v1/campaigns?status=running")
    assert status == 200 and body["total"] == 0
    status, body = await offline_api.call("GET", "/api/v1/campaigns/cmp_doesnotexist")
    assert_error(status, body, 404, "campaign_not_found")
    for bad in ("limit=0", "limit=100000", "offset=-1", "limit=abc", "status=sideways", "sort=name"):
        status, body = await offline_api.call("GET", f"/api/v1/campaigns?{bad}")
        assert_error(status, body, 400)


async def test_contacts_list_filters_and_pages(offline_api: Api) -> None:
    rows = "".join(f"+1415555{1000 + i},n{i}\n" for i in range(25))
    c = await created(offline_api, csv="phone,name\n" + rows)
    status, body = await offline_api.call("GET", f"/api/v1/campaigns/{c['id']}/contacts?limit=10")
    assert status == 200 and body["total"] == 25 and len(body["contacts"]) == 10 and body["next_offset"] == 10
    first = body["contacts"][0]
    assert first["phone_number"] == "+14155551000"
    assert first["status"] == "pending" and first["attempts"] == 0 and first["last_attempt_at"] is None
    assert first["custom_fields"] == {"name": "n0"}
    assert first["failure_reason"] is None and first["hangup_cause"] is None
    status, last = await offline_api.call("GET", f"/api/v1/campaigns/{c['id']}/contacts?limit=10&offset=20")
    assert len(last["contacts"]) == 5 and last["next_offset"] is None
    ids = [x["id"] for x in body["contacts"]]
    assert ids == sorted(ids)  # stable order
    status, body = await offline_api.call("GET", f"/api/v1/campaigns/{c['id']}/contacts?status=failed")
    assert status == 200 and body["total"] == 0
    status, body = await offline_api.call("GET", f"/api/v1/campaigns/{c['id']}/contacts?status=nope")
    assert_error(status, body, 400, "invalid_field")
    status, body = await offline_api.call("GET", f"/api/v1/campaigns/{c['id']}/contacts?limit=5000")
    assert_error(status, body, 400, "invalid_field")
    status, body = await offline_api.call("GET", "/api/v1/campaigns/cmp_missing/contacts")
    assert_error(status, body, 404)


# ---- lifecycle -----------------------------------------------------------------------------------


async def test_lifecycle_over_http(offline_api: Api) -> None:
    c = await created(offline_api, max_concurrent_calls=2)
    cid = c["id"]
    path = f"/api/v1/campaigns/{cid}"
    for action in ("pause", "resume"):
        status, body = await offline_api.call("POST", f"{path}/{action}")
        assert_error(status, body, 409, "invalid_transition")
        assert "draft" in body["error"]
    status, body = await offline_api.call("POST", f"{path}/start")
    assert status == 200 and body["status"] == "running" and body["started_at"]
    status, body = await offline_api.call("POST", f"{path}/start")
    assert_error(status, body, 409, "invalid_transition")
    assert "already running" in body["error"]
    status, body = await offline_api.call("DELETE", path)
    assert_error(status, body, 409, "campaign_running")
    status, body = await offline_api.call("POST", f"{path}/pause")
    assert status == 200 and body["status"] == "paused"
    status, body = await offline_api.call("POST", f"{path}/pause")
    assert_error(status, body, 409)
    status, body = await offline_api.call("POST", f"{path}/resume")
    assert status == 200 and body["status"] == "running"
    status, body = await offline_api.call("POST", f"{path}/stop")
    assert status == 200 and body["status"] == "completed" and body["completed_at"]
    assert body["contacts"]["cancelled"] == 3 and body["contacts"]["pending"] == 0
    status, again = await offline_api.call("POST", f"{path}/stop")
    assert status == 200 and again["status"] == "completed"  # stop is idempotent
    for action in ("start", "resume", "pause"):
        status, body = await offline_api.call("POST", f"{path}/{action}")
        assert_error(status, body, 409)
        assert "completed" in body["error"]
    status, body = await offline_api.call("GET", f"{path}/contacts?status=cancelled")
    assert body["total"] == 3
    status, body = await offline_api.call("DELETE", path)
    assert status == 204 and body is None
    status, body = await offline_api.call("GET", path)
    assert_error(status, body, 404)
    status, body = await offline_api.call("DELETE", path)
    assert_error(status, body, 404)
    assert await db_counts(offline_api) == (0, 0, 0)


async def test_actions_on_unknown_campaign_are_404(offline_api: Api) -> None:
    for action in ("start", "pause", "resume", "stop"):
        status, body = await offline_api.call("POST", f"/api/v1/campaigns/cmp_nope/{action}")
        assert_error(status, body, 404, "campaign_not_found")


async def test_tenant_reservation_rule(offline_api: Api) -> None:
    # acme's concurrent_max is 10 (fixture): 6 + 5 > 10 is refused, 6 + 4 fits.
    a = await created(offline_api, max_concurrent_calls=6)
    b = await created(offline_api, max_concurrent_calls=5)
    c = await created(offline_api, max_concurrent_calls=4)
    assert (await offline_api.call("POST", f"/api/v1/campaigns/{a['id']}/start"))[0] == 200
    status, body = await offline_api.call("POST", f"/api/v1/campaigns/{b['id']}/start")
    assert_error(status, body, 409, "tenant_concurrency_exceeded")
    assert body["details"] == {"reserved": 6, "concurrent_max": 10, "requested": 5}
    assert (await offline_api.call("POST", f"/api/v1/campaigns/{c['id']}/start"))[0] == 200
    # Pausing frees the reservation; resuming checks it again.
    assert (await offline_api.call("POST", f"/api/v1/campaigns/{a['id']}/pause"))[0] == 200
    assert (await offline_api.call("POST", f"/api/v1/campaigns/{b['id']}/start"))[0] == 200
    status, body = await offline_api.call("POST", f"/api/v1/campaigns/{a['id']}/resume")
    assert_error(status, body, 409, "tenant_concurrency_exceeded")
    # Other tenants have their own budget.
    g = await created(offline_api, tenant="globex", max_concurrent_calls=10)
    assert (await offline_api.call("POST", f"/api/v1/campaigns/{g['id']}/start", tenant="globex"))[0] == 200


async def test_concurrent_starts_respect_reservation(offline_api: Api) -> None:
    ids = [(await created(offline_api, max_concurrent_calls=4))["id"] for _ in range(5)]
    results = await asyncio.gather(*(offline_api.call("POST", f"/api/v1/campaigns/{i}/start") for i in ids))
    assert sorted(s for s, _ in results) == [200, 200, 409, 409, 409]


# ---- tenant isolation ----------------------------------------------------------------------------


async def test_every_route_hides_other_tenants_campaigns(offline_api: Api) -> None:
    c = await created(offline_api)
    cid = c["id"]
    before = await offline_api.call("GET", f"/api/v1/campaigns/{cid}")
    routes = [
        ("GET", f"/api/v1/campaigns/{cid}"), ("DELETE", f"/api/v1/campaigns/{cid}"),
        ("GET", f"/api/v1/campaigns/{cid}/contacts"), ("GET", f"/api/v1/campaigns/{cid}/events"),
        ("POST", f"/api/v1/campaigns/{cid}/start"), ("POST", f"/api/v1/campaigns/{cid}/pause"),
        ("POST", f"/api/v1/campaigns/{cid}/resume"), ("POST", f"/api/v1/campaigns/{cid}/stop"),
    ]
    for method, path in routes:
        status, body = await offline_api.call(method, path, tenant="globex")
        assert_error(status, body, 404)
    status, listing = await offline_api.call("GET", "/api/v1/campaigns", tenant="globex")
    assert listing["total"] == 0
    after = await offline_api.call("GET", f"/api/v1/campaigns/{cid}")
    assert after == before  # nothing changed


# ---- events --------------------------------------------------------------------------------------


async def test_events_stream_answers_sse_and_404(offline_api: Api) -> None:
    c = await created(offline_api)
    status, body = await offline_api.call("GET", "/api/v1/campaigns/cmp_nope/events")
    assert_error(status, body, 404)
    url = f"{offline_api.base}/api/v1/campaigns/{c['id']}/events"
    async with offline_api.session.get(url, headers={**offline_api.auth(), "Last-Event-ID": "0"}) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        await offline_api.call("POST", f"/api/v1/campaigns/{c['id']}/stop")
        text = (await asyncio.wait_for(resp.content.read(), 10)).decode()
    assert "event: cancelled" in text and "event: campaign" in text and "event: end" in text
    assert text.count("event: cancelled") == 3
