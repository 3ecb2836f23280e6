"""The call's model: its values, the states of one attempt, the moves between them, and how a call ends.

Pure: no I/O, no asyncio, no logging, and no import from ``pbx/``, ``services/``, ``store/`` or ``api/``
(``tests/unit/test_layers.py`` checks it). The PBX adapters produce these values, the services apply them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

from dialerd.domain.amd import AmdPlan, AnsweredBy, OnMachine, amd_cause, answered_by, machine_fails
from dialerd.domain.contact import ContactStatus, FailureReason, SkipReason
from dialerd.domain.retry_rules import RetryRules, decide_retry

# The channel variable the dialplan sets when the callee asks never to be called again (asterisk/conf
# extensions_dialerd.conf [dialerd-demo], key 9); listed in ari.conf/manager.conf channelvars.
OPT_OUT_VARIABLE = "DIALERD_OPT_OUT"


def opted_out(value: object) -> bool:
    """Whether a channel variable's value at hangup says the callee opted out (``1``)."""
    return isinstance(value, str) and value.strip() == "1"


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
    amd: AmdPlan | None = None  # AMD on: originate into [dialerd-amd] (domain/amd.py), which then routes


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
    opt_out: bool = False  # ENDED: the channel carried DIALERD_OPT_OUT=1 at hangup (the callee opted out)
    amd_status: str | None = None  # ANSWERED/ENDED: AMDSTATUS (HUMAN, MACHINE, NOTSURE, HANGUP), if AMD ran
    amd_cause: str | None = None  # ANSWERED/ENDED: AMDCAUSE, Asterisk's raw text (e.g. HUMAN-800-800)
    # ENDED: the PBX's fence refused the originate (docs/fencing.md): no carrier leg was created, the
    # contact was never dialled by it. The epoch it carried ("none" if it carried none), else None.
    fenced: str | None = None


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


# ---- the attempt's states and the moves between them ---------------------------------------------


class AttemptState(StrEnum):
    """Where one attempt (one channel) stands. Stored in ``attempt.state``."""

    DIALING = "dialing"  # the row is committed; the originate request is leaving or in progress
    ORIGINATED = "originated"  # the PBX accepted the request (or one of the call's events came first)
    ANSWERED = "answered"  # the far end answered
    ENDED = "ended"  # the channel is gone and the outcome is recorded
    NOT_DIALLED = "not_dialled"  # never reached the PBX: given back, the contact stays pending

    @property
    def in_flight(self) -> bool:
        return self in IN_FLIGHT

    @property
    def final(self) -> bool:
        return not self.in_flight


A = AttemptState

# The attempt states a call is in flight in (counted against the caps; reconciled after a restart).
IN_FLIGHT: tuple[AttemptState, ...] = (A.DIALING, A.ORIGINATED, A.ANSWERED)

# target state -> the states an attempt may move to it from. Every write that moves an attempt is
# guarded by its row here (the store changes nothing otherwise), so a duplicate or late event, or a
# second writer, is harmless. DIALING has no source: only a new attempt starts there.
MOVES: dict[AttemptState, frozenset[AttemptState]] = {
    A.DIALING: frozenset(),
    # Events can overtake the originate reply: the first one seen makes the call originated.
    A.ORIGINATED: frozenset({A.DIALING}),
    # An answer dialerd did not see (its event lost while disconnected) is recorded from dialing too.
    A.ANSWERED: frozenset({A.DIALING, A.ORIGINATED}),
    A.ENDED: frozenset(IN_FLIGHT),
    # Given back before the PBX had it (from dialing), or refused by the PBX fence (docs/fencing.md): the
    # originate was accepted, but no carrier leg was ever created (from originated too).
    A.NOT_DIALLED: frozenset({A.DIALING, A.ORIGINATED}),
}


def can_move(current: AttemptState, target: AttemptState) -> bool:
    """Whether an attempt in ``current`` may move to ``target``."""
    return current in MOVES[target]


def sources(target: AttemptState) -> tuple[str, ...]:
    """The guard of a move to ``target`` as stored values, in a stable order (for the SQL parameters)."""
    return tuple(s.value for s in AttemptState if s in MOVES[target])


def steps(current: AttemptState, kind: CallEventKind) -> tuple[AttemptState, ...]:
    """The moves an event of ``kind`` makes from ``current``, in order; () when it moves nothing.

    Progress moves nothing (ringing is not stored). An answer or an end seen while still dialing first
    makes the call originated. An end always leads to ENDED from any state in flight.
    """
    if kind is CallEventKind.PROGRESS or current.final:
        return ()
    path: list[AttemptState] = []
    state = current
    if can_move(state, A.ORIGINATED):
        path.append(A.ORIGINATED)
        state = A.ORIGINATED
    target = A.ANSWERED if kind is CallEventKind.ANSWERED else A.ENDED
    if can_move(state, target):
        path.append(target)
    return tuple(path)


def refused_by_fence(state: AttemptState, event: CallEvent) -> bool:
    """Whether the ENDED ``event`` is of an originate the PBX fence refused before any carrier leg existed:
    the contact was not dialled by it, so the attempt is not dialled (and costs no retry), not failed.

    Only before an answer: a call that was answered reached the callee, whatever a variable says."""
    return event.fenced is not None and state in (A.DIALING, A.ORIGINATED) and not event.answered


# ---- a claim that dials nothing ----------------------------------------------------------------------


@dataclass(frozen=True)
class Skipped:
    """A claimed contact that is not dialled: its number is on its tenant's suppression list now.

    ``CallStore.begin_attempt`` returns it after moving the contact to ``skipped`` in the claim's own
    transaction (with its ``skipped`` event); no attempt exists, so nothing is originated.
    """

    contact_id: int
    reason: SkipReason = SkipReason.SUPPRESSED


# ---- the end of a call --------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """What the campaign says about a failed attempt: its retry budget, delay, its outcome rules (per
    failure reason, ``retry_rules.py``), and whether it stopped."""

    retries_per_contact: int
    retry_delay_seconds: int
    stopped: bool  # the campaign is terminal: a retry it would have made is cancelled instead
    rules: RetryRules = field(default_factory=RetryRules)
    on_machine: OnMachine | None = None  # AMD on: what a machine's answer means (None: AMD off)


@dataclass(frozen=True)
class Transition:
    """How an attempt ends: the attempt moves to ``state`` (ENDED) and its contact to ``contact_status``.

    ``answer_at`` is set when the call was answered but dialerd never recorded the answer (its event was
    lost while disconnected): the answer is recorded first, at that time, then the end decided again from
    the stored answer time (another writer may have recorded it meanwhile).
    """

    state: AttemptState
    contact_status: ContactStatus
    ended_at: datetime
    cause: int | None
    sip_code: int | None
    reason: FailureReason | None = None  # the failure (None: answered, a completed call)
    talk_seconds: float | None = None  # answered: from the answer to the end, in seconds (3 decimals)
    retry_at: datetime | None = None  # the contact is pending again, due at this time
    answer_at: datetime | None = None
    opt_out: bool = False  # the number joins the tenant's suppression list (source opt_out), in the same write
    answered_by: AnsweredBy | None = None  # answered: human, machine or unknown (AMD unsure or off); else None
    amd_cause: str | None = None  # AMDCAUSE as Asterisk gave it, when AMD ran

    @property
    def answered(self) -> bool:
        return self.reason is None

    @property
    def cancelled(self) -> bool:
        """Would have been retried, but the campaign was stopped."""
        return self.contact_status is ContactStatus.CANCELLED

    @property
    def outcome(self) -> str:
        """The outcome's name in the counters: ``completed`` or the failure reason."""
        return "completed" if self.reason is None else self.reason.value


def ended_answered(state: AttemptState, event: CallEvent) -> bool:
    """Whether the ENDED ``event`` of an attempt in ``state`` ends an answered (completed) call.

    A failure needs the campaign's retry policy to decide on (``decide_end``); an answered call does not,
    unless AMD said a machine answered: the campaign's ``on_machine`` then decides (False here).
    """
    from dialerd.domain.causes import classify  # causes needs this module's CallEvent: import late

    return (classify(event, answer_seen=state is A.ANSWERED).answered
            and answered_by(event.amd_status) is not AnsweredBy.MACHINE)


def decide_end(
    state: AttemptState, event: CallEvent, *, attempt_number: int, answered_at: datetime | None,
    policy: RetryPolicy | None, now: datetime,
) -> Transition:
    """Decide how the ENDED ``event`` ends an attempt in ``state`` (in flight).

    ``answered_at``: the answer time already stored; ``attempt_number``: which attempt of the contact
    this is (1 for the first); ``now``: the time a retry delay counts from. ``policy`` may be None only
    when the call was answered (see :func:`ended_answered`): raise ValueError if a failure has none.
    """
    from dialerd.domain.causes import classify  # causes needs this module's CallEvent: import late

    # An answer dialerd never recorded, ended by Asterisk with no cause: dropped at once because our
    # Stasis app had no live client (taken over, or dialerd away), never a completed call.
    outcome = classify(event, answer_seen=state is A.ANSWERED)
    verdict, cause_text = answered_by(event.amd_status), amd_cause(event.amd_cause)
    if outcome.answered and policy is not None and machine_fails(event.amd_status, policy.on_machine):
        # AMD on with on_machine hangup: [dialerd-amd] hung up on the machine; a retryable failure.
        failed = decide_failure(FailureReason.MACHINE, event.cause, event.tech_cause,
                                attempt_number=attempt_number, policy=policy, ended_at=event.at, now=now)
        return replace(failed, answered_by=verdict, amd_cause=cause_text)
    if outcome.answered:
        # Answered unseen (while disconnected or down): the PBX's record may still know when.
        started = answered_at or event.answered_at or event.at
        answer_at = None if state is A.ANSWERED else started
        talk = max(0.0, (event.at - started).total_seconds())
        # Only an answered call can carry the callee's opt-out (the variable is set after the answer).
        # answered_by: voicemail and connect complete like a person; AMD off or unsure is unknown.
        return Transition(A.ENDED, ContactStatus.COMPLETED, event.at, event.cause, event.tech_cause,
                          talk_seconds=round(talk, 3), answer_at=answer_at, opt_out=event.opt_out,
                          answered_by=verdict, amd_cause=cause_text)
    assert outcome.reason is not None
    if policy is None:
        raise ValueError("a failed call needs the campaign's retry policy")
    return decide_failure(outcome.reason, event.cause, event.tech_cause, attempt_number=attempt_number,
                          policy=policy, ended_at=event.at, now=now)


def decide_failure(
    reason: FailureReason, cause: int | None, sip_code: int | None, *, attempt_number: int,
    policy: RetryPolicy, ended_at: datetime, now: datetime,
) -> Transition:
    """How a failed attempt ends: pending again for a retry, cancelled (the campaign stopped), or failed.

    One budget per contact (``retry_rules.decide_retry``): the retries so far are the attempts before
    this one, whatever their reasons, so a rule never grants retries another reason already used.
    """
    retry = decide_retry(reason, max(0, attempt_number - 1), policy.rules,
                         retries_per_contact=policy.retries_per_contact,
                         retry_delay_seconds=policy.retry_delay_seconds)
    if retry.retry and not policy.stopped:
        assert retry.delay_seconds is not None
        return Transition(A.ENDED, ContactStatus.PENDING, ended_at, cause, sip_code, reason=reason,
                          retry_at=now + timedelta(seconds=retry.delay_seconds))
    status = ContactStatus.CANCELLED if retry.retry else ContactStatus.FAILED
    return Transition(A.ENDED, status, ended_at, cause, sip_code, reason=reason)


# ---- a retry that lands after a stop -----------------------------------------------------------------


def retry_after_stop(
    status: ContactStatus, contact_values: Mapping[str, object], payload: Mapping[str, object],
    campaign_terminal: bool,
) -> tuple[ContactStatus, dict[str, object], dict[str, object]]:
    """The end of a failed call as written, given whether its campaign is terminal when the write runs.

    The retry decision reads the campaign's status before the write's transaction; a stop that commits
    in between would leave the contact pending (due for a retry) in a campaign that is over. Under the
    write's lock, such a retry is cancelled instead, as ``decide_failure`` does for a stopped campaign:
    no retry time, no hold, the event's reason ``campaign_stopped`` with the failure as ``last_failure``.
    Anything else is written as decided.
    """
    if status is not ContactStatus.PENDING or not campaign_terminal:
        return status, dict(contact_values), dict(payload)
    values = {**contact_values, "next_attempt_at": None, "next_eligible_at": None, "blocked_reason": None}
    body = {k: v for k, v in payload.items() if k != "retry_at"}
    body["last_failure"] = payload.get("reason")
    body["reason"] = "campaign_stopped"
    return ContactStatus.CANCELLED, values, body
