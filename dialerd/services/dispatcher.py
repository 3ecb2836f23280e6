"""The dispatcher: one owned task per running campaign, originating within every cap.

Caps (all enforced here, in one process): the campaign's ``max_concurrent_calls``, the tenant's
``concurrent_max`` across its campaigns, and the tenant's ``calls_per_minute`` (smooth pacing plus a
hard 60 s window), and the tenant's daily caps (``daily_calls_max`` attempts started,
``daily_minutes_max`` answered talk minutes, per calendar day in the tenant's ``timezone``; the ledger
keeps the day's usage). A slot is *reserved* synchronously before any await, so two runners of one tenant
can never both take the last slot; a start is counted against ``daily_calls_max`` in the same step, so
the tenant's campaigns together start exactly ``daily_calls_max`` attempts a day. A runner held by a
daily cap stays ``running`` and sleeps until the tenant's midnight (re-checking the tenant's limits every
few seconds, an operator may raise them), then carries on by itself.

Order of effects per attempt: the attempt row (with its channel id) is committed, then the originate
request leaves. What happens to the call then is followed by the ``CallFollower`` the dispatcher owns
(``following.py``); the two share the in-flight ledger (``slots.py``), where a slot reserved here is freed
when the follower records the call's end.

The dispatcher ends campaigns itself (nothing left to dial: completed; the PBX refusing every call:
failed) through ``CampaignTransitions`` (``lifecycle.py``), the layer of the campaign lifecycle that
needs only the store. The layer above it (``CampaignLifecycle``) starts and halts runners through the
dispatcher; so the composition root builds transitions -> dispatcher -> lifecycle, a straight line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime

from dialerd.domain.amd import AmdMode, AmdPlan, OnMachine
from dialerd.domain.call import CallEvent, Destination, OriginateRequest, Skipped
from dialerd.domain.caller_id import CallerIdPool
from dialerd.domain.caller_id import choose as choose_caller_id
from dialerd.domain.campaign import CampaignAction, CampaignStatus
from dialerd.domain.cluster import FULL_RECHECK, Fenced
from dialerd.domain.contact import FailureReason
from dialerd.domain.rules import BlockReason, Hold
from dialerd.faults import Failpoints
from dialerd.ports import DispatchStore, OriginateError, Pbx
from dialerd.services.cluster import ClusterMember
from dialerd.services.following import CallFollower
from dialerd.services.lifecycle import CampaignTransitions
from dialerd.services.slots import TENANT_REFRESH_SECONDS, Slots
from dialerd.store.repo import priority_context
from dialerd.store.tables import Attempt, Campaign, Contact
from dialerd.tasks import TaskOwner
from dialerd.timestamps import utcnow

log = logging.getLogger("dialerd.dispatcher")

CAMPAIGN_RECHECK_SECONDS = 1.0  # a running campaign's row is re-read at most this often by its runner
MAX_CONSECUTIVE_ORIGINATE_ERRORS = 5
SHARED_HOLD_FRESH = 2.0  # seconds a hold the shared claim gave is reported by explain


class Dispatcher:
    """Runs campaigns within their caps; owns the CallFollower; implements ``lifecycle.DispatchControl``
    and the PBX adapter's ``PbxSink`` (call events go on to the follower)."""

    def __init__(
        self,
        store: DispatchStore,
        pbx: Pbx,
        slots: Slots,
        transitions: CampaignTransitions,
        *,
        clock: Callable[[], float] = time.monotonic,
        tasks: TaskOwner | None = None,
        failpoints: Failpoints | None = None,
        cluster: ClusterMember | None = None,
        max_channels: int = 0,
    ) -> None:
        self.store = store
        # PostgreSQL: this daemon's seat among several; its claims are counted across all of them.
        self.cluster = cluster
        self.max_channels = max_channels  # [pbx] max_channels: this daemon's calls at once (0: no limit)
        self.pbx = pbx
        self.slots = slots
        self.transitions = transitions
        self.clock = clock
        self.tasks = TaskOwner() if tasks is None else tasks  # every task and timer (all critical)
        self.faults = failpoints or Failpoints()
        self.pbx_up = asyncio.Event()
        self.follower = CallFollower(store, pbx, slots, pbx_up=self.pbx_up, tasks=self.tasks,
                                     failpoints=self.faults,
                                     node_id=None if cluster is None else cluster.node_id)
        self.accepting = True  # False once shutdown began: no new originations
        self._runners: dict[str, asyncio.Task[None]] = {}
        self._dial_locks: dict[str, asyncio.Lock] = {}
        self._halted: set[str] = set()
        self._originate_errors: dict[str, int] = {}
        self.originations = 0
        self.originations_by_tenant: Counter[str] = Counter()  # exported by api/prometheus.py
        # Calls placed per campaign from its caller-id pool: the round robin's position. In memory only, so
        # a restart starts each rotation again from the pool's first number (documented in the README).
        self._caller_id_turns: Counter[str] = Counter()
        # With several daemons: the last cap counted across them that held each campaign's claim, and when
        # (the clock's time); explain reports it while fresh (SHARED_HOLD_FRESH).
        self.held_shared: dict[str, tuple[Hold, float]] = {}
        self._yielded: set[str] = set()  # campaigns past this daemon's share that waited once (fair_share)

    @property
    def outcomes(self) -> Counter[str]:
        """Ended attempts by 'completed' or failure reason (counted by the follower)."""
        return self.follower.outcomes

    # ---- start and stop -------------------------------------------------------------------------

    async def start(self) -> None:
        self.follower.start()
        await self.pbx.start(self)

    async def recover(self) -> int:
        """After a restart: count and reconcile the attempts left in flight (see CallFollower.recover)."""
        return await self.follower.recover()

    async def resume_running(self) -> None:
        """Start runners for campaigns the database says are running and that have none here (after a
        restart; and with several daemons, at each heartbeat: campaigns started on another one)."""
        for campaign in await self.store.campaigns_with_status(CampaignStatus.RUNNING):
            if campaign.id not in self._runners:
                self.campaign_running(campaign.id)

    async def stop_originating(self) -> None:
        """Shutdown stage 1: no new originations; wait for in-progress originate requests."""
        self.accepting = False
        for cid in list(self._runners):
            await self.halt(cid)

    async def wait_calls_done(self, grace: float) -> int:
        """Shutdown stage 2: follow live calls up to ``grace`` seconds; return how many are still up."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self.slots.wait_empty()
        return self.slots.total()

    async def close(self) -> None:
        for task in list(self._runners.values()):
            task.cancel()
        await asyncio.gather(*self._runners.values(), return_exceptions=True)
        await self.pbx.close()
        await self.follower.close()  # after the PBX is closed: nothing more is queued

    # ---- PbxSink ------------------------------------------------------------------------------

    def call_event(self, event: CallEvent) -> None:
        self.follower.call_event(event)

    def connection_changed(self, connected: bool) -> None:
        if connected:
            self.pbx_up.set()
            log.info("pbx connected", extra={"action": "pbx_connected"})
        else:
            self.pbx_up.clear()
            log.warning("pbx disconnected; originations paused", extra={"action": "pbx_disconnected",
                                                                        "reason": self.dialling_held})
            # A runner pacing its next request wakes now and gives that attempt back unsent.
            for campaign_id in list(self._runners):
                self.slots.poke(campaign_id)

    @property
    def dialling_held(self) -> str | None:
        """Why no call is being originated although campaigns may run: the PBX adapter's reason
        (``pbx_down``, ``ari_app_replaced``), or None while dialling is possible."""
        if self.pbx_up.is_set() and self.pbx.connected:
            return None
        return self.pbx.held_reason or "pbx_down"

    @property
    def pbx_last_error(self) -> str | None:
        return self.pbx.last_error

    # ---- live holds, for explain (services/explain.py) ---------------------------------------------

    def calls_up(self, campaign_id: str) -> int:
        """The campaign's calls placed and not yet ended (the ledger's ``calls_up``)."""
        return self.slots.calls_up(campaign_id)

    def pbx_hold(self) -> Hold | None:
        """``pbx_disconnected`` while no call can be originated (see ``dialling_held``), else None."""
        held = self.dialling_held
        if held is None:
            return None
        return Hold(BlockReason.PBX_DISCONNECTED, detail={"held": held, "last_error": self.pbx.last_error})

    def campaign_hold(self, campaign: Campaign) -> Hold | None:
        """``campaign_concurrency`` while the campaign's slots are all taken (lifts when one of its calls
        ends: no time known), else None."""
        in_flight = self.slots.calls_in_flight(campaign.id)
        if in_flight < campaign.max_concurrent_calls:
            # Several daemons: the cap may be full with the others' calls (the last shared claim said so).
            shared = self._shared_holds(lambda cid: cid == campaign.id)
            return next((h for h in shared if h.reason is BlockReason.CAMPAIGN_CONCURRENCY), None)
        return Hold(BlockReason.CAMPAIGN_CONCURRENCY,
                    detail={"max_concurrent_calls": campaign.max_concurrent_calls, "in_flight": in_flight})

    # ---- DispatchControl ----------------------------------------------------------------------

    def calls_in_flight(self, campaign_id: str) -> int:
        return self.slots.calls_in_flight(campaign_id)

    def tenant_in_flight(self, tenant_id: str) -> int:
        return self.slots.tenant_in_flight(tenant_id)

    def tenant_caps(self) -> dict[str, int]:
        """The tenants dialled for (or found in flight) so far, and their ``concurrent_max``."""
        return self.slots.tenant_caps()

    async def tenant_holds(self, tenant_id: str, now: datetime | None = None) -> tuple[Hold, ...]:
        """What holds back the tenant's new originations at ``now`` (default: the ledger's wall clock):
        ``daily_calls_max`` / ``daily_minutes_max`` (``until`` the tenant's next midnight, ``detail``
        ``{"limit", "used", "timezone"}``), ``tenant_concurrency`` and ``tenant_rate``; () when none does.
        Reads the tenant's limits and today's usage if the ledger has not yet: explain learns of every
        tenant limit from this one method."""
        await self.slots.tenant(tenant_id)
        holds = list(self.slots.tenant_holds(tenant_id, now))
        # Several daemons: what the shared claim last said of the tenant's caps (its calls on every PBX).
        seen = {h.reason for h in holds}
        for hold in self._shared_holds(lambda cid: self.slots.watched_tenant(cid) == tenant_id):
            if hold.reason is not BlockReason.CAMPAIGN_CONCURRENCY and hold.reason not in seen:
                holds.append(hold)
                seen.add(hold.reason)
        return tuple(holds)

    def _shared_holds(self, which: Callable[[str], bool]) -> list[Hold]:
        """The shared claim's holds of the campaigns ``which`` selects, recorded within SHARED_HOLD_FRESH."""
        now = self.clock()
        return [hold for cid, (hold, at) in self.held_shared.items()
                if which(cid) and now - at <= SHARED_HOLD_FRESH]

    def running_campaigns(self) -> list[str]:
        """The campaigns that have a runner now."""
        return list(self._runners)

    def campaign_running(self, campaign_id: str) -> None:
        self._halted.discard(campaign_id)
        if not self.accepting:
            return
        task = self._runners.get(campaign_id)
        if task is not None and not task.done():
            self.slots.poke(campaign_id)
            return
        task = self.tasks.spawn(f"campaign-{campaign_id}", self._run(campaign_id), critical=True,
                                context=priority_context())
        self._runners[campaign_id] = task

    def wake(self, campaign_id: str) -> None:
        """New contacts (an append): the campaign's runner, if it has one, looks for due contacts now."""
        if campaign_id in self._runners:
            self.slots.poke(campaign_id)

    def campaign_halted(self, campaign_id: str) -> None:
        self._halted.add(campaign_id)
        self.slots.poke(campaign_id)

    async def halt(self, campaign_id: str) -> None:
        """Stop originating for the campaign and wait until no originate request is in progress."""
        self.campaign_halted(campaign_id)
        async with self._dial_lock(campaign_id):
            pass

    # ---- the runner -------------------------------------------------------------------------------

    def _dial_lock(self, campaign_id: str) -> asyncio.Lock:
        return self._dial_locks.setdefault(campaign_id, asyncio.Lock())

    def _active(self, campaign_id: str) -> bool:
        return self.accepting and campaign_id not in self._halted

    async def _run(self, campaign_id: str) -> None:
        self.slots.wake_event(campaign_id)
        log.info("runner started", extra={"action": "runner_start", "campaign_id": campaign_id})
        campaign: Campaign | None = None
        read_at = 0.0
        try:
            while self._active(campaign_id):
                # Perf (docs/benchmarks.md, section 1): the campaign row was read on every turn, twice or
                # more per call. Its settings never change while it runs, and this process's pause/stop/
                # finish reach the runner through halt(); the re-read only notices a change made by another
                # process (e.g. a second daemon on the same PostgreSQL database) within a second.
                if campaign is None or self.clock() - read_at >= CAMPAIGN_RECHECK_SECONDS:
                    campaign = await self.store.get_campaign(campaign_id)
                    read_at = self.clock()
                    if campaign is None or not CampaignStatus(campaign.status).dispatching:
                        return
                if not self.pbx_up.is_set():
                    await self._wait_pbx(campaign_id)
                    continue
                await self._step(campaign)
        finally:
            self._runners.pop(campaign_id, None)
            self.slots.unwatch(campaign_id)
            log.info("runner stopped", extra={"action": "runner_stop", "campaign_id": campaign_id})

    async def _wait_pbx(self, campaign_id: str) -> None:
        wake = self.slots.wake_event(campaign_id)
        waiters = {asyncio.ensure_future(self.pbx_up.wait()), asyncio.ensure_future(wake.wait())}
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
            wake.clear()

    async def _step(self, campaign: Campaign) -> None:
        cid = campaign.id
        slots = self.slots
        slots.watch(cid, campaign.tenant_id)
        tenant = await slots.tenant(campaign.tenant_id)
        if self.max_channels and slots.reserved() >= self.max_channels:
            await slots.sleep(cid, 0.5)  # woken by the end of one of its tenant's calls, else looks again
            return
        if slots.calls_in_flight(cid) >= campaign.max_concurrent_calls:
            await slots.sleep(cid, 5.0)
            return
        if (self.cluster is not None and cid not in self._yielded
                and slots.calls_in_flight(cid) >= self.cluster.fair_share(campaign.max_concurrent_calls)):
            # Past its share of the campaign: the other daemons get one look at the freed slot first.
            self._yielded.add(cid)
            await asyncio.sleep(FULL_RECHECK.total_seconds())
            return
        self._yielded.discard(cid)
        if slots.tenant_in_flight(tenant.tenant_id) >= tenant.concurrent_max:
            await slots.sleep(cid, 0.5)
            return
        daily = slots.daily_holds(tenant.tenant_id)
        if daily:
            await self._held_today(campaign, daily)
            return
        delay = tenant.pacer.delay(self.clock())
        if delay > 0:
            await slots.sleep(cid, delay)
            return
        # Reserve the slot, the rate token and the day's start before any await (see the module docstring).
        tenant.pacer.record(self.clock())
        slots.reserve(cid, tenant.tenant_id)
        counted = slots.count_start(tenant.tenant_id)
        outcome = _Dial()
        try:
            await self._dial_next(campaign, outcome)
        finally:
            if not outcome.kept:
                slots.uncount_start(tenant.tenant_id, counted)
            if not outcome.dialled:
                # A reservation nothing used wakes no one: woken by its own release, an idle runner
                # (contacts held until an opening, a retry time) would poll at the tenant's pace instead
                # of sleeping until the time next_retry_time names; two idle runners of a tenant would
                # wake each other. A runner that found the tenant full meanwhile looks again within 0.5 s.
                slots.release(cid, tenant.tenant_id, wake=False)
        if outcome.wait is not None:
            await slots.sleep(cid, outcome.wait)  # a cap counted across the daemons holds (cluster_hold)
        elif not outcome.dialled:
            await self._idle(campaign)

    async def _held_today(self, campaign: Campaign, holds: tuple[Hold, ...]) -> None:
        """A daily cap of the tenant is reached: the campaign stays running (unless nothing is left to dial)
        and waits for the day's end, re-reading the tenant's limits every TENANT_REFRESH_SECONDS."""
        cid = campaign.id
        if self.slots.calls_in_flight(cid) == 0 and await self.store.unfinished_contacts(cid) == 0:
            await self._finish(cid)
            return
        until = min(h.until for h in holds if h.until is not None)
        wait = (until - self.slots.wall()).total_seconds()
        await self.slots.sleep(cid, min(TENANT_REFRESH_SECONDS, max(0.01, wait)))

    async def _idle(self, campaign: Campaign) -> None:
        """Nothing was due: finish the campaign, or wait for the earliest time a waiting contact may be
        claimed (a retry, the end of a hold: ``next_retry_time``), at most 5 s, or a freed slot."""
        cid = campaign.id
        if self.slots.calls_in_flight(cid) == 0 and await self.store.unfinished_contacts(cid) == 0:
            await self._finish(cid)
            return
        next_retry = await self.store.next_retry_time(cid)
        wait = 5.0
        if next_retry is not None:
            wait = min(wait, max(0.05, (next_retry - utcnow()).total_seconds()))
        await self.slots.sleep(cid, wait)

    async def _finish(self, cid: str) -> None:
        """Nothing left to dial: complete the campaign and stop its runner. The store checks again in the
        write; if contacts were appended meanwhile (or the campaign left running), the runner carries on
        and the next turn claims them (or sees the new status)."""
        if await self.transitions.system_transition(cid, CampaignAction.FINISH):
            self._halted.add(cid)
            return
        await self.slots.sleep(cid, 0.05)  # bounded: an append's poke wakes it at once

    async def _dial_next(self, campaign: Campaign, outcome: _Dial) -> None:
        """Claim one due contact and originate it. ``outcome``: whether a call is now in flight, and
        whether an attempt row was kept (it counts against the tenant's ``daily_calls_max``)."""
        async with self._dial_lock(campaign.id):
            if not self._active(campaign.id) or not self.pbx_up.is_set():
                return
            claimed = await (self._claim(campaign) if self.cluster is None else self._claim_shared(campaign, outcome))
            if claimed is None:
                return
            contact, attempt = claimed
            channel_id = attempt.channel_id
            outcome.kept = True
            self.slots.hold(channel_id, campaign.id, campaign.tenant_id)
            self.faults.hit("after_attempt")
            if not await self._pace_send(campaign.tenant_id, campaign.id):
                # Paused, stopped, shutting down or the PBX went away while it waited: never sent.
                self.slots.drop(channel_id)
                await asyncio.shield(self.store.give_back_attempt(channel_id))
                outcome.kept = False
                return
            request = self._request(campaign, contact, attempt)
            try:
                name = await self.pbx.originate(request)
            except OriginateError as exc:
                outcome.kept = await self._originate_failed(campaign, attempt, exc)
                outcome.dialled = self.slots.holds(channel_id)
                return
            self.originations += 1
            self._originate_errors.pop(campaign.id, None)
            self.originations_by_tenant[campaign.tenant_id] += 1
            self.faults.hit("after_originate")
            await self.follower.originated(channel_id, name)
            log.info("originated", extra={"action": "originate", "campaign_id": campaign.id,
                                          "contact_id": contact.id, "channel_id": channel_id})
            outcome.dialled = True

    async def _claim(self, campaign: Campaign) -> tuple[Contact, Attempt] | None:
        """Claim the first due contact the claim gate lets through, and commit its attempt; None if none.

        A candidate the gate holds back (calling hours, frequency cap; ``store/gate.py``) gets its
        ``blocked_reason`` and ``next_eligible_at`` written in that transaction, so the next query skips
        it: each is examined once per hold, and the next candidate is tried at once. A suppressed one is
        skipped (``skipped``) in that transaction, and the next is tried too.
        """
        while self._active(campaign.id) and self.pbx_up.is_set():
            due = await self.store.next_due_contacts(campaign.id, utcnow(), 1)
            if not due:
                return None
            contact = due[0]
            self.faults.hit("before_attempt")
            channel_id = _channel_id(campaign.id, contact)
            # The caller id is chosen before the attempt is written, which records it; the rotation moves
            # on only for an attempt written.
            turn = self._caller_id_turns[campaign.id]
            caller_id = choose_caller_id(CallerIdPool.stored(campaign.caller_id), campaign.caller_id_strategy,
                                         contact.phone_e164, turn)
            claimed = await self.store.begin_attempt(contact, channel_id, caller_id)
            if isinstance(claimed, Skipped):
                # Suppressed since the import: skipped in the claim's transaction; the next one is due now
                # (the start counted against daily_calls_max stays reserved for it).
                log.info("suppressed number skipped", extra={"action": "skipped", "campaign_id": campaign.id,
                                                             "contact_id": contact.id})
                continue
            if claimed is not None:
                self._caller_id_turns[campaign.id] = turn + 1
                return contact, claimed
        return None

    async def _claim_shared(self, campaign: Campaign, outcome: _Dial) -> tuple[Contact, Attempt] | None:
        """``_claim`` with several daemons on PostgreSQL: the contact, the caps counted across every daemon
        and the attempt in one transaction (``store/cluster.py``); a cap that holds sets ``outcome.wait``.
        Raises ``Fenced`` (the runner's task crashes: the daemon stops) if this daemon's epoch moved on."""
        assert self.cluster is not None
        pool = CallerIdPool.stored(campaign.caller_id)
        while self._active(campaign.id) and self.pbx_up.is_set():
            self.faults.hit("before_attempt")
            turn = self._caller_id_turns[campaign.id]

            def caller_id_for(contact: Contact, turn: int = turn) -> str | None:
                return choose_caller_id(pool, campaign.caller_id_strategy, contact.phone_e164, turn)

            seat = self.cluster.seat
            try:
                result = await self.cluster.store.claim(
                    seat, campaign, utcnow(),
                    name_channel=lambda contact: _channel_id(campaign.id, contact), caller_id_for=caller_id_for,
                    today=self.slots.wall(),
                )
            except Fenced:
                if self.cluster.seat_moved(seat):  # this daemon armed its PBX fence with a new epoch meanwhile
                    await asyncio.sleep(0.05)
                    continue
                log.critical("fenced: this daemon's epoch moved on; no more claims",
                             extra={"action": "fenced", "campaign_id": campaign.id})
                self.accepting = False
                raise
            if isinstance(result, Hold):
                self.held_shared[campaign.id] = (result, self.clock())
                wait = 1.0 if result.until is None else (result.until - utcnow()).total_seconds()
                outcome.wait = min(5.0, max(0.01, wait))
                return None
            self.held_shared.pop(campaign.id, None)
            if isinstance(result, Skipped):
                log.info("suppressed number skipped", extra={"action": "skipped", "campaign_id": campaign.id,
                                                             "contact_id": result.contact_id})
                continue
            if result is not None:
                self._caller_id_turns[campaign.id] = turn + 1
            return result
        return None

    async def _pace_send(self, tenant_id: str, campaign_id: str) -> bool:
        """Space the tenant's originate requests as they leave, as the pacer spaced their reservations.

        The awaits between reservation and request (a query, the attempt's commit) can take seconds under
        load, which bunched evenly reserved starts together at the PBX (load test: two calls of a 60/min
        tenant created 0.17 s apart in Asterisk). Usually this waits not at all. False if the campaign
        was halted or the PBX went down meanwhile (the request must not leave then).
        """
        tenant = self.slots.limits(tenant_id)
        if tenant is not None:
            now = self.clock()
            at = now + tenant.sent.delay(now)
            tenant.sent.record(at)  # reserved before the await, like the slot
            while self._active(campaign_id) and self.pbx_up.is_set() and (now := self.clock()) < at:
                await self.slots.sleep(campaign_id, at - now)  # woken early by halt (campaign_halted pokes)
        return self._active(campaign_id) and self.pbx_up.is_set()

    def _request(self, campaign: Campaign, contact: Contact, attempt: Attempt) -> OriginateRequest:
        """The originate request of ``attempt``, with the caller id its row records (chosen in ``_claim``)."""
        variables = {f"DIALERD_FIELD_{_var_name(k)}": v for k, v in contact.fields.items()}
        variables.update({
            "DIALERD_CAMPAIGN": campaign.id,
            "DIALERD_CONTACT": str(contact.id),
            "DIALERD_ATTEMPT": str(contact.attempts + 1),
            "DIALERD_NUMBER": contact.phone_e164,
        })
        return OriginateRequest(
            channel_id=attempt.channel_id,
            number=contact.phone_e164,
            caller_id=attempt.caller_id or "",
            destination=Destination.parse(campaign.destination),
            ring_timeout=campaign.ring_timeout_seconds,
            variables=variables,
            amd=AmdPlan(OnMachine.parse(campaign.on_machine)) if campaign.amd == AmdMode.ON else None,
        )

    async def _originate_failed(self, campaign: Campaign, attempt: Attempt, exc: OriginateError) -> bool:
        """Record a refused originate; True if its attempt row is kept (False: given back unsent)."""
        cid = attempt.channel_id
        log.warning("originate failed: %s", exc, extra={"action": "originate_error", "campaign_id": campaign.id,
                                                          "channel_id": cid, "maybe_dialled": exc.maybe_dialled})
        if exc.maybe_dialled:
            # The call may exist: keep it in flight and let reconciliation find out (never redial blindly).
            self.tasks.spawn_later(f"reconcile-{cid}", 2.0, lambda: self.follower.reconcile(cid), critical=True,
                                   context=priority_context())
            return True
        # Forget the call first: the runner releases its slot when this attempt is not in flight.
        self.slots.drop(cid)
        if not self.pbx.connected:
            # The PBX connection dropped under the request, which was refused unsent: not the
            # contact's fault; it stays pending and is dialled once the PBX is back.
            await asyncio.shield(self.store.give_back_attempt(cid))
            return False
        await self.follower.finish_failed(cid, campaign, FailureReason.ORIGINATE_ERROR, attempt_number=attempt.number)
        errors = self._originate_errors[campaign.id] = self._originate_errors.get(campaign.id, 0) + 1
        if errors >= MAX_CONSECUTIVE_ORIGINATE_ERRORS:
            # The PBX refuses every call (unknown endpoint, trunk down): stop before burning every contact.
            self._halted.add(campaign.id)
            await self.transitions.system_transition(
                campaign.id, CampaignAction.FAIL,
                reason=f"the PBX refused {errors} originations in a row; last error: {exc}",
            )
        return True


class _Dial:
    """What one claim did: a call is in flight (``dialled``); an attempt row was kept (``kept``); a cap
    counted across the daemons holds for ``wait`` seconds (None: none said so)."""

    __slots__ = ("dialled", "kept", "wait")

    def __init__(self) -> None:
        self.dialled = False
        self.kept = False
        self.wait: float | None = None


def _channel_id(campaign_id: str, contact: Contact) -> str:
    """The channel id of the contact's next attempt: unique per attempt row (an attempt given back after a
    crash is redialled under a new id)."""
    return f"dlr-{campaign_id[4:16]}-{contact.id}-{contact.attempts + 1}-{secrets.token_hex(3)}"


def _var_name(key: str) -> str:
    out = "".join(ch.upper() if ch.isalnum() else "_" for ch in key)
    return out[:40] or "FIELD"
