"""daily_calls_max against the real local Asterisk (issue 11, item 5): two running campaigns of one tenant,
6 contacts between them, daily_calls_max 3: Asterisk sees exactly 3 dialer channels, both campaigns stay
running, and GET /api/v1/call-limits says calls_today 3."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from dialerd.domain.rules import BlockReason
from dialerd.services.auth import set_limits
from tests.live import AsteriskWatch, live_api, numbers

pytestmark = pytest.mark.pbx


async def test_daily_calls_max_three_over_two_campaigns_on_asterisk(tmp_path: Path) -> None:
    async with live_api(tmp_path) as api:
        daemon = api.daemon
        tenant = await set_limits(daemon.store, "acme", concurrent_max=None, calls_per_minute=None,
                                  rules={"daily_calls_max": 3})
        # 00-29 answer and hang up after ~2.3 s; one call at a time per campaign, so each starts one at
        # once and one of them the third: both keep contacts pending.
        ids = []
        for suffixes in ([1, 2, 3], [4, 5, 6]):
            status, body = await api.create(numbers(suffixes), max_concurrent_calls=1, caller_id="+14155550000")
            assert status == 201, body
            ids.append(body["id"])
        watch = AsteriskWatch.from_env()
        watch.start()
        try:
            for cid in ids:
                status, body = await api.call("POST", f"/api/v1/campaigns/{cid}/start")
                assert status == 200, body
            deadline = time.monotonic() + 60
            while True:
                holds = await daemon.dispatcher.tenant_holds(tenant.id)
                if (any(h.reason is BlockReason.DAILY_CALLS_MAX for h in holds)
                        and daemon.slots.tenant_in_flight(tenant.id) == 0
                        and not any(watch.live.get(c) for c in ids)):
                    break
                assert time.monotonic() < deadline, (holds, watch.live, watch.seen)
                await asyncio.sleep(0.1)
        finally:
            await watch.stop()
        started = {cid: len(watch.start_times(cid)) for cid in ids}
        assert sum(started.values()) == 3 and all(started.values()), (started, watch.seen)
        for cid in ids:
            status, body = await api.call("GET", f"/api/v1/campaigns/{cid}")
            assert status == 200 and body["status"] == "running", body
            assert body["contacts"]["pending"] == 3 - started[cid] >= 1, body
        status, limits = await api.call("GET", "/api/v1/call-limits")
        assert status == 200, limits
        assert limits["limits"]["daily_calls_max"] == 3
        assert limits["usage"]["calls_today"] == 3 and limits["usage"]["in_flight"] == 0
        assert limits["usage"]["minutes_today"] > 0  # three answered calls of ~2.3 s
