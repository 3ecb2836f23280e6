"""Following calls: the PBX's events applied to attempts and contacts, and reconciliation after gaps.

The dispatcher (``dispatcher.py``) dials; the ``CallFollower`` it owns follows each call to its outcome.
They share nothing but the in-flight ledger (``slots.py``): the follower frees a call's slot when its end
is recorded. PBX events are queued (the adapter's sink must never wait) and applied by one consumer task:
in order per channel, different channels' events concurrently (a bounded number at a time). A channel
whose fate is unknown (a crash, an outage, an originate reply that never came) is reconciled with the
PBX's own record, never redialled blindly.
"""
from __future__ import annotations

import asyncio
import functools
import logging
from collections import Counter
from typing import Any

from dialerd.domain.amd import AmdMode, AnsweredBy, OnMachine, amd_cause, answered_by
from dialerd.domain.call import (
    AttemptState,
    CallEvent,
    CallEventKind,
    RetryPolicy,
    Transition,
    decide_end,
    decide_failure,
    ended_answered,
    refused_by_fence,
    sources,
    steps,
)
from dialerd.domain.campaign import CampaignStatus
from dialerd.domain.contact import ContactStatus, FailureReason
from dialerd.domain.retry_rules import RetryRules
from dialerd.domain.rules import BlockReason
from dialerd.faults import Failpoints
from dialerd.ports import DispatchStore, Pbx, PeerPbx
from dialerd.services.slots import Slots
from dialerd.store.repo import priority_context
from dialerd.store.tables import Attempt, Campaign, Event
from dialerd.tasks import TaskOwner
from dialerd.timestamps import rfc3339, utcnow

log = logging.getLogger("dialerd.dispatcher")

# Call events applied at once (each holds at most one pooled database connection at a time, so the API
# keeps most of the pool), and how long close() lets the ones already taken off the queue land.
APPLY_CONCURRENCY = 8
APPLY_GRACE_SECONDS = 10.0


class CallFollower:
    """Applies the PBX's call events, reconciles calls whose fate is unknown, and frees their slots."""

    def __init__(
        self,
        store: DispatchStore,
        pbx: Pbx,
        slots: Slots,
        *,
        pbx_up: asyncio.Event,
        tasks: TaskOwner,
        failpoints: Failpoints,
        node_id: str | None = None,
    ) -> None:
        self.store = store
        self.pbx = pbx
        self.slots = slots
        self.pbx_up = pbx_up  # set while the PBX connection is up (reconcile waits for it)
        self.tasks = tasks
        self.faults = failpoints
        self.node_id = node_id  # several daemons: recover only what this one placed (None: everything)
        self.outcomes: Counter[str] = Counter()  # ended attempts by 'completed' or failure reason
        self._events: asyncio.Queue[CallEvent] = asyncio.Queue()
        self._consumer: asyncio.Task[None] | None = None
        self._applying: dict[str, asyncio.Task[None]] = {}  # channel -> the applier of its latest event
        self._apply_slots = asyncio.Semaphore(APPLY_CONCURRENCY)

    def start(self) -> None:
        # The follower's tasks read the database ahead of the API's requests (Store.read).
        self._consumer = self.tasks.spawn("dispatcher-events", self._consume(), critical=True,
                                          context=priority_context())

    def call_event(self, event: CallEvent) -> None:
        """Queue a PBX event (returns at once: the adapter's reader must never wait)."""
        self._events.put_nowait(event)

    async def close(self) -> None:
        """Apply what is already queued, stop the consumer, and let the events being applied land."""
        if self._consumer is None:
            return
        await self._drain_queue()
        self._consumer.cancel()
        await asyncio.gather(self._consumer, return_exceptions=True)
        # Events already taken off the queue are being applied: let them land (each channel's
        # latest applier waits for its earlier ones), within a bound.
        appliers = list(self._applying.values())
        if appliers:
            _done, late = await asyncio.wait(appliers, timeout=APPLY_GRACE_SECONDS)
            for task in late:
                task.cancel()

    async def _drain_queue(self) -> None:
        for _ in range(10000):
            if self._events.empty():
                return
            await asyncio.sleep(0.01)

    def _schedule_reconcile(self, channel_id: str) -> None:
        self.tasks.spawn(f"reconcile-{channel_id}", self.reconcile(channel_id), critical=True,
                         context=priority_context())

    # ---- events -------------------------------------------------------------------------------

    async def _consume(self) -> None:
        # Load test (tests/load/test_load.py): applying one event at a time, each a few database
        # round trips, capped the whole daemon near 2 ended calls/s once the API was busy, while slots
        # stayed taken by calls Asterisk had long ended. A channel's events still apply in order: each
        # applier first waits for the one before it on the same channel.
        while True:
            event = await self._events.get()
            before = self._applying.get(event.channel_id)
            task = self.tasks.spawn(f"call-event-{event.channel_id}", self._apply_event(event, before),
                                    critical=True, context=priority_context())
            self._applying[event.channel_id] = task
            task.add_done_callback(functools.partial(self._event_applied, event.channel_id))

    async def _apply_event(self, event: CallEvent, before: asyncio.Task[None] | None) -> None:
        if before is not None:
            await asyncio.wait([before])  # never raises: an earlier failure is logged by its own applier
        async with self._apply_slots:
            try:
                await self._handle(event)
            except Exception:
                log.exception("failed to apply call event", extra={"action": "event_error",
                                                                     "channel_id": event.channel_id})

    def _event_applied(self, channel_id: str, task: asyncio.Task[None]) -> None:
        if self._applying.get(channel_id) is task:
            del self._applying[channel_id]

    async def _handle(self, event: CallEvent) -> None:
        if event.kind is CallEventKind.PROGRESS:
            return
        attempt = await self.store.get_attempt(event.channel_id)
        if attempt is None:
            return  # not ours (or its campaign was deleted)
        for target in steps(AttemptState(attempt.state), event.kind):
            if target is AttemptState.ORIGINATED:
                # Events can overtake the originate reply; the call is clearly originated.
                await self._apply(event.channel_id, ContactStatus.ORIGINATED, target,
                                  {"originated_at": event.at}, {}, {})
            elif target is AttemptState.ANSWERED:
                self.faults.hit("before_answer_write")
                # With AMD on, the adapters report the answer once the verdict is in (domain/amd.py).
                verdict = answered_by(event.amd_status).value
                cause = amd_cause(event.amd_cause)
                await self._apply(event.channel_id, ContactStatus.CONNECTED, target,
                                  {"answered_at": event.at, "answered_by": verdict, "amd_cause": cause},
                                  {"answered_by": verdict, "amd_cause": cause}, {"answered_by": verdict})
        if event.kind is CallEventKind.ANSWERED:
            return
        self.faults.hit("before_end_write")
        await self.ended(event, attempt)  # perf: ended() need not read the attempt again

    async def ended(self, event: CallEvent, attempt: Attempt | None = None) -> None:
        """Apply the end of a call: completed, failed, or pending again for a retry.

        ``attempt``: the attempt as just read by the caller (its state may since have moved from
        dialing to originated, which changes nothing below: every write is guarded by ``MOVES``).
        """
        if attempt is None:
            attempt = await self.store.get_attempt(event.channel_id)
        if attempt is None or AttemptState(attempt.state).final:
            self.slots.end_call(event.channel_id)
            return
        state = AttemptState(attempt.state)
        if refused_by_fence(state, event):
            await self._refused(event, attempt)
            return
        policy = None
        if not ended_answered(state, event):
            # Perf: read only on this path (its retry policy and status); an answered call needs neither.
            campaign = await self.store.get_campaign(attempt.campaign_id)
            if campaign is None:
                self.slots.end_call(event.channel_id)
                return
            policy = _policy(campaign)
        end = decide_end(state, event, attempt_number=attempt.number, answered_at=attempt.answered_at,
                         policy=policy, now=utcnow())
        if end.answer_at is not None:
            # The answer was never recorded: record it, then end from the answer time as stored.
            verdict = (end.answered_by or AnsweredBy.UNKNOWN).value
            await self._apply(event.channel_id, ContactStatus.CONNECTED, AttemptState.ANSWERED,
                              {"answered_at": end.answer_at}, {}, {"answered_by": verdict})
            attempt = await self.store.get_attempt(event.channel_id) or attempt
            end = decide_end(AttemptState.ANSWERED, event, attempt_number=attempt.number,
                             answered_at=attempt.answered_at or end.answer_at, policy=policy, now=utcnow())
        await self._record_end(event.channel_id, end)
        self.slots.end_call(event.channel_id)
        await self._forget(event.channel_id)

    async def _refused(self, event: CallEvent, attempt: Attempt) -> None:
        """The PBX fence refused the originate (no carrier leg): the attempt is not dialled and its contact
        is due again at once, its attempt not counted (a stopped campaign cancels it instead)."""
        log.warning("the PBX fence refused an originate; the contact stays to be dialled", extra={
            "action": "fence_refused", "channel_id": event.channel_id, "epoch": event.fenced})
        await self._apply(
            event.channel_id, ContactStatus.PENDING, AttemptState.NOT_DIALLED,
            {"ended_at": event.at, "cause": event.cause, "reason": AttemptState.NOT_DIALLED.value},
            {"attempts": max(0, attempt.number - 1), "next_attempt_at": None},
            {"not_dialled": "fenced", "cause": event.cause},
        )
        self.slots.end_call(event.channel_id)
        self.slots.poke(attempt.campaign_id)
        await self._forget(event.channel_id)

    async def _forget(self, channel_id: str) -> None:
        # The outcome is stored: the PBX may drop its record of it (hangup-handler result).
        try:
            await self.pbx.forget(channel_id)
        except Exception as exc:  # a leftover record only costs PBX memory; never fail the call for it
            log.warning("could not clear the PBX record: %s", exc,
                        extra={"action": "forget_failed", "channel_id": channel_id})

    async def originated(self, channel_id: str, channel_name: str) -> None:
        """The PBX accepted the originate request: the attempt is originated (unless an event was first)."""
        await self._apply(channel_id, ContactStatus.ORIGINATED, AttemptState.ORIGINATED,
                          {"originated_at": utcnow(), "channel_name": channel_name}, {}, {})

    async def finish_failed(
        self, channel_id: str, campaign: Campaign, reason: FailureReason, *, attempt_number: int,
    ) -> None:
        """End an attempt that failed without a call event (the PBX refused the originate)."""
        now = utcnow()
        end = decide_failure(reason, None, None, attempt_number=attempt_number, policy=_policy(campaign),
                             ended_at=now, now=now)
        await self._record_end(channel_id, end)
        self.slots.end_call(channel_id)

    async def _record_end(self, channel_id: str, end: Transition) -> None:
        """Write the decided end: the attempt's and the contact's columns and the event's payload."""
        if end.answered:
            attempt_values: dict[str, Any] = {"ended_at": end.ended_at, "talk_seconds": end.talk_seconds,
                                              "cause": end.cause, "sip_code": end.sip_code}
            contact_values: dict[str, Any] = {"hangup_cause": end.cause, "sip_code": end.sip_code,
                                              "failure_reason": None, "next_attempt_at": None}
            payload: dict[str, Any] = {"cause": end.cause, "sip_code": end.sip_code,
                                       "talk_seconds": end.talk_seconds}
        else:
            assert end.reason is not None
            reason = end.reason.value
            attempt_values = {"ended_at": end.ended_at, "cause": end.cause, "sip_code": end.sip_code,
                              "reason": reason}
            contact_values = {"hangup_cause": end.cause, "sip_code": end.sip_code, "failure_reason": reason}
            payload = {"reason": reason, "cause": end.cause, "sip_code": end.sip_code}
            if end.retry_at is not None:
                contact_values["next_attempt_at"] = end.retry_at
                # Held until then; the claim gate reads its calling hours once it is due (store/gate.py).
                contact_values["next_eligible_at"] = end.retry_at
                contact_values["blocked_reason"] = BlockReason.RETRY_DELAY.value
                payload["retry_at"] = rfc3339(end.retry_at)
            elif end.cancelled:
                payload["reason"] = "campaign_stopped"
                payload["last_failure"] = reason
        if end.answered_by is not None:
            attempt_values.update(answered_by=end.answered_by.value, amd_cause=end.amd_cause)
            contact_values.update(answered_by=end.answered_by.value, amd_cause=end.amd_cause)
            payload["answered_by"] = end.answered_by.value
        if end.opt_out:
            payload["opt_out"] = True
        if await self._apply(channel_id, end.contact_status, end.state, attempt_values, contact_values,
                             payload, opt_out=end.opt_out) is not None:
            self.outcomes[end.outcome] += 1  # the one place every outcome is counted (exactly once, by MOVES)

    async def _apply(
        self, channel_id: str, status: ContactStatus, target: AttemptState, attempt_values: dict[str, Any],
        contact_values: dict[str, Any], payload: dict[str, Any], *, opt_out: bool = False,
    ) -> Event | None:
        """Move the attempt to ``target`` if ``MOVES`` allows it from where it stands (else nothing).

        ``opt_out``: the callee opted out; its number joins the tenant's suppression list in the same write.
        """
        # The outcome write must land even if the task applying it is being cancelled (shutdown).
        result = await asyncio.shield(self.store.record_transition(
            channel_id, attempt_state=target.value, attempt_values=attempt_values, contact_status=status,
            contact_values=contact_values, payload=payload, only_from=sources(target), opt_out=opt_out,
        ))
        if result is None:
            return None
        _attempt, event = result
        return event

    # ---- reconciliation ---------------------------------------------------------------------------

    async def reconcile(self, channel_id: str, on: PeerPbx | None = None, *, fenced: bool = True) -> bool:
        """Find out what happened to a channel we lost track of, and apply it; True if it is still up.

        ``on``: another daemon's PBX, whose calls a takeover reconciles (``services/takeover.py``); they
        hold no slot of this daemon's ledger (the caps count them in the database). ``fenced`` False: a
        dialling attempt the PBX does not know is left as it is (its sender may only be stalled, and
        nothing at the PBX stops it yet), not given back for another dial.
        """
        attempt = await self.store.get_attempt(channel_id)
        if attempt is None or AttemptState(attempt.state).final:
            # Its end was applied meanwhile (after a restart the websocket is up before recover() runs, so
            # a ChannelDestroyed can land between recover's read and here, freeing nothing as the slot was
            # not tracked yet): free the slot recover() counted, or the campaign never sees zero in flight
            # and never completes.
            if on is None:
                self.slots.end_call(channel_id)
            return False
        if on is None:
            await self.pbx_up.wait()
        found = await (self.pbx if on is None else on).lookup(channel_id)
        if found.live:
            campaign = await self.store.get_campaign(attempt.campaign_id)
            if on is None and campaign is not None and not self.slots.holds(channel_id):
                await self.slots.track(channel_id, campaign.id, campaign.tenant_id)
                latest = await self.store.get_attempt(channel_id)
                if latest is None or AttemptState(latest.state).final:  # it ended while being tracked
                    self.slots.end_call(channel_id)
                    return False
            if attempt.state == AttemptState.DIALING:
                await self._apply(channel_id, ContactStatus.ORIGINATED, AttemptState.ORIGINATED,
                                  {"originated_at": utcnow()}, {}, {})
            if found.answered:
                await self._apply(channel_id, ContactStatus.CONNECTED, AttemptState.ANSWERED,
                                  {"answered_at": utcnow()}, {}, {})
            return True
        if found.ended is not None:
            await self.ended(found.ended)
            if on is not None:
                await on.forget(channel_id)
            return False
        if attempt.state == AttemptState.DIALING:
            if not fenced:
                return True  # left in flight: looked at again later (see the docstring)
            # Unknown to the PBX and never confirmed: the request never created a channel. Give the
            # attempt back so the contact is dialled once, not zero times.
            await self._not_dialled(attempt)
            return False
        # The PBX accepted it but no longer knows it and left no record (it restarted meanwhile): the
        # call happened, its outcome is lost. Record that honestly rather than dialling again blindly.
        log.warning("call outcome lost", extra={"action": "reconcile_lost", "channel_id": channel_id})
        await self.ended(CallEvent(channel_id, CallEventKind.ENDED, utcnow(), answered=attempt.state == AttemptState.ANSWERED))
        return False

    async def recover(self) -> int:
        """After a restart: count every attempt the database has in flight against the caps, then
        reconcile each with the PBX. Returns how many attempts were found."""
        attempts = await self.store.attempts_in_flight(self.node_id)
        for attempt in attempts:
            campaign = await self.store.get_campaign(attempt.campaign_id)
            if campaign is not None and not self.slots.holds(attempt.channel_id):
                await self.slots.track(attempt.channel_id, campaign.id, campaign.tenant_id)
        for attempt in attempts:
            self._schedule_reconcile(attempt.channel_id)
        return len(attempts)

    async def _not_dialled(self, attempt: Attempt) -> None:
        await asyncio.shield(self.store.give_back_attempt(attempt.channel_id))
        log.info("attempt never reached the PBX; contact stays pending",
                 extra={"action": "not_dialled", "channel_id": attempt.channel_id})
        self.slots.end_call(attempt.channel_id)
        self.slots.poke(attempt.campaign_id)


def _policy(campaign: Campaign) -> RetryPolicy:
    # The stored text is the canonical form the create/PATCH rules accepted: it parses again.
    return RetryPolicy(campaign.retries_per_contact, campaign.retry_delay_seconds,
                       stopped=CampaignStatus(campaign.status).terminal,
                       rules=RetryRules.parse(campaign.retry_rules or ""),
                       on_machine=OnMachine.parse(campaign.on_machine) if campaign.amd == AmdMode.ON else None)
