"""The AMI adapter: the same :class:`~dialerd.pbx.base.Pbx` port on panoramisk.

Flow per attempt: ``Originate`` (Async, ChannelId = attempt id) -> ``Newchannel`` (originate returns the
channel name) -> ``DialState RINGING/PROGRESS`` or ``Newstate Ringing`` (PROGRESS) -> ``Newstate Up``
(ANSWERED; Asterisk itself continues into the destination) -> ``Hangup`` (ENDED with Cause/TechCause).

Measured panoramisk traps this works around (``shared/asterisk.md``): an action in flight when the
connection drops never resolves and is re-sent after reconnect (so every action here is forgettable and
under a timeout), and its ping never notices a dead connection (so a watchdog pings under a timeout and
aborts the transport). ``OriginateResponse`` says Failure with Reason 0 for every failure; the cause only
comes with ``Hangup``. When no channel was ever created (unknown endpoint, trunk down, duplicate live id)
no Hangup follows: :meth:`AmiPbx.originate` then raises, like ARI's HTTP 500/409.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from panoramisk import Manager
from panoramisk.actions import Action

from dialerd.domain.causes import parse_cause, parse_tech_cause
from dialerd.pbx.base import (
    CallEvent,
    CallEventKind,
    ChannelLookup,
    DestinationKind,
    OriginateError,
    OriginateRequest,
    PbxSink,
)
from dialerd.pbx.errors import PbxError, PbxRequestError
from dialerd.pbx.records import HANGUP_HANDLER, HANGUP_HANDLER_VAR, ID_VAR, global_name, parse_hangup_record
from dialerd.pbx.tracking import CallTracker, OwnedTasks, TrackedCall, now

log = logging.getLogger("dialerd.pbx.ami")

EVENTS = ("Newchannel", "Newstate", "DialState", "Hangup", "OriginateResponse")
# Server-side filter (AMI ``Filter`` action): everything else (VarSet, Newexten...) never crosses the wire.
EVENT_FILTER = "Event: (" + "|".join(EVENTS) + ")"
ACTIONS = ("ping", "login", "logoff", "originate", "filter", "coreshowchannels", "dbget", "dbdel", "getvar")
_NO_CHANNEL_GRACE_S = 0.25  # Newchannel (via stasis) can trail a fast OriginateResponse (direct)


class _Manager(Manager):  # type: ignore[misc]  # panoramisk is untyped
    """panoramisk's Manager, minus reconnecting after :meth:`AmiPbx.close`."""

    closing = False

    def connect(self, *args: Any, **kwargs: Any) -> Any:
        if self.closing:
            return None
        return super().connect(*args, **kwargs)


@dataclass
class _Call(TrackedCall):
    action_id: str = ""
    # Resolved with the channel name on Newchannel, or failed when no channel comes.
    waiter: asyncio.Future[str] | None = field(default=None, repr=False)
    channel_seen: bool = False


class AmiPbx:
    """:class:`~dialerd.pbx.base.Pbx` over AMI (panoramisk)."""

    name = "ami"

    def __init__(
        self,
        host: str,
        port: int,
        user: str,
        secret: str,
        endpoint_template: str = "PJSIP/{number}@carrier",
        *,
        action_timeout: float = 5.0,
        ping_interval: float = 5.0,
        reconnect_delay: int = 1,
    ) -> None:
        self.endpoint_template = endpoint_template
        self._config: dict[str, Any] = {
            "host": host,
            "port": int(port),
            "username": user,
            "secret": secret,
            "events": "call",  # call-class events only; the Filter below narrows further
            "reconnect_timeout": reconnect_delay,
            "ping_delay": 86400,  # panoramisk's own ping cannot detect a dead peer; the watchdog does
            "ping_interval": 86400,
            "forgetable_actions": ACTIONS,  # never re-send an Originate after a reconnect
            "log": logging.getLogger("dialerd.pbx.ami.panoramisk"),
        }
        self._timeout = action_timeout
        self._ping_interval = ping_interval
        self._manager: _Manager | None = None
        self._connected = False
        self._logins = 0
        self._up: asyncio.Event | None = None
        self._track: CallTracker[_Call] = CallTracker()
        self._by_action: dict[str, str] = {}  # Originate ActionID -> channel id
        self._tasks = OwnedTasks()

    @property
    def connected(self) -> bool:
        return self._connected

    async def start(self, sink: PbxSink) -> None:
        """Connect in the background (panoramisk retries every ``reconnect_delay`` s) and start the watchdog."""
        self._track.sink = sink
        self._up = asyncio.Event()
        manager = self._manager = _Manager(
            loop=asyncio.get_running_loop(),
            on_login=self._on_login,
            on_disconnect=self._on_disconnect,
            **self._config,
        )
        for name in EVENTS:
            manager.register_event(name, self._on_event)
        manager.connect()
        self._tasks.spawn(self._watchdog(), "ami-watchdog")

    async def wait_connected(self) -> None:
        """Return once logged in (wrap in ``asyncio.timeout``). Call after :meth:`start`."""
        if self._up is None:
            raise RuntimeError("start() first")
        await self._up.wait()

    async def close(self) -> None:
        """Stop the watchdog and disconnect for good. Calls in Asterisk are not hung up."""
        await self._tasks.cancel_all()
        if self._manager is not None:
            self._manager.closing = True
            self._manager.close()
        self._set_connected(False)
        self._fail_waiters("AMI adapter closed")

    async def originate(self, request: OriginateRequest) -> str:
        cid = request.channel_id
        if not self._connected or self._manager is None:
            raise OriginateError("AMI is not connected; not originating")
        if cid in self._track.calls:
            raise OriginateError(f"channel id {cid} is already in flight")
        action = Action(self._originate_fields(request))
        aid = str(action.action_id)
        waiter: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        call = self._track.follow(cid, _Call(action_id=aid, waiter=waiter, pending=True))
        self._by_action[aid] = cid  # registered first: the OriginateResponse can beat the action's reply
        extra = {"action": "originate", "channel_id": cid}
        try:
            async with asyncio.timeout(self._timeout):
                reply = await self._manager.send_action(action, as_list=False)
                if reply.response != "Success":
                    self._drop(cid)
                    raise OriginateError(f"AMI refused the originate: {reply.message}")
                # Wait for the channel to exist: gives its name and turns "no channel" into an error.
                name = await asyncio.shield(waiter)
        except TimeoutError as exc:
            call.uncertain = True  # nobody awaits the waiter any more
            log.warning("originate outcome unknown: no answer in %ss", self._timeout, extra=extra)
            raise OriginateError(f"AMI originate: no answer in {self._timeout}s", maybe_dialled=True) from exc
        except OriginateError as exc:
            if waiter.done() and not waiter.cancelled():
                waiter.exception()  # retrieved: no "never retrieved" warning
            log.warning("originate failed: %s", exc, extra=extra)
            raise
        finally:
            call.pending = False
        log.info("originated %s", name, extra=extra)
        return name

    def _originate_fields(self, request: OriginateRequest) -> dict[str, Any]:
        cid = request.channel_id
        variables = {**request.variables, ID_VAR: cid, HANGUP_HANDLER_VAR: HANGUP_HANDLER}
        fields: dict[str, Any] = {
            "Action": "Originate",
            "Channel": _header(self.endpoint_template.format(number=request.number)),
            "ChannelId": _header(cid),
            "OtherChannelId": _header(cid + "-2"),
            "Timeout": str(request.ring_timeout * 1000),
            "Async": "true",
            "Variable": [f"{_header(k)}={_escape(v)}" for k, v in variables.items()],
        }
        if request.caller_id:
            fields["CallerID"] = _header(request.caller_id)
        dest = request.destination
        if dest.kind is DestinationKind.STASIS:
            fields["Application"] = "Stasis"
            fields["Data"] = _header(",".join((dest.app, *dest.app_args)))
        else:
            fields.update(Context=dest.context, Exten=dest.extension, Priority=str(dest.priority))
        return fields

    async def lookup(self, channel_id: str) -> ChannelLookup:
        """Live (CoreShowChannels), else the AstDB record ``dialerd/<id>``, else unknown.

        The record stays (see :meth:`forget`); a channel found ended is not reported again as an event.
        """
        found = await self._lookup(channel_id)
        if not found.live:
            self._drop(channel_id)
            self._track.mark_ended(channel_id)
        return found

    async def _lookup(self, channel_id: str) -> ChannelLookup:
        for item in await self._list({"Action": "CoreShowChannels"}):
            if item.get("Event") == "CoreShowChannel" and item.get("Uniqueid") == channel_id:
                return ChannelLookup(channel_id, live=True, answered=item.get("ChannelStateDesc") == "Up")
        record = ""
        for item in await self._list({"Action": "DBGet", "Family": "dialerd", "Key": _header(channel_id)}):
            if item.get("Event") == "DBGetResponse":
                record = str(item.get("Val", ""))
        return ChannelLookup(channel_id, live=False, ended=parse_hangup_record(channel_id, record))

    async def forget(self, channel_id: str) -> None:
        """Delete the hangup-handler records (AstDB key and global variable) once the outcome is stored."""
        await self._list({"Action": "DBDel", "Family": "dialerd", "Key": _header(channel_id)})
        # Setvar with an empty value keeps an empty global; GLOBAL_DELETE() really removes it.
        await self._list({"Action": "Getvar", "Variable": f"GLOBAL_DELETE({_header(global_name(channel_id))})"})

    async def count_channels(self) -> int:
        items = await self._list({"Action": "CoreShowChannels"})
        return sum(1 for item in items if item.get("Event") == "CoreShowChannel")

    async def _list(self, fields: Mapping[str, Any]) -> list[Any]:
        """Send one action under the timeout; return its messages (a failed ``Response`` is kept)."""
        manager = self._manager
        if manager is None or not self._connected:
            raise PbxError("AMI is not connected")
        try:
            async with asyncio.timeout(self._timeout):
                reply = await manager.send_action(Action(dict(fields)))
        except TimeoutError as exc:
            raise PbxError(f"AMI {fields['Action']}: no answer in {self._timeout}s") from exc
        replies = reply if isinstance(reply, list) else [reply]
        first = replies[0] if replies else None
        if first is not None and first.get("Response") == "Error" and "not found" not in str(first.message):
            raise PbxRequestError(f"AMI {fields['Action']}: {first.message}", body=str(first.message))
        return replies

    # -- connection ---------------------------------------------------------------------------------

    def _on_login(self, manager: Any) -> None:
        self._tasks.spawn(self._after_login(), "ami-login")

    async def _after_login(self) -> None:
        manager = self._manager
        if manager is None:
            return
        try:
            async with asyncio.timeout(self._timeout):
                await manager.send_action(Action({"Action": "Filter", "Operation": "Add", "Filter": EVENT_FILTER}))
        except TimeoutError:
            log.warning("AMI event filter not acknowledged", extra={"action": "ami_filter"})
        self._logins += 1
        log.info("AMI connected", extra={"action": "ami_connected", "attempt": self._logins})
        self._set_connected(True)
        if self._logins > 1 and self._track.calls:
            self._tasks.spawn(self._reconcile(), "ami-reconcile")

    async def _reconcile(self) -> None:
        """Report calls that ended while the connection was down (their Hangup event is lost)."""
        for cid, call in list(self._track.calls.items()):
            if call.pending or not call.channel_seen:
                continue  # still being originated: the waiter or the late OriginateResponse settles it
            try:
                found = await self._lookup(cid)
            except PbxError as exc:
                log.warning("reconcile failed: %s", exc, extra={"action": "reconcile", "channel_id": cid})
                continue
            if not found.live:
                log.info("call ended while disconnected", extra={"action": "reconcile", "channel_id": cid})
                self._drop(cid)
                self._track.end(found.ended or CallEvent(cid, CallEventKind.ENDED, now()))

    def _on_disconnect(self, manager: Any, exc: Any) -> None:
        log.warning("AMI connection lost: %s", exc, extra={"action": "ami_disconnected"})
        self._set_connected(False)
        self._fail_waiters("AMI connection lost during originate")

    def _set_connected(self, up: bool) -> None:
        if up == self._connected:
            return
        self._connected = up
        if self._up is not None:
            (self._up.set if up else self._up.clear)()
        if self._track.sink is not None:
            self._track.sink.connection_changed(up)

    def _fail_waiters(self, message: str) -> None:
        for call in self._track.calls.values():
            if call.waiter is not None and not call.waiter.done() and not call.uncertain:
                call.waiter.set_exception(OriginateError(message, maybe_dialled=True))

    async def _watchdog(self) -> None:
        """Ping under a timeout; a silent connection is aborted so panoramisk reconnects."""
        unauthenticated = 0
        while True:
            await asyncio.sleep(self._ping_interval)
            manager = self._manager
            protocol = getattr(manager, "protocol", None)
            if manager is None or protocol is None or getattr(protocol, "closed", True):
                continue  # panoramisk is reconnecting
            # Connected but not logged in on two ticks running (bad secret, lost Login reply): start over.
            unauthenticated = 0 if manager.authenticated else unauthenticated + 1
            try:
                if unauthenticated >= 2:
                    raise TimeoutError
                if manager.authenticated:
                    async with asyncio.timeout(self._timeout):
                        await manager.send_action(Action({"Action": "Ping"}))
            except TimeoutError:
                unauthenticated = 0
                log.warning("AMI ping unanswered; reconnecting", extra={"action": "ami_ping_failed"})
                self._set_connected(False)
                protocol.transport.abort()  # -> connection_lost -> panoramisk reconnects

    # -- events: run in panoramisk's dispatch, must not block ----------------------------------------

    def _on_event(self, manager: Any, event: Any) -> None:
        name = event.get("Event")
        if name == "OriginateResponse":
            self._originate_response(event)
            return
        uid = str(event.get("DestUniqueid" if name == "DialState" else "Uniqueid") or "")
        # Only channels this instance originated: AMI shows every channel of the PBX, including other
        # dialerd instances' calls. A restarted dialerd recovers its own through lookup().
        call = self._track.calls.get(uid)
        if call is None:
            return
        if name == "Newchannel":
            call.channel_seen = True
            if call.waiter is not None and not call.waiter.done():
                call.waiter.set_result(str(event.get("Channel", "")))
        elif name == "Hangup":
            self._hangup(uid, call, event)
        elif name == "DialState" and event.get("DialStatus") in ("RINGING", "PROGRESS"):
            self._track.progress(uid, call)
        elif name == "Newstate":
            state = event.get("ChannelStateDesc")
            if state in ("Ringing", "Ring"):
                self._track.progress(uid, call)
            elif state == "Up":
                self._track.answer(uid, call)

    def _originate_response(self, event: Any) -> None:
        cid = self._by_action.pop(str(event.get("ActionID", "")), None)
        call = self._track.calls.get(cid) if cid is not None else None
        if cid is None or call is None:
            return
        if event.get("Response") == "Success":
            self._track.answer(cid, call)
        elif not call.channel_seen:
            reason = str(event.get("Reason", ""))
            asyncio.get_running_loop().call_later(_NO_CHANNEL_GRACE_S, self._no_channel, cid, call, reason)

    def _no_channel(self, cid: str, call: _Call, reason: str) -> None:
        if call.channel_seen or self._track.calls.get(cid) is not call:
            return
        if not call.uncertain and call.waiter is not None and not call.waiter.done():
            self._drop(cid)
            call.waiter.set_exception(
                OriginateError(
                    f"no channel created (unknown endpoint, trunk down or duplicate id; reason {reason})"
                )
            )
        else:
            # originate() already raised maybe_dialled: its caller's lookup() will say "unknown".
            self._drop(cid)
            log.info("late originate failure: no channel", extra={"action": "originate", "channel_id": cid})

    def _hangup(self, cid: str, call: _Call, event: Any) -> None:
        self._drop(cid)
        state = str(event.get("ChannelStateDesc") or "") or None
        self._track.end(
            CallEvent(
                cid,
                CallEventKind.ENDED,
                now(),
                cause=parse_cause(event.get("Cause")),
                tech_cause=parse_tech_cause(event.get("TechCause")),
                state=state,
                answered=call.answered or state == "Up",
                alerted=call.alerted,
            )
        )

    def _drop(self, cid: str) -> None:
        call = self._track.calls.pop(cid, None)
        if call is not None:
            self._by_action.pop(call.action_id, None)


def _header(value: str) -> str:
    """A value safe for one AMI header line: CR/LF would start a new header (injection)."""
    return value.replace("\r", " ").replace("\n", " ")


def _escape(value: str) -> str:
    """Escape a ``Variable: NAME=VALUE`` value: Asterisk splits it on commas, honouring quotes,
    parentheses and backslashes (measured: ``a\\,b\\"c\\(d\\)e\\\\f`` arrives as ``a,b"c(d)e\\f``)."""
    out = _header(value)
    for ch in '\\,"()':
        out = out.replace(ch, "\\" + ch)
    return out
