"""Why isn't it dialling? ``GET /api/v1/campaigns/{id}/explain``: the inputs gathered, the answer pure.

The pure ``domain/explain.explain`` orders the reasons; this service only gathers what it needs:

* the campaign's status and ``scheduled_at`` (the store);
* its pending contacts and the per-contact holds, counted in one read (``Store.pending_holds``);
* the campaign-wide holds from the dispatcher's live state (``LiveHolds``): the PBX connection, the
  campaign's and the tenant's concurrency, the tenant's pacer (and the daily caps, which the dispatcher's
  ``tenant_holds`` reports with the tenant's other limits);
* the calls up from the ledger (placed, not ended: a slot a runner reserved while it looks for a due
  contact is not a call, and would make ``dialling`` flicker).

The live holds are asked only where they matter: the PBX for a campaign that is to dial (running, paused,
scheduled: resuming it would not help while the PBX is down), the throttles only for a running one (a
paused campaign's pacer or slots say nothing about why it waits), and ``tenant_rate`` only while a contact
is eligible (with none, the pacer holds nothing back). Draft, completed and failed campaigns have no reason
of their own: their status says it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from dialerd.domain.campaign import CampaignStatus
from dialerd.domain.explain import Explanation, Tally, explain
from dialerd.domain.rules import BlockReason, Hold
from dialerd.errors import NotFound
from dialerd.services.auth import Principal
from dialerd.store.tables import Campaign
from dialerd.timestamps import utcnow

# The statuses in which the PBX being down keeps the campaign from dialling (now or once it runs).
_WILL_DIAL = (CampaignStatus.RUNNING, CampaignStatus.PAUSED, CampaignStatus.SCHEDULED)


class ExplainReads(Protocol):
    """What explain reads from the store (``store.repo.Store`` implements it)."""

    async def get_campaign(self, campaign_id: str, tenant_id: str | None = None) -> Campaign | None: ...

    async def pending_holds(self, campaign_id: str, now: datetime) -> tuple[int, dict[BlockReason, Tally]]: ...


class LiveHolds(Protocol):
    """What explain asks the dispatcher (``services.dispatcher.Dispatcher`` implements it)."""

    def calls_up(self, campaign_id: str) -> int: ...

    def pbx_hold(self) -> Hold | None: ...

    def campaign_hold(self, campaign: Campaign) -> Hold | None: ...

    async def tenant_holds(self, tenant_id: str, now: datetime | None = None) -> tuple[Hold, ...]: ...


class ExplainService:
    def __init__(self, store: ExplainReads, live: LiveHolds) -> None:
        self.store = store
        self.live = live

    async def explain(self, who: Principal, campaign_id: str, now: datetime | None = None) -> Explanation:
        """The answer for the caller's campaign; NotFound for an unknown one or another tenant's."""
        now = now or utcnow()
        campaign = await self.store.get_campaign(campaign_id, who.tenant_id)
        if campaign is None:
            raise NotFound(f"campaign {campaign_id} not found", error_id="campaign_not_found")
        status = CampaignStatus(campaign.status)
        pending, contact_holds = await self.store.pending_holds(campaign.id, now)
        wide: list[Hold | None] = []
        if status in _WILL_DIAL:
            wide.append(self.live.pbx_hold())
        held = sum(t.contacts for t in contact_holds.values())
        eligible = max(0, pending - held)
        if status is CampaignStatus.RUNNING:
            wide.append(self.live.campaign_hold(campaign))
            for hold in await self.live.tenant_holds(campaign.tenant_id, now):
                # An idle runner takes a rate token each time it looks for a due contact, so the pacer
                # "holds" for an instant even when nothing could be dialled: only say so when it holds
                # back a contact.
                if hold.reason is not BlockReason.TENANT_RATE or eligible > 0:
                    wide.append(hold)
        return explain(
            campaign_id=campaign.id, status=status, pending=pending, eligible_now=eligible,
            in_flight=self.live.calls_up(campaign.id), contact_holds=contact_holds,
            campaign_holds=[h for h in wide if h is not None], scheduled_at=campaign.scheduled_at,
            # A start due but held back by the tenant's cap (retried every minute) says so, and since when.
            scheduled_detail={"start_deferred": campaign.start_deferred} if campaign.start_deferred else None,
        )
