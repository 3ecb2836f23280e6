"""The ARI adapter: originate into our Stasis app, report progress, route answered calls onwards.

Flow per attempt (method A of ``shared/asterisk.md``): ``POST /channels/{id}?app=...`` -> Dial RINGING or
ChannelStateChange Ringing (PROGRESS) -> StasisStart (ANSWERED; then ``/continue`` or ``/move`` to the
request's destination) -> ChannelDestroyed (ENDED, the one reliable source of cause and SIP code).

Events for a channel can reach the sink before :meth:`AriPbx.originate` returns. ENDED is reported once
per channel id by this adapter instance, whichever of the event, the reconcile after a reconnect or
:meth:`AriPbx.lookup` sees the end first.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from dialerd.domain.causes import parse_cause, parse_tech_cause
from dialerd.pbx.ari_client import AriClient, AriConnectionError, JsonObject
from dialerd.pbx.base import (
    CallEvent,
    CallEventKind,
    ChannelLookup,
    Destination,
    DestinationKind,
    OriginateError,
    OriginateRequest,
    PbxSink,
)
from dialerd.pbx.errors import PbxError, PbxRequestError
from dialerd.pbx.records import HANGUP_HANDLER, HANGUP_HANDLER_VAR, ID_VAR, global_name, parse_hangup_record

log = logging.getLogger("dialerd.pbx.ari")

DEST_VAR = "DIALERD_DEST"  # lets a restarted dialerd route a call an earlier process originated
# Everything the adapter reads; the rest (Varset, HangupRequest, StasisEnd...) is ~9 of 14 events a call.
EVENT_TYPES = ("Dial", "ChannelStateChange", "StasisStart", "ChannelDestroyed", "ApplicationReplaced")
_ALERTING = frozenset({"RINGING", "PROGRESS"})
_REMEMBER_ENDED = 4096


@dataclass
class _Call:
    destination: Destination | None
    alerted: bool = False
    answered: bool = False


class AriPbx:
    """:class:`~dialerd.pbx.base.Pbx` over ARI (REST + websocket), on aiohttp only."""

    name = "ari"

    def __init__(
        self,
        url: str,
        user: str,
        password: str,
        app: str,
        endpoint_template: str = "PJSIP/{number}@carrier",
        *,
        request_timeout: float = 5.0,
        max_connections: int = 16,
        reconnect_max_delay: float = 10.0,
    ) -> None:
        self.app = app
        self.endpoint_template = endpoint_template
        self.client = AriClient(
            url,
            user,
            password,
            app,
            request_timeout=request_timeout,
            max_connections=max_connections,
            reconnect_max_delay=reconnect_max_delay,
        )
        self._sink: PbxSink | None = None
        self._calls: dict[str, _Call] = {}
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self._up: asyncio.Event | None = None  # created in start(), inside the loop

    @property
    def connected(self) -> bool:
        return self.client.connected

    async def start(self, sink: PbxSink) -> None:
        """Open the pool and start the websocket task; returns at once (see :meth:`wait_connected`)."""
        self._sink = sink
        self._up = asyncio.Event()
        await self.client.open()
        self.client.start_events(self._on_event, self._on_state, self._on_open)

    async def wait_connected(self) -> None:
        """Return once the websocket is up (wrap in ``asyncio.timeout``). Call after :meth:`start`."""
        if self._up is None:
            raise RuntimeError("start() first")
        await self._up.wait()

    async def close(self) -> None:
        """Stop routing tasks and the websocket. Calls in Asterisk are not hung up."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.client.close()

    async def originate(self, request: OriginateRequest) -> str:
        cid = request.channel_id
        if not self.connected:
            # An answered call whose app has no websocket is hung up at once: never dial blind.
            raise OriginateError("ARI websocket is down; not originating")
        if cid in self._calls:
            raise OriginateError(f"channel id {cid} is already in flight")
        variables = {
            **request.variables,
            ID_VAR: cid,
            DEST_VAR: str(request.destination),
            HANGUP_HANDLER_VAR: HANGUP_HANDLER,
        }
        params: dict[str, str | int] = {
            "endpoint": self.endpoint_template.format(number=request.number),
            "app": self.app,
            "timeout": request.ring_timeout,
        }
        if request.caller_id:
            params["callerId"] = request.caller_id
        # Registered before the POST: Dial events can arrive before the HTTP reply.
        self._calls[cid] = _Call(destination=request.destination)
        extra = {"action": "originate", "channel_id": cid}
        try:
            channel = await self.client.request(
                "POST", f"/channels/{_q(cid)}", params=params, body={"variables": variables}
            )
        except PbxRequestError as exc:
            self._calls.pop(cid, None)
            log.warning("originate refused: HTTP %s %s", exc.pbx_status, exc.body[:200], extra=extra)
            raise OriginateError(f"ARI refused the originate: HTTP {exc.pbx_status} {exc.body[:200]}") from exc
        except AriConnectionError as exc:
            # Kept in _calls when it may exist: if it does, its events still get handled and routed.
            if not exc.sent:
                self._calls.pop(cid, None)
            log.warning("originate outcome unknown: %s", exc, extra=extra)
            raise OriginateError(str(exc), maybe_dialled=exc.sent) from exc
        name = str(channel.get("name", "")) if isinstance(channel, dict) else ""
        log.info("originated %s", name, extra=extra)
        return name

    async def lookup(self, channel_id: str) -> ChannelLookup:
        """Live channel, else the hangup-handler record, else unknown. The record is kept: see forget.

        A channel found ended is not reported again as an ENDED event by this adapter.
        """
        found = await self._lookup(channel_id)
        if not found.live:
            self._calls.pop(channel_id, None)
            if found.ended is not None:
                self._remember_ended(channel_id)
        return found

    async def _lookup(self, channel_id: str) -> ChannelLookup:
        try:
            channel = await self.client.request("GET", f"/channels/{_q(channel_id)}")
        except PbxRequestError as exc:
            if exc.pbx_status != 404:
                raise
        else:
            return ChannelLookup(channel_id, live=True, answered=_get(channel, "state") == "Up")
        reply = await self.client.request("GET", "/asterisk/variable", params={"variable": global_name(channel_id)})
        ended = parse_hangup_record(channel_id, str(_get(reply, "value") or ""))
        return ChannelLookup(channel_id, live=False, ended=ended)

    async def forget(self, channel_id: str) -> None:
        """Delete the hangup-handler record once the outcome is stored (a global variable per call)."""
        await self.client.request("POST", "/asterisk/variable", params={"variable": global_name(channel_id)})

    async def count_channels(self) -> int:
        channels = await self.client.request("GET", "/channels")
        return len(channels) if isinstance(channels, list) else 0

    # -- websocket side: everything below runs in the event task and must not block ----------------

    async def _on_open(self) -> None:
        # The app object is recreated when its last websocket and subscription go: set it every time.
        allowed = [{"type": t} for t in EVENT_TYPES]
        await self.client.request("PUT", f"/applications/{_q(self.app)}/eventFilter", body={"allowed": allowed})

    def _on_state(self, up: bool) -> None:
        if self._up is not None:
            (self._up.set if up else self._up.clear)()
        if self._sink is not None:
            self._sink.connection_changed(up)
        if up and self._calls:
            # Ends that happened while we were away produce no event: read their records.
            self._spawn(self._reconcile(), "ari-reconcile")

    def _on_event(self, event: JsonObject) -> None:
        kind = event.get("type")
        if kind == "Dial":
            if event.get("dialstatus") in _ALERTING:
                self._progress(event.get("peer"), event)
        elif kind == "ChannelStateChange":
            if _get(event, "channel", "state") in ("Ringing", "Ring"):
                self._progress(event.get("channel"), event)
        elif kind == "StasisStart":
            self._answered(event)
        elif kind == "ChannelDestroyed":
            self._destroyed(event)
        elif kind == "ApplicationReplaced":
            log.error("another client took over ARI app %s", self.app, extra={"action": "ari_app_replaced"})

    def _call_for(self, channel: Any) -> tuple[str, _Call] | None:
        if not isinstance(channel, dict):
            return None
        cid = str(channel.get("id", ""))
        call = self._calls.get(cid)
        if call is None and _get(channel, "channelvars", ID_VAR) == cid and cid not in self._ended:
            call = self._calls[cid] = _Call(destination=None)  # originated by an earlier process
        return (cid, call) if call is not None else None

    def _progress(self, channel: Any, event: JsonObject) -> None:
        found = self._call_for(channel)
        if found is None or found[1].alerted:
            return
        found[1].alerted = True
        self._emit(CallEvent(found[0], CallEventKind.PROGRESS, _at(event)))

    def _answered(self, event: JsonObject) -> None:
        found = self._call_for(event.get("channel"))
        if found is None or found[1].answered:
            return  # a second StasisStart (the destination re-entered our app) is not a new answer
        cid, call = found
        call.answered = True
        self._emit(CallEvent(cid, CallEventKind.ANSWERED, _at(event)))
        self._spawn(self._route(cid, call.destination), f"ari-route-{cid}")

    def _destroyed(self, event: JsonObject) -> None:
        channel = event.get("channel")
        found = self._call_for(channel)
        if found is None:
            return
        cid, call = found
        del self._calls[cid]
        state = _get(channel, "state")
        ended = CallEvent(
            cid,
            CallEventKind.ENDED,
            _at(event),
            cause=parse_cause(event.get("cause")),
            tech_cause=parse_tech_cause(event.get("tech_cause")),
            state=state if isinstance(state, str) else None,
            answered=call.answered or state == "Up",
            alerted=call.alerted,
        )
        if self._remember_ended(cid):
            self._emit(ended)

    async def _route(self, cid: str, destination: Destination | None) -> None:
        extra = {"action": "route", "channel_id": cid}
        try:
            if destination is None:
                reply = await self.client.request(
                    "GET", f"/channels/{_q(cid)}/variable", params={"variable": DEST_VAR}
                )
                destination = Destination.parse(str(_get(reply, "value") or ""))
            if destination.kind is DestinationKind.STASIS:
                params: dict[str, str | int] = {"app": destination.app}
                if destination.app_args:
                    params["appArgs"] = ",".join(destination.app_args)
                await self.client.request("POST", f"/channels/{_q(cid)}/move", params=params)
            else:
                params = {
                    "context": destination.context,
                    "extension": destination.extension,
                    "priority": destination.priority,
                }
                await self.client.request("POST", f"/channels/{_q(cid)}/continue", params=params)
            log.info("answered call sent to %s", destination, extra=extra)
        except (PbxError, ValueError) as exc:
            if isinstance(exc, PbxRequestError) and exc.pbx_status == 404:
                return  # the callee hung up first
            # An answered call nobody routes sits in silence: hang it up rather than leave dead air.
            log.error("cannot route answered call: %s; hanging up", exc, extra=extra)
            try:
                await self.client.request("DELETE", f"/channels/{_q(cid)}")
            except PbxError as hangup_exc:
                log.error("hangup after failed routing failed: %s", hangup_exc, extra=extra)

    async def _reconcile(self) -> None:
        for cid in list(self._calls):
            try:
                found = await self._lookup(cid)
            except PbxError as exc:
                log.warning("reconcile failed: %s", exc, extra={"action": "reconcile", "channel_id": cid})
                continue
            if found.live:
                continue
            self._calls.pop(cid, None)
            # No record and no channel: the originate never created one. Report it ended (no cause)
            # so nobody waits for an event that cannot come.
            ended = found.ended or CallEvent(cid, CallEventKind.ENDED, datetime.now(tz=UTC))
            if self._remember_ended(cid):
                log.info("call ended while disconnected", extra={"action": "reconcile", "channel_id": cid})
                self._emit(ended)

    def _remember_ended(self, cid: str) -> bool:
        """Note that ``cid`` ended; False when it had been reported already."""
        if cid in self._ended:
            return False
        self._ended[cid] = None
        if len(self._ended) > _REMEMBER_ENDED:
            self._ended.popitem(last=False)
        return True

    def _emit(self, event: CallEvent) -> None:
        if self._sink is not None:
            self._sink.call_event(event)

    def _spawn(self, coro: Any, name: str) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _q(part: str) -> str:
    return quote(part, safe="")


def _get(obj: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _at(event: JsonObject) -> datetime:
    stamp = event.get("timestamp")
    if isinstance(stamp, str):
        try:
            return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f%z")
        except ValueError:
            pass
    return datetime.now(tz=UTC)
