"""The in-flight ledger: which calls hold a slot, how many per campaign and per tenant, and who to wake.

One ledger is shared by the dispatcher, which reserves a slot before it dials and gives it back when
nothing was dialled, and the call follower, which frees it when the call ends and counts the calls found
in flight after a restart. Every method that changes a count is synchronous: a runner checks the caps and
reserves in one step with no await in between, so two runners of one tenant can never both take the last
slot.

A *slot* is counted from its reservation (before the attempt row exists) until the call's end is
recorded; a *call* (``Call``) is known from the moment its attempt row is committed under a channel id.

The ledger also keeps each tenant's **daily usage** (issue 11, ``daily_calls_max``/``daily_minutes_max``)
while one of its daily caps is set: the attempts started and the answered talk seconds of the tenant's
calendar day (``domain.caps.tenant_day`` in its ``timezone``), read from the store when the day begins
(or the cap is first seen, or the daemon starts) and then kept here: a start is counted when its slot is
reserved (``count_start``, synchronous, with the caps check) and uncounted if no attempt row was kept
(``uncount_start``); the talk minutes are re-read after a call of the tenant ends. An attempt counts for
the day its row was created in, even if it is still up past midnight; the minutes are those of ended
answered calls (a call still up counts once it ends).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from dialerd.domain.caps import DailyCaps, daily_holds, limit, tenant_day
from dialerd.domain.pacing import Pacer
from dialerd.domain.rules import BlockReason, Hold
from dialerd.store.tables import Tenant
from dialerd.timestamps import utcnow

TENANT_REFRESH_SECONDS = 5.0  # a tenant's caps and rate are re-read at most this often


class TenantReader(Protocol):
    async def get_tenant(self, tenant_id: str) -> Tenant | None: ...

    async def tenant_day_usage(self, tenant_id: str, start: datetime, end: datetime) -> tuple[int, float]:
        """The attempts of the tenant's campaigns created in ``[start, end)``, and the talk seconds of
        those of them that were answered and have ended (read only while a daily cap is set)."""
        ...


@dataclass
class DayUsage:
    """A tenant's usage of one calendar day ``[start, end)`` (UTC bounds of the local day)."""

    start: datetime
    end: datetime
    calls: int = 0  # attempts started (the store's count at load, then counted here)
    talk_seconds: float = 0.0  # answered talk of ended calls (re-read when ``stale``)
    stale: bool = False  # a call of the tenant ended since the talk seconds were read

    @property
    def minutes(self) -> float:
        return self.talk_seconds / 60.0


@dataclass(frozen=True)
class Call:
    """A call holding a slot: its channel id and whose slot it holds."""

    channel_id: str
    campaign_id: str
    tenant_id: str


@dataclass
class TenantLimits:
    """A tenant's caps as last read, and its pacers (shared by all the tenant's runners)."""

    tenant_id: str
    concurrent_max: int
    pacer: Pacer  # spaces the reservations
    sent: Pacer  # the same pace, applied again as each originate request leaves (Dispatcher._pace_send)
    loaded_at: float = 0.0
    daily: DailyCaps = field(default_factory=DailyCaps)
    day: DayUsage | None = None  # kept while a daily cap is set (None: none is, or not read yet)
    calls_per_minute: int = 0


class Slots:
    """The ledger. Counts never go below zero (a slot released twice is released once)."""

    def __init__(self, tenants: TenantReader, *, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], datetime] = utcnow) -> None:
        self._reader = tenants
        self._clock = clock
        self.wall = wall  # the calendar clock of the daily caps (tests move it past midnight)
        self._calls: dict[str, Call] = {}
        self._campaign: dict[str, int] = {}
        self._tenant: dict[str, int] = {}
        self._limits: dict[str, TenantLimits] = {}
        self._watched: dict[str, str] = {}  # campaign -> tenant, for waking a tenant's runners
        self._wake: dict[str, asyncio.Event] = {}
        self._ended = asyncio.Event()  # set whenever a call ends
        self._day_locks: dict[str, asyncio.Lock] = {}

    # ---- the tenants' caps ----------------------------------------------------------------------

    async def tenant(self, tenant_id: str) -> TenantLimits:
        """The tenant's caps and pacers, re-read from the store at most every TENANT_REFRESH_SECONDS."""
        t = self._limits.get(tenant_id)
        now = self._clock()
        if t is None or now - t.loaded_at > TENANT_REFRESH_SECONDS:
            row = await self._reader.get_tenant(tenant_id)
            if row is None:
                raise RuntimeError(f"tenant {tenant_id} vanished")
            if t is None:
                t = self._limits.setdefault(
                    tenant_id, TenantLimits(tenant_id, row.concurrent_max, Pacer(row.calls_per_minute),
                                            Pacer(row.calls_per_minute))
                )
            t.concurrent_max = row.concurrent_max
            t.calls_per_minute = row.calls_per_minute
            t.pacer.set_rate(row.calls_per_minute)
            t.sent.set_rate(row.calls_per_minute)
            t.daily = DailyCaps(limit(row.daily_calls_max), limit(row.daily_minutes_max), row.timezone or None)
            t.loaded_at = now
        await self._load_day(t)
        return t

    async def _load_day(self, t: TenantLimits) -> None:
        """Read the tenant's usage of today from the store when it is needed: a daily cap is set and the
        day was not read yet, or it ended, or (the minutes cap) a call ended since."""
        caps = t.daily
        if caps.calls_max is None and caps.minutes_max is None:
            t.day = None
            return
        now = self.wall()
        day = t.day
        fresh = day is None or not day.start <= now < day.end
        if not fresh and not (day is not None and day.stale and caps.minutes_max is not None):
            return
        async with self._day_locks.setdefault(t.tenant_id, asyncio.Lock()):
            day = t.day  # another runner may have read it meanwhile
            if day is not None and day.start <= now < day.end and not (day.stale and caps.minutes_max is not None):
                return
            start, end = tenant_day(now, caps.timezone)
            if day is not None and day.start == start:
                day.stale = False  # cleared before the read: an end recorded during it marks it again
                _, day.talk_seconds = await self._reader.tenant_day_usage(t.tenant_id, start, end)
                return
            # A new day (or the first read): its starts so far come from the store, then are counted here.
            # A claim reserved before midnight and committed after counts for the old day here.
            # Set once read: until then the tenant's other runners wait on the lock (the old day is over),
            # so no start is counted into a day whose count is about to be overwritten.
            calls, talk = await self._reader.tenant_day_usage(t.tenant_id, start, end)
            t.day = DayUsage(start, end, calls, talk)

    def daily_holds(self, tenant_id: str, now: datetime | None = None) -> tuple[Hold, ...]:
        """The daily caps reached by the tenant at ``now`` (the wall clock), each held until its day's end;
        () when none is, or its usage was not read yet (``tenant`` reads it)."""
        t = self._limits.get(tenant_id)
        if t is None or t.day is None:
            return ()
        now = self.wall() if now is None else now
        if not t.day.start <= now < t.day.end:
            return ()  # a new day: nothing is used yet (read at the next ``tenant``)
        return daily_holds(t.daily, calls_today=t.day.calls, minutes_today=round(t.day.minutes, 3), now=now)

    def count_start(self, tenant_id: str) -> datetime | None:
        """Count an attempt about to start against today's ``daily_calls_max`` (synchronous, like
        ``reserve``); the day it was counted in (give it to ``uncount_start``), None if not counted."""
        t = self._limits.get(tenant_id)
        if t is None or t.day is None:
            return None
        t.day.calls += 1
        return t.day.start

    def uncount_start(self, tenant_id: str, day: datetime | None) -> None:
        """No attempt row was kept for a start counted on ``day``: uncount it (if that day is still today)."""
        t = self._limits.get(tenant_id)
        if day is not None and t is not None and t.day is not None and t.day.start == day:
            t.day.calls = max(0, t.day.calls - 1)

    def tenant_holds(self, tenant_id: str, now: datetime | None = None) -> tuple[Hold, ...]:
        """What holds the tenant's new originations back now, as last read: its daily caps (until the
        day's end), ``tenant_concurrency`` (all its slots taken) and ``tenant_rate`` (its pacer's next
        start is later; ``until`` that instant). () when nothing does or the tenant was not read yet."""
        t = self._limits.get(tenant_id)
        if t is None:
            return ()
        wall = self.wall() if now is None else now
        holds = list(self.daily_holds(tenant_id, wall))
        in_flight = self.tenant_in_flight(tenant_id)
        if in_flight >= t.concurrent_max:
            holds.append(Hold(BlockReason.TENANT_CONCURRENCY, None,
                              {"concurrent_max": t.concurrent_max, "in_flight": in_flight}))
        delay = t.pacer.delay(self._clock())
        if delay > 0:
            holds.append(Hold(BlockReason.TENANT_RATE, wall + timedelta(seconds=delay),
                              {"calls_per_minute": t.calls_per_minute}))
        return tuple(holds)

    def limits(self, tenant_id: str) -> TenantLimits | None:
        """The tenant's caps as last read, without reading (None until a runner or a recovery read them)."""
        return self._limits.get(tenant_id)

    def tenant_caps(self) -> dict[str, int]:
        """Every tenant read so far and its ``concurrent_max``."""
        return {tid: t.concurrent_max for tid, t in self._limits.items()}

    def rate_wait(self, tenant_id: str, now: float) -> float:
        """Seconds until the tenant's pacer grants its next start (0: a start may go now; 0 too for a
        tenant not read yet, which has started nothing). ``now`` on the clock the pacer is fed with."""
        t = self._limits.get(tenant_id)
        return 0.0 if t is None else t.pacer.delay(now)

    # ---- counts ---------------------------------------------------------------------------------

    def calls_in_flight(self, campaign_id: str) -> int:
        return self._campaign.get(campaign_id, 0)

    def calls_up(self, campaign_id: str) -> int:
        """The campaign's calls (attempt committed, end not yet recorded), without the slots a runner has
        reserved and may give back unused (``calls_in_flight`` counts those too)."""
        return sum(1 for call in self._calls.values() if call.campaign_id == campaign_id)

    def tenant_in_flight(self, tenant_id: str) -> int:
        return self._tenant.get(tenant_id, 0)

    def total(self) -> int:
        """Calls known to be in flight (attempt committed, end not yet recorded), all campaigns."""
        return len(self._calls)

    def reserved(self) -> int:
        """Slots taken in this process, all campaigns: calls up and reservations not yet dialled (what
        ``[pbx] max_channels`` bounds)."""
        return sum(self._campaign.values())

    def holds(self, channel_id: str) -> bool:
        return channel_id in self._calls

    # ---- reserving and freeing ------------------------------------------------------------------

    def reserve(self, campaign_id: str, tenant_id: str) -> None:
        """Take a slot of the campaign and of the tenant (synchronous: check the caps just before)."""
        self._tenant[tenant_id] = self._tenant.get(tenant_id, 0) + 1
        self._campaign[campaign_id] = self._campaign.get(campaign_id, 0) + 1

    def release(self, campaign_id: str, tenant_id: str, *, wake: bool = True) -> None:
        """Free a slot and (``wake``) wake the runners that may use it."""
        self._campaign[campaign_id] = max(0, self._campaign.get(campaign_id, 0) - 1)
        if tenant_id in self._tenant:
            self._tenant[tenant_id] = max(0, self._tenant[tenant_id] - 1)
        if not wake:
            return
        # A freed slot is refilled promptly: wake this campaign and its tenant's other campaigns.
        # Only the tenant's: waking every runner (as before) cost each of them a campaign read per
        # ended call, 50 reads per call in the load test (tests/load), for slots they cannot use.
        self.poke(campaign_id)
        for other, other_tenant in self._watched.items():
            if other != campaign_id and other_tenant == tenant_id:
                self.poke(other)

    def hold(self, channel_id: str, campaign_id: str, tenant_id: str) -> None:
        """Name the call that holds a slot already reserved (its attempt row is committed)."""
        self._calls[channel_id] = Call(channel_id, campaign_id, tenant_id)

    def drop(self, channel_id: str) -> None:
        """Forget the call, keeping its slot: the runner that reserved it releases it."""
        self._calls.pop(channel_id, None)

    async def track(self, channel_id: str, campaign_id: str, tenant_id: str) -> None:
        """Count a call found in flight that this process did not dial (a restart, a reconcile)."""
        await self.tenant(tenant_id)  # its caps are known from here on (metrics list the tenant)
        self.hold(channel_id, campaign_id, tenant_id)
        self.reserve(campaign_id, tenant_id)

    def end_call(self, channel_id: str) -> None:
        """The call's end is recorded: free its slot (if it still held one) and wake whoever waits."""
        call = self._calls.pop(channel_id, None)
        if call is not None:
            t = self._limits.get(call.tenant_id)
            if t is not None and t.day is not None:
                t.day.stale = True  # its talk minutes are re-read before the tenant's next start
            self.release(call.campaign_id, call.tenant_id)
        self._ended.set()

    async def wait_empty(self) -> None:
        """Return once no call is in flight (wrap in ``asyncio.timeout``)."""
        while self._calls:
            self._ended.clear()
            await self._ended.wait()

    # ---- wake-ups -------------------------------------------------------------------------------

    def watch(self, campaign_id: str, tenant_id: str) -> None:
        """Wake the campaign's runner whenever a slot of ``tenant_id`` frees."""
        self._watched[campaign_id] = tenant_id

    def watched_tenant(self, campaign_id: str) -> str | None:
        """The tenant of a campaign whose runner is watching (None: no runner here)."""
        return self._watched.get(campaign_id)

    def unwatch(self, campaign_id: str) -> None:
        self._watched.pop(campaign_id, None)

    def wake_event(self, campaign_id: str) -> asyncio.Event:
        """The event that wakes the campaign's runner (set by ``poke``; the runner clears it)."""
        return self._wake.setdefault(campaign_id, asyncio.Event())

    def poke(self, campaign_id: str) -> None:
        ev = self._wake.get(campaign_id)
        if ev is not None:
            ev.set()

    async def sleep(self, campaign_id: str, seconds: float | None) -> None:
        """Sleep up to ``seconds`` (None: until poked); a ``poke`` ends it early."""
        ev = self.wake_event(campaign_id)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ev.wait(), seconds)
        ev.clear()
