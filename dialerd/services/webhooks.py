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

Addresses: unless ``[webhooks] allow_private``, a target whose name resolves to any loopback, link-local,
private or reserved address is refused, at create/PATCH (400) and at every resolution before a delivery
(the resolver below), so a name re-pointed at an internal address later is refused too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from dialerd.domain.webhooks import (
    ERROR_MAX,
    EVENT_ID_HEADER,
    EVENT_TYPE_HEADER,
    SIGNATURE_HEADER,
    WebhookUrl,
    address_refused,
    delivered,
    is_dead,
    retry_delay,
    signature,
)
from dialerd.errors import InvalidInput
from dialerd.services.events import event_body
from dialerd.store.tables import Event
from dialerd.store.webhooks import Target, WebhookStore
from dialerd.tasks import TaskOwner
from dialerd.timestamps import utcnow

log = logging.getLogger("dialerd.webhooks")

BATCH = 200  # events read per turn of a campaign's worker
PERSIST_EVERY = 0.5  # seconds between two cursor writes while deliveries succeed
RESTART_AFTER = 5.0  # seconds before a worker that failed (not a delivery: the store) starts again
RESPONSE_READ_MAX = 64 * 1024  # bytes of a receiver's answer read (and dropped) before the connection is reused


class RefusedAddress(OSError):
    """A webhook target resolved to an address that is refused (aiohttp reports it as a connection error)."""


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, refusing every name that resolves to a refused address (``address_refused``)."""

    def __init__(self, allow_private: bool) -> None:
        self.inner = DefaultResolver()
        self.allow_private = allow_private

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        found = await self.inner.resolve(host, port, family)
        if not self.allow_private:
            for entry in found:
                why = address_refused(entry["host"])
                if why is not None:
                    raise RefusedAddress(f"{host} resolves to {entry['host']}, {why} ([webhooks] allow_private "
                                         "is off)")
        return found

    async def close(self) -> None:
        await self.inner.close()


async def check_target(raw: str, *, allow_private: bool, field: str = "webhook_url") -> None:
    """Refuse (400 naming ``field``) a URL whose host is, or resolves to, a refused address, or does not
    resolve at all; nothing is sent to it."""
    url = WebhookUrl.parse(raw)
    if allow_private:
        return
    literal = url.literal_ip
    if literal is not None:
        addresses = [str(literal)]
    else:
        try:
            infos = await asyncio.wait_for(
                asyncio.get_running_loop().getaddrinfo(url.host, url.port, type=socket.SOCK_STREAM), 10.0)
        except (OSError, TimeoutError) as exc:
            raise _refused(field, f"the host {url.host} does not resolve ({exc.__class__.__name__}: "
                           f"{exc})"[:ERROR_MAX]) from None
        addresses = sorted({str(info[4][0]) for info in infos})
    for address in addresses:
        why = address_refused(address)
        if why is not None:
            shown = url.host if literal is not None else f"{url.host} ({address})"
            raise _refused(field, f"{shown} is {why}; webhooks to loopback, link-local and private "
                           "addresses are refused unless the daemon's [webhooks] allow_private is set")


def _refused(field: str, problem: str) -> InvalidInput:
    return InvalidInput(f"{field}: {problem}", error_id="invalid_field", field=field)


class WebhookDelivery:
    """The per-campaign delivery workers, under the daemon's task owner."""

    def __init__(
        self, store: WebhookStore, tasks: TaskOwner, *, allow_private: bool, timeout: float, retry_for: float,
        clock: Callable[[], datetime] = utcnow, rand: Callable[[], float] = random.random,
        wall: Callable[[], float] = time.time, user_agent: str = "dialerd (webhooks)",
    ) -> None:
        self.store = store
        self.tasks = tasks
        self.allow_private = allow_private
        self.timeout = timeout
        self.retry_for = retry_for
        self.clock = clock
        self.rand = rand
        self.wall = wall
        self.user_agent = user_agent
        self._targets: dict[str, Target] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._dirty: set[str] = set()  # campaigns with events published since their worker last read
        self._interrupt: dict[str, asyncio.Event] = {}  # cuts a worker's backoff short (a PATCH, the stop)
        self._cursor: dict[str, tuple[int, int]] = {}  # campaign -> (delivered through, persisted through)
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
        for target in await self.store.targets():
            self._targets[target.campaign_id] = target
            self._ensure(target.campaign_id)

    async def stop(self) -> None:
        """Stop the workers and write each cursor that moved since its last write."""
        self._stopping = True
        workers = list(self._workers.values())
        for task in workers:
            task.cancel()
        if workers:
            await asyncio.wait(workers, timeout=1.0)
        for campaign_id, (through, persisted) in list(self._cursor.items()):
            if through > persisted:
                try:
                    await self.store.advance(campaign_id, through, self.clock())
                except Exception:  # the next start repeats these deliveries: at least once
                    log.warning("webhook cursor not saved", extra={"action": "webhook",
                                                                  "campaign_id": campaign_id})
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
            self._ensure(campaign_id)

    def forget(self, campaign_id: str) -> None:
        """The campaign was deleted."""
        self._targets.pop(campaign_id, None)
        task = self._workers.get(campaign_id)
        if task is not None:
            task.cancel()

    def _ensure(self, campaign_id: str) -> None:
        if campaign_id in self._workers or self._stopping:
            return
        self._workers[campaign_id] = self.tasks.spawn(f"webhook:{campaign_id}", self._run(campaign_id),
                                                      critical=False)

    # ---- one campaign's worker -------------------------------------------------------------------

    async def _run(self, campaign_id: str) -> None:
        again = False
        try:
            await self._deliver_all(campaign_id)
        except Exception:  # the store failing (a locked or lost database): the events wait in it
            log.exception("webhook worker failed; it starts again in %s s", RESTART_AFTER,
                          extra={"action": "webhook_worker", "campaign_id": campaign_id})
            again = True
        finally:
            self._workers.pop(campaign_id, None)
            self._interrupt.pop(campaign_id, None)
            if campaign_id in self._dirty and campaign_id in self._targets and not self._stopping:
                self._ensure(campaign_id)  # an event came after its last read: a new worker takes it
        if again and not self._stopping:
            self.tasks.call_later(f"webhook-restart:{campaign_id}", RESTART_AFTER,
                                  lambda: self._ensure(campaign_id) if campaign_id in self._targets else None,
                                  critical=False)

    async def _deliver_all(self, campaign_id: str) -> None:
        state = await self.store.state(campaign_id)
        through, persisted = self._cursor.get(campaign_id, (state.delivered_through, state.delivered_through))
        through = max(through, state.delivered_through)
        failures, since = state.head_failures, state.head_failed_since
        if state.next_attempt_at is not None:  # a backoff a previous run began goes on
            await self._pause(campaign_id, (state.next_attempt_at - self.clock()).total_seconds())
        last_write = time.monotonic()
        while not self._stopping and campaign_id in self._targets:
            self._dirty.discard(campaign_id)
            batch = await self.store.events_after(campaign_id, through, BATCH)
            if not batch:
                if through > persisted:
                    await self.store.advance(campaign_id, through, self.clock())
                    persisted = through
                    self._cursor[campaign_id] = (through, persisted)
                if campaign_id in self._dirty:
                    continue
                return
            for ev in batch:
                while True:
                    target = self._targets.get(campaign_id)
                    if target is None or self._stopping:
                        return
                    assert ev.id is not None
                    error = await self.post(target, ev)
                    now = self.clock()
                    if error is None:
                        self.delivered += 1
                        through, failures, since = ev.id, 0, None
                        self._cursor[campaign_id] = (through, persisted)
                        if time.monotonic() - last_write >= PERSIST_EVERY:
                            await self.store.advance(campaign_id, through, now)
                            persisted, last_write = through, time.monotonic()
                            self._cursor[campaign_id] = (through, persisted)
                        break
                    self.failed += 1
                    failures += 1
                    since = since or now
                    if is_dead(since, now, self.retry_for):
                        self.dead += 1
                        await self.store.dead(campaign_id, ev.id, failures=failures, error=error, at=now)
                        log.warning("webhook event given up", extra={
                            "action": "webhook_dead", "campaign_id": campaign_id, "event_id": ev.id,
                            "failures": failures, "error": error})
                        through = persisted = ev.id
                        self._cursor[campaign_id] = (through, persisted)
                        failures, since = 0, None
                        break
                    delay = retry_delay(failures, self.rand())
                    await self.store.failed(campaign_id, through=through, failures=failures, since=since,
                                            error=error, at=now, retry_at=now + timedelta(seconds=delay))
                    persisted = through
                    self._cursor[campaign_id] = (through, persisted)
                    log.warning("webhook delivery failed", extra={
                        "action": "webhook_retry", "campaign_id": campaign_id, "event_id": ev.id,
                        "failures": failures, "error": error, "retry_in_seconds": round(delay, 3)})
                    await self._pause(campaign_id, delay)

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
