"""The AMI adapter: the same :class:`~dialerd.ports.Pbx` port on panoramisk (via :mod:`ami_client`).

Flow per attempt: ``Originate`` (Async, ChannelId = attempt id) -> ``Newchannel`` (originate returns the
channel name) -> ``DialState RINGING/PROGRESS`` or ``Newstate Ringing`` (PROGRESS) -> ``Newstate Up``
(ANSWERED; Asterisk itself continues into the destination) -> ``Hangup`` (ENDED with Cause/TechCause).

``OriginateResponse`` says Failure with Reason 0 for every failure; the cause only comes with ``Hangup``
(which may arrive before or after it). When no channel was ever created (unknown endpoint, trunk down,
duplicate live id) no Hangup follows: :meth:`AmiPbx.originate` then raises, like ARI's HTTP 500/409.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from dialerd.domain.amd import (
    AMD_CAUSE_VARIABLE,
    AMD_CONTEXT,
    AMD_STATUS_VARIABLE,
    APP_VARIABLE,
    NEXT_VARIABLE,
    USER_EVENT,
    dialplan_variables,
)
from dialerd.domain.call import (
    OPT_OUT_VARIABLE,
    CallEvent,
    CallEventKind,
    ChannelLookup,
    DestinationKind,
    OriginateRequest,
    opted_out,
)
from dialerd.domain.causes import parse_cause, parse_tech_cause
from dialerd.pbx.ami_client import AmiClient, AmiTimeout
from dialerd.pbx.errors import PbxError
from dialerd.pbx.records import HANGUP_HANDLER, HANGUP_HANDLER_VAR, ID_VAR, global_name, parse_hangup_record
from dialerd.pbx.tracking import CallTracker, TrackedCall
from dialerd.ports import OriginateError, PbxSink
from dialerd.tasks import TaskOwner, child_of
from dialerd.timestamps import utcnow

log = logging.getLogger("dialerd.pbx.ami")

# UserEvent: [dialerd-amd]'s verdict (UserEvent: DialerdAmd, AmdStatus, AmdCause), for calls with AMD on.
EVENTS = ("Newchannel", "Newstate", "DialState", "Hangup", "OriginateResponse", "UserEvent")
# Server-side filter (AMI ``Filter`` action): VarSet, Newexten and the like never cross the wire.
EVENT_FILTER = "Event: (" + "|".join(EVENTS) + ")"
_NO_CHANNEL_GRACE_S = 0.25  # Newchannel (via stasis) can trail a fast OriginateResponse (sent directly)


@dataclass
class _Call(TrackedCall):
    action_id: str = ""
    # Resolved with the channel name on Newchannel, or failed when no channel comes.
    waiter: asyncio.Future[str] | None = field(default=None, repr=False)
    channel_seen: bool = False


class AmiPbx:
    """:class:`~dialerd.ports.Pbx` over AMI (panoramisk)."""

    name = "ami"
    takeovers = 0  # AMI has no application another client could take

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
        tasks: TaskOwner | None = None,
    ) -> None:
        """``ping_interval``: watchdog period; ``reconnect_delay``: panoramisk's fixed retry delay (s)."""
        self.endpoint_template = endpoint_template
        self._tasks = child_of(tasks, "ami")
        self.client = AmiClient(
            host,
            port,
            user,
            secret,
            action_timeout=action_timeout,
            ping_interval=ping_interval,
            reconnect_delay=reconnect_delay,
            tasks=self._tasks,
        )
        self.request_counts = self.client.requests  # AMI actions sent, by name (/metrics)
        self._up: asyncio.Event | None = None
        self._track: CallTracker[_Call] = CallTracker()
        self._by_action: dict[str, str] = {}  # Originate ActionID -> channel id

    @property
    def connected(self) -> bool:
        return self.client.connected

    @property
    def held_reason(self) -> str | None:
        return None if self.client.connected else "pbx_down"

    @property
    def last_error(self) -> str | None:
        return None if self.client.connected else self.client.last_error

    async def check_app_free(self) -> str | None:
        """AMI has no application two daemons could fight over: never a reason to refuse."""
        return None

    async def start(self, sink: PbxSink) -> None:
        """Connect in the background (retried every ``reconnect_delay`` s); see :meth:`wait_connected`."""
        self._track.sink = sink
        self._up = asyncio.Event()
        self.client.start(dict.fromkeys(EVENTS, self._on_event), self._on_state, EVENT_FILTER)

    async def wait_connected(self) -> None:
        """Return once logged in (wrap in ``asyncio.timeout``). Call after :meth:`start`."""
        if self._up is None:
            raise RuntimeError("start() first")
        await self._up.wait()

    async def close(self) -> None:
        """Disconnect for good. Calls in Asterisk are not hung up."""
        await self._tasks.cancel_all()
        await self.client.close()
        self._fail_waiters("AMI adapter closed")

    async def originate(self, request: OriginateRequest) -> str:
        cid = request.channel_id
        if not self.connected:
            raise OriginateError("AMI is not connected; not originating")
        if cid in self._track.calls:
            raise OriginateError(f"channel id {cid} is already in flight")
        action = self.client.action(self._originate_fields(request))
        aid = str(action.action_id)
        waiter: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        call = self._track.follow(cid, _Call(action_id=aid, waiter=waiter, pending=True, amd=request.amd))
        self._by_action[aid] = cid  # registered first: the OriginateResponse can beat the action's reply
        extra = {"action": "originate", "channel_id": cid}
        try:
            async with asyncio.timeout(self.client.timeout):
                reply = (await self.client.send(action, first_only=True))[0]
                if reply.response != "Success":
                    self._drop(cid)
                    raise OriginateError(f"AMI refused the originate: {reply.message}")
                # Wait for the channel to exist: gives its name and turns "no channel" into an error.
                name = await asyncio.shield(waiter)
        except (TimeoutError, AmiTimeout) as exc:
            call.uncertain = True  # nobody awaits the waiter any more
            log.warning("originate outcome unknown: %s", str(exc) or "timeout", extra=extra)
            raise OriginateError(
                f"AMI originate: no answer in {self.client.timeout}s", maybe_dialled=True
            ) from exc
        except PbxError as exc:  # not connected any more: nothing was sent
            self._drop(cid)
            raise OriginateError(str(exc)) from exc
        except OriginateError as exc:
            if waiter.done() and not waiter.cancelled():
                waiter.exception()  # retrieved: no "never retrieved" warning
            call.uncertain = exc.maybe_dialled  # connection lost after the request went out
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
        if request.amd is not None:
            # [dialerd-amd] runs AMD(), deals with a machine as on_machine says, then goes on to the
            # destination: a dialplan one by Goto(DIALERD_AMD_NEXT); a Stasis app by Stasis(APP,amd,STATUS,
            # CAUSE), so that app gets the verdict as its arguments instead of the destination's own.
            amd_vars = dialplan_variables(request.amd)
            if dest.kind is DestinationKind.STASIS:
                amd_vars[APP_VARIABLE] = dest.app
            else:
                amd_vars[NEXT_VARIABLE] = str(dest)
            fields["Variable"] += [f"{_header(k)}={_escape(v)}" for k, v in amd_vars.items()]
            fields.update(Context=AMD_CONTEXT, Exten="s", Priority="1")
        elif dest.kind is DestinationKind.STASIS:
            fields["Application"] = "Stasis"
            fields["Data"] = _header(",".join((dest.app, *dest.app_args)))
        else:
            fields.update(
                Context=_header(dest.context), Exten=_header(dest.extension), Priority=str(dest.priority)
            )
        return fields

    async def lookup(self, channel_id: str) -> ChannelLookup:
        """Live (CoreShowChannels), else the AstDB record ``dialerd/<id>``, else unknown.

        The record stays (see :meth:`forget`); a channel found ended is not reported again as an event.
        """
        found = await self._lookup(channel_id)
        call = self._track.calls.get(channel_id)
        if found.ended is not None:
            self._drop(channel_id)
            self._track.mark_ended(channel_id)
        elif not found.live and call is not None and not call.pending:
            self._drop(channel_id)
        return found

    async def _lookup(self, channel_id: str) -> ChannelLookup:
        for item in await self.client.request({"Action": "CoreShowChannels"}):
            if item.get("Event") == "CoreShowChannel" and item.get("Uniqueid") == channel_id:
                return ChannelLookup(channel_id, live=True, answered=item.get("ChannelStateDesc") == "Up")
        record = ""
        for item in await self.client.request(
            {"Action": "DBGet", "Family": "dialerd", "Key": _header(channel_id)}
        ):
            if item.get("Event") == "DBGetResponse":
                record = str(item.get("Val", ""))
        return ChannelLookup(channel_id, live=False, ended=parse_hangup_record(channel_id, record))

    async def forget(self, channel_id: str) -> None:
        """Delete the hangup-handler records (AstDB key and global variable) once the outcome is stored."""
        await self.client.request({"Action": "DBDel", "Family": "dialerd", "Key": _header(channel_id)})
        # Setvar with an empty value keeps an empty global; GLOBAL_DELETE() really removes it.
        variable = f"GLOBAL_DELETE({_header(global_name(channel_id))})"
        await self.client.request({"Action": "Getvar", "Variable": variable})

    async def count_channels(self) -> int:
        items = await self.client.request({"Action": "CoreShowChannels"})
        return sum(1 for item in items if item.get("Event") == "CoreShowChannel")

    # -- connection ---------------------------------------------------------------------------------

    def _on_state(self, up: bool) -> None:
        if self._up is not None:
            (self._up.set if up else self._up.clear)()
        if self._track.sink is not None:
            self._track.sink.connection_changed(up)
        if not up:
            self._fail_waiters("AMI connection lost during originate")
        elif self.client.logins > 1 and self._track.calls:
            self._tasks.spawn("ami-reconcile", self._reconcile(), critical=False)

    def _fail_waiters(self, message: str) -> None:
        for call in self._track.calls.values():
            if call.waiter is not None and not call.waiter.done() and not call.uncertain:
                call.waiter.set_exception(OriginateError(message, maybe_dialled=True))

    async def _reconcile(self) -> None:
        """Report calls that ended while the connection was down (their Hangup event is lost)."""
        for cid, call in list(self._track.calls.items()):
            if call.pending:
                continue  # its originate() is still waiting and will settle it
            try:
                found = await self._lookup(cid)
            except PbxError as exc:
                log.warning("reconcile failed: %s", exc, extra={"action": "reconcile", "channel_id": cid})
                continue
            if found.live:
                continue
            self._drop(cid)
            if found.ended is None and (call.uncertain or not call.channel_seen):
                continue  # never created: the originate's caller learns that from lookup() ("unknown")
            log.info("call ended while disconnected", extra={"action": "reconcile", "channel_id": cid})
            self._track.end(found.ended or CallEvent(cid, CallEventKind.ENDED, utcnow()))

    # -- events: run in panoramisk's dispatch, must not block ----------------------------------------

    def _on_event(self, event: Any) -> None:
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
        if name == "UserEvent":
            if event.get("UserEvent") == USER_EVENT and call.amd is not None:
                # The verdict: a call going on to the destination is answered now (a machine that
                # [dialerd-amd] hangs up on or leaves a message to never is; its Hangup carries the verdict).
                status = str(event.get("AmdStatus") or "")
                if call.amd.connects(status):
                    self._track.answer(uid, call, amd_status=status, amd_cause=str(event.get("AmdCause") or ""))
        elif name == "Newchannel":
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
            elif state == "Up" and not self._track.answered_awaiting_amd(call):
                self._track.answer(uid, call)

    def _originate_response(self, event: Any) -> None:
        cid = self._by_action.pop(str(event.get("ActionID", "")), None)
        call = self._track.calls.get(cid) if cid is not None else None
        if cid is None or call is None:
            return
        if event.get("Response") == "Success":
            if not self._track.answered_awaiting_amd(call):
                self._track.answer(cid, call)
        elif not call.channel_seen:
            reason = str(event.get("Reason", ""))
            self._tasks.call_later(f"ami-no-channel-{cid}", _NO_CHANNEL_GRACE_S,
                                   lambda: self._no_channel(cid, call, reason), critical=False)

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
        variables = chan_variables(event)
        self._track.end(
            CallEvent(
                cid,
                CallEventKind.ENDED,
                utcnow(),
                cause=parse_cause(event.get("Cause")),
                tech_cause=parse_tech_cause(event.get("TechCause")),
                state=state,
                answered=call.answered or state == "Up",
                alerted=call.alerted,
                opt_out=opted_out(variables.get(OPT_OUT_VARIABLE)),
                answered_at=None if call.answered else call.answered_at,
                amd_status=variables.get(AMD_STATUS_VARIABLE) or None,
                amd_cause=variables.get(AMD_CAUSE_VARIABLE) or None,
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


def chan_variables(event: Any) -> dict[str, str]:
    """An event's ``ChanVariable: NAME=value`` headers (manager.conf channelvars), one or several."""
    raw = event.get("ChanVariable")
    items = [raw] if isinstance(raw, str) else list(raw or ())
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = str(item).partition("=")
        if sep:
            out[name.strip()] = value
    return out
