"""GET /api/v1/campaigns/{id}/events: the live Server-Sent Events stream.

Order of operations matters: we subscribe to the hub *before* replaying from the database, so an
event committed during the replay is either in the replay or in the hub's log (duplicates are dropped
by id), never in neither.

The stream closes after the campaign's ``end`` event, which the store writes once the campaign is over
(terminal status and no call in flight: ``domain.campaign.over``), not at the terminal status itself: a
campaign stopped with calls up streams their outcomes first. Live and replayed streams alike end there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from aiohttp import web

from dialerd.api.context import principal, services
from dialerd.api.forms import campaign_id, query
from dialerd.domain.campaign import CampaignStatus
from dialerd.services.campaign_spec import parse_int
from dialerd.services.events import Frame, Subscription, sse_frame

routes = web.RouteTableDef()

REPLAY_PAGE = 500
# aiohttp does not cancel a handler whose client went away (handler_cancellation is off), and a stream
# that is not running writes only a heartbeat every 15 s; so the loop looks at the connection this often
# to let go of a vanished client's subscription and task (test_abusive_clients).
DISCONNECT_CHECK = 1.0


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
            last_id = await svc.campaigns.last_event_id(campaign.id)
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
    def __init__(self, request: web.Request, resp: web.StreamResponse, sub: Subscription, last_id: int) -> None:
        self.svc = services(request)
        self.request = request
        self.resp = resp
        self.sub = sub
        self.last_id = last_id
        self.ended = False
        self.timer: asyncio.TimerHandle | None = None  # wakes the stream for a snapshot, heartbeat or check

    def unsent(self, frames: Iterable[Frame]) -> bytes:
        """The bytes of those ``frames`` this client has not had yet, up to and including the end."""
        out = []
        for frame in frames:
            if frame.id <= self.last_id:  # a live event the replay already sent
                continue
            out.append(frame.data)
            self.last_id = frame.id
            if frame.ends:
                self.ended = True
                break
        return b"".join(out)

    async def replay(self, campaign_id: str) -> None:
        while not self.ended:
            page = await self.svc.campaigns.events_after(campaign_id, self.last_id, REPLAY_PAGE)
            data = self.unsent(Frame.of(ev) for ev in page)
            if data:
                await self.resp.write(data)
            if len(page) < REPLAY_PAGE:
                return

    async def run(self, campaign_id: str, terminal_at_start: bool) -> None:
        settings = self.svc.settings
        await self.replay(campaign_id)
        if self.ended:
            return
        if terminal_at_start and await self.over_without_end(campaign_id):
            return
        # Still going, or stopped with calls up: their outcomes and then the end come live.
        await self.resp.write(await self.snapshot(campaign_id, force=True))
        loop = asyncio.get_running_loop()
        next_snapshot = loop.time() + settings.sse_snapshot_interval
        next_heartbeat = loop.time() + settings.sse_heartbeat_interval

        # One timer per stream, armed again only once it has fired: a new one per wake-up (wait_for,
        # asyncio.timeout) cost more than the rest of the wake-up with hundreds of streams. Deadlines only move
        # later, so a timer that fires early is just a wake-up with nothing to do.
        try:
            while not self.ended:
                if self.timer is None:
                    due = min(next_snapshot, next_heartbeat, loop.time() + DISCONNECT_CHECK)
                    self.timer = loop.call_at(due, self.ring)
                await self.sub.wakeup.wait()
                transport = self.request.transport
                if transport is None or transport.is_closing():
                    return  # the client is gone
                # Everything due goes out in one write: a send() per event per stream is what made the
                # fan-out cost the dispatcher its share of the loop (docs/benchmarks.md, section 4).
                frames = self.sub.take()
                if frames is None:  # lagged: what the hub dropped is in the database
                    await self.replay(campaign_id)
                    out = b""
                else:
                    out = self.unsent(frames)
                if not self.ended:
                    now = loop.time()
                    if now >= next_snapshot:
                        out += await self.snapshot(campaign_id)
                        next_snapshot = now + settings.sse_snapshot_interval
                    if now >= next_heartbeat and not self.ended:
                        out += b": heartbeat\n\n"
                        next_heartbeat = now + settings.sse_heartbeat_interval
                if out:
                    await self.resp.write(out)
        finally:
            if self.timer is not None:
                self.timer.cancel()

    async def over_without_end(self, campaign_id: str) -> bool:
        """For a campaign that was terminal when the stream opened and whose replay held no end: if it is
        over, send the end and say so.

        The client resumed after the end (Last-Event-ID at or past it), or the campaign finished under a
        dialerd that did not store ends yet. A terminal campaign with calls still up is not over: its
        end is stored with its last call's outcome and comes through the hub.
        """
        status, calls_up = await self.svc.campaigns.end_state(campaign_id)
        if calls_up:
            return False
        # Over: an end stored since the first replay (the last call ended meanwhile) is sent as it is.
        await self.replay(campaign_id)
        if not self.ended:
            status = status or "deleted"
            await self.resp.write(sse_frame("end", {"campaign_id": campaign_id, "status": status}, self.last_id))
            self.ended = True
        return True

    def ring(self) -> None:
        self.timer = None
        self.sub.wakeup.set()

    async def snapshot(self, campaign_id: str, force: bool = False) -> bytes:
        snap = await self.svc.metrics.snapshot(campaign_id)
        if snap is None:  # deleted under us
            self.ended = True
            return sse_frame("end", {"campaign_id": campaign_id, "status": "deleted"}, self.last_id)
        # Also while a stopped campaign's calls are still up: its calls in flight count down to the end.
        if force or snap["status"] == "running" or snap["calls_in_flight"]:
            return sse_frame(None, snap, self.last_id)
        return b""
