"""Following calls: the PBX's events applied to attempts and contacts, and reconciliation after gaps.

The dispatcher (``dispatcher.py``) dials; this part, its base class, follows each call to its outcome.
PBX events are queued by the adapter and applied by one consumer task: in order per channel, different
channels' events concurrently (a bounded number at a time). A channel whose fate is unknown (a crash, an
outage, an originate reply that never came) is reconciled with the PBX's own record, never redialled blindly.

"""
from __future__ import annotations

import asyncio
import functools
import logging
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from dialerd.domain.campaign import CampaignStatus
from dialerd.domain.causes import classify
from dialerd.domain.contact import ContactStatus, FailureReason, will_retry
from dialerd.faults import Failpoints
from dialerd.pbx.base import CallEvent, CallEventKind, Pbx
from dialerd.store.repo import Store, priority_context
from dialerd.store.tables import Attempt, Campaign, Event, utcnow
from dialerd.tasks import TaskOwner
from dialerd.timestamps import rfc3339

if TYPE_CHECKING:
    from dialerd.services.campaigns import CampaignService

log = logging.getLogger("dialerd.dispatcher")

# Call events applied at once (each holds at most one pooled database connection at a time, so the API
# keeps most of the pool), and how long close() lets the ones already taken off the queue land.
APPLY_CONCURRENCY = 8
APPLY_GRACE_SECONDS = 10.0


@dataclass
class _Call:
    channel_id: str
    campaign_id: str
    tenant_id: str


class CallFollower:
    """The event and reconciliation half of the Dispatcher (which sets every attribute below)."""

    store: Store
    pbx: Pbx
    campaigns: CampaignService | None
    faults: Failpoints
    tasks: TaskOwner
    pbx_up: asyncio.Event
    outcomes: Counter[str]
    _calls: dict[str, _Call]
    _events: asyncio.Queue[CallEvent]
    _applying: dict[str, asyncio.Task[None]]
    _apply_slots: asyncio.Semaphore
    _idle_event: asyncio.Event

    # Provided by the Dispatcher: the runner's side of a call's slot, its wake-ups and its task watch.
    def _release(self, campaign_id: str, tenant_id: str) -> None:
        raise NotImplementedError

    def _poke(self, campaign_id: str) -> None:
        raise NotImplementedError

    async def _track(self, channel_id: str, campaign: Campaign) -> None:
        raise NotImplementedError

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
        if attempt.state == "dialing":
            # Events can overtake the originate reply; the call is clearly originated.
            await self._apply(event.channel_id, ContactStatus.ORIGINATED, "originated",
                              {"originated_at": event.at}, {}, {}, only_from=("dialing",))
        if event.kind is CallEventKind.ANSWERED:
            self.faults.hit("before_answer_write")
            await self._apply(event.channel_id, ContactStatus.CONNECTED, "answered", {"answered_at": event.at},
                              {}, {}, only_from=("originated",))
            return
        self.faults.hit("before_end_write")
        await self.ended(event, attempt)  # perf: ended() need not read the attempt again

    async def ended(self, event: CallEvent, attempt: Attempt | None = None) -> None:
        """Apply the end of a call: completed, failed, or pending again for a retry.

        ``attempt``: the attempt as just read by the caller (its state may since have moved from
        dialing to originated, which changes nothing below: every write is guarded by only_from).
        """
        if attempt is None:
            attempt = await self.store.get_attempt(event.channel_id)
        if attempt is None or attempt.state in ("ended", "not_dialled"):
            self._end_call(event.channel_id)
            return
        # An answer dialerd never recorded, ended by Asterisk with no cause: dropped at once because
        # our Stasis app had no live client (taken over, or dialerd away), never a completed call.
        outcome = classify(event, answer_seen=attempt.state == "answered")
        if outcome.answered:
            # Answered unseen (while disconnected or down): the PBX's record may still know when.
            answer_time = attempt.answered_at or event.answered_at or event.at
            if attempt.state != "answered":
                await self._apply(event.channel_id, ContactStatus.CONNECTED, "answered",
                                  {"answered_at": answer_time}, {}, {},
                                  only_from=("originated", "dialing"))
                attempt = await self.store.get_attempt(event.channel_id) or attempt
            answered_at = attempt.answered_at or answer_time
            talk = max(0.0, (event.at - answered_at).total_seconds())
            await self._apply(
                event.channel_id, ContactStatus.COMPLETED, "ended",
                {"ended_at": event.at, "talk_seconds": round(talk, 3), "cause": event.cause,
                 "sip_code": event.tech_cause},
                {"hangup_cause": event.cause, "sip_code": event.tech_cause, "failure_reason": None,
                 "next_attempt_at": None},
                {"cause": event.cause, "sip_code": event.tech_cause, "talk_seconds": round(talk, 3)},
                only_from=("originated", "answered", "dialing"),
            )
        else:
            assert outcome.reason is not None
            # Perf: read only on this path (its retry policy and status); an answered call needs neither.
            campaign = await self.store.get_campaign(attempt.campaign_id)
            if campaign is None:
                self._end_call(event.channel_id)
                return
            await self._finish_failed(event.channel_id, campaign, outcome.reason.value, event.cause,
                                      event.tech_cause, attempt_number=attempt.number, ended_at=event)
        self._end_call(event.channel_id)
        await self._forget(event.channel_id)

    async def _forget(self, channel_id: str) -> None:
        # The outcome is stored: the PBX may drop its record of it (hangup-handler result).
        forget = getattr(self.pbx, "forget", None)
        if forget is None:
            return
        try:
            await forget(channel_id)
        except Exception as exc:  # a leftover record only costs PBX memory; never fail the call for it
            log.warning("could not clear the PBX record: %s", exc,
                        extra={"action": "forget_failed", "channel_id": channel_id})

    async def _finish_failed(
        self, channel_id: str, campaign: Campaign, reason: str, cause: int | None, sip: int | None, *,
        attempt_number: int, ended_at: CallEvent | None = None,
    ) -> None:
        retry = will_retry(FailureReason(reason), attempt_number, campaign.retries_per_contact)
        stopped = campaign.status in (CampaignStatus.COMPLETED, CampaignStatus.FAILED)
        at = ended_at.at if ended_at else utcnow()
        attempt_values = {"ended_at": at, "cause": cause, "sip_code": sip, "reason": reason}
        contact_values: dict[str, Any] = {"hangup_cause": cause, "sip_code": sip, "failure_reason": reason}
        payload: dict[str, Any] = {"reason": reason, "cause": cause, "sip_code": sip}
        if retry and not stopped:
            next_at = utcnow() + timedelta(seconds=campaign.retry_delay_seconds)
            contact_values["next_attempt_at"] = next_at
            payload["retry_at"] = rfc3339(next_at)
            status = ContactStatus.PENDING
        elif retry and stopped:
            status = ContactStatus.CANCELLED  # would have been retried, but the campaign was stopped
            payload["reason"] = "campaign_stopped"
            payload["last_failure"] = reason
        else:
            status = ContactStatus.FAILED
        await self._apply(channel_id, status, "ended", attempt_values, contact_values, payload,
                          only_from=("dialing", "originated", "answered"))
        self._end_call(channel_id)

    def _end_call(self, channel_id: str) -> None:
        call = self._calls.pop(channel_id, None)
        if call is not None:
            self._release(call.campaign_id, call.tenant_id)
        self._idle_event.set()

    async def _apply(
        self, channel_id: str, status: ContactStatus, attempt_state: str, attempt_values: dict[str, Any],
        contact_values: dict[str, Any], payload: dict[str, Any], *, only_from: tuple[str, ...],
    ) -> Event | None:
        # The outcome write must land even if the task applying it is being cancelled (shutdown).
        result = await asyncio.shield(self.store.record_transition(
            channel_id, attempt_state=attempt_state, attempt_values=attempt_values, contact_status=status,
            contact_values=contact_values, payload=payload, only_from=only_from,
        ))
        if result is None:
            return None
        _attempt, event = result
        if attempt_state == "ended":  # the one place every outcome is recorded (exactly once, by only_from)
            self.outcomes[str(attempt_values.get("reason", "completed"))] += 1
        return event

    # ---- reconciliation ---------------------------------------------------------------------------

    async def reconcile(self, channel_id: str) -> None:
        """Find out what happened to a channel we lost track of, and apply it."""
        attempt = await self.store.get_attempt(channel_id)
        if attempt is None or attempt.state in ("ended", "not_dialled"):
            return
        await self.pbx_up.wait()
        found = await self.pbx.lookup(channel_id)
        if found.live:
            campaign = await self.store.get_campaign(attempt.campaign_id)
            if campaign is not None and channel_id not in self._calls:
                await self._track(channel_id, campaign)
            if attempt.state == "dialing":
                await self._apply(channel_id, ContactStatus.ORIGINATED, "originated", {"originated_at": utcnow()},
                                  {}, {}, only_from=("dialing",))
            if found.answered:
                await self._apply(channel_id, ContactStatus.CONNECTED, "answered", {"answered_at": utcnow()},
                                  {}, {}, only_from=("originated",))
            return
        if found.ended is not None:
            await self.ended(found.ended)
            return
        if attempt.state == "dialing":
            # Unknown to the PBX and never confirmed: the request never created a channel. Give the
            # attempt back so the contact is dialled once, not zero times.
            await self._not_dialled(attempt)
            return
        # The PBX accepted it but no longer knows it and left no record (it restarted meanwhile): the
        # call happened, its outcome is lost. Record that honestly rather than dialling again blindly.
        log.warning("call outcome lost", extra={"action": "reconcile_lost", "channel_id": channel_id})
        await self.ended(CallEvent(channel_id, CallEventKind.ENDED, utcnow(), answered=attempt.state == "answered"))

    async def recover(self) -> int:
        """After a restart: count every attempt the database has in flight against the caps, then
        reconcile each with the PBX. Returns how many attempts were found."""
        attempts = await self.store.attempts_in_flight()
        for attempt in attempts:
            campaign = await self.store.get_campaign(attempt.campaign_id)
            if campaign is not None and attempt.channel_id not in self._calls:
                await self._track(attempt.channel_id, campaign)
        for attempt in attempts:
            self._schedule_reconcile(attempt.channel_id)
        return len(attempts)

    async def _not_dialled(self, attempt: Attempt) -> None:
        await asyncio.shield(self.store.give_back_attempt(attempt.channel_id))
        log.info("attempt never reached the PBX; contact stays pending",
                 extra={"action": "not_dialled", "channel_id": attempt.channel_id})
        self._end_call(attempt.channel_id)
        self._poke(attempt.campaign_id)
