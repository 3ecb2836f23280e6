"""The campaign lifecycle as a pure state machine.

importing -> draft or scheduled (the CSV import is done; see ``initial_status``) · draft -> running (start) · draft -> scheduled (scheduled_at set) · scheduled -> running (time reached,
or start) · running -> paused (pause) · paused -> running (resume, or start) · running/paused/draft/
scheduled -> completed (stop, or every contact final) · running -> failed (terminal error).

A campaign is *over* once its status is terminal and none of its calls is in flight any more (a stop
leaves the calls that are up to end on their own): that is its last transition, marked by one ``end``
event.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class CampaignStatus(StrEnum):
    # A campaign whose CSV is still being imported: invisible to the API (never listed, never found),
    # so not among ``VISIBLE``. The import ends in draft or scheduled (``initial_status``), or purges it.
    IMPORTING = "importing"
    DRAFT = "draft"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (CampaignStatus.COMPLETED, CampaignStatus.FAILED)

    @property
    def dispatching(self) -> bool:
        """Whether the dispatcher may originate new calls for a campaign in this status."""
        return self is CampaignStatus.RUNNING


# The statuses the API shows, filters on and documents (every status but importing).
VISIBLE: tuple[CampaignStatus, ...] = tuple(s for s in CampaignStatus if s is not CampaignStatus.IMPORTING)


class CampaignAction(StrEnum):
    START = "start"
    PAUSE = "pause"
    RESUME = "resume"
    STOP = "stop"
    DELETE = "delete"
    SCHEDULE_DUE = "schedule_due"  # scheduled_at reached
    FINISH = "finish"  # every contact reached a final status
    FAIL = "fail"  # a terminal error


@dataclass(frozen=True)
class Decision:
    """What an action does: the new status (None for delete) and whether anything changes."""

    status: CampaignStatus | None
    changed: bool


class TransitionRefused(Exception):
    """The action is not allowed in the current status; ``reason`` says why."""

    def __init__(self, status: CampaignStatus, action: CampaignAction, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.action = action
        self.reason = reason


S = CampaignStatus
A = CampaignAction

# (status, action) -> new status. Anything missing is refused with a reason from _REASONS.
_TABLE: dict[tuple[CampaignStatus, CampaignAction], CampaignStatus] = {
    (S.DRAFT, A.START): S.RUNNING,
    (S.SCHEDULED, A.START): S.RUNNING,
    (S.PAUSED, A.START): S.RUNNING,
    (S.SCHEDULED, A.SCHEDULE_DUE): S.RUNNING,
    (S.RUNNING, A.PAUSE): S.PAUSED,
    (S.PAUSED, A.RESUME): S.RUNNING,
    (S.DRAFT, A.STOP): S.COMPLETED,
    (S.SCHEDULED, A.STOP): S.COMPLETED,
    (S.RUNNING, A.STOP): S.COMPLETED,
    (S.PAUSED, A.STOP): S.COMPLETED,
    (S.RUNNING, A.FINISH): S.COMPLETED,
    (S.RUNNING, A.FAIL): S.FAILED,
    (S.PAUSED, A.FAIL): S.FAILED,
    (S.SCHEDULED, A.FAIL): S.FAILED,
}

# Actions that are accepted without change (idempotent) in these statuses.
_NO_OP: set[tuple[CampaignStatus, CampaignAction]] = {
    (S.COMPLETED, A.STOP),
    (S.FAILED, A.STOP),
}


def _reason(status: CampaignStatus, action: CampaignAction) -> str:
    if action is A.DELETE:
        return "campaign is running; pause or stop it before deleting"
    if status.terminal:
        return f"campaign is {status}; it cannot be changed any more (create a new campaign to redo the work)"
    if action is A.START and status is S.RUNNING:
        return "campaign is already running"
    if action is A.PAUSE:
        if status is S.PAUSED:
            return "campaign is already paused"
        return f"only a running campaign can be paused; this one is {status}"
    if action is A.RESUME:
        if status is S.RUNNING:
            return "campaign is already running"
        return f"only a paused campaign can be resumed; this one is {status}"
    if action is A.SCHEDULE_DUE:
        return f"campaign is {status}, not scheduled"
    if action is A.FINISH:
        return f"campaign is {status}, not running"
    return f"cannot {action} a campaign that is {status}"


def decide(status: CampaignStatus, action: CampaignAction) -> Decision:
    """Return what ``action`` does to a campaign in ``status``, or raise TransitionRefused."""
    if action is A.DELETE:
        if status is S.RUNNING:
            raise TransitionRefused(status, action, _reason(status, action))
        return Decision(status=None, changed=True)
    if (status, action) in _NO_OP:
        return Decision(status=status, changed=False)
    new = _TABLE.get((status, action))
    if new is None:
        raise TransitionRefused(status, action, _reason(status, action))
    return Decision(status=new, changed=True)


def initial_status(scheduled: bool) -> CampaignStatus:
    """A new campaign starts in draft, or scheduled when it has a scheduled_at."""
    return S.SCHEDULED if scheduled else S.DRAFT


# The statuses contacts may be appended in (POST /campaigns/{id}/contacts): before it runs, while it runs,
# while it is paused. A running campaign's runner dials the new contacts at once.
ACCEPTS_CONTACTS: tuple[CampaignStatus, ...] = (S.DRAFT, S.SCHEDULED, S.PAUSED, S.RUNNING)


def append_refused(status: CampaignStatus) -> str | None:
    """Why contacts cannot be appended to a campaign in ``status`` (None: they can)."""
    if status in ACCEPTS_CONTACTS:
        return None
    if status.terminal:
        return (f"campaign is {status}: contacts can no longer be added (a running campaign that ran out of "
                "contacts completed, and a completed campaign never dials again); create a new campaign for them")
    return f"campaign is {status}; contacts can be added only while it is draft, scheduled, paused or running"


# The kind of the event that marks a campaign over (see ``over``); its stream ends with it.
END_EVENT = "end"


def over(status: CampaignStatus, calls_in_flight: int) -> bool:
    """Whether nothing more can happen to a campaign: terminal, and its last call has ended."""
    return status.terminal and calls_in_flight == 0
