"""Campaign use cases: create (with CSV import), read, edit, delete, and the user's lifecycle actions.

The lifecycle actions (start, resume, pause, stop) go through ``lifecycle.CampaignLifecycle``, the one
place campaign transitions are decided and written and the runners kept in step.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any, Protocol

from dialerd.domain.caller_id import CallerIdPool, CallerIdStat, pool_stats
from dialerd.domain.campaign import (
    ACCEPTS_CONTACTS,
    CampaignAction,
    CampaignStatus,
    append_refused,
    initial_status,
)
from dialerd.domain.hours import CallingHours
from dialerd.domain.webhooks import DeliveryState
from dialerd.domain.zones import resolve_zones
from dialerd.errors import Conflict, InvalidInput, NotFound
from dialerd.services import results
from dialerd.services.auth import Principal
from dialerd.services.campaign_spec import CampaignSpec, bad, webhook_pair_problem  # the create form's declaration
from dialerd.services.events import EventHub
from dialerd.services.idempotency import Idempotency
from dialerd.services.importer import (
    IMPORT_BATCH_SIZE,
    ImportReport,
    ZoneFallbacks,
    append_contacts,
    import_contacts,
)
from dialerd.services.lifecycle import CampaignLifecycle
from dialerd.services.webhook_targets import check_target
from dialerd.services.webhooks import WebhookDelivery
from dialerd.store.repo import Store
from dialerd.store.tables import Attempt, Campaign, Contact, Event, ImportProblem
from dialerd.timestamps import utcnow

log = logging.getLogger("dialerd.campaigns")


# Where PATCH may change a campaign's settings: before it runs, or while it is paused.
EDITABLE_STATUSES = (CampaignStatus.DRAFT, CampaignStatus.SCHEDULED, CampaignStatus.PAUSED)


class ScheduleControl(Protocol):
    def schedule(self, campaign_id: str, at: datetime) -> None: ...

    def cancel(self, campaign_id: str) -> None: ...


@dataclass
class CampaignView:
    campaign: Campaign
    counts: dict[str, int]
    calls_in_flight: int
    report: ImportReport | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    caller_id_stats: list[CallerIdStat] = field(default_factory=list)  # per pool number (domain/caller_id.py)


class CampaignService:
    def __init__(
        self,
        store: Store,
        hub: EventHub,
        lifecycle: CampaignLifecycle,
        *,
        in_flight: Callable[[str], int] | None = None,
        scheduler: ScheduleControl | None = None,
        import_batch_size: int = IMPORT_BATCH_SIZE,
        default_timezone: str | None = None,
        webhooks: WebhookDelivery | None = None,
    ) -> None:
        self.store = store
        self.hub = hub
        self.lifecycle = lifecycle
        self.in_flight = in_flight  # calls in flight by campaign, live (None: counted from the contacts)
        self.scheduler = scheduler
        self.import_batch_size = import_batch_size
        self.default_timezone = default_timezone  # config [compliance] default_timezone, checked
        self.idempotency = Idempotency(store)
        self.webhooks = webhooks  # None: no delivery (tests of the service alone); targets still checked

    async def _check_webhook(self, url: str | None) -> None:
        if url is not None:
            await check_target(url, allow_private=self.webhooks is not None and self.webhooks.allow_private)

    # ---- create ---------------------------------------------------------------------------------

    async def create(self, who: Principal, spec: CampaignSpec, contacts: IO[bytes]) -> CampaignView:
        """Create the campaign and import its contacts, all or nothing."""
        await self._check_tenant_max(who, spec.max_concurrent_calls)
        await self._check_webhook(spec.webhook_url)
        now = utcnow()
        campaign = Campaign(
            id="cmp_" + secrets.token_hex(10),
            tenant_id=who.tenant_id,
            name=spec.name,
            status=CampaignStatus.IMPORTING.value,
            caller_id=spec.caller_id,
            destination=str(spec.destination),
            default_region=spec.default_region,
            max_concurrent_calls=spec.max_concurrent_calls,
            retries_per_contact=spec.retries_per_contact,
            retry_delay_seconds=spec.retry_delay_seconds,
            retry_rules=str(spec.retry_rules),
            ring_timeout_seconds=spec.ring_timeout_seconds,
            import_report={},
            created_by=who.key_id,
            scheduled_at=spec.scheduled_at,
            calling_hours=spec.calling_hours,
            timezone=spec.timezone,
            caller_id_strategy=spec.caller_id_strategy,
            amd=str(spec.amd),
            on_machine=str(spec.on_machine),
            webhook_url=spec.webhook_url,
            webhook_secret=spec.webhook_secret,
            created_at=now,
            updated_at=now,
        )
        await self.store.insert_campaign(campaign)
        try:
            report = await import_contacts(
                self.store, campaign.id, contacts, spec.default_region or None, batch_size=self.import_batch_size,
                phone_column=spec.phone_column, encoding=spec.encoding, tenant_id=who.tenant_id,
                zones=ZoneFallbacks(campaign=spec.timezone, default=self.default_timezone),
                hours=CallingHours.parse(spec.calling_hours),
            )
            status = initial_status(spec.scheduled_at is not None)
            await self.store.finish_import(campaign.id, status, report.as_json(max_problems=1000))
        except BaseException:
            # Nothing half-written: the campaign was invisible while importing; remove it whole, even
            # if this request is being cancelled (client went away).
            await asyncio.shield(self.store.purge_campaign(campaign.id))
            raise
        log.info(
            "campaign created",
            extra={"action": "create", "campaign_id": campaign.id, "tenant_id": who.tenant_id,
                   "contacts": report.stored, "rejected": report.rows_rejected},
        )
        if spec.scheduled_at is not None and self.scheduler is not None:
            self.scheduler.schedule(campaign.id, spec.scheduled_at)
        if spec.webhook_url is not None and self.webhooks is not None:
            await self.webhooks.reload(campaign.id)  # the events the import committed go out now
        view = await self.view(await self._get(who, campaign.id))
        view.report = report
        return view

    async def _check_tenant_max(self, who: Principal, max_concurrent_calls: int) -> None:
        """A campaign asking for more concurrent calls than its tenant may ever place could never start."""
        tenant = await self.store.get_tenant(who.tenant_id)
        if tenant is not None and max_concurrent_calls > tenant.concurrent_max:
            raise InvalidInput(
                f"max_concurrent_calls: {max_concurrent_calls} is above the tenant's concurrent_max of "
                f"{tenant.concurrent_max}; such a campaign could never start",
                error_id="invalid_field", field="max_concurrent_calls",
                max_concurrent_calls=max_concurrent_calls, concurrent_max=tenant.concurrent_max,
            )

    # ---- append ---------------------------------------------------------------------------------

    async def append(
        self, who: Principal, campaign_id: str, contacts: IO[bytes], *, phone_column: str | None = None,
        encoding: str | None = None,
    ) -> CampaignView:
        """Add the contacts of a CSV to a draft, scheduled, paused or running campaign (409 otherwise), by
        the create's rules; the view's ``report`` is the import report (duplicates include the numbers
        already in the campaign). A running campaign's runner is woken to dial the new contacts."""
        campaign = await self._get(who, campaign_id)
        self._check_append(campaign.status)
        report, appended = await append_contacts(
            self.store, campaign.id, contacts, campaign.default_region or None, tenant_id=who.tenant_id,
            into=ACCEPTS_CONTACTS, batch_size=self.import_batch_size, phone_column=phone_column, encoding=encoding,
            zones=ZoneFallbacks(campaign=campaign.timezone, default=self.default_timezone),
            hours=CallingHours.parse(campaign.calling_hours),
        )
        if not appended.accepted:  # its status changed while the file was read (a stop, or it finished)
            if appended.status is None:
                raise NotFound(f"campaign {campaign_id} not found", error_id="campaign_not_found")
            self._check_append(appended.status)
        assert appended.status is not None
        self.lifecycle.contacts_added(campaign.id, appended.status)
        log.info("contacts appended", extra={"action": "append", "campaign_id": campaign.id,
                                             "contacts": report.stored, "duplicates": report.duplicates,
                                             "rejected": report.rows_rejected, "status": appended.status})
        view = await self.view(await self._get(who, campaign.id))
        view.report = report
        return view

    @staticmethod
    def _check_append(status: str) -> None:
        refused = append_refused(CampaignStatus(status))
        if refused is not None:
            raise Conflict(refused, error_id="campaign_not_appendable", status=status)

    # ---- edit -----------------------------------------------------------------------------------

    async def update(self, who: Principal, campaign_id: str, changes: dict[str, Any]) -> CampaignView:
        """PATCH: change settings while the campaign is draft, scheduled or paused (409 otherwise)."""
        campaign = await self._get(who, campaign_id)
        if "max_concurrent_calls" in changes:
            await self._check_tenant_max(who, int(changes["max_concurrent_calls"]))
        webhook = "webhook_url" in changes or "webhook_secret" in changes
        if webhook:
            changes = self._webhook_changes(campaign, changes)
            await self._check_webhook(changes.get("webhook_url"))
        if not await self.store.update_campaign(campaign_id, who.tenant_id, changes, EDITABLE_STATUSES):
            fresh = await self._get(who, campaign_id)
            raise Conflict(
                f"campaign is {fresh.status}; its settings can be changed only while it is "
                f"{', '.join(s.value for s in EDITABLE_STATUSES)} (pause it first)",
                error_id="campaign_not_editable", status=fresh.status,
            )
        if "calling_hours" in changes or "timezone" in changes:
            fallback = None
            if "timezone" in changes:  # the number's zones stay; a fallback zone follows the campaign's
                fallback = resolve_zones("", campaign=changes["timezone"], default=self.default_timezone)
            await self.store.rezone_contacts(campaign_id, fallback)
        if webhook and self.webhooks is not None:
            await self.webhooks.reload(campaign_id)
        log.info("campaign updated", extra={"action": "update", "campaign_id": campaign.id,
                                            "fields": sorted(changes)})
        return await self.view(await self._get(who, campaign_id))

    @staticmethod
    def _webhook_changes(campaign: Campaign, changes: dict[str, Any]) -> dict[str, Any]:
        """A PATCH of the webhook: an empty webhook_url removes it (and its secret); a new URL keeps the
        secret the campaign has unless one is given; a secret alone replaces the secret of the URL it has."""
        changes = dict(changes)
        if "webhook_url" in changes and changes["webhook_url"] is None:
            if changes.get("webhook_secret") is not None:
                raise bad("webhook_secret", "given with an empty webhook_url, which removes the webhook")
            changes["webhook_secret"] = None
            return changes
        url = changes.get("webhook_url", campaign.webhook_url)
        secret = changes.get("webhook_secret", campaign.webhook_secret)
        problem = webhook_pair_problem(url, secret)
        if problem is not None:
            raise bad(*problem)
        return changes

    async def import_report(
        self, who: Principal, campaign_id: str, limit: int, offset: int
    ) -> tuple[Campaign, list[ImportProblem], int]:
        """The stored import report of a campaign and a page of its rejected rows."""
        campaign = await self._get(who, campaign_id)
        problems, total = await self.store.import_problems(campaign_id, limit, offset)
        return campaign, problems, total

    # ---- read -----------------------------------------------------------------------------------

    async def _get(self, who: Principal, campaign_id: str) -> Campaign:
        campaign = await self.store.get_campaign(campaign_id, who.tenant_id)
        if campaign is None:
            raise NotFound(f"campaign {campaign_id} not found", error_id="campaign_not_found")
        return campaign

    async def view(self, campaign: Campaign) -> CampaignView:
        counts = (await self.store.contact_counts([campaign.id]))[campaign.id]
        used = (await self.store.caller_id_counts([campaign.id]))[campaign.id]
        return CampaignView(campaign, counts, self._in_flight(campaign.id, counts),
                            caller_id_stats=pool_stats(CallerIdPool.stored(campaign.caller_id), used))

    def _in_flight(self, campaign_id: str, counts: dict[str, int]) -> int:
        if self.in_flight is not None:
            return self.in_flight(campaign_id)
        return counts.get("originated", 0) + counts.get("connected", 0)

    async def get(self, who: Principal, campaign_id: str) -> CampaignView:
        return await self.view(await self._get(who, campaign_id))

    async def list_campaigns(
        self, who: Principal, limit: int, offset: int, status: str | None = None, name: str | None = None
    ) -> tuple[list[CampaignView], int]:
        campaigns, total = await self.store.list_campaigns(who.tenant_id, limit, offset, status, name)
        counts = await self.store.contact_counts(c.id for c in campaigns)
        used = await self.store.caller_id_counts([c.id for c in campaigns])  # one grouped read for the page
        return [CampaignView(c, counts[c.id], self._in_flight(c.id, counts[c.id]),
                             caller_id_stats=pool_stats(CallerIdPool.stored(c.caller_id), used[c.id]))
                for c in campaigns], total

    async def list_contacts(
        self, who: Principal, campaign_id: str, status: str | None, limit: int, offset: int,
        after_id: int | None = None,
    ) -> tuple[list[Contact], int]:
        await self._get(who, campaign_id)
        return await self.store.list_contacts(campaign_id, status, limit, offset, after_id)

    async def results_csv(self, who: Principal, campaign_id: str, status: str | None) -> AsyncIterator[bytes]:
        """The results export of the campaign (``services/results.py``): 404 here, before the first byte;
        then the CSV's chunks, read page by page as they are consumed."""
        campaign = await self._get(who, campaign_id)
        custom = list((campaign.import_report or {}).get("custom_fields") or [])
        return results.export_csv(self.store, campaign.id, status, custom)

    async def attempt_history(self, contacts: list[Contact]) -> dict[int, list[Attempt]]:
        """Every attempt of each contact of a page (from ``list_contacts``), oldest first."""
        return await self.store.attempts_of([c.id for c in contacts if c.id is not None])

    async def webhook_state(self, who: Principal, campaign_id: str) -> tuple[str | None, DeliveryState]:
        """The campaign's webhook URL (None: it has none) and its delivery state."""
        campaign = await self._get(who, campaign_id)
        return campaign.webhook_url, await self.store.webhooks.state(campaign.id)

    async def require(self, who: Principal, campaign_id: str) -> Campaign:
        """The campaign if ``who`` may see it (404 otherwise)."""
        return await self._get(who, campaign_id)

    # ---- the event log (what the SSE stream replays) ---------------------------------------------

    async def last_event_id(self, campaign_id: str) -> int:
        """The id of the campaign's latest stored event (0 if none)."""
        return await self.store.last_event_id(campaign_id)

    async def events_after(self, campaign_id: str, after_id: int, limit: int) -> list[Event]:
        """The campaign's stored events after ``after_id``, oldest first, at most ``limit``."""
        return await self.store.events_after(campaign_id, after_id, limit)

    async def end_state(self, campaign_id: str) -> tuple[str | None, bool]:
        """The campaign's status (None once deleted) and whether any of its calls is still in flight."""
        campaign = await self.store.get_campaign(campaign_id)
        if campaign is None:
            return None, False
        return campaign.status, await self.store.has_calls_in_flight(campaign_id)

    async def _run(self, who: Principal, campaign_id: str, action: CampaignAction) -> CampaignView:
        campaign = await self.lifecycle.run(who.tenant_id, lambda: self._get(who, campaign_id), action)
        if self.scheduler is not None:
            self.scheduler.cancel(campaign.id)
        return await self.view(campaign)

    async def start(self, who: Principal, campaign_id: str) -> CampaignView:
        return await self._run(who, campaign_id, CampaignAction.START)

    async def resume(self, who: Principal, campaign_id: str) -> CampaignView:
        return await self._run(who, campaign_id, CampaignAction.RESUME)

    async def pause(self, who: Principal, campaign_id: str) -> CampaignView:
        campaign = await self.lifecycle.halting(await self._get(who, campaign_id), CampaignAction.PAUSE)
        return await self.view(campaign)

    async def stop(self, who: Principal, campaign_id: str) -> CampaignView:
        campaign = await self.lifecycle.halting(await self._get(who, campaign_id), CampaignAction.STOP,
                                                cancel_pending=True)
        if self.scheduler is not None:
            self.scheduler.cancel(campaign.id)
        return await self.view(campaign)

    async def delete(self, who: Principal, campaign_id: str) -> None:
        campaign = await self._get(who, campaign_id)
        self.lifecycle.check_delete(campaign)
        in_flight = self._in_flight(campaign.id, (await self.store.contact_counts([campaign.id]))[campaign.id])
        if in_flight:
            raise Conflict(
                f"campaign has {in_flight} calls in flight; wait for them to end before deleting",
                error_id="calls_in_flight", calls_in_flight=in_flight,
            )
        if self.scheduler is not None:
            self.scheduler.cancel(campaign.id)
        if self.webhooks is not None:
            self.webhooks.forget(campaign.id)
        await self.store.purge_campaign(campaign.id)
        log.info("campaign deleted", extra={"action": "delete", "campaign_id": campaign.id})
