"""The JSON answers, byte for byte: render.py builds them through api/schemas.py, and they say what they said
when render.py wrote dicts by hand (the strings below were captured from that renderer). Each answer also
validates against its declared model's JSON Schema (the document's components.schemas).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from pydantic import BaseModel

from dialerd.api import render, schemas
from dialerd.domain.caller_id import CallerIdStat
from dialerd.domain.campaign import CampaignStatus
from dialerd.domain.explain import Tally, explain
from dialerd.domain.rules import BlockReason, Hold
from dialerd.services.campaigns import CampaignView
from dialerd.services.csv_contacts import RowProblem
from dialerd.services.importer import ImportReport
from dialerd.store.tables import Attempt, Campaign, Contact, ImportProblem

NOW = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
REPORT = ImportReport(rows_total=3, rows_valid=2, rows_rejected=1, stored=2, phone_column="phone_number",
                      custom_fields=["first_name"], problems=[RowProblem(4, "n/a", "not a phone number", "invalid_number")],
                      phone_columns={"phone_number": 2})


def view(**changes: object) -> CampaignView:
    values: dict[str, object] = {
        "id": "cmp_4f9d2c6e0a1b3c5d7e9f", "tenant_id": "t", "name": "spring", "status": "scheduled", "caller_id": "+14155550199",
        "destination": "sales,100,2", "default_region": "US", "max_concurrent_calls": 5, "retries_per_contact": 1,
        "retry_delay_seconds": 300, "retry_rules": "busy=3@120", "ring_timeout_seconds": 30, "import_report": REPORT.as_json(max_problems=1000),
        "created_by": "key1", "scheduled_at": NOW, "created_at": NOW, "started_at": None, "completed_at": None, "updated_at": NOW,
        "start_deferred": {"reason": "tenant_concurrency_exceeded", "since": "2026-01-02T03:04:05.678Z", "detail": "d"},
    }
    values.update(changes)
    counts = {"pending": 2, "originated": 0, "connected": 0, "completed": 1, "failed": 0, "cancelled": 0}
    return CampaignView(Campaign(**values), counts, 0, caller_id_stats=[CallerIdStat("+14155550199", 4, 1, 1)])


CONTACT = Contact(id=7, campaign_id="cmp_4f9d2c6e0a1b3c5d7e9f", line=2, phone_e164="+14155550100", raw_number="(415) 555-0100",
                  fields={"first_name": "Ann"}, status="failed", attempts=2, last_attempt_at=NOW, next_attempt_at=None,
                  failure_reason="busy", hangup_cause=17, sip_code=486, updated_at=NOW)
ATTEMPTS = [
    Attempt(id=1, contact_id=7, campaign_id="cmp_4f9d2c6e0a1b3c5d7e9f", number=1, channel_id="dlr-a", state="ended",
            created_at=NOW, originated_at=NOW, ended_at=NOW, cause=17, sip_code=486, reason="busy", caller_id="+14155550199"),
    Attempt(id=2, contact_id=7, campaign_id="cmp_4f9d2c6e0a1b3c5d7e9f", number=2, channel_id="dlr-b", state="ended",
            created_at=NOW, originated_at=NOW, answered_at=NOW, ended_at=NOW, talk_seconds=4.5, cause=16,
            answered_by="human", amd_cause="HUMAN-800-800"),
    Attempt(id=3, contact_id=7, campaign_id="cmp_4f9d2c6e0a1b3c5d7e9f", number=3, channel_id="dlr-c", state="dialing",
            created_at=NOW),
]
PROBLEM = ImportProblem(id=1, campaign_id="cmp_4f9d2c6e0a1b3c5d7e9f", line=4, value="n/a", reason="not a phone number",
                        code="invalid_number")


# ---- captured from the hand-written renderer --------------------------------------------------------

CAMPAIGN = (
    '{"id": "cmp_4f9d2c6e0a1b3c5d7e9f", "name": "spring", "status": "scheduled", "caller_id": "+14155550199", "destination": "sales,100,2", "agent_id": "sales,100,2", "phone_number_id": "+14155550199", "default_region": "US", "max_concurrent_calls": 5, "retries_per_contact": 1, "retry_delay_seconds": 300, "retry_rules": "busy=3@120", "ring_timeout_seconds": 30, "calling_hours": "", "timezone": null, "scheduled_at": "2026-01-02T03:04:05.678Z", "created_at": "2026-01-02T03:04:05.678Z", "created_by": "key1", "started_at": null, "completed_at": null, "updated_at": "2026-01-02T03:04:05.678Z", "contacts": {"total": 3, "pending": 2, "originated": 0, "connected": 0, "completed": 1, "failed": 0, "cancelled": 0, "skipped": 0}, "calls_in_flight": 0, "progress": 0.3333, "import": {"rows_total": 3, "rows_valid": 2, "rows_rejected": 1, "duplicates": 0, "contacts": 2, "phone_column": "phone_number", "delimiter": ",", "custom_fields": ["first_name"], "problems_truncated": false, "encoding": "utf-8", "encoding_source": "utf-8", "phone_columns": {"phone_number": 2}, "multi_number_cells": 0, "suppressed": 0}, "start_deferred": {"reason": "tenant_concurrency_exceeded", "since": "2026-01-02T03:04:05.678Z", "detail": "d"}, "caller_id_strategy": "round_robin", "caller_id_stats": [{"caller_id": "+14155550199", "attempts": 4, "answered": 1, "answer_rate": 0.25, "rejected": 1}], "amd": "off", "on_machine": "hangup", "webhook_url": null}'
)
CAMPAIGN_OLD_REPORT = (
    '{"id": "cmp_4f9d2c6e0a1b3c5d7e9f", "name": "spring", "status": "draft", "caller_id": "+14155550199", "destination": "sales,100,2", "agent_id": "sales,100,2", "phone_number_id": "+14155550199", "default_region": null, "max_concurrent_calls": 5, "retries_per_contact": 1, "retry_delay_seconds": 300, "retry_rules": "busy=3@120", "ring_timeout_seconds": 30, "calling_hours": "", "timezone": null, "scheduled_at": null, "created_at": "2026-01-02T03:04:05.678Z", "created_by": "key1", "started_at": null, "completed_at": null, "updated_at": "2026-01-02T03:04:05.678Z", "contacts": {"total": 3, "pending": 2, "originated": 0, "connected": 0, "completed": 1, "failed": 0, "cancelled": 0, "skipped": 0}, "calls_in_flight": 0, "progress": 0.3333, "import": {"rows_total": 3, "rows_valid": 2, "rows_rejected": 1, "duplicates": 0, "contacts": 2, "phone_column": "phone_number", "delimiter": ",", "custom_fields": ["first_name"], "problems_truncated": false}, "start_deferred": null, "caller_id_strategy": "round_robin", "caller_id_stats": [{"caller_id": "+14155550199", "attempts": 4, "answered": 1, "answer_rate": 0.25, "rejected": 1}], "amd": "off", "on_machine": "hangup", "webhook_url": null}'
)
CREATED = (
    '{"id": "cmp_4f9d2c6e0a1b3c5d7e9f", "name": "spring", "status": "scheduled", "caller_id": "+14155550199", "destination": "sales,100,2", "agent_id": "sales,100,2", "phone_number_id": "+14155550199", "default_region": "US", "max_concurrent_calls": 5, "retries_per_contact": 1, "retry_delay_seconds": 300, "retry_rules": "busy=3@120", "ring_timeout_seconds": 30, "calling_hours": "", "timezone": null, "scheduled_at": "2026-01-02T03:04:05.678Z", "created_at": "2026-01-02T03:04:05.678Z", "created_by": "key1", "started_at": null, "completed_at": null, "updated_at": "2026-01-02T03:04:05.678Z", "contacts": {"total": 3, "pending": 2, "originated": 0, "connected": 0, "completed": 1, "failed": 0, "cancelled": 0, "skipped": 0}, "calls_in_flight": 0, "progress": 0.3333, "import": {"rows_total": 3, "rows_valid": 2, "rows_rejected": 1, "duplicates": 0, "contacts": 2, "phone_column": "phone_number", "delimiter": ",", "custom_fields": ["first_name"], "problems": [{"line": 4, "value": "n/a", "reason": "not a phone number", "code": "invalid_number"}], "problems_truncated": false, "encoding": "utf-8", "encoding_source": "utf-8", "phone_columns": {"phone_number": 2}, "multi_number_cells": 0, "suppressed": 0}, "start_deferred": {"reason": "tenant_concurrency_exceeded", "since": "2026-01-02T03:04:05.678Z", "detail": "d"}, "caller_id_strategy": "round_robin", "caller_id_stats": [{"caller_id": "+14155550199", "attempts": 4, "answered": 1, "answer_rate": 0.25, "rejected": 1}], "amd": "off", "on_machine": "hangup", "webhook_url": null}'
)
IMPORT_PAGE = (
    '{"campaign_id": "cmp_4f9d2c6e0a1b3c5d7e9f", "rows_total": 3, "rows_valid": 2, "rows_rejected": 1, "duplicates": 0, "contacts": 2, "phone_column": "phone_number", "delimiter": ",", "custom_fields": ["first_name"], "encoding": "utf-8", "encoding_source": "utf-8", "phone_columns": {"phone_number": 2}, "multi_number_cells": 0, "suppressed": 0, "problems": [{"line": 4, "value": "n/a", "reason": "not a phone number", "code": "invalid_number"}], "problems_total": 3, "limit": 1, "offset": 0, "next_offset": 1}'
)
CONTACT_JSON = (
    '{"id": 7, "campaign_id": "cmp_4f9d2c6e0a1b3c5d7e9f", "phone_number": "+14155550100", "raw_number": "(415) 555-0100", "line": 2, "status": "failed", "attempts": 2, "last_attempt_at": "2026-01-02T03:04:05.678Z", "next_attempt_at": null, "failure_reason": "busy", "reason": null, "hangup_cause": 17, "sip_code": 486, "custom_fields": {"first_name": "Ann"}, "updated_at": "2026-01-02T03:04:05.678Z", "timezone": null, "timezone_source": null, "next_eligible_at": null, "blocked_reason": null, "answered_by": null, "amd_cause": null}'
)
CONTACT_HISTORY_JSON = (
    CONTACT_JSON[:-1] + ', "attempt_history": ['
    '{"attempt": 1, "channel_id": "dlr-a", "state": "ended", "started_at": "2026-01-02T03:04:05.678Z", "answered_at": null, "ended_at": "2026-01-02T03:04:05.678Z", "outcome": "busy", "failure_reason": "busy", "cause": 17, "sip_code": 486, "talk_seconds": null, "caller_id": "+14155550199", "answered_by": null, "amd_cause": null}, '
    '{"attempt": 2, "channel_id": "dlr-b", "state": "ended", "started_at": "2026-01-02T03:04:05.678Z", "answered_at": "2026-01-02T03:04:05.678Z", "ended_at": "2026-01-02T03:04:05.678Z", "outcome": "completed", "failure_reason": null, "cause": 16, "sip_code": null, "talk_seconds": 4.5, "caller_id": null, "answered_by": "human", "amd_cause": "HUMAN-800-800"}, '
    '{"attempt": 3, "channel_id": "dlr-c", "state": "dialing", "started_at": "2026-01-02T03:04:05.678Z", "answered_at": null, "ended_at": null, "outcome": null, "failure_reason": null, "cause": null, "sip_code": null, "talk_seconds": null, "caller_id": null, "answered_by": null, "amd_cause": null}]}'
)
# Issue 11: a pending contact held back by its calling hours shows why and until when; a failed one never does.
HELD = Contact(id=8, campaign_id="cmp_4f9d2c6e0a1b3c5d7e9f", line=3, phone_e164="+14155550101", raw_number="4155550101",
               fields={}, status="pending", attempts=0, updated_at=NOW, timezone="America/Boise,America/Los_Angeles",
               timezone_source="number", next_eligible_at=NOW, blocked_reason="outside_calling_hours")
HELD_JSON = (
    '{"id": 8, "campaign_id": "cmp_4f9d2c6e0a1b3c5d7e9f", "phone_number": "+14155550101", "raw_number": "4155550101", "line": 3, "status": "pending", "attempts": 0, "last_attempt_at": null, "next_attempt_at": null, "failure_reason": null, "reason": null, "hangup_cause": null, "sip_code": null, "custom_fields": {}, "updated_at": "2026-01-02T03:04:05.678Z", "timezone": "America/Boise,America/Los_Angeles", "timezone_source": "number", "next_eligible_at": "2026-01-02T03:04:05.678Z", "blocked_reason": "outside_calling_hours", "answered_by": null, "amd_cause": null}'
)
ERROR = (
    '{"error": "name: is required", "error_id": "invalid_field", "details": {"field": "name"}}'
)
EXPLANATION_JSON = (
    '{"campaign_id": "cmp_4f9d2c6e0a1b3c5d7e9f", "status": "running", "dialling": true, "pending": 5, "eligible_now": 3, "blocked_by": [{"reason": "campaign_concurrency", "next_at": null, "detail": {"max_concurrent_calls": 2, "in_flight": 2}}, {"reason": "retry_delay", "contacts": 2, "next_at": "2026-01-02T03:04:05.678Z", "detail": {}}]}'
)


def _explanation() -> Any:
    at = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    return explain(
        campaign_id="cmp_4f9d2c6e0a1b3c5d7e9f", status=CampaignStatus.RUNNING, pending=5, eligible_now=3,
        in_flight=2, contact_holds={BlockReason.RETRY_DELAY: Tally(2, at)},
        campaign_holds=[Hold(BlockReason.CAMPAIGN_CONCURRENCY, detail={"max_concurrent_calls": 2, "in_flight": 2})],
    )


def _report_of_old_daemons() -> dict[str, Any]:
    # Reports stored before encoding, encoding_source, phone_columns and multi_number_cells existed.
    return {k: v for k, v in REPORT.as_json().items()
            if k not in ("encoding", "encoding_source", "phone_columns", "multi_number_cells", "suppressed")}


def _answers() -> dict[str, tuple[type[BaseModel], dict[str, Any], str]]:
    created = view()
    created.report = REPORT
    old = view(default_region="", scheduled_at=None, status="draft", start_deferred=None,
               import_report=_report_of_old_daemons())
    return {
        "campaign": (schemas.Campaign, render.campaign(view()), CAMPAIGN),
        "campaign with an old report": (schemas.Campaign, render.campaign(old), CAMPAIGN_OLD_REPORT),
        "created": (schemas.CreatedCampaign, render.campaign_created(created), CREATED),
        "import page": (schemas.ImportPage, render.import_report(view().campaign, [PROBLEM], 3, 1, 0), IMPORT_PAGE),
        "contact": (schemas.Contact, render.contact(CONTACT), CONTACT_JSON),
        "contact with attempt history": (schemas.Contact, render.contact(CONTACT, ATTEMPTS), CONTACT_HISTORY_JSON),
        "held contact": (schemas.Contact, render.contact(HELD), HELD_JSON),
        "no longer held": (schemas.Contact, render.contact(Contact(**{**CONTACT.model_dump(), "blocked_reason": "retry_delay",
                                                                      "next_eligible_at": NOW})), CONTACT_JSON),
        "error": (schemas.Error, render.error("name: is required", "invalid_field", {"field": "name"}), ERROR),
        "explanation": (schemas.Explanation, render.explanation(_explanation()), EXPLANATION_JSON),
    }


@pytest.mark.parametrize("name", list(_answers()))
def test_answers_are_what_they_were_byte_for_byte(name: str) -> None:
    _, body, expected = _answers()[name]
    assert json.dumps(body) == expected


@pytest.mark.parametrize("name", list(_answers()))
def test_answers_validate_against_their_declared_model(name: str) -> None:
    model, body, _ = _answers()[name]
    schema = model.model_json_schema(mode="serialization", by_alias=True)
    validator = Draft202012Validator(schema)
    assert not [e.message for e in validator.iter_errors(body)]
    # Not vacuous: the schema is closed and requires what the answer has.
    assert list(validator.iter_errors({**body, "surprise": 1}))
    assert list(validator.iter_errors({k: v for k, v in body.items() if k != next(iter(body))}))


@pytest.mark.parametrize("stored", [{}, {"contacts": 60}, {"rows_total": 5, "phone_column": "tel"}])
def test_a_campaign_whose_stored_report_lacks_figures_still_renders(stored: dict[str, Any]) -> None:
    """A campaign row written without an import (its column's default is {}; the benchmarks' fixture wrote
    {"contacts": N}) renders with an empty import's figures for the missing ones, never a 500."""
    answer = render.campaign(view(import_report=stored))
    Draft202012Validator(schemas.Campaign.model_json_schema(mode="serialization", by_alias=True)).validate(answer)
    shown = answer["import"]
    assert {k: shown[k] for k in stored} == stored, "what was stored is shown as stored"
    empty = ImportReport().as_json()
    assert {k: shown[k] for k in ("rows_rejected", "delimiter", "custom_fields", "problems_truncated")} == {
        k: empty[k] for k in ("rows_rejected", "delimiter", "custom_fields", "problems_truncated")}
    assert "encoding" not in shown, "an optional key absent from the stored report stays absent"
    page = render.import_report(view(import_report=stored).campaign, [], 0, 10, 0)
    Draft202012Validator(schemas.ImportPage.model_json_schema(mode="serialization", by_alias=True)).validate(page)
