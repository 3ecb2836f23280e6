"""GET /api/v1/campaigns/{id}/events: the live Server-Sent Events stream.

Order of operations matters: we subscribe to the hub *before* replaying from the database, so an
event committed during the replay is either in the replay or in the queue (duplicates are dropped
by id), never in neither.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from aiohttp import web

from dialerd.api.context import principal, services
from dialerd.api.forms import campaign_id, parse_int, query
from dialerd.domain.campaign import CampaignStatus
from dialerd.store.tables import Event

routes = web.RouteTableDef()

REPLAY_PAGE = 500
# aiohttp does not cancel a handler whose client went away (handler_cancellation is off), and a stream
# that is not running writes only a heartbeat every 15 s; so the loop looks at the connection this often
# to let go of a vanished client's subscription and task (test_abusive_clients).
DISCONNECT_CHECK = 1.0


def _frame(event: str | None, data: dict[str, Any], event_id: int | None) -> bytes:
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    if event is not None:
        lines.append(f"event: {event}")
    lines.append("data: " + json.dumps(data, separators=(",", ":")))
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def _event_frame(ev: Event) -> bytes:
    assert ev.id is not None
    data = {"id": ev.id, "campaign_id": ev.campaign_id, **ev.payload}
    return _frame(ev.kind, data, ev.id)


def _is_end(ev: Event) -> bool:
    return ev.kind == "campaign" and ev.payload.get("status") in ("completed", "failed")


@routes.get("/api/v1/campaigns/{id}/events")
async def stream_events(request: web.Request) -> web.StreamResponse:
    svc = services(request)
    q = query(request, {"last_event_id"})
    campaign = await svc.campaigns.require(principal(request), campaign_id(request))
    header = request.headers.get("Last-Event-ID", q.get("last_event_id"))
    # Name what the client sent: a bad ?last_event_id= used to be reported as the Last-Event-ID header.
    source = "Last-Event-ID" if "Last-Event-ID" in request.headers else "last_event_id"
    last_id: int | None = parse_int(source, header, 0, 0, None) if header not in (None, "") else None

    sub = svc.hub.subscribe(campaign.id)
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    try:
        await resp.prepare(request)
        if last_id is None:
            # A fresh client starts live (like tail -f); Last-Event-ID: 0 replays everything.
            last_id = await svc.store.last_event_id(campaign.id)
        # The opening frame carries the position, so a client dropped before the first event can
        # resume from here instead of starting live again (and missing what happened between).
        await resp.write(f"retry: 2000\nid: {last_id}\n\n".encode())
        stream = _Stream(request, resp, sub, last_id)
        await stream.run(campaign.id, CampaignStatus(campaign.status).terminal)
    # ConnectionError, not just ConnectionResetError: a client that leaves while we wait for its TCP window
    # fails aiohttp's drain with a bare ConnectionError("Connection lost"), which was logged as an unhandled
    # error (test_abusive_clients).
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        svc.hub.unsubscribe(sub)
    return resp


class _Stream:
    def __init__(self, request: web.Request, resp: web.StreamResponse, sub: Any, last_id: int) -> None:
        self.svc = services(request)
        self.request = request
        self.resp = resp
        self.sub = sub
        self.last_id = last_id
        self.ended = False

    async def send(self, ev: Event) -> None:
        assert ev.id is not None
        if ev.id <= self.last_id:
            return
        await self.resp.write(_event_frame(ev))
        self.last_id = ev.id
        if _is_end(ev):
            await self.resp.write(_frame("end", {"campaign_id": ev.campaign_id, "status": ev.payload["status"]},
                                         ev.id))
            self.ended = True

    async def replay(self, campaign_id: str) -> None:
        while not self.ended:
            page = await self.svc.store.events_after(campaign_id, self.last_id, REPLAY_PAGE)
            for ev in page:
                await self.send(ev)
                if self.ended:
                    return
            if len(page) < REPLAY_PAGE:
                return

    async def run(self, campaign_id: str, terminal_at_start: bool) -> None:
        settings = self.svc.settings
        await self.replay(campaign_id)
        if self.ended:
            return
        if terminal_at_start:
            # Nothing more will happen; the replay held the final status event unless it was trimmed.
            campaign = await self.svc.store.get_campaign(campaign_id)
            status = campaign.status if campaign else "deleted"
            await self.resp.write(_frame("end", {"campaign_id": campaign_id, "status": status}, self.last_id))
            return
        await self.snapshot(campaign_id, force=True)
        next_snapshot = time.monotonic() + settings.sse_snapshot_interval
        next_heartbeat = time.monotonic() + settings.sse_heartbeat_interval
        while not self.ended:
            timeout = min(max(0.0, min(next_snapshot, next_heartbeat) - time.monotonic()), DISCONNECT_CHECK)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.sub.wakeup.wait(), timeout)
            transport = self.request.transport
            if transport is None or transport.is_closing():
                return  # the client is gone
            if self.sub.lagged:
                self.sub.lagged = False
                self.sub.drain()
                await self.replay(campaign_id)
            for ev in self.sub.drain():
                await self.send(ev)
                if self.ended:
                    return
            now = time.monotonic()
            if now >= next_snapshot:
                await self.snapshot(campaign_id)
                next_snapshot = now + settings.sse_snapshot_interval
            if now >= next_heartbeat:
                await self.resp.write(b": heartbeat\n\n")
                next_heartbeat = now + settings.sse_heartbeat_interval

    async def snapshot(self, campaign_id: str, force: bool = False) -> None:
        snap = await self.svc.metrics.snapshot(campaign_id)
        if snap is None:  # deleted under us
            self.ended = True
            await self.resp.write(_frame("end", {"campaign_id": campaign_id, "status": "deleted"}, self.last_id))
            return
        if force or snap["status"] == "running":
            await self.resp.write(_frame(None, snap, self.last_id))
