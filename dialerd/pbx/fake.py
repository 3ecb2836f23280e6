"""An in-memory PBX for fast unit tests of dispatcher logic.

It behaves like the ARI adapter against the local PBX's carrier (``asterisk/conf/extensions.conf``),
with every duration multiplied by ``time_scale`` so a test runs in milliseconds:

* the outcome per number comes from its last two digits (:func:`carrier_outcome`), or from
  :meth:`FakePbx.program`;
* originate is refused while disconnected and for a channel id that is still live (Asterisk's 409);
* a call answered while disconnected is hung up at once (cause 0, state Up), as Asterisk does when the
  Stasis app has no websocket; events are not delivered while disconnected, but every end leaves a
  hangup-handler record for :meth:`FakePbx.lookup`, and the ends missed are reported on reconnect.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from dialerd.domain.amd import MachineAction
from dialerd.domain.call import CallEvent, CallEventKind, ChannelLookup, OriginateRequest
from dialerd.ports import OriginateError, PbxSink
from dialerd.tasks import TaskOwner, child_of
from dialerd.timestamps import utcnow


@dataclass(frozen=True)
class FakeOutcome:
    """What the far end does. ``ring`` seconds of ringing (0: none), then answer or fail."""

    ring: float = 0.0
    answer: bool = True
    talk: float = 2.0  # answered: seconds until the callee hangs up
    ring_forever: bool = False  # never answers: ends with 19/480 when the ring timeout fires
    cause: int = 16  # unanswered: Q.850 cause at the end
    tech_cause: int | None = None  # unanswered: SIP code at the end
    opt_out: bool = False  # answered: the callee presses 9, so the channel ends with DIALERD_OPT_OUT=1
    # answered, with AMD on: AMD()'s verdict (AMDSTATUS, AMDCAUSE) and the seconds after the answer it came
    # (asterisk/README.md's measurements); voicemail_end: when a greeting ends (a voicemail message)
    amd: tuple[str, str, float] | None = None
    voicemail_end: float = 0.0


ANSWER_SHORT = FakeOutcome(talk=2.0)
ANSWER_LONG = FakeOutcome(talk=20.0)
BUSY = FakeOutcome(answer=False, cause=17, tech_cause=486)
RING_FOREVER = FakeOutcome(ring_forever=True, answer=False)
CONGESTION = FakeOutcome(answer=False, cause=34, tech_cause=503)
NOT_FOUND = FakeOutcome(answer=False, cause=1, tech_cause=404)
DECLINE = FakeOutcome(answer=False, cause=21, tech_cause=603)
RING_THEN_ANSWER = FakeOutcome(ring=3.0, talk=5.0)
OPT_OUT = FakeOutcome(talk=3.0, opt_out=True)  # 555-0200..0209: answers, DTMF 9 after 1 s, hangs up at 3 s
# 555-02XX with AMD on: a person (10-49), a voicemail (50-89, greeting 9 s), silence without RTP (90-99).
AMD_PERSON = FakeOutcome(talk=8.3, amd=("HUMAN", "HUMAN-800-800", 1.96))
AMD_VOICEMAIL = FakeOutcome(talk=20.4, amd=("MACHINE", "LONGGREETING-1500-1500", 2.16), voicemail_end=9.4)
AMD_SILENCE = FakeOutcome(talk=8.5, amd=("NOTSURE", "TOOLONG-4900", 5.02))
VOICEMAIL_SOUND_S = 2.5  # the silence WaitForSilence waits for, then the sound (beep: 0.44 s)

_BY_DECADE = {
    3: ANSWER_LONG,
    4: BUSY,
    5: RING_FOREVER,
    6: CONGESTION,
    7: NOT_FOUND,
    8: DECLINE,
    9: RING_THEN_ANSWER,
}


def carrier_outcome(number: str) -> FakeOutcome:
    """The local carrier's table: 00-29 answer 2 s, 30-39 answer 20 s, 40 busy, 50 ring forever,
    60 congestion, 70 not found, 80 decline, 90-99 ring 3 s then answer 5 s (by the last two digits);
    and of the 555-02XX ranges, 555-0200..0209: answers, opts out (DTMF 9) and hangs up after 3 s; 10-49 a
    person, 50-89 a voicemail, 90-99 silence, each with the AMD verdict the local Asterisk gives it (used when
    the request has AMD on: a machine is hung up on, or left a message, as its ``on_machine`` says)."""
    digits = "".join(ch for ch in number if ch.isdigit())
    if len(digits) >= 7 and digits[-7:-2] == "55502":
        last = int(digits[-2:])
        if last < 10:
            return OPT_OUT
        return AMD_PERSON if last < 50 else AMD_VOICEMAIL if last < 90 else AMD_SILENCE
    tens = int(digits[-2]) if len(digits) >= 2 else 0
    return _BY_DECADE.get(tens, ANSWER_SHORT)


@dataclass
class _Live:
    request: OriginateRequest
    state: str = "Down"
    alerted: bool = False
    answered: bool = False
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class FakePbx:
    """:class:`~dialerd.ports.Pbx` in memory. ``requests`` records every accepted originate."""

    name = "fake"
    takeovers = 0

    def __init__(
        self,
        *,
        time_scale: float = 0.001,
        outcomes: Mapping[str, FakeOutcome] | None = None,
        connected: bool = True,
        tasks: TaskOwner | None = None,
    ) -> None:
        self.time_scale = time_scale
        self.requests: list[OriginateRequest] = []
        self.request_counts: Counter[str] = Counter()  # what a real PBX would have been sent (/metrics)
        self.peak_channels = 0
        self._outcomes = dict(outcomes or {})
        self._connected = connected
        self._sink: PbxSink | None = None
        self._live: dict[str, _Live] = {}
        self._records: dict[str, CallEvent] = {}  # what the hangup handler would have stored
        self._missed: list[CallEvent] = []  # ends that happened while disconnected
        self._fail_next: list[OriginateError] = []
        self._names = itertools.count(1)
        self._tasks = child_of(tasks, "fake-pbx")
        self._up: asyncio.Event | None = None

    # -- test controls --------------------------------------------------------------------------

    def program(self, number: str, outcome: FakeOutcome) -> None:
        """Make calls to ``number`` behave as ``outcome`` instead of the carrier table."""
        self._outcomes[number] = outcome

    def fail_next(self, error: OriginateError) -> None:
        """Make the next originate raise ``error`` (queued; one error per call)."""
        self._fail_next.append(error)

    def set_connected(self, up: bool) -> None:
        """Drop or restore the event connection; on restore, report the ends missed meanwhile."""
        if up == self._connected:
            return
        self._connected = up
        if self._up is not None:
            (self._up.set if up else self._up.clear)()
        if self._sink is not None:
            self._sink.connection_changed(up)
        if up:
            missed, self._missed = self._missed, []
            for event in missed:
                self._emit(event)

    @property
    def live_ids(self) -> frozenset[str]:
        return frozenset(self._live)

    # -- the Pbx port ---------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def held_reason(self) -> str | None:
        return None if self._connected else "pbx_down"

    @property
    def last_error(self) -> str | None:
        return None if self._connected else "the fake PBX is disconnected"

    async def check_app_free(self) -> str | None:
        return None

    async def start(self, sink: PbxSink) -> None:
        self._sink = sink
        self._up = asyncio.Event()
        if self._connected:
            self._up.set()
            sink.connection_changed(True)

    async def wait_connected(self) -> None:
        """Return once connected (wrap in ``asyncio.timeout``). Call after :meth:`start`."""
        if self._up is None:
            raise RuntimeError("start() first")
        await self._up.wait()

    async def close(self) -> None:
        await self._tasks.cancel_all()

    async def originate(self, request: OriginateRequest) -> str:
        await asyncio.sleep(0)  # a real originate always yields
        self.request_counts["originate"] += 1
        if self._fail_next:
            raise self._fail_next.pop(0)
        if not self._connected:
            raise OriginateError("fake PBX is disconnected; not originating")
        if request.channel_id in self._live:
            raise OriginateError("HTTP 409: Channel with given unique ID already exists")
        self.requests.append(request)
        call = self._live[request.channel_id] = _Live(request)
        self.peak_channels = max(self.peak_channels, len(self._live))
        outcome = self._outcomes.get(request.number) or carrier_outcome(request.number)
        self._tasks.spawn(f"fake-call-{request.channel_id}", self._play(call, outcome), critical=False)
        return f"PJSIP/carrier-{next(self._names):08x}"

    async def lookup(self, channel_id: str) -> ChannelLookup:
        live = self._live.get(channel_id)
        if live is not None:
            return ChannelLookup(channel_id, live=True, answered=live.state == "Up")
        return ChannelLookup(channel_id, live=False, ended=self._records.get(channel_id))

    async def forget(self, channel_id: str) -> None:
        self._records.pop(channel_id, None)

    async def count_channels(self) -> int:
        return len(self._live)

    # -- the far end ----------------------------------------------------------------------------

    async def _play(self, call: _Live, outcome: FakeOutcome) -> None:
        timeout = float(call.request.ring_timeout)
        if outcome.ring_forever or outcome.ring > 0:
            call.state, call.alerted = "Ringing", True
            self._event(call, CallEventKind.PROGRESS)
        if outcome.ring_forever or outcome.ring >= timeout:
            await self._sleep(timeout)
            self._end(call, cause=19, tech_cause=480)
            return
        await self._sleep(outcome.ring)
        if not outcome.answer:
            self._end(call, cause=outcome.cause, tech_cause=outcome.tech_cause)
            return
        call.state, call.answered = "Up", True
        if not self._connected:
            self._end(call, cause=0, tech_cause=None)  # "Stasis app not active": hung up at once
            return
        if call.request.amd is not None:
            await self._amd(call, outcome)
            return
        self._event(call, CallEventKind.ANSWERED)
        await self._sleep(outcome.talk)
        self._end(call, cause=16, tech_cause=None, opt_out=outcome.opt_out)

    async def _amd(self, call: _Live, outcome: FakeOutcome) -> None:
        """[dialerd-amd]: the verdict after its delay; then a machine as on_machine says, or the answer."""
        assert call.request.amd is not None
        status, cause, after = outcome.amd or ("HUMAN", "HUMAN-800-800", 1.96)  # other numbers say hello
        answered_at = utcnow()
        await self._sleep(min(after, outcome.talk))
        talk = outcome.talk
        if not call.request.amd.connects(status):
            if call.request.amd.on_machine.action is MachineAction.HANGUP:
                talk = after
            else:  # voicemail: the sound after the greeting's end
                talk = min(outcome.talk, max(after, outcome.voicemail_end) + VOICEMAIL_SOUND_S)
        elif self._connected:
            self._emit(CallEvent(call.request.channel_id, CallEventKind.ANSWERED, answered_at, amd_status=status,
                                 amd_cause=cause))
        await self._sleep(max(0.0, talk - min(after, outcome.talk)))
        self._end(call, cause=16, tech_cause=None, opt_out=outcome.opt_out, answered_at=answered_at,
                  amd_status=status, amd_cause=cause)

    def _end(self, call: _Live, *, cause: int, tech_cause: int | None, opt_out: bool = False,
             answered_at: datetime | None = None, amd_status: str | None = None,
             amd_cause: str | None = None) -> None:
        cid = call.request.channel_id
        del self._live[cid]
        ended = CallEvent(
            cid,
            CallEventKind.ENDED,
            utcnow(),
            cause=cause,
            tech_cause=tech_cause,
            state=call.state,
            answered=call.answered,
            alerted=call.alerted,
            opt_out=opt_out,
            answered_at=answered_at,
            amd_status=amd_status,
            amd_cause=amd_cause,
        )
        self._records[cid] = ended
        if self._connected:
            self._emit(ended)
        else:
            self._missed.append(ended)

    def _event(self, call: _Live, kind: CallEventKind) -> None:
        if self._connected:
            self._emit(CallEvent(call.request.channel_id, kind, utcnow()))

    def _emit(self, event: CallEvent) -> None:
        if self._sink is not None:
            self._sink.call_event(event)

    async def _sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds * self.time_scale)
