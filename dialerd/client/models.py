"""Static types of the JSON the daemon returns, and the create form's field names.

GENERATED from dialerd/api/schemas.py and dialerd/services/campaign_spec.py by
``python -m dialerd.api.client_models``; do not edit (tests/unit/test_client_models.py checks it).

Responses are plain ``dict``s decoded from JSON; these ``TypedDict``s only tell the type checker what
keys to expect. A newer daemon may add keys; they are simply there at run time.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NotRequired, TypedDict


class ContactCounts(TypedDict):
    """Contacts per status, every status present."""

    total: int
    pending: int
    originated: int
    connected: int
    completed: int
    failed: int
    cancelled: int
    skipped: int


class ImportProblem(TypedDict):
    """One rejected CSV row."""

    line: int
    value: str
    reason: str
    code: str


class Preflight(TypedDict):
    """The contacts as they stand at the create: which will not be dialled, and which not right now."""

    suppressed: int
    outside_calling_hours: int
    no_timezone: int


class ImportReport(TypedDict):
    """What the CSV import did, as every campaign answer shows it. ``problems``: only in the answer to create."""

    rows_total: int
    rows_valid: int
    rows_rejected: int
    duplicates: int
    contacts: int
    phone_column: str
    delimiter: str
    custom_fields: list[str]
    problems: NotRequired[list[ImportProblem]]
    problems_truncated: bool
    encoding: NotRequired[str]
    encoding_source: NotRequired[str]
    phone_columns: NotRequired[dict[str, int]]
    multi_number_cells: NotRequired[int]
    suppressed: NotRequired[int]
    preflight: NotRequired[Preflight]


class StartDeferred(TypedDict):
    """A scheduled start held back by the tenant's concurrency cap."""

    reason: str
    since: str
    detail: str


class CallerIdStats(TypedDict):
    """One caller id's figures over the campaign's attempts (attempts given back unsent aside)."""

    caller_id: str
    attempts: int
    answered: int
    answer_rate: float | None
    rejected: int


# A campaign: its settings, status, live contact counts and import report.
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
        "retry_rules": str,
        "ring_timeout_seconds": int,
        "calling_hours": str,
        "timezone": str | None,
        "scheduled_at": str | None,
        "created_at": str,
        "created_by": str,
        "started_at": str | None,
        "completed_at": str | None,
        "updated_at": str,
        "contacts": ContactCounts,
        "calls_in_flight": int,
        "progress": float,
        "import": ImportReport,
        "start_deferred": StartDeferred | None,
        "caller_id_strategy": str,
        "caller_id_stats": list[CallerIdStats],
        "amd": str,
        "on_machine": str,
        "webhook_url": str | None,
    },
)


class CampaignPage(TypedDict):
    """A page of campaigns, newest first."""

    campaigns: list[Campaign]
    total: int
    limit: int
    offset: int


class AttemptRecord(TypedDict):
    """One attempt of a contact (one channel), as the store recorded it."""

    attempt: int
    channel_id: str
    state: str
    started_at: str
    answered_at: str | None
    ended_at: str | None
    outcome: str | None
    failure_reason: str | None
    cause: int | None
    sip_code: int | None
    talk_seconds: float | None
    caller_id: str | None
    answered_by: str | None
    amd_cause: str | None


class Contact(TypedDict):
    """One contact of a campaign: its number, its status and its last attempt's outcome."""

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
    reason: str | None
    hangup_cause: int | None
    sip_code: int | None
    custom_fields: dict[str, str]
    updated_at: str | None
    timezone: str | None
    timezone_source: str | None
    next_eligible_at: str | None
    blocked_reason: str | None
    answered_by: str | None
    amd_cause: str | None
    attempt_history: NotRequired[list[AttemptRecord]]


class ContactPage(TypedDict):
    """A page of contacts, in CSV order."""

    contacts: list[Contact]
    total: int
    limit: int
    offset: int
    next_offset: int | None
    next_after_id: int | None
    page: NotRequired[int]
    next_page: NotRequired[int | None]


class Blocker(TypedDict):
    """One reason the campaign dials less than it could, or not at all."""

    reason: str
    contacts: NotRequired[int]
    next_at: str | None
    detail: dict[str, Any]


class Explanation(TypedDict):
    """GET /campaigns/{id}/explain: why the campaign is (not) dialling now."""

    campaign_id: str
    status: str
    dialling: bool
    pending: int
    eligible_now: int
    blocked_by: list[Blocker]


class ImportPage(TypedDict):
    """GET /campaigns/{id}/import: the stored report's figures and a page of every rejected row."""

    campaign_id: str
    rows_total: int
    rows_valid: int
    rows_rejected: int
    duplicates: int
    contacts: int
    phone_column: str
    delimiter: str
    custom_fields: list[str]
    encoding: NotRequired[str]
    encoding_source: NotRequired[str]
    phone_columns: NotRequired[dict[str, int]]
    multi_number_cells: NotRequired[int]
    suppressed: NotRequired[int]
    problems: list[ImportProblem]
    problems_total: int
    limit: int
    offset: int
    next_offset: int | None


class Suppression(TypedDict):
    """One number of the tenant's suppression list (do-not-call): never dialled by its campaigns."""

    number: str
    reason: str
    source: str
    created_at: str


class SuppressionPage(TypedDict):
    """A page of the tenant's suppression list, newest first."""

    suppressions: list[Suppression]
    total: int
    limit: int
    offset: int
    next_offset: int | None


class SuppressionReject(TypedDict):
    """One input that is not a dialable number (nothing is added for it)."""

    input: str
    reason: str
    code: str
    index: NotRequired[int]
    line: NotRequired[int]


class SuppressionsAdded(TypedDict):
    """What POST /suppressions did."""

    added: int
    already: int
    duplicates: int
    rejected: list[SuppressionReject]
    rejected_total: int


class CallLimitsLimits(TypedDict):
    """The tenant's limits as its operator set them (``dialerd tenants set``); 0 is no limit."""

    concurrent_max: int
    calls_per_minute: int
    daily_calls_max: int
    daily_minutes_max: int
    max_attempts_per_number: int
    frequency_window_hours: int
    timezone: str


class CallLimitsUsage(TypedDict):
    """The tenant's usage now."""

    in_flight: int
    calls_last_minute: int
    calls_today: int
    minutes_today: float


class CallLimits(TypedDict):
    """GET /api/v1/call-limits: the caller's tenant limits and live usage."""

    limits: CallLimitsLimits
    usage: CallLimitsUsage


# The answer to POST /campaigns/{id}/contacts: what the append did, and the campaign's counts after it.
ContactsAppended = TypedDict(
    "ContactsAppended",
    {
        "campaign_id": str,
        "status": str,
        "import": ImportReport,
        "contacts": ContactCounts,
    },
)


class WebhookState(TypedDict):
    """GET /campaigns/{id}/webhook: how far the campaign's webhook got through its events."""

    url: str | None
    delivered_through: int
    pending: int
    dead: int
    last_error: str | None
    last_attempt_at: str | None
    next_attempt_at: str | None


class CreateOptions(TypedDict, total=False):
    """The create form's fields beside ``name``, as ``create()`` takes them: None or absent leaves the daemon's default."""

    caller_id: str | None
    destination: str | None
    default_region: str | None
    scheduled_at: datetime | str | None
    phone_column: str | None
    encoding: str | None
    max_concurrent_calls: int | None
    retries_per_contact: int | None
    retry_delay_seconds: int | None
    retry_rules: str | None
    ring_timeout_seconds: int | None
    calling_hours: str | None
    timezone: str | None
    caller_id_strategy: str | None
    amd: str | None
    on_machine: str | None
    webhook_url: str | None
    webhook_secret: str | None


# The create form's fields (an absent one takes the daemon's default), the integer ones (sent as JSON
# numbers in a JSON create), and what PATCH may change.
CREATE_FIELDS = (
    "name",
    "caller_id",
    "destination",
    "default_region",
    "scheduled_at",
    "phone_column",
    "encoding",
    "max_concurrent_calls",
    "retries_per_contact",
    "retry_delay_seconds",
    "retry_rules",
    "ring_timeout_seconds",
    "calling_hours",
    "timezone",
    "caller_id_strategy",
    "amd",
    "on_machine",
    "webhook_url",
    "webhook_secret",
)
INT_FIELDS = (
    "max_concurrent_calls",
    "retries_per_contact",
    "retry_delay_seconds",
    "ring_timeout_seconds",
)
EDITABLE = (
    "name",
    "max_concurrent_calls",
    "retries_per_contact",
    "retry_delay_seconds",
    "ring_timeout_seconds",
    "caller_id",
    "destination",
    "retry_rules",
    "calling_hours",
    "timezone",
    "caller_id_strategy",
    "amd",
    "on_machine",
    "webhook_url",
    "webhook_secret",
)

JsonObject = dict[str, Any]
