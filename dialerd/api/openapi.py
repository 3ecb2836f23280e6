"""GET /api/v1/openapi.json: the OpenAPI 3 description of the HTTP API.

The document is a plain dict built per request from the settings (upload limit, defaults) and from
the constants the handlers themselves use (page size, form field names, statuses), so it cannot drift
from them silently; ``tests/integration/test_openapi.py`` checks it against the router and the form
parser, and ``test_schemathesis.py`` checks the live server against it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import phonenumbers
from aiohttp import web

from dialerd import __version__
from dialerd.api import campaigns, dashboard
from dialerd.api.context import services
from dialerd.api.forms import MAX_FIELD_BYTES
from dialerd.domain.campaign import VISIBLE, CampaignStatus
from dialerd.domain.contact import ContactStatus, FailureReason
from dialerd.services import idempotency
from dialerd.services.campaign_spec import (
    ALIASES,
    EDITABLE,
    INT_FIELDS,
    JSON_REFUSED,
    CampaignSpec,
    form_of,
    int_bounds,
)
from dialerd.services.csv_contacts import ROW_CODES
from dialerd.services.csv_text import ENCODING_SOURCES
from dialerd.settings import Settings

routes = web.RouteTableDef()

Schema = dict[str, Any]

JSON = "application/json"
MAX_QUERY_INT = 10**12 - 1  # forms.parse_int refuses more than 12 characters
# The integer form fields and their (minimum, maximum, default) as forms.build_spec enforces them;
# ring_timeout_seconds' default comes from the settings.
FORM_INTS: dict[str, tuple[int, int | None, int | None]] = {
    f: (*int_bounds(CampaignSpec.model_fields[f]), None if form_of(f).setting else CampaignSpec.model_fields[f].default)
    for f in INT_FIELDS
}
# Printable text without ASCII control characters (what build_spec accepts for name and caller_id).
_NAME_PATTERN = r"^[^\x00-\x1f]*[^\x00-\x20][^\x00-\x1f]*$"
_CALLER_ID_PATTERN = r"^[^\x00-\x1f;\\]*$"
_TOKEN = r"[A-Za-z0-9_+.*#-]{1,80}"
_DESTINATION_PATTERN = (
    rf"^(?:[Ss][Tt][Aa][Ss][Ii][Ss]:{_TOKEN}(?:,[^,\x00-\x1f]*)*|{_TOKEN},{_TOKEN}(?:,[1-9][0-9]{{0,5}})?)$"
)
DESTINATION_MAX = 200  # the stored column's width


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _enum(values: Iterable[CampaignStatus] | type[ContactStatus]) -> Schema:
    return {"type": "string", "enum": [v.value for v in values]}


def _nullable(schema: Schema) -> Schema:
    return {**schema, "nullable": True}


def _obj(properties: dict[str, Schema], *, closed: bool = True, optional: tuple[str, ...] = ()) -> Schema:
    out: Schema = {
        "type": "object",
        "required": [k for k in properties if k not in optional],
        "properties": properties,
    }
    if closed:
        out["additionalProperties"] = False
    return out


def _int(minimum: int | None = 0, **kw: Any) -> Schema:
    out: Schema = {"type": "integer", **kw}
    if minimum is not None:
        out["minimum"] = minimum
    return out


TIME: Schema = {
    "type": "string", "format": "date-time", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$",
    "example": "2030-01-31T09:00:00.000Z",
    "description": "RFC 3339 in UTC with milliseconds and a Z: the one format of every time the API returns",
}
# The times the API reads (scheduled_at) take any RFC 3339 offset.
TIME_IN: Schema = {"type": "string", "format": "date-time", "example": "2030-01-31T09:00:00Z"}


# ---- schemas ------------------------------------------------------------------------------------


def _import_summary(with_problems: bool) -> Schema:
    props: dict[str, Schema] = {
        "rows_total": _int(description="data rows read (the header excluded)"),
        "rows_valid": _int(description="rows with a dialable number"),
        "rows_rejected": _int(description="rows refused; see problems"),
        "duplicates": _int(description="valid rows whose number was already in the file"),
        "contacts": _int(description="contacts stored"),
        "phone_column": {"type": "string", "description": "the header taken as the phone number column"},
        "delimiter": {"type": "string", "minLength": 1, "maxLength": 1},
        "custom_fields": {
            "type": "array",
            "items": {"type": "string"},
            "description": "every other column: handed to the call as DIALERD_FIELD_* variables",
        },
        "problems_truncated": {"type": "boolean", "description": "more rows were rejected than are listed"},
        "encoding": {"type": "string", "description": "the encoding the file was read in, e.g. utf-8, "
                     "utf-16-le, cp1252 (a Python codec name, as the encoding form field takes)"},
        "encoding_source": {"type": "string", "enum": list(ENCODING_SOURCES),
                            "description": "bom: a byte-order mark; declared: the encoding form field; "
                            "utf-8: valid UTF-8 without BOM; detected: charset detection"},
        "phone_columns": {
            "type": "object",
            "additionalProperties": _int(),
            "description": "every phone column, in the priority they are tried, with how many contacts' "
            "numbers came from each",
        },
        "multi_number_cells": _int(description="contacts whose phone cell held several numbers separated by "
                                   "':::' (Google Contacts); the first dialable one was taken"),
    }
    if with_problems:
        props["problems"] = {"type": "array", "items": _ref("RowProblem")}
    # Reports stored before these keys existed lack them.
    return _obj(props, optional=("encoding", "encoding_source", "phone_columns", "multi_number_cells"))


def _campaign(import_schema: str) -> Schema:
    statuses = [s.value for s in ContactStatus]
    return _obj(
        {
            "id": {"type": "string", "pattern": "^cmp_[0-9a-f]{20}$", "example": "cmp_4f9d2c6e0a1b3c5d7e9f"},
            "name": {"type": "string", "minLength": 1, "maxLength": 200},
            "status": {"type": "string", "enum": [s.value for s in VISIBLE]},
            "caller_id": {"type": "string", "maxLength": 80},
            "destination": {"type": "string", "description": "CONTEXT,EXTENSION,PRIORITY or stasis:APP[,ARGS]"},
            "agent_id": {"type": "string", "description": "the reference API's name for destination"},
            "phone_number_id": {"type": "string", "description": "the reference API's name for caller_id"},
            "default_region": _nullable({"type": "string", "pattern": "^[A-Z]{2}$"}),
            "max_concurrent_calls": _int(1, maximum=100),
            "retries_per_contact": _int(0, maximum=5),
            "retry_delay_seconds": _int(60, maximum=7 * 86400),
            "ring_timeout_seconds": _int(5, maximum=300),
            "scheduled_at": _nullable(TIME),
            "created_at": TIME,
            "created_by": {"type": "string", "description": "id of the API key that created the campaign"},
            "started_at": _nullable(TIME),
            "completed_at": _nullable(TIME),
            "updated_at": TIME,
            "contacts": _obj({"total": _int(), **{s: _int() for s in statuses}}),
            "calls_in_flight": _int(),
            "progress": {
                "type": "number",
                "minimum": 0,
                "maximum": 1,
                "description": "share of contacts in a final status (completed, failed, cancelled)",
            },
            "import": _ref(import_schema),
            "start_deferred": _nullable({
                **_obj({
                    "reason": {"type": "string", "example": "tenant_concurrency_exceeded"},
                    "since": TIME,
                    "detail": {"type": "string"},
                }),
                "description": "a scheduled start held back by the tenant's concurrency cap (retried every "
                "minute), with the first time it was; null otherwise",
            }),
        }
    )


def _import_page() -> Schema:
    summary = _import_summary(with_problems=False)
    props = {k: v for k, v in summary["properties"].items() if k != "problems_truncated"}
    return _obj({
        "campaign_id": {"type": "string"},
        **props,
        "problems": {"type": "array", "items": _ref("RowProblem"), "description": "a page of every rejected row"},
        "problems_total": _int(description="rejected rows stored (all of them)"),
        "limit": _int(1, maximum=campaigns.MAX_PAGE),
        "offset": _int(),
        "next_offset": _nullable(_int(description="offset of the next page; null on the last page")),
    })


def _schemas() -> dict[str, Schema]:
    reasons = ", ".join(r.value for r in FailureReason)
    return {
        "Error": _obj(
            {
                "error": {"type": "string", "description": "what is wrong, for humans"},
                "error_id": {
                    "type": "string",
                    "description": "stable machine code, e.g. invalid_field",
                    "example": "invalid_field",
                },
                "details": {
                    "type": "object",
                    "additionalProperties": True,
                    "description": "context such as the offending field or parameter",
                },
            }
        ),
        "RowProblem": _obj(
            {
                "line": _int(1, description="physical line of the CSV file (the header is line 1)"),
                "value": {"type": "string", "maxLength": 100},
                "reason": {"type": "string"},
                "code": {
                    "type": "string",
                    "enum": sorted(ROW_CODES),
                },
            }
        ),
        "ImportSummary": _import_summary(with_problems=False),
        "ImportPage": _import_page(),
        "ImportReport": _import_summary(with_problems=True),
        "Campaign": _campaign("ImportSummary"),
        "CreatedCampaign": _campaign("ImportReport"),
        "CampaignList": _obj(
            {
                "campaigns": {"type": "array", "items": _ref("Campaign")},
                "total": _int(),
                "limit": _int(1, maximum=campaigns.MAX_PAGE),
                "offset": _int(),
            }
        ),
        "Contact": _obj(
            {
                "id": _int(1),
                "campaign_id": {"type": "string"},
                "phone_number": {"type": "string", "pattern": r"^\+[1-9][0-9]{1,14}$", "description": "E.164"},
                "raw_number": {"type": "string", "description": "the phone cell as written in the CSV"},
                "line": _int(1, description="CSV line the contact came from"),
                "status": {"type": "string", "enum": [s.value for s in ContactStatus]},
                "attempts": _int(),
                "last_attempt_at": _nullable(TIME),
                "next_attempt_at": _nullable(TIME),
                "failure_reason": _nullable({"type": "string", "description": f"one of {reasons}"}),
                "hangup_cause": _nullable({"type": "integer", "description": "Q.850 cause of the last attempt"}),
                "sip_code": _nullable({"type": "integer", "description": "SIP status of the last attempt"}),
                "custom_fields": {"type": "object", "additionalProperties": {"type": "string"}},
                "updated_at": _nullable(TIME),
            }
        ),
        "ContactList": _obj(
            {
                "contacts": {"type": "array", "items": _ref("Contact")},
                "total": _int(),
                "limit": _int(1, maximum=campaigns.MAX_PAGE),
                "offset": _int(),
                "next_offset": _nullable(_int(description="offset of the next page; null on the last page "
                                              "and when paging by after_id")),
                "next_after_id": _nullable(_int(description="after_id of the next page; null on the last page")),
                "page": _int(description="the page asked for (only when paging by page)"),
                "next_page": _nullable(_int(description="the next page; null on the last page (only when "
                                            "paging by page)")),
            },
            optional=("page", "next_page"),
        ),
        "StreamEvent": _obj(
            {
                "event": {
                    "type": "string",
                    "enum": ["message", "campaign", "end", *(s.value for s in ContactStatus)],
                    "description": "'message' (no event line): a snapshot of the live figures; 'campaign': a "
                    "status change; a contact status: that contact's transition; 'end' (once, last): the "
                    "campaign is over, i.e. in a final status with no call in flight, and the stream closes",
                },
                "data": {"type": "string", "description": "a JSON object"},
                "id": {
                    "type": "string",
                    "pattern": "^[0-9]+$",
                    "description": "the event id; a snapshot repeats the last one",
                },
                "retry": {"type": "integer", "minimum": 0},
            },
            optional=("event", "id", "retry"),
        ),
        "Health": _obj(
            {
                "status": {"type": "string", "enum": ["ok", "degraded", "error"]},
                "version": {"type": "string"},
                "database": {
                    "type": "object",
                    "properties": {"ok": {"type": "boolean"}, "schema_version": {"type": "integer"}},
                },
                "pbx": {
                    "type": "object",
                    "properties": {
                        "driver": {"type": "string"},
                        "connected": {"type": "boolean"},
                        "dialling_held": _nullable({
                            "type": "string", "enum": ["pbx_down", "ari_app_replaced", None],
                            "description": "why no call is originated now (null: dialling is possible)",
                        }),
                        "last_error": _nullable({
                            "type": "string",
                            "description": "what is wrong with the PBX connection, e.g. 'ARI 401: check "
                            "DIALERD_ARI_PASSWORD and ari.conf' (null while all is well)",
                        }),
                    },
                },
                "calls_in_flight": _int(),
                "sse_subscribers": _int(),
            },
            closed=False,
        ),
    }


def _create_form(settings: Settings) -> Schema:
    text = {"type": "string", "maxLength": MAX_FIELD_BYTES}
    caller_id = {
        **text,
        "maxLength": 80,
        "pattern": _CALLER_ID_PATTERN,
        "description": "caller id the campaign dials from; default: "
        f"{settings.dialer_default_caller_id or 'none (the PBX decides)'}",
    }
    destination = {
        "type": "string",
        "maxLength": DESTINATION_MAX,
        "pattern": _DESTINATION_PATTERN,
        "description": "where an answered call goes: CONTEXT,EXTENSION[,PRIORITY] in the dialplan, or "
        f"stasis:APP[,ARGS...]; default: {settings.dialer_default_destination}",
        "example": "dialerd-demo,s,1",
    }
    props: dict[str, Schema] = {
        "name": {
            "type": "string",
            "minLength": 1,
            "maxLength": 200,
            "pattern": _NAME_PATTERN,
            "description": "1-200 characters (surrounding spaces trimmed), no control characters",
        },
        "caller_id": caller_id,
        "phone_number_id": {
            **caller_id,
            "description": "the reference API's name for caller_id; give one of the two",
        },
        "destination": destination,
        "agent_id": {
            **destination,
            "description": "the reference API's name for destination; give one of the two",
        },
    }
    for field, (lo, hi, default) in FORM_INTS.items():
        props[field] = {
            "type": "integer",
            "minimum": lo,
            "maximum": hi,
            "default": settings.dialer_ring_timeout if default is None else default,
        }
    props["scheduled_at"] = {
        **TIME_IN,
        "description": "RFC 3339 time with an offset, in the future; the campaign is 'scheduled' and "
        "starts by itself then",
    }
    props["default_region"] = {
        "type": "string",
        "enum": sorted(phonenumbers.SUPPORTED_REGIONS),
        "description": "ISO 3166 country for numbers written in national format (case-insensitive); "
        f"default: {settings.dialer_default_region or 'none (numbers must be international)'}",
    }
    props["phone_column"] = {
        "type": "string",
        "maxLength": 200,
        "pattern": r"^[^\x00-\x1f]*$",
        "description": "the header of the column to take the numbers from (exact, else compared like the "
        "recognised names); default: every recognised phone column, the first non-empty dialable one per "
        "row; a name that is not a header is refused (400) naming the headers found",
    }
    props["encoding"] = {
        "type": "string",
        "maxLength": 40,
        "example": "cp1252",
        "description": "the file's text encoding, any Python codec name (utf-8, cp1252, latin-1, utf-16, "
        "...); default: from the byte-order mark, else UTF-8, else detected (400 csv_encoding_unknown "
        "when detection is not confident)",
    }
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
        "required": ["name", "contacts"],
        "properties": props,
        "additionalProperties": False,
        # A field and its alias are the same field: one of the two at most.
        "allOf": [{"not": {"required": [field, alias]}} for alias, field in ALIASES.items()],
        "description": f"Text fields are UTF-8, at most {MAX_FIELD_BYTES} bytes each; an unknown or repeated "
        "field, or a field given together with its alias, is refused (400).",
    }


def _create_json(settings: Settings) -> Schema:
    """The JSON create body: the form's fields, and contacts as an array of objects instead of a CSV file."""
    form = _create_form(settings)
    cell = {"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}], "nullable": True}
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
    form = _create_form(settings)["properties"]
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
    return _param("limit", "query", "page size", _int(1, maximum=campaigns.MAX_PAGE, default=default))


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
TEXT = {"type": "string"}
EVENTS_DESCRIPTION = (
    "Server-Sent Events: contact transitions (the event is the new contact status: 'event: originated', "
    "'event: failed', ...) and campaign status changes ('event: campaign'; action 'start_deferred' when a "
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
            "200": {"description": "OpenAPI 3 document", "content": {JSON: {"schema": {"type": "object"}}}},
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
                description="While draft, scheduled or paused (409 campaign_not_editable otherwise): name, "
                "max_concurrent_calls, retries_per_contact, retry_delay_seconds, ring_timeout_seconds, caller_id, "
                "destination, validated as at create. JSON object or form-encoded.",
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
                "contacts", "listContacts", "List contacts in a campaign",
                {"200": _ok("a page of contacts", "ContactList"), **_errors(400, 401, 404, 500)},
                description="In CSV order.",
                parameters=[{"$ref": "#/components/parameters/ContactStatus"}, _limit(100), OFFSET, AFTER_ID, PAGE],
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


def build_openapi(settings: Settings) -> dict[str, Any]:
    """The OpenAPI 3.0 document for this daemon's API."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "dialerd",
            "version": __version__,
            "description": "Outbound campaign dialer for Asterisk. Every error is JSON: "
            '{"error": message, "error_id": stable code, "details": {...}}. An unknown path is '
            "404 (route_not_found); a method a path does not have is 405 (method_not_allowed).",
        },
        "tags": [{"name": n} for n in ("campaigns", "contacts", "events", "system", "dashboard")],
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
