""""Why isn't it dialling?": the answer of ``GET /api/v1/campaigns/{id}/explain``, assembled from counts. Pure.

The caller counts (pending contacts, those eligible now, those held back per reason with the earliest
time each lifts) and says which campaign-wide limits hold; ``explain`` orders them into ``blocked_by``:

1. ``no_pending_contacts`` when nothing is pending: then it is the whole story.
2. The campaign-wide reasons, which hold back every contact, in this fixed order: first those that stop
   the campaign until someone acts or the day ends (``paused``, ``scheduled``, ``pbx_disconnected``,
   ``daily_calls_max``, ``daily_minutes_max``), then those that only throttle it until a call ends or
   the minute passes (``tenant_concurrency``, ``campaign_concurrency``, ``tenant_rate``). They carry no
   ``contacts`` count.
3. The per-contact reasons (``outside_calling_hours``, ``no_timezone``, ``retry_delay``,
   ``frequency_cap``), by how many contacts each holds back, most first; a tie in that order.

``paused`` and ``scheduled`` come from the campaign's status (``scheduled`` lifts at ``scheduled_at``);
draft, completed and failed campaigns have no reason of their own: their ``status`` says it.
``dialling`` is whether the campaign places calls now: it is running, nothing stops it, and it has a call
up or a contact it may dial at once (a throttle with no call of its own up counts as not dialling).
The caller's counts should satisfy ``pending == eligible_now + sum(per-contact counts)``; ``explain``
does not check it, as separate reads may see contacts move between them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from dialerd.domain.campaign import CampaignStatus
from dialerd.domain.rules import PER_CONTACT, BlockReason, Hold
from dialerd.timestamps import rfc3339_or_none

B = BlockReason

STOPS: tuple[BlockReason, ...] = (B.PAUSED, B.SCHEDULED, B.PBX_DISCONNECTED, B.DAILY_CALLS_MAX, B.DAILY_MINUTES_MAX)
THROTTLES: tuple[BlockReason, ...] = (B.TENANT_CONCURRENCY, B.CAMPAIGN_CONCURRENCY, B.TENANT_RATE)
CONTACT_ORDER: tuple[BlockReason, ...] = (B.OUTSIDE_CALLING_HOURS, B.NO_TIMEZONE, B.RETRY_DELAY, B.FREQUENCY_CAP)
# Derived by ``explain`` itself, never given by the caller.
_DERIVED = frozenset({B.PAUSED, B.SCHEDULED, B.NO_PENDING_CONTACTS})


@dataclass(frozen=True)
class Tally:
    """The pending contacts one per-contact reason holds back, and the earliest time one of them is free."""

    contacts: int
    next_at: datetime | None = None


def tally(holds: Iterable[Hold | None]) -> dict[BlockReason, Tally]:
    """Per-contact holds (``eligibility.contact_hold`` of each pending contact; None: eligible) counted."""
    counts: dict[BlockReason, Tally] = {}
    for hold in holds:
        if hold is None:
            continue
        seen = counts.get(hold.reason)
        if seen is None:
            counts[hold.reason] = Tally(1, hold.until)
            continue
        times = [t for t in (seen.next_at, hold.until) if t is not None]
        counts[hold.reason] = Tally(seen.contacts + 1, min(times) if times else None)
    return counts


@dataclass(frozen=True)
class Blocker:
    """One item of ``blocked_by``; ``contacts`` is None for a campaign-wide reason."""

    reason: BlockReason
    contacts: int | None = None
    next_at: datetime | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"reason": self.reason.value}
        if self.contacts is not None:
            out["contacts"] = self.contacts
        out["next_at"] = rfc3339_or_none(self.next_at)
        out["detail"] = dict(self.detail)
        return out


@dataclass(frozen=True)
class Explanation:
    campaign_id: str
    status: CampaignStatus
    dialling: bool
    pending: int
    eligible_now: int
    blocked_by: tuple[Blocker, ...]

    def as_json(self) -> dict[str, Any]:
        """The response body, times in RFC 3339 (``next_at`` null where unknown)."""
        return {
            "campaign_id": self.campaign_id,
            "status": self.status.value,
            "dialling": self.dialling,
            "pending": self.pending,
            "eligible_now": self.eligible_now,
            "blocked_by": [b.as_json() for b in self.blocked_by],
        }


def explain(
    *, campaign_id: str, status: CampaignStatus, pending: int, eligible_now: int, in_flight: int,
    contact_holds: Mapping[BlockReason, Tally] | None = None, campaign_holds: Iterable[Hold] = (),
    scheduled_at: datetime | None = None, scheduled_detail: Mapping[str, Any] | None = None,
) -> Explanation:
    """Assemble the answer; raise ValueError for a reason given in the wrong place or twice.

    ``contact_holds``: per-contact reasons only (a zero count is left out). ``campaign_holds``: the
    campaign-wide limits that hold now (``pbx_disconnected``, the concurrency and rate caps, the daily caps
    from ``caps.daily_holds``), each with when it lifts where known. ``in_flight``: its calls up now.
    ``scheduled_detail``: the ``scheduled`` reason's figures (e.g. a start the tenant's cap defers).
    """
    wide: dict[BlockReason, Hold] = {}
    for hold in campaign_holds:
        if hold.reason in PER_CONTACT or hold.reason in _DERIVED:
            raise ValueError(f"{hold.reason} is not a campaign-wide limit the caller gives")
        if hold.reason in wide:
            raise ValueError(f"{hold.reason} given twice")
        wide[hold.reason] = hold
    if status is CampaignStatus.PAUSED:
        wide[B.PAUSED] = Hold(B.PAUSED)
    elif status is CampaignStatus.SCHEDULED:
        wide[B.SCHEDULED] = Hold(B.SCHEDULED, until=scheduled_at, detail=scheduled_detail or {})

    per_contact: list[Blocker] = []
    for reason, counted in (contact_holds or {}).items():
        if reason not in PER_CONTACT:
            raise ValueError(f"{reason} is not a per-contact reason")
        if counted.contacts > 0:
            per_contact.append(Blocker(reason, counted.contacts, counted.next_at))
    per_contact.sort(key=lambda b: (-(b.contacts or 0), CONTACT_ORDER.index(b.reason)))

    blocked: list[Blocker] = []
    if pending == 0:
        blocked.append(Blocker(B.NO_PENDING_CONTACTS))
    blocked.extend(Blocker(r, None, wide[r].until, wide[r].detail) for r in (*STOPS, *THROTTLES) if r in wide)
    blocked.extend(per_contact)

    stopped = status is not CampaignStatus.RUNNING or any(r in wide for r in STOPS)
    throttled = any(r in wide for r in THROTTLES)
    dialling = not stopped and (in_flight > 0 or (eligible_now > 0 and not throttled))
    return Explanation(campaign_id, status, dialling, pending, eligible_now, tuple(blocked))
