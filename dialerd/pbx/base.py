"""The port between dialerd and a PBX: what the dispatcher needs, nothing Asterisk-specific.

Adapters (``ari.AriPbx``, ``ami.AmiPbx``, ``fake.FakePbx``) implement :class:`Pbx`. They report call
progress to a :class:`PbxSink` with plain synchronous callbacks: the adapter's event reader must never
wait on the dispatcher (ARI drops a websocket consumer that stalls for 100 ms), so the sink only queues.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol


class DestinationKind(StrEnum):
    DIALPLAN = "dialplan"
    STASIS = "stasis"


@dataclass(frozen=True)
class Destination:
    """Where an answered call is connected: a dialplan location or another Stasis application.

    Text form (form field ``destination`` and config): ``context,extension[,priority]`` for the dialplan,
    ``stasis:app[,args...]`` for a Stasis application.
    """

    kind: DestinationKind
    context: str = ""
    extension: str = ""
    priority: int = 1
    app: str = ""
    app_args: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Destination:
        """Parse the text form; raise ValueError with a message saying what is wrong."""
        text = text.strip()
        if not text:
            raise ValueError("destination is empty")
        if text.lower().startswith("stasis:"):
            parts = [p.strip() for p in text[len("stasis:") :].split(",")]
            if not parts[0] or not _safe(parts[0]):
                raise ValueError("stasis destination needs an application name: stasis:APP[,ARGS]")
            return cls(kind=DestinationKind.STASIS, app=parts[0], app_args=tuple(parts[1:]))
        parts = [p.strip() for p in text.split(",")]
        if len(parts) not in (2, 3) or not all(parts[:2]):
            raise ValueError("dialplan destination must be CONTEXT,EXTENSION[,PRIORITY]")
        if not all(_safe(p) for p in parts):
            raise ValueError("destination may only contain letters, digits and _-+.*#")
        priority = 1
        if len(parts) == 3:
            if not (parts[2].isascii() and parts[2].isdigit()) or int(parts[2]) < 1:
                raise ValueError("destination priority must be a positive integer")
            priority = int(parts[2])
        return cls(kind=DestinationKind.DIALPLAN, context=parts[0], extension=parts[1], priority=priority)

    def __str__(self) -> str:
        if self.kind is DestinationKind.STASIS:
            return ",".join(("stasis:" + self.app, *self.app_args))
        return f"{self.context},{self.extension},{self.priority}"


def _safe(part: str) -> bool:
    return all(ch.isalnum() or ch in "_-+.*#" for ch in part) and len(part) <= 80


@dataclass(frozen=True)
class OriginateRequest:
    """One attempt to call one contact. ``channel_id`` is unique per attempt and already persisted."""

    channel_id: str
    number: str  # E.164, e.g. +14155550142
    caller_id: str
    destination: Destination
    ring_timeout: int  # seconds the far end may ring before we give up
    variables: Mapping[str, str] = field(default_factory=dict)  # correlation ids + custom fields


class CallEventKind(StrEnum):
    PROGRESS = "progress"  # ringing or early media seen
    ANSWERED = "answered"
    ENDED = "ended"  # the channel is gone; cause fields are filled


@dataclass(frozen=True)
class CallEvent:
    """Something that happened to an originated channel."""

    channel_id: str
    kind: CallEventKind
    at: datetime
    cause: int | None = None  # Q.850 cause at the end
    tech_cause: int | None = None  # SIP response code at the end, when known
    state: str | None = None  # channel state at the end (Down, Ringing, Up)
    answered: bool = False  # ENDED: the call had been answered
    alerted: bool = False  # ENDED: ringing or progress had been seen
    answered_at: datetime | None = None  # ENDED: when it was answered, if only the PBX's record knows


class OriginateError(Exception):
    """The PBX did not accept the originate request.

    ``maybe_dialled`` is True when the outcome is unknown (timeout, connection lost mid-request):
    the call may exist, so the caller must reconcile instead of retrying blindly.
    """

    def __init__(self, message: str, *, maybe_dialled: bool = False) -> None:
        super().__init__(message)
        self.maybe_dialled = maybe_dialled


@dataclass(frozen=True)
class ChannelLookup:
    """What the PBX knows about a channel id (used to reconcile after a crash or a reconnect).

    ``live`` True: the channel exists now (``answered`` tells whether it is up).
    ``live`` False and ``ended`` set: the channel finished and left its result (hangup handler).
    Neither: the PBX has never heard of it (or forgot it).
    """

    channel_id: str
    live: bool
    answered: bool = False
    ended: CallEvent | None = None


class PbxSink(Protocol):
    """Receives what the adapter sees. Both methods must return at once (queue, never await)."""

    def call_event(self, event: CallEvent) -> None: ...

    def connection_changed(self, connected: bool) -> None: ...


class Pbx(Protocol):
    """A PBX that can originate calls and report their progress."""

    name: str

    @property
    def connected(self) -> bool:
        """True while the event connection is up and originating is safe."""
        ...

    @property
    def held_reason(self) -> str | None:
        """Why originating is not safe now: ``pbx_down``, ``ari_app_replaced``; None while connected."""
        ...

    @property
    def last_error(self) -> str | None:
        """What is wrong with the PBX connection, as one sentence for operators; None while all is well."""
        ...

    async def start(self, sink: PbxSink) -> None:
        """Connect and keep reconnecting (with backoff) in an owned task until ``close``."""
        ...

    async def close(self) -> None: ...

    async def originate(self, request: OriginateRequest) -> str:
        """Place the call; return the PBX's channel name. Raise OriginateError if not accepted."""
        ...

    async def lookup(self, channel_id: str) -> ChannelLookup:
        """Tell what the PBX knows about ``channel_id`` (live, ended with a result, or unknown)."""
        ...

    async def count_channels(self) -> int:
        """How many channels the PBX has now (its own count; used by tests and health)."""
        ...

    async def forget(self, channel_id: str) -> None:
        """Drop the PBX's stored result for ``channel_id`` (called once the outcome is recorded)."""
        ...
