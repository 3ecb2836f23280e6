"""The end of a campaign's event stream, over the API on SQLite and PostgreSQL: one ``end``, after the
campaign's last transition (terminal and no call in flight), live and replayed from any id, across a restart.

The PBX here is the in-package fake, holding answered calls up until the test hangs them up, so a stop
with calls up is deterministic; the same thing against the real Asterisk is test_dialing's
test_stop_with_calls_up_streams_their_outcomes_then_one_end.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from dialerd.pbx.fake import FakePbx
from tests.conftest import Api, OfflinePbx, make_key, start_daemon, test_settings
from tests.live import SseEvent, read_sse

pytestmark = pytest.mark.timeout(60)

CSV = "phone_number\n" + "".join(f"+1415555{1000 + i}\n" for i in range(5))


class HeldPbx(FakePbx):
    """The fake carrier, except that answered calls stay up until ``hang_up_all``."""

    def __init__(self) -> None:
        super().__init__(time_scale=1.0)
        self.release = asyncio.Event()

    async def _sleep(self, seconds: float) -> None:
        if seconds > 0:  # only the talk time is ever waited for (the numbers here answer at once)
            await self.release.wait()

    def hang_up_all(self) -> None:
        self.release.set()


@contextlib.asynccontextmanager
async def api_on(db_url: str, pbx: Any, key: str | None = None) -> AsyncIterator[Api]:
    daemon = await start_daemon(test_settings(db_url, shutdown_grace_period=0.0, sse_snapshot_interval=0.2), pbx)
    keys = {"acme": key or await make_key(daemon, "acme")}
    try:
        async with aiohttp.ClientSession() as session:
            yield Api(f"http://127.0.0.1:{daemon.port}", session, keys, daemon)
    finally:
        await daemon.stop()


async def create(api: Api, **fields: Any) -> str:
    status, body = await api.create(CSV, **fields)
    assert status == 201, body
    return str(body["id"])


async def post(api: Api, cid: str, action: str) -> dict[str, Any]:
    status, body = await api.call("POST", f"/api/v1/campaigns/{cid}/{action}")
    assert status == 200, body
    return dict(body)


async def get(api: Api, cid: str) -> dict[str, Any]:
    status, body = await api.call("GET", f"/api/v1/campaigns/{cid}")
    assert status == 200, body
    return dict(body)


async def poll(api: Api, cid: str, check: Any, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body = await get(api, cid)
        if check(body):
            return body
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.05)


async def subscribed(api: Api, cid: str, timeout: float = 10.0) -> None:
    """Wait until a stream of the campaign is subscribed to the daemon's hub (it then misses nothing)."""
    deadline = time.monotonic() + timeout
    # The hub has no event to wait on for a new subscriber; polling its count is what is left.
    while api.daemon.hub.subscriber_count(cid) == 0:  # noqa: ASYNC110
        assert time.monotonic() < deadline, "the stream never subscribed"
        await asyncio.sleep(0.01)


def named(events: list[SseEvent]) -> list[SseEvent]:
    """The stored events (transitions, campaign changes and the end) of a stream, in order."""
    return [e for e in events if e.event is not None]


def assert_ends_once_last(events: list[SseEvent]) -> None:
    kinds = [e.event for e in named(events)]
    assert kinds.count("end") == 1 and kinds[-1] == "end", kinds
    ids = [int(e.id) for e in named(events) if e.id]
    assert ids == sorted(ids) and len(ids) == len(set(ids)), ids


async def test_a_stop_with_nothing_in_flight_ends_at_once_and_once(db_url: str) -> None:
    async with api_on(db_url, OfflinePbx()) as api:
        cid = await create(api)
        await post(api, cid, "start")
        live = asyncio.create_task(read_sse(api, cid, last_event_id=None, max_seconds=20))
        await subscribed(api, cid)
        stopped = await post(api, cid, "stop")
        assert stopped["status"] == "completed" and stopped["calls_in_flight"] == 0
        streamed = await asyncio.wait_for(live, 20)
        everything = await read_sse(api, cid, max_seconds=20)
        middle = named(everything)[2].id
        assert middle is not None
        from_middle = await read_sse(api, cid, last_event_id=middle, max_seconds=20)
        end_id = named(everything)[-1].id
        assert end_id is not None
        after_end = await read_sse(api, cid, last_event_id=end_id, max_seconds=20)

    assert [e.event for e in named(streamed)] == ["cancelled"] * 5 + ["campaign", "end"]
    assert [e.event for e in named(everything)] == ["campaign"] + ["cancelled"] * 5 + ["campaign", "end"]
    for events in (streamed, everything, from_middle):
        assert_ends_once_last(events)
        assert named(events)[-1].data == {"id": int(end_id), "campaign_id": cid, "status": "completed",
                                          "at": named(events)[-1].data["at"]}  # type: ignore[index]
    assert [e.id for e in named(from_middle)] == [e.id for e in named(everything) if int(e.id or 0) > int(middle)]
    # Resuming past the end: the stream is over, it says so once and closes.
    assert [(e.event, e.data) for e in named(after_end)] == [("end", {"campaign_id": cid, "status": "completed"})]


async def test_a_draft_stopped_ends_too(db_url: str) -> None:
    async with api_on(db_url, OfflinePbx()) as api:
        cid = await create(api)
        await post(api, cid, "stop")
        events = await read_sse(api, cid, max_seconds=20)
    assert [e.event for e in named(events)] == ["cancelled"] * 5 + ["campaign", "end"]


async def test_a_stop_with_calls_up_streams_their_outcomes_then_one_end(db_url: str) -> None:
    pbx = HeldPbx()
    async with api_on(db_url, pbx) as api:
        cid = await create(api, max_concurrent_calls=3)
        live = asyncio.create_task(read_sse(api, cid, max_seconds=40))
        await post(api, cid, "start")
        await poll(api, cid, lambda b: b["contacts"].get("connected") == 3)
        stopped = await post(api, cid, "stop")
        assert stopped["status"] == "completed" and stopped["calls_in_flight"] == 3
        # Stopped, but not over: the stream stays open and GET keeps counting the calls up.
        await asyncio.sleep(0.5)
        assert not live.done()
        body = await get(api, cid)
        assert (body["status"], body["calls_in_flight"], body["contacts"]["connected"]) == ("completed", 3, 3)
        pbx.hang_up_all()
        await poll(api, cid, lambda b: b["calls_in_flight"] == 0 and b["contacts"]["completed"] == 3)
        streamed = await asyncio.wait_for(live, 20)
        replayed = await read_sse(api, cid, max_seconds=20)
        stop_id = next(e.id for e in named(replayed) if e.event == "campaign" and e.data
                       and e.data["status"] == "completed")
        from_stop = await read_sse(api, cid, last_event_id=stop_id, max_seconds=20)

    for events in (streamed, replayed, from_stop):
        assert_ends_once_last(events)
        kinds = [e.event for e in named(events)]
        stop_at = next(i for i, e in enumerate(named(events)) if e.event == "campaign" and e.data
                       and e.data["status"] == "completed") if events is not from_stop else -1
        # The three calls' outcomes come after the stop, then the end.
        assert kinds[stop_at + 1:] == ["completed"] * 3 + ["end"], kinds
    assert named(streamed) == named(replayed)
    # While the stopped campaign's calls were up, snapshots kept coming and counted them.
    stop_at = next(i for i, e in enumerate(streamed) if e.event == "campaign" and e.data
                   and e.data["status"] == "completed")
    first_outcome = next(i for i, e in enumerate(streamed) if e.event == "completed")
    draining = [e.data for e in streamed[stop_at:first_outcome] if e.event is None and e.data]
    assert draining and all(s["calls_in_flight"] == 3 for s in draining)


async def test_after_a_restart_the_reconciled_calls_end_the_stopped_campaign_once(db_url: str) -> None:
    async with api_on(db_url, HeldPbx()) as api:
        key = api.keys["acme"]
        cid = await create(api, max_concurrent_calls=3)
        await post(api, cid, "start")
        await poll(api, cid, lambda b: b["contacts"].get("connected") == 3)
        stopped = await post(api, cid, "stop")
        assert stopped["calls_in_flight"] == 3
    # The daemon went down with the three calls up (no grace period); the new one finds them in the
    # database, and its PBX knows nothing of them: each is reconciled as an answered call whose outcome
    # was lost, the last one with the end.
    async with api_on(db_url, FakePbx(), key=key) as api:
        body = await poll(api, cid, lambda b: b["contacts"].get("connected", 0) == 0 and b["calls_in_flight"] == 0)
        assert body["contacts"]["completed"] == 3 and body["status"] == "completed"
        replayed = await read_sse(api, cid, max_seconds=20)
        # A stream opened now (live, without Last-Event-ID) is told at once that it is over.
        late = await read_sse(api, cid, last_event_id=None, max_seconds=20)
    assert_ends_once_last(replayed)
    kinds = [e.event for e in named(replayed)]
    assert kinds[-4:] == ["completed"] * 3 + ["end"], kinds
    assert [e.event for e in named(late)] == ["end"]


async def test_dialerctl_watch_follows_a_stopped_campaign_to_its_end(db_url: str) -> None:
    """``dialerctl watch`` (one line per event) keeps going past the stop and prints the calls' outcomes."""
    import argparse
    import io

    from dialerd.client import Dialerd
    from dialerd.ctlwatch import watch

    pbx = HeldPbx()
    async with api_on(db_url, pbx) as api:
        cid = await create(api, max_concurrent_calls=3)
        await post(api, cid, "start")
        await poll(api, cid, lambda b: b["contacts"].get("connected") == 3)
        out = io.StringIO()
        args = argparse.Namespace(id=cid, from_start=False, last_event_id=None, tty=False)
        with Dialerd(api.base, api.keys["acme"]) as client:
            watching = asyncio.create_task(asyncio.to_thread(watch, client, args, out))
            await subscribed(api, cid)
            await post(api, cid, "stop")
            await asyncio.sleep(0.5)
            assert not watching.done()
            pbx.hang_up_all()
            assert await asyncio.wait_for(watching, 20) == 0
    *events, summary = out.getvalue().splitlines()
    kinds = [line.split()[1] for line in events if line.split()[1] != "snapshot"]  # "HH:MM:SS.mmm kind ..."
    assert kinds == ["cancelled", "cancelled", "campaign", "completed", "completed", "completed", "end"], kinds
    assert summary.startswith("final status=completed total=5") and "completed=3" in summary, summary
    assert "cancelled=2" in summary, summary
