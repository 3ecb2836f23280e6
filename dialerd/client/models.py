"""Static types of the JSON the daemon returns (``dialerd/api/render.py``).

Responses are plain ``dict``s decoded from JSON; these ``TypedDict``s only tell the type checker what
keys to expect. A newer daemon may add keys; they are simply there at run time.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict


class ImportProblem(TypedDict):
    """One rejected CSV row."""

    line: int
    value: str
    reason: str
    code: str


class ImportReport(TypedDict):
    """What the CSV import did. ``problems`` is only in the answer to create."""

    rows_total: int
    rows_valid: int
    rows_rejected: int
    duplicates: int
    contacts: int
    phone_column: str
    delimiter: str
    custom_fields: list[str]
    problems: NotRequired[list[ImportProblem]]
    problems_truncated: NotRequired[bool]


class ContactCounts(TypedDict):
    """Contacts per status; statuses with no contact may be absent."""

    total: int
    pending: NotRequired[int]
    originated: NotRequired[int]
    connected: NotRequired[int]
    completed: NotRequired[int]
    failed: NotRequired[int]
    cancelled: NotRequired[int]


class StartDeferred(TypedDict):
    """A scheduled start held back by the tenant's concurrency cap."""

    reason: str
    since: str
    detail: str


# Functional syntax: "import" is a Python keyword.
Campaign = TypedDict(
    "Campaign",
    {
        "id": str,
        "name": str,
        "status": str,
        "caller_id": str,
        "destination": str,
        "agent_id": str,
        "phone_number_id": str,
        "default_region": str | None,
        "max_concurrent_calls": int,
        "retries_per_contact": int,
        "retry_delay_seconds": int,
        "ring_timeout_seconds": int,
        "scheduled_at": str | None,
        "created_at": str | None,
        "created_by": str | None,
        "started_at": str | None,
        "completed_at": str | None,
        "updated_at": str | None,
        "contacts": ContactCounts,
        "calls_in_flight": int,
        "progress": float,
        "import": ImportReport,
        "start_deferred": NotRequired[StartDeferred | None],
    },
)


class CampaignPage(TypedDict):
    campaigns: list[Campaign]
    total: int
    limit: int
    offset: int


class Contact(TypedDict):
    id: int
    campaign_id: str
    phone_number: str
    raw_number: str
    line: int
    status: str
    attempts: int
    last_attempt_at: str | None
    next_attempt_at: str | None
    failure_reason: str | None
    hangup_cause: int | None
    sip_code: int | None
    custom_fields: dict[str, str]
    updated_at: str | None


class ContactPage(TypedDict):
    contacts: list[Contact]
    total: int
    limit: int
    offset: int
    next_offset: int | None
    next_after_id: NotRequired[int | None]
    page: NotRequired[int]
    next_page: NotRequired[int | None]


class ImportPage(TypedDict):
    """``GET /campaigns/{id}/import``: the stored report's figures and a page of every rejected row."""

    campaign_id: str
    rows_total: int
    rows_valid: int
    rows_rejected: int
    duplicates: int
    contacts: int
    phone_column: str
    delimiter: str
    custom_fields: list[str]
    problems: list[ImportProblem]
    problems_total: int
    limit: int
    offset: int
    next_offset: int | None


JsonObject = dict[str, Any]
