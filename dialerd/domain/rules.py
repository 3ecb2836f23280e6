"""What the compliance rules share: the error a rule's text raises, and why a contact or a campaign waits.

Pure: no I/O, no asyncio, no logging. ``FieldError`` is a ``ValueError`` (like ``Destination.parse``'s) so
the domain knows nothing of HTTP; the API turns it into its 400 naming the field, with the same message
``forms.bad`` builds: ``except FieldError as exc: raise bad(exc.field, exc.problem) from None``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class FieldError(ValueError):
    """A form field (or CLI option, or config key) whose text cannot be accepted, and why."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class BlockReason(StrEnum):
    """Why nothing (or not everything) dials: the names of ``explain``'s ``blocked_by`` and of a contact's
    ``blocked_reason``. The values are the API's contract (issue 11); never rename one."""

    # Campaign-wide: they hold back every contact of the campaign.
    PAUSED = "paused"
    SCHEDULED = "scheduled"
    PBX_DISCONNECTED = "pbx_disconnected"
    CAMPAIGN_CONCURRENCY = "campaign_concurrency"
    TENANT_CONCURRENCY = "tenant_concurrency"
    TENANT_RATE = "tenant_rate"
    DAILY_CALLS_MAX = "daily_calls_max"
    DAILY_MINUTES_MAX = "daily_minutes_max"
    # Per contact: each pending contact waits for at most one of these (its ``blocked_reason``).
    OUTSIDE_CALLING_HOURS = "outside_calling_hours"
    NO_TIMEZONE = "no_timezone"
    RETRY_DELAY = "retry_delay"
    FREQUENCY_CAP = "frequency_cap"
    # Nothing is left to dial.
    NO_PENDING_CONTACTS = "no_pending_contacts"

    @property
    def per_contact(self) -> bool:
        """Whether this reason is about single contacts (it has a count), not about the whole campaign."""
        return self in PER_CONTACT


PER_CONTACT: frozenset[BlockReason] = frozenset(
    {BlockReason.OUTSIDE_CALLING_HOURS, BlockReason.NO_TIMEZONE, BlockReason.RETRY_DELAY,
     BlockReason.FREQUENCY_CAP}
)


@dataclass(frozen=True)
class Hold:
    """One rule holding something back: its reason, when it lifts (None: not by itself), and figures for
    ``explain``'s ``detail`` (e.g. ``{"limit": 3, "used": 3}``)."""

    reason: BlockReason
    until: datetime | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)
