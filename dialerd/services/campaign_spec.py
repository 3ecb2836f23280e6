"""The create form's fields, declared once: each field's name, type, bounds, default and description.

``CampaignSpec`` is a validated create request. The rest follows from this module: ``api/forms.py``
reads a multipart or JSON create, and a PATCH, field by field from it; the OpenAPI document takes the
create and PATCH schemas from ``CampaignSpec.model_json_schema()``; the campaign object of the answers
(``api/schemas.py``) reuses the field types; the client's models are generated from those. Adding a form
field is one field here (and its name in ``EDITABLE`` if PATCH may change it), plus what it does.

Pydantic (v2, already installed with SQLModel) because one annotation then carries the type and the
bounds the parser enforces *and* the JSON Schema the document shows; a table of tuples would need a
second renderer for the schema. The form's own error messages stay: every field is read by a
``before`` validator (``Form.read``) that raises ``InvalidInput`` naming the field, which pydantic lets
through unchanged, in field order: the first bad field in ``CampaignSpec``'s order is the one reported.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import phonenumbers
from annotated_types import Ge, Le
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from dialerd.domain.amd import SOUND_MAX, AmdMode, OnMachine, parse_mode
from dialerd.domain.call import Destination
from dialerd.domain.caller_id import STRATEGIES as CALLER_ID_STRATEGIES
from dialerd.domain.caller_id import CallerIdPool
from dialerd.domain.hours import CallingHours
from dialerd.domain.retry_rules import MAX_DELAY, MAX_RETRIES, MIN_DELAY, RULE_REASONS, RetryRules
from dialerd.domain.rules import FieldError
from dialerd.domain.webhooks import SECRET_MAX, SECRET_MIN, URL_MAX, WebhookUrl, check_secret
from dialerd.domain.zones import check_timezone
from dialerd.errors import InvalidInput
from dialerd.services.csv_text import text_codec
from dialerd.settings import Settings
from dialerd.timestamps import utcnow

MAX_INT_CHARS = 12  # parse_int refuses longer digit strings (and so the OpenAPI bounds of query integers)
NAME_MAX = 200  # the stored columns' widths
CALLER_ID_MAX = 1000  # the whole pool (migration 0010 widened the column); each entry at most 80
DESTINATION_MAX = 200
RETRY_RULES_MAX = 400  # five reasons at most, each at most 'congestion=10@604800'


def bad(field: str, message: str) -> InvalidInput:
    return InvalidInput(f"{field}: {message}", error_id="invalid_field", field=field)


def parse_int(field: str, raw: str | None, default: int, lo: int, hi: int | None) -> int:
    if raw is None or raw.strip() == "":
        return default
    text = raw.strip()
    # isascii: str.isdigit() also accepts digits like "²" that int() refuses.
    if not text.isascii() or not (text.isdigit() or (text.startswith("-") and text[1:].isdigit())) or (
        len(text) > MAX_INT_CHARS
    ):
        raise bad(field, f"must be an integer, got {raw[:40]!r}")
    value = int(text)
    if value < lo or (hi is not None and value > hi):
        raise bad(field, f"must be between {lo} and {hi}, got {value}" if hi is not None else f"must be >= {lo}, got {value}")
    return value


def parse_time(field: str, raw: str) -> datetime:
    text = raw.strip()
    try:
        # RFC 3339 requires the date, a 'T' (or space) and an offset; fromisoformat accepts 'Z' on 3.11.
        if len(text) < 20 or text[10] not in "Tt ":
            raise ValueError
        value = datetime.fromisoformat(text.replace("t", "T").replace("z", "Z"))
    except (ValueError, IndexError):
        raise bad(field, f"must be an RFC 3339 timestamp like 2030-01-31T09:00:00Z, got {raw[:60]!r}") from None
    if value.tzinfo is None:
        raise bad(field, "needs a UTC offset (Z or +hh:mm)")
    try:
        return value.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-01:00 is past year 9999 in UTC
        raise bad(field, f"is out of range, got {raw[:60]!r}") from None


# ---- how each kind of field is read: (field name, raw text or '', the default) -> value --------------


def read_name(field: str, raw: str, default: Any) -> str:
    name = raw.strip()
    if not name:
        raise bad(field, "is required")
    if len(name) > NAME_MAX or any(ord(ch) < 32 for ch in name):
        raise bad(field, f"must be 1-{NAME_MAX} printable characters")
    return name


def read_caller_id(field: str, raw: str, default: Any) -> str:
    """A pool of caller ids separated by ',' (``CallerIdPool.parse``), in its canonical text (entries trimmed)."""
    caller_id = str(raw or default).strip()
    if len(caller_id) > CALLER_ID_MAX:
        raise bad(field, f"must be at most {CALLER_ID_MAX} characters")
    try:
        return str(CallerIdPool.parse(caller_id))
    except ValueError as exc:
        raise bad(field, str(exc)) from None


def read_caller_id_strategy(field: str, raw: str, default: Any) -> str:
    strategy = (raw.strip() or str(default)).lower()
    if strategy not in CALLER_ID_STRATEGIES:
        raise bad(field, f"must be one of {', '.join(CALLER_ID_STRATEGIES)}, got {raw[:40]!r}")
    return strategy


def read_destination(field: str, raw: str, default: Any) -> Destination:
    try:
        destination = Destination.parse(raw or default)
    except ValueError as exc:
        raise bad(field, str(exc)) from None
    # Stasis arguments are free text: bound them to the stored column and keep control characters out.
    if len(str(destination)) > DESTINATION_MAX or any(ord(ch) < 32 for ch in str(destination)):
        raise bad(field, f"must be at most {DESTINATION_MAX} printable characters")
    return destination


def read_region(field: str, raw: str, default: Any) -> str:
    region = str(raw or default).strip().upper()
    if region and region not in phonenumbers.SUPPORTED_REGIONS:
        raise bad(field, f"{region!r} is not an ISO 3166 country code phonenumbers knows (e.g. US, GB, DE)")
    return region


def read_future_time(field: str, raw: str, default: Any) -> datetime | None:
    if not raw.strip():
        return None
    value = parse_time(field, raw)
    if value <= utcnow():
        raise bad(field, "is in the past")
    return value


def read_phone_column(field: str, raw: str, default: Any) -> str | None:
    column = raw.strip() or None
    if column is not None and (len(column) > NAME_MAX or any(ord(ch) < 32 for ch in column)):
        raise bad(field, f"must be a header of the contacts file, at most {NAME_MAX} printable characters")
    return column


def read_encoding(field: str, raw: str, default: Any) -> str | None:
    encoding = raw.strip() or None
    return None if encoding is None else text_codec(encoding)  # 400 naming the field for an unknown name


def read_retry_rules(field: str, raw: str, default: Any) -> RetryRules:
    if len(raw) > RETRY_RULES_MAX:
        raise bad(field, f"must be at most {RETRY_RULES_MAX} characters")
    try:
        return RetryRules.parse(raw, field=field)
    except FieldError as exc:
        raise bad(field, exc.problem) from None


def read_calling_hours(field: str, raw: str, default: Any) -> str:
    """The canonical text of the hours given (``CallingHours.parse``), else of the configured default."""
    text = raw if raw.strip() else str(default or "")
    try:
        return str(CallingHours.parse(text, field=field))
    except FieldError as exc:
        raise bad(exc.field, exc.problem) from None


def read_timezone(field: str, raw: str, default: Any) -> str | None:
    """An IANA zone name in the tz database's spelling; empty: none."""
    try:
        return check_timezone(raw, field=field)
    except FieldError as exc:
        raise bad(exc.field, exc.problem) from None


def read_amd(field: str, raw: str, default: Any) -> AmdMode:
    try:
        return parse_mode(raw)
    except ValueError as exc:
        raise bad(field, str(exc)) from None


def read_on_machine(field: str, raw: str, default: Any) -> OnMachine:
    try:
        return OnMachine.parse(raw)
    except ValueError as exc:
        raise bad(field, str(exc)) from None


def read_webhook_url(field: str, raw: str, default: Any) -> str | None:
    """An http(s) URL (domain/webhooks.py); empty: no webhook. Whether its addresses are acceptable is
    decided when it is resolved (services/webhooks.py: at create and PATCH, and before each delivery)."""
    if not raw.strip():
        return None
    try:
        return WebhookUrl.parse(raw).text
    except ValueError as exc:
        raise bad(field, str(exc)) from None


def read_webhook_secret(field: str, raw: str, default: Any) -> str | None:
    """The key that signs each delivery; empty: none (refused beside a webhook_url, see CampaignSpec)."""
    if raw == "":
        return None
    try:
        return check_secret(raw)
    except ValueError as exc:
        raise bad(field, str(exc)) from None


def read_int(field: str, raw: str, default: Any) -> int:
    lo, hi = int_bounds(CampaignSpec.model_fields[field])
    return parse_int(field, raw, int(default), lo, hi)


Reader = Callable[[str, str, Any], Any]


@dataclass(frozen=True)
class Form:
    """How a form field is read, beside its type and bounds (``Field``): the form-only facts of a field."""

    read: Reader
    alias: str | None = None  # the reference API's name for the same field: give one of the two
    setting: str | None = None  # the default is this setting (dialerd.settings), not the field's default
    unset: str | None = None  # what an empty setting means, for the description ("none (the PBX decides)")
    json: str | None = None  # set: a JSON create refuses the field, for this reason


# Text that is no ASCII control character; the name also needs one visible character.
NAME_PATTERN = r"^[^\x00-\x1f]*[^\x00-\x20][^\x00-\x1f]*$"
PRINTABLE_PATTERN = r"^[^\x00-\x1f]*$"
CALLER_ID_PATTERN = r"^[^\x00-\x1f;\\]*$"
# Destination.parse as a pattern, for the document (and the tools that generate requests from it).
_TOKEN = r"[A-Za-z0-9_+.*#-]{1,80}"
DESTINATION_PATTERN = (
    rf"^(?:[Ss][Tt][Aa][Ss][Ii][Ss]:{_TOKEN}(?:,[^,\x00-\x1f]*)*|{_TOKEN},{_TOKEN}(?:,[1-9][0-9]{{0,5}})?)$"
)
DESTINATION_SCHEMA = {"type": "string", "maxLength": DESTINATION_MAX, "pattern": DESTINATION_PATTERN,
                      "example": "dialerd-demo,s,1"}
# One REASON=RETRIES@DELAY entry with RETRIES 0-10 and DELAY 60-604800 (the parser also takes any case and
# refuses a reason given twice, which a pattern cannot say).
_RULE = (rf"(?:{'|'.join(RULE_REASONS)}) *= *(?:[0-9]|10) *@ *"
         r"(?:[6-9][0-9]|[1-9][0-9]{2,4}|[1-5][0-9]{5}|60[0-3][0-9]{3}|604[0-7][0-9]{2}|604800)")
RETRY_RULES_PATTERN = rf"^(?: *{_RULE} *(?:; *{_RULE} *){{0,{len(RULE_REASONS) - 1}}})?$"
ON_MACHINE_PATTERN = (r"^(?:[Hh][Aa][Nn][Gg][Uu][Pp]|[Cc][Oo][Nn][Nn][Ee][Cc][Tt]|"
                      r"[Vv][Oo][Ii][Cc][Ee][Mm][Aa][Ii][Ll]:[A-Za-z0-9_-]+(?:/[A-Za-z0-9_-]+)*)?$")
ON_MACHINE_SCHEMA = {"type": "string", "maxLength": SOUND_MAX + len("voicemail:"), "pattern": ON_MACHINE_PATTERN,
                     "example": "voicemail:beep"}
TIME_IN_SCHEMA = {"type": "string", "format": "date-time", "example": "2030-01-31T09:00:00Z"}

Name = Annotated[str, Field(min_length=1, max_length=NAME_MAX, pattern=NAME_PATTERN,
                            description=f"1-{NAME_MAX} characters (surrounding spaces trimmed), no control characters")]
CallerId = Annotated[str, Field(max_length=CALLER_ID_MAX, pattern=CALLER_ID_PATTERN,
                                description="caller id the campaign dials from, or a pool of them separated by "
                                "',' (each at most 80 characters; a ',' inside double quotes does not "
                                "separate; the same entry twice is refused); caller_id_strategy picks one "
                                "per call")]
MaxConcurrentCalls = Annotated[int, Field(ge=1, le=100, description="calls of this campaign up at once")]
RetriesPerContact = Annotated[int, Field(ge=0, le=5, description="further attempts after a failed one")]
RetryDelaySeconds = Annotated[int, Field(ge=60, le=7 * 86400, description="seconds between attempts")]
RingTimeoutSeconds = Annotated[int, Field(ge=5, le=300, description="seconds a call may ring before it counts "
                                          "as no answer")]
CallingHoursText = Annotated[str, Field(
    max_length=2000, pattern=PRINTABLE_PATTERN, examples=["mon-fri 09:00-20:00; sat 10:00-14:00"],
    description="when contacts may be called, on each recipient's own clock: entries separated by ';', each "
    "'DAYS HH:MM-HH:MM' with DAYS daily, mon..sun or a range like mon-fri, 24 h times, the end after the start "
    "(24:00 allowed as an end); a contact with several zones is called only while it is open in every one; "
    "'' (an empty value) takes the configured default; the campaign shows the canonical form, '' = any time")]
CALLER_ID_STRATEGY_DESCRIPTION = (
    "how each call's caller id is taken from the caller_id pool: round_robin (in turn; the rotation restarts "
    "with the daemon) or local_presence (the pool number of the contact's country sharing the longest "
    "leading run of national digits with it, i.e. its area code or more; else round robin)")
TIMEZONE_DESCRIPTION = ("IANA time zone name (any case): the zone of contacts whose zone neither the CSV's "
                        "timezone column nor their number gives (else the configured default_timezone); an "
                        "unknown name is refused (400)")


class CampaignSpec(BaseModel):
    """A validated create request (the form fields), in the order they are checked."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    name: Annotated[Name, Form(read_name)]
    caller_id: Annotated[CallerId, Form(read_caller_id, alias="phone_number_id",
                                        setting="dialer_default_caller_id", unset="none (the PBX decides)")]
    destination: Annotated[
        Destination,
        PlainSerializer(str),
        WithJsonSchema({**DESTINATION_SCHEMA, "description": "where an answered call goes: "
                        "CONTEXT,EXTENSION[,PRIORITY] in the dialplan, or stasis:APP[,ARGS...]"}),
        Form(read_destination, alias="agent_id", setting="dialer_default_destination"),
    ]
    default_region: Annotated[
        str,
        WithJsonSchema({"type": "string", "enum": sorted(phonenumbers.SUPPORTED_REGIONS),
                        "description": "ISO 3166 country for numbers written in national format "
                        "(case-insensitive)"}),
        Form(read_region, setting="dialer_default_region", unset="none (numbers must be international)"),
    ]
    scheduled_at: Annotated[
        datetime | None,
        WithJsonSchema({**TIME_IN_SCHEMA, "description": "RFC 3339 time with an offset, in the future; the "
                        "campaign is 'scheduled' and starts by itself then"}),
        Form(read_future_time),
    ] = None
    phone_column: Annotated[
        str | None,
        WithJsonSchema({"type": "string", "maxLength": NAME_MAX, "pattern": PRINTABLE_PATTERN,
                        "description": "the header of the column to take the numbers from (exact, else "
                        "compared like the recognised names); default: every recognised phone column, the "
                        "first non-empty dialable one per row; a name that is not a header is refused (400) "
                        "naming the headers found"}),
        Form(read_phone_column),
    ] = None  # None: the recognised phone columns
    encoding: Annotated[
        str | None,
        WithJsonSchema({"type": "string", "maxLength": 40, "example": "cp1252",
                        "description": "the file's text encoding, any Python codec name (utf-8, cp1252, "
                        "latin-1, utf-16, ...); default: from the byte-order mark, else UTF-8, else detected "
                        "(400 csv_encoding_unknown when detection is not confident)"}),
        Form(read_encoding, json="applies to an uploaded CSV file; a JSON body and its contacts are always UTF-8"),
    ] = None  # None: BOM, UTF-8 or detection
    max_concurrent_calls: Annotated[MaxConcurrentCalls, Form(read_int)] = 5
    retries_per_contact: Annotated[RetriesPerContact, Form(read_int)] = 0
    retry_delay_seconds: Annotated[RetryDelaySeconds, Form(read_int)] = 300
    retry_rules: Annotated[
        RetryRules,
        PlainSerializer(str),
        WithJsonSchema({"type": "string", "maxLength": RETRY_RULES_MAX, "pattern": RETRY_RULES_PATTERN,
                        "example": "busy=3@120; no_answer=2@3600; congestion=5@60",
                        "description": "outcome rules for retries: REASON=RETRIES@DELAY entries separated by "
                        f"';', REASON one of {', '.join(RULE_REASONS)} (each at most once), RETRIES "
                        f"0-{MAX_RETRIES}, DELAY {MIN_DELAY}-{MAX_DELAY} seconds. One budget per contact: an "
                        "attempt that failed with REASON is retried only while the contact's retries so far "
                        "(of any reason) are fewer than REASON's RETRIES. A reason not listed uses "
                        "retries_per_contact and retry_delay_seconds; empty: no rules"}),
        Form(read_retry_rules),
    ] = RetryRules()
    ring_timeout_seconds: Annotated[RingTimeoutSeconds, Form(read_int,
                                                             setting="dialer_ring_timeout")]
    calling_hours: Annotated[
        CallingHoursText,
        Form(read_calling_hours, setting="compliance_calling_hours", unset="any time"),
    ]
    timezone: Annotated[
        str | None,
        WithJsonSchema({"type": "string", "maxLength": 64, "example": "America/New_York",
                        "description": TIMEZONE_DESCRIPTION}),
        Form(read_timezone),
    ] = None  # None: contacts whose zone neither the CSV nor the number gives take the configured default
    caller_id_strategy: Annotated[
        str,
        WithJsonSchema({"type": "string", "enum": list(CALLER_ID_STRATEGIES), "default": "round_robin",
                        "description": CALLER_ID_STRATEGY_DESCRIPTION}),
        Form(read_caller_id_strategy),
    ] = "round_robin"
    amd: Annotated[
        AmdMode,
        PlainSerializer(str),
        WithJsonSchema({"type": "string", "enum": [m.value for m in AmdMode], "default": "off",
                        "description": "answering-machine detection: on runs Asterisk's AMD() on every answered "
                        "call (through the [dialerd-amd] context) before it goes to the destination"}),
        Form(read_amd),
    ] = AmdMode.OFF
    on_machine: Annotated[
        OnMachine,
        PlainSerializer(str),
        WithJsonSchema({**ON_MACHINE_SCHEMA, "default": "hangup",
                        "description": "with amd on, what a machine's answer gets: hangup (the attempt fails "
                        "with the retryable reason machine), voicemail:SOUND (wait for the greeting to end, play "
                        "the Asterisk sound SOUND, hang up; completed) or connect (routed to the destination "
                        "like a person; completed)"}),
        Form(read_on_machine),
    ] = OnMachine()
    webhook_url: Annotated[
        str | None,
        WithJsonSchema({"type": "string", "maxLength": URL_MAX, "format": "uri",
                        "example": "https://hooks.example.com/dialerd",
                        "description": "http(s) URL every event of the campaign is POSTed to (the SSE data as "
                        "JSON, signed with webhook_secret; docs/webhooks.md); loopback, link-local and private "
                        "addresses are refused unless the daemon's [webhooks] allow_private is set; empty: "
                        "none. Requires webhook_secret"}),
        Form(read_webhook_url),
    ] = None
    webhook_secret: Annotated[
        str | None,
        WithJsonSchema({"type": "string", "minLength": SECRET_MIN, "maxLength": SECRET_MAX, "writeOnly": True,
                        "description": "the key of each delivery's Dialerd-Signature (HMAC-SHA256); "
                        "write-only: never returned or logged"}),
        Form(read_webhook_secret),
    ] = None

    @field_validator("*", mode="before")
    @classmethod
    def _read(cls, raw: Any, info: ValidationInfo) -> Any:
        """Each field by its ``Form.read``; ``read`` names the field in its InvalidInput, which passes through."""
        if not isinstance(raw, str):
            raise TypeError(f"{info.field_name}: read_form gives text, got {type(raw).__name__}")
        settings = info.context["settings"] if info.context else None
        assert info.field_name is not None and isinstance(settings, Settings)
        return form_of(info.field_name).read(info.field_name, raw, default_of(info.field_name, settings))

    @model_validator(mode="after")
    def _webhook_pair(self) -> CampaignSpec:
        problem = webhook_pair_problem(self.webhook_url, self.webhook_secret)
        if problem is not None:
            raise bad(*problem)
        return self

    @classmethod
    def read_form(cls, values: Mapping[str, str], settings: Settings) -> CampaignSpec:
        """Validate the text fields of a create request; an absent field is read as ''."""
        try:
            return cls.model_validate({name: values.get(name, "") for name in cls.model_fields},
                                      context={"settings": settings})
        except ValidationError as exc:  # a bound the reader let through: still a 400 naming the field
            first = exc.errors()[0]
            field = str(first["loc"][0]) if first["loc"] else "form"
            raise bad(field, first["msg"]) from None


def webhook_pair_problem(url: str | None, secret: str | None) -> tuple[str, str] | None:
    """A webhook needs both its URL and its secret: (field, problem) when one comes without the other."""
    if url is not None and secret is None:
        return "webhook_secret", "required with webhook_url (each delivery is signed with it)"
    if secret is not None and url is None:
        return "webhook_url", "required with webhook_secret (a secret alone delivers nothing)"
    return None


# ---- what the parser and the document ask of the declaration ---------------------------------------------


def form_of(field: str) -> Form:
    return next(m for m in CampaignSpec.model_fields[field].metadata if isinstance(m, Form))


def default_of(field: str, settings: Settings) -> Any:
    """A field's default: its setting's value, else the declared default (None for a required field)."""
    form = form_of(field)
    if form.setting is not None:
        return getattr(settings, form.setting)
    info = CampaignSpec.model_fields[field]
    return None if info.is_required() else info.default


def int_bounds(info: FieldInfo) -> tuple[int, int | None]:
    lo = next(m.ge for m in info.metadata if isinstance(m, Ge))
    hi = next((m.le for m in info.metadata if isinstance(m, Le)), None)
    assert isinstance(lo, int) and (hi is None or isinstance(hi, int))
    return lo, hi


# What PATCH /campaigns/{id} may change, in the order its messages list them (test_campaign_spec checks
# that each is a field).
EDITABLE = ("name", "max_concurrent_calls", "retries_per_contact", "retry_delay_seconds", "ring_timeout_seconds",
            "caller_id", "destination", "retry_rules", "calling_hours", "timezone", "caller_id_strategy", "amd",
            "on_machine", "webhook_url", "webhook_secret")
FIELDS: tuple[str, ...] = tuple(CampaignSpec.model_fields)
INT_FIELDS: tuple[str, ...] = tuple(f for f, info in CampaignSpec.model_fields.items() if info.annotation is int)
ALIASES: dict[str, str] = {form_of(f).alias or "": f for f in FIELDS if form_of(f).alias}  # alias -> field
JSON_REFUSED: dict[str, str] = {f: form_of(f).json or "" for f in FIELDS if form_of(f).json}
