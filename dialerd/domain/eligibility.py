"""Whether one pending contact may be claimed now, and if not, why and from when. Pure.

It combines the per-contact rules: its zones (``no_timezone``), its retry time (``retry_delay``), the
frequency cap on its number (``frequency_cap``) and the calling hours in its zones
(``outside_calling_hours``). The contact becomes eligible at the first opening of its window at or after
the latest of now, its retry time and the cap's lift: that is its ``next_eligible_at``, and a retry that
falls due while the window is closed waits for the next opening. Its ``blocked_reason`` is the rule that
is last to lift, the one that sets that time: the calling hours when the window opens only after the
others have lifted, else the later of the retry delay and the cap (the retry delay on a tie).
``no_timezone`` is the exception: a contact whose campaign has calling hours but who has no zone waits
with no time known (any-time hours need no zone).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from dialerd.domain.hours import CallingHours, is_open, next_opening
from dialerd.domain.localtime import aware
from dialerd.domain.rules import BlockReason, Hold


def contact_hold(
    *, now: datetime, hours: CallingHours, zones: Sequence[str], due_at: datetime | None = None,
    frequency: Hold | None = None,
) -> Hold | None:
    """None when the contact may be claimed at ``now``; else its ``blocked_reason`` and ``next_eligible_at``
    (``until``; None when no opening comes within a year, or for ``no_timezone``).

    ``due_at``: when its next attempt is due (its retry time; None or past: due now). ``frequency``: the
    ``caps.frequency_hold`` of its number at ``now``, if any.
    """
    now = aware(now, "now")
    if not hours.any_time and not zones:
        return Hold(BlockReason.NO_TIMEZONE)
    if frequency is not None and frequency.until is None:
        return frequency  # held with no end known
    due = max(now, aware(due_at, "due_at")) if due_at is not None else now
    lift = max(now, aware(frequency.until, "until")) if frequency is not None and frequency.until else now
    ready = max(due, lift)
    opening = next_opening(hours, zones, ready)
    if opening == now:
        return None
    if opening is None or opening > ready:
        return Hold(BlockReason.OUTSIDE_CALLING_HOURS, until=opening)
    if due >= lift:
        return Hold(BlockReason.RETRY_DELAY, until=opening)
    assert frequency is not None
    return Hold(BlockReason.FREQUENCY_CAP, until=opening, detail=frequency.detail)


def preflight(
    hours: CallingHours, zone_counts: Iterable[tuple[Sequence[str], int]], now: datetime
) -> dict[str, int]:
    """The import report's preflight of the pending contacts, grouped by their zones (``zone_counts``:
    each set of zones with how many contacts have it): how many are outside their calling hours at
    ``now`` (``outside_calling_hours``) and how many can't be placed in time (``no_timezone``: the campaign
    has calling hours and the contact has no zone). Any-time hours hold no one back."""
    outside = unplaced = 0
    if not hours.any_time:
        for zones, count in zone_counts:
            if not zones:
                unplaced += count
            elif not is_open(hours, zones, aware(now, "now")):
                outside += count
    return {BlockReason.OUTSIDE_CALLING_HOURS.value: outside, BlockReason.NO_TIMEZONE.value: unplaced}
