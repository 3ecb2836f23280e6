"""The objects the API answers with, declared once: campaign, contact, import report, row problem, error, health.

Each class is the shape of one JSON object, its fields in the order they are sent. ``render.py`` builds
every answer through these models (``model_dump(mode="json")``), the OpenAPI document's
``components.schemas`` is their JSON Schema, and ``dialerd/client/models.py`` is generated from them
(``python -m dialerd.api.client_models``). The campaign's settings reuse the create form's field types
(``services/campaign_spec.py``), so a bound is stated once for input and output.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema, create_model

from dialerd.domain.amd import AmdMode, AnsweredBy
from dialerd.domain.caller_id import STRATEGIES
from dialerd.domain.campaign import VISIBLE
from dialerd.domain.contact import ContactStatus, FailureReason, SkipReason
from dialerd.domain.rules import PER_CONTACT, BlockReason
from dialerd.domain.suppression import SuppressionSource
from dialerd.domain.zones import TimezoneSource
from dialerd.services import campaign_spec as spec
from dialerd.services.csv_contacts import ROW_CODES
from dialerd.services.csv_text import ENCODING_SOURCES
from dialerd.timestamps import rfc3339

MAX_PAGE = 1000  # the largest page (limit) any list answers

TIME_SCHEMA: dict[str, Any] = {
    "type": "string", "format": "date-time", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$",
    "example": "2030-01-31T09:00:00.000Z",
    "description": "RFC 3339 in UTC with milliseconds and a Z: the one format of every time the API returns",
}
# Every time the API returns, in the one format of dialerd.timestamps.
Timestamp = Annotated[datetime, PlainSerializer(rfc3339, return_type=str), WithJsonSchema(TIME_SCHEMA)]
# A time stored as text in a JSON column (written by timestamps.rfc3339), shown as stored.
StoredTimestamp = Annotated[str, WithJsonSchema(TIME_SCHEMA)]
Count = Annotated[int, Field(ge=0)]
# The default of a key an answer may lack: render dumps with exclude_unset, so an unset key is left out.
ABSENT: Any = None


# Strings of a domain enum: the document lists the values (validation of an answer is the document's job).
RowCode = Annotated[str, WithJsonSchema({"type": "string", "enum": sorted(ROW_CODES)})]
EncodingSource = Annotated[str, WithJsonSchema({
    "type": "string", "enum": list(ENCODING_SOURCES), "description": "bom: a byte-order mark; declared: the "
    "encoding form field; utf-8: valid UTF-8 without BOM; detected: charset detection"})]
CampaignStatusName = Annotated[str, WithJsonSchema({"type": "string", "enum": [s.value for s in VISIBLE]})]
ContactStatusName = Annotated[str, WithJsonSchema({"type": "string", "enum": [s.value for s in ContactStatus]})]
EventName = Annotated[str, WithJsonSchema({
    "type": "string", "enum": ["message", "campaign", "end", *(s.value for s in ContactStatus)],
    "description": "'message' (no event line): a snapshot of the live figures; 'campaign': a status change; a "
    "contact status: that contact's transition; 'end' (once, last): the campaign is over, i.e. in a final "
    "status with no call in flight, and the stream closes"})]


def _tidy(schema: dict[str, Any]) -> None:
    """An answer's keys have no defaults (an absent one is absent), and pydantic's titles ('Rows Total')
    say nothing the property name does not."""
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
        prop.pop("default", None)


class Shape(BaseModel):
    """A closed JSON object of the API: unknown keys are refused, and the document says so."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_tidy)


# ---- import report ------------------------------------------------------------------------------------
# Three objects share the report's figures in three orders (the stored report; the create answer with its
# problems after custom_fields; the paged GET .../import). Pydantic lays a class's fields out base by base
# in reverse MRO order, so each object lists its parts last-to-first.


class RowProblem(Shape):
    """One rejected CSV row."""

    line: int = Field(ge=1, description="physical line of the CSV file (the header is line 1)")
    value: str = Field(max_length=100)
    reason: str
    code: RowCode


class _ImportFigures(Shape):
    rows_total: Count = Field(description="data rows read (the header excluded)")
    rows_valid: Count = Field(description="rows with a dialable number")
    rows_rejected: Count = Field(description="rows refused; see problems")
    duplicates: Count = Field(description="valid rows whose number was already in the file (appending: or "
                              "in the campaign)")
    contacts: Count = Field(description="contacts stored")
    phone_column: str = Field(description="the header taken as the phone number column")
    delimiter: str = Field(min_length=1, max_length=1)
    custom_fields: list[str] = Field(
        description="every other column: handed to the call as DIALERD_FIELD_* variables")


class _ImportProblems(Shape):
    problems: list[RowProblem]


class _ImportTruncated(Shape):
    problems_truncated: bool = Field(description="more rows were rejected than are listed")


class _ImportSource(Shape):
    """Reports stored before these keys existed lack them: none is required."""

    encoding: str = Field(ABSENT, description="the encoding the file was read in, e.g. utf-8, utf-16-le, "
                          "cp1252 (a Python codec name, as the encoding form field takes)")
    encoding_source: EncodingSource = Field(ABSENT)
    phone_columns: dict[str, Count] = Field(ABSENT, description="every phone column, in the priority they are "
                                            "tried, with how many contacts' numbers came from each")
    multi_number_cells: Count = Field(ABSENT, description="contacts whose phone cell held several numbers "
                                      "separated by ':::' (Google Contacts); the first dialable one was taken")
    suppressed: Count = Field(ABSENT, description="contacts stored as 'skipped' (reason 'suppressed'): their "
                              "number is on the tenant's suppression list; never dialled")


class Preflight(Shape):
    """The contacts as they stand at the create: which will not be dialled, and which not right now."""

    suppressed: Count = Field(description="contacts skipped at import: their number is on the tenant's "
                              "suppression list (never dialled)")
    outside_calling_hours: Count = Field(description="pending contacts whose calling hours are closed now in "
                                         "their zone (in one of their zones, for several): dialled at the opening")
    no_timezone: Count = Field(description="pending contacts with no zone while the campaign has calling hours: "
                               "not dialled until the campaign gets a timezone")


class _ImportPreflight(Shape):
    preflight: Preflight = Field(ABSENT, description="what the campaign's rules held back as of the create "
                                 "(stored with the report; the live figures are in GET .../explain)")


class ImportSummary(_ImportPreflight, _ImportSource, _ImportTruncated, _ImportFigures):
    """What the CSV import did, as every campaign answer shows it."""


class ImportReport(_ImportPreflight, _ImportSource, _ImportTruncated, _ImportProblems, _ImportFigures):
    """What the CSV import did, with the rejected rows (the first 1000): the answer to create."""


class _PageOfProblems(Shape):
    problems: list[RowProblem] = Field(description="a page of every rejected row")
    problems_total: Count = Field(description="rejected rows stored (all of them)")
    limit: int = Field(ge=1, le=MAX_PAGE)
    offset: Count
    next_offset: Count | None = Field(description="offset of the next page; null on the last page")


class _OfCampaign(Shape):
    campaign_id: str


class ImportPage(_PageOfProblems, _ImportSource, _ImportFigures, _OfCampaign):
    """GET /campaigns/{id}/import: the stored report's figures and a page of every rejected row."""


# ---- campaign -------------------------------------------------------------------------------------------

if TYPE_CHECKING:
    class ContactCounts(Shape):
        """Contacts per status, every status present (one field per ``ContactStatus``, built below)."""
else:
    ContactCounts = create_model(
        "ContactCounts", __base__=Shape, __doc__="Contacts per status, every status present.",
        total=(Count, ...), **{s.value: (Count, ...) for s in ContactStatus},
    )


class StartDeferred(Shape):
    """A scheduled start held back by the tenant's concurrency cap."""

    reason: str = Field(examples=["tenant_concurrency_exceeded"])
    since: StoredTimestamp
    detail: str


StoredDestination = Annotated[str, Field(description="CONTEXT,EXTENSION,PRIORITY or stasis:APP[,ARGS]")]
StoredRetryRules = Annotated[str, WithJsonSchema({
    "type": "string", "pattern": spec.RETRY_RULES_PATTERN, "example": "busy=3@120; no_answer=0@3600",
    "description": "the outcome rules for retries in their canonical form (REASON=RETRIES@DELAY; ...), '' when "
    "none"})]


class CallerIdStats(Shape):
    """One caller id's figures over the campaign's attempts (attempts given back unsent aside)."""

    caller_id: str
    attempts: Count
    answered: Count = Field(description="attempts answered")
    answer_rate: float | None = Field(ge=0, le=1, description="answered / attempts (4 decimals); null before "
                                      "the first attempt")
    rejected: Count = Field(description="attempts the far end rejected with SIP 603 (Decline) or 608 (Rejected)")


class Campaign(Shape):
    """A campaign: its settings, status, live contact counts and import report."""

    id: str = Field(pattern="^cmp_[0-9a-f]{20}$", examples=["cmp_4f9d2c6e0a1b3c5d7e9f"])
    name: spec.Name
    status: CampaignStatusName
    caller_id: spec.CallerId
    destination: StoredDestination
    agent_id: str = Field(description="the reference API's name for destination")
    phone_number_id: str = Field(description="the reference API's name for caller_id")
    default_region: str | None = Field(pattern="^[A-Z]{2}$")
    max_concurrent_calls: spec.MaxConcurrentCalls
    retries_per_contact: spec.RetriesPerContact
    retry_delay_seconds: spec.RetryDelaySeconds
    retry_rules: StoredRetryRules
    ring_timeout_seconds: spec.RingTimeoutSeconds
    calling_hours: str = Field(description="the calling hours in each recipient's local time, canonical "
                               "('mon-fri 09:00-20:00; sat 10:00-14:00'); '' = any time")
    timezone: str | None = Field(description="the campaign's fallback IANA zone (contacts whose zone neither "
                                 "the CSV nor the number gives); null: config default_timezone")
    scheduled_at: Timestamp | None
    created_at: Timestamp
    created_by: str = Field(description="id of the API key that created the campaign")
    started_at: Timestamp | None
    completed_at: Timestamp | None
    updated_at: Timestamp
    contacts: ContactCounts
    calls_in_flight: Count
    progress: float = Field(ge=0, le=1, description="share of contacts in a final status (completed, failed, "
                            "cancelled, skipped)")
    import_: ImportSummary = Field(serialization_alias="import", validation_alias=AliasChoices("import", "import_"))
    start_deferred: StartDeferred | None = Field(
        description="a scheduled start held back by the tenant's concurrency cap (retried every minute), with "
        "the first time it was; null otherwise")
    caller_id_strategy: str = Field(json_schema_extra={"enum": list(STRATEGIES)},
                                    description=spec.CALLER_ID_STRATEGY_DESCRIPTION)
    caller_id_stats: list[CallerIdStats] = Field(
        description="per caller id: every number of the caller_id pool in its order, then any other caller id "
        "the campaign's attempts used (before a PATCH changed the pool); one grouped read of its attempts")
    amd: str = Field(json_schema_extra={"enum": [m.value for m in AmdMode]},
                     description="answering-machine detection: off or on")
    on_machine: str = Field(pattern=spec.ON_MACHINE_PATTERN, description="with amd on, what a machine's answer "
                            "gets: hangup, voicemail:SOUND or connect")
    webhook_url: str | None = Field(description="where the campaign's events are POSTed, or null; its "
                                    "webhook_secret is write-only and never shown (GET .../webhook: the "
                                    "delivery state)")


class WebhookState(Shape):
    """GET /campaigns/{id}/webhook: how far the campaign's webhook got through its events."""

    url: str | None = Field(description="the campaign's webhook_url, or null when it has none")
    delivered_through: int = Field(ge=0, description="every event id up to this one was delivered (or given "
                                   "up as dead); 0: none yet")
    pending: int = Field(ge=0, description="events after delivered_through, waiting to be delivered")
    dead: int = Field(ge=0, description="events given up after failing for the whole retry period "
                      "([webhooks] retry_for, 24 h by default)")
    last_error: str | None = Field(description="why the last failed try failed (an HTTP status, a timeout, a "
                                   "refused address ...), or null; kept after a success")
    last_attempt_at: datetime | None = Field(description="when the last delivery was tried, or null")
    next_attempt_at: datetime | None = Field(description="when the event at the head is tried again after a "
                                             "failure, or null (nothing is waiting on a retry)")


class CreatedCampaign(Campaign):
    """The answer to create: the campaign with its full import report (problems included)."""

    # Not a subclass of ImportSummary (the problems come before problems_truncated), hence the ignore.
    import_: ImportReport = Field(  # type: ignore[assignment]
        serialization_alias="import", validation_alias=AliasChoices("import", "import_"))


class ContactsAppended(Shape):
    """The answer to POST /campaigns/{id}/contacts: what the append did, and the campaign's counts after it."""

    campaign_id: str
    status: CampaignStatusName = Field(description="the campaign's status (a running one dials the new "
                                       "contacts at once)")
    import_: ImportReport = Field(serialization_alias="import", validation_alias=AliasChoices("import", "import_"),
                                  description="the appended file's report, by the create's rules: contacts "
                                  "counts the contacts added, duplicates the valid rows whose number was in the "
                                  "campaign or earlier in the file; the rejected rows are listed here only")
    contacts: ContactCounts = Field(description="the campaign's contacts per status, the new ones included")


class CampaignList(Shape):
    """A page of campaigns, newest first."""

    campaigns: list[Campaign]
    total: Count
    limit: int = Field(ge=1, le=MAX_PAGE)
    offset: Count


# ---- contact --------------------------------------------------------------------------------------------


AttemptOutcome = Annotated[str, WithJsonSchema({
    "type": "string", "enum": ["completed", "not_dialled", *(r.value for r in FailureReason)],
    "description": "completed (answered), the failure reason, or not_dialled (given back before reaching the "
    "PBX); null while the call is in flight"})]


AnsweredByName = Annotated[str, WithJsonSchema({"type": "string", "enum": [a.value for a in AnsweredBy]})]
ANSWERED_BY_DESCRIPTION = ("who answered: human or machine (answering-machine detection's verdict), unknown when "
                           "AMD was unsure or off; null when nobody answered")
AMD_CAUSE_DESCRIPTION = "Asterisk's raw AMDCAUSE (e.g. HUMAN-800-800, LONGGREETING-1500-1500); null without AMD"


class AttemptRecord(Shape):
    """One attempt of a contact (one channel), as the store recorded it."""

    model_config = ConfigDict(from_attributes=True)

    attempt: int = Field(ge=1, description="1 for the first attempt", validation_alias=AliasChoices("attempt", "number"))
    channel_id: str
    state: str = Field(description="dialing, originated, answered, ended or not_dialled")
    started_at: Timestamp = Field(description="when the attempt was written, just before the originate request",
                                  validation_alias=AliasChoices("started_at", "created_at"))
    answered_at: Timestamp | None
    ended_at: Timestamp | None
    outcome: AttemptOutcome | None
    failure_reason: str | None = Field(description=f"one of {', '.join(r.value for r in FailureReason)}; null "
                                       "when answered or in flight", validation_alias=AliasChoices("failure_reason", "reason"))
    cause: int | None = Field(description="Q.850 hangup cause")
    sip_code: int | None = Field(description="SIP status, when known")
    talk_seconds: float | None
    caller_id: str | None = Field(description="the caller id the attempt went out with (one "
                                  "number of the campaign's caller_id pool); null: none (the PBX decided)")
    answered_by: AnsweredByName | None = Field(description=ANSWERED_BY_DESCRIPTION)
    amd_cause: str | None = Field(description=AMD_CAUSE_DESCRIPTION)


class Contact(Shape):
    """One contact of a campaign: its number, its status and its last attempt's outcome."""

    # Read from the store's row by attribute: phone_e164 and fields are the row's names for two keys.
    model_config = ConfigDict(from_attributes=True)

    id: int = Field(ge=1)
    campaign_id: str
    phone_number: str = Field(pattern=r"^\+[1-9][0-9]{1,14}$", description="E.164",
                              validation_alias=AliasChoices("phone_number", "phone_e164"))
    raw_number: str = Field(description="the phone cell as written in the CSV")
    line: int = Field(ge=1, description="CSV line the contact came from")
    status: ContactStatusName
    attempts: Count
    last_attempt_at: Timestamp | None
    next_attempt_at: Timestamp | None
    failure_reason: str | None = Field(description=f"one of {', '.join(r.value for r in FailureReason)}")
    reason: str | None = Field(description="why a skipped contact was not dialled: "
                               f"{', '.join(r.value for r in SkipReason)}; null otherwise")
    hangup_cause: int | None = Field(description="Q.850 cause of the last attempt")
    sip_code: int | None = Field(description="SIP status of the last attempt")
    custom_fields: dict[str, str] = Field(validation_alias=AliasChoices("custom_fields", "fields"))
    updated_at: Timestamp | None
    timezone: str | None = Field(description="the zone or zones (comma-separated, e.g. "
                                 "'America/Chicago,America/Denver') its calling hours are read in; with several, "
                                 "it is called only while the window is open in every one; null: none")
    timezone_source: str | None = Field(description="where the zones came from: column (the CSV's timezone), "
                                        f"number, campaign or default; null: none. One of "
                                        f"{', '.join(z.value for z in TimezoneSource)}")
    next_eligible_at: Timestamp | None = Field(description="while pending and held back: when it may be called "
                                               "next (null: not held, or no time known); null otherwise")
    blocked_reason: str | None = Field(description="while pending and held back: why, one of "
                                       f"{', '.join(sorted(r.value for r in PER_CONTACT))}; null otherwise")
    answered_by: AnsweredByName | None = Field(description=ANSWERED_BY_DESCRIPTION + " (its last attempt)")
    amd_cause: str | None = Field(description=AMD_CAUSE_DESCRIPTION + " (its last attempt)")
    attempt_history: list[AttemptRecord] = Field(ABSENT, description="every attempt, oldest first (only with "
                                                 "include=attempt_history)")


class ContactList(Shape):
    """A page of contacts, in CSV order."""

    contacts: list[Contact]
    total: Count
    limit: int = Field(ge=1, le=MAX_PAGE)
    offset: Count
    next_offset: Count | None = Field(description="offset of the next page; null on the last page and when "
                                      "paging by after_id")
    next_after_id: Count | None = Field(description="after_id of the next page; null on the last page")
    page: Count = Field(ABSENT, description="the page asked for (only when paging by page)")
    next_page: Count | None = Field(ABSENT, description="the next page; null on the last page (only when paging "
                                    "by page)")


# ---- suppression list ------------------------------------------------------------------------------------

SuppressionSourceName = Annotated[str, WithJsonSchema({
    "type": "string", "enum": [s.value for s in SuppressionSource],
    "description": "api: added with JSON numbers; import: from a CSV file; opt_out: the callee opted out during "
    "a call (DIALERD_OPT_OUT=1 at hangup)"})]
E164 = Annotated[str, Field(pattern=r"^\+[1-9][0-9]{1,14}$", description="E.164")]


class Suppression(Shape):
    """One number of the tenant's suppression list (do-not-call): never dialled by its campaigns."""

    model_config = ConfigDict(from_attributes=True)

    number: E164
    reason: str
    source: SuppressionSourceName
    created_at: Timestamp


class SuppressionList(Shape):
    """A page of the tenant's suppression list, newest first."""

    suppressions: list[Suppression]
    total: Count
    limit: int = Field(ge=1, le=MAX_PAGE)
    offset: Count
    next_offset: Count | None = Field(description="offset of the next page; null on the last page")


class SuppressionReject(Shape):
    """One input that is not a dialable number (nothing is added for it)."""

    input: str = Field(max_length=100, description="the value as sent")
    reason: str
    code: RowCode
    index: Count = Field(ABSENT, description="JSON: its index in numbers")
    line: int = Field(ABSENT, ge=1, description="CSV: its physical line (the header is line 1)")


class SuppressionsAdded(Shape):
    """What POST /suppressions did."""

    added: Count = Field(description="numbers newly on the list")
    already: Count = Field(description="numbers that were on the list already (kept as they were)")
    duplicates: Count = Field(description="inputs repeating an earlier number of the same request")
    rejected: list[SuppressionReject] = Field(description="the inputs that are not dialable numbers (the first "
                                              "1000)")
    rejected_total: Count


# ---- the tenant's call limits (GET /api/v1/call-limits) ---------------------------------------------------


class CallLimitsLimits(Shape):
    """The tenant's limits as its operator set them (``dialerd tenants set``); 0 is no limit."""

    concurrent_max: int = Field(ge=1, description="calls in flight at once across the tenant's campaigns")
    calls_per_minute: int = Field(ge=1, description="originations per minute across the tenant's campaigns")
    daily_calls_max: Count = Field(description="attempts started per calendar day in timezone (0: no limit)")
    daily_minutes_max: Count = Field(description="answered talk minutes per calendar day in timezone, counted "
                                     "as calls end (0: no limit)")
    max_attempts_per_number: Count = Field(description="attempts to one number in frequency_window_hours, "
                                           "across the tenant's campaigns (0: no limit)")
    frequency_window_hours: Count = Field(description="the window of max_attempts_per_number (0: no limit)")
    timezone: str = Field(description="IANA zone of the daily caps' calendar day (UTC when unset)",
                          examples=["America/New_York"])


class CallLimitsUsage(Shape):
    """The tenant's usage now."""

    in_flight: Count = Field(description="calls in flight now (slots held)")
    calls_last_minute: Count = Field(description="attempts started in the last 60 s")
    calls_today: Count = Field(description="attempts started today (the tenant's calendar day): what "
                               "daily_calls_max counts; an attempt counts for the day it started in")
    minutes_today: float = Field(ge=0, description="answered talk minutes of today's attempts that have ended: "
                                 "what daily_minutes_max counts (2 decimals)")


class CallLimits(Shape):
    """GET /api/v1/call-limits: the caller's tenant limits and live usage."""

    limits: CallLimitsLimits
    usage: CallLimitsUsage


# ---- explain ------------------------------------------------------------------------------------------

BlockReasonName = Annotated[str, WithJsonSchema({
    "type": "string", "enum": [r.value for r in BlockReason],
    "description": "campaign-wide: paused, scheduled, pbx_disconnected, daily_calls_max, daily_minutes_max "
    "(they stop it), tenant_concurrency, campaign_concurrency, tenant_rate (they throttle it); per contact: "
    "outside_calling_hours, no_timezone, retry_delay, frequency_cap; no_pending_contacts: nothing is left"})]


class Blocker(Shape):
    """One reason the campaign dials less than it could, or not at all."""

    reason: BlockReasonName
    contacts: Count = Field(ABSENT, description="the pending contacts it holds back (per-contact reasons "
                            "only; a campaign-wide reason holds back every one)")
    next_at: Timestamp | None = Field(description="when it lifts, where known (scheduled: the scheduled start; "
                                      "retry_delay: the earliest retry; tenant_rate: the next start); null "
                                      "otherwise")
    detail: dict[str, Any] = Field(description="its figures, e.g. {\"max_concurrent_calls\": 2, "
                                   "\"in_flight\": 2}")


class Explanation(Shape):
    """GET /campaigns/{id}/explain: why the campaign is (not) dialling now."""

    campaign_id: str
    status: CampaignStatusName
    dialling: bool = Field(description="it places calls now: running, nothing stops it, and it has a call up "
                           "or a contact it may dial at once")
    pending: Count = Field(description="pending contacts (those being dialled excluded)")
    eligible_now: Count = Field(description="pending contacts no per-contact reason holds back")
    blocked_by: list[Blocker] = Field(description="no_pending_contacts first when nothing is pending; then "
                                      "the campaign-wide reasons (those that stop it, then those that throttle "
                                      "it); then the per-contact reasons, most contacts first")


# ---- error, health, the event stream --------------------------------------------------------------------


class Error(Shape):
    error: str = Field(description="what is wrong, for humans")
    error_id: str = Field(description="stable machine code, e.g. invalid_field", examples=["invalid_field"])
    details: dict[str, Any] = Field(description="context such as the offending field or parameter")


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", json_schema_extra=_tidy)


class HealthDatabase(_Open):
    ok: bool
    schema_version: int
    listening: bool | None = Field(default=None, description="PostgreSQL: whether the daemon LISTENs for the "
                                   "other daemons' events (its SSE streams wait for them while not); absent on SQLite")


class HealthPbx(_Open):
    driver: str
    connected: bool
    dialling_held: Literal["pbx_down", "ari_app_replaced"] | None = Field(
        description="why no call is originated now (null: dialling is possible)")
    last_error: str | None = Field(description="what is wrong with the PBX connection, e.g. 'ARI 401: check "
                                   "DIALERD_ARI_PASSWORD and ari.conf' (null while all is well)")


class HealthNode(_Open):
    """One daemon of the cluster, as its row in the database says."""

    node_id: str
    pbx: str = Field(description="the PBX it drives (its ARI URL; no credentials)")
    state: Literal["up", "stopped", "taken", "gone"] = Field(
        description="up; stopped (a clean stop); taken (its heartbeat lapsed and another daemon is reconciling "
                    "its calls); gone (taken, and all its calls reconciled)")
    alive: bool = Field(description="its heartbeat is recent (within [cluster] lapse)")
    epoch: int = Field(ge=1, description="raised at each start; claims under an older one are refused")
    held_reason: str | None = Field(description="why it is not dialling (e.g. pbx_down); null: it can dial")
    calls_in_flight: Count
    heartbeat_at: str = Field(description="RFC 3339 time of its last heartbeat")


class HealthCluster(_Open):
    """Several daemons on one PostgreSQL database: this one and all of them."""

    node_id: str = Field(description="this daemon's id ([cluster] node_id)")
    epoch: int | None = Field(description="this daemon's epoch (null before it has joined)")
    nodes: list[HealthNode]


class Health(_Open):
    """GET /health. Open: a newer daemon may add keys."""

    status: Literal["ok", "degraded", "error"]
    version: str
    database: HealthDatabase
    pbx: HealthPbx
    calls_in_flight: Count
    sse_subscribers: Count
    cluster: HealthCluster = Field(ABSENT, description="on PostgreSQL: the daemons sharing the database")


class StreamEvent(Shape):
    """One message of the Server-Sent Events stream (text/event-stream, not JSON)."""

    event: EventName = Field(ABSENT)
    data: str = Field(description="a JSON object")
    id: str = Field(ABSENT, pattern="^[0-9]+$", description="the event id; a snapshot repeats the last one")
    retry: int = Field(ABSENT, ge=0)


# Every object of the API, by its name in the document's components.schemas.
MODELS: tuple[type[BaseModel], ...] = (
    Error, RowProblem, ImportSummary, ImportPage, ImportReport, Campaign, CreatedCampaign, CampaignList,
    AttemptRecord, Contact, ContactList, Explanation, StreamEvent, Health, Suppression, SuppressionList,
    SuppressionReject, SuppressionsAdded, CallLimits, ContactsAppended, WebhookState,
)
