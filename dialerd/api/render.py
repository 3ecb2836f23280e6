"""JSON answers of the API, built through the declared objects (``api/schemas.py``).

Every function fills a model and dumps it: the model fixes the keys, their order and how times are
written, so an answer cannot say more or less than the document. The inputs are the services' views
and rows, read by attribute: nothing here imports the store.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from dialerd.api import schemas
from dialerd.domain.contact import ContactStatus
from dialerd.domain.explain import Explanation
from dialerd.domain.webhooks import DeliveryState
from dialerd.services.campaigns import CampaignView
from dialerd.services.importer import ImportReport
from dialerd.services.suppressions import AddResult, reject_json


def dump(model: BaseModel) -> dict[str, Any]:
    """The model as JSON values under the API's names; optional keys never set are left out."""
    return model.model_dump(mode="json", by_alias=True, exclude_unset=True)


def _known(model: type[BaseModel], report: Mapping[str, Any]) -> dict[str, Any]:
    """The stored report's keys this object shows (a report is stored whole; each answer shows a part).

    A figure the stored report lacks is an empty import's (a campaign row written without an import, e.g.
    by a migration or a bench fixture, holds ``{}``): the answer keeps its shape instead of a 500.
    """
    whole = {**_EMPTY_REPORT, **report}
    return {k: v for k, v in whole.items() if k in model.model_fields}


# The required figures of an import that read nothing; the optional keys (encoding, ...) stay absent.
_EMPTY_REPORT: dict[str, Any] = {
    k: v for k, v in ImportReport().as_json().items()
    if k in schemas.ImportReport.model_fields and schemas.ImportReport.model_fields[k].is_required()
}


def _not_null(value: datetime | None) -> datetime:
    """A NOT NULL column's time (the row type allows None only before the row is written)."""
    assert value is not None
    return value


_FINAL = frozenset(s.value for s in ContactStatus if s.final)


def _campaign(view: CampaignView, model: type[schemas.Campaign], report: Any) -> schemas.Campaign:
    """``report``: an ImportSummary, or for the create answer (``CreatedCampaign``) an ImportReport."""
    c = view.campaign
    counts = {s.value: view.counts.get(s.value, 0) for s in ContactStatus}  # a status added later counts 0
    total = sum(counts.values())
    done = sum(n for status, n in counts.items() if status in _FINAL)
    return model(
        id=c.id,
        name=c.name,
        status=c.status,
        caller_id=c.caller_id,
        destination=c.destination,
        # The reference API's names for the same two things, for SDKs written against it.
        agent_id=c.destination,
        phone_number_id=c.caller_id,
        default_region=c.default_region or None,
        max_concurrent_calls=c.max_concurrent_calls,
        retries_per_contact=c.retries_per_contact,
        retry_delay_seconds=c.retry_delay_seconds,
        retry_rules=c.retry_rules or "",
        ring_timeout_seconds=c.ring_timeout_seconds,
        calling_hours=c.calling_hours,
        timezone=c.timezone,
        scheduled_at=c.scheduled_at,
        created_at=_not_null(c.created_at),
        created_by=c.created_by,
        started_at=c.started_at,
        completed_at=c.completed_at,
        updated_at=_not_null(c.updated_at),
        contacts=schemas.ContactCounts.model_validate({"total": total, **counts}),
        calls_in_flight=view.calls_in_flight,
        progress=round(done / total, 4) if total else 0.0,
        import_=report,
        # A scheduled start held back by the tenant's concurrency cap: {"reason", "since", "detail"}, else null.
        start_deferred=schemas.StartDeferred.model_validate(c.start_deferred) if c.start_deferred else None,
        caller_id_strategy=c.caller_id_strategy,
        caller_id_stats=[schemas.CallerIdStats(caller_id=s.caller_id, attempts=s.attempts, answered=s.answered,
                                               answer_rate=s.answer_rate, rejected=s.rejected)
                         for s in view.caller_id_stats],
        amd=c.amd,
        on_machine=c.on_machine,
        webhook_url=c.webhook_url,  # never the secret
    )


def campaign(view: CampaignView) -> dict[str, Any]:
    summary = schemas.ImportSummary.model_validate(_known(schemas.ImportSummary, view.campaign.import_report or {}))
    return dump(_campaign(view, schemas.Campaign, summary))


def campaign_created(view: CampaignView) -> dict[str, Any]:
    if view.report is None:
        return campaign(view)
    report = schemas.ImportReport.model_validate(view.report.as_json())
    return dump(_campaign(view, schemas.CreatedCampaign, report))


def contacts_appended(view: CampaignView) -> dict[str, Any]:
    """POST /campaigns/{id}/contacts: the append's report and the campaign's counts after it."""
    assert view.report is not None
    counts = {s.value: view.counts.get(s.value, 0) for s in ContactStatus}
    return dump(schemas.ContactsAppended(
        campaign_id=view.campaign.id, status=view.campaign.status,
        import_=schemas.ImportReport.model_validate(view.report.as_json()),
        contacts=schemas.ContactCounts.model_validate({"total": sum(counts.values()), **counts}),
    ))


def import_report(campaign: Any, problems: Iterable[Any], total: int, limit: int, offset: int) -> dict[str, Any]:
    """GET /campaigns/{id}/import: the stored report's figures and a page of every rejected row."""
    rows = [schemas.RowProblem.model_validate(p, from_attributes=True) for p in problems]
    more = offset + len(rows) < total
    return dump(schemas.ImportPage.model_validate({
        **_known(schemas.ImportPage, campaign.import_report or {}),
        "campaign_id": campaign.id,
        "problems": rows,
        "problems_total": total,
        "limit": limit,
        "offset": offset,
        "next_offset": offset + len(rows) if more else None,
    }))


def contact(row: Any, attempts: Iterable[Any] | None = None) -> dict[str, Any]:
    """A contact row of the store (``CampaignService.list_contacts``), read by attribute; with
    ``attempts`` (its attempt rows, ``CampaignService.attempt_history``) also its ``attempt_history``."""
    model = schemas.Contact.model_validate(row)
    if model.status != ContactStatus.PENDING.value:  # a hold means something only while it is pending
        model.next_eligible_at = model.blocked_reason = None
    if attempts is not None:
        model.attempt_history = [attempt(a) for a in attempts]
    return dump(model)


def attempt(row: Any) -> schemas.AttemptRecord:
    """An attempt row of the store; ``outcome`` from its state and reason."""
    if row.state == "ended":
        outcome = row.reason or "completed"
    elif row.state == "not_dialled":
        outcome = "not_dialled"
    else:
        outcome = None
    return schemas.AttemptRecord(
        attempt=row.number, channel_id=row.channel_id, state=row.state, started_at=_not_null(row.created_at),
        answered_at=row.answered_at, ended_at=row.ended_at, outcome=outcome, failure_reason=row.reason,
        cause=row.cause, sip_code=row.sip_code, talk_seconds=row.talk_seconds, caller_id=row.caller_id,
        answered_by=row.answered_by, amd_cause=row.amd_cause,
    )


def call_limits(body: Mapping[str, Any]) -> dict[str, Any]:
    """The tenant's limits and usage (``CallLimits.get``)."""
    return dump(schemas.CallLimits.model_validate(body))


def explanation(answer: Explanation) -> dict[str, Any]:
    """GET /campaigns/{id}/explain (``domain/explain.Explanation``)."""
    return dump(schemas.Explanation.model_validate(answer.as_json()))


def webhook_state(url: str | None, state: DeliveryState) -> dict[str, Any]:
    """GET /campaigns/{id}/webhook: the delivery state; without a webhook, its URL is null and nothing pends."""
    hooked = url is not None
    return dump(schemas.WebhookState(
        url=url, delivered_through=state.delivered_through,
        pending=state.pending if hooked else 0, dead=state.dead, last_error=state.last_error,
        last_attempt_at=state.last_attempt_at, next_attempt_at=state.next_attempt_at if hooked else None,
    ))


def error(message: str, error_id: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return dump(schemas.Error(error=message, error_id=error_id, details=details or {}))


def suppressions_added(result: AddResult) -> dict[str, Any]:
    """The answer to POST /suppressions."""
    return dump(schemas.SuppressionsAdded(
        added=result.added, already=result.already, duplicates=result.duplicates,
        rejected=[schemas.SuppressionReject(**reject_json(r, result.by_line)) for r in result.rejected],
        rejected_total=result.rejected_total,
    ))


def suppression_page(rows: Iterable[Any], total: int, limit: int, offset: int) -> dict[str, Any]:
    """GET /suppressions: a page of entries (store rows, read by attribute)."""
    entries = [schemas.Suppression.model_validate(r) for r in rows]
    nxt = offset + len(entries)
    return dump(schemas.SuppressionList(suppressions=entries, total=total, limit=limit, offset=offset,
                                        next_offset=nxt if nxt < total else None))
