"""JSON shapes of the API: campaigns, contacts, import reports, errors."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from dialerd.services.campaigns import CampaignView
from dialerd.store.tables import Campaign, Contact, ImportProblem
from dialerd.timestamps import rfc3339_or_none


def ts(value: datetime | None) -> str | None:
    """RFC 3339 in UTC with milliseconds and a Z (``dialerd.timestamps``, the one format), or None."""
    return rfc3339_or_none(value)


def campaign(view: CampaignView) -> dict[str, Any]:
    c = view.campaign
    counts = dict(view.counts)
    total = sum(counts.values())
    report = c.import_report or {}
    return {
        "id": c.id,
        "name": c.name,
        "status": c.status,
        "caller_id": c.caller_id,
        "destination": c.destination,
        # The reference API's names for the same two things, for SDKs written against it.
        "agent_id": c.destination,
        "phone_number_id": c.caller_id,
        "default_region": c.default_region or None,
        "max_concurrent_calls": c.max_concurrent_calls,
        "retries_per_contact": c.retries_per_contact,
        "retry_delay_seconds": c.retry_delay_seconds,
        "ring_timeout_seconds": c.ring_timeout_seconds,
        "scheduled_at": ts(c.scheduled_at),
        "created_at": ts(c.created_at),
        "created_by": c.created_by,
        "started_at": ts(c.started_at),
        "completed_at": ts(c.completed_at),
        "updated_at": ts(c.updated_at),
        "contacts": {"total": total, **counts},
        "calls_in_flight": view.calls_in_flight,
        "progress": round((counts.get("completed", 0) + counts.get("failed", 0) + counts.get("cancelled", 0))
                          / total, 4) if total else 0.0,
        "import": {k: v for k, v in report.items() if k != "problems"},
        # A scheduled start held back by the tenant's concurrency cap: {"reason", "since", "detail"}, else null.
        "start_deferred": c.start_deferred or None,
    }


def campaign_created(view: CampaignView) -> dict[str, Any]:
    body = campaign(view)
    if view.report is not None:
        body["import"] = view.report.as_json()
    return body


def import_report(
    c: Campaign, problems: list[ImportProblem], total: int, limit: int, offset: int
) -> dict[str, Any]:
    """GET /campaigns/{id}/import: the stored report's figures and a page of every rejected row."""
    report = {k: v for k, v in (c.import_report or {}).items() if k not in ("problems", "problems_truncated")}
    more = offset + len(problems) < total
    return {
        "campaign_id": c.id,
        **report,
        "problems": [{"line": p.line, "value": p.value, "reason": p.reason, "code": p.code} for p in problems],
        "problems_total": total,
        "limit": limit,
        "offset": offset,
        "next_offset": offset + len(problems) if more else None,
    }


def contact(c: Contact) -> dict[str, Any]:
    return {
        "id": c.id,
        "campaign_id": c.campaign_id,
        "phone_number": c.phone_e164,
        "raw_number": c.raw_number,
        "line": c.line,
        "status": c.status,
        "attempts": c.attempts,
        "last_attempt_at": ts(c.last_attempt_at),
        "next_attempt_at": ts(c.next_attempt_at),
        "failure_reason": c.failure_reason,
        "hangup_cause": c.hangup_cause,
        "sip_code": c.sip_code,
        "custom_fields": c.fields,
        "updated_at": ts(c.updated_at),
    }


def error(message: str, error_id: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": message, "error_id": error_id, "details": details or {}}
