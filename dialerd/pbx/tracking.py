"""Bookkeeping both adapters share: the channels they follow, once-only events, and owned side tasks."""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from dialerd.domain.amd import AmdPlan
from dialerd.domain.call import CallEvent, CallEventKind
from dialerd.ports import PbxSink
from dialerd.timestamps import utcnow

log = logging.getLogger("dialerd.pbx")

_REMEMBER_ENDED = 4096  # ids whose end was reported; bounds duplicate suppression, not correctness


@dataclass
class TrackedCall:
    """What an adapter has seen of one originated channel."""

    alerted: bool = False
    answered: bool = False
    pending: bool = False  # the originate request itself is still in flight
    # originate raised OriginateError(maybe_dialled=True): the caller reconciles it with lookup(); the
    # adapter reports it only if the channel shows up.
    uncertain: bool = False
    # AMD on (the request's plan): the answer is reported once AMD's verdict is in, at the time the far end
    # answered (``answered_at``), or never when [dialerd-amd] deals with a machine itself.
    amd: AmdPlan | None = None
    answered_at: datetime | None = None


CallT = TypeVar("CallT", bound=TrackedCall)


class CallTracker(Generic[CallT]):
    """Channel id -> call state, and the sink. Reports PROGRESS, ANSWERED and ENDED at most once each."""

    def __init__(self) -> None:
        self.calls: dict[str, CallT] = {}
        self.sink: PbxSink | None = None
        self._ended: OrderedDict[str, None] = OrderedDict()

    def follow(self, cid: str, call: CallT) -> CallT:
        """Start following ``cid`` (an id may be reused once its channel is gone)."""
        self._ended.pop(cid, None)
        self.calls[cid] = call
        return call

    def was_ended(self, cid: str) -> bool:
        return cid in self._ended

    def progress(self, cid: str, call: CallT, at: datetime | None = None) -> None:
        if not call.alerted:
            call.alerted = True
            self.emit(CallEvent(cid, CallEventKind.PROGRESS, at or utcnow()))

    def answer(self, cid: str, call: CallT, at: datetime | None = None, *, amd_status: str | None = None,
               amd_cause: str | None = None) -> bool:
        """Report the answer (with AMD's verdict, if any); False if it had been reported already."""
        if call.answered:
            return False
        call.answered = True
        self.emit(CallEvent(cid, CallEventKind.ANSWERED, at or call.answered_at or utcnow(),
                            amd_status=amd_status or None, amd_cause=amd_cause or None))
        return True

    def answered_awaiting_amd(self, call: CallT, at: datetime | None = None) -> bool:
        """The far end answered a call with AMD on: remember when, report nothing yet. False without AMD."""
        if call.amd is None or call.answered:
            return False
        call.answered_at = call.answered_at or at or utcnow()
        return True

    def end(self, event: CallEvent) -> None:
        """Stop following the channel and report its end, unless that was done before."""
        self.calls.pop(event.channel_id, None)
        if self.mark_ended(event.channel_id):
            self.emit(event)

    def mark_ended(self, cid: str) -> bool:
        """Remember that ``cid`` ended; False when it was known already."""
        self.calls.pop(cid, None)
        if cid in self._ended:
            return False
        self._ended[cid] = None
        if len(self._ended) > _REMEMBER_ENDED:
            self._ended.popitem(last=False)
        return True

    def emit(self, event: CallEvent) -> None:
        if self.sink is not None:
            self.sink.call_event(event)

