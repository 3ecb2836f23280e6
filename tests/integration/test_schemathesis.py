"""Schemathesis against the live daemon: every operation of the served OpenAPI document, positive and
negative data, checked for server errors and for conformance to the document.

Schemathesis and ``requests`` are synchronous, so the generated requests run in a worker thread while
the daemon keeps serving on the test's event loop. Every failure is collected (one per operation and
kind) and reported together, so one run lists every bug rather than the first.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import Api

EXAMPLES_PER_OPERATION = 25
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
CSV = "phone_number,first_name\n+14155550100,Ann\n+14155550101,Bob\n"
# Operations with few possible requests: none at all to vary, or one of the four asset names.
MINIMUM_SENT = {
    **dict.fromkeys(["GET /api/v1/openapi.json", "GET /health", "GET /metrics", "GET /dashboard", "GET /dashboard/",
                     "GET /api/v1/call-limits"], 1),
    "GET /dashboard/{name}": 4,
    "POST /api/v1/campaigns": EXAMPLES_PER_OPERATION,  # positive cases only (see run_operation)
    "POST /api/v1/campaigns/{id}/contacts": EXAMPLES_PER_OPERATION,  # likewise (a multipart file part)
}
MULTIPART_POSITIVE_ONLY = ("POST /api/v1/campaigns", "POST /api/v1/campaigns/{id}/contacts")
# Mutations last, deletion very last, so the reads see campaigns in every state first.
ORDER = ["GET /api/v1/openapi.json", "GET /health", "GET /metrics", "GET /dashboard", "GET /dashboard/",
         "GET /dashboard/{name}", "GET /api/v1/call-limits", "GET /api/v1/campaigns",
         "GET /api/v1/campaigns/{id}", "GET /api/v1/campaigns/{id}/contacts", "GET /api/v1/campaigns/{id}/events",
         "GET /api/v1/campaigns/{id}/explain", "GET /api/v1/campaigns/{id}/import", "GET /api/v1/campaigns/{id}/webhook", "GET /api/v1/suppressions", "POST /api/v1/suppressions",
         "DELETE /api/v1/suppressions/{number}", "POST /api/v1/campaigns", "POST /api/v1/campaigns/{id}/contacts", "PATCH /api/v1/campaigns/{id}", "POST /api/v1/campaigns/{id}/start", "POST /api/v1/campaigns/{id}/pause",
         "POST /api/v1/campaigns/{id}/resume", "POST /api/v1/campaigns/{id}/stop",
         "DELETE /api/v1/campaigns/{id}"]


def with_valid_csv(case: Any) -> Any:
    """The generated create form with a real contacts file: random bytes are (rightly) never a valid CSV.

    A JSON create body gets real contacts the same way (generated phone numbers are never dialable)."""
    if isinstance(case.body, dict):
        if case.media_type == "application/json":
            case.body = {**case.body, "contacts": [{"phone_number": "+14155550100", "first_name": "Ann"}]}
        else:
            case.body = {**case.body, "contacts": CSV.encode()}
    return case


def with_valid_append(case: Any) -> Any:
    """A generated append form with a real contacts file and nothing else (a generated phone_column or
    encoding is rightly refused, and most generated ids are unknown: the campaign is one of ``ids``)."""
    if isinstance(case.body, dict):
        case.body = {"contacts": CSV.encode() + b"+14155550199,Cy\n"}
    return case


def with_valid_numbers(case: Any) -> Any:
    """A generated suppressions body with a dialable number (generated strings never are one)."""
    if isinstance(case.body, dict):
        if case.media_type == "application/json":
            case.body = {**case.body, "numbers": ["+14155550100"]}
            case.body.pop("default_region", None)
        else:
            case.body = {"file": b"phone\n+14155550100\n"}
    return case


def run_operation(
    operation: Any, base_url: str, auth: dict[str, str], ids: list[str], record: Callable[[str, Failure, str], None]
) -> Counter[int]:
    """Send EXAMPLES_PER_OPERATION positive and as many negative cases; return the statuses answered."""
    statuses: Counter[int] = Counter()
    has_id = "{id}" in operation.path
    others = [p for p in operation.iter_parameters() if p.location != "path"]
    session = requests.Session()
    for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
        negative = mode is schemathesis.GenerationMode.NEGATIVE
        if negative and not (has_id or others or operation.body):
            continue  # nothing to make invalid (the public, parameterless GETs)
        if negative and operation.label in MULTIPART_POSITIVE_ONLY:
            # schemathesis 4 cannot generate these operations' negative cases: its filter validates each
            # mutated body and raises "Unsupported type: 'Binary'" on the multipart file part for some
            # draws (seen in the full suite, where the random state differs), even with media_type set
            # to the JSON body. Bad creates are fuzzed by tests/integration/test_fuzz_api.py instead, bad
            # appends tested by tests/integration/test_export_append.py.
            continue
        strategy = operation.as_strategy(generation_mode=mode)
        if has_id and not (negative and not others and not operation.body):
            # Half the cases address real campaigns; generated ids alone would only ever find 404s.
            def for_campaign(cid: str, mode: schemathesis.GenerationMode = mode) -> Any:
                return operation.as_strategy(generation_mode=mode, path_parameters={"id": cid})

            strategy = st.one_of(strategy, st.sampled_from(ids).flatmap(for_campaign))
        if operation.label in MULTIPART_POSITIVE_ONLY and not negative:
            strategy = st.one_of(strategy, strategy.map(with_valid_csv))
        if operation.label == "POST /api/v1/campaigns/{id}/contacts" and not negative:
            real = st.sampled_from(ids).flatmap(
                lambda cid, mode=mode: operation.as_strategy(generation_mode=mode, path_parameters={"id": cid}))
            strategy = st.one_of(strategy, real.map(with_valid_append))
        if operation.label == "POST /api/v1/suppressions" and not negative:
            strategy = st.one_of(strategy, strategy.map(with_valid_numbers))
        if operation.label == "DELETE /api/v1/suppressions/{number}" and not negative:
            # A listed number answers 204 once, then 404 (POST above runs first and lists it).
            listed = operation.as_strategy(generation_mode=mode, path_parameters={"number": "+14155550100"})
            strategy = st.one_of(strategy, listed)

        @settings(max_examples=EXAMPLES_PER_OPERATION, derandomize=True, deadline=None, database=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def probe(case: Any) -> None:
            try:
                response = case.call(base_url=base_url, session=session, headers=auth)
                statuses[response.status_code] += 1
                case.validate_response(response, checks=CHECKS, headers=auth)
            except FailureGroup as group:
                for failure in group.exceptions:
                    record(operation.label, failure, case.as_curl_command(headers=auth))
            except Failure as failure:
                record(operation.label, failure, case.as_curl_command(headers=auth))

        probe()
    session.close()
    return statuses


async def test_live_api_conforms_to_its_openapi_document(offline_api: Api) -> None:
    api = offline_api
    status, doc = await api.call("GET", "/api/v1/openapi.json", tenant=None)
    assert status == 200
    ids = []
    for _ in range(3):
        status, body = await api.create(CSV, default_region="US")
        assert status == 201, body
        ids.append(body["id"])
    assert (await api.call("POST", f"/api/v1/campaigns/{ids[1]}/stop"))[0] == 200  # one completed campaign

    config = schemathesis.Config.from_dict({
        # An event stream of a live campaign never ends: take its first event (the snapshot) and hang up.
        "max-stream-events": 1,
        "request-timeout": 10,
    })
    schema = schemathesis.openapi.from_dict(doc, config=config)
    operations = {}
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # the document loads without errors
        operations[result.ok().label] = result.ok()
    assert sorted(operations) == sorted(ORDER), "a new operation needs a place in ORDER"

    failures: dict[tuple[str, str], str] = {}

    def record(label: str, failure: Failure, curl: str) -> None:
        failures.setdefault((label, failure.title), f"{label}: {failure.title}\n{failure.message}\n  {curl}")

    def run_all() -> dict[str, Counter[int]]:
        return {label: run_operation(operations[label], api.base, api.auth(), ids, record) for label in ORDER}

    answered = await asyncio.to_thread(run_all)
    assert not failures, f"{len(failures)} failure(s):\n\n" + "\n\n".join(failures.values())
    # The run really exercised every operation (the parameterless GETs have one possible request), and
    # reached the success and the refusal paths, not only one of them.
    for label, statuses in answered.items():
        sent = sum(statuses.values())
        assert sent >= MINIMUM_SENT.get(label, 2 * EXAMPLES_PER_OPERATION - 10), (label, statuses)
    expected = {
        "GET /api/v1/campaigns": {200, 400},
        "GET /api/v1/call-limits": {200},
        "POST /api/v1/campaigns": {201, 400},
        "POST /api/v1/campaigns/{id}/contacts": {200, 400, 404, 409},
        "GET /api/v1/campaigns/{id}": {200, 404},
        "GET /api/v1/campaigns/{id}/contacts": {200, 400, 404},
        "GET /api/v1/campaigns/{id}/events": {200, 400, 404},
        "POST /api/v1/campaigns/{id}/start": {200, 404, 409},
        "PATCH /api/v1/campaigns/{id}": {200, 400, 404},
        "GET /api/v1/campaigns/{id}/import": {200, 400, 404},
        "DELETE /api/v1/campaigns/{id}": {204, 404},
        "GET /api/v1/suppressions": {200, 400},
        "POST /api/v1/suppressions": {200, 400},
        "DELETE /api/v1/suppressions/{number}": {204, 400, 404},
    }
    for label, codes in expected.items():
        assert codes <= set(answered[label]), (label, answered[label])


# Inputs that answered 500 before forms.py was fixed; the generators above reach them only by luck.
BAD_CREATE_FIELDS = [
    ("max_concurrent_calls", "²"),  # str.isdigit() is true, int() refuses it
    ("retries_per_contact", "١"),  # an Arabic-Indic digit: refused, not read as 1
    ("scheduled_at", "9999-12-31T23:59:59-01:00"),  # past year 9999 once in UTC
    ("scheduled_at", "0001-01-01T00:00:00+01:00"),  # before year 1 once in UTC
    ("destination", "stasis:app," + "x" * 300),  # wider than the stored column (PostgreSQL refused it)
    ("destination", "stasis:app,a\x00b"),  # NUL: PostgreSQL refuses it in text
    ("agent_id", "stasis:app,a\tb"),
]


@pytest.mark.parametrize(("field", "raw"), BAD_CREATE_FIELDS)
async def test_create_refuses_inputs_that_once_crashed_it(offline_api: Api, field: str, raw: str) -> None:
    status, body = await offline_api.create(CSV, **{field: raw})
    assert status == 400, body
    assert body["error_id"] == "invalid_field" and body["details"]["field"] in (field, "destination"), body
    assert (await offline_api.call("GET", "/api/v1/campaigns"))[1]["total"] == 0  # nothing written


async def test_query_and_header_integers_refuse_non_ascii_digits(offline_api: Api) -> None:
    status, created = await offline_api.create(CSV)
    assert status == 201
    cid = created["id"]
    for path, params, headers in [
        ("/api/v1/campaigns", {"limit": "²"}, {}),
        ("/api/v1/campaigns", {"offset": "١"}, {}),
        (f"/api/v1/campaigns/{cid}/contacts", {"limit": "٣"}, {}),
        (f"/api/v1/campaigns/{cid}/events", {"last_event_id": "²"}, {}),
        (f"/api/v1/campaigns/{cid}/events", {}, {"Last-Event-ID": "³"}),
    ]:
        status, body = await offline_api.call("GET", path, params=params, headers=headers)
        assert status == 400 and body["error_id"] == "invalid_field", (path, params, headers, body)


async def test_a_control_character_in_a_part_name_is_400(offline_api: Api) -> None:
    boundary = "b0undary"
    raw = (f'--{boundary}\r\nContent-Disposition: form-data; name="\x7f"\r\n\r\nx\r\n--{boundary}--\r\n').encode()
    status, body = await offline_api.call(
        "POST", "/api/v1/campaigns", data=raw,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert status == 400 and body["error_id"] == "invalid_form", body
