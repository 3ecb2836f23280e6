"""The ARI adapter: originate into our Stasis app, report progress, route answered calls onwards.

Flow per attempt (method A of ``shared/asterisk.md``): ``POST /channels/{id}?app=...`` -> Dial RINGING or
ChannelStateChange Ringing (PROGRESS) -> StasisStart (ANSWERED; then ``/continue`` or ``/move`` to the
request's destination) -> ChannelDestroyed (ENDED, the one reliable source of cause and SIP code).
Measured on Asterisk 22: the app stays subscribed to a channel it originated after ``/continue`` and
``/move``, so ChannelDestroyed arrives without an explicit subscription.

Events for a channel can reach the sink before :meth:`AriPbx.originate` returns. ENDED is reported once
per channel id, whichever of the event, the reconcile after a reconnect or :meth:`AriPbx.lookup` sees
the end first.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import secrets
import socket
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from dialerd.domain.amd import (
    AMD_CAUSE_VARIABLE,
    AMD_CONTEXT,
    AMD_STATUS_VARIABLE,
    APP_VARIABLE,
    dialplan_variables,
)
from dialerd.domain.call import (
    OPT_OUT_VARIABLE,
    CallEvent,
    CallEventKind,
    ChannelLookup,
    Destination,
    DestinationKind,
    OriginateRequest,
    opted_out,
)
from dialerd.domain.causes import parse_cause, parse_tech_cause
from dialerd.errors import StoreError
from dialerd.pbx.ari_client import AriClient, AriConnectionError, JsonObject
from dialerd.pbx.errors import PbxError, PbxRequestError
from dialerd.pbx.fence import LEG_TECH_VAR, FenceError, arm, fenced_epoch, fenced_target
from dialerd.pbx.ownership import (
    OWNER_REFRESH_S,
    Owner,
    other_live_owner,
    owner_variable,
    parse_owner,
    startup_verdict,
)
from dialerd.pbx.records import HANGUP_HANDLER, HANGUP_HANDLER_VAR, ID_VAR, global_name, parse_hangup_record
from dialerd.pbx.tracking import CallTracker, TrackedCall
from dialerd.ports import FenceSeat, OriginateError, PbxSink
from dialerd.tasks import TaskOwner, child_of
from dialerd.timestamps import utcnow

log = logging.getLogger("dialerd.pbx.ari")

DEST_VAR = "DIALERD_DEST"  # lets a restarted dialerd route a call an earlier process originated
# All the adapter reads: cuts an answered call from ~14 events (Varset, HangupRequest...) to ~5.
EVENT_TYPES = (
    "Dial",
    "ChannelStateChange",
    "StasisStart",
    "ChannelDestroyed",
    "ApplicationMoveFailed",
    "ApplicationReplaced",
)
_ALERTING = frozenset({"RINGING", "PROGRESS"})
HELD_PBX_DOWN = "pbx_down"
HELD_APP_REPLACED = "ari_app_replaced"
_REPLACED_MAX_DELAY_S = 30.0
_REPLACED_STABLE_S = 60.0  # owning the app this long forgets earlier takeovers (backoff starts over)
FORGET_VAR = "DIALERD_FORGET"  # [dialerd-hh] deletes these ids' records when the call carrying it ends
FORGET_PER_CALL = 32  # ids one originate carries (the dialplan's loop takes up to 64)
FORGET_IDLE_S = 2.0  # records nobody's originate took within this long are deleted over REST
FORGET_BACKLOG = 2000  # more waiting than this (a stalled dialplan?): the oldest go over REST at once


@dataclass
class _Call(TrackedCall):
    destination: Destination | None = None


class AriPbx:
    """:class:`~dialerd.ports.Pbx` over ARI (REST + websocket), on aiohttp only."""

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
        heartbeat: float = 5.0,
        replaced_delay: float = 1.0,
        tasks: TaskOwner | None = None,
        fence: FenceSeat | None = None,
    ) -> None:
        """``heartbeat``: websocket ping period; a missing pong (half of it) counts as a dead connection.

        ``replaced_delay``: after another client took the app, re-register after 1-2x this many seconds,
        doubling on each takeover in a row (up to 30 s).

        ``fence``: originate through the PBX fence (``pbx/fence.py``, docs/fencing.md): each connect arms it
        with a new epoch before the adapter counts as connected, and every originate carries that epoch.
        """
        self.app = app
        self.url = url
        self.endpoint_template = endpoint_template
        self._tasks = child_of(tasks, "ari")
        self.client = AriClient(
            url,
            user,
            password,
            app,
            request_timeout=request_timeout,
            max_connections=max_connections,
            reconnect_max_delay=reconnect_max_delay,
            heartbeat=heartbeat,
            tasks=self._tasks,
        )
        self._track: CallTracker[_Call] = CallTracker()
        self._up: asyncio.Event | None = None  # created in start(), inside the loop
        self._replaced_delay = replaced_delay
        self._replaced_at: float | None = None  # monotonic time another client took the app; None: ours
        self._replacements = 0  # takeovers in a row (the backoff doubles with each)
        self._owned_since: float | None = None
        self._reported: bool | None = None  # the last connection state told to the sink
        self._token = secrets.token_hex(8)  # this process, in the owner record
        self.takeovers = 0  # times another client took the app (Prometheus counter)
        self.fence = fence
        self.request_counts = self.client.requests  # ARI requests sent, by method and route (/metrics)
        # Hangup records whose outcomes are stored, waiting to ride on an originate (forget()); whether the
        # PBX's [dialerd-hh] deletes them (None: not known yet on this connection), and the probe call.
        self._forgets: list[str] = []
        self._forget_in_dialplan: bool | None = None
        self._forget_probe: tuple[str, list[str]] | None = None
        self._forget_timer: asyncio.TimerHandle | None = None
        self._carried_at = 0.0  # monotonic time an originate last took some
        self.fence_epoch: int | None = None  # the epoch the PBX's fence holds for us (None: not armed)

    @property
    def connected(self) -> bool:
        """The websocket is up and the app is ours: originating is safe."""
        return self.client.connected and self._replaced_at is None

    @property
    def held_reason(self) -> str | None:
        """Why dialling is held: ``ari_app_replaced`` (another client has our app), ``pbx_down``, or None."""
        if self._replaced_at is not None:
            return HELD_APP_REPLACED
        return None if self.client.connected else HELD_PBX_DOWN

    @property
    def last_error(self) -> str | None:
        """What is wrong with the PBX connection now, as one sentence (None while all is well)."""
        return self.client.last_error

    async def start(self, sink: PbxSink) -> None:
        """Open the pool and start the websocket task; returns at once (see :meth:`wait_connected`)."""
        self._track.sink = sink
        self._up = asyncio.Event()
        await self.client.open()
        self.client.start_events(self._on_event, self._on_state, self._on_open, self._before_connect)
        self._tasks.spawn("ari-owner", self._keep_owner_record(), critical=False)

    async def check_app_free(self) -> str | None:
        """Before the first connect: why this app must not be taken (one sentence), or None.

        Facts and rules in :mod:`dialerd.pbx.ownership`. A PBX that cannot be asked (down, wrong
        password) is no reason to refuse: the websocket loop reports and retries that.
        """
        await self.client.open()
        verdict: str | None = None
        for attempt in range(3):  # a predecessor's websocket closing just now is not a live client
            if attempt:
                await asyncio.sleep(0.5)
            try:
                app = await self._get_app()
                if app is not None:
                    await self._force_cleanup()
                    app = await self._get_app()
                other = other_live_owner(await self._read_owner(), self._token, time.time()) if app else None
            except PbxError as exc:
                log.warning("cannot tell whether ARI app %s is in use: %s", self.app, exc,
                            extra={"action": "ari_app_check"})
                return None
            verdict = startup_verdict(app, other)
            if verdict is None:
                return None
        return verdict

    async def _get_app(self) -> Any:
        try:
            return await self.client.request("GET", f"/applications/{_q(self.app)}")
        except PbxRequestError as exc:
            if exc.pbx_status == 404:
                return None
            raise

    async def _force_cleanup(self) -> None:
        """Register and drop a throw-away app: Asterisk then drops apps nobody holds and nothing uses."""
        await self.client.touch_app(f"{self.app}.probe-{secrets.token_hex(3)}")

    async def _read_owner(self) -> Owner | None:
        reply = await self.client.request("GET", "/asterisk/variable", params={"variable": owner_variable(self.app)})
        return parse_owner(str(_get(reply, "value") or ""))

    def _owner_record(self) -> Owner:
        return Owner(self._token, socket.gethostname(), os.getpid(), time.time())

    async def _keep_owner_record(self) -> None:
        """While the app is ours, keep the owner record fresh so another dialerd knows not to take it."""
        while True:
            await asyncio.sleep(OWNER_REFRESH_S)
            if self.connected:
                await self._write_owner()

    async def _write_owner(self) -> None:
        try:
            await self.client.request("POST", "/asterisk/variable", params={
                "variable": owner_variable(self.app), "value": self._owner_record().encode()})
        except PbxError as exc:
            log.warning("could not write the ARI app owner record: %s", exc, extra={"action": "ari_owner"})

    async def wait_connected(self) -> None:
        """Return once the websocket is up (wrap in ``asyncio.timeout``). Call after :meth:`start`."""
        if self._up is None:
            raise RuntimeError("start() first")
        await self._up.wait()

    async def close(self) -> None:
        """Stop routing tasks and the websocket. Calls in Asterisk are not hung up."""
        # Whether the app was ours, read before the tasks go: the websocket task is among them, and the
        # owner record is cleared over REST only after its refresher has stopped (or it could write again).
        was_ours = self.connected
        await self._tasks.cancel_all()
        if was_ours and self._forgets:  # the records still waiting to ride on an originate
            try:
                async with asyncio.timeout(5.0):
                    await self._forget_now(self._forgets)
                self._forgets = []
            except (PbxError, TimeoutError):
                pass  # a leftover record only costs PBX memory
        if was_ours:
            try:  # a clean stop frees the app at once for the next dialerd
                owner = await self._read_owner()
                if owner is not None and owner.token == self._token:
                    await self.client.request("POST", "/asterisk/variable",
                                              params={"variable": owner_variable(self.app)})
            except PbxError:
                pass
        await self.client.close()

    async def originate(self, request: OriginateRequest) -> str:
        cid = request.channel_id
        if not self.connected:
            # An answered call whose app has no websocket is hung up at once: never dial blind.
            if self._replaced_at is not None:
                raise OriginateError(f"another client holds ARI app {self.app}; not originating")
            raise OriginateError("ARI websocket is down; not originating")
        if cid in self._track.calls:
            raise OriginateError(f"channel id {cid} is already in flight")
        variables = {
            **request.variables,
            ID_VAR: cid,
            DEST_VAR: str(request.destination),
            HANGUP_HANDLER_VAR: HANGUP_HANDLER,
        }
        if request.amd is not None:
            # [dialerd-amd] deals with a machine as on_machine says, else returns the call to this app with
            # the verdict (a second StasisStart, args ["amd", AMDSTATUS, AMDCAUSE]), which routes it on.
            variables.update(dialplan_variables(request.amd))
            variables[APP_VARIABLE] = self.app
        params: dict[str, str | int] = {
            "endpoint": self.endpoint_template.format(number=request.number),
            "app": self.app,
            "timeout": request.ring_timeout,
        }
        if self.fence is not None:
            # Read when the request is built: a POST built under an older epoch is refused by the PBX.
            epoch = self.fence_epoch
            if epoch is None:
                raise OriginateError("the PBX fence is not armed yet; not originating")
            try:
                target = fenced_target(str(params["endpoint"]), request.number, self.fence.key, epoch,
                                       formats=self.fence.formats)
            except ValueError as exc:
                raise OriginateError(str(exc)) from exc
            params["endpoint"], params["formats"] = target.endpoint, target.formats
            variables.update(target.variables)
        if request.caller_id:
            params["callerId"] = request.caller_id
        carried = await self._carry_forgets(cid)
        if carried:
            variables[FORGET_VAR] = ",".join(carried)
        # Registered before the POST: Dial events can arrive before the HTTP reply.
        call = self._track.follow(cid, _Call(destination=request.destination, pending=True, amd=request.amd))
        extra = {"action": "originate", "channel_id": cid}
        try:
            channel = await self.client.request(
                "POST", f"/channels/{_q(cid)}", params=params, body={"variables": variables}
            )
        except PbxRequestError as exc:
            self._track.calls.pop(cid, None)
            self._uncarry(cid, carried)
            log.warning("originate refused: HTTP %s %s", exc.pbx_status, exc.body[:200], extra=extra)
            raise OriginateError(f"ARI refused the originate: HTTP {exc.pbx_status} {exc.body[:200]}") from exc
        except AriConnectionError as exc:
            # Kept when it may exist: if it does, its events still get handled and the answer routed.
            call.pending, call.uncertain = False, True
            if not exc.sent:
                self._track.calls.pop(cid, None)
            self._uncarry(cid, carried)  # deleting a record twice is harmless; never deleting one is not
            log.warning("originate outcome unknown: %s", exc, extra=extra)
            raise OriginateError(str(exc), maybe_dialled=exc.sent) from exc
        call.pending = False
        name = str(_get(channel, "name") or "")
        log.info("originated %s", name, extra=extra)
        return name

    async def lookup(self, channel_id: str) -> ChannelLookup:
        """Live channel, else the hangup-handler record, else unknown. The record stays: see :meth:`forget`.

        A channel found ended is not reported again as an ENDED event.
        """
        found = await self._lookup(channel_id)
        call = self._track.calls.get(channel_id)
        if found.ended is not None:
            self._track.mark_ended(channel_id)
        elif not found.live and call is not None and not call.pending:
            del self._track.calls[channel_id]  # never created; a late channel would still be adopted
        return found

    async def forget(self, channel_id: str) -> None:
        """Delete the hangup-handler record once the outcome is stored (else one global per call stays).

        Perf (issue 14, ARI requests per call): the ids ride on later originates as ``DIALERD_FORGET``, and
        ``[dialerd-hh]`` deletes their records (the global and the AstDB copy) when that call ends: no
        request of its own. Checked once per connection on the first call that carries some (its records
        must be gone when it has ended); a dialplan without that loop makes this fall back to one REST
        request per record, which deletes only the global (ARI cannot evaluate DB_DELETE).
        """
        if self._forget_in_dialplan is False:
            await self._forget_now([channel_id])
            return
        self._forgets.append(channel_id)
        if len(self._forgets) > FORGET_BACKLOG:
            oldest, self._forgets = self._forgets[:-FORGET_BACKLOG], self._forgets[-FORGET_BACKLOG:]
            await self._forget_now(oldest)
        if self._forget_timer is None:
            self._forget_timer = self._tasks.spawn_later("ari-forget", FORGET_IDLE_S, self._forget_idle,
                                                         critical=False)

    async def _carry_forgets(self, cid: str) -> list[str]:
        """The ids the originate of ``cid`` takes along for its hangup handler to delete (see forget).

        Until this connection knows whether the dialplan deletes them, one call at a time carries a probe:
        a record set just now (so it exists) among the ids; it must be gone once that call has ended."""
        if not self._forgets or self._forget_in_dialplan is False:
            return []
        if self._forget_in_dialplan is None:
            if self._forget_probe is not None:
                return []
            probe = f"forget-probe-{self._token}"
            try:
                await self.client.request("POST", "/asterisk/variable",
                                          params={"variable": global_name(probe), "value": "probe"})
            except PbxError:
                return []
            carried, self._forgets = self._forgets[:FORGET_PER_CALL - 1], self._forgets[FORGET_PER_CALL - 1:]
            self._forget_probe = (cid, [probe, *carried])
            return [probe, *carried]
        carried, self._forgets = self._forgets[:FORGET_PER_CALL], self._forgets[FORGET_PER_CALL:]
        self._carried_at = time.monotonic()
        return carried

    def _uncarry(self, cid: str, carried: list[str]) -> None:
        if carried:
            self._forgets[:0] = [c for c in carried if not c.startswith("forget-probe-")]
            if self._forget_probe is not None and self._forget_probe[0] == cid:
                self._forget_probe = None

    async def _forget_now(self, ids: list[str]) -> None:
        for channel_id in ids:
            await self.client.request("POST", "/asterisk/variable", params={"variable": global_name(channel_id)})

    async def _forget_idle(self) -> None:
        """No originate took the waiting ids (the campaign ended, or dialling paused): delete them over REST."""
        self._forget_timer = None
        if self._forget_in_dialplan is not False and time.monotonic() - self._carried_at < FORGET_IDLE_S:
            # Originates are still taking them: look again later.
            self._forget_timer = self._tasks.spawn_later("ari-forget", FORGET_IDLE_S, self._forget_idle,
                                                         critical=False)
            return
        waiting, self._forgets = self._forgets, []
        try:
            await self._forget_now(waiting)
        except PbxError:
            self._forgets[:0] = waiting  # the PBX is away: the next originate or idle pass takes them

    async def _check_forget_probe(self, cid: str, carried: list[str]) -> None:
        """The probe call ``cid`` ended: its hangup handler ran, so the probe record it carried (set just
        before its originate) is gone iff the dialplan deletes records."""
        probe, rest = carried[0], carried[1:]
        try:
            reply = await self.client.request("GET", "/asterisk/variable", params={"variable": global_name(probe)})
        except PbxError:
            self._forgets[:0] = rest  # unknown: the next call that carries some finds out
            return
        if _get(reply, "value"):
            self._forget_in_dialplan = False
            log.warning("the PBX's [dialerd-hh] does not delete hangup records (an older dialplan); deleting "
                        "them over REST, one request per call", extra={"action": "forget_fallback"})
            waiting, self._forgets = carried + self._forgets, []
            await self._forget_now(waiting)  # the probe's own record too
        else:
            self._forget_in_dialplan = True

    async def count_channels(self) -> int:
        channels = await self.client.request("GET", "/channels")
        return len(channels) if isinstance(channels, list) else 0

    async def _lookup(self, channel_id: str) -> ChannelLookup:
        try:
            channel = await self.client.request("GET", f"/channels/{_q(channel_id)}")
        except PbxRequestError as exc:
            if exc.pbx_status != 404:
                raise
        else:
            if _get(channel, "state") == "Up" and _get(channel, "dialplan", "app_data") == self.app:
                self._route_parked(channel_id)
            return ChannelLookup(channel_id, live=True, answered=_get(channel, "state") == "Up")
        reply = await self.client.request(
            "GET", "/asterisk/variable", params={"variable": global_name(channel_id)}
        )
        ended = parse_hangup_record(channel_id, str(_get(reply, "value") or ""))
        return ChannelLookup(channel_id, live=False, ended=ended)

    def _route_parked(self, cid: str) -> None:
        """Route an answered call still sitting in our app as originated (``app_data`` is our bare app name).

        Its StasisStart was lost: Asterisk answered it while our websocket was dying (the link cut after
        the originate left, or events lost before a dead connection was noticed) and replays nothing on
        reconnect. Left alone, the callee hears dead air until hanging up. Found by both reconciles (this
        adapter's after a reconnect, the dispatcher's after a restart); ``answer`` makes it happen once.
        """
        call = self._track.calls.get(cid)
        if call is None:
            if self._track.was_ended(cid):
                return
            call = self._track.calls[cid] = _Call()  # originated by an earlier process: _route reads DEST_VAR
        if self._track.answer(cid, call):
            log.warning(
                "answered call found unrouted in our app (StasisStart lost); routing it",
                extra={"action": "route_parked", "channel_id": cid},
            )
            self._tasks.spawn(f"ari-route-{cid}", self._route(cid, call.destination), critical=False)

    # -- websocket side: everything below runs in the event task and must not block ----------------

    async def _on_open(self) -> None:
        # The app object is recreated when its last websocket and subscription go: set it every time.
        # Its success also proves the app is registered to this (just opened) websocket.
        allowed = [{"type": t} for t in EVENT_TYPES]
        await self.client.request("PUT", f"/applications/{_q(self.app)}/eventFilter", body={"allowed": allowed})
        await self._write_owner()
        # A new connection may be to a restarted PBX with another dialplan: find out again (see forget).
        self._forget_in_dialplan, self._forget_probe = None, None
        if self.fence is not None:
            # Arm before the adapter counts as connected: no originate leaves without the epoch it holds.
            # A failure drops this connection; the next one takes a new epoch (never arm one twice).
            self.fence_epoch = None
            key = self.fence.key
            try:
                self.fence_epoch = await self.fence.arm(lambda epoch: arm(self.client, key, epoch))
            except StoreError as exc:  # a PbxError drops this connection and retries (with a new epoch)
                raise FenceError(f"cannot arm the PBX fence: {exc}") from exc
            log.info("PBX fence armed", extra={"action": "fence_armed", "epoch": self.fence_epoch})

    async def _before_connect(self) -> None:
        """After a takeover: never fight another dialerd for the app (its fresh owner record says it is
        there); anything else (an admin's wscat, an old dialerd) has the app taken back."""
        if self._replaced_at is None:
            return
        told = False
        while True:
            try:
                other = other_live_owner(await self._read_owner(), self._token, time.time())
            except PbxError:
                return  # cannot tell: connecting reports what is wrong
            if other is None:
                return
            if not told:
                told = True
                self.client.last_error = (f"another {other.describe()} holds ARI app {self.app}; "
                                          "dialling held until it stops")
                log.error(self.client.last_error, extra={"action": "ari_app_held", "app": self.app})
            await asyncio.sleep(OWNER_REFRESH_S)

    def _app_replaced(self) -> None:
        now = time.monotonic()
        if self._owned_since is not None and now - self._owned_since >= _REPLACED_STABLE_S:
            self._replacements = 0
        self._replacements += 1
        self.takeovers += 1
        self._replaced_at = now
        self._owned_since = None
        cap = min(_REPLACED_MAX_DELAY_S, self._replaced_delay * 2 ** (self._replacements - 1))
        delay = random.uniform(cap, 2 * cap) if cap < _REPLACED_MAX_DELAY_S else cap
        why = (f"another client took over ARI app {self.app} (ApplicationReplaced); dialling held, "
               f"re-registering in {delay:.1f} s")
        log.error(why, extra={"action": "ari_app_replaced", "app": self.app, "takeovers": self.takeovers})
        self.client.reconnect_after(delay, why)
        self._report(False)  # at once: not one more originate into an app that is not ours

    def _report(self, up: bool) -> None:
        if self._up is not None:
            (self._up.set if up else self._up.clear)()
        if self._track.sink is not None and up != self._reported:
            self._reported = up
            self._track.sink.connection_changed(up)

    def _on_state(self, up: bool) -> None:
        if up:
            self._owned_since = time.monotonic()
            if self._replaced_at is not None:
                log.warning("ARI app %s is ours again after %.1f s; dialling resumes", self.app,
                            time.monotonic() - self._replaced_at, extra={"action": "ari_app_reregistered"})
                self._replaced_at = None
        self._report(up)
        if up and self._track.calls:
            # Ends that happened while we were away produce no event: read their records.
            self._tasks.spawn("ari-reconcile", self._reconcile(), critical=False)

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
        elif kind == "ApplicationMoveFailed":
            found = self._call_for(event.get("channel"))
            if found is not None:  # the target app has no websocket: the call stays with us, silent
                self._tasks.spawn(f"ari-hangup-{found[0]}", self._hangup(found[0], "move failed"), critical=False)
        elif kind == "ApplicationReplaced":
            self._app_replaced()

    def _call_for(self, channel: Any) -> tuple[str, _Call] | None:
        cid = str(_get(channel, "id") or "")
        call = self._track.calls.get(cid)
        if call is None and cid and _get(channel, "channelvars", ID_VAR) == cid and not self._track.was_ended(cid):
            call = self._track.calls[cid] = _Call()  # originated by an earlier process
        return (cid, call) if call is not None else None

    def _progress(self, channel: Any, event: JsonObject) -> None:
        found = self._call_for(channel)
        if found is not None:
            self._track.progress(*found, at=_at(event))

    def _answered(self, event: JsonObject) -> None:
        found = self._call_for(event.get("channel"))
        if found is None:
            return
        cid, call = found
        args = event.get("args")
        if isinstance(args, list) and args and args[0] == "amd":
            # Back from [dialerd-amd]: the answer is reported now, with the verdict, at the answer's time.
            status, cause = ([*map(str, args[1:3]), "", ""])[:2]
            if self._track.answer(cid, call, amd_status=status, amd_cause=cause):
                self._tasks.spawn(f"ari-route-{cid}", self._route(cid, call.destination), critical=False)
            return
        if call.amd is not None and call.answered_at is None and not call.answered:
            self._track.answered_awaiting_amd(call, _at(event))
            self._tasks.spawn(f"ari-amd-{cid}", self._to_amd(cid), critical=False)
            return
        # A second StasisStart (the destination re-entered our app) is not a new answer.
        if self._track.answer(cid, call, at=_at(event)):
            self._tasks.spawn(f"ari-route-{cid}", self._route(cid, call.destination), critical=False)

    async def _to_amd(self, cid: str) -> None:
        params: dict[str, str | int] = {"context": AMD_CONTEXT, "extension": "s", "priority": 1}
        try:
            await self.client.request("POST", f"/channels/{_q(cid)}/continue", params=params)
        except PbxError as exc:
            if isinstance(exc, PbxRequestError) and exc.pbx_status == 404:
                return  # the callee hung up first
            await self._hangup(cid, f"cannot start AMD: {exc}")

    def _destroyed(self, event: JsonObject) -> None:
        channel = event.get("channel")
        found = self._call_for(channel)
        if found is None:
            return
        cid, call = found
        state = _get(channel, "state")
        probe = self._forget_probe
        if probe is not None and probe[0] == cid:
            self._forget_probe = None
            self._tasks.spawn("ari-forget-probe", self._check_forget_probe(*probe), critical=False)
        fenced = fenced_epoch(channel)
        if fenced is not None and self.fence_epoch is not None and fenced == str(self.fence_epoch):
            # Refused under the epoch we hold: the PBX lost its fence global (a restart the websocket did
            # not notice, a reload with clearglobalvars): reconnect, which arms a new epoch.
            self.fence_epoch = None
            why = "the PBX fence refused an originate under our own epoch (its global was lost); re-arming"
            log.warning(why, extra={"action": "fence_lost", "channel_id": cid})
            self.client.reconnect_after(0.2, why)
        self._track.end(
            CallEvent(
                cid,
                CallEventKind.ENDED,
                _at(event),
                cause=parse_cause(event.get("cause")),
                # Through the fence the channel is a Local ;1 with no SIP cause: the carrier leg's is here.
                tech_cause=parse_tech_cause(event.get("tech_cause"))
                or parse_tech_cause(_text(_get(channel, "channelvars", LEG_TECH_VAR))),
                fenced=fenced,
                state=state if isinstance(state, str) else None,
                answered=call.answered or state == "Up",
                alerted=call.alerted,
                opt_out=opted_out(_get(channel, "channelvars", OPT_OUT_VARIABLE)),
                answered_at=None if call.answered else call.answered_at,
                amd_status=_text(_get(channel, "channelvars", AMD_STATUS_VARIABLE)),
                amd_cause=_text(_get(channel, "channelvars", AMD_CAUSE_VARIABLE)),
            )
        )

    async def _route(self, cid: str, destination: Destination | None) -> None:
        extra = {"action": "route", "channel_id": cid}
        try:
            if destination is None:
                reply = await self.client.request(
                    "GET", f"/channels/{_q(cid)}/variable", params={"variable": DEST_VAR}
                )
                destination = Destination.parse(str(_get(reply, "value") or ""))
            params: dict[str, str | int]
            if destination.kind is DestinationKind.STASIS:
                params = {"app": destination.app}
                if destination.app_args:
                    params["appArgs"] = ",".join(destination.app_args)
                await self.client.request("POST", f"/channels/{_q(cid)}/move", params=params)
            else:
                params = {"context": destination.context, "extension": destination.extension}
                params["priority"] = destination.priority
                await self.client.request("POST", f"/channels/{_q(cid)}/continue", params=params)
            log.info("answered call sent to %s", destination, extra=extra)
        except (PbxError, ValueError) as exc:
            if isinstance(exc, PbxRequestError) and exc.pbx_status == 404:
                return  # the callee hung up first
            await self._hangup(cid, f"cannot route: {exc}")

    async def _hangup(self, cid: str, why: str) -> None:
        # An answered call nobody routes sits in silence: hang it up rather than leave dead air.
        extra = {"action": "hangup", "channel_id": cid}
        log.error("hanging up answered call: %s", why, extra=extra)
        try:
            await self.client.request("DELETE", f"/channels/{_q(cid)}")
        except PbxError as exc:
            log.error("hangup failed: %s", exc, extra=extra)

    async def _reconcile(self) -> None:
        for cid, call in list(self._track.calls.items()):
            if call.pending:
                continue  # its POST is still out; the reply or the events will settle it
            try:
                found = await self._lookup(cid)
            except PbxError as exc:
                log.warning("reconcile failed: %s", exc, extra={"action": "reconcile", "channel_id": cid})
                continue
            if found.live:
                continue
            if found.ended is None and call.uncertain:
                self._track.calls.pop(cid, None)  # never created; the caller's lookup says "unknown"
                continue
            log.info("call ended while disconnected", extra={"action": "reconcile", "channel_id": cid})
            # No record and no channel although the originate was accepted (Asterisk restarted, or the
            # record was forgotten): report an end without cause so nobody waits for an event.
            self._track.end(found.ended or CallEvent(cid, CallEventKind.ENDED, utcnow()))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


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
    return utcnow()
