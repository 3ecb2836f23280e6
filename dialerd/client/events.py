"""The typed events of a campaign's stream (``GET /api/v1/campaigns/{id}/events``).

The daemon sends named events (``originated``, ``connected``, ``completed``, ``failed``, ``pending`` for a
retry, ``cancelled``, ``skipped`` for a number suppressed since the import, found so when claimed:
never dialled, ``reason`` ``suppressed``, no ``attempt``; ``campaign`` for a campaign transition; ``end`` once the campaign is over, last) and
unnamed snapshot messages. ``data`` always holds the whole decoded JSON payload, so fields a newer daemon
adds are there.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ContactEvent:
    """A contact moved to ``status`` (the event name): one step of one call attempt."""

    id: int
    event: str
    contact_id: int
    phone_number: str | None
    status: str
    reason: str | None
    attempt: int | None
    cause: int | None
    sip_code: int | None
    data: Mapping[str, Any] = field(hash=False, repr=False)

    @property
    def at(self) -> str | None:
        value = self.data.get("at")
        return value if isinstance(value, str) else None


@dataclass(frozen=True)
class CampaignEvent:
    """The campaign changed status (``previous`` -> ``status``) because of ``action``."""

    id: int
    campaign_id: str
    status: str
    previous: str | None
    action: str | None
    data: Mapping[str, Any] = field(hash=False, repr=False)


@dataclass(frozen=True)
class Snapshot:
    """Live figures, sent every couple of seconds while the campaign runs (and once on connect)."""

    data: Mapping[str, Any] = field(hash=False)

    @property
    def status(self) -> str:
        return str(self.data.get("status", ""))

    @property
    def contacts(self) -> dict[str, int]:
        counts = self.data.get("contacts")
        return {str(k): int(v) for k, v in counts.items()} if isinstance(counts, dict) else {}

    @property
    def calls_in_flight(self) -> int:
        return int(self.data.get("calls_in_flight") or 0)


@dataclass(frozen=True)
class End:
    """The campaign is over: in a terminal status with no call in flight (or deleted); the stream is over.

    It comes once, after every other event of the campaign: a stop with calls up is a ``CampaignEvent``
    (status ``completed``) followed by those calls' outcomes and only then ``End``."""

    id: int | None
    campaign_id: str
    status: str


@dataclass(frozen=True)
class UnknownEvent:
    """An event this client version does not know; kept rather than dropped."""

    id: int | None
    event: str | None
    data: Mapping[str, Any] = field(hash=False)


Event = ContactEvent | CampaignEvent | Snapshot | End | UnknownEvent


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def parse_event(event: str | None, data_text: str, frame_id: str | None) -> Event:
    """Turn one dispatched SSE message into a typed event; anything unexpected becomes ``UnknownEvent``."""
    try:
        decoded: Any = json.loads(data_text)
    except ValueError:
        decoded = None
    fid = _int(frame_id)
    if not isinstance(decoded, dict):
        return UnknownEvent(fid, event, {"raw": data_text})
    data: dict[str, Any] = decoded
    eid = _int(data.get("id"))
    if eid is None:
        eid = fid
    if event == "end":
        return End(fid, str(data.get("campaign_id", "")), str(data.get("status", "")))
    if event in (None, "message") and data.get("type") == "snapshot":
        return Snapshot(data)
    contact_id = _int(data.get("contact_id"))
    if event == "campaign" and eid is not None:
        return CampaignEvent(
            eid,
            str(data.get("campaign_id", "")),
            str(data.get("status", "")),
            _str(data.get("previous")),
            _str(data.get("action")),
            data,
        )
    if event is not None and eid is not None and contact_id is not None:
        return ContactEvent(
            id=eid,
            event=event,
            contact_id=contact_id,
            phone_number=_str(data.get("phone_number")),
            status=str(data.get("status", event)),
            reason=_str(data.get("reason")),
            attempt=_int(data.get("attempt")),
            cause=_int(data.get("cause")),
            sip_code=_int(data.get("sip_code")),
            data=data,
        )
    return UnknownEvent(eid, event, data)
