"""The hangup-handler record both adapters read back when they missed a channel's end.

The dialplan context ``[dialerd-hh]`` (pushed at originate) stores, per channel id,
``${HANGUPCAUSE}|${HANGUPCAUSE(chan,tech)}|${CHANNEL(state)}|${EPOCH}|${DIALERD_ANSWERED}``,
for example ``17|SIP 486 Busy Here|Ringing|1718000000|``. ARI reads it from the global variable
``DIALERD_RES_<id>``, AMI from AstDB ``dialerd/<id>``.
"""

from __future__ import annotations

from datetime import UTC, datetime

from dialerd.domain.call import CallEvent, CallEventKind
from dialerd.domain.causes import ALERTING_STATES, parse_cause, parse_tech_cause
from dialerd.timestamps import utcnow

FENCED_TECH = "FENCED"  # the tech field of a record of an originate the PBX fence refused (pbx/fence.py)
HANGUP_HANDLER = "dialerd-hh,s,1"
HANGUP_HANDLER_VAR = "CHANNEL(hangup_handler_push)"
ID_VAR = "DIALERD_ID"


def global_name(channel_id: str) -> str:
    """The global variable the hangup handler writes for ``channel_id``."""
    return f"DIALERD_RES_{channel_id}"


def parse_hangup_record(channel_id: str, text: str) -> CallEvent | None:
    """Build the ENDED event a record describes; None when the text is empty or not a record."""
    parts = [p.strip() for p in text.strip().split("|")]
    if len(parts) < 4 or not parts[0]:
        return None
    state = parts[2] or None
    # DIALERD_ANSWERED: anything dialerd set (e.g. the answer epoch); empty or 0 when it did not.
    answered = state == "Up" or (len(parts) > 4 and parts[4] not in ("", "0"))
    # [dialerd-demo] stores the answer epoch there: the only answer time of a call answered while we
    # were away (no StasisStart / Newstate seen). Without it, talk time would come out as zero.
    answered_at = _answer_epoch(parts[4]) if len(parts) > 4 else None
    return CallEvent(
        channel_id=channel_id,
        kind=CallEventKind.ENDED,
        at=_epoch(parts[3]),
        cause=parse_cause(parts[0]),
        tech_cause=parse_tech_cause(parts[1]),
        state=state,
        answered=answered,
        alerted=answered or state in ALERTING_STATES,
        answered_at=answered_at,
        # [dialerd-fence] refused the originate: the tech field says FENCED (the epoch is on the channel only).
        fenced="record" if parts[1] == FENCED_TECH else None,
    )


def _epoch(text: str) -> datetime:
    try:
        return datetime.fromtimestamp(int(text), tz=UTC)
    except (ValueError, OverflowError, OSError):
        return utcnow()


def _answer_epoch(text: str) -> datetime | None:
    """DIALERD_ANSWERED as a time, when it holds an epoch (other markers only say "answered")."""
    return _epoch(text) if text.isdigit() and int(text) > 0 else None
