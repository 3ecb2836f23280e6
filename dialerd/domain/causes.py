"""Turn how a call ended (Q.850 cause, SIP code, channel state) into a contact outcome.

The rules and their order come from the measurements in ``shared/asterisk.md`` (outcome table, section 1.3):

0. ended ``Up`` with cause 0 while dialerd never saw the answer -> app unavailable: Asterisk answered the
   call and hung up at once because our Stasis app had no live client ("Stasis app doesn't exist" /
   "not active"; measured: hangup record ``0|SIP 200 OK|Up``, CDR lastapp ``Stasis``, billsec 0);
1. answered (StasisStart / Newstate Up seen, or the channel ended in state ``Up``) -> completed;
2. cause 17, or SIP 486/600 -> busy;
3. cause 19 after ringing or early media -> no answer (Asterisk synthesises 480 when the ring timeout fires);
4. cause 19 with the channel still ``Down`` and no alerting -> unreachable (a silent trunk and a real 480
   look the same, so both are "try again later, maybe elsewhere");
5. cause 1, 22 or 28, or SIP 404/410/484/604 -> invalid number (never retried);
6. cause 21, or SIP 403/603/607/608 -> rejected;
7. cause 34/38/41/42/44/47/58 or any SIP 5xx -> congestion;
8. cause 18/20, or SIP 408/480 -> unreachable;
9. anything else: no answer if the far end had been alerted, else unreachable. Both are retryable, which is
   the safe side for a cause we have never measured.

Rules are tried in order; within one rule either the cause or the SIP code is enough. So 17/486 after
ringing (the callee rejected the ringing call) is busy, and a 19 with a real SIP 480 is unreachable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dialerd.domain.call import CallEvent, CallEventKind
from dialerd.domain.contact import FailureReason

BUSY_CAUSES = frozenset({17})
BUSY_SIP = frozenset({486, 600})
INVALID_CAUSES = frozenset({1, 22, 28})
INVALID_SIP = frozenset({404, 410, 484, 604})
REJECTED_CAUSES = frozenset({21})
REJECTED_SIP = frozenset({403, 603, 607, 608})
CONGESTION_CAUSES = frozenset({34, 38, 41, 42, 44, 47, 58})
UNREACHABLE_CAUSES = frozenset({18, 20})
UNREACHABLE_SIP = frozenset({408, 480})
NO_ANSWER_CAUSE = 19
APP_UNAVAILABLE_CAUSE = 0  # no cause set: Asterisk hung up itself after Stasis() failed
ALERTING_STATES = frozenset({"Ringing", "Ring"})

_SIP_CODE = re.compile(r"(?<!\d)([3-6]\d\d)(?!\d)")


@dataclass(frozen=True)
class Outcome:
    """The classified end of one attempt. ``reason`` is None exactly when the call was answered."""

    answered: bool
    reason: FailureReason | None
    cause: int | None
    tech_cause: int | None


def classify(event: CallEvent, *, answer_seen: bool | None = None) -> Outcome:
    """Classify an ENDED event; raise ValueError for any other kind.

    ``answer_seen``: whether dialerd recorded the answer (its StasisStart / Newstate Up) before the
    end; None when unknown. Only False lets rule 0 apply.
    """
    if event.kind is not CallEventKind.ENDED:
        raise ValueError(f"classify needs an ENDED event, got {event.kind}")
    cause, sip = event.cause, event.tech_cause
    if answer_seen is False and event.state == "Up" and cause == APP_UNAVAILABLE_CAUSE:
        return Outcome(answered=False, reason=FailureReason.APP_UNAVAILABLE, cause=cause, tech_cause=sip)
    if event.answered or event.state == "Up":
        return Outcome(answered=True, reason=None, cause=cause, tech_cause=sip)
    return Outcome(answered=False, reason=_failure(event), cause=cause, tech_cause=sip)


def _failure(event: CallEvent) -> FailureReason:
    cause, sip = event.cause, event.tech_cause
    alerted = event.alerted or event.state in ALERTING_STATES
    if cause in BUSY_CAUSES or sip in BUSY_SIP:
        return FailureReason.BUSY
    if cause == NO_ANSWER_CAUSE:
        return FailureReason.NO_ANSWER if alerted else FailureReason.UNREACHABLE
    if cause in INVALID_CAUSES or sip in INVALID_SIP:
        return FailureReason.INVALID_NUMBER
    if cause in REJECTED_CAUSES or sip in REJECTED_SIP:
        return FailureReason.REJECTED
    if cause in CONGESTION_CAUSES or (sip is not None and 500 <= sip <= 599):
        return FailureReason.CONGESTION
    if cause in UNREACHABLE_CAUSES or sip in UNREACHABLE_SIP:
        return FailureReason.UNREACHABLE
    return FailureReason.NO_ANSWER if alerted else FailureReason.UNREACHABLE


def parse_tech_cause(text: str | int | None) -> int | None:
    """Extract the SIP failure code from ``"SIP 486 Busy Here"``, ``"486"`` or ``486``; else None.

    Only final failure codes (300-699) count: the hangup handler reports the last response seen, which
    is ``SIP 200 OK`` for an answered call and ``SIP 180 Ringing`` for a ring timeout.
    """
    if text is None or isinstance(text, bool):
        return None
    if isinstance(text, int):
        return text if 300 <= text <= 699 else None
    match = _SIP_CODE.search(text)
    return int(match.group(1)) if match else None


def parse_cause(text: str | int | None) -> int | None:
    """Parse a Q.850 cause given as text or int; None for empty or non-numeric text."""
    if text is None or isinstance(text, bool):
        return None
    try:
        value = int(str(text).strip())
    except ValueError:
        return None
    return value if value >= 0 else None
