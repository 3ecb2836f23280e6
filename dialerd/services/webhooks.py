"""Webhook delivery: every event of a campaign with a ``webhook_url`` is POSTed there, signed, at least once,
in event-id order per campaign (domain/webhooks.py has the rules, store/webhooks.py the outbox cursor).

One worker task per campaign with events to deliver, started when the store publishes a committed event of
such a campaign (and at start, for what a previous run left): it reads the events after the campaign's
cursor, POSTs them one at a time, and keeps the cursor (persisted at most every ``PERSIST_EVERY`` seconds
and at each failure, so a crash repeats at most that much: at-least-once). A failed try holds that
campaign's later events back and is retried after ``retry_delay`` (1 s doubling to 10 min, with jitter)
until ``[webhooks] retry_for`` has passed, then the event is dead and the campaign goes on. Campaigns never
wait on each other, and the dispatcher never waits on a receiver: the workers share only the event loop
and the store's shared read queue, never the dispatcher's priority reads.

Several daemons on one database (issue 13): a worker delivers only while this daemon holds the campaign's
lease (``webhook_delivery.lease_owner``/``lease_until``). It takes the lease when it starts; each cursor write
is fenced by it and renews it; the keeper task (``webhook-leases``) renews the running workers' leases every
third of ``[webhooks] lease_seconds`` and runs one query for work no daemon is delivering (events another
daemon wrote, or a dead daemon left), which starts workers here. A renewal or write that finds the lease
taken stops the worker at once, and a worker whose lease was not renewed for two thirds of its length (a
stall) renews it before its next POST. The stop frees the leases. After a lapse the new holder goes on from
the stored cursor: at most the deliveries since the last cursor write are sent twice (at-least-once, as
after a crash). ``notify`` stays the fast path: a commit wakes its own daemon's worker at once.

Addresses: unless ``[webhooks] allow_private``, a target whose name resolves to any loopback, link-local,
private or reserved address is refused, at create/PATCH (400) and at every resolution before a delivery
(services/webhook_targets.py), so a name re-pointed at an internal address later is refused too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import aiohttp

from dialerd.domain.webhooks import (
    ERROR_MAX,
    EVENT_ID_HEADER,
    EVENT_TYPE_HEADER,
    LEASE_SECONDS,
    SIGNATURE_HEADER,
    WebhookUrl,
    address_refused,
    delivered,
    is_dead,
    lease_fresh,
    lease_renewal_due,
    lease_tick,
    retry_delay,
    signature,
)
from dialerd.services.events import event_body
from dialerd.services.webhook_targets import GuardedResolver, RefusedAddress
from dialerd.store.tables import Event
from dialerd.store.webhooks import Target, WebhookStore
from dialerd.tasks import TaskOwner
from dialerd.timestamps import utcnow

log = logging.getLogger("dialerd.webhooks")

BATCH = 200  # events read per turn of a campaign's worker
PERSIST_EVERY = 0.5  # seconds between two cursor writes while deliveries succeed
RESTART_AFTER = 5.0  # seconds before a worker that failed (not a delivery: the store) starts again
RESPONSE_READ_MAX = 64 * 1024  # bytes of a receiver's answer read (and dropped) before the connection is reused


class LeaseLost(Exception):
    """A renewal or a fenced write found the campaign's lease taken: this daemon stalled past it, and
    another one delivers the campaign's events now."""


def process_owner() -> str:
    """A lease owner id of this process: its host, its pid and a random part (a restarted daemon is a new
    owner: its predecessor's leases lapse, or on SQLite are freed at start)."""
    return f"{socket.gethostname()[:100]}:{os.getpid()}:{secrets.token_hex(4)}"


@dataclass
class Progress:
    """How far one campaign's worker got: ``through`` delivered, ``persisted`` written to the store (when,
    by the monotonic clock: ``written``), and the head event's failures. Kept across the campaign's workers:
    ``stop()`` writes what moved."""

    through: int
    persisted: int
    failures: int = 0
    since: datetime | None = None
    written: float = 0.0


class WebhookDelivery:
    """The per-campaign delivery workers, under the daemon's task owner, and the keeper of their leases.

    A worker delivers only while it holds its campaign's lease (store/webhooks.py): it takes it when it
    starts, every cursor write renews it, and the keeper task renews the leases of the running workers every
    ``lease_tick`` and looks for work no daemon is delivering (``due``). A renewal or write that finds the
    lease taken stops the worker at once. The owner id is ``owner`` (default: ``process_owner()``).
    """

    def __init__(
        self, store: WebhookStore, tasks: TaskOwner, *, allow_private: bool, timeout: float, retry_for: float,
        lease_seconds: float = LEASE_SECONDS, owner: str | None = None,
        clock: Callable[[], datetime] = utcnow, rand: Callable[[], float] = random.random,
        wall: Callable[[], float] = time.time, user_agent: str = "dialerd (webhooks)",
    ) -> None:
        self.store = store
        self.tasks = tasks
        self.allow_private = allow_private
        self.timeout = timeout
        self.retry_for = retry_for
        self.lease_seconds = lease_seconds
        self.owner = owner or process_owner()
        self.clock = clock
        self.rand = rand
        self.wall = wall
        self.user_agent = user_agent
        self._targets: dict[str, Target] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._dirty: set[str] = set()  # campaigns with events published since their worker last read
        self._interrupt: dict[str, asyncio.Event] = {}  # cuts a worker's backoff short (a PATCH, the stop)
        self._progress: dict[str, Progress] = {}
        # The leases this daemon holds (as far as it knows): campaign -> monotonic time the last take or
        # renewal that succeeded was sent. A worker that ends keeps its entry: its lease lapses unless taken
        # again.
        self._renewed: dict[str, float] = {}
        self._elsewhere: dict[str, float] = {}  # campaign -> when a take found another daemon holding it
        self._keeper: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._stopping = False
        self.delivered = 0  # counters for /metrics
        self.failed = 0
        self.dead = 0

    # ---- life ------------------------------------------------------------------------------------

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(resolver=GuardedResolver(self.allow_private), limit=100,
                                         ttl_dns_cache=30)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout),
            headers={"User-Agent": self.user_agent},
        )
        await self.store.forget_previous_runs()
        for target in await self.store.targets():
            self._targets[target.campaign_id] = target
        await self._scan()  # what a previous run (or a daemon gone since) left undelivered goes out first
        self._keeper = self.tasks.spawn("webhook-leases", self._keep(), critical=False)

    async def stop(self) -> None:
        """Stop the workers, write each cursor that moved since its last write, and free the leases."""
        self._stopping = True
        tasks = list(self._workers.values()) + ([self._keeper] if self._keeper is not None else [])
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        for campaign_id, p in list(self._progress.items()):
            if p.through > p.persisted and campaign_id in self._renewed:
                try:
                    await self.store.advance(campaign_id, p.through, self.clock(), owner=self.owner,
                                             seconds=self.lease_seconds)
                except Exception:  # the next start repeats these deliveries: at least once
                    log.warning("webhook cursor not saved", extra={"action": "webhook",
                                                                  "campaign_id": campaign_id})
        # Every lease of this owner, also one a worker cancelled mid-take got without knowing: another daemon
        # takes over now rather than at the lapse.
        try:
            await self.store.release(self.owner)
        except Exception:
            log.warning("webhook leases not freed; they lapse in %s s", self.lease_seconds,
                        extra={"action": "webhook_lease_release"})
        self._renewed.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ---- what wakes a worker ---------------------------------------------------------------------

    def notify(self, events: list[Event]) -> None:
        """The store committed ``events`` (called right after the commit, on the event loop): wake the
        workers of their campaigns that have a webhook. Costs a set lookup per campaign of the batch."""
        if not self._targets or self._stopping:
            return
        for campaign_id in {ev.campaign_id for ev in events}:
            if campaign_id in self._targets:
                self._dirty.add(campaign_id)
                if not self._held_elsewhere(campaign_id):
                    self._ensure(campaign_id)

    def wake(self, campaign_id: str) -> None:
        """Another daemon committed events of the campaign (services/peers.py): as ``notify`` does."""
        if campaign_id in self._targets and not self._stopping:
            self._dirty.add(campaign_id)
            self._ensure(campaign_id)

    async def reload(self, campaign_id: str) -> None:
        """A campaign's webhook was set, changed or removed: use the new one from its next try (at once)."""
        target = await self.store.target(campaign_id)
        if target is None:
            self._targets.pop(campaign_id, None)
        else:
            self._targets[campaign_id] = target
            self._dirty.add(campaign_id)
        interrupt = self._interrupt.get(campaign_id)
        if interrupt is not None:
            interrupt.set()
        if target is not None:
            self._elsewhere.pop(campaign_id, None)
            self._ensure(campaign_id)

    def forget(self, campaign_id: str) -> None:
        """The campaign was deleted (its delivery row and lease with it)."""
        self._targets.pop(campaign_id, None)
        self._renewed.pop(campaign_id, None)
        self._progress.pop(campaign_id, None)
        self._elsewhere.pop(campaign_id, None)
        task = self._workers.get(campaign_id)
        if task is not None:
            task.cancel()

    def _held_elsewhere(self, campaign_id: str) -> bool:
        """A take found another daemon holding this campaign's lease less than a keeper's tick ago: do not
        try again on every commit (its holder delivers; the keeper's scan tries again if it lapses)."""
        found = self._elsewhere.get(campaign_id)
        if found is None:
            return False
        if time.monotonic() - found < lease_tick(self.lease_seconds):
            return True
        del self._elsewhere[campaign_id]
        return False

    def _ensure(self, campaign_id: str) -> None:
        if campaign_id in self._workers or self._stopping:
            return
        self._workers[campaign_id] = self.tasks.spawn(f"webhook:{campaign_id}", self._run(campaign_id),
                                                      critical=False)

    # ---- the leases --------------------------------------------------------------------------------

    async def _keep(self) -> None:
        """Every ``lease_tick``: renew the running workers' leases, then start workers for work no daemon
        is delivering (this daemon's own leases count: events another daemon wrote)."""
        tick = lease_tick(self.lease_seconds)
        while True:
            await asyncio.sleep(tick)
            try:
                await self._renew_running()
                await self._scan()
            except Exception:  # the database is away: the workers' own writes find out; try again next tick
                log.warning("webhook leases not renewed", exc_info=True, extra={"action": "webhook_lease_renew"})

    async def _renew_running(self) -> None:
        now = time.monotonic()
        due = [c for c in self._workers
               if c in self._renewed and lease_renewal_due(self._renewed[c], now, self.lease_seconds)]
        if not due:
            return
        kept = await self.store.renew(self.owner, due, self.lease_seconds)
        for campaign_id in due:
            if campaign_id in kept:
                self._renewed_at(campaign_id, now)
            else:
                self._lost(campaign_id)

    async def _scan(self) -> None:
        for target in await self.store.due(self.owner):
            campaign_id = target.campaign_id
            known = self._targets.get(campaign_id)
            self._targets[campaign_id] = target
            self._elsewhere.pop(campaign_id, None)
            self._dirty.add(campaign_id)
            interrupt = self._interrupt.get(campaign_id)
            if known is not None and known != target and interrupt is not None:
                interrupt.set()  # changed by a PATCH on another daemon: try the new one now
            self._ensure(campaign_id)

    def _renewed_at(self, campaign_id: str, sent: float) -> None:
        if campaign_id in self._renewed:
            self._renewed[campaign_id] = max(self._renewed[campaign_id], sent)

    async def _hold(self, campaign_id: str) -> bool:
        """Take the campaign's lease (unless this daemon renewed it a moment ago); False: another holds it."""
        sent = time.monotonic()
        renewed = self._renewed.get(campaign_id)
        if renewed is not None and not lease_renewal_due(renewed, sent, self.lease_seconds):
            return True
        if await self.store.take(campaign_id, self.owner, self.lease_seconds):
            self._renewed[campaign_id] = sent
            self._elsewhere.pop(campaign_id, None)
            return True
        self._renewed.pop(campaign_id, None)
        self._elsewhere[campaign_id] = time.monotonic()
        self._dirty.discard(campaign_id)  # its holder delivers them
        return False

    async def _fresh(self, campaign_id: str) -> None:
        """Before a POST: a lease not renewed for two thirds of its length (a stall) is renewed first;
        raises LeaseLost if another daemon has it now."""
        renewed = self._renewed.get(campaign_id)
        sent = time.monotonic()
        if renewed is None:  # found lost meanwhile
            raise LeaseLost(campaign_id)
        if lease_fresh(renewed, sent, self.lease_seconds):
            return
        if campaign_id not in await self.store.renew(self.owner, [campaign_id], self.lease_seconds):
            raise LeaseLost(campaign_id)
        self._renewed_at(campaign_id, sent)

    async def _fenced(self, campaign_id: str, write: Awaitable[bool]) -> None:
        """Await a fenced write (it renews the lease); raise LeaseLost if it found the lease taken."""
        sent = time.monotonic()
        if not await write:
            raise LeaseLost(campaign_id)
        self._renewed_at(campaign_id, sent)

    def _lost(self, campaign_id: str) -> None:
        """Another daemon holds the campaign's lease now: stop its worker at once, forget its progress (the
        new holder goes on from the stored cursor)."""
        if self._renewed.pop(campaign_id, None) is None:
            return
        self._progress.pop(campaign_id, None)
        self._elsewhere[campaign_id] = time.monotonic()
        log.warning("webhook lease taken by another daemon; this one stops delivering the campaign",
                    extra={"action": "webhook_lease_lost", "campaign_id": campaign_id})
        task = self._workers.get(campaign_id)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    # ---- one campaign's worker -------------------------------------------------------------------

    async def _run(self, campaign_id: str) -> None:
        again = cancelled = False
        try:
            if await self._hold(campaign_id):
                await self._deliver_all(campaign_id)
        except LeaseLost:
            self._lost(campaign_id)
        except asyncio.CancelledError:  # the stop, a deleted campaign, or the keeper found the lease lost
            cancelled = True
            raise
        except Exception:  # the store failing (a locked or lost database): the events wait in it
            log.exception("webhook worker failed; it starts again in %s s", RESTART_AFTER,
                          extra={"action": "webhook_worker", "campaign_id": campaign_id})
            again = True
        finally:
            self._workers.pop(campaign_id, None)
            self._interrupt.pop(campaign_id, None)
            if (not cancelled and campaign_id in self._renewed and campaign_id in self._dirty
                    and campaign_id in self._targets and not self._stopping):
                self._ensure(campaign_id)  # an event came after its last read: a new worker takes it
        if again and not self._stopping:
            self.tasks.call_later(f"webhook-restart:{campaign_id}", RESTART_AFTER,
                                  lambda: self._ensure(campaign_id) if campaign_id in self._targets else None,
                                  critical=False)

    async def _deliver_all(self, campaign_id: str) -> None:
        start = await self.store.resume(campaign_id)
        if start.target is None:  # removed meanwhile (maybe by a PATCH on another daemon)
            self._targets.pop(campaign_id, None)
            return
        self._targets[campaign_id] = start.target
        p = self._progress.get(campaign_id)
        if p is None:
            p = self._progress[campaign_id] = Progress(start.delivered_through, start.delivered_through)
        p.through = max(p.through, start.delivered_through)
        p.persisted = max(p.persisted, start.delivered_through)
        p.failures, p.since, p.written = start.head_failures, start.head_failed_since, time.monotonic()
        if start.next_attempt_at is not None:  # a backoff a previous holder began goes on
            await self._pause(campaign_id, (start.next_attempt_at - self.clock()).total_seconds())
        while not self._stopping and campaign_id in self._targets:
            self._dirty.discard(campaign_id)
            batch = await self.store.events_after(campaign_id, p.through, BATCH)
            if not batch:
                if p.through > p.persisted:
                    await self._advance(campaign_id, p)
                if campaign_id in self._dirty:
                    continue
                return
            for ev in batch:
                if not await self._deliver_one(campaign_id, ev, p):
                    return

    async def _advance(self, campaign_id: str, p: Progress) -> None:
        through = p.through
        await self._fenced(campaign_id, self.store.advance(campaign_id, through, self.clock(), owner=self.owner,
                                                           seconds=self.lease_seconds))
        p.persisted, p.written = through, time.monotonic()

    async def _deliver_one(self, campaign_id: str, ev: Event, p: Progress) -> bool:
        """Deliver ``ev`` (retrying it, or giving it up as dead); False: stop (no webhook any more, or the
        daemon stops)."""
        assert ev.id is not None
        while True:
            target = self._targets.get(campaign_id)
            if target is None or self._stopping:
                return False
            await self._fresh(campaign_id)
            error = await self.post(target, ev)
            now = self.clock()
            if error is None:
                self.delivered += 1
                p.through, p.failures, p.since = ev.id, 0, None
                if time.monotonic() - p.written >= PERSIST_EVERY:
                    await self._advance(campaign_id, p)
                return True
            self.failed += 1
            p.failures += 1
            p.since = p.since or now
            if is_dead(p.since, now, self.retry_for):
                self.dead += 1
                await self._fenced(campaign_id, self.store.dead(
                    campaign_id, ev.id, failures=p.failures, error=error, at=now, owner=self.owner,
                    seconds=self.lease_seconds))
                log.warning("webhook event given up", extra={
                    "action": "webhook_dead", "campaign_id": campaign_id, "event_id": ev.id,
                    "failures": p.failures, "error": error})
                p.through = p.persisted = ev.id
                p.failures, p.since = 0, None
                return True
            delay = retry_delay(p.failures, self.rand())
            await self._fenced(campaign_id, self.store.failed(
                campaign_id, through=p.through, failures=p.failures, since=p.since, error=error, at=now,
                retry_at=now + timedelta(seconds=delay), owner=self.owner, seconds=self.lease_seconds))
            p.persisted = p.through
            log.warning("webhook delivery failed", extra={
                "action": "webhook_retry", "campaign_id": campaign_id, "event_id": ev.id,
                "failures": p.failures, "error": error, "retry_in_seconds": round(delay, 3)})
            await self._pause(campaign_id, delay)
            target = await self.store.target(campaign_id)  # a PATCH on another daemon counts from this try
            if target is None:
                self._targets.pop(campaign_id, None)
            else:
                self._targets[campaign_id] = target

    async def _pause(self, campaign_id: str, seconds: float) -> None:
        if seconds <= 0:
            return
        interrupt = self._interrupt.setdefault(campaign_id, asyncio.Event())
        interrupt.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(interrupt.wait(), seconds)

    async def post(self, target: Target, ev: Event) -> str | None:
        """One try: None when the receiver answered 2xx, else why not (never naming the secret)."""
        assert self._session is not None and ev.id is not None
        try:
            url = WebhookUrl.parse(target.url)
        except ValueError as exc:
            return f"invalid URL: {exc}"
        literal = url.literal_ip
        if literal is not None and not self.allow_private:  # aiohttp does not resolve a literal address
            why = address_refused(str(literal))
            if why is not None:
                return f"{url.host} is {why} ([webhooks] allow_private is off)"
        body = event_body(ev)
        headers = {
            "Content-Type": "application/json",
            EVENT_ID_HEADER: str(ev.id),
            EVENT_TYPE_HEADER: ev.kind,
            SIGNATURE_HEADER: signature(target.secret, int(self.wall()), body),
        }
        try:
            async with self._session.post(target.url, data=body, headers=headers, allow_redirects=False) as resp:
                await resp.content.read(RESPONSE_READ_MAX)
                if delivered(resp.status):
                    return None
                return f"HTTP {resp.status}"[:ERROR_MAX]
        except TimeoutError:
            return f"no answer within {self.timeout:g} s"
        except aiohttp.ClientConnectorError as exc:
            cause: Any = exc.os_error
            if isinstance(cause, RefusedAddress):
                return str(cause)[:ERROR_MAX]
            return f"cannot connect to {url.host}:{url.port}: {cause.strerror or cause}"[:ERROR_MAX]
        except aiohttp.ClientError as exc:
            return f"{exc.__class__.__name__}: {exc}"[:ERROR_MAX]
