"""JSON shapes of the API: campaigns, contacts, import reports, errors."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from dialerd.services.campaigns import CampaignView
from dialerd.store.tables import Contact


def ts(value: datetime | None) -> str | None:
    """RFC 3339 in UTC with a Z, or None."""
    if value is None:
        return None
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
    }


def campaign_created(view: CampaignView) -> dict[str, Any]:
    body = campaign(view)
    if view.report is not None:
        body["import"] = view.report.as_json()
    return body


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
