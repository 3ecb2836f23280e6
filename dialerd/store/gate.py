"""The claim gate's facts: what the call stores read in the claim transaction for ``domain/eligibility``.

Both call stores (``SqlCalls.begin_attempt``, ``HotPath.begin_attempt`` on the sqlite3 driver) read these
in the transaction that would record the attempt, ask ``claim_hold`` (one call of the domain's
``contact_hold``), and either record the attempt or write the contact's ``blocked_reason`` and
``next_eligible_at`` and dial nothing. The decision itself stays in the domain; this module only turns
stored values into its arguments.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from dialerd.domain.call import AttemptState
from dialerd.domain.caps import FrequencyCap, frequency_hold
from dialerd.domain.eligibility import contact_hold
from dialerd.domain.hours import CallingHours
from dialerd.domain.rules import Hold
from dialerd.domain.zones import parse_zones_text

# An attempt given back unsent never reached the number: it does not count against the frequency cap.
UNCOUNTED_ATTEMPT_STATE = AttemptState.NOT_DIALLED.value


@dataclass(frozen=True)
class ClaimFacts:
    """One pending contact's stored facts the gate decides on (its row, its campaign's and tenant's)."""

    calling_hours: str  # the campaign's canonical text; '' = any time
    zones: str | None  # the contact's stored zones text
    next_attempt_at: datetime | None  # its retry time
    phone_e164: str
    tenant_id: str
    max_attempts_per_number: int = 0  # the tenant's frequency cap; 0 = none
    frequency_window_hours: int = 0

    @property
    def cap(self) -> FrequencyCap:
        return FrequencyCap(self.max_attempts_per_number or None, self.frequency_window_hours or None)


@lru_cache(maxsize=256)
def hours_of(text: str) -> CallingHours:
    """A stored campaign's hours (checked when written, so parsing cannot fail), parsed once per text."""
    return CallingHours.parse(text)


def claim_hold(facts: ClaimFacts, attempts: Iterable[datetime], now: datetime) -> Hold | None:
    """None: the contact may be claimed at ``now``; else why not and until when (``contact_hold``).

    ``attempts``: when the number's counted attempts started (only read when the cap is active).
    """
    frequency = frequency_hold(facts.cap, attempts, now) if facts.cap.active else None
    return contact_hold(now=now, hours=hours_of(facts.calling_hours), zones=parse_zones_text(facts.zones),
                        due_at=facts.next_attempt_at, frequency=frequency)
