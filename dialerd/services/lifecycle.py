"""Every campaign status change, asked for by a user or not, and what each means for the runners.

Two layers, one module:

* ``CampaignTransitions`` (needs only the store): the one place a change of status is decided
  (``domain.campaign.decide``) against the stored status and written, with the event it appends; and the
  tenant's concurrency reservation that a start must respect.
* ``CampaignLifecycle`` (transitions + ``DispatchControl``): the same changes plus their effect on the
  runners. A campaign that becomes running gets a runner; pause and stop halt the runner *before* the
  write, so that once they return no origination can start.

Why two: the dispatcher itself ends campaigns (completed, failed), and those transitions never start or
halt a runner (the dispatcher halts its own). So the dispatcher takes ``CampaignTransitions``, and
``CampaignLifecycle`` takes the dispatcher: the composition root builds transitions -> dispatcher ->
lifecycle -> scheduler -> campaign service in a straight line, with nothing wired after construction.
The API's ``CampaignService`` and the ``Scheduler`` call ``CampaignLifecycle``; nothing else calls
``DispatchControl``'s ``campaign_running`` or ``halt``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from dialerd.domain.campaign import CampaignAction, CampaignStatus, TransitionRefused, decide
from dialerd.errors import Conflict
from dialerd.store.repo import Store
from dialerd.store.tables import Campaign

log = logging.getLogger("dialerd.campaigns")


class DispatchControl(Protocol):
    """What the lifecycle tells the dispatcher."""

    def campaign_running(self, campaign_id: str) -> None: ...

    def wake(self, campaign_id: str) -> None:
        """Wake the campaign's runner if it has one now (never starts one, nor undoes a halt)."""
        ...

    async def halt(self, campaign_id: str) -> None:
        """Stop originating for the campaign; return once no originate request is in progress."""
        ...


class CampaignTransitions:
    """Status changes decided and written through the store, user (raising Conflict) or system."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def transition(
        self,
        campaign: Campaign,
        action: CampaignAction,
        *,
        check: Callable[[Campaign], Awaitable[Any]] | None = None,
        cancel_pending: bool = False,
        started: bool = False,
    ) -> Campaign:
        """A user's action: the campaign as it stands after it (unchanged if it was a no-op).

        Raises Conflict if the action is refused in the campaign's status, or if another writer moved
        the campaign between its read and this write.
        """
        status = CampaignStatus(campaign.status)
        try:
            decision = decide(status, action)
        except TransitionRefused as exc:
            raise Conflict(exc.reason, error_id="invalid_transition", status=status.value,
                           action=action.value) from None
        if not decision.changed or decision.status is None:
            return campaign
        if check is not None:
            await check(campaign)
        changed, _events = await self.store.set_campaign_status(
            campaign.id, status, decision.status, event_payload={"action": action.value, "previous": status.value},
            started=started, cancel_pending=cancel_pending,
        )
        if not changed:
            # Someone else moved it between our read and our write: report the state we lost to.
            fresh = await self.store.get_campaign(campaign.id)
            now_status = fresh.status if fresh else "deleted"
            raise Conflict(f"campaign changed to {now_status} meanwhile; retry", error_id="concurrent_change",
                           status=now_status)
        log.info("campaign %s", action.value,
                 extra={"action": action.value, "campaign_id": campaign.id, "status": decision.status.value})
        fresh = await self.store.get_campaign(campaign.id)
        assert fresh is not None
        return fresh

    async def check_reservation(self, campaign: Campaign) -> None:
        """Raise Conflict if starting ``campaign`` would reserve more than its tenant's concurrent_max."""
        tenant = await self.store.get_tenant(campaign.tenant_id)
        assert tenant is not None
        reserved = await self.store.reserved_concurrency(campaign.tenant_id, excluding=campaign.id)
        if reserved + campaign.max_concurrent_calls > tenant.concurrent_max:
            raise Conflict(
                f"tenant concurrency exceeded: running campaigns reserve {reserved} of {tenant.concurrent_max} "
                f"concurrent calls and this campaign needs {campaign.max_concurrent_calls}; pause or stop another "
                "campaign, or lower max_concurrent_calls",
                error_id="tenant_concurrency_exceeded",
                reserved=reserved, concurrent_max=tenant.concurrent_max,
                requested=campaign.max_concurrent_calls,
            )

    async def system_transition(self, campaign_id: str, action: CampaignAction, **payload: Any) -> bool:
        """A transition not asked for by a user (schedule due, all contacts final, fatal error).

        True if it changed the campaign; False if the campaign is gone or its status refuses it.
        """
        return await self.system_status(campaign_id, action, **payload) is not None

    async def system_status(self, campaign_id: str, action: CampaignAction, **payload: Any) -> CampaignStatus | None:
        """``system_transition``, returning the campaign's new status (None if nothing changed)."""
        campaign = await self.store.get_campaign(campaign_id)
        if campaign is None:
            return None
        status = CampaignStatus(campaign.status)
        try:
            decision = decide(status, action)
        except TransitionRefused:
            return None
        if decision.status is None or not decision.changed:
            return None
        changed, _events = await self.store.set_campaign_status(
            campaign_id, status, decision.status, event_payload={"action": action.value,
                                                                 "previous": status.value, **payload},
            started=decision.status is CampaignStatus.RUNNING,
            # Every contact final, checked again in the write: contacts appended since the runner looked
            # keep the campaign running (Store.append_contacts).
            only_if_done=action is CampaignAction.FINISH,
        )
        if not changed:
            return None
        log.info("campaign %s", action.value,
                 extra={"action": action.value, "campaign_id": campaign_id, "status": decision.status.value})
        return decision.status


class CampaignLifecycle:
    """The transitions, with the runners kept in step: what the API's service and the scheduler call."""

    def __init__(self, transitions: CampaignTransitions, dispatch: DispatchControl) -> None:
        self.transitions = transitions
        self.store = transitions.store
        self.dispatch = dispatch
        self._tenant_locks: dict[str, asyncio.Lock] = {}

    def _lock(self, tenant_id: str) -> asyncio.Lock:
        return self._tenant_locks.setdefault(tenant_id, asyncio.Lock())

    async def check_reservation(self, campaign: Campaign) -> None:
        await self.transitions.check_reservation(campaign)

    def check_delete(self, campaign: Campaign) -> None:
        """Raise Conflict unless the campaign's status allows deleting it."""
        try:
            decide(CampaignStatus(campaign.status), CampaignAction.DELETE)
        except TransitionRefused as exc:
            raise Conflict(exc.reason, error_id="campaign_running", status=campaign.status) from None

    async def run(
        self, tenant_id: str, load: Callable[[], Awaitable[Campaign]], action: CampaignAction,
    ) -> Campaign:
        """Start or resume: check the tenant's reservation and write, then give the campaign a runner.

        ``load`` reads the campaign (raising NotFound); it runs under the tenant's lock, so two starts
        of one tenant's campaigns are checked against the reservation one after the other.
        """
        async with self._lock(tenant_id):
            campaign = await load()
            campaign = await self.transitions.transition(campaign, action, check=self.check_reservation,
                                                         started=True)
        if campaign.status == CampaignStatus.RUNNING:
            self.dispatch.campaign_running(campaign.id)
        return campaign

    async def halting(self, campaign: Campaign, action: CampaignAction, *, cancel_pending: bool = False) -> Campaign:
        """Pause or stop: halt the runner and wait for an originate in progress, then write.

        In that order so that once this returns no origination can start: the promise pause and stop
        make. If the write then loses to another writer and the campaign is still running, its runner
        is started again.
        """
        if campaign.status == CampaignStatus.RUNNING:
            decide(CampaignStatus(campaign.status), action)
            await self.dispatch.halt(campaign.id)
        try:
            return await self.transitions.transition(campaign, action, cancel_pending=cancel_pending)
        except Conflict:
            fresh = await self.store.get_campaign(campaign.id)
            if fresh is not None and fresh.status == CampaignStatus.RUNNING:
                self.dispatch.campaign_running(campaign.id)
            raise

    def contacts_added(self, campaign_id: str, status: str) -> None:
        """Contacts were appended to the campaign, in ``status`` as the append found it: a running one's
        runner is woken to dial them now (one that had found nothing due sleeps up to 5 s otherwise).

        Only woken, never started: a pause may have halted it since the append's commit, and a running
        campaign without a runner gets one from its start or the daemon's restart, not from here."""
        if status == CampaignStatus.RUNNING:
            self.dispatch.wake(campaign_id)

    async def system_transition(self, campaign_id: str, action: CampaignAction, **payload: Any) -> bool:
        """A transition not asked for by a user; a campaign it makes running gets a runner."""
        status = await self.transitions.system_status(campaign_id, action, **payload)
        if status is CampaignStatus.RUNNING:
            self.dispatch.campaign_running(campaign_id)
        return status is not None
