"""explain against the real local Asterisk (SQLite and PostgreSQL): a campaign at its own cap with a long
answered call up, a busy number waiting for its retry, and the daemon's connection to Asterisk cut
(``tests/tcp_proxy.py`` between dialerd and ARI) and restored.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import Api
from tests.live import live_api, numbers
from tests.pbx_env import local_pbx_env
from tests.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.pbx, pytest.mark.timeout(120)]


async def explain(api: Api, cid: str) -> dict[str, Any]:
    status, body = await api.call("GET", f"/api/v1/campaigns/{cid}/explain")
    assert status == 200, body
    return body  # type: ignore[no-any-return]


async def explain_until(api: Api, cid: str, ok: Callable[[dict[str, Any]], bool],
                        timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while not ok(body := await explain(api, cid)):
        assert time.monotonic() < deadline, f"explain never got there; last answer: {body}"
        await asyncio.sleep(0.1)
    return body


def reasons(body: dict[str, Any]) -> list[str]:
    return [b["reason"] for b in body["blocked_by"]]


async def create_started(api: Api, csv: str, **fields: Any) -> str:
    status, body = await api.create(csv, **fields)
    assert status == 201, body
    cid = str(body["id"])
    status, body = await api.call("POST", f"/api/v1/campaigns/{cid}/start")
    assert status == 200, body
    return cid


async def test_explain_on_the_real_pbx(tmp_path: Path, db_url: str) -> None:
    proxy = TcpProxy("127.0.0.1", int(urlsplit(local_pbx_env()["DIALERD_ARI_URL"]).port or 0))
    await proxy.start()
    try:
        async with live_api(tmp_path, "ari", db_url=db_url, ari_url=proxy.url, shutdown_grace_period=0.0) as api:
            # 30-39: answered, up about 20 s. One slot, two contacts: the first call holds the slot.
            capped = await create_started(api, numbers([30, 31]), max_concurrent_calls=1)
            # (Its slot is reserved just before its attempt is written: the contact is pending until then.)
            body = await explain_until(api, capped, lambda b: reasons(b) == ["campaign_concurrency"]
                                       and b["pending"] == 1)
            assert body["dialling"] is True and body["eligible_now"] == 1
            assert body["blocked_by"][0]["detail"] == {"max_concurrent_calls": 1, "in_flight": 1}

            # 40-49: busy. One retry an hour later: the contact waits for it.
            busy = await create_started(api, numbers([44]), retries_per_contact=1, retry_delay_seconds=3600)
            body = await explain_until(api, busy, lambda b: reasons(b) == ["retry_delay"])
            status, page = await api.call("GET", f"/api/v1/campaigns/{busy}/contacts")
            assert status == 200
            contact = page["contacts"][0]
            assert (contact["status"], contact["attempts"], contact["failure_reason"]) == ("pending", 1, "busy")
            assert body["dialling"] is False and body["pending"] == 1 and body["eligible_now"] == 0
            assert body["blocked_by"] == [{"reason": "retry_delay", "contacts": 1,
                                           "next_at": contact["next_attempt_at"], "detail": {}}]

            # The PBX goes away: every campaign that is to dial says so first.
            assert proxy.cut() >= 1, "dialerd had no connection through the proxy"
            # (tenant_rate may show for 0.1 s after a start: acme's 600 calls a minute space them so.)
            body = await explain_until(api, busy, lambda b: reasons(b) == ["pbx_disconnected", "retry_delay"])
            assert body["blocked_by"][0]["detail"]["held"] == "pbx_down"
            assert body["blocked_by"][0]["next_at"] is None
            body = await explain(api, capped)
            assert reasons(body)[0] == "pbx_disconnected" and body["dialling"] is False
            proxy.forward()
            body = await explain_until(api, busy, lambda b: reasons(b) == ["retry_delay"])
            assert body["blocked_by"][0]["next_at"] == contact["next_attempt_at"]
            for cid in (capped, busy):
                status, _ = await api.call("POST", f"/api/v1/campaigns/{cid}/stop")
                assert status == 200
    finally:
        await proxy.close()
