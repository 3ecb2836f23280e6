"""The OpenAPI document: valid OpenAPI 3.1, and true to the router, the form parser and real responses."""

from __future__ import annotations

import re
from typing import Any

import pytest
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate

from dialerd.api import campaigns
from dialerd.api.forms import ALIASES, FIELDS, build_spec
from dialerd.api.openapi import FORM_INTS, build_openapi
from dialerd.domain.campaign import VISIBLE
from dialerd.domain.contact import ContactStatus
from dialerd.errors import InvalidInput
from tests.conftest import Api, test_settings

CSV = "phone_number,first_name\n+14155550100,Ann\n+14155550101,Bob\nnot a number,Cy\n"
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


async def fetch_doc(api: Api) -> dict[str, Any]:
    status, doc = await api.call("GET", "/api/v1/openapi.json", tenant=None)  # public: no key
    assert status == 200, doc
    assert isinstance(doc, dict)
    return doc


def operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (path, method.upper()): op
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in METHODS
    }


def assert_matches(doc: dict[str, Any], schema_name: str, body: Any) -> None:
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": doc["components"]}
    errors = sorted(OAS31Validator(schema).iter_errors(body), key=str)
    assert not errors, f"{schema_name}: " + "; ".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


async def test_document_is_valid_openapi_3(offline_api: Api) -> None:
    doc = await fetch_doc(offline_api)
    validate(doc)  # raises on any violation of the OpenAPI 3.1 schema, including dangling $refs
    assert doc["openapi"].startswith("3.1.")  # JSON Schema 2020-12: the models' own schemas
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        **doc["components"]["securitySchemes"]["bearerAuth"], "type": "http", "scheme": "bearer"
    }
    assert doc["security"] == [{"bearerAuth": []}]


async def test_every_route_is_documented_and_nothing_else(offline_api: Api) -> None:
    doc = await fetch_doc(offline_api)
    routed: dict[tuple[str, str], Any] = {}
    for route in offline_api.daemon.app.router.routes():
        assert route.resource is not None
        routed[(route.resource.canonical, route.method)] = route.handler
    # aiohttp adds HEAD beside every GET (allow_head); it is HTTP's implied HEAD, not an operation of its own.
    heads = {key: handler for key, handler in routed.items() if key[1] == "HEAD"}
    for (path, _), handler in heads.items():
        assert routed.get((path, "GET")) is handler, path
        del routed[(path, "HEAD")]
    documented = set(operations(doc))
    assert documented == set(routed), (
        f"undocumented: {sorted(set(routed) - documented)}; documented but not routed: {sorted(documented - set(routed))}"
    )
    # Among them the ten routes of campaigns-api.md.
    spec = {("/api/v1/campaigns", "GET"), ("/api/v1/campaigns", "POST"), ("/api/v1/campaigns/{id}", "GET"),
            ("/api/v1/campaigns/{id}", "DELETE"), ("/api/v1/campaigns/{id}/contacts", "GET"),
            ("/api/v1/campaigns/{id}/events", "GET")}
    spec |= {(f"/api/v1/campaigns/{{id}}/{verb}", "POST") for verb in ("start", "pause", "resume", "stop")}
    assert spec <= documented and len(spec) == 10


async def test_security_and_status_codes_per_operation(offline_api: Api) -> None:
    doc = await fetch_doc(offline_api)
    ops = operations(doc)
    public = {("/health", "GET"), ("/metrics", "GET"), ("/api/v1/openapi.json", "GET")}
    for key, op in ops.items():
        codes = set(op["responses"])
        if key in public or key[0].startswith("/dashboard"):
            assert op["security"] == [], key
            assert "401" not in codes, key
            continue
        assert "security" not in op, key  # the global bearerAuth applies
        # Every authenticated route: bad or unknown query parameters (400), no key (401), a crash (500).
        assert {"400", "401", "500"} <= codes, key
    expected = {
        ("/api/v1/campaigns", "GET"): {"200", "400", "401", "500"},
        ("/api/v1/campaigns", "POST"): {"201", "400", "401", "409", "413", "500"},
        ("/api/v1/campaigns/{id}", "PATCH"): {"200", "400", "401", "404", "409", "500"},
        ("/api/v1/campaigns/{id}/import", "GET"): {"200", "400", "401", "404", "500"},
        ("/api/v1/campaigns/{id}", "GET"): {"200", "400", "401", "404", "500"},
        ("/api/v1/campaigns/{id}", "DELETE"): {"204", "400", "401", "404", "409", "500"},
        ("/api/v1/campaigns/{id}/contacts", "GET"): {"200", "400", "401", "404", "500"},
        ("/api/v1/campaigns/{id}/contacts", "POST"): {"200", "400", "401", "404", "409", "413", "500"},
        ("/api/v1/campaigns/{id}/events", "GET"): {"200", "400", "401", "404", "500"},
        ("/api/v1/campaigns/{id}/explain", "GET"): {"200", "400", "401", "404", "500"},
        ("/health", "GET"): {"200", "503"},
    }
    for verb in ("start", "pause", "resume", "stop"):
        expected[(f"/api/v1/campaigns/{{id}}/{verb}", "POST")] = {"200", "400", "401", "404", "409", "500"}
    for key, codes in expected.items():
        assert set(ops[key]["responses"]) == codes, key
    events = ops[("/api/v1/campaigns/{id}/events", "GET")]["responses"]["200"]["content"]
    assert set(events) == {"text/event-stream"}
    contacts = ops[("/api/v1/campaigns/{id}/contacts", "GET")]["responses"]["200"]["content"]
    assert set(contacts) == {"application/json", "text/csv"}  # the page, or the results export
    assert "content" not in ops[("/api/v1/campaigns/{id}", "DELETE")]["responses"]["204"]


async def test_query_parameters_match_the_handlers(offline_api: Api) -> None:
    doc = await fetch_doc(offline_api)
    params = doc["components"]["parameters"]

    def query_params(path: str) -> dict[str, dict[str, Any]]:
        item = doc["paths"][path]
        out = {}
        for p in [*item.get("parameters", []), *item["get"].get("parameters", [])]:
            if "$ref" in p:
                p = params[p["$ref"].rsplit("/", 1)[1]]
            out[f"{p['in']}:{p['name']}"] = p["schema"]
        return out

    campaigns_q = query_params("/api/v1/campaigns")
    contacts_q = query_params("/api/v1/campaigns/{id}/contacts")
    events_q = query_params("/api/v1/campaigns/{id}/events")
    assert set(campaigns_q) == {"query:limit", "query:offset", "query:status", "query:name"}
    assert campaigns_q["query:name"] == {"type": "string", "maxLength": campaigns.NAME_SEARCH_MAX}
    assert set(contacts_q) == {"path:id", "query:limit", "query:offset", "query:status", "query:after_id",
                               "query:page", "query:include", "query:format"}
    assert contacts_q["query:format"]["enum"] == list(campaigns.CONTACT_FORMATS)
    include = re.compile(contacts_q["query:include"]["pattern"])
    assert all(include.fullmatch(v) for v in ("", "attempt_history", "attempt_history,attempt_history"))
    assert not any(include.fullmatch(v) for v in ("attempts", "attempt_history,x", "ATTEMPT_HISTORY"))
    assert set(events_q) == {"path:id", "query:last_event_id", "header:Last-Event-ID"}
    assert campaigns_q["query:status"]["enum"] == [s.value for s in VISIBLE]
    assert contacts_q["query:status"]["enum"] == [s.value for s in ContactStatus]
    for q in (campaigns_q, contacts_q):
        assert (q["query:limit"]["minimum"], q["query:limit"]["maximum"]) == (1, campaigns.MAX_PAGE)
        assert q["query:offset"]["minimum"] == 0

    # The documented defaults and bounds are what the server does.
    cid = (await offline_api.create(CSV))[1]["id"]
    for path, q in (("/api/v1/campaigns", campaigns_q), (f"/api/v1/campaigns/{cid}/contacts", contacts_q)):
        status, body = await offline_api.call("GET", path)
        assert status == 200 and body["limit"] == q["query:limit"]["default"], body
        status, body = await offline_api.call("GET", path, params={"limit": str(campaigns.MAX_PAGE)})
        assert status == 200, body
        for bad in (campaigns.MAX_PAGE + 1, 0):
            status, body = await offline_api.call("GET", path, params={"limit": str(bad)})
            assert status == 400 and body["error_id"] == "invalid_field", body
        status, body = await offline_api.call("GET", path, params={"offset": str(q["query:offset"]["maximum"])})
        assert status == 200, body
        status, body = await offline_api.call("GET", path, params={"offset": str(q["query:offset"]["maximum"] + 1)})
        assert status == 400, body
    # The name search's documented bound.
    for text, expected in (("x" * campaigns.NAME_SEARCH_MAX, 200), ("x" * (campaigns.NAME_SEARCH_MAX + 1), 400)):
        status, body = await offline_api.call("GET", "/api/v1/campaigns", params={"name": text})
        assert status == expected, body


def test_create_form_fields_and_ranges_match_the_parser() -> None:
    settings = test_settings("sqlite+aiosqlite:///unused.db")
    doc = build_openapi(settings)
    form = doc["paths"]["/api/v1/campaigns"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert set(form["properties"]) == FIELDS | set(ALIASES) | {"contacts"}
    assert form["required"] == ["name", "contacts"] and form["additionalProperties"] is False
    assert form["properties"]["contacts"]["format"] == "binary"
    assert set(FORM_INTS) == {k for k, v in form["properties"].items() if v["type"] == "integer"}
    defaults = build_spec({"name": "x"}, settings)
    for field, schema in form["properties"].items():
        if schema["type"] != "integer":
            continue
        lo, hi = schema["minimum"], schema["maximum"]
        assert getattr(defaults, field) == schema["default"], field
        for ok in (lo, hi):
            assert getattr(build_spec({"name": "x", field: str(ok)}, settings), field) == ok
        for bad in (lo - 1, hi + 1):
            with pytest.raises(InvalidInput) as info:
                build_spec({"name": "x", field: str(bad)}, settings)
            assert info.value.details == {"field": field}
    # The documented patterns agree with the parser on typical values.
    for good in ("dialerd-demo,s,1", "ctx,100", "stasis:myapp", "STASIS:app,arg 1,arg2"):
        assert str(build_spec({"name": "x", "destination": good}, settings).destination)
    region = form["properties"]["default_region"]
    assert "US" in region["enum"] and "GB" in region["enum"]
    with pytest.raises(InvalidInput):
        build_spec({"name": "x", "default_region": "XX"}, settings)
    assert "XX" not in region["enum"]


async def test_real_responses_match_the_schemas(offline_api: Api) -> None:
    doc = await fetch_doc(offline_api)
    status, created = await offline_api.create(CSV, default_region="US", scheduled_at="2099-01-01T00:00:00Z")
    assert status == 201, created
    assert_matches(doc, "CreatedCampaign", created)
    assert created["import"]["problems"], created  # the bad row is reported: the schema's problems item is used
    cid = created["id"]
    status, body = await offline_api.call("GET", f"/api/v1/campaigns/{cid}")
    assert status == 200
    assert_matches(doc, "Campaign", body)
    status, body = await offline_api.call("GET", "/api/v1/campaigns")
    assert status == 200 and body["campaigns"]
    assert_matches(doc, "CampaignList", body)
    status, body = await offline_api.call("GET", f"/api/v1/campaigns/{cid}/contacts", params={"limit": "1"})
    assert status == 200 and body["contacts"] and body["next_offset"] == 1
    assert_matches(doc, "ContactList", body)
    status, body = await offline_api.call("POST", f"/api/v1/campaigns/{cid}/stop")
    assert status == 200 and body["status"] == "completed"
    assert_matches(doc, "Campaign", body)
    status, body = await offline_api.call("POST", f"/api/v1/campaigns/{cid}/pause")
    assert status == 409
    assert_matches(doc, "Error", body)
    status, body = await offline_api.call("GET", "/health", tenant=None)
    assert status == 200
    assert_matches(doc, "Health", body)
    # And a schema really refuses what it should (the checks above are not vacuous).
    with pytest.raises(AssertionError):
        assert_matches(doc, "Campaign", {**created, "import": {}})
