"""Starts scheduled campaigns at their ``scheduled_at`` (APScheduler 3, in the daemon's loop).

The start itself (the tenant's reservation, the transition, the runner) goes through
``lifecycle.CampaignLifecycle``, as a user's start does.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger

from dialerd.domain.campaign import CampaignAction, CampaignStatus
from dialerd.errors import Conflict
from dialerd.services.lifecycle import CampaignLifecycle
from dialerd.store.repo import Store
from dialerd.timestamps import utcnow

log = logging.getLogger("dialerd.scheduler")
RETRY_WHEN_FULL = timedelta(seconds=60)


class Scheduler:
    def __init__(self, store: Store, lifecycle: CampaignLifecycle) -> None:
        self._aps = AsyncIOScheduler(timezone="UTC")
        self.store = store
        self.lifecycle = lifecycle
        self.retry_when_full = RETRY_WHEN_FULL

    def start(self) -> None:
        self._aps.start()

    def shutdown(self) -> None:
        if self._aps.running:
            self._aps.shutdown(wait=False)

    def schedule(self, campaign_id: str, at: datetime) -> None:
        # A time already past (daemon was down at the time) fires at once: misfires are not dropped.
        self._aps.add_job(
            self._due, DateTrigger(run_date=max(at, utcnow())), args=[campaign_id], id=campaign_id,
            replace_existing=True, misfire_grace_time=None, coalesce=True,
        )

    def cancel(self, campaign_id: str) -> None:
        if self._aps.get_job(campaign_id) is not None:
            self._aps.remove_job(campaign_id)

    async def load(self) -> int:
        """Schedule every campaign the database holds as scheduled."""
        found = await self.store.campaigns_with_status(CampaignStatus.SCHEDULED)
        for campaign in found:
            self.schedule(campaign.id, campaign.scheduled_at or utcnow())
        return len(found)

    async def _due(self, campaign_id: str) -> None:
        campaign = await self.store.get_campaign(campaign_id)
        if campaign is None or campaign.status != CampaignStatus.SCHEDULED:
            return
        try:
            await self.lifecycle.check_reservation(campaign)
        except Conflict as exc:
            # The tenant's running campaigns reserve all its concurrency: try again in a minute. The hold is
            # shown on the campaign (start_deferred) and, the first time, as a campaign event on its stream.
            first = await self.store.set_start_deferred(campaign_id, exc.error_id, exc.message)
            log.warning("scheduled start deferred: %s", exc.message,
                        extra={"action": "schedule_deferred", "campaign_id": campaign_id, "first": first})
            self.schedule(campaign_id, utcnow() + self.retry_when_full)
            return
        await self.lifecycle.system_transition(campaign_id, CampaignAction.SCHEDULE_DUE)
