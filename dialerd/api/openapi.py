"""GET /api/v1/openapi.json: the OpenAPI 3.1 description of the HTTP API.

The data is derived, the prose is written here. ``components.schemas`` is the JSON Schema (2020-12) of
the answer models (``api/schemas.py``); the create and PATCH bodies are the JSON Schema of the create
form's declaration (``services/campaign_spec.py``), completed per request from the settings (the
configured defaults) and with the reference API's alias names. What stays hand-written is what only this
document says: the operations, their parameters, summaries, descriptions and error tables.
``tests/integration/test_openapi.py`` checks it against the router, the form parser and real answers, and
``test_schemathesis.py`` checks the live server against it.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterable
from typing import Any

from aiohttp import web
from pydantic.json_schema import models_json_schema

from dialerd import __version__
from dialerd.api import campaigns, dashboard, schemas
from dialerd.api.context import services
from dialerd.api.forms import APPEND_FIELDS, MAX_FIELD_BYTES
from dialerd.domain.campaign import VISIBLE, CampaignStatus
from dialerd.domain.contact import ContactStatus
from dialerd.domain.suppression import MAX_NUMBERS, MAX_REASON_CHARS
from dialerd.services import idempotency, results
from dialerd.services.campaign_spec import (
    ALIASES,
    EDITABLE,
    INT_FIELDS,
    JSON_REFUSED,
    MAX_INT_CHARS,
    CampaignSpec,
    default_of,
    form_of,
    int_bounds,
)
from dialerd.settings import Settings

routes = web.RouteTableDef()

Schema = dict[str, Any]

JSON = "application/json"
REF = "#/components/schemas/{model}"
MAX_QUERY_INT = 10**MAX_INT_CHARS - 1  # parse_int refuses longer digit strings
# The integer form fields and their (minimum, maximum, default) as the declaration states them;
# ring_timeout_seconds' default (None here) comes from the settings.
FORM_INTS: dict[str, tuple[int, int | None, int | None]] = {
    f: (*int_bounds(CampaignSpec.model_fields[f]), None if form_of(f).setting else CampaignSpec.model_fields[f].default)
    for f in INT_FIELDS
}


def _ref(name: str) -> Schema:
    return {"$ref": REF.format(model=name)}


def _enum(values: Iterable[CampaignStatus] | type[ContactStatus]) -> Schema:
    return {"type": "string", "enum": [v.value for v in values]}


def _int(minimum: int | None = 0, **kw: Any) -> Schema:
    out: Schema = {"type": "integer", **kw}
    if minimum is not None:
        out["minimum"] = minimum
    return out


# ---- schemas: derived from the declarations ------------------------------------------------------------


@functools.cache
def _derived() -> tuple[dict[str, Schema], dict[str, Schema]]:
    """The models' JSON Schemas (answers, create form): fixed for the code, so generated once (~9 ms)."""
    _, top = models_json_schema([(m, "serialization") for m in schemas.MODELS], ref_template=REF, by_alias=True)
    return top["$defs"], CampaignSpec.model_json_schema(mode="validation")["properties"]


def _schemas() -> dict[str, Schema]:
    """components.schemas: every answer model and the models inside them, by class name."""
    return copy.deepcopy(_derived()[0])


def _form_fields(settings: Settings) -> dict[str, Schema]:
    """The create form's text fields: CampaignSpec's JSON Schema, each alias beside its field, the configured
    defaults filled in."""
    declared = copy.deepcopy(_derived()[1])
    aliases = {field: alias for alias, field in ALIASES.items()}
    props: dict[str, Schema] = {}
    for field, schema in declared.items():
        schema = {k: v for k, v in schema.items() if k != "title"}
        form = form_of(field)
        if schema.get("default", 0) is None:
            del schema["default"]  # "absent": a form value is never null
        if form.setting is not None:
            value = default_of(field, settings)
            if value not in ("", None):
                schema["default"] = value
            if "description" in schema:
                schema["description"] += f"; default: {value or form.unset}"
        props[field] = schema
        if field in aliases:
            props[aliases[field]] = {**schema, "description": f"the reference API's name for {field}; give one of "
                                     "the two"}
    return props


def _required() -> list[str]:
    """The fields without a default, declared or configured (the name)."""
    return [f for f, info in CampaignSpec.model_fields.items() if info.is_required() and form_of(f).setting is None]


def _create_form(settings: Settings) -> Schema:
    props = _form_fields(settings)
    limit_mb = settings.upload_limit_bytes / (1024 * 1024)
    props["contacts"] = {
        "type": "string",
        "format": "binary",
        "description": f"CSV file, at most {settings.upload_limit_bytes} bytes ({limit_mb:g} MiB), in UTF-8, "
        "UTF-16 with a BOM or a Windows code page (see encoding); a header row with phone number columns "
        "(phone_number, phone, mobile, Phone 1 - Value, Mobile Phone, Telefon, ...); every other "
        "column becomes a custom field",
    }
    return {
        "type": "object",
        "required": [*_required(), "contacts"],
        "properties": props,
        "additionalProperties": False,
        # A field and its alias are the same field: one of the two at most.
        "allOf": [{"not": {"required": [field, alias]}} for alias, field in ALIASES.items()],
        "description": f"Text fields are UTF-8, at most {MAX_FIELD_BYTES} bytes each; an unknown or repeated "
        "field, or a field given together with its alias, is refused (400).",
    }


def _append_form(settings: Settings) -> Schema:
    """POST /campaigns/{id}/contacts: the contacts file, and the create's two fields on how to read it."""
    create = _create_form(settings)["properties"]
    return {
        "type": "object",
        "required": ["contacts"],
        "properties": {name: create[name] for name in ("contacts", *sorted(APPEND_FIELDS))},
        "additionalProperties": False,
        "description": f"Text fields are UTF-8, at most {MAX_FIELD_BYTES} bytes each; an unknown or repeated "
        "field is refused (400). The campaign's default_region, timezone and calling hours apply.",
    }


def _create_json(settings: Settings) -> Schema:
    """The JSON create body: the form's fields, and contacts as an array of objects instead of a CSV file."""
    form = _create_form(settings)
    cell = {"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}, {"type": "null"}]}
    contacts: Schema = {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["phone_number"],
            "properties": {"phone_number": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
            "additionalProperties": cell,
        },
        "description": "one object per contact: phone_number, and any other keys as its custom fields. They "
        "are imported exactly as a CSV with those columns would be (same rules, same report); contact i of the "
        "array is line i + 2 in the report. The body may be as large as the CSV upload limit.",
    }
    props = {k: v for k, v in form["properties"].items() if k not in JSON_REFUSED}
    return {**form, "properties": {**props, "contacts": contacts},
            "description": "The same fields as the multipart form (values as JSON strings, integers as numbers), "
            "with the contacts inline. An unknown field is refused (400)."}


def _edit(settings: Settings) -> Schema:
    """PATCH /campaigns/{id}: the editable fields, by the create rules."""
    form = _form_fields(settings)
    names = [*EDITABLE, *(alias for alias, field in ALIASES.items() if field in EDITABLE)]
    props = {name: {k: v for k, v in form[name].items() if k != "default"} for name in names}
    return {
        "type": "object",
        "properties": props,
        "minProperties": 1,
        "additionalProperties": False,
        "allOf": [{"not": {"required": [field, alias]}} for alias, field in ALIASES.items() if field in EDITABLE],
        "description": "Any of the fields, validated as at create; an unknown field (default_region, "
        "scheduled_at, ...) is refused (400).",
    }


# ---- parameters, responses, operations --------------------------------------------------------------


def _param(name: str, where: str, description: str, schema: Schema) -> Schema:
    return {"name": name, "in": where, "required": where == "path", "description": description, "schema": schema}


def _parameters() -> dict[str, Schema]:
    return {
        "CampaignId": _param(
            "id", "path", "campaign id", {"type": "string", "example": "cmp_4f9d2c6e0a1b3c5d7e9f"}
        ),
        "Offset": _param("offset", "query", "items to skip", _int(0, maximum=MAX_QUERY_INT, default=0)),
        "CampaignStatus": _param("status", "query", "only campaigns in this status", _enum(VISIBLE)),
        "ContactStatus": _param("status", "query", "only contacts in this status", _enum(ContactStatus)),
        "IdempotencyKey": _param(
            idempotency.HEADER, "header",
            "makes the request safe to retry: the same key (per tenant, for 24 hours) with the same request "
            "returns the first answer again (with Idempotent-Replayed: true) instead of acting twice; with a "
            "different request, 409 idempotency_key_reused; while the first is still running, 409 "
            "idempotency_key_in_progress (retry later; `Retry-After` says when). Only successful answers are kept: after an error the "
            "key may be used again.",
            {"type": "string", "minLength": 1, "maxLength": idempotency.MAX_KEY_LENGTH,
             "pattern": r"^[\x21-\x7e][\x20-\x7e]*$", "example": "3f1c0a8e-2b8b-4f6e-9a8c-2f1d6a1e0b7c"},
        ),
    }


def _limit(default: int) -> Schema:
    return _param("limit", "query", "page size", _int(1, maximum=schemas.MAX_PAGE, default=default))


def _error(description: str, example_id: str) -> Schema:
    example = {"error": description, "error_id": example_id, "details": {}}
    return {"description": description, "content": {JSON: {"schema": _ref("Error"), "example": example}}}


ERRORS = {
    400: ("BadRequest", "invalid input: a bad or unknown query parameter or form field", "invalid_field"),
    401: ("Unauthorized", "missing or invalid API key", "unauthorized"),
    404: ("NotFound", "no such campaign for this tenant", "campaign_not_found"),
    409: ("Conflict", "the campaign's status does not allow this", "invalid_transition"),
    413: ("PayloadTooLarge", "the contacts file is over the upload limit", "payload_too_large"),
    500: ("InternalError", "internal or database error; see the dialerd log", "internal_error"),
}


def _errors(*codes: int) -> dict[str, Schema]:
    return {str(code): {"$ref": f"#/components/responses/{ERRORS[code][0]}"} for code in codes}


def _ok(description: str, schema: str) -> Schema:
    return {"description": description, "content": {JSON: {"schema": _ref(schema)}}}


def _op(tag: str, op_id: str, summary: str, responses: dict[str, Schema], **extra: Any) -> Schema:
    return {"tags": [tag], "operationId": op_id, "summary": summary, **extra, "responses": responses}


def _public(op_id: str, summary: str, responses: dict[str, Schema]) -> Schema:
    return {"get": _op("system", op_id, summary, responses, security=[])}


REPLAYED = {idempotency.REPLAYED_HEADER: {
    "description": "'true' when this is the stored answer to an earlier request with the same Idempotency-Key",
    "schema": {"type": "string", "enum": ["true"]},
}}
IDEMPOTENCY_KEY = {"$ref": "#/components/parameters/IdempotencyKey"}


def _replayable(ok: Schema) -> Schema:
    return {**ok, "headers": REPLAYED}


def _action(verb: str, summary: str, description: str) -> Schema:
    responses = {"200": _replayable(_ok("the campaign after the action", "Campaign")),
                 **_errors(400, 401, 404, 409, 500)}
    return {
        "parameters": BY_ID,
        "post": _op("campaigns", f"{verb}Campaign", summary, responses, description=description,
                    parameters=[IDEMPOTENCY_KEY]),
    }


BY_ID: list[Schema] = [{"$ref": "#/components/parameters/CampaignId"}]
OFFSET = {"$ref": "#/components/parameters/Offset"}
AFTER_ID = _param(
    "after_id", "query", "keyset paging: the contacts after this contact id (the previous page's "
    "next_after_id); stays fast deep into big campaigns, where offset does not; not with offset",
    _int(0, maximum=MAX_QUERY_INT),
)
PAGE = _param(
    "page", "query", "the reference API's paging: 0-based pages of limit (default 100) contacts, i.e. offset = "
    "page * limit; not with offset or after_id", _int(0, maximum=10**9),
)
NAME_SEARCH = _param(
    "name", "query", "only campaigns whose name contains this text, in any case (% and _ match themselves); "
    "surrounding spaces are ignored, empty means no filter", {"type": "string", "maxLength": campaigns.NAME_SEARCH_MAX},
)
INCLUDE = _param(
    "include", "query", "comma-separated extras for each contact: attempt_history (its attempts, oldest first); "
    "any other value is refused (400)",
    {"type": "string", "pattern": rf"^(?:{'|'.join(campaigns.CONTACT_INCLUDES)})?(?:,(?:{'|'.join(campaigns.CONTACT_INCLUDES)}))*$"},
)
TEXT = {"type": "string"}
FORMAT = _param(
    "format", "query", "json (default) or csv: the results export, every contact (of status, if given) as one "
    "CSV download; without format, an Accept header naming text/csv (above application/json) asks for it too. "
    "The CSV takes no limit, offset, after_id, page or include", {"type": "string", "enum": list(campaigns.CONTACT_FORMATS)},
)
RESULTS_CSV = (
    "The results export (format=csv, or Accept: text/csv): a header line, then one line per contact in CSV "
    "order: " + ", ".join(results.RESULT_COLUMNS) + ", then each custom field of the campaign as its own column "
    "(custom.NAME for one named like a result column). reason is the failure reason, or why a skipped contact "
    "was skipped; last_attempt_at RFC 3339 UTC; hangup_cause the Q.850 cause and sip_code the SIP status of the "
    "last attempt; talk_seconds of the last answered attempt; answered_by and caller_id those of the last "
    "attempt (empty where unknown). UTF-8, CRLF, every cell quoted; a cell that starts with = + - @, a tab or "
    "a carriage return gets a leading ' so no spreadsheet evaluates it (a plain E.164 number is left as it "
    "is). Streamed: memory stays flat however many contacts."
)
EVENTS_DESCRIPTION = (
    "Server-Sent Events: contact transitions (the event is the new contact status: 'event: originated', "
    "'event: failed', ...; 'event: skipped' when a number suppressed since the import is claimed: it is never "
    "dialled) and campaign status changes ('event: campaign'; action 'start_deferred' when a "
    "scheduled start is held back by the tenant's cap), each with its id; every time is RFC 3339 UTC with "
    "milliseconds and a Z; a snapshot data "
    "message every few seconds while running (and while a stopped campaign's calls are still up); ': heartbeat' "
    "comments; and 'event: end', exactly once, after the campaign's last transition: it is in a final status "
    "and none of its calls is in flight any more. A campaign stopped with calls up reports 'completed' at the "
    "stop, then those calls' outcomes, then the end. The end is a stored event with its own id, so a replay "
    "from any id yields every event after it and then the end. Resume with Last-Event-ID (0 replays "
    "everything); without it the stream starts live."
)


def _paths(settings: Settings) -> dict[str, Schema]:
    metrics = {"content": {"text/plain": {"schema": TEXT}, "application/openmetrics-text": {"schema": TEXT}}}
    event_id = _int(0, maximum=MAX_QUERY_INT)
    form = {"schema": _create_form(settings), "encoding": {"contacts": {"contentType": "text/csv"}}}
    edit = _edit(settings)
    html = {"schema": TEXT}
    return {
        "/health": _public("getHealth", "Liveness and dependencies", {
            "200": _ok("the database works (status 'degraded' when the PBX is down)", "Health"),
            "503": _ok("the database does not answer", "Health"),
        }),
        "/metrics": _public("getMetrics", "Prometheus metrics", {
            "200": {"description": "Prometheus text exposition format", **metrics},
        }),
        "/api/v1/openapi.json": _public("getOpenApi", "This document", {
            "200": {"description": "OpenAPI 3.1 document", "content": {JSON: {"schema": {"type": "object"}}}},
        }),
        "/dashboard": {"get": _op("dashboard", "getDashboard", "The live campaign dashboard (HTML)", {
            "200": {"description": "the page; it asks for an API key in the browser", "content": {"text/html": html}},
        }, security=[])},
        "/dashboard/": {"get": _op("dashboard", "redirectDashboard", "Redirect to /dashboard", {
            "301": {"description": "to ../dashboard (the page's URLs are relative)",
                    "headers": {"Location": {"schema": TEXT}}},
        }, security=[])},
        "/dashboard/{name}": {"get": _op("dashboard", "getDashboardAsset", "A script or style of the dashboard", {
            "200": {"description": "the file", "content": {"text/javascript": html, "text/css": html}},
            "404": _error("no such asset", "route_not_found"),
        }, security=[], parameters=[_param("name", "path", "file name", {"type": "string",
                                                                         "enum": sorted(dashboard.ASSETS)})])},
        "/api/v1/call-limits": {
            "get": _op(
                "system", "getCallLimits", "The tenant's call limits and usage",
                {"200": _ok("the caller's tenant limits (0: no limit) and its live usage", "CallLimits"),
                 **_errors(400, 401, 500)},
                description="limits: as set by `dialerd tenants set` (timezone 'UTC' when unset). usage: calls in "
                "flight now, attempts started in the last 60 s, and today's attempts and answered talk minutes "
                "as daily_calls_max / daily_minutes_max count them (the tenant's calendar day in timezone; an "
                "attempt counts for the day it started in; minutes once the call ended). Once a daily cap is "
                "reached, the tenant's running campaigns stay running and dial again after its midnight.",
            ),
        },
        "/api/v1/campaigns": {
            "get": _op(
                "campaigns", "listCampaigns", "List campaigns",
                {"200": _ok("a page of campaigns", "CampaignList"), **_errors(400, 401, 500)},
                description="The tenant's campaigns, newest first; status and name narrow the list (both at "
                "once: campaigns matching both), total counts what matches.",
                parameters=[_limit(50), OFFSET, {"$ref": "#/components/parameters/CampaignStatus"}, NAME_SEARCH],
            ),
            "post": _op(
                "campaigns", "createCampaign", "Create a campaign",
                {"201": _replayable(_ok("the new campaign with its full import report", "CreatedCampaign")),
                 **_errors(400, 401, 409, 413, 500)},
                description="Multipart form: 'contacts' is the CSV file, every other field a form value; or a JSON "
                "object with the same fields and 'contacts' as an array of objects. The "
                "campaign is created in 'draft' (or 'scheduled' with scheduled_at); bad rows are reported in "
                "import.problems (all of them: GET .../import), duplicates collapsed. All or nothing. "
                "max_concurrent_calls above the tenant's concurrent_max is refused (400). Send an "
                "Idempotency-Key to retry safely (409 only for that key's conflicts).",
                parameters=[IDEMPOTENCY_KEY],
                requestBody={"required": True, "content": {"multipart/form-data": form,
                                                           JSON: {"schema": _create_json(settings)}}},
            ),
        },
        "/api/v1/campaigns/{id}": {
            "parameters": BY_ID,
            "get": _op(
                "campaigns", "getCampaign", "Get a campaign",
                {"200": _ok("the campaign", "Campaign"), **_errors(400, 401, 404, 500)},
            ),
            "delete": _op(
                "campaigns", "deleteCampaign", "Delete a campaign",
                {"204": {"description": "deleted"}, **_errors(400, 401, 404, 409, 500)},
                description="Removes the campaign with its contacts and events. Refused (409) while it is running "
                "or has calls in flight.",
            ),
            "patch": _op(
                "campaigns", "updateCampaign", "Change a campaign's settings",
                {"200": _ok("the campaign as changed", "Campaign"), **_errors(400, 401, 404, 409, 500)},
                description="While draft, scheduled or paused (409 campaign_not_editable otherwise): "
                f"{', '.join(EDITABLE)}, validated as at create. JSON object or form-encoded.",
                requestBody={"required": True, "content": {JSON: {"schema": edit},
                                                           "application/x-www-form-urlencoded": {"schema": edit}}},
            ),
        },
        "/api/v1/campaigns/{id}/import": {
            "parameters": BY_ID,
            "get": _op(
                "contacts", "getCampaignImport", "The import report of a campaign",
                {"200": _ok("the report's figures and a page of its rejected rows", "ImportPage"),
                 **_errors(400, 401, 404, 500)},
                description="The report stored at create, with every rejected row (line, value, reason, code), "
                "paged in file order.",
                parameters=[_limit(100), OFFSET],
            ),
        },
        "/api/v1/campaigns/{id}/contacts": {
            "parameters": BY_ID,
            "get": _op(
                "contacts", "listContacts", "List contacts in a campaign, or export them all as CSV",
                {"200": {"description": "a page of contacts (JSON), or with format=csv every contact (CSV)",
                         "content": {JSON: {"schema": _ref("ContactList")},
                                     results.CSV_MEDIA_TYPE: {"schema": {**TEXT, "description": RESULTS_CSV}}}},
                 **_errors(400, 401, 404, 500)},
                description="In CSV order. include=attempt_history adds each contact's attempts (number, "
                "times, outcome, failure reason, Q.850 cause, SIP code), oldest first. " + RESULTS_CSV,
                parameters=[{"$ref": "#/components/parameters/ContactStatus"}, _limit(100), OFFSET, AFTER_ID, PAGE,
                            INCLUDE, FORMAT],
            ),
            "post": _op(
                "contacts", "appendContacts", "Add contacts to a campaign",
                {"200": _ok("the appended file's import report and the campaign's contact counts",
                            "ContactsAppended"), **_errors(400, 401, 404, 409, 413, 500)},
                description="Multipart form: 'contacts' is a CSV file, imported by the create's rules with the "
                "create's report (bad rows reported one by one, suppressed numbers stored skipped, zones "
                "resolved). A number already in the campaign counts as a duplicate. Into a draft, scheduled, "
                "paused or running campaign (a running one dials the new contacts at once); 409 "
                "campaign_not_appendable once it is completed or failed (also when it completed because it "
                "ran out of contacts: create a new campaign). All or nothing: a file refused (400) or a "
                "campaign completed meanwhile (409) has added nothing.",
                requestBody={"required": True, "content": {"multipart/form-data": {
                    "schema": _append_form(settings), "encoding": {"contacts": {"contentType": "text/csv"}}}}},
            ),
        },
        "/api/v1/campaigns/{id}/explain": {
            "parameters": BY_ID,
            "get": _op(
                "campaigns", "explainCampaign", "Why the campaign is (not) dialling",
                {"200": _ok("its pending contacts, those eligible now, and every reason holding it back",
                            "Explanation"), **_errors(400, 401, 404, 500)},
                description="Live: the campaign's status, the PBX connection, the campaign's and the tenant's "
                "concurrency, the tenant's call rate (and daily caps), and the pending contacts counted by what "
                "holds each back (retry_delay: a retry time still ahead), with when each lifts where known. "
                "Answers for every status: draft, completed and failed have no reason of their own (their "
                "status says it); nothing pending is no_pending_contacts.",
            ),
        },
        "/api/v1/campaigns/{id}/webhook": {
            "parameters": BY_ID,
            "get": _op(
                "campaigns", "getWebhookState", "How far the campaign's webhook got",
                {"200": _ok("the webhook's URL, the last event delivered, what is pending or dead, and the last "
                            "try", "WebhookState"), **_errors(400, 401, 404, 500)},
                description="Every event the SSE stream carries for a campaign with a webhook_url is POSTed there "
                "as JSON (the SSE data), one per request, with Dialerd-Event-Id, Dialerd-Event-Type and "
                "Dialerd-Signature: t=UNIX,v1=HEX (HMAC-SHA256 of '<t>.<body>' keyed by webhook_secret). At least "
                "once, in event-id order per campaign; any 2xx delivers; a timeout (10 s), a connection error or "
                "another status is retried (1 s doubling to 10 min, with jitter) for 24 h, then the event is "
                "dead and the next goes on. docs/webhooks.md.",
            ),
        },
        "/api/v1/campaigns/{id}/events": {
            "parameters": BY_ID,
            "get": _op(
                "events", "streamCampaignEvents", "Stream campaign events",
                {"200": {"description": "the event stream",
                         "content": {"text/event-stream": {"schema": _ref("StreamEvent")}}},
                 **_errors(400, 401, 404, 500)},
                description=EVENTS_DESCRIPTION,
                parameters=[
                    _param("last_event_id", "query", "like Last-Event-ID, for clients that cannot set headers",
                           event_id),
                    _param("Last-Event-ID", "header", "replay the events after this id (wins over the query "
                           "parameter)", event_id),
                ],
            ),
        },
        **_suppression_paths(settings),
        "/api/v1/campaigns/{id}/start": _action(
            "start", "Start a campaign", "draft, scheduled or paused -> running. 409 when the tenant's running "
            "campaigns already reserve too much of its concurrent_max."),
        "/api/v1/campaigns/{id}/pause": _action(
            "pause", "Pause a running campaign", "No new originations; calls in flight finish naturally."),
        "/api/v1/campaigns/{id}/resume": _action(
            "resume", "Resume a paused campaign", "paused -> running, with the same cap check as start."),
        "/api/v1/campaigns/{id}/stop": _action(
            "stop", "Stop a campaign permanently", "-> completed; pending contacts become cancelled; calls in "
            "flight are not torn down. Stopping a completed campaign is a no-op."),
    }  # fmt: skip


def _suppression_paths(settings: Settings) -> dict[str, Schema]:
    reason = {"type": "string", "maxLength": MAX_REASON_CHARS, "description": "why these numbers must not be "
              "called (stored with each new entry)"}
    region = {"type": "string", "pattern": "^[A-Za-z]{2}$", "description": "ISO country of national numbers, e.g. "
              f"US; default: {settings.dialer_default_region or 'none (numbers must be international)'}"}
    as_json: Schema = {
        "type": "object", "required": ["numbers"], "additionalProperties": False,
        "properties": {
            "numbers": {"type": "array", "minItems": 1, "maxItems": MAX_NUMBERS, "items": {"type": "string"},
                        "description": "phone numbers, normalised to E.164 like contacts' numbers"},
            "reason": reason, "default_region": region,
        },
    }
    form: Schema = {
        "type": "object", "required": ["file"], "additionalProperties": False,
        "properties": {
            "file": {"type": "string", "format": "binary", "description": "CSV with a column 'number' or 'phone' "
                     "(the contacts CSV's header rules and encodings); an optional 'reason' column wins per row; "
                     f"at most {settings.upload_limit_bytes} bytes"},
            "reason": reason, "default_region": region,
        },
    }
    not_listed = _error("the number is not on the tenant's suppression list", "suppression_not_found")
    number = _param("number", "path", "the number in E.164, its + URL-encoded (%2B)",
                    {"type": "string", "example": "+14155550142"})
    return {
        "/api/v1/suppressions": {
            "get": _op(
                "suppressions", "listSuppressions", "List the suppression list",
                {"200": _ok("a page of the tenant's suppression list", "SuppressionList"), **_errors(400, 401, 500)},
                description="The API key's tenant's do-not-call list, newest first. number= looks one number up "
                "(normalised with default_region).",
                parameters=[_param("number", "query", "only this number (any format contacts accept)", TEXT),
                            _param("default_region", "query", "region of a national number", region),
                            _limit(100), OFFSET],
            ),
            "post": _op(
                "suppressions", "addSuppressions", "Add numbers to the suppression list",
                {"200": _ok("what was added, and every rejected input", "SuppressionsAdded"),
                 **_errors(400, 401, 413, 500)},
                description="JSON numbers (source 'api') or a multipart CSV file (source 'import'). Numbers are "
                "normalised like contacts'; bad ones are reported one by one in rejected. No valid number, an "
                "unknown key or field, or an oversized body: 400/413, nothing written. A suppressed number is "
                "never dialled by the tenant's campaigns: imported as 'skipped', and skipped at claim time.",
                requestBody={"required": True, "content": {JSON: {"schema": as_json}, "multipart/form-data": {
                    "schema": form, "encoding": {"file": {"contentType": "text/csv"}}}}},
            ),
        },
        "/api/v1/suppressions/{number}": {
            "parameters": [number],
            "delete": _op(
                "suppressions", "deleteSuppression", "Remove a number from the suppression list",
                {"204": {"description": "removed: the number may be dialled again"},
                 **_errors(400, 401, 500), "404": not_listed},
            ),
        },
    }


def build_openapi(settings: Settings) -> dict[str, Any]:
    """The OpenAPI 3.1 document for this daemon's API."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "dialerd",
            "version": __version__,
            "description": "Outbound campaign dialer for Asterisk. Every error is JSON: "
            '{"error": message, "error_id": stable code, "details": {...}}. An unknown path is '
            "404 (route_not_found); a method a path does not have is 405 (method_not_allowed).",
        },
        "tags": [{"name": n} for n in ("campaigns", "contacts", "events", "suppressions", "system", "dashboard")],
        "security": [{"bearerAuth": []}],
        "paths": _paths(settings),
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "an API key (dlr_...) minted with `dialerd keys create`; it names the tenant",
                }
            },
            "schemas": _schemas(),
            "parameters": _parameters(),
            "responses": {name: _error(text, eid) for name, text, eid in ERRORS.values()},
        },
    }


@routes.get("/api/v1/openapi.json")
async def openapi_document(request: web.Request) -> web.Response:
    return web.json_response(build_openapi(services(request).settings))
