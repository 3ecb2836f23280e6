"""Contact statuses, failure reasons and the retry rule (the attempt's moves are in ``call.MOVES``)."""

from __future__ import annotations

from enum import StrEnum


class ContactStatus(StrEnum):
    PENDING = "pending"
    ORIGINATED = "originated"
    CONNECTED = "connected"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # Never dialled: its number is on the tenant's suppression list (at import, or found so at claim
    # time). Terminal, and counted toward completion like completed and failed.
    SKIPPED = "skipped"

    @property
    def final(self) -> bool:
        return self in (ContactStatus.COMPLETED, ContactStatus.FAILED, ContactStatus.CANCELLED,
                        ContactStatus.SKIPPED)

    @property
    def in_flight(self) -> bool:
        return self in (ContactStatus.ORIGINATED, ContactStatus.CONNECTED)


class SkipReason(StrEnum):
    """Why a contact is ``skipped`` (the contact's ``reason``; failures keep ``failure_reason``)."""

    SUPPRESSED = "suppressed"


class FailureReason(StrEnum):
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    CONGESTION = "congestion"
    INVALID_NUMBER = "invalid_number"
    REJECTED = "rejected"
    UNREACHABLE = "unreachable"
    ORIGINATE_ERROR = "originate_error"
    # Answered, then hung up by Asterisk at once: our Stasis app had no live client (taken over by
    # another client, or dialerd away). The callee heard nothing: an abandoned call, not a completed one.
    APP_UNAVAILABLE = "app_unavailable"
    # Answered by an answering machine (AMD on, on_machine hangup): hung up at once; worth another try.
    MACHINE = "machine"

    @property
    def retryable(self) -> bool:
        """Busy, no answer, congestion, unreachable and machine may succeed later; the rest never will.

        ``app_unavailable`` is an abandoned call (the callee answered and heard nothing): not redialled
        automatically, as rules on abandoned calls commonly require; the operator decides.
        """
        return self in _RETRYABLE


_RETRYABLE = frozenset(
    {FailureReason.BUSY, FailureReason.NO_ANSWER, FailureReason.CONGESTION, FailureReason.UNREACHABLE,
     FailureReason.MACHINE}
)

def will_retry(reason: FailureReason, attempts: int, retries_per_contact: int) -> bool:
    """Whether a contact whose ``attempts``-th attempt failed with ``reason`` gets another attempt."""
    return reason.retryable and attempts <= retries_per_contact
