"""GET /api/v1/campaigns?name=: a case-insensitive, literal substring search, on both databases.

The dashboard's search box sends it; names with LIKE's own wildcards (``%``, ``_``) and its escape
character must match only themselves, and accented names must match in any case on SQLite as on
PostgreSQL.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dialerd.api.campaigns import NAME_SEARCH_MAX
from dialerd.client import AsyncDialerd, Dialerd, InvalidRequest
from tests.conftest import Api

pytestmark = pytest.mark.timeout(60)

CSV = "phone_number\n+14155550100\n"
NAMES = [
    "Spring reminders", "spring SALE", "Été promo", "ÉTÉ 2027", "100% done", "100 percent", "a_b", "axb",
    "back\\slash", "Autumn",
]


async def listed(api: Api, tenant: str = "acme", **params: str) -> tuple[list[str], int]:
    status, body = await api.call("GET", "/api/v1/campaigns", tenant=tenant, params=params)
    assert status == 200, body
    return [c["name"] for c in body["campaigns"]], body["total"]


async def make(api: Api, name: str, tenant: str = "acme") -> dict[str, Any]:
    status, body = await api.create(CSV, tenant=tenant, name=name)
    assert status == 201, body
    return body  # type: ignore[no-any-return]


async def test_name_search_is_case_insensitive_and_literal(offline_api: Api) -> None:
    ids = {name: (await make(offline_api, name))["id"] for name in NAMES}
    await make(offline_api, "spring at globex", tenant="globex")

    # Newest first, as the unfiltered list; total counts the matches, not the tenant's campaigns.
    assert await listed(offline_api, name="spring") == (["spring SALE", "Spring reminders"], 2)
    assert await listed(offline_api, name="SPRING") == (["spring SALE", "Spring reminders"], 2)
    assert await listed(offline_api, name="  ring  ") == (["spring SALE", "Spring reminders"], 2)
    # Unicode case folding on both backends (SQLite's own lower() is ASCII only).
    assert await listed(offline_api, name="été") == (["ÉTÉ 2027", "Été promo"], 2)
    assert await listed(offline_api, name="ÉTÉ PRO") == (["Été promo"], 1)
    # LIKE's wildcards and escape character are taken literally.
    assert await listed(offline_api, name="100%") == (["100% done"], 1)
    assert await listed(offline_api, name="%") == (["100% done"], 1)
    assert await listed(offline_api, name="a_b") == (["a_b"], 1)
    assert await listed(offline_api, name="_") == (["a_b"], 1)
    assert await listed(offline_api, name="\\") == (["back\\slash"], 1)
    assert await listed(offline_api, name="k\\s") == (["back\\slash"], 1)
    assert await listed(offline_api, name="nothing like it") == ([], 0)
    # Empty (or blank) means no filter; another tenant's campaigns never show.
    assert (await listed(offline_api, name=""))[1] == len(NAMES)
    assert (await listed(offline_api, name="   "))[1] == len(NAMES)
    assert await listed(offline_api, tenant="globex", name="spring") == (["spring at globex"], 1)

    # Paging runs over the matches; status and name narrow together.
    assert await listed(offline_api, name="spring", limit="1") == (["spring SALE"], 2)
    assert await listed(offline_api, name="spring", limit="1", offset="1") == (["Spring reminders"], 2)
    status, body = await offline_api.call("POST", f"/api/v1/campaigns/{ids['Spring reminders']}/start")
    assert status == 200 and body["status"] == "running", body
    assert await listed(offline_api, name="spring", status="running") == (["Spring reminders"], 1)
    assert await listed(offline_api, name="spring", status="draft") == (["spring SALE"], 1)
    assert await listed(offline_api, name="autumn", status="running") == ([], 0)


async def test_bad_name_searches_are_refused(offline_api: Api) -> None:
    await make(offline_api, "x" * NAME_SEARCH_MAX)
    assert await listed(offline_api, name="X" * NAME_SEARCH_MAX) == (["x" * NAME_SEARCH_MAX], 1)
    for bad in ("x" * (NAME_SEARCH_MAX + 1), "a\x00b", "tab\there", "line\nbreak"):
        status, body = await offline_api.call("GET", "/api/v1/campaigns", params={"name": bad})
        assert status == 400, body
        assert body["error_id"] == "invalid_field" and body["details"]["field"] == "name", body
        assert body["error"].startswith("name:"), body
    status, body = await offline_api.call("GET", "/api/v1/campaigns?name=a&name=b")
    assert status == 400 and body["error_id"] == "invalid_parameter", body


async def test_clients_pass_the_name_search(offline_api: Api) -> None:
    for name in ("Black Friday", "black friday follow-up", "Cyber Monday"):
        await make(offline_api, name)
    async with AsyncDialerd(offline_api.base, offline_api.keys["acme"], timeout=10) as client:
        page = await client.campaigns.list(name="FRIDAY", limit=1)
        assert (page["total"], [c["name"] for c in page["campaigns"]]) == (2, ["black friday follow-up"])
        with pytest.raises(InvalidRequest):
            await client.campaigns.list(name="x" * (NAME_SEARCH_MAX + 1))

    def sync_list() -> Any:
        with Dialerd(offline_api.base, offline_api.keys["acme"], timeout=10) as client:
            return client.campaigns.list(status="draft", name="monday")

    page = await asyncio.to_thread(sync_list)
    assert [c["name"] for c in page["campaigns"]] == ["Cyber Monday"]
